//! The fault suite: each of the sixteen upstream faults of issue 8, one test each, against
//! stand-in providers on 127.0.0.1 with that fault injected.
//!
//! Two OpenAI-format providers: `primary` (model `chat-a`, two keys) and `fallback` (model
//! `chat-b`, one key); requests ask for `models: [primary:chat-a, fallback:chat-b]`. Tests
//! assert on what the stand-ins saw and what the client got; where time matters they assert
//! lower bounds that a sleep guarantees, or upper bounds with generous slack, never a target.

#[path = "gateway_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use aigw::gateway::GatewayOptions;
use serde_json::{Value, json};
use support::standin::{Fault, StandIn};
use support::{client, header, start_pair};

const SECRETS: &[(&str, &str)] = &[
    ("AIGW_SECRET_PRIMARY_KEY1", "sk-fault-primary-key-one-1111"),
    ("AIGW_SECRET_PRIMARY_KEY2", "sk-fault-primary-key-two-2222"),
    ("AIGW_SECRET_FALLBACK_KEY1", "sk-fault-fallback-key-3333"),
];

fn policy(timeouts: &str) -> String {
    format!(
        r#"
on_http_request:
  - type: ai-gateway
    config:
      only_allow_configured_providers: true
{timeouts}
      providers:
        - id: primary
          base_url: "https://primary.internal"
          api_keys:
            - value: ${{secrets.get('primary', 'key1')}}
            - value: ${{secrets.get('primary', 'key2')}}
          models:
            - id: chat-a
        - id: fallback
          base_url: "https://fallback.internal"
          api_keys:
            - value: ${{secrets.get('fallback', 'key1')}}
          models:
            - id: chat-b
"#
    )
}

struct Setup {
    primary: StandIn,
    fallback: StandIn,
    gw: support::Started,
}

fn opts() -> GatewayOptions {
    let mut o = GatewayOptions {
        upstream_loopback_only: true,
        ..GatewayOptions::default()
    };
    o.retry.backoff_base = Duration::from_millis(100);
    o
}

async fn setup_with(timeouts: &str, opts: GatewayOptions) -> Setup {
    let (primary, fallback, gw) = start_pair(
        &policy(timeouts),
        ["primary", "fallback"],
        [&["chat-a"], &["chat-b"]],
        SECRETS,
        opts,
    )
    .await;
    Setup {
        primary,
        fallback,
        gw,
    }
}

async fn setup() -> Setup {
    setup_with("", opts()).await
}

/// Both candidates, primary first.
fn both(stream: bool) -> Value {
    json!({"model": "primary:chat-a", "models": ["primary:chat-a", "fallback:chat-b"],
           "stream": stream, "messages": [{"role": "user", "content": "hello there"}]})
}

/// The fallback alone (one key).
fn only_fallback() -> Value {
    json!({"model": "fallback:chat-b", "messages": [{"role": "user", "content": "hello there"}]})
}

/// The primary alone.
fn only_primary(stream: bool) -> Value {
    json!({"model": "primary:chat-a", "stream": stream,
           "messages": [{"role": "user", "content": "hello there"}]})
}

async fn post(s: &Setup, body: &Value) -> reqwest::Response {
    client()
        .post(s.gw.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("the gateway answers")
}

async fn error_message(r: reqwest::Response) -> String {
    let v: Value = r.json().await.expect("a JSON error");
    v["error"]["message"].as_str().unwrap_or("").to_string()
}

/// Every `data:` payload of an SSE body, checked to be JSON or `[DONE]`.
fn sse_payloads(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| {
            assert!(
                d == "[DONE]" || serde_json::from_str::<Value>(d).is_ok(),
                "garbled event reached the client: {d:?}"
            );
            d.to_string()
        })
        .collect()
}

async fn metrics(s: &Setup) -> String {
    s.gw.metrics().await
}

// 1 -------------------------------------------------------------------------------------------
#[tokio::test]
async fn f01_429_with_retry_after_is_honoured() {
    let s = setup().await;
    // The fallback's only key is limited for a second: wait, then send it again.
    s.fallback.push_fault(Fault::rate_limited(1));
    let r = post(&s, &only_fallback()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "fallback");
    let seen = s.fallback.requests();
    assert_eq!(seen.len(), 2, "sent again after the wait");
    assert!(
        seen[1].at.duration_since(seen[0].at) >= Duration::from_secs(1),
        "waited the Retry-After second"
    );

    // Limits are per key: with a second key there is no wait at all.
    s.primary.push_fault(Fault::rate_limited(1));
    let r = post(&s, &only_primary(false)).await;
    assert_eq!(r.status(), 200);
    let seen = s.primary.requests();
    assert_eq!(
        seen[1].header("authorization"),
        Some("Bearer sk-fault-primary-key-two-2222")
    );

    // A Retry-After longer than --max-retry-wait fails over at once.
    s.primary.clear_requests();
    s.primary.push_fault(Fault::rate_limited(3600));
    s.primary.push_fault(Fault::rate_limited(3600));
    let t0 = Instant::now();
    let r = post(&s, &both(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "fallback");
    assert_eq!(s.primary.requests().len(), 2, "key 1 limited, then key 2");
    assert!(t0.elapsed() < Duration::from_secs(600), "no hour-long wait");
}

// 2 -------------------------------------------------------------------------------------------
#[tokio::test]
async fn f02_persistent_429_backs_off_with_jitter_then_fails_over() {
    let s = setup().await;
    s.primary.set_fault(Some(Fault::status(429)));
    let r = post(&s, &both(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "fallback");
    // Key 1, then key 2 with 2 retries; never a tight loop: each wait is at least half its step.
    let seen = s.primary.requests();
    assert_eq!(seen.len(), 4);
    assert!(seen[2].at.duration_since(seen[1].at) >= Duration::from_millis(50));
    assert!(seen[3].at.duration_since(seen[2].at) >= Duration::from_millis(100));

    // Nowhere left: a clean error that says what happened.
    let r = post(&s, &only_primary(false)).await;
    assert_eq!(r.status(), 503);
    let msg = error_message(r).await;
    assert!(msg.contains("still rate limited after 2 retries"), "{msg}");
    assert!(msg.contains("HTTP 429"), "{msg}");
}

// 3 -------------------------------------------------------------------------------------------
#[tokio::test]
async fn f03_a_500_once_then_healthy() {
    let s = setup().await;
    s.primary.push_fault(Fault::status(500));
    let r = post(&s, &both(false)).await;
    assert_eq!(r.status(), 200);
    // aigw's default: a transient 500 is sent to the same (key, model) once more.
    assert_eq!(header(&r, "x-aigw-provider"), "primary");
    assert_eq!(header(&r, "x-aigw-attempts"), "1");
    let seen = s.primary.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].header("authorization"),
        seen[1].header("authorization")
    );
    let r = post(&s, &both(false)).await;
    assert_eq!(header(&r, "x-aigw-attempts"), "1", "healthy again");
    assert_eq!(s.fallback.requests().len(), 0);
}

/// `--same-pair-retries 0` restores ngrok's "never the same pair twice": the next key instead.
#[tokio::test]
async fn f03_without_same_pair_retries_the_next_key_answers() {
    let mut o = opts();
    o.retry.same_pair_retries = 0;
    let s = setup_with("", o).await;
    s.primary.push_fault(Fault::status(500));
    let r = post(&s, &both(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "primary");
    assert_eq!(header(&r, "x-aigw-attempts"), "2");
    let seen = s.primary.requests();
    assert_ne!(
        seen[0].header("authorization"),
        seen[1].header("authorization")
    );
}

// 4 -------------------------------------------------------------------------------------------
#[tokio::test]
async fn f04_persistent_503_fails_over_then_surfaces_the_original_error() {
    let s = setup().await;
    s.primary.set_fault(Some(Fault::status(503)));
    let r = post(&s, &both(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "fallback");

    s.fallback.set_fault(Some(Fault::status(503)));
    let r = post(&s, &both(false)).await;
    assert_eq!(r.status(), 503);
    // Key #1 (sent twice) opens chat-a's circuit (5 failures since the first request), so
    // key #2 is skipped for the fallback, which is sent twice too.
    assert_eq!(header(&r, "x-aigw-attempts"), "2");
    let msg = error_message(r).await;
    assert!(msg.contains("primary:chat-a (key #1): HTTP 503"), "{msg}");
    assert!(
        msg.contains("The engine is currently overloaded"),
        "the provider's words: {msg}"
    );
}

// 5 -------------------------------------------------------------------------------------------
#[tokio::test]
async fn f05_tcp_reset_before_headers() {
    let s = setup().await;
    s.primary.set_fault(Some(Fault::ResetBeforeHeaders));
    let r = post(&s, &both(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "fallback");
    let r = post(&s, &only_primary(false)).await;
    assert_eq!(r.status(), 503);
    let msg = error_message(r).await;
    assert!(
        msg.contains("connection reset") || msg.contains("closed"),
        "{msg}"
    );
}

// 6 -------------------------------------------------------------------------------------------
#[tokio::test]
async fn f06_a_silent_upstream_times_out_inside_its_budget_and_is_not_retried() {
    let s = setup_with(
        "      per_request_timeout: 1s\n      total_timeout: 6s",
        opts(),
    )
    .await;
    s.primary.set_fault(Some(Fault::Hang));
    let t0 = Instant::now();
    let r = post(&s, &both(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "fallback");
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "inside total_timeout"
    );
    // The silent route's second key was not tried.
    assert_eq!(s.primary.requests().len(), 1);

    let t0 = Instant::now();
    let r = post(&s, &only_primary(false)).await;
    assert_eq!(r.status(), 503);
    assert!(t0.elapsed() < Duration::from_secs(6));
    let msg = error_message(r).await;
    assert!(msg.contains("timed out after 1s"), "{msg}");
}

// 7 -------------------------------------------------------------------------------------------
#[tokio::test]
async fn f07_slow_first_token_fails_over_before_any_byte() {
    let mut o = opts();
    o.first_byte_timeout = Some(Duration::from_millis(500));
    let s = setup_with("", o).await;
    s.primary
        .set_fault(Some(Fault::SlowFirstChunk(Duration::from_secs(30))));
    let r = post(&s, &both(true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "fallback");
    let text = r.text().await.unwrap();
    assert!(!text.contains("[primary]"), "nothing from the slow one");
    assert!(text.contains("[fallback]"));
    assert_eq!(
        sse_payloads(&text).last().map(String::as_str),
        Some("[DONE]")
    );
    assert_eq!(s.primary.requests().len(), 1, "a slow model is not retried");
}

// 8 -------------------------------------------------------------------------------------------
#[tokio::test]
async fn f08_a_stream_cut_mid_answer_is_continued_by_the_next_candidate() {
    let s = setup().await;
    s.primary.push_fault(Fault::StreamCutAfter(3));
    let r = post(&s, &with_usage(both(true))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-aigw-provider"),
        "primary",
        "the stream began there"
    );
    let text = r.text().await.unwrap();
    // role, "[primary]", " you", then the cut: the fallback is sent that as a prefill and
    // answers only the rest.
    assert_continued(&text, "[primary] you said: hello there", 5);
    assert_prefilled(&s.fallback, "[primary] you");
    assert!(
        metrics(&s)
            .await
            .contains("aigw_stream_continuations_total{outcome=\"prefill\"} 1")
    );

    // Nobody left to continue it: the streamed text, then an error event (never a clean end).
    s.primary.push_fault(Fault::StreamCutAfter(3));
    let text = post(&s, &only_primary(true)).await.text().await.unwrap();
    assert_error_end(&text, "[primary] you");
}

/// The text a stream carried, its payloads checked, and that it ended with `[DONE]` and no
/// error; all its chunks carry the first chunk's id; a usage chunk says `completion_tokens`.
fn assert_continued(text: &str, want: &str, completion_tokens: u64) {
    let payloads = sse_payloads(text);
    assert_eq!(
        payloads.last().map(String::as_str),
        Some("[DONE]"),
        "{text}"
    );
    assert_eq!(payloads.iter().filter(|p| *p == "[DONE]").count(), 1);
    assert!(!text.contains("\"error\""), "{text}");
    let chunks: Vec<Value> = payloads
        .iter()
        .filter_map(|p| serde_json::from_str(p).ok())
        .collect();
    let said: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(said, want, "{text}");
    let ids: std::collections::BTreeSet<&str> =
        chunks.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.len(), 1, "one answer, one id: {text}");
    let finishes = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null() && c["choices"][0].is_object())
        .count();
    assert_eq!(finishes, 1, "{text}");
    let usage = chunks
        .iter()
        .find(|c| c["usage"].is_object())
        .expect("a usage chunk");
    assert_eq!(
        usage["usage"]["completion_tokens"], completion_tokens,
        "{text}"
    );
    let u = &usage["usage"];
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + completion_tokens)
    );
}

/// The stream's text is `said`, then one error event: no `[DONE]`, no finish.
fn assert_error_end(text: &str, said: &str) {
    let payloads = sse_payloads(text);
    assert!(!payloads.iter().any(|p| p == "[DONE]"), "{text}");
    assert!(!text.contains("finish_reason\":\"stop"), "{text}");
    let chunks: Vec<Value> = payloads
        .iter()
        .filter_map(|p| serde_json::from_str(p).ok())
        .collect();
    let got: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(got, said, "{text}");
    let last = chunks.last().unwrap();
    assert_eq!(last["error"]["code"], "ERR_NGROK_3800", "{text}");
}

/// The last request `up` got ended with the assistant's `prefix`.
fn assert_prefilled(up: &StandIn, prefix: &str) {
    let seen = up.requests();
    let last = seen.last().expect("the next candidate was asked");
    let messages = last.json.as_ref().unwrap()["messages"].as_array().unwrap();
    assert_eq!(
        messages.last().unwrap(),
        &json!({"role": "assistant", "content": prefix}),
        "{messages:?}"
    );
}

fn with_usage(mut body: Value) -> Value {
    body["stream_options"] = json!({"include_usage": true});
    body
}

// 9 -------------------------------------------------------------------------------------------
#[tokio::test]
async fn f09_a_stalled_stream_is_continued_and_the_gateway_stays_healthy() {
    let mut o = opts();
    o.stream_idle_timeout = Duration::from_millis(500);
    let s = setup_with("", o).await;
    s.primary.push_fault(Fault::StreamStallAfter(2));
    let text = post(&s, &with_usage(both(true)))
        .await
        .text()
        .await
        .unwrap();
    assert_continued(&text, "[primary] you said: hello there", 5);
    assert_prefilled(&s.fallback, "[primary]");

    // Alone, the stall ends the stream with an error event naming the idle limit.
    s.primary.push_fault(Fault::StreamStallAfter(2));
    let text = post(&s, &only_primary(true)).await.text().await.unwrap();
    let payloads = sse_payloads(&text);
    let last: Value = serde_json::from_str(payloads.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sent nothing for"),
        "{text}"
    );
    assert_eq!(s.gw.gw.metrics.open_streams(), 0);
    let r = post(&s, &both(true)).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().trim_end().ends_with("data: [DONE]"));
}

// 10 ------------------------------------------------------------------------------------------
#[tokio::test]
async fn f10_a_malformed_event_is_dropped_and_nothing_garbled_reaches_the_client() {
    let s = setup().await;
    s.primary.push_fault(Fault::MalformedChunkAt(2));
    let r = post(&s, &both(true)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let payloads = sse_payloads(&text);
    assert_eq!(
        payloads.last().map(String::as_str),
        Some("[DONE]"),
        "{text}"
    );
    // The clean run has one event more: exactly the malformed one is missing.
    let clean = sse_payloads(&post(&s, &both(true)).await.text().await.unwrap());
    assert_eq!(payloads.len() + 1, clean.len());
}

// 11 ------------------------------------------------------------------------------------------
#[tokio::test]
async fn f11_a_stream_without_done_is_finalised_promptly() {
    let mut o = opts();
    o.stream_idle_timeout = Duration::from_secs(120);
    let s = setup_with("", o).await;
    s.primary.push_fault(Fault::NoDoneMarker);
    let t0 = Instant::now();
    let text = post(&s, &both(true)).await.text().await.unwrap();
    // Well before the idle timeout: the upstream's close ends the stream.
    assert!(t0.elapsed() < Duration::from_secs(60));
    let payloads = sse_payloads(&text);
    assert_eq!(
        payloads.last().map(String::as_str),
        Some("[DONE]"),
        "{text}"
    );
    assert_eq!(payloads.iter().filter(|p| *p == "[DONE]").count(), 1);
    assert!(!text.contains("\"error\""));
}

/// Python servers write `"finish_reason": "stop"` with a space: completion is read from the
/// parsed event, so that stream is as finished as a compact one.
#[tokio::test]
async fn f11_a_finished_stream_in_pythons_spacing_gets_its_done_not_an_error() {
    let s = setup().await;
    s.primary.push_fault(Fault::NoDoneMarkerSpaced);
    let text = post(&s, &both(true)).await.text().await.unwrap();
    assert!(text.contains("\"finish_reason\": \"stop\""), "{text}");
    let payloads = sse_payloads(&text);
    assert_eq!(
        payloads.last().map(String::as_str),
        Some("[DONE]"),
        "{text}"
    );
    assert!(!text.contains("\"error\""), "{text}");
    assert_eq!(s.fallback.requests().len(), 0);
}

// 12 ------------------------------------------------------------------------------------------
#[tokio::test]
async fn f12_context_length_is_not_retried_on_the_same_model() {
    let s = setup().await;
    s.primary.push_fault(Fault::ContextLengthExceeded);
    let r = post(&s, &both(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "fallback");
    assert_eq!(
        s.primary.requests().len(),
        1,
        "key 2 would fail the same way"
    );

    // No other candidate: the provider's 400 and code reach the client as they are.
    s.primary.push_fault(Fault::ContextLengthExceeded);
    let r = post(&s, &only_primary(false)).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("This model's maximum context length is 128000 tokens")
    );
    assert_eq!(s.primary.requests().len(), 2);
}

// 13 ------------------------------------------------------------------------------------------
#[tokio::test]
async fn f13_content_policy_reaches_the_client_with_the_providers_reason() {
    let s = setup().await;
    s.primary.set_fault(Some(Fault::ContentPolicy));
    let r = post(&s, &only_primary(false)).await;
    assert_eq!(r.status(), 400);
    assert_eq!(header(&r, "x-aigw-provider"), "primary");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "content_policy_violation");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rejected as a result of our safety system")
    );
    assert_eq!(s.primary.requests().len(), 1, "not retried with key 2");

    // A content filter's decision is final: a healthy fallback is not asked (it would hide
    // the moderation decision from the client).
    let r = post(&s, &both(false)).await;
    assert_eq!(r.status(), 400);
    assert_eq!(header(&r, "x-aigw-provider"), "primary");
    let msg = error_message(r).await;
    assert!(msg.contains("safety system"), "{msg}");
    assert_eq!(s.fallback.requests().len(), 0);
    // So is any other invalid request.
    s.primary.set_fault(Some(Fault::Status {
        code: 400,
        body: Some(r#"{"error":{"message":"Unrecognized request argument supplied: foo","type":"invalid_request_error"}}"#.into()),
        retry_after: None,
    }));
    let r = post(&s, &both(false)).await;
    assert_eq!(r.status(), 400);
    assert!(
        error_message(r)
            .await
            .contains("Unrecognized request argument")
    );
    assert_eq!(s.fallback.requests().len(), 0);
    // An unknown model is not: the next model may know it.
    s.primary.set_fault(Some(Fault::Status {
        code: 404,
        body: Some(r#"{"error":{"message":"The model `chat-a` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#.into()),
        retry_after: None,
    }));
    let r = post(&s, &both(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "fallback");
}

// 14 ------------------------------------------------------------------------------------------
#[tokio::test]
async fn f14_a_fallbacks_400_does_not_mask_the_real_failure() {
    let s = setup().await;
    s.primary.set_fault(Some(Fault::status(503)));
    s.fallback.set_fault(Some(Fault::Status {
        code: 400,
        body: Some(
            r#"{"error":{"message":"Unrecognized request argument supplied: seed","type":"invalid_request_error","code":null}}"#
                .into(),
        ),
        retry_after: None,
    }));
    let r = post(&s, &both(false)).await;
    assert_eq!(
        r.status(),
        503,
        "the primary's failure, not the fallback's 400"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "ERR_NGROK_3807");
    let msg = v["error"]["message"].as_str().unwrap();
    let primary = msg.find("primary:chat-a (key #1): HTTP 503").expect(msg);
    let fallback = msg.find("fallback:chat-b (key #1): HTTP 400").expect(msg);
    assert!(primary < fallback, "the real failure first: {msg}");
}

// 15 ------------------------------------------------------------------------------------------
#[tokio::test]
async fn f15_a_flapping_primary_opens_its_circuit_and_a_probe_closes_it() {
    let mut o = opts();
    o.breaker.failures = 2;
    o.breaker.cooldown = Duration::from_secs(1);
    let s = setup_with("", o).await;
    s.primary.set_fault(Some(Fault::status(500)));
    // Two failures (key 1, key 2) open chat-a's circuit; the fallback answers.
    let r = post(&s, &both(false)).await;
    assert_eq!(header(&r, "x-aigw-provider"), "fallback");
    assert_eq!(s.primary.requests().len(), 2);
    assert!(
        metrics(&s)
            .await
            .contains("aigw_circuit_open{model=\"primary:chat-a\"} 1")
    );
    // While it is open, traffic goes straight to the fallback.
    for _ in 0..3 {
        let r = post(&s, &both(false)).await;
        assert_eq!(header(&r, "x-aigw-provider"), "fallback");
        assert_eq!(header(&r, "x-aigw-attempts"), "1");
    }
    assert_eq!(
        s.primary.requests().len(),
        2,
        "no traffic to an open circuit"
    );
    // Only one candidate: an open circuit never refuses it untried (nowhere else to go).
    let r = post(&s, &only_primary(false)).await;
    assert_eq!(r.status(), 503);
    assert!(error_message(r).await.contains("HTTP 500"));
    assert!(
        s.primary.requests().len() > 2,
        "the only candidate is tried"
    );
    // With somewhere else to go, the skip says how to change it.
    let r = post(&s, &both(false)).await;
    assert_eq!(header(&r, "x-aigw-provider"), "fallback");
    s.fallback.set_fault(Some(Fault::status(503)));
    let msg = error_message(post(&s, &both(false)).await).await;
    assert!(
        msg.contains("circuit is open") && msg.contains("--breaker-failures 0"),
        "{msg}"
    );
    s.fallback.set_fault(None);

    // It recovers; after the cooldown one request probes it and closes the circuit.
    s.primary.set_fault(None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = post(&s, &both(false)).await;
    assert_eq!(header(&r, "x-aigw-provider"), "primary");
    let r = post(&s, &both(false)).await;
    assert_eq!(header(&r, "x-aigw-provider"), "primary");
    assert!(
        !metrics(&s)
            .await
            .contains("aigw_circuit_open{model=\"primary:chat-a\"} 1")
    );
}

/// A user restarts their only provider: the first request after it is back is answered, though
/// its circuit is open (the issue's "next try in 22803ms").
#[tokio::test]
async fn f15_the_only_candidate_answers_as_soon_as_it_is_back() {
    let mut o = opts();
    o.breaker.failures = 2;
    o.breaker.cooldown = Duration::from_secs(60);
    let s = setup_with("", o).await;
    s.primary.set_fault(Some(Fault::status(500)));
    for _ in 0..2 {
        assert_eq!(post(&s, &only_primary(false)).await.status(), 503);
    }
    assert!(
        metrics(&s)
            .await
            .contains("aigw_circuit_open{model=\"primary:chat-a\"} 1")
    );
    s.primary.set_fault(None);
    let r = post(&s, &only_primary(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "primary");
    // Its success closed the circuit: the two-candidate plan goes to it again.
    let r = post(&s, &both(false)).await;
    assert_eq!(header(&r, "x-aigw-provider"), "primary");
}

// 16 ------------------------------------------------------------------------------------------
#[tokio::test]
async fn f16_after_failover_the_response_names_the_model_that_answered_with_its_usage() {
    let s = setup().await;
    s.primary.set_fault(Some(Fault::status(500)));
    let r = post(&s, &both(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "fallback");
    assert_eq!(header(&r, "x-aigw-model"), "chat-b");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "chat-b");
    let input = v["usage"]["prompt_tokens"].as_u64().unwrap();
    let output = v["usage"]["completion_tokens"].as_u64().unwrap();

    // A stream with usage is accounted too.
    let mut body = both(true);
    body["stream_options"] = json!({"include_usage": true});
    let text = post(&s, &body).await.text().await.unwrap();
    let usage = sse_payloads(&text)
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .find(|v| v["usage"].is_object())
        .expect("a usage chunk");
    let m = metrics(&s).await;
    let counted = |kind: &str| -> u64 {
        let line =
            format!("aigw_tokens_total{{provider=\"fallback\",model=\"chat-b\",kind=\"{kind}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .unwrap_or_else(|| panic!("no {kind} tokens in\n{m}"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        counted("input"),
        input + usage["usage"]["prompt_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        counted("output"),
        output + usage["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert!(
        !m.contains("aigw_tokens_total{provider=\"primary\""),
        "nothing counted for the model that failed"
    );
}

// 17 ------------------------------------------------------------------------------------------
#[tokio::test]
async fn f17_a_stream_closed_before_it_finished_is_continued() {
    let s = setup().await;
    s.primary.push_fault(Fault::StreamEndAfter(4));
    let text = post(&s, &with_usage(both(true)))
        .await
        .text()
        .await
        .unwrap();
    assert_continued(&text, "[primary] you said: hello there", 5);
    assert_prefilled(&s.fallback, "[primary] you said:");

    s.primary.push_fault(Fault::StreamEndAfter(4));
    let text = post(&s, &only_primary(true)).await.text().await.unwrap();
    assert_error_end(&text, "[primary] you said:");
    assert!(
        text.contains("closed the stream before it finished"),
        "{text}"
    );
}

/// `primary` (a custom OpenAI-compatible provider: takes a prefill), the built-in `openai`
/// (api.openai.com answers anew after an assistant message: no prefill) and `fallback`.
const THREE: &str = r#"
on_http_request:
  - type: ai-gateway
    config:
      only_allow_configured_providers: true
      providers:
        - id: primary
          base_url: "https://primary.internal"
          models:
            - id: chat-a
        - id: openai
          models:
            - id: gpt-4o-mini
        - id: fallback
          base_url: "https://fallback.internal"
          models:
            - id: chat-b
"#;

/// The three stand-ins of [`THREE`] (`openai` without prefill), labelled as given.
async fn three(labels: [&str; 3]) -> (StandIn, StandIn, StandIn, support::Started) {
    let primary = support::openai_standin(labels[0], &["chat-a"]).await;
    let openai = support::openai_standin(labels[1], &["gpt-4o-mini"])
        .await
        .without_prefill();
    let fallback = support::openai_standin(labels[2], &["chat-b"]).await;
    let gw = support::start_policy(
        THREE,
        &[
            ("primary", primary.url()),
            ("openai", openai.url()),
            ("fallback", fallback.url()),
        ],
        &[],
        opts(),
    )
    .await;
    (primary, openai, fallback, gw)
}

fn models(list: &[&str]) -> Value {
    with_usage(json!({"model": list[0], "models": list, "stream": true,
           "messages": [{"role": "user", "content": "hello there"}]}))
}

// 18 ------------------------------------------------------------------------------------------
#[tokio::test]
async fn f18_a_candidate_without_prefill_restarts_and_the_repeated_text_is_dropped() {
    // Deterministic twins: the same answer, word for word.
    let (primary, openai, _fallback, gw) = three(["twin", "twin", "other"]).await;
    primary.push_fault(Fault::StreamCutAfter(4));
    let body = models(&["primary:chat-a", "openai:gpt-4o-mini"]);
    let r = support::client()
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    // "[twin] you said:" came from primary; openai's answer repeats it and only the rest is
    // relayed; its usage (6 words, all generated) plus primary's 3.
    assert_continued(&text, "[twin] you said: hello there", 8);
    let seen = openai.requests();
    let messages = seen[0].json.as_ref().unwrap()["messages"]
        .as_array()
        .unwrap();
    assert_eq!(
        messages.len(),
        1,
        "the original request, no prefill: {messages:?}"
    );
    assert!(
        gw.metrics()
            .await
            .contains("aigw_stream_continuations_total{outcome=\"restart\"} 1")
    );
}

// 19 ------------------------------------------------------------------------------------------
#[tokio::test]
async fn f19_a_candidate_whose_answer_differs_cannot_continue() {
    let (primary, openai, fallback, gw) = three(["primary", "openai", "fallback"]).await;
    let post = |body: Value| {
        let url = gw.url("/v1/chat/completions");
        async move {
            support::client()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    // openai restarts with "[openai] you said: …": it differs, and nobody else is left.
    primary.push_fault(Fault::StreamCutAfter(3));
    let text = post(models(&["primary:chat-a", "openai:gpt-4o-mini"])).await;
    assert_error_end(&text, "[primary] you");
    assert!(
        text.contains("differs from the text already sent"),
        "{text}"
    );
    assert_eq!(openai.requests().len(), 1);

    // With a third candidate, it continues the answer.
    primary.push_fault(Fault::StreamCutAfter(3));
    let text = post(models(&[
        "primary:chat-a",
        "openai:gpt-4o-mini",
        "fallback:chat-b",
    ]))
    .await;
    // primary's 2 words, the 1 openai sent before it diverged, fallback's 3.
    assert_continued(&text, "[primary] you said: hello there", 2 + 1 + 3);
    assert_prefilled(&fallback, "[primary] you");
    let m = gw.metrics().await;
    assert!(
        m.contains("aigw_stream_continuations_total{outcome=\"diverged\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("aigw_stream_continuations_total{outcome=\"exhausted\"} 1"),
        "{m}"
    );
}

// 20 ------------------------------------------------------------------------------------------
#[tokio::test]
async fn f20_a_providers_error_event_midway_is_continued_not_relayed() {
    let s = setup().await;
    s.primary.push_fault(Fault::StreamErrorAfter(3));
    let text = post(&s, &with_usage(both(true)))
        .await
        .text()
        .await
        .unwrap();
    assert_continued(&text, "[primary] you said: hello there", 5);
    assert!(!text.contains("server_error"), "{text}");
    assert_prefilled(&s.fallback, "[primary] you");

    // Nobody left to continue it: the provider's own event reaches the client as it sent it.
    s.primary.push_fault(Fault::StreamErrorAfter(3));
    let text = post(&s, &only_primary(true)).await.text().await.unwrap();
    assert!(text.contains("\"type\":\"server_error\""), "{text}");
}

/// The README's fault table and this suite name the same faults: every `(fNN)` in the table is
/// a test here, and every test here has its row.
#[test]
fn the_readme_fault_table_names_these_tests() {
    let readme = include_str!("../README.md");
    let me = include_str!("serve_faults.rs");
    let table_start = readme
        .find("**Fault table**")
        .expect("README has the fault table");
    let table: String = readme[table_start..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect::<Vec<_>>()
        .join("\n");
    let ids = |text: &str, open: &str| -> std::collections::BTreeSet<String> {
        text.match_indices(open)
            .filter_map(|(i, _)| {
                let n = &text[i + open.len()..];
                let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
                (digits.len() == 2).then(|| format!("f{digits}"))
            })
            .collect()
    };
    let in_table = ids(&table, "(f");
    let tests = ids(me, "async fn f");
    assert!(!tests.is_empty());
    assert_eq!(
        in_table, tests,
        "README fault table vs tests/serve_faults.rs"
    );
}

/// The access line of a stream is written when the stream ends and says how it ended, with the
/// request id the client was given.
#[tokio::test]
async fn the_access_line_records_how_each_stream_ended() {
    use std::sync::{Arc, Mutex};
    let _tracing = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .finish(),
    );
    let lines = Arc::new(Mutex::new(String::new()));
    let sink = lines.clone();
    let mut o = opts();
    o.access_log = Some(aigw::gateway::observe::access_log::AccessLog::new(
        Arc::new(move |b: &[u8]| sink.lock().unwrap().push_str(&String::from_utf8_lossy(b))),
        false,
    ));
    let s = setup_with("", o).await;
    for (fault, body, end) in [
        (None, only_primary(true), "finished"),
        (
            Some(Fault::NoDoneMarker),
            only_primary(true),
            "terminator_added",
        ),
        (Some(Fault::StreamCutAfter(3)), only_primary(true), "cut"),
        (Some(Fault::StreamCutAfter(3)), both(true), "continued"),
    ] {
        if let Some(f) = fault {
            s.primary.push_fault(f);
        }
        let r = post(&s, &body).await;
        let id = header(&r, "x-request-id").to_string();
        let _ = r.text().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let line = loop {
            let found = lines
                .lock()
                .unwrap()
                .lines()
                .find(|l| l.ends_with(&format!("request_id={id}")))
                .map(str::to_string);
            match found {
                Some(l) => break l,
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                None => panic!("no access line for {id}: {}", lines.lock().unwrap()),
            }
        };
        assert!(line.contains(&format!("stream=true end={end} ")), "{line}");
    }
}
