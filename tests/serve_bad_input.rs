//! Bad input against `aigw serve` (in-process, stand-ins on 127.0.0.1): malformed JSON, wrong
//! types, bodies over `--max-body-bytes`, unknown paths and methods, slow-loris clients, and a
//! broken policy reloaded while requests are in flight. Every failure is a JSON error in the
//! route's dialect whose message names the problem (and the fix where there is one).

#[path = "support/standin/mod.rs"]
mod standin;
#[path = "gateway_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aigw::gateway::GatewayOptions;
use serde_json::{Value, json};
use standin::{Kind, StandIn};
use support::{client, start_policy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POLICY: &str = r#"
on_http_request:
  - type: ai-gateway
    config:
      only_allow_configured_providers: true
      providers:
        - id: local
          base_url: "https://local.internal"
          models:
            - id: made-up-chat
"#;

fn opts() -> GatewayOptions {
    GatewayOptions {
        upstream_loopback_only: true,
        ..GatewayOptions::default()
    }
}

async fn setup(opts: GatewayOptions) -> (StandIn, support::Started) {
    let up = StandIn::start(Kind::OpenAi)
        .await
        .with_label("local")
        .with_models(&["made-up-chat"]);
    let gw = start_policy(POLICY, &[("local", up.url())], &[], opts).await;
    (up, gw)
}

/// The three error shapes: OpenAI, Anthropic (`/v1/messages`), Ollama (`/api/*`).
fn assert_dialect(path: &str, v: &Value) -> String {
    if path.starts_with("/api/") {
        let e = v["error"].as_str().unwrap_or_else(|| panic!("{path}: {v}"));
        assert!(
            e.contains("(ERR_NGROK_") || e.contains("(AIGW_"),
            "{path}: {v}"
        );
        e.to_string()
    } else if path == "/v1/messages" {
        assert_eq!(v["type"], "error", "{path}: {v}");
        assert!(v["error"]["type"].is_string(), "{path}: {v}");
        v["error"]["message"].as_str().unwrap().to_string()
    } else {
        assert!(v["error"]["code"].is_string(), "{path}: {v}");
        assert!(v["error"]["type"].is_string(), "{path}: {v}");
        v["error"]["message"].as_str().unwrap().to_string()
    }
}

async fn send_raw(
    gw: &support::Started,
    method: reqwest::Method,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let r = client()
        .request(method, gw.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()["content-type"],
        "application/json",
        "{path}: errors are JSON"
    );
    let text = r.text().await.unwrap();
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text:?}"));
    (status, v)
}

const INFERENCE: &[&str] = &[
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/embeddings",
    "/api/chat",
    "/api/generate",
];

#[tokio::test]
async fn malformed_json_and_wrong_types_are_400_in_each_dialect() {
    let (up, gw) = setup(opts()).await;
    let cases: &[(&[u8], &str)] = &[
        (b"{\"model\": ", "EOF while parsing"),
        (b"not json at all", "expected ident at line 1 column 2"),
        (b"", "the body is empty"),
        (b"   \n", "the body is empty"),
        (b"[1,2,3]", "expected a JSON object"),
        (b"\"a string\"", "expected a JSON object"),
        (b"{\"model\": 3}", "`model` must be a string"),
        (b"{\"model\": {\"x\":1}}", "`model` must be a string"),
        (
            b"{\"models\": \"made-up-chat\"}",
            "`models` must be a list of strings",
        ),
        (
            b"{\"models\": [1, 2]}",
            "`models` must be a list of strings",
        ),
        (b"\xff\xfe\x00garbage", "Invalid request body"),
        (b"{\"a\":1}{\"b\":2}", "trailing characters"),
    ];
    for path in INFERENCE {
        for (body, want) in cases {
            let (status, v) = send_raw(&gw, reqwest::Method::POST, path, body.to_vec()).await;
            assert_eq!(
                status,
                400,
                "{path} {:?}: {v}",
                String::from_utf8_lossy(body)
            );
            let msg = assert_dialect(path, &v);
            assert!(
                msg.contains(want),
                "{path} {:?}: {msg:?} should say {want:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
    // Deeply nested JSON: serde_json's recursion limit, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, v) = send_raw(&gw, reqwest::Method::POST, "/v1/chat/completions", deep).await;
    assert_eq!(status, 400);
    assert!(assert_dialect("/v1/chat/completions", &v).contains("recursion limit"));
    assert_eq!(
        up.requests().len(),
        0,
        "no bad request reaches the upstream"
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_naming_the_limit_and_the_flag() {
    let (up, gw) = setup(GatewayOptions {
        max_body_bytes: 4096,
        ..opts()
    })
    .await;
    let big = json!({"model": "made-up-chat", "messages": [{"role": "user", "content": "x".repeat(10_000)}]})
        .to_string();
    for path in INFERENCE {
        // With a Content-Length.
        let (status, v) = send_raw(&gw, reqwest::Method::POST, path, big.clone()).await;
        assert_eq!(status, 413, "{path}: {v}");
        let msg = assert_dialect(path, &v);
        assert!(msg.contains("4096 bytes"), "{msg}");
        assert!(msg.contains("--max-body-bytes"), "{msg}");
        // Chunked, no Content-Length: the limit applies while reading.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
            .as_bytes()
            .chunks(1000)
            .map(|c| Ok(c.to_vec()))
            .collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let (status, v) = send_raw(&gw, reqwest::Method::POST, path, body).await;
        assert_eq!(status, 413, "{path} chunked: {v}");
        assert!(assert_dialect(path, &v).contains("--max-body-bytes"));
    }
    // Just under the limit still works.
    let ok = json!({"model": "made-up-chat", "messages": [{"role": "user", "content": "hi"}]});
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.requests().len(), 1);
    let metrics = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("status=\"413\""), "{metrics}");
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_are_json_errors() {
    let (up, gw) = setup(opts()).await;
    for (method, path, status, want) in [
        ("GET", "/nope", 404, "aigw has no route GET /nope"),
        ("POST", "/v1/chat/completion", 404, "no route"),
        ("POST", "/v2/chat/completions", 404, "no route"),
        ("GET", "/api/nope", 404, "no route"),
        ("GET", "/v1/chat/completions", 405, "not with GET"),
        ("PUT", "/v1/messages", 405, "not with PUT"),
        ("DELETE", "/api/chat", 405, "not with DELETE"),
        ("POST", "/v1/models", 405, "not with POST"),
        ("POST", "/healthz", 405, "not with POST"),
        ("GET", "/v1/models/%FF%FE", 400, "Invalid model id"),
        ("GET", "/v1/models/made-up", 404, "not among"),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (s, v) = send_raw(&gw, m, path, "{}").await;
        assert_eq!(s, status, "{method} {path}: {v}");
        let msg = assert_dialect(path, &v);
        assert!(msg.contains(want), "{method} {path}: {msg}");
    }
    assert_eq!(up.requests().len(), 0);
}

/// A client that sends half a request head and then nothing is disconnected after
/// `header_read_timeout`; other clients are served meanwhile.
#[tokio::test]
async fn slow_loris_connections_are_closed_after_the_header_read_timeout() {
    let (_up, gw) = setup(GatewayOptions {
        header_read_timeout: Duration::from_secs(1),
        ..opts()
    })
    .await;
    let mut slow = Vec::new();
    // Connected, nothing sent at all (before the HTTP version is even known).
    for _ in 0..5 {
        slow.push(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
    }
    // Half an HTTP/2 preface.
    for _ in 0..5 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        slow.push(s);
    }
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // Served while the slow ones hang.
    let r = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for mut s in slow {
        // Generous bound: only a safety net so a regression fails instead of hanging.
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf)).await;
        let read = read.expect("the gateway never closed a slow-loris connection");
        // Closed: EOF (possibly after a 408) or a reset.
        if let Ok(n) = read {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(
                text.is_empty() || text.starts_with("HTTP/1.1 408"),
                "{text}"
            );
        }
    }
    // A client that finishes its head in time is unaffected.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
}

/// A broken policy written while 8 clients send requests in a loop: the old policy keeps
/// serving, every request is answered 200, and the reload is counted as an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_policy_reloaded_under_load_drops_nothing() {
    let up = StandIn::start(Kind::OpenAi)
        .await
        .with_label("local")
        .with_models(&["made-up-chat"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, POLICY).unwrap();
    let f = Arc::new(support::factory(&[("local", up.url())], &[]));
    let loaded = aigw::policy::load_str("policy.yaml", POLICY);
    let (routing, _) = f.build(&loaded, Default::default()).unwrap();
    let gw = support::start(routing, opts()).await;
    aigw::gateway::server::reload::spawn(
        gw.gw.clone(),
        path.clone(),
        Duration::from_millis(20),
        f.clone().reload_builder(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (stop, answered, url) = (
            stop.clone(),
            answered.clone(),
            gw.url("/v1/chat/completions"),
        );
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let stream = (i + n) % 2 == 0;
                let r = c
                    .post(&url)
                    .json(&json!({"model": "made-up-chat", "stream": stream, "messages": [{"role": "user", "content": "under load"}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let text = r.text().await.unwrap();
                assert!(text.contains("[local]"), "{text}");
                if stream {
                    assert!(text.contains("[DONE]"), "{text}");
                }
                answered.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
            n
        }));
    }
    let broken = [
        "on_http_request:\n  - type: ai-gateway\n    config:\n      providers: [",
        "on_http_request:\n  - type: ai-gateway\n    config:\n      only_allow_configured_providers: true\n      providers:\n        - id: local\n          base_url: \"https://local.internal\"\n          models:\n            - id: made-up-chat\n      model_selection:\n        strategy:\n          - \"ai.models.filter(m, m.nope == 1\"\n",
        "\u{0}\u{1}binary",
        "",
    ]
    .map(String::from)
    .into_iter()
    // Nested deep enough to overflow a reload thread's stack before the CEL nesting guard.
    .chain([POLICY.replace(
        "            - id: made-up-chat\n",
        &format!(
            "            - id: made-up-chat\n      model_selection:\n        strategy:\n          - \"{}ai.models{}\"\n",
            "(".repeat(2000),
            ")".repeat(2000)
        ),
    )])
    .collect::<Vec<String>>();
    let errors = || -> u64 {
        gw.gw
            .metrics
            .render()
            .lines()
            .find(|l| l.starts_with("aigw_policy_reloads_total{outcome=\"error\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    for (k, text) in broken.iter().enumerate() {
        // Wait until the reloader has seen this version (its error counter moves). The file is
        // rewritten with a fresh comment now and then: the reloader compares contents, and may
        // have read its first version only after this loop's first write.
        let before = errors();
        let mut seen = false;
        for attempt in 0..600 {
            if attempt % 20 == 0 {
                std::fs::write(&path, format!("{text}\n# {attempt}\n")).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if errors() > before {
                seen = true;
                break;
            }
        }
        assert!(
            seen,
            "reload of broken policy #{k} not counted:\n{}",
            gw.gw.metrics.render()
        );
    }
    assert!(
        !gw.gw
            .metrics
            .render()
            .contains("aigw_policy_reloads_total{outcome=\"ok\"}"),
        "no broken policy was accepted: {}",
        gw.gw.metrics.render()
    );
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for t in tasks {
        total += t
            .await
            .expect("a client task failed (a request was dropped)");
    }
    assert_eq!(total, answered.load(Ordering::SeqCst));
    assert!(total > 0);
    assert_eq!(
        up.hits("/v1/chat/completions"),
        total,
        "every request reached the old policy's upstream"
    );
    eprintln!("broken-policy reload under load: {total} requests, all answered 200");
}
