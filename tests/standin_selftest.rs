//! Tests of the stand-in providers themselves, with a plain HTTP client.

#[path = "support/standin/mod.rs"]
mod standin;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use standin::{Fault, Kind, StandIn};

const ALL: [Kind; 3] = [Kind::Ollama, Kind::OpenAi, Kind::Anthropic];

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A client without a total deadline, for reading streams chunk by chunk.
fn stream_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(s: &StandIn, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("{}{path}", s.url()))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn post(s: &StandIn, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", s.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn post_json(s: &StandIn, path: &str, body: Value) -> (u16, Value) {
    let r = post(s, path, body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// A streaming request in each provider's main dialect.
fn stream_request(kind: Kind, said: &str) -> (&'static str, Value) {
    match kind {
        Kind::Ollama => (
            "/api/chat",
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": said}]}),
        ),
        Kind::OpenAi => (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": said}]}),
        ),
        Kind::Anthropic => (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
                   "messages": [{"role": "user", "content": said}]}),
        ),
    }
}

/// Splits a stream body into its chunks: NDJSON lines or SSE events.
fn events(kind: Kind, text: &str) -> Vec<String> {
    match kind {
        Kind::Ollama => text.split_terminator('\n').map(str::to_string).collect(),
        _ => text
            .split_inclusive("\n\n")
            .filter(|e| e.ends_with("\n\n"))
            .map(str::to_string)
            .collect(),
    }
}

/// The JSON payload of a chunk (`data:` line for SSE).
fn payload(kind: Kind, event: &str) -> String {
    match kind {
        Kind::Ollama => event.to_string(),
        _ => event
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or("")
            .to_string(),
    }
}

/// Whether the chunk is the stream's terminator.
fn is_terminator(kind: Kind, event: &str) -> bool {
    match kind {
        Kind::Ollama => serde_json::from_str::<Value>(event).is_ok_and(|v| v["done"] == true),
        Kind::OpenAi => event == "data: [DONE]\n\n",
        Kind::Anthropic => event.starts_with("event: message_stop\n"),
    }
}

/// Reads a whole body; returns the text received and whether it ended with an error.
async fn read_all(resp: reqwest::Response) -> (String, bool) {
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("stream stuck")
    {
        match item {
            Ok(b) => text.push_str(std::str::from_utf8(&b).unwrap()),
            Err(_) => return (text, true),
        }
    }
    (text, false)
}

async fn send_stream(s: &StandIn, said: &str) -> reqwest::Response {
    let (path, body) = stream_request(s.kind(), said);
    stream_client()
        .post(format!("{}{path}", s.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("bad base64"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(val(c)) << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

// =============================================================================================
// Ollama

#[tokio::test]
async fn ollama_root_version_and_gin_defaults() {
    let s = StandIn::start(Kind::Ollama).await;
    assert_eq!(get(&s, "/").await, (200, "Ollama is running".into()));
    let head = client().head(s.url()).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.text().await.unwrap(), "");
    let (status, body) = get(&s, "/api/version").await;
    assert_eq!((status, body.as_str()), (200, r#"{"version":"0.12.6"}"#));

    let r = client()
        .get(format!("{}/nope", s.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(r.text().await.unwrap(), "404 page not found");
    let r = client()
        .post(format!("{}/api/tags", s.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (405, "405 method not allowed".into())
    );
    s.stop().await;
}

#[tokio::test]
async fn ollama_tags_lists_models_in_display_form() {
    let s = StandIn::start(Kind::Ollama)
        .await
        .with_models(&["llama3.2", "qwen3:8b"]);
    let (status, body) = get(&s, "/api/tags").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["name"], "llama3.2:latest");
    assert_eq!(models[0]["model"], "llama3.2:latest");
    assert_eq!(models[1]["model"], "qwen3:8b");
    for m in models {
        assert_eq!(m["digest"].as_str().unwrap().len(), 64);
        assert!(m["size"].as_u64().unwrap() > 0);
        assert_eq!(m["modified_at"], "2025-01-01T00:00:00Z");
        for k in [
            "format",
            "family",
            "families",
            "parameter_size",
            "quantization_level",
        ] {
            assert!(m["details"].get(k).is_some(), "details.{k}");
        }
    }
    // Empty list is [] rather than null.
    let empty = StandIn::start(Kind::Ollama).await.with_models(&[]);
    assert_eq!(get(&empty, "/api/tags").await.1, r#"{"models":[]}"#);
}

#[tokio::test]
async fn ollama_generate_streams_ndjson_by_default() {
    let s = StandIn::start(Kind::Ollama).await.with_label("ollama-a");
    let r = post(
        &s,
        "/api/generate",
        json!({"model": "llama3.2", "prompt": "why is the sky blue?"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    assert!(
        text.ends_with('\n') && !text.contains("\n\n"),
        "NDJSON without blank lines"
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (last, chunks) = lines.split_last().unwrap();
    assert!(chunks.len() > 1);
    assert!(
        chunks
            .iter()
            .all(|c| c["done"] == false && c["model"] == "llama3.2")
    );
    let said: String = chunks
        .iter()
        .map(|c| c["response"].as_str().unwrap())
        .collect();
    assert_eq!(said, "[ollama-a] you said: why is the sky blue?");
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["response"], "");
    assert_eq!(last["eval_count"], chunks.len());
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "eval_duration",
        "context",
    ] {
        assert!(last.get(k).is_some(), "{k}");
    }
}

#[tokio::test]
async fn ollama_generate_stream_false_is_one_object() {
    let s = StandIn::start(Kind::Ollama).await;
    let r = post(
        &s,
        "/api/generate",
        json!({"model": "llama3.2", "prompt": "hi there", "stream": false,
                                              "options": {"num_predict": 2}}),
    )
    .await;
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(!text.ends_with('\n'), "no trailing newline");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["response"], "[ollama] you");
    assert_eq!(v["done_reason"], "length");
    assert_eq!(v["eval_count"], 2);
    assert_eq!(v["prompt_eval_count"], 2);
}

#[tokio::test]
async fn ollama_load_unload_and_ps() {
    let s = StandIn::start(Kind::Ollama).await.with_models(&[
        "llama3.2",
        "nomic-embed-text",
        "qwen3:8b",
    ]);
    assert_eq!(get(&s, "/api/ps").await.1, r#"{"models":[]}"#);

    // Empty prompt loads: one object even though stream defaults to true.
    let r = post(&s, "/api/generate", json!({"model": "llama3.2"})).await;
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["done"].clone(), v["done_reason"].clone()),
        (json!(true), json!("load"))
    );
    let (_, ps) = get(&s, "/api/ps").await;
    let ps: Value = serde_json::from_str(&ps).unwrap();
    let m = &ps["models"][0];
    assert_eq!(m["name"], "llama3.2:latest");
    assert!(m["expires_at"].is_string() && m["size_vram"].as_u64().unwrap() > 0);
    assert_eq!(m["context_length"], 4096);

    // Chat with messages [] loads; embed loads; most recent first.
    let (_, v) = post_json(
        &s,
        "/api/chat",
        json!({"model": "qwen3:8b", "messages": []}),
    )
    .await;
    assert_eq!(v["done_reason"], "load");
    assert_eq!(v["message"], json!({"role": "assistant", "content": ""}));
    post_json(
        &s,
        "/api/embed",
        json!({"model": "nomic-embed-text", "input": "x"}),
    )
    .await;
    let names = |ps: &str| -> Vec<String> {
        let v: Value = serde_json::from_str(ps).unwrap();
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&get(&s, "/api/ps").await.1),
        ["nomic-embed-text:latest", "qwen3:8b", "llama3.2:latest"]
    );

    // keep_alive 0 with an empty prompt unloads.
    let (_, v) = post_json(
        &s,
        "/api/generate",
        json!({"model": "llama3.2", "keep_alive": 0}),
    )
    .await;
    assert_eq!(v["done_reason"], "unload");
    let (_, v) = post_json(
        &s,
        "/api/chat",
        json!({"model": "qwen3:8b", "messages": [], "keep_alive": "0s"}),
    )
    .await;
    assert_eq!(v["done_reason"], "unload");
    assert_eq!(
        names(&get(&s, "/api/ps").await.1),
        ["nomic-embed-text:latest"]
    );

    // A unitless keep_alive string is Go's duration error.
    let (status, v) = post_json(
        &s,
        "/api/generate",
        json!({"model": "llama3.2", "keep_alive": "3600"}),
    )
    .await;
    assert_eq!(
        (status, v),
        (
            400,
            json!({"error": "time: missing unit in duration \"3600\""})
        )
    );
}

#[tokio::test]
async fn ollama_chat_stream_and_not() {
    let s = StandIn::start(Kind::Ollama).await;
    let msgs =
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello!"}]);
    let text = post(
        &s,
        "/api/chat",
        json!({"model": "llama3.2", "messages": msgs}),
    )
    .await
    .text()
    .await
    .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let content: String = lines
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(content, "[ollama] you said: Hello!");
    assert!(lines.iter().all(|l| l["message"]["role"] == "assistant"));
    assert_eq!(lines.last().unwrap()["done_reason"], "stop");
    assert_eq!(lines.last().unwrap()["prompt_eval_count"], 3);

    let (status, v) = post_json(
        &s,
        "/api/chat",
        json!({"model": "llama3.2", "messages": msgs, "stream": false, "tools": []}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["message"]["content"], "[ollama] you said: Hello!");
    assert_eq!(v["done"], true);
}

#[tokio::test]
async fn ollama_embed_is_normalised_and_deterministic() {
    let s = StandIn::start(Kind::Ollama).await;
    let (status, v) = post_json(
        &s,
        "/api/embed",
        json!({"model": "llama3.2", "input": ["a", "b", "a"]}),
    )
    .await;
    assert_eq!(status, 200);
    let e = v["embeddings"].as_array().unwrap();
    assert_eq!(e.len(), 3);
    let (a, b, a2) = (floats(&e[0]), floats(&e[1]), floats(&e[2]));
    assert_eq!(a.len(), 16);
    assert!((norm(&a) - 1.0).abs() < 1e-4 && (norm(&b) - 1.0).abs() < 1e-4);
    assert_eq!(a, a2);
    assert_ne!(a, b);
    assert_eq!(v["model"], "llama3.2");
    assert!(v["prompt_eval_count"].is_u64());

    let (_, v) = post_json(
        &s,
        "/api/embed",
        json!({"model": "llama3.2", "input": "a", "dimensions": 4}),
    )
    .await;
    assert_eq!(floats(&v["embeddings"][0]).len(), 4);
    let (_, v) = post_json(&s, "/api/embed", json!({"model": "llama3.2", "input": []})).await;
    assert_eq!(v["embeddings"], json!([]));
    let (status, v) = post_json(
        &s,
        "/api/embed",
        json!({"model": "llama3.2", "input": [1, 2]}),
    )
    .await;
    assert_eq!((status, v), (400, json!({"error": "invalid input type"})));
    let (_, v) = post_json(
        &s,
        "/api/embeddings",
        json!({"model": "llama3.2", "prompt": "a"}),
    )
    .await;
    assert_eq!(floats(&v["embedding"]).len(), 16);
}

#[tokio::test]
async fn ollama_model_errors_and_name_normalisation() {
    let s = StandIn::start(Kind::Ollama).await;
    let (status, v) = post_json(&s, "/api/generate", json!({"model": "nope", "prompt": "x"})).await;
    assert_eq!(
        (status, v),
        (404, json!({"error": "model 'nope' not found"}))
    );
    let (status, v) = post_json(&s, "/api/embed", json!({"model": "nope", "input": "x"})).await;
    assert_eq!(
        (status, v),
        (
            404,
            json!({"error": "model \"nope\" not found, try pulling it first"})
        )
    );
    let (status, v) = post_json(&s, "/api/chat", json!({"messages": []})).await;
    assert_eq!((status, v), (400, json!({"error": "model is required"})));
    let r = client()
        .post(format!("{}/api/chat", s.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "missing request body"})
    );

    // Lookups fold case and add :latest; replies echo the name as sent.
    for name in ["LLAMA3.2", "llama3.2:latest", "library/llama3.2"] {
        let (status, v) = post_json(
            &s,
            "/api/generate",
            json!({"model": name, "prompt": "x", "stream": false}),
        )
        .await;
        assert_eq!((status, v["model"].as_str().unwrap()), (200, name));
    }
    let (status, v) = post_json(&s, "/api/show", json!({"model": "llama3.2"})).await;
    assert_eq!(status, 200);
    assert!(v.get("model_info").is_some() && v["details"]["format"] == "gguf");
}

#[tokio::test]
async fn ollama_openai_compatible_v1() {
    let s = StandIn::start(Kind::Ollama).await.with_label("local");
    let msgs = json!([{"role": "user", "content": "Hello!"}]);
    let (status, v) = post_json(
        &s,
        "/v1/chat/completions",
        json!({"model": "llama3.2", "messages": msgs}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["system_fingerprint"], "fp_ollama");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "[local] you said: Hello!"
    );
    assert_eq!(v["usage"]["total_tokens"], 5);

    let r = post(
        &s,
        "/v1/chat/completions",
        json!({"model": "llama3.2", "messages": msgs, "stream": true,
                                                   "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let ev = events(Kind::OpenAi, &r.text().await.unwrap());
    assert_eq!(ev.last().unwrap(), "data: [DONE]\n\n");
    let usage: Value = serde_json::from_str(&payload(Kind::OpenAi, &ev[ev.len() - 2])).unwrap();
    assert_eq!(
        (
            usage["choices"].clone(),
            usage["usage"]["completion_tokens"].clone()
        ),
        (json!([]), json!(4))
    );

    let (_, v) = post_json(
        &s,
        "/v1/completions",
        json!({"model": "llama3.2", "prompt": "abc"}),
    )
    .await;
    assert_eq!(v["choices"][0]["text"], "[local] you said: abc");
    let (_, v) = post_json(
        &s,
        "/v1/embeddings",
        json!({"model": "llama3.2", "input": ["a"]}),
    )
    .await;
    assert_eq!(v["data"][0]["object"], "embedding");
    let (_, v) = serde_json::from_str::<Value>(&get(&s, "/v1/models").await.1)
        .map(|v| ((), v))
        .unwrap();
    assert_eq!(
        v["data"][0],
        json!({"id": "llama3.2:latest", "object": "model", "created": 1735689600u64, "owned_by": "library"})
    );

    let (status, v) = post_json(
        &s,
        "/v1/chat/completions",
        json!({"model": "nope", "messages": msgs}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        v,
        json!({"error": {"message": "model 'nope' not found", "type": "not_found_error", "param": null, "code": null}})
    );
    let (status, v) = post_json(
        &s,
        "/v1/chat/completions",
        json!({"model": "llama3.2", "messages": []}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["type"].as_str().unwrap()),
        (400, "invalid_request_error")
    );
    // Ollama 0.12 has no Responses API: Gin's 404.
    assert_eq!(
        post(&s, "/v1/responses", json!({}))
            .await
            .text()
            .await
            .unwrap(),
        "404 page not found"
    );
    // /v1 use loads the model.
    assert!(get(&s, "/api/ps").await.1.contains("llama3.2:latest"));
}

// =============================================================================================
// OpenAI

#[tokio::test]
async fn openai_chat_completion() {
    let s = StandIn::start(Kind::OpenAi).await.with_label("openai-a");
    let r = post(&s, "/v1/chat/completions", json!({"model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": [{"type": "text", "text": "Hello!"}]}]})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-standin-label"], "openai-a");
    assert_eq!(r.headers()["x-request-id"], "req_standin_0");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], "chatcmpl-standin-0");
    assert_eq!(v["created"], 1_700_000_000);
    assert_eq!(v["model"], "gpt-4o-mini");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "[openai-a] you said: Hello!");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(v["usage"]["total_tokens"], 7);

    let (_, v) = post_json(
        &s,
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "max_completion_tokens": 1,
        "messages": [{"role": "user", "content": "Hello!"}]}),
    )
    .await;
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["choices"][0]["message"]["content"], "[openai-a]");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn openai_chat_stream_with_and_without_usage() {
    let s = StandIn::start(Kind::OpenAi).await;
    let body = |usage: bool| {
        json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": usage},
                                    "messages": [{"role": "user", "content": "Hello!"}]})
    };
    let r = post(&s, "/v1/chat/completions", body(true)).await;
    assert_eq!(
        r.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    let ev = events(Kind::OpenAi, &text);
    assert_eq!(ev.concat(), text, "only data events");
    assert_eq!(ev.last().unwrap(), "data: [DONE]\n\n");
    let chunks: Vec<Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&payload(Kind::OpenAi, e)).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == "chatcmpl-standin-0")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "[openai] you said: Hello!");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(finish["usage"].is_null());
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 5);

    let text = post(&s, "/v1/chat/completions", body(false))
        .await
        .text()
        .await
        .unwrap();
    assert!(!text.contains("usage"));
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn openai_completions() {
    let s = StandIn::start(Kind::OpenAi).await;
    let (status, v) = post_json(
        &s,
        "/v1/completions",
        json!({"model": "gpt-4o-mini", "prompt": "Say this"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "[openai] you said: Say this");
    assert_eq!(v["usage"]["prompt_tokens"], 2);

    let text = post(
        &s,
        "/v1/completions",
        json!({"model": "gpt-4o-mini", "prompt": "Say this", "stream": true}),
    )
    .await
    .text()
    .await
    .unwrap();
    let ev = events(Kind::OpenAi, &text);
    assert_eq!(ev.last().unwrap(), "data: [DONE]\n\n");
    let said: String = ev[..ev.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&payload(Kind::OpenAi, e)).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(said, "[openai] you said: Say this");
}

#[tokio::test]
async fn openai_embeddings_float_and_base64() {
    let s = StandIn::start(Kind::OpenAi).await;
    let req = |fmt: &str| json!({"model": "text-embedding-3-small", "input": ["hello", "world"], "encoding_format": fmt});
    let (status, f) = post_json(&s, "/v1/embeddings", req("float")).await;
    assert_eq!(status, 200);
    assert_eq!(f["object"], "list");
    assert_eq!(f["data"][1]["index"], 1);
    assert_eq!(f["usage"], json!({"prompt_tokens": 2, "total_tokens": 2}));
    let v0 = floats(&f["data"][0]["embedding"]);
    assert!((norm(&v0) - 1.0).abs() < 1e-4);

    // The openai SDK asks for base64 by default: little-endian f32.
    let (_, b) = post_json(&s, "/v1/embeddings", req("base64")).await;
    let bytes = base64_decode(b["data"][0]["embedding"].as_str().unwrap());
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, v0.iter().map(|&x| x as f32).collect::<Vec<_>>());

    let (_, d) = post_json(
        &s,
        "/v1/embeddings",
        json!({"model": "text-embedding-3-small", "input": "x", "dimensions": 3}),
    )
    .await;
    assert_eq!(floats(&d["data"][0]["embedding"]).len(), 3);
    let (status, _) = post_json(&s, "/v1/embeddings", req("hex")).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn openai_responses_json_and_stream() {
    let s = StandIn::start(Kind::OpenAi).await;
    let (status, v) = post_json(
        &s,
        "/v1/responses",
        json!({"model": "gpt-4o", "input": "Tell me a joke"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        "[openai] you said: Tell me a joke"
    );
    assert_eq!(v["usage"]["input_tokens"], 4);

    let input = json!([{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]);
    let text = post(
        &s,
        "/v1/responses",
        json!({"model": "gpt-4o", "input": input, "stream": true}),
    )
    .await
    .text()
    .await
    .unwrap();
    let ev = events(Kind::OpenAi, &text);
    let names: Vec<&str> = ev
        .iter()
        .map(|e| e.lines().next().unwrap().trim_start_matches("event: "))
        .collect();
    assert_eq!(
        names[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(names.last().unwrap(), &"response.completed");
    assert!(!text.contains("[DONE]"));
    let deltas: String = ev
        .iter()
        .filter(|e| e.starts_with("event: response.output_text.delta"))
        .map(|e| {
            serde_json::from_str::<Value>(&payload(Kind::OpenAi, e)).unwrap()["delta"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(deltas, "[openai] you said: Hi");
    let seqs: Vec<u64> = ev
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&payload(Kind::OpenAi, e)).unwrap()["sequence_number"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (0..ev.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn openai_models_and_not_found() {
    let s = StandIn::start(Kind::OpenAi)
        .await
        .with_models(&["gpt-a", "gpt-b"]);
    let (_, body) = get(&s, "/v1/models").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-a", "gpt-b"]);
    assert_eq!(get(&s, "/v1/models/gpt-b").await.0, 200);
    assert_eq!(get(&s, "/v1/models/gpt-c").await.0, 404);

    let (status, v) = post_json(
        &s,
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["param"].is_null());
    let (status, v) = post_json(&s, "/v1/nope", json!({})).await;
    assert_eq!(
        (status, v["error"]["message"].as_str().unwrap()),
        (404, "Invalid URL (POST /v1/nope)")
    );
    let (status, v) = post_json(&s, "/v1/chat/completions", json!({"model": "gpt-a"})).await;
    assert_eq!(
        (status, v["error"]["param"].as_str().unwrap()),
        (400, "messages")
    );
}

// =============================================================================================
// Anthropic

#[tokio::test]
async fn anthropic_messages_json() {
    let s = StandIn::start(Kind::Anthropic).await.with_label("claude-a");
    let r = client()
        .post(format!("{}/v1/messages", s.url()))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "be brief",
                      "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello, Claude"}]}]}))
        .send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["request-id"], "req_standin_0");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["id"], "msg_standin_0");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "[claude-a] you said: Hello, Claude"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["stop_sequence"].is_null());
    assert_eq!(v["usage"]["input_tokens"], 4);
    assert_eq!(v["usage"]["output_tokens"], 5);
    assert_eq!(
        s.requests()[0].header("anthropic-version"),
        Some("2023-06-01")
    );

    let (_, v) = post_json(
        &s,
        "/v1/messages",
        json!({"model": "claude-sonnet-4-5", "max_tokens": 2,
        "messages": [{"role": "user", "content": "Hello"}]}),
    )
    .await;
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["content"][0]["text"], "[claude-a] you");
}

#[tokio::test]
async fn anthropic_messages_sse() {
    let s = StandIn::start(Kind::Anthropic).await;
    let r = send_stream(&s, "Hello").await;
    assert_eq!(
        r.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    let ev = events(Kind::Anthropic, &text);
    let names: Vec<&str> = ev
        .iter()
        .map(|e| e.lines().next().unwrap().trim_start_matches("event: "))
        .collect();
    assert_eq!(names[..3], ["message_start", "content_block_start", "ping"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let data: Vec<Value> = ev
        .iter()
        .map(|e| serde_json::from_str(&payload(Kind::Anthropic, e)).unwrap())
        .collect();
    for (name, d) in names.iter().zip(&data) {
        assert_eq!(d["type"], *name, "data.type matches the event name");
    }
    let said: String = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta")
        .map(|d| d["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(said, "[anthropic] you said: Hello");
    assert_eq!(data[0]["message"]["model"], "claude-sonnet-4-5");
    assert_eq!(data[data.len() - 2]["delta"]["stop_reason"], "end_turn");
    assert_eq!(data[data.len() - 2]["usage"]["output_tokens"], 4);
}

#[tokio::test]
async fn anthropic_errors_and_models() {
    let s = StandIn::start(Kind::Anthropic).await;
    let (status, v) = post_json(
        &s,
        "/v1/messages",
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["type"], "error");
    assert_eq!(
        v["error"],
        json!({"type": "invalid_request_error", "message": "max_tokens: Field required"})
    );
    let (status, v) = post_json(&s, "/v1/messages", json!({"model": "claude-9", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(
        (status, v["error"]["type"].as_str().unwrap()),
        (404, "not_found_error")
    );
    let (_, body) = get(&s, "/v1/models").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["has_more"], false);
}

// =============================================================================================
// Auth and recording

#[tokio::test]
async fn revoked_keys_get_the_providers_401_and_others_pass() {
    let s = StandIn::start(Kind::OpenAi).await;
    s.set_revoked_keys(&["sk-revoked-0001"]);
    let send = |key: &'static str| {
        client()
            .post(format!("{}/v1/chat/completions", s.url()))
            .bearer_auth(key)
            .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let r = send("sk-revoked-0001").await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(send("sk-other-0002").await.unwrap().status(), 200);
    s.set_revoked_keys(&[]);
    assert_eq!(send("sk-revoked-0001").await.unwrap().status(), 200);
}

#[tokio::test]
async fn any_model_answers_names_it_does_not_list() {
    let strict = StandIn::start(Kind::OpenAi).await;
    let body = json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _) = post_json(&strict, "/v1/chat/completions", body.clone()).await;
    assert_eq!(status, 404);
    let any = StandIn::start(Kind::OpenAi).await.with_any_model();
    let (status, v) = post_json(&any, "/v1/chat/completions", body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "m1");
}

#[tokio::test]
async fn require_key_per_provider() {
    for kind in ALL {
        let s = StandIn::start(kind).await.with_key("sk-secret-123456");
        let (path, body) = stream_request(kind, "hi");
        let send = |hdr: Option<(&'static str, String)>| {
            let mut rb = client().post(format!("{}{path}", s.url())).json(&body);
            if let Some((k, v)) = hdr {
                rb = rb.header(k, v);
            }
            rb.send()
        };
        let auth = |key: &str| match kind {
            Kind::Anthropic => ("x-api-key", key.to_string()),
            _ => ("authorization", format!("Bearer {key}")),
        };
        let missing = send(None).await.unwrap();
        assert_eq!(missing.status(), 401, "{kind:?}");
        let v: Value = missing.json().await.unwrap();
        let wrong: Value = {
            let r = send(Some(auth("sk-wrong-000000"))).await.unwrap();
            assert_eq!(r.status(), 401);
            r.json().await.unwrap()
        };
        match kind {
            Kind::Ollama => {
                assert_eq!(v, json!({"error": "unauthorized"}));
                assert_eq!(wrong, v);
            }
            Kind::OpenAi => {
                assert_eq!(v["error"]["type"], "invalid_request_error");
                assert!(
                    v["error"]["message"]
                        .as_str()
                        .unwrap()
                        .starts_with("You didn't provide an API key")
                );
                assert_eq!(wrong["error"]["code"], "invalid_api_key");
                assert!(
                    !wrong.to_string().contains("sk-wrong-000000"),
                    "key is masked"
                );
            }
            Kind::Anthropic => {
                assert_eq!(v["error"]["type"], "authentication_error");
                assert_eq!(wrong["error"]["message"], "invalid x-api-key");
            }
        }
        let ok = send(Some(auth("sk-secret-123456"))).await.unwrap();
        assert_eq!(ok.status(), 200, "{kind:?}");
        assert_eq!(s.requests().len(), 3, "rejected requests are recorded too");
        if kind == Kind::Anthropic {
            let r = send(Some(("authorization", "Bearer sk-secret-123456".into())))
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                200,
                "bearer form, as the anthropic Python SDK 2.x sends it"
            );
        }
    }
}

#[tokio::test]
async fn requests_are_recorded() {
    let s = StandIn::start(Kind::OpenAi).await;
    client()
        .post(format!("{}/v1/chat/completions?api-version=1", s.url()))
        .header("authorization", "Bearer abc")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    get(&s, "/v1/models").await;
    let r = s.requests();
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].seq, r[1].seq), (0, 1));
    assert_eq!(r[0].method, "POST");
    assert_eq!(r[0].path, "/v1/chat/completions");
    assert_eq!(r[0].query.as_deref(), Some("api-version=1"));
    assert_eq!(r[0].header("Authorization"), Some("Bearer abc"));
    assert_eq!(r[0].model(), Some("gpt-4o"));
    assert!(r[0].fault.is_none());
    assert_eq!(r[1].method, "GET");
    assert!(r[1].json.is_none() && r[1].body.is_empty());
    assert_eq!(s.hits("/v1/models"), 1);
    s.clear_requests();
    assert!(s.requests().is_empty());
}

// =============================================================================================
// Faults

#[tokio::test]
async fn fault_status_uses_each_providers_error_shape() {
    for (kind, code) in [
        (Kind::Ollama, 503),
        (Kind::OpenAi, 500),
        (Kind::Anthropic, 529),
    ] {
        let s = StandIn::start(kind).await;
        s.push_fault(Fault::status(code));
        let (path, body) = stream_request(kind, "hi");
        let (status, v) = post_json(&s, path, body.clone()).await;
        assert_eq!(status, code);
        match kind {
            Kind::Ollama => assert!(v["error"].as_str().unwrap().starts_with("server busy")),
            Kind::OpenAi => {
                assert_eq!(v["error"]["type"], "server_error");
                assert!(v["error"].get("param").is_some() && v["error"].get("code").is_some());
            }
            Kind::Anthropic => {
                assert_eq!(v["type"], "error");
                assert_eq!(v["error"]["type"], "overloaded_error");
            }
        }
        // One-shot: the next request succeeds, and both were recorded.
        assert_eq!(post(&s, path, body).await.status(), 200);
        let r = s.requests();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].fault, Some(Fault::status(code)));
        assert_eq!(r[1].fault, None);
    }
}

#[tokio::test]
async fn fault_status_retry_after_and_custom_body() {
    let s = StandIn::start(Kind::OpenAi).await;
    s.push_fault(Fault::rate_limited(7));
    s.push_fault(Fault::Status {
        code: 502,
        body: Some("<html>bad gateway</html>".into()),
        retry_after: None,
    });
    let r = post(&s, "/v1/models", json!({})).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let r = post(&s, "/v1/models", json!({})).await;
    assert_eq!(r.status(), 502);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(r.text().await.unwrap(), "<html>bad gateway</html>");
}

#[tokio::test]
async fn fault_delay_headers() {
    let s = StandIn::start(Kind::OpenAi).await;
    s.push_fault(Fault::DelayHeaders(Duration::from_millis(400)));
    let t = Instant::now();
    let r = client()
        .get(format!("{}/v1/models", s.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn fault_hang_times_out_and_stop_releases_it() {
    let s = StandIn::start(Kind::Anthropic).await;
    s.set_fault(Some(Fault::Hang));
    let short = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let err = short
        .get(format!("{}/v1/models", s.url()))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(s.hits("/v1/models"), 1, "recorded although never answered");

    // A request still hanging when the stand-in stops gets its connection closed.
    let url = format!("{}/v1/models", s.url());
    let pending = tokio::spawn(async move { client().get(url).send().await });
    while s.hits("/v1/models") < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = Instant::now();
    s.stop().await;
    assert!(pending.await.unwrap().is_err());
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn fault_reset_before_headers() {
    for kind in ALL {
        let s = StandIn::start(kind).await;
        s.push_fault(Fault::ResetBeforeHeaders);
        let (path, body) = stream_request(kind, "hi");
        let err = client()
            .post(format!("{}{path}", s.url()))
            .json(&body)
            .send()
            .await
            .unwrap_err();
        assert!(
            !err.is_timeout() && err.status().is_none(),
            "{kind:?}: {err}"
        );
        assert_eq!(s.hits(path), 1, "no client-side retry");
        assert_eq!(
            post(&s, path, body).await.status(),
            200,
            "next connection is fine"
        );
    }
}

#[tokio::test]
async fn fault_stream_cut_after() {
    for kind in ALL {
        let s = StandIn::start(kind).await;
        s.push_fault(Fault::StreamCutAfter(2));
        let r = send_stream(&s, "one two three four").await;
        assert_eq!(r.status(), 200);
        let (text, errored) = read_all(r).await;
        assert!(errored, "{kind:?}: the body ends in an error");
        let ev = events(kind, &text);
        assert_eq!(ev.len(), 2, "{kind:?}: {text:?}");
        assert!(!ev.iter().any(|e| is_terminator(kind, e)));

        // Past the content, it cuts right before the terminator.
        s.push_fault(Fault::StreamCutAfter(1000));
        let (text, errored) = read_all(send_stream(&s, "one two").await).await;
        assert!(errored);
        let full = send_stream(&s, "one two").await.text().await.unwrap();
        assert_eq!(
            events(kind, &text).len() + 1,
            events(kind, &full).len(),
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn fault_stream_stall_after() {
    for kind in ALL {
        let s = StandIn::start(kind).await;
        s.push_fault(Fault::StreamStallAfter(1));
        let r = send_stream(&s, "one two three").await;
        let mut body = r.bytes_stream();
        let mut text = String::new();
        let stalled = loop {
            match tokio::time::timeout(Duration::from_millis(700), body.next()).await {
                Ok(Some(Ok(b))) => text.push_str(std::str::from_utf8(&b).unwrap()),
                Ok(other) => panic!("{kind:?}: stream ended: {other:?}"),
                // Silence once the first chunk is in: the stream stalls (no tight timing: an
                // early silence before any chunk just keeps waiting).
                Err(_) if !events(kind, &text).is_empty() => break text,
                Err(_) => {}
            }
        };
        assert_eq!(events(kind, &stalled).len(), 1, "{kind:?}");
        s.stop().await;
        // Stopping the stand-in aborts the stalled stream.
        let end = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .unwrap();
        assert!(matches!(end, Some(Err(_)) | None), "{kind:?}");
    }
}

#[tokio::test]
async fn fault_stream_end_after() {
    for kind in ALL {
        let s = StandIn::start(kind).await;
        s.push_fault(Fault::StreamEndAfter(2));
        let (text, errored) = read_all(send_stream(&s, "one two three four").await).await;
        assert!(!errored, "{kind:?}: a clean end");
        let ev = events(kind, &text);
        assert_eq!(ev.len(), 2, "{kind:?}: {text:?}");
        assert!(!ev.iter().any(|e| is_terminator(kind, e)));
    }
}

/// A last assistant message is continued (only the rest of the answer, usage counting that),
/// also when another stand-in's label starts it; `without_prefill` answers anew.
#[tokio::test]
async fn an_assistant_prefill_is_continued_unless_turned_off() {
    let text_of = |kind: Kind, text: &str| -> String {
        events(kind, text)
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(&payload(kind, e)).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .or(v["delta"]["text"].as_str())
                    .or(v["message"]["content"].as_str())
                    .map(str::to_string)
            })
            .collect()
    };
    for kind in ALL {
        let (path, mut body) = stream_request(kind, "one two three");
        body["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "assistant", "content": "[other] you said: one"}));
        let s = StandIn::start(kind).await;
        let text = post(&s, path, body.clone()).await.text().await.unwrap();
        assert_eq!(text_of(kind, &text), " two three", "{kind:?}: {text}");
        let s = StandIn::start(kind).await.with_label("x").without_prefill();
        let text = post(&s, path, body.clone()).await.text().await.unwrap();
        assert_eq!(
            text_of(kind, &text),
            "[x] you said: one two three",
            "{kind:?}"
        );
        // A prefill that is not the start of its answer gets a continuation of its own.
        body["messages"][1]["content"] = json!("Something else");
        let s = StandIn::start(kind).await.with_label("y");
        let text = post(&s, path, body).await.text().await.unwrap();
        assert_eq!(text_of(kind, &text), " (continued by [y])", "{kind:?}");
    }
}

#[tokio::test]
async fn fault_malformed_chunk_at() {
    for kind in ALL {
        let s = StandIn::start(kind).await;
        s.push_fault(Fault::MalformedChunkAt(1));
        let (text, errored) = read_all(send_stream(&s, "one two three").await).await;
        assert!(!errored);
        let ev = events(kind, &text);
        for (i, e) in ev.iter().enumerate() {
            let p = payload(kind, e);
            let parses = p == "[DONE]" || serde_json::from_str::<Value>(&p).is_ok();
            assert_eq!(parses, i != 1, "{kind:?} chunk {i}: {e:?}");
        }
        assert!(
            is_terminator(kind, ev.last().unwrap()),
            "{kind:?}: rest of the stream is normal"
        );
        if kind == Kind::Anthropic {
            assert!(
                ev[1].starts_with("event: content_block_start\n"),
                "event name kept"
            );
        }
    }
}

#[tokio::test]
async fn fault_no_done_marker() {
    for kind in ALL {
        let s = StandIn::start(kind).await;
        s.push_fault(Fault::NoDoneMarker);
        let (text, errored) = read_all(send_stream(&s, "one two").await).await;
        assert!(!errored, "{kind:?}: ends cleanly");
        let ev = events(kind, &text);
        assert!(
            !ev.is_empty() && !ev.iter().any(|e| is_terminator(kind, e)),
            "{kind:?}: {text}"
        );
        let full = send_stream(&s, "one two").await.text().await.unwrap();
        assert_eq!(ev.len() + 1, events(kind, &full).len());
    }
}

#[tokio::test]
async fn fault_slow_first_chunk() {
    let s = StandIn::start(Kind::OpenAi).await;
    let delay = Duration::from_millis(800);
    s.push_fault(Fault::SlowFirstChunk(delay));
    let t = Instant::now();
    let r = send_stream(&s, "hi").await;
    let headers_at = t.elapsed();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    body.next().await.unwrap().unwrap();
    let first_at = t.elapsed();
    assert!(
        first_at - headers_at >= delay / 2,
        "headers {headers_at:?}, first chunk {first_at:?}"
    );
    let (rest, errored) = read_all_stream(body).await;
    assert!(!errored && rest.ends_with("data: [DONE]\n\n"));
}

async fn read_all_stream(
    mut body: impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
) -> (String, bool) {
    let mut text = String::new();
    while let Some(item) = body.next().await {
        match item {
            Ok(b) => text.push_str(std::str::from_utf8(&b).unwrap()),
            Err(_) => return (text, true),
        }
    }
    (text, false)
}

#[tokio::test]
async fn fault_context_length_and_content_policy() {
    for kind in ALL {
        let s = StandIn::start(kind).await;
        s.push_fault(Fault::ContextLengthExceeded);
        s.push_fault(Fault::ContentPolicy);
        let (path, body) = stream_request(kind, "hi");
        let (c1, ctx) = post_json(&s, path, body.clone()).await;
        let (c2, pol) = post_json(&s, path, body).await;
        assert_eq!((c1, c2), (400, 400), "{kind:?}");
        match kind {
            Kind::OpenAi => {
                assert_eq!(ctx["error"]["code"], "context_length_exceeded");
                assert_eq!(ctx["error"]["param"], "messages");
                assert_eq!(pol["error"]["code"], "content_policy_violation");
            }
            Kind::Anthropic => {
                assert!(
                    ctx["error"]["message"]
                        .as_str()
                        .unwrap()
                        .starts_with("prompt is too long")
                );
                assert_eq!(pol["error"]["type"], "invalid_request_error");
            }
            Kind::Ollama => {
                assert_eq!(
                    ctx,
                    json!({"error": "the input length exceeds the context length"})
                );
                assert!(pol["error"].as_str().unwrap().contains("content policy"));
            }
        }
    }
}

#[tokio::test]
async fn fault_queue_scoping_and_persistence() {
    let s = StandIn::start(Kind::Ollama).await;
    // A fault scoped to /api/chat is not consumed by health probes.
    s.push_fault_on("/api/chat", Fault::status(500));
    s.push_fault(Fault::status(502));
    assert_eq!(
        get(&s, "/api/tags").await.0,
        502,
        "unscoped fault: next request"
    );
    assert_eq!(get(&s, "/api/tags").await.0, 200);
    let (path, body) = stream_request(Kind::Ollama, "hi");
    assert_eq!(post(&s, path, body.clone()).await.status(), 500);
    assert_eq!(post(&s, path, body.clone()).await.status(), 200);

    // Persistent faults apply until cleared; queued ones go first.
    s.set_fault(Some(Fault::status(503)));
    s.push_fault(Fault::status(429));
    let statuses = [
        post(&s, path, body.clone()).await.status(),
        post(&s, path, body.clone()).await.status(),
        post(&s, path, body.clone()).await.status(),
    ];
    assert_eq!(statuses, [429, 503, 503]);
    s.set_fault(None);
    assert_eq!(post(&s, path, body).await.status(), 200);
    assert_eq!(s.hits(path), 6);
}

#[tokio::test]
async fn streams_are_incremental_with_chunk_delay() {
    for kind in ALL {
        let delay = Duration::from_millis(60);
        let s = StandIn::start(kind).await.with_chunk_delay(delay);
        let t = Instant::now();
        let r = send_stream(&s, "a b c d e").await;
        let mut body = r.bytes_stream();
        let mut arrivals = Vec::new();
        let mut text = String::new();
        while let Some(b) = body.next().await {
            text.push_str(std::str::from_utf8(&b.unwrap()).unwrap());
            arrivals.push(t.elapsed());
        }
        let n = events(kind, &text).len();
        assert!(n >= 8, "{kind:?}");
        // One write per chunk: the client sees the chunks in separate reads (mostly: a busy
        // machine may coalesce a few) ...
        assert!(
            arrivals.len() >= n / 2,
            "{kind:?}: {} reads for {n} chunks",
            arrivals.len()
        );
        // ... and the reads are spread out by the delay.
        assert!(
            arrivals[arrivals.len() - 1] - arrivals[0] >= delay * (n as u32 - 1) / 2,
            "{kind:?}: {arrivals:?}"
        );
    }
}
