//! The failover executor against fixed plans and scripted upstreams (no engine involved):
//! failover on 500 / 401 / connection refused / timeout, total timeout, exhaustion, key
//! rotation, passthrough auth, inbound token, streaming and mid-stream failure.

#[path = "gateway_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use aigw::gateway::GatewayOptions;
use aigw::policy::Sp;
use serde_json::{Value, json};
use support::mini::{self, Mode};
use support::{FixedProvider, FixedRouting, client, start};

fn provider(id: &str, base: &str, keys: &[&str]) -> FixedProvider {
    FixedProvider {
        id: id.into(),
        base_url: base.into(),
        ollama: false,
        keys: keys.iter().map(|k| k.to_string()).collect(),
    }
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "models": ["b:m2"], "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// A port nothing listens on.
async fn closed_port() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

#[tokio::test]
async fn fails_over_on_500_and_rewrites_the_body() {
    let (a_url, a) = mini::start("a", Mode::Status(500)).await;
    let (b_url, b) = mini::start("b", Mode::Ok).await;
    let routing = FixedRouting::new(
        vec![provider("a", &a_url, &[]), provider("b", &b_url, &[])],
        &[("a", "m1"), ("b", "m2")],
    );
    let gw = start(Arc::new(routing), GatewayOptions::default()).await;
    let resp = gw.post("/v1/chat/completions", &chat("a:m1", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-aigw-provider"], "b");
    assert_eq!(resp.headers()["x-aigw-model"], "m2");
    assert_eq!(resp.headers()["x-aigw-attempts"], "2");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "[b] you said: hi");
    let seen_a = a.seen();
    // A transient 500 is sent to the same pair once more before failing over.
    assert_eq!(seen_a.len(), 2);
    assert_eq!(seen_a[0].path, "/v1/chat/completions");
    assert_eq!(seen_a[0].body["model"], "m1");
    assert!(
        seen_a[0].body.get("models").is_none(),
        "`models` must not go upstream"
    );
    assert_eq!(b.seen()[0].body["model"], "m2");
    let metrics = gw.metrics().await;
    assert!(metrics.contains("aigw_failovers_total 1"), "{metrics}");
    assert!(
        metrics.contains("aigw_attempts_total{provider=\"a\",outcome=\"http_error\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn fails_over_on_connection_refused_and_timeout() {
    let dead = closed_port().await;
    let (slow_url, _slow) = mini::start("slow", Mode::Sleep(Duration::from_secs(30))).await;
    let (ok_url, _ok) = mini::start("ok", Mode::Ok).await;
    let mut routing = FixedRouting::new(
        vec![
            provider("dead", &dead, &[]),
            provider("slow", &slow_url, &[]),
            provider("ok", &ok_url, &[]),
        ],
        &[("dead", "m"), ("slow", "m"), ("ok", "m")],
    );
    routing.gateway.per_request_timeout = Some(Sp::new(Duration::from_millis(500), 0..0));
    let gw = start(Arc::new(routing), GatewayOptions::default()).await;
    let resp = gw.post("/v1/chat/completions", &chat("m", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-aigw-provider"], "ok");
    assert_eq!(resp.headers()["x-aigw-attempts"], "3");
}

#[tokio::test]
async fn total_timeout_is_504() {
    let (slow_url, _slow) = mini::start("slow", Mode::Sleep(Duration::from_secs(30))).await;
    let (ok_url, ok) = mini::start("ok", Mode::Ok).await;
    let mut routing = FixedRouting::new(
        vec![
            provider("slow", &slow_url, &[]),
            provider("ok", &ok_url, &[]),
        ],
        &[("slow", "m"), ("ok", "m")],
    );
    routing.gateway.per_request_timeout = Some(Sp::new(Duration::from_secs(20), 0..0));
    routing.gateway.total_timeout = Some(Sp::new(Duration::from_millis(600), 0..0));
    let gw = start(Arc::new(routing), GatewayOptions::default()).await;
    let resp = gw.post("/v1/chat/completions", &chat("m", false)).await;
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ERR_NGROK_3810");
    assert!(ok.seen().is_empty(), "failover stops at total_timeout");
}

#[tokio::test]
async fn exhausted_candidates_are_503_with_every_reason() {
    let (a_url, _a) = mini::start("a", Mode::Status(500)).await;
    let (b_url, _b) = mini::start("b", Mode::Status(429)).await;
    let routing = FixedRouting::new(
        vec![provider("a", &a_url, &[]), provider("b", &b_url, &[])],
        &[("a", "m1"), ("b", "m2")],
    );
    let gw = start(Arc::new(routing), GatewayOptions::default()).await;
    let resp = gw.post("/v1/chat/completions", &chat("m1", false)).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-aigw-attempts"], "2");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ERR_NGROK_3807");
    assert_eq!(body["error"]["type"], "gateway_error");
    let msg = body["error"]["message"].as_str().unwrap();
    // The upstream's own message (the stand-in's OpenAI 500) is quoted.
    assert!(
        msg.contains("a:m1: HTTP 500 (The server had an error while processing your request."),
        "{msg}"
    );
    assert!(msg.contains("b:m2: HTTP 429"), "{msg}");
}

#[tokio::test]
async fn attempt_cap_is_enforced() {
    let (a_url, a) = mini::start("a", Mode::Status(500)).await;
    let routing = FixedRouting::new(
        vec![provider("a", &a_url, &[])],
        &[("a", "m1"), ("a", "m2"), ("a", "m3")],
    );
    let gw = start(
        Arc::new(routing),
        GatewayOptions {
            max_attempts: 2,
            ..GatewayOptions::default()
        },
    )
    .await;
    let resp = gw.post("/v1/chat/completions", &chat("m1", false)).await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ERR_NGROK_3812");
    // Two attempts, each sent twice (a transient 500 gets one more try on the same pair).
    assert_eq!(a.seen().len(), 4);
}

#[tokio::test]
async fn rotates_keys_and_never_leaks_them() {
    let (a_url, a) = mini::start("a", Mode::RejectKey("sk-first-key-0001".into())).await;
    let routing = FixedRouting::new(
        vec![provider(
            "a",
            &a_url,
            &["sk-first-key-0001", "sk-second-key-0002"],
        )],
        &[("a", "m")],
    );
    let gw = start(Arc::new(routing), GatewayOptions::default()).await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("client-key")
        .json(&chat("m", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-aigw-attempts"], "2");
    let seen = a.seen();
    assert_eq!(seen[0].headers["authorization"], "Bearer sk-first-key-0001");
    assert_eq!(
        seen[1].headers["authorization"],
        "Bearer sk-second-key-0002"
    );

    // Both keys rejected: the error names the keys only redacted.
    a.set(Mode::Status(401));
    let body: Value = gw
        .post("/v1/chat/completions", &chat("m", false))
        .await
        .json()
        .await
        .unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("(key #1)") && msg.contains("(key #2)"),
        "{msg}"
    );
    assert!(!msg.contains("sk-first-key-0001"), "{msg}");
}

#[tokio::test]
async fn passes_the_client_key_through_without_configured_keys() {
    let (a_url, a) = mini::start("a", Mode::Ok).await;
    let routing = FixedRouting::new(vec![provider("a", &a_url, &[])], &[("a", "m")]);
    let gw = start(Arc::new(routing), GatewayOptions::default()).await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-client")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .header("x-custom", "kept")
        .json(&chat("m", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = &a.seen()[0];
    assert_eq!(seen.headers["authorization"], "Bearer sk-client");
    assert_eq!(seen.headers["x-custom"], "kept");
    assert!(seen.headers.get("x-hop").is_none());
}

#[tokio::test]
async fn inbound_token_is_required_and_never_forwarded() {
    let (a_url, a) = mini::start("a", Mode::Ok).await;
    let routing = FixedRouting::new(vec![provider("a", &a_url, &[])], &[("a", "m")]);
    let opts = GatewayOptions {
        auth_token: Some("gw-token-123".into()),
        ..GatewayOptions::default()
    };
    let gw = start(Arc::new(routing), opts).await;
    let resp = gw.post("/v1/chat/completions", &chat("m", false)).await;
    assert_eq!(resp.status(), 401);
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("wrong")
        .json(&chat("m", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(gw.get("/healthz").await.status().is_success());
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("gw-token-123")
        .json(&chat("m", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        a.seen()[0].headers.get("authorization").is_none(),
        "the gateway token must not go upstream"
    );
    // x-aigw-token leaves Authorization for the client's own provider key.
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-aigw-token", "gw-token-123")
        .bearer_auth("sk-client")
        .json(&chat("m", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = &a.seen()[1];
    assert_eq!(seen.headers["authorization"], "Bearer sk-client");
    assert!(seen.headers.get("x-aigw-token").is_none());
}

#[tokio::test]
async fn streams_chunk_by_chunk() {
    let (a_url, _a) = mini::start("a", Mode::Stream { n: 5, die: false }).await;
    let routing = FixedRouting::new(vec![provider("a", &a_url, &[])], &[("a", "m")]);
    let gw = start(Arc::new(routing), GatewayOptions::default()).await;
    let resp = gw.post("/v1/chat/completions", &chat("m", true)).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = resp.text().await.unwrap();
    // The stand-in's chunks for "[a] you said: hi": role, one per word, finish.
    assert_eq!(text.matches("data: {").count(), 6, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("\"error\""));
}

/// With `--no-stream-continuation`, a stream that dies midway ends with an error event even
/// when another candidate could continue it (`tests/serve_faults.rs` f08 has it continued).
#[tokio::test]
async fn a_stream_that_dies_ends_with_an_error_event_without_continuation() {
    let (a_url, _a) = mini::start("a", Mode::Stream { n: 3, die: true }).await;
    let (b_url, b) = mini::start("b", Mode::Ok).await;
    let routing = FixedRouting::new(
        vec![provider("a", &a_url, &[]), provider("b", &b_url, &[])],
        &[("a", "m"), ("b", "m")],
    );
    let opts = GatewayOptions {
        stream_continuation: false,
        ..GatewayOptions::default()
    };
    let gw = start(Arc::new(routing), opts).await;
    let resp = gw.post("/v1/chat/completions", &chat("m", true)).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap_or_default();
    // The first 3 chunks (role, "[a]", " you") arrived.
    assert!(text.contains(r#""content":"[a]""#), "{text}");
    let last = text.trim_end().lines().last().unwrap();
    assert!(last.starts_with("data: {\"error\""), "{text}");
    assert!(!text.contains("[DONE]"));
    assert!(b.seen().is_empty(), "no continuation when it is turned off");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(gw.gw.metrics.open_streams(), 0);
}

#[tokio::test]
async fn bad_bodies_are_3801() {
    let routing = FixedRouting::new(vec![], &[]);
    let gw = start(Arc::new(routing), GatewayOptions::default()).await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ERR_NGROK_3801");
    let resp = gw.post("/v1/chat/completions", &json!({"model": 3})).await;
    assert_eq!(resp.status(), 400);
    // Over --max-body-bytes: 413 in the OpenAI error shape.
    let routing = FixedRouting::new(vec![], &[]);
    let small = start(
        Arc::new(routing),
        GatewayOptions {
            max_body_bytes: 1000,
            ..GatewayOptions::default()
        },
    )
    .await;
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let resp = small.post("/v1/chat/completions", &big).await;
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ERR_NGROK_3801");
}
