//! `aigw serve` end to end in-process: the real engine on a policy, stand-in providers on
//! 127.0.0.1, and an HTTP client. Failover, timeouts, keys, mapping, reload, models, auth.

#[path = "gateway_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use aigw::gateway::GatewayOptions;
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::standin::{Fault, Kind, StandIn};
use support::{client, header, openai_standin, start_pair, start_policy};

/// Two OpenAI-format providers offering the same model: `primary` (two keys) then `backup`
/// (client key passthrough). Both are ngrok `.internal` endpoints mapped with `--base-url`.
fn two_providers(extra: &str) -> String {
    format!(
        r#"
on_http_request:
  - type: ai-gateway
    config:
      only_allow_configured_providers: true
{extra}
      providers:
        - id: primary
          base_url: "https://primary.internal"
          api_keys:
            - value: ${{secrets.get('primary', 'key1')}}
            - value: ${{secrets.get('primary', 'key2')}}
          models:
            - id: test-chat
              unsupported_params: [logit_bias]
        - id: backup
          base_url: "https://backup.internal"
          models:
            - id: test-chat
"#
    )
}

const SECRETS: &[(&str, &str)] = &[
    ("AIGW_SECRET_PRIMARY_KEY1", "sk-primary-key-one-1111"),
    ("AIGW_SECRET_PRIMARY_KEY2", "sk-primary-key-two-2222"),
];

struct Setup {
    primary: StandIn,
    backup: StandIn,
    gw: support::Started,
}

async fn setup_with(extra: &str, opts: GatewayOptions) -> Setup {
    let (primary, backup, gw) = start_pair(
        &two_providers(extra),
        ["primary", "backup"],
        [&["test-chat"], &["test-chat"]],
        SECRETS,
        opts,
    )
    .await;
    Setup {
        primary,
        backup,
        gw,
    }
}

async fn setup() -> Setup {
    setup_with("", GatewayOptions::default()).await
}

fn chat(stream: bool) -> Value {
    json!({"model": "test-chat", "stream": stream, "messages": [{"role": "user", "content": "hello there gateway"}]})
}

async fn post(s: &Setup, body: &Value) -> reqwest::Response {
    client()
        .post(s.gw.url("/v1/chat/completions"))
        .bearer_auth("sk-client-own")
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn plain_chat_through_a_mapped_internal_endpoint() {
    let s = setup().await;
    let r = post(&s, &chat(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "primary");
    assert_eq!(header(&r, "x-aigw-model"), "test-chat");
    assert_eq!(header(&r, "x-aigw-attempts"), "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "[primary] you said: hello there gateway"
    );
    let seen = &s.primary.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-primary-key-one-1111")
    );
    assert_eq!(seen.model(), Some("test-chat"));
}

#[tokio::test]
async fn streaming_chat_arrives_chunk_by_chunk() {
    let primary = openai_standin("primary", &["test-chat"])
        .await
        .with_chunk_delay(Duration::from_millis(150));
    let backup = openai_standin("backup", &["test-chat"]).await;
    let gw = start_policy(
        &two_providers(""),
        &[("primary", primary.url()), ("backup", backup.url())],
        SECRETS,
        GatewayOptions::default(),
    )
    .await;
    let r = gw.post("/v1/chat/completions", &json!({"model": "test-chat", "stream": true, "messages": [{"role": "user", "content": "one two three four"}]})).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/event-stream"));
    // The first chunk arrives long before the stream ends: nothing is buffered.
    let started = std::time::Instant::now();
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    let mut all = first.to_vec();
    while let Some(c) = body.next().await {
        all.extend_from_slice(&c.unwrap());
    }
    let total = started.elapsed();
    let text = String::from_utf8(all).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
    assert!(total >= Duration::from_millis(600), "{total:?}");
    assert!(
        first_at + Duration::from_millis(300) < total,
        "first chunk at {first_at:?}, end at {total:?}"
    );
    assert_eq!(gw.gw.metrics.open_streams(), 0);
}

#[tokio::test]
async fn fails_over_key_by_key_then_model_by_model() {
    // ngrok's semantics: a 429 moves on at once (aigw waits and retries it by default).
    let mut opts = GatewayOptions {
        upstream_loopback_only: true,
        ..GatewayOptions::default()
    };
    opts.retry.rate_limit_retries = 0;
    // ...and a 500 is not sent to the same pair again (aigw sends it once more by default).
    opts.retry.same_pair_retries = 0;
    let s = setup_with("", opts).await;
    // key 1: 500; key 2: 429 → backup with the client's own key.
    s.primary.push_fault(Fault::status(500));
    s.primary.push_fault(Fault::rate_limited(1));
    let r = post(&s, &chat(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "backup");
    assert_eq!(header(&r, "x-aigw-attempts"), "3");
    let p = s.primary.requests();
    assert_eq!(p.len(), 2);
    assert_eq!(
        p[0].header("authorization"),
        Some("Bearer sk-primary-key-one-1111")
    );
    assert_eq!(
        p[1].header("authorization"),
        Some("Bearer sk-primary-key-two-2222")
    );
    assert_eq!(
        s.backup.requests()[0].header("authorization"),
        Some("Bearer sk-client-own")
    );
}

#[tokio::test]
async fn key_rotation_on_401() {
    let s = setup().await;
    s.primary.require_key("sk-primary-key-two-2222");
    let r = post(&s, &chat(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "primary");
    assert_eq!(header(&r, "x-aigw-attempts"), "2");
    assert_eq!(s.backup.requests().len(), 0);
}

#[tokio::test]
async fn fails_over_on_connection_refused() {
    let backup = openai_standin("backup", &["test-chat"]).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let gw = start_policy(
        &two_providers(""),
        &[("primary", dead), ("backup", backup.url())],
        SECRETS,
        GatewayOptions::default(),
    )
    .await;
    let r = gw.post("/v1/chat/completions", &chat(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "backup");
    assert_eq!(header(&r, "x-aigw-attempts"), "3");
}

#[tokio::test]
async fn fails_over_on_per_request_timeout() {
    let s = setup_with(
        "      per_request_timeout: 500ms",
        GatewayOptions::default(),
    )
    .await;
    s.primary.set_fault(Some(Fault::Hang));
    let started = std::time::Instant::now();
    let r = post(&s, &chat(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "backup");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn total_timeout_stops_failover_with_504() {
    let s = setup_with(
        "      per_request_timeout: 30s\n      total_timeout: 800ms",
        GatewayOptions::default(),
    )
    .await;
    s.primary.set_fault(Some(Fault::Hang));
    let r = post(&s, &chat(false)).await;
    assert_eq!(r.status(), 504);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "ERR_NGROK_3810");
    assert_eq!(s.backup.requests().len(), 0);
}

#[tokio::test]
async fn exhausted_candidates_are_503_with_reasons() {
    let s = setup().await;
    s.primary.set_fault(Some(Fault::status(500)));
    s.backup.set_fault(Some(Fault::status(503)));
    let r = post(&s, &chat(false)).await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "x-aigw-attempts"), "3");
    assert_eq!(header(&r, "x-aigw-provider"), "backup");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "ERR_NGROK_3807");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("primary:test-chat (key #1): HTTP 500"),
        "{msg}"
    );
    assert!(
        msg.contains("primary:test-chat (key #2): HTTP 500"),
        "{msg}"
    );
    assert!(msg.contains("backup:test-chat: HTTP 503"), "{msg}");
    assert!(!msg.contains("sk-primary-key"), "{msg}");
}

/// With `--no-stream-continuation` (continuation is `tests/serve_faults.rs`'s f08).
#[tokio::test]
async fn mid_stream_death_ends_with_an_error_event_without_continuation() {
    let s = setup_with(
        "",
        GatewayOptions {
            stream_continuation: false,
            ..GatewayOptions::default()
        },
    )
    .await;
    s.primary.push_fault(Fault::StreamCutAfter(3));
    let r = post(&s, &chat(true)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap_or_default();
    let last = text.trim_end().lines().last().unwrap_or("");
    assert!(last.starts_with("data: {\"error\""), "{text}");
    assert!(last.contains("ERR_NGROK_3800"), "{text}");
    assert_eq!(
        s.backup.requests().len(),
        0,
        "no continuation when it is turned off"
    );

    // An upstream that finishes its answer but never sends `[DONE]`: the client's stream still
    // ends promptly and cleanly.
    s.primary.push_fault(Fault::NoDoneMarker);
    let text = post(&s, &chat(true)).await.text().await.unwrap_or_default();
    assert_eq!(text.matches("data: [DONE]").count(), 1, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
}

#[tokio::test]
async fn plan_errors_keep_their_codes() {
    let s = setup().await;
    let r =
        s.gw.post(
            "/v1/chat/completions",
            &json!({"model": "no-such-model", "messages": []}),
        )
        .await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "ERR_NGROK_3804");
}

#[tokio::test]
async fn models_lists_candidates_as_provider_model() {
    let s = setup().await;
    let v: Value = s.gw.get("/v1/models").await.json().await.unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"primary:test-chat"), "{ids:?}");
    assert!(ids.contains(&"backup:test-chat"), "{ids:?}");
    assert!(v["data"][0]["object"] == "model");
    let r = s.gw.get("/v1/models/backup:test-chat").await;
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["id"], "backup:test-chat");
    let r = s.gw.get("/v1/models/nope:nope").await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn request_decoration_headers_query_body_and_token_limits() {
    let extra = r#"      max_output_tokens: 100
      max_input_tokens: 50
      headers:
        x-team: "blue-${req.headers['x-user'][0]}"
        x-client-ip: "${conn.client_ip}"
      query_params:
        api-version: "2024-02-01"
      body:
        user: "aigw"
"#;
    let s = setup_with(extra, GatewayOptions::default()).await;
    let body = json!({"model": "test-chat", "max_tokens": 5000, "logit_bias": {"1": 2}, "messages": [{"role": "user", "content": "short"}]});
    let r = client()
        .post(s.gw.url("/v1/chat/completions"))
        .header("x-user", "ann")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = &s.primary.requests()[0];
    assert_eq!(seen.header("x-team"), Some("blue-ann"));
    assert_eq!(seen.header("x-client-ip"), Some("127.0.0.1"));
    assert_eq!(seen.query.as_deref(), Some("api-version=2024-02-01"));
    let json = seen.json.as_ref().unwrap();
    assert_eq!(json["max_tokens"], 100);
    assert_eq!(json["user"], "aigw");
    assert!(
        json.get("logit_bias").is_none(),
        "unsupported_params are stripped: {json}"
    );

    let long = "x".repeat(400);
    let r = client()
        .post(s.gw.url("/v1/chat/completions"))
        .header("x-user", "ann")
        .json(&json!({"model": "test-chat", "messages": [{"role": "user", "content": long}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "ERR_NGROK_3811");
}

#[tokio::test]
async fn ollama_native_chat_through_the_engine() {
    let ollama = StandIn::start(Kind::Ollama)
        .await
        .with_models(&["llama3.2"]);
    let policy = r#"
on_http_request:
  - type: ai-gateway
    config:
      only_allow_configured_providers: true
      providers:
        - id: ollama
          base_url: "https://ollama.internal"
          models:
            - id: "llama3.2"
"#;
    let gw = start_policy(
        policy,
        &[("ollama", ollama.url())],
        &[],
        GatewayOptions::default(),
    )
    .await;
    let r = gw.post("/api/chat", &json!({"model": "llama3.2:latest", "stream": false, "messages": [{"role": "user", "content": "hi ollama"}]})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-aigw-provider"), "ollama");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"]["content"], "[ollama] you said: hi ollama");
    assert_eq!(ollama.requests()[0].path, "/api/chat");
    // Unknown model: Ollama's error shape.
    let r = gw
        .post("/api/chat", &json!({"model": "nope", "messages": []}))
        .await;
    assert!(r.status().is_client_error());
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string(), "{v}");
}

#[tokio::test]
async fn off_loopback_needs_a_token() {
    use aigw::cli::parse_listen;
    use aigw::commands::serve::check_bind;
    let any = parse_listen("0.0.0.0:0").unwrap();
    assert!(
        check_bind(&any, None)
            .unwrap_err()
            .to_string()
            .contains("--auth-token")
    );
    assert!(check_bind(&any, Some("")).is_err());
    assert!(check_bind(&any, Some("t0k3n")).is_ok());
    assert!(check_bind(&parse_listen("127.0.0.1:8080").unwrap(), None).is_ok());
    assert_eq!(
        parse_listen(":9000").unwrap(),
        "127.0.0.1:9000".parse().unwrap()
    );

    // Bound on all interfaces with a token: requests without it are refused.
    let up = openai_standin("primary", &["test-chat"]).await;
    let loaded = aigw::policy::load_str("policy.yaml", two_providers(""));
    let (routing, _) = support::factory(&[("primary", up.url()), ("backup", up.url())], SECRETS)
        .build(&loaded, Default::default())
        .unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let opts = GatewayOptions {
        auth_token: Some("t0k3n".into()),
        upstream_loopback_only: true,
        ..GatewayOptions::default()
    };
    let gw = aigw::gateway::Gateway::new(routing, support::secret_store(SECRETS), opts);
    tokio::spawn(aigw::gateway::serve(listener, gw, std::future::pending()));
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let r = client().post(&url).json(&chat(false)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(&url)
        .bearer_auth("t0k3n")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        up.requests()[0].header("authorization"),
        Some("Bearer sk-primary-key-one-1111")
    );
}

/// Replaces the file in one step, as editors save: a plain write truncates first, and a reload
/// that looks between the truncation and the write sees the change twice (and reports the same
/// broken policy twice), which made the exact error count below depend on timing.
fn save(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn reload_swaps_a_good_policy_and_keeps_serving_on_a_bad_one() {
    let a = openai_standin("a", &["m"]).await;
    let b = openai_standin("b", &["m"]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    let policy = |id: &str| {
        format!(
            "on_http_request:\n  - type: ai-gateway\n    config:\n      only_allow_configured_providers: true\n      providers:\n        - id: {id}\n          base_url: \"https://{id}.internal\"\n          models:\n            - id: m\n"
        )
    };
    std::fs::write(&path, policy("a")).unwrap();
    let f = Arc::new(support::factory(&[("a", a.url()), ("b", b.url())], &[]));
    let loaded = aigw::policy::load_str("policy.yaml", policy("a"));
    let (routing, _) = f.build(&loaded, Default::default()).unwrap();
    let started = support::start(routing, GatewayOptions::default()).await;
    let build = f.clone().reload_builder();
    aigw::gateway::server::reload::spawn(
        started.gw.clone(),
        path.clone(),
        Duration::from_millis(100),
        build,
    );
    let ask = || async {
        let r = started
            .post(
                "/v1/chat/completions",
                &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        r.headers()
            .get("x-aigw-provider")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(ask().await, "a");

    // A good policy is picked up.
    save(&path, &policy("b"));
    let mut switched = false;
    for _ in 0..100 {
        if ask().await == "b" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "the new policy was not swapped in");

    // A broken one is reported and the previous one keeps serving.
    save(
        &path,
        "on_http_request:\n  - type: ai-gateway\n    config:\n      only_allow_configured_providers: true\n      providers: 7\n",
    );
    let metrics = || async { started.metrics().await };
    let mut reported = false;
    for _ in 0..100 {
        if metrics()
            .await
            .contains("aigw_policy_reloads_total{outcome=\"error\"} 1")
        {
            reported = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reported, "the broken policy was not noticed");
    assert_eq!(ask().await, "b");
}
