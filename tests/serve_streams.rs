//! Streaming beyond chat: Anthropic `/v1/messages`, OpenAI `/v1/responses`, client disconnects
//! (the upstream is dropped) and graceful drain on shutdown (streams in flight finish; those
//! still open after `--drain-timeout` end with an error event).

#[path = "gateway_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use aigw::gateway::GatewayOptions;
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::standin::{Kind, StandIn};
use support::{client, start_policy};

fn policy(id: &str, model: &str) -> String {
    format!(
        "on_http_request:\n  - type: ai-gateway\n    config:\n      only_allow_configured_providers: true\n      providers:\n        - id: {id}\n          base_url: \"https://{id}.internal\"\n          models:\n            - id: {model}\n"
    )
}

/// A client with no total deadline, for reading streams piece by piece.
fn stream_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn anthropic_messages_with_the_clients_key() {
    let up = StandIn::start(Kind::Anthropic)
        .await
        .with_key("sk-ant-client-key");
    let yaml = "on_http_request:\n  - type: ai-gateway\n    config:\n      only_allow_configured_providers: true\n      providers:\n        - id: anthropic\n";
    let gw = start_policy(
        yaml,
        &[("anthropic", up.url())],
        &[],
        GatewayOptions::default(),
    )
    .await;
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi claude"}]});
    let r = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "sk-ant-client-key")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aigw-provider"], "anthropic");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    let seen = &up.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));

    // Streaming ends with message_stop, no error event.
    let mut body = body;
    body["stream"] = json!(true);
    let text = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "sk-ant-client-key")
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(!text.contains("event: error"), "{text}");

    // The client's own key refused is final: the provider's 401, in Anthropic's error shape.
    let r = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "wrong")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-api-key"),
        "{v}"
    );
}

#[tokio::test]
async fn responses_api_streams_to_completion() {
    let up = StandIn::start(Kind::OpenAi)
        .await
        .with_models(&["test-resp"]);
    let gw = start_policy(
        &policy("oa", "test-resp"),
        &[("oa", up.url())],
        &[],
        GatewayOptions::default(),
    )
    .await;
    let r = gw
        .post(
            "/v1/responses",
            &json!({"model": "test-resp", "input": "hello responses", "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("response.completed"), "{text}");
    assert!(!text.contains("ERR_NGROK"), "{text}");
    assert_eq!(up.requests()[0].path, "/v1/responses");
}

#[tokio::test]
async fn client_disconnect_drops_the_upstream_stream() {
    let up = StandIn::start(Kind::OpenAi)
        .await
        .with_models(&["slow"])
        .with_chunk_delay(Duration::from_millis(300));
    let gw = start_policy(
        &policy("oa", "slow"),
        &[("oa", up.url())],
        &[],
        GatewayOptions::default(),
    )
    .await;
    let words = "w ".repeat(200);
    let r = stream_client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "slow", "stream": true, "messages": [{"role": "user", "content": words}]}))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    body.next().await.unwrap().unwrap();
    assert_eq!(gw.gw.metrics.open_streams(), 1);
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.gw.metrics.open_streams() != 0 {
        assert!(
            Instant::now() < deadline,
            "the relay was not dropped after the client went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_stream_in_flight_at_shutdown_finishes_and_new_connections_are_refused() {
    let up = StandIn::start(Kind::OpenAi)
        .await
        .with_models(&["slow"])
        .with_chunk_delay(Duration::from_millis(100));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let opts = GatewayOptions {
        drain_timeout: Duration::from_secs(60),
        ..GatewayOptions::default()
    };
    let (gw, task) =
        support::start_policy_until(&policy("oa", "slow"), &[("oa", up.url())], opts, rx).await;
    let r = stream_client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "slow", "stream": true, "messages": [{"role": "user", "content": "a b c d e f g h"}]}))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let mut text = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    tx.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gw.gw.draining.is_cancelled() {
        assert!(
            Instant::now() < deadline,
            "the signal did not start the drain"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Draining: the listener is closed (new connections are refused) once the accept loop
    // has seen the signal.
    let mut refused = false;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(gw.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "new connections are still accepted while draining");
    while let Some(Ok(chunk)) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(
        text.trim_end().lines().last(),
        Some("data: [DONE]"),
        "{text}"
    );
    assert!(!text.contains("\"error\""), "{text}");
    let served = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("serve did not return after its last stream finished");
    assert!(served.unwrap().is_ok());
}

#[tokio::test]
async fn streams_still_open_after_the_drain_timeout_end_with_an_error_event() {
    let up = StandIn::start(Kind::OpenAi)
        .await
        .with_models(&["slow"])
        .with_chunk_delay(Duration::from_millis(300));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let opts = GatewayOptions {
        drain_timeout: Duration::from_secs(1),
        ..GatewayOptions::default()
    };
    let (gw, task) =
        support::start_policy_until(&policy("oa", "slow"), &[("oa", up.url())], opts, rx).await;
    let words = "w ".repeat(200);
    let r = stream_client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "slow", "stream": true, "messages": [{"role": "user", "content": words}]}))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let mut text = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    let t0 = Instant::now();
    tx.send(()).unwrap();
    while let Some(Ok(chunk)) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let last = text.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with("data: {\"error\"") && last.contains("shutting down"),
        "{text}"
    );
    let served = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("serve did not return");
    assert!(served.unwrap().is_ok());
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

/// Two providers with the same model, for the timeout tests.
fn pair_policy() -> String {
    "on_http_request:\n  - type: ai-gateway\n    config:\n      only_allow_configured_providers: true\n      providers:\n        - id: first\n          base_url: \"https://first.internal\"\n          models:\n            - id: m\n        - id: second\n          base_url: \"https://second.internal\"\n          models:\n            - id: m\n".to_string()
}

#[tokio::test]
async fn first_byte_timeout_fails_over_before_anything_is_sent() {
    let opts = GatewayOptions {
        first_byte_timeout: Some(Duration::from_millis(500)),
        ..GatewayOptions::default()
    };
    let (first, _second, gw) = support::start_pair(
        &pair_policy(),
        ["first", "second"],
        [&["m"], &["m"]],
        &[],
        opts,
    )
    .await;
    first.push_fault(support::standin::Fault::SlowFirstChunk(
        Duration::from_secs(30),
    ));
    let r = stream_client()
        .post(gw.url("/v1/chat/completions"))
        .json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aigw-provider"], "second");
    let text = r.text().await.unwrap();
    assert!(
        text.contains("[second]") || text.contains("second"),
        "{text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[tokio::test]
async fn a_stalled_stream_ends_after_the_idle_timeout() {
    // Without continuation (which `tests/serve_faults.rs` f09 covers), the stall is the end.
    let opts = GatewayOptions {
        stream_idle_timeout: Duration::from_millis(500),
        stream_continuation: false,
        ..GatewayOptions::default()
    };
    let (first, second, gw) = support::start_pair(
        &pair_policy(),
        ["first", "second"],
        [&["m"], &["m"]],
        &[],
        opts,
    )
    .await;
    first.push_fault(support::standin::Fault::StreamStallAfter(2));
    let r = stream_client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "one two three"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(30), r.text())
        .await
        .expect("the stall was not cut")
        .unwrap();
    let last = text.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with("data: {\"error\"") && last.contains("sent nothing for 500ms"),
        "{text}"
    );
    assert_eq!(second.requests().len(), 0);
}
