"""End-to-end check of `aigw serve` with the official Python clients (`openai`, `ollama`).

Run by tests/e2e_python.rs, which starts stand-in providers and the gateway and passes:
  AIGW_E2E_URL           the gateway, e.g. http://127.0.0.1:PORT
  AIGW_E2E_CHAT_MODEL    a model that answers on /v1 (e.g. openai:gpt-4o-mini)
  AIGW_E2E_EMBED_MODEL   an embeddings model
  AIGW_E2E_FAIL_MODEL    a model whose every candidate fails (expects 503 ERR_NGROK_3807)
  AIGW_E2E_OLLAMA_MODEL  a model served by an Ollama provider (native /api/*)
  AIGW_E2E_TOOLONG_MODEL a model whose provider answers 400 context_length_exceeded
  AIGW_E2E_CUT_MODEL     a model whose streams are cut mid-answer
  AIGW_E2E_GARBLED_MODEL a model whose streams carry one malformed event
  AIGW_E2E_CONT_MODEL    a model whose first candidate ("cutter") cuts its stream after
                         "[cutter] you" and whose second continues the answer
  AIGW_E2E_OLLAMA_CONT_MODEL  the same on two Ollama boxes ("ollama-cutter" first)
Plain script (no pytest): prints one line per check and `N passed, N failed`.
"""

import os
import sys
import time
import traceback

try:
    import ollama
    import openai
except ImportError as e:  # the Rust test checks this first and says what to install
    print(f"missing Python package: {e}; run `pip install -r tests/e2e/requirements.txt`", file=sys.stderr)
    sys.exit(3)

BASE = os.environ["AIGW_E2E_URL"].rstrip("/")
CHAT = os.environ["AIGW_E2E_CHAT_MODEL"]
EMBED = os.environ["AIGW_E2E_EMBED_MODEL"]
FAIL = os.environ["AIGW_E2E_FAIL_MODEL"]
OLLAMA_MODEL = os.environ["AIGW_E2E_OLLAMA_MODEL"]
TOOLONG = os.environ["AIGW_E2E_TOOLONG_MODEL"]
CUT = os.environ["AIGW_E2E_CUT_MODEL"]
GARBLED = os.environ["AIGW_E2E_GARBLED_MODEL"]
CONT = os.environ["AIGW_E2E_CONT_MODEL"]
OLLAMA_CONT = os.environ["AIGW_E2E_OLLAMA_CONT_MODEL"]

oai = openai.OpenAI(base_url=BASE + "/v1", api_key="sk-e2e-client", max_retries=0, timeout=60)
oll = ollama.Client(host=BASE, timeout=60)

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def openai_chat():
    r = oai.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hello gateway"}])
    text = r.choices[0].message.content
    assert "hello gateway" in text, text


@check
def openai_chat_headers_name_the_route():
    raw = oai.chat.completions.with_raw_response.create(model=CHAT, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers.get("x-aigw-provider"), dict(raw.headers)
    assert raw.headers.get("x-aigw-attempts") == "1", dict(raw.headers)


@check
def openai_streaming():
    stream = oai.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "stream these words"}], stream=True
    )
    parts = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(parts) > 1, parts
    assert "stream these words" in "".join(parts), parts


@check
def openai_models_list():
    ids = [m.id for m in oai.models.list()]
    assert ids, ids
    assert all(":" in i for i in ids), ids
    assert CHAT in ids, (CHAT, ids)


@check
def openai_embeddings():
    r = oai.embeddings.create(model=EMBED, input="embed me")
    assert len(r.data) == 1 and len(r.data[0].embedding) > 0, r


@check
def openai_error_is_an_api_status_error():
    try:
        oai.chat.completions.create(model=FAIL, messages=[{"role": "user", "content": "hi"}])
    except openai.APIStatusError as e:
        assert e.status_code == 503, e.status_code
        assert e.code == "ERR_NGROK_3807", (e.code, e.body)
        assert "failed" in str(e), str(e)
        return
    raise AssertionError("no APIStatusError raised")


@check
def openai_context_length_is_the_providers_bad_request():
    try:
        oai.chat.completions.create(model=TOOLONG, messages=[{"role": "user", "content": "hi"}])
    except openai.BadRequestError as e:
        assert e.status_code == 400, e.status_code
        assert e.code == "context_length_exceeded", (e.code, e.body)
        assert "maximum context length" in str(e), str(e)
        return
    raise AssertionError("no BadRequestError raised")


@check
def openai_stream_cut_mid_answer_raises():
    stream = oai.chat.completions.create(
        model=CUT, messages=[{"role": "user", "content": "a long answer"}], stream=True
    )
    parts = []
    try:
        for c in stream:
            if c.choices and c.choices[0].delta.content:
                parts.append(c.choices[0].delta.content)
    except openai.APIError as e:
        assert "ERR_NGROK_3800" in str(e.body) or "stream" in str(e), (str(e), e.body)
        assert parts, "some of the answer arrived before the cut"
        return
    raise AssertionError(f"a cut stream ended as a success: {parts}")


@check
def openai_stream_with_a_malformed_event_still_parses():
    stream = oai.chat.completions.create(
        model=GARBLED, messages=[{"role": "user", "content": "one two three four"}], stream=True
    )
    parts = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert parts, parts


@check
def openai_stream_cut_midway_is_continued():
    stream = oai.chat.completions.create(
        model=CONT,
        messages=[{"role": "user", "content": "carry on please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, ids, usage, finishes = [], set(), None, []
    for c in stream:  # raises on an error event
        ids.add(c.id)
        if c.usage:
            usage = c.usage
        if c.choices:
            if c.choices[0].delta.content:
                parts.append(c.choices[0].delta.content)
            if c.choices[0].finish_reason:
                finishes.append(c.choices[0].finish_reason)
    text = "".join(parts)
    # One answer: the cut stand-in's words, then the rest from the next candidate, no gap, no
    # repetition.
    assert text == "[cutter] you said: carry on please", parts
    assert finishes == ["stop"], finishes
    assert len(ids) == 1, ids
    # Usage is the sum: 2 words before the cut, 4 after.
    assert usage is not None and usage.completion_tokens == 6, usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage


@check
def ollama_chat():
    r = oll.chat(model=OLLAMA_MODEL, messages=[{"role": "user", "content": "hello ollama"}])
    assert "hello ollama" in r.message.content, r


@check
def ollama_chat_streaming():
    parts = [c.message.content for c in oll.chat(model=OLLAMA_MODEL, messages=[{"role": "user", "content": "a b c"}], stream=True)]
    assert len(parts) > 1, parts
    assert "a b c" in "".join(parts), parts


@check
def ollama_stream_cut_midway_is_continued():
    chunks = list(
        oll.chat(model=OLLAMA_CONT, messages=[{"role": "user", "content": "carry on please"}], stream=True)
    )
    text = "".join(c.message.content for c in chunks)
    assert text == "[ollama-cutter] you said: carry on please", [c.message.content for c in chunks]
    last = chunks[-1]
    assert last.done and last.done_reason == "stop", last
    assert last.eval_count == 6, last
    assert sum(1 for c in chunks if c.done) == 1


@check
def ollama_list_and_embed():
    names = [m.model for m in oll.list().models]
    assert names, names
    r = oll.embed(model=OLLAMA_MODEL, input="embed me")
    assert len(r.embeddings) == 1 and len(r.embeddings[0]) > 0, r


@check
def ollama_unknown_model_is_a_response_error():
    try:
        oll.chat(model="no-such-model-anywhere", messages=[{"role": "user", "content": "hi"}])
    except ollama.ResponseError as e:
        assert e.status_code >= 400, e.status_code
        return
    raise AssertionError("no ResponseError raised")


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
