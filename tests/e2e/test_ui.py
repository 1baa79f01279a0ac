"""The /ui status page in a real browser: Debian's headless Chromium, driven by Playwright's
Python client (never `playwright install`: the system browser is used).

Run by tests/serve_ui.rs against a gateway whose `primary` provider fails (500) and whose
`backup` answers, for one model `chat`, with a breaker that opens after two failures. The page
must show both providers with closed circuits, then, as this script sends traffic, the request
counts, the recent requests and the primary's circuit opening.

AIGW_UI_URL: the gateway's base URL. AIGW_UI_SCREENSHOT: optional PNG path for a screenshot
taken under load.
"""

import json
import os
import sys
import threading
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE = os.environ["AIGW_UI_URL"].rstrip("/")
SHOT = os.environ.get("AIGW_UI_SCREENSHOT")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000


def chat(stream=False):
    body = {"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    req = urllib.request.Request(
        BASE + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
        return resp.status


def number(page, element_id):
    return int(page.locator("#" + element_id).inner_text())


def main():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(BASE + "/ui")
        expect(page.locator("#live")).to_contain_text("live", timeout=TIMEOUT_MS)

        # Providers and their circuits, before any traffic.
        for provider in ("primary", "backup"):
            card = page.locator(f'[data-provider="{provider}"]')
            expect(card).to_be_visible(timeout=TIMEOUT_MS)
            expect(card.locator('[data-model="chat"] [data-circuit]')).to_have_text("closed")
        expect(page.locator('[data-provider="backup"]')).to_contain_text("1 key")
        expect(page.locator('[data-strategy="2"]')).to_contain_text("ai.models")
        assert number(page, "total-requests") == 0, "counts start when the page watches"

        # Traffic: the first request fails over, the second opens primary's circuit.
        assert chat() == 200
        assert chat() == 200
        expect(page.locator("#total-requests")).to_have_text("2", timeout=TIMEOUT_MS)
        expect(page.locator("#total-failovers")).to_have_text("2", timeout=TIMEOUT_MS)
        primary = page.locator('[data-provider="primary"] [data-model="chat"] [data-circuit]')
        expect(primary).to_have_text("open", timeout=TIMEOUT_MS)
        first_row = page.locator("#recent tbody tr").first
        expect(first_row).to_contain_text("backup:chat", timeout=TIMEOUT_MS)

        # Under load: several clients at once, streaming and not; the counts keep moving.
        stop = threading.Event()
        sent = []

        def client(stream):
            while not stop.is_set():
                sent.append(chat(stream))

        threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            page.wait_for_function(
                "() => Number(document.getElementById('total-requests').textContent) >= 30",
                timeout=TIMEOUT_MS,
            )
            if SHOT:
                page.wait_for_timeout(1200)
                page.screenshot(path=SHOT)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert all(s == 200 for s in sent), sent
        total = 2 + len(sent)
        expect(page.locator("#total-requests")).to_have_text(str(total), timeout=TIMEOUT_MS)
        expect(page.locator('[data-strategy="2"] td').last).to_have_text(str(total))
        expect(page.locator("#in-flight")).to_have_text("0", timeout=TIMEOUT_MS)
        rows = page.locator("#recent tbody tr").count()
        assert rows == min(total, 100), rows
        assert not errors, errors
        browser.close()
    print(f"ui: ok ({total} requests seen on the page)")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the Rust test prints this output
        print(f"ui: FAILED: {e!r}", file=sys.stderr)
        raise
