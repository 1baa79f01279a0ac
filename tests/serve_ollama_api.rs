//! The Ollama native API through the gateway (fixed plans, stand-in Ollama servers):
//! `/api/chat` streaming and not, failover between two Ollama instances, `/api/tags` merging,
//! `/api/embed`, `/api/version`, and a mid-stream failure continued on the other box, or an
//! NDJSON error line when neither can finish it.

#[path = "gateway_support/mod.rs"]
mod support;

use std::sync::Arc;

use aigw::gateway::GatewayOptions;
use serde_json::{Value, json};
use support::standin::{Fault, Kind, StandIn};
use support::{FixedProvider, FixedRouting, start};

fn ollama(id: &str, url: String) -> FixedProvider {
    FixedProvider {
        id: id.into(),
        base_url: url,
        ollama: true,
        keys: Vec::new(),
    }
}

async fn two_ollamas() -> (StandIn, StandIn, support::Started) {
    let a = StandIn::start(Kind::Ollama)
        .await
        .with_label("gpu-a")
        .with_models(&["llama3.2", "qwen3:8b"]);
    let b = StandIn::start(Kind::Ollama)
        .await
        .with_label("gpu-b")
        .with_models(&["llama3.2", "mistral"]);
    let routing = FixedRouting::new(
        vec![
            ollama("gpu-a", a.url()),
            ollama("gpu-b", format!("{}/v1", b.url())),
        ],
        &[("gpu-a", "llama3.2"), ("gpu-b", "llama3.2")],
    );
    let gw = start(Arc::new(routing), GatewayOptions::default()).await;
    (a, b, gw)
}

#[tokio::test]
async fn api_chat_streams_ndjson_and_fails_over() {
    let (a, b, gw) = two_ollamas().await;
    // Streaming is Ollama's default.
    let resp = gw.post("/api/chat", &json!({"model": "llama3.2", "messages": [{"role": "user", "content": "one two three"}]})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-aigw-provider"], "gpu-a");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/x-ndjson")
    );
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() > 2, "{text}");
    assert_eq!(lines.last().unwrap()["done"], true);
    assert_eq!(a.hits("/api/chat"), 1);

    // gpu-a fails (twice: a transient 500 is sent to it once more): gpu-b (base URL with /v1)
    // answers on its native API.
    a.push_fault_on("/api/chat", Fault::status(500));
    a.push_fault_on("/api/chat", Fault::status(500));
    let resp = gw.post("/api/chat", &json!({"model": "llama3.2", "stream": false, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-aigw-provider"], "gpu-b");
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["message"]["content"]
            .as_str()
            .unwrap()
            .contains("[gpu-b]"),
        "{v}"
    );
    assert_eq!(b.hits("/api/chat"), 1);
}

#[tokio::test]
async fn api_chat_mid_stream_failure_is_continued_or_an_error_line() {
    let (a, b, gw) = two_ollamas().await;
    // gpu-a is cut after "[gpu-a]", " you": gpu-b gets that as an assistant prefill and sends
    // only the rest; the client's lines make one answer, and the final counts are the sum.
    a.push_fault_on("/api/chat", Fault::StreamCutAfter(2));
    let resp = gw.post("/api/chat", &json!({"model": "llama3.2", "messages": [{"role": "user", "content": "one two three four five"}]})).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap_or_default();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let said: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert_eq!(said, "[gpu-a] you said: one two three four five", "{text}");
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true, "{text}");
    assert_eq!(last["eval_count"], 8, "{text}");
    assert!(!text.contains("\"error\""), "{text}");
    let seen = b.requests();
    let messages = seen.last().unwrap().json.as_ref().unwrap()["messages"].clone();
    assert_eq!(
        messages.as_array().unwrap().last().unwrap(),
        &json!({"role": "assistant", "content": "[gpu-a] you"})
    );

    // gpu-b fails too: nobody is left, and the stream ends with an error line.
    a.push_fault_on("/api/chat", Fault::StreamCutAfter(2));
    b.push_fault_on("/api/chat", Fault::StreamCutAfter(1));
    let resp = gw.post("/api/chat", &json!({"model": "llama3.2", "messages": [{"role": "user", "content": "one two three four five"}]})).await;
    let text = resp.text().await.unwrap_or_default();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(
        last["error"].as_str().unwrap().contains("ERR_NGROK_3800"),
        "{text}"
    );
    assert!(!text.contains("\"done\":true"), "{text}");
}

#[tokio::test]
async fn api_tags_merges_and_embed_routes() {
    let (_a, _b, gw) = two_ollamas().await;
    let v: Value = gw.get("/api/tags").await.json().await.unwrap();
    let mut names: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["llama3.2:latest", "mistral:latest", "qwen3:8b"]);
    let v: Value = gw.get("/api/version").await.json().await.unwrap();
    assert!(v["version"].as_str().is_some());
    let resp = gw
        .post(
            "/api/embed",
            &json!({"model": "llama3.2", "input": ["a", "b"]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
}
