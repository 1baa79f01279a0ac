"""The traffic policy's guards met by the official `openai` client (ngrok's BYOK guide recipes).

Run by tests/e2e_python.rs, which starts a stand-in provider and the gateway with a policy that
accepts only the tokens `AIGW_E2E_TOKEN_A` / `AIGW_E2E_TOKEN_B` (a `set-vars` list and a
`custom-response` 401), limits each token to 2 requests a minute (`rate-limit`, 429 with
`retry-after`), and adds `x-policy` to responses (`on_http_response`).
  AIGW_E2E_URL         the gateway
  AIGW_E2E_CHAT_MODEL  a model that answers
Plain script: one line per check and `N passed, N failed`.
"""

import os
import sys
import time
import traceback

try:
    import openai
except ImportError as e:
    print(f"missing Python package: {e}; run `pip install -r tests/e2e/requirements.txt`", file=sys.stderr)
    sys.exit(3)

BASE = os.environ["AIGW_E2E_URL"].rstrip("/") + "/v1"
CHAT = os.environ["AIGW_E2E_CHAT_MODEL"]
TOKEN_A = os.environ["AIGW_E2E_TOKEN_A"]
TOKEN_B = os.environ["AIGW_E2E_TOKEN_B"]


def client(key):
    return openai.OpenAI(base_url=BASE, api_key=key, max_retries=0, timeout=60)


def chat(key):
    return client(key).chat.completions.with_raw_response.create(
        model=CHAT, messages=[{"role": "user", "content": "guarded hello"}]
    )


CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def an_unknown_token_is_an_authentication_error():
    try:
        chat("sk-not-on-the-list")
    except openai.AuthenticationError as e:
        assert e.status_code == 401, e.status_code
        assert "unauthorized" in str(e.message).lower(), e.message
        return
    raise AssertionError("no AuthenticationError raised")


@check
def a_listed_token_reaches_the_model_and_the_response_rules_run():
    raw = chat(TOKEN_A)
    assert raw.headers.get("x-policy") == "guarded", dict(raw.headers)
    text = raw.parse().choices[0].message.content
    assert "guarded hello" in text, text


@check
def the_third_request_a_minute_is_rate_limited_per_token():
    chat(TOKEN_B)
    chat(TOKEN_B)
    try:
        chat(TOKEN_B)
    except openai.RateLimitError as e:
        assert e.status_code == 429, e.status_code
        retry = int(e.response.headers["retry-after"])
        assert 1 <= retry <= 120, retry
        return
    raise AssertionError("no RateLimitError raised")


def main():
    passed = failed = 0
    for fn in CHECKS:
        t0 = time.monotonic()
        try:
            fn()
            print(f"ok    {fn.__name__}  ({(time.monotonic() - t0) * 1000:.0f} ms)")
            passed += 1
        except Exception:  # noqa: BLE001 - report every failure, keep going
            print(f"FAIL  {fn.__name__}")
            traceback.print_exc()
            failed += 1
    print(f"python: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
