//! Continuing a stream that dies midway, in each dialect, through `serve` with stand-in
//! providers on 127.0.0.1 (the OpenAI rows of the README's fault table are f08, f09, f17–f19 in
//! `tests/serve_faults.rs`): Anthropic `/v1/messages` and Ollama `/api/chat` continued with a
//! prefill, Ollama `/api/generate` restarted, a refused prefill sent again without it, a chain
//! of failures, the surfaces that are not continued, and a stream that does not fail passing
//! through byte for byte.

#[path = "gateway_support/mod.rs"]
mod support;

use std::sync::Arc;

use aigw::gateway::GatewayOptions;
use serde_json::{Value, json};
use support::standin::{Fault, Kind, StandIn};
use support::{FixedProvider, FixedRouting, client, start};

fn provider(id: &str, url: String, ollama: bool) -> FixedProvider {
    FixedProvider {
        id: id.into(),
        base_url: url,
        ollama,
        keys: Vec::new(),
    }
}

/// Stand-ins of `kind` labelled as given (each knowing every model), and the gateway with a
/// fixed plan over them in that order (model `m`).
async fn chain(kind: Kind, labels: &[&str]) -> (Vec<StandIn>, support::Started) {
    chain_with(kind, labels, GatewayOptions::default()).await
}

async fn chain_with(
    kind: Kind,
    labels: &[&str],
    opts: GatewayOptions,
) -> (Vec<StandIn>, support::Started) {
    let mut ups = Vec::new();
    for label in labels {
        ups.push(
            StandIn::start(kind)
                .await
                .with_label(label)
                .with_any_model(),
        );
    }
    let ids: Vec<String> = (0..labels.len()).map(|i| format!("p{i}")).collect();
    let providers = ids
        .iter()
        .zip(&ups)
        .map(|(id, up)| provider(id, up.url(), kind == Kind::Ollama))
        .collect();
    let candidates: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "m")).collect();
    let routing = FixedRouting::new(providers, &candidates);
    let gw = start(Arc::new(routing), opts).await;
    (ups, gw)
}

async fn text(gw: &support::Started, path: &str, body: &Value) -> String {
    let r = gw.post(path, body).await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// `(event name, payload)` of every SSE event.
fn sse(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_string();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            let v = if data == "[DONE]" {
                Value::String("[DONE]".into())
            } else {
                serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"))
            };
            (name, v)
        })
        .collect()
}

fn openai_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter_map(|(_, v)| v["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn chat(stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": "hello there"}]})
}

fn last_messages(up: &StandIn) -> Vec<Value> {
    let seen = up.requests();
    seen.last().unwrap().json.as_ref().unwrap()["messages"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn anthropic_messages_are_continued_as_one_message() {
    let (ups, gw) = chain(Kind::Anthropic, &["claude-a", "claude-b"]).await;
    // message_start, content_block_start, ping, "[claude-a]", " you", then the cut.
    ups[0].push_fault(Fault::StreamCutAfter(5));
    let body = json!({"model": "m", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": "hello there"}]});
    let out = text(&gw, "/v1/messages", &body).await;
    let events = sse(&out);
    let count = |name: &str| events.iter().filter(|(n, _)| n == name).count();
    for once in [
        "message_start",
        "content_block_start",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ] {
        assert_eq!(count(once), 1, "{once} in {out}");
    }
    assert_eq!(count("error"), 0, "{out}");
    let said: String = events
        .iter()
        .filter_map(|(_, v)| v["delta"]["text"].as_str())
        .collect();
    assert_eq!(said, "[claude-a] you said: hello there", "{out}");
    assert_eq!(
        last_messages(&ups[1]).last().unwrap(),
        &json!({"role": "assistant", "content": "[claude-a] you"})
    );
    // Output: claude-a's 2 text events and claude-b's 3; input: both message_starts (2 + 4).
    let delta = &events.iter().find(|(n, _)| n == "message_delta").unwrap().1;
    assert_eq!(delta["usage"]["output_tokens"], 5, "{out}");
    assert_eq!(delta["usage"]["input_tokens"], 6, "{out}");
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");

    // Cut right after message_start: no text yet, so claude-b answers the original request,
    // and its content_block_start (which the client has not seen) is relayed.
    ups[0].push_fault(Fault::StreamCutAfter(1));
    let out = text(&gw, "/v1/messages", &body).await;
    let events = sse(&out);
    let count = |name: &str| events.iter().filter(|(n, _)| n == name).count();
    assert_eq!(
        (count("message_start"), count("content_block_start")),
        (1, 1),
        "{out}"
    );
    assert_eq!((count("message_stop"), count("error")), (1, 0), "{out}");
    let said: String = events
        .iter()
        .filter_map(|(_, v)| v["delta"]["text"].as_str())
        .collect();
    assert_eq!(said, "[claude-b] you said: hello there", "{out}");
}

#[tokio::test]
async fn ollama_chat_is_continued_with_a_prefill() {
    // A stall this time, cut short by a small idle limit.
    let opts = GatewayOptions {
        stream_idle_timeout: std::time::Duration::from_millis(300),
        ..GatewayOptions::default()
    };
    let (ups, gw) = chain_with(Kind::Ollama, &["gpu-a", "gpu-b"], opts).await;
    ups[0].push_fault_on("/api/chat", Fault::StreamStallAfter(3));
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "one two"}]});
    let out = text(&gw, "/api/chat", &body).await;
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let said: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert_eq!(said, "[gpu-a] you said: one two", "{out}");
    assert_eq!(lines.iter().filter(|l| l["done"] == true).count(), 1);
    assert_eq!(lines.last().unwrap()["eval_count"], 5, "{out}");
    assert_eq!(
        last_messages(&ups[1]).last().unwrap(),
        &json!({"role": "assistant", "content": "[gpu-a] you said:"})
    );
    // Ollama continues a prefill by itself: no flags.
    let last = ups[1].requests().last().unwrap().json.clone().unwrap();
    assert!(last["continue_final_message"].is_null(), "{last}");
}

/// `/api/generate` has no messages to carry a prefill: the next box gets the same prompt, and
/// what its answer repeats is dropped.
#[tokio::test]
async fn ollama_generate_is_restarted_and_the_repeat_dropped() {
    let (ups, gw) = chain(Kind::Ollama, &["twin", "twin"]).await;
    ups[0].push_fault_on("/api/generate", Fault::StreamCutAfter(2));
    let body = json!({"model": "m", "prompt": "one two three"});
    let out = text(&gw, "/api/generate", &body).await;
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let said: String = lines
        .iter()
        .filter_map(|l| l["response"].as_str())
        .collect();
    assert_eq!(said, "[twin] you said: one two three", "{out}");
    // The second box generated all 6 words, the first 2 before it was cut.
    assert_eq!(lines.last().unwrap()["eval_count"], 8, "{out}");
    let seen = ups[1].requests();
    assert_eq!(seen[0].json.as_ref().unwrap()["prompt"], "one two three");
}

/// A candidate that refuses the prefilled request (400) is sent the original at once.
#[tokio::test]
async fn a_refused_prefill_is_sent_again_without_it() {
    let (ups, gw) = chain(Kind::OpenAi, &["twin", "twin"]).await;
    ups[0].push_fault(Fault::StreamCutAfter(3));
    ups[1].push_fault(Fault::status(400));
    let out = text(&gw, "/v1/chat/completions", &chat(true)).await;
    let events = sse(&out);
    assert_eq!(
        openai_text(&events),
        "[twin] you said: hello there",
        "{out}"
    );
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let seen = ups[1].requests();
    assert_eq!(seen.len(), 2);
    let messages = |i: usize| seen[i].json.as_ref().unwrap()["messages"].clone();
    assert_eq!(messages(0).as_array().unwrap().len(), 2, "with the prefill");
    assert_eq!(messages(1).as_array().unwrap().len(), 1, "without it");
}

/// A continuation that fails too is continued in turn, with everything streamed so far.
#[tokio::test]
async fn a_failing_continuation_is_continued_by_the_next() {
    let (ups, gw) = chain(Kind::OpenAi, &["p0", "p1", "p2"]).await;
    ups[0].push_fault(Fault::StreamCutAfter(3)); // role, "[p0]", " you"
    ups[1].push_fault(Fault::StreamCutAfter(2)); // role, " said:"
    let out = text(&gw, "/v1/chat/completions", &chat(true)).await;
    let events = sse(&out);
    assert_eq!(openai_text(&events), "[p0] you said: hello there", "{out}");
    assert_eq!(
        last_messages(&ups[2]).last().unwrap(),
        &json!({"role": "assistant", "content": "[p0] you said:"})
    );
    // An OpenAI-compatible server of the user's own is told to continue the prefill (vLLM's
    // flags); the first candidate got the request as the client sent it.
    let last = ups[2].requests().last().unwrap().json.clone().unwrap();
    assert_eq!(
        (
            &last["continue_final_message"],
            &last["add_generation_prompt"]
        ),
        (&json!(true), &json!(false))
    );
    assert!(ups[0].requests()[0].json.as_ref().unwrap()["continue_final_message"].is_null());
    let usage = events
        .iter()
        .find(|(_, v)| v["usage"].is_object())
        .expect("usage");
    assert_eq!(usage.1["usage"]["completion_tokens"], 5, "{out}");
    assert!(!out.contains("\"error\""), "{out}");
    let m = gw.metrics().await;
    assert!(
        m.contains("aigw_stream_continuations_total{outcome=\"prefill\"} 2"),
        "{m}"
    );
}

/// Outside chat streams there is nothing to splice onto: the Responses API keeps the error
/// event, and the next candidate is not asked.
#[tokio::test]
async fn a_responses_stream_is_not_continued() {
    let (ups, gw) = chain(Kind::OpenAi, &["a", "b"]).await;
    ups[0].push_fault(Fault::StreamCutAfter(5));
    let body = json!({"model": "m", "input": "hello there", "stream": true});
    let out = text(&gw, "/v1/responses", &body).await;
    assert!(out.contains("ERR_NGROK_3800"), "{out}");
    assert!(!out.contains("response.completed"), "{out}");
    assert_eq!(ups[1].requests().len(), 0);
}

/// Continuation costs a stream that does not fail nothing visible: the client gets the
/// upstream's bytes exactly (here compared with what a fresh, identical stand-in sends for the
/// body the gateway sent upstream).
#[tokio::test]
async fn a_stream_that_does_not_fail_passes_byte_for_byte() {
    for (kind, path, body) in [
        (Kind::OpenAi, "/v1/chat/completions", chat(true)),
        (
            Kind::Anthropic,
            "/v1/messages",
            json!({"model": "m", "max_tokens": 64, "stream": true,
                   "messages": [{"role": "user", "content": "hello there"}]}),
        ),
        (
            Kind::Ollama,
            "/api/chat",
            json!({"model": "m", "messages": [{"role": "user", "content": "hello there"}]}),
        ),
    ] {
        let (ups, gw) = chain(kind, &["a", "b"]).await;
        let through = text(&gw, path, &body).await;
        let sent = ups[0].requests()[0].body.clone();
        let twin = StandIn::start(kind).await.with_label("a").with_any_model();
        let direct = client()
            .post(format!("{}{path}", twin.url()))
            .header("content-type", "application/json")
            .body(sent)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(through, direct, "{path}");
        assert_eq!(ups[1].requests().len(), 0);
        assert!(
            !gw.metrics()
                .await
                .contains("aigw_stream_continuations_total{")
        );
    }
}

/// A provider's own error event midway (Anthropic `overloaded_error`, OpenAI `{"error": …}`,
/// Ollama `{"error": …}`) is a failure like a cut: the next candidate continues the answer and
/// the client never sees the error. With nowhere to continue, the event is relayed as sent.
#[tokio::test]
async fn a_providers_error_event_midway_is_continued_not_relayed() {
    let (ups, gw) = chain(Kind::Anthropic, &["claude-a", "claude-b"]).await;
    ups[0].push_fault(Fault::StreamErrorAfter(5));
    let body = json!({"model": "m", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": "hello there"}]});
    gw.gw.status.watch();
    let out = text(&gw, "/v1/messages", &body).await;
    let events = sse(&out);
    assert!(!events.iter().any(|(n, _)| n == "error"), "{out}");
    assert!(!out.contains("overloaded_error"), "{out}");
    let said: String = events
        .iter()
        .filter_map(|(_, v)| v["delta"]["text"].as_str())
        .collect();
    assert_eq!(said, "[claude-a] you said: hello there", "{out}");
    // The access line and the status page count the continuation's attempt.
    let recent = gw.gw.status.recorded().recent;
    assert_eq!(recent[0].attempts, 2, "{recent:?}");

    let (ups, gw) = chain(Kind::OpenAi, &["p0", "p1"]).await;
    ups[0].push_fault(Fault::StreamErrorAfter(3));
    let out = text(&gw, "/v1/chat/completions", &chat(true)).await;
    assert_eq!(
        openai_text(&sse(&out)),
        "[p0] you said: hello there",
        "{out}"
    );
    assert!(!out.contains("\"error\""), "{out}");
    assert!(out.ends_with("data: [DONE]\n\n"), "{out}");

    let (ups, gw) = chain(Kind::Ollama, &["gpu-a", "gpu-b"]).await;
    ups[0].push_fault_on("/api/chat", Fault::StreamErrorAfter(3));
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "one two"}]});
    let out = text(&gw, "/api/chat", &body).await;
    assert!(!out.contains("\"error\""), "{out}");
    let said: String = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| l["message"]["content"].as_str().map(String::from))
        .collect();
    assert_eq!(said, "[gpu-a] you said: one two", "{out}");

    // A single candidate: the provider's event reaches the client as the provider sent it.
    let (ups, gw) = chain(Kind::Anthropic, &["only"]).await;
    ups[0].push_fault(Fault::StreamErrorAfter(5));
    let body = json!({"model": "m", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": "hello there"}]});
    let out = text(&gw, "/v1/messages", &body).await;
    assert!(out.contains("overloaded_error"), "{out}");
}

/// A stream that fails midway is a failure of its model: its circuit breaker hears of it (with
/// one failure to open, the next request goes elsewhere), and its `--max-in-flight` slot is let
/// go when it fails, not when the continued stream ends.
#[tokio::test]
async fn a_failure_midway_opens_the_breaker_and_frees_the_slot() {
    use aigw::gateway::attempts::breaker::BreakerOptions;
    use aigw::gateway::fleet::limit::LimitOptions;
    use std::time::Duration;

    let opts = GatewayOptions {
        limits: LimitOptions {
            max_in_flight: [("p0".to_string(), 1)].into(),
            queue_depth: 0,
            ..LimitOptions::default()
        },
        ..GatewayOptions::default()
    };
    let (ups, gw) = chain_with(Kind::OpenAi, &["p0", "p1"], opts).await;
    ups[0].push_fault(Fault::StreamCutAfter(3));
    // p1 takes its time, so the stream is still open when the next request comes.
    ups[1].push_fault(Fault::SlowFirstChunk(Duration::from_secs(3)));
    let long = gw.post("/v1/chat/completions", &chat(true)).await;
    assert_eq!(long.status(), 200);
    let start = std::time::Instant::now();
    while ups[1].requests().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "never continued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // p0 failed and its slot went with it: it answers the next request itself.
    let r = gw.post("/v1/chat/completions", &chat(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aigw-provider"], "p0");
    let out = long.text().await.unwrap();
    assert_eq!(
        openai_text(&sse(&out)),
        "[p0] you said: hello there",
        "{out}"
    );

    // One failure opens the circuit: a failure midway counts.
    let opts = GatewayOptions {
        breaker: BreakerOptions {
            failures: 1,
            cooldown: Duration::from_secs(600),
        },
        ..GatewayOptions::default()
    };
    let (ups, gw) = chain_with(Kind::OpenAi, &["p0", "p1"], opts).await;
    ups[0].push_fault(Fault::StreamCutAfter(3));
    let out = text(&gw, "/v1/chat/completions", &chat(true)).await;
    assert_eq!(
        openai_text(&sse(&out)),
        "[p0] you said: hello there",
        "{out}"
    );
    let r = gw.post("/v1/chat/completions", &chat(false)).await;
    assert_eq!(r.headers()["x-aigw-provider"], "p1");
    let m = gw.metrics().await;
    assert!(m.contains("aigw_circuit_open{model=\"p0:m\"} 1"), "{m}");
}
