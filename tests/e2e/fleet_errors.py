"""What the official `openai` and `ollama` clients raise when a fleet of Ollama boxes cannot serve
a request: a model no box has (404, `ollama pull`) and every box with the model down (503, each
address and `aigw probe`).

Run by tests/serve_fleet.rs, which snapshots the output (one line per call):
  AIGW_E2E_URL    the gateway
  argv[1]         the model to ask for
  argv[2:]        the calls: openai-chat, openai-stream, ollama-chat, ollama-generate, ollama-list
A call that does not raise prints what it returned (a list's items, else the type).
"""

import os
import sys

try:
    import ollama
    import openai
except ImportError as e:
    print(f"missing Python package: {e}; run `pip install -r tests/e2e/requirements.txt`", file=sys.stderr)
    sys.exit(3)

URL = os.environ["AIGW_E2E_URL"].rstrip("/")
MODEL = sys.argv[1]
MESSAGES = [{"role": "user", "content": "hi"}]


def oa():
    return openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0, timeout=60)


def ol():
    return ollama.Client(host=URL, timeout=60)


CALLS = {
    "openai-chat": lambda: oa().chat.completions.create(model=MODEL, messages=MESSAGES),
    "openai-stream": lambda: list(oa().chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)),
    "ollama-chat": lambda: ol().chat(model=MODEL, messages=MESSAGES),
    "ollama-generate": lambda: ol().generate(model=MODEL, prompt="hi"),
    "ollama-list": lambda: sorted(m.model for m in ol().list().models),
}


def describe(e):
    """The exception as the client's user sees it: its type, status and message."""
    if isinstance(e, openai.APIStatusError):
        body = e.body if isinstance(e.body, dict) else {}
        return f"openai.{type(e).__name__} status={e.status_code} code={body.get('code')}\n  {body.get('message')}"
    if isinstance(e, ollama.ResponseError):
        return f"ollama.{type(e).__name__} status={e.status_code}\n  {e.error}"
    return f"{type(e).__module__}.{type(e).__name__}: {e}"


for name in sys.argv[2:]:
    try:
        result = CALLS[name]()
        shown = result if isinstance(result, list) else type(result).__name__
        print(f"{name} {MODEL}: no error: {shown}")
    except Exception as e:  # noqa: BLE001 - every failure is what the snapshot records
        print(f"{name} {MODEL}: {describe(e)}")
