//! Hostile but well-formed input against `aigw serve` on loopback (stand-ins on 127.0.0.1): every
//! request's cost is bounded, the client gets a status and a message naming the bound, and
//! `/healthz` keeps answering while the hostile request is in flight. (Issue 23.)

#[path = "gateway_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use aigw::gateway::GatewayOptions;
use aigw::gateway::limits;
use serde_json::{Value, json};
use support::standin::{Kind, StandIn};
use support::{client, start_policy};

const POLICY: &str = r#"
on_http_request:
  - type: ai-gateway
    config:
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

/// Runs `hostile` while probing `/healthz` every 100 ms; every probe must answer 200 within
/// 5 s (generous: an idle gateway answers in well under a millisecond).
async fn with_health_probes<T>(
    gw: &support::Started,
    hostile: impl std::future::Future<Output = T>,
) -> T {
    let url = gw.url("/healthz");
    let probes = async {
        let c = client();
        loop {
            let r = tokio::time::timeout(Duration::from_secs(5), c.get(&url).send())
                .await
                .expect("/healthz did not answer within 5 s while a hostile request ran")
                .unwrap();
            assert_eq!(r.status(), 200);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let out = tokio::select! {
        out = hostile => out,
        _ = probes => unreachable!("the probes loop until the hostile request ends"),
    };
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "/healthz after the hostile request");
    out
}

async fn post(gw: &support::Started, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = client()
        .post(gw.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:.300}"));
    (status, v)
}

fn message(v: &Value) -> &str {
    v["error"]["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
        .unwrap_or_else(|| panic!("no error message: {v}"))
}

/// A 16 MB body listing a million models (it once took 4.9 GB and 100 s of CPU) is a quick 400
/// naming the limit; a list at the limit is planned and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_requested_models_is_a_400_naming_the_limit() {
    let (up, gw) = setup(opts()).await;
    let names: Vec<String> = (0..1_000_000).map(|i| format!("local:m{i:07}")).collect();
    let body = json!({"model": "made-up-chat", "models": names, "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    assert!(body.len() > 15_000_000, "{}", body.len());
    let started = Instant::now();
    let (status, v) = with_health_probes(&gw, post(&gw, "/v1/chat/completions", body)).await;
    eprintln!("1,000,000 models: {status} in {:?}", started.elapsed());
    assert_eq!(status, 400, "{v}");
    let msg = message(&v);
    assert!(
        msg.contains(&format!("at most {}", limits::MAX_REQUESTED_MODELS)),
        "{msg}"
    );
    assert!(msg.len() < 1000, "{msg}");
    // The same list on the Ollama API.
    let names: Vec<String> = (0..10_000).map(|i| format!("local:m{i}")).collect();
    let (status, v) = post(
        &gw,
        "/api/chat",
        json!({"model": "made-up-chat", "models": names, "messages": []}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(message(&v).contains("model names per request"), "{v}");
    assert_eq!(up.requests().len(), 0);

    // At the limit (`model` plus 255 names, half of them repeats): served by the first one.
    let names: Vec<String> = (0..limits::MAX_REQUESTED_MODELS - 1)
        .map(|i| format!("local:m{}", i % 100))
        .collect();
    let (status, v) = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "made-up-chat", "models": names, "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(up.requests().len(), 1);
}

/// A 10 MB model name is refused with a short message quoting its start, not echoed whole.
#[tokio::test]
async fn a_huge_model_name_is_refused_and_not_echoed() {
    let (up, gw) = setup(opts()).await;
    let name = "x".repeat(10_000_000);
    for path in ["/v1/chat/completions", "/v1/messages", "/api/chat"] {
        let body = json!({"model": name, "messages": [{"role": "user", "content": "hi"}]});
        let (status, v) = with_health_probes(&gw, post(&gw, path, body.to_string())).await;
        assert_eq!(status, 400, "{path}");
        let msg = message(&v);
        assert!(msg.len() < 2000, "{path}: a {}-byte message", msg.len());
        assert!(
            msg.contains(&format!("at most {} bytes", limits::MAX_MODEL_NAME_BYTES)),
            "{path}: {msg}"
        );
        assert!(msg.contains("10000000 bytes"), "{path}: {msg}");
    }
    assert_eq!(up.requests().len(), 0);
}

/// Sends `head` (and `body_start`) on a raw connection, then whatever `rest` does; returns what
/// the gateway answered before closing (within 60 s: a safety net, not the bound under test).
async fn raw_exchange(
    addr: std::net::SocketAddr,
    head: String,
    trickle: Option<Duration>,
) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        if let Some(every) = trickle {
            // One byte at a time, forever (until the gateway closes the connection).
            loop {
                tokio::time::sleep(every).await;
                if wr.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
        // Otherwise: hold the write half open and send nothing.
        std::future::pending::<()>().await;
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut buf))
        .await
        .expect("the gateway never answered a stalled body");
    writer.abort();
    (
        String::from_utf8_lossy(&buf).into_owned(),
        started.elapsed(),
    )
}

fn head(path: &str, extra: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}\r\n")
}

/// Bodies that stall or trickle after the head are cut at `--body-read-timeout` with a 408
/// naming the flag, in each route family; `/healthz` answers meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_trickled_bodies_get_408_at_the_body_read_timeout() {
    let limit = Duration::from_secs(2);
    let (up, gw) = setup(GatewayOptions {
        body_read_timeout: limit,
        ..opts()
    })
    .await;
    for path in ["/v1/chat/completions", "/v1/messages", "/api/chat"] {
        for (what, extra, trickle, first) in [
            (
                "10 of 1000 bytes",
                "Content-Length: 1000\r\n",
                None,
                "{\"model\": ",
            ),
            (
                "idle chunked",
                "Transfer-Encoding: chunked\r\n",
                None,
                "a\r\n{\"model\": \r\n",
            ),
            (
                "1 byte every 300 ms",
                "Content-Length: 100000\r\n",
                Some(Duration::from_millis(300)),
                "{",
            ),
        ] {
            let (text, took) = with_health_probes(
                &gw,
                raw_exchange(gw.addr, format!("{}{first}", head(path, extra)), trickle),
            )
            .await;
            assert!(text.starts_with("HTTP/1.1 408"), "{path} {what}: {text}");
            assert!(
                text.contains("--body-read-timeout"),
                "{path} {what}: {text}"
            );
            assert!(took >= limit, "{path} {what}: cut after {took:?}");
            eprintln!("{path} {what}: 408 after {took:?}");
        }
    }
    assert_eq!(up.requests().len(), 0);
}

/// Eight stalled bodies hold all `--max-connections 8` slots only until the body read
/// timeout: then `/healthz` is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_free_their_connection_slots() {
    let limit = Duration::from_secs(2);
    let (_up, gw) = setup(GatewayOptions {
        body_read_timeout: limit,
        max_connections: 8,
        ..opts()
    })
    .await;
    let stalled: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(raw_exchange(
                gw.addr,
                format!(
                    "{}{{\"model\": ",
                    head("/v1/chat/completions", "Content-Length: 1000\r\n")
                ),
                None,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let r = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let waited = started.elapsed();
    for s in stalled {
        let (text, _) = s.await.unwrap();
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    // Served once the stalled bodies timed out, not after the 60 s safety net.
    assert!(waited < limit + Duration::from_secs(20), "{waited:?}");
    eprintln!("/healthz behind 8 stalled bodies at the cap: served after {waited:?}");
}

/// A declared body over `--max-body-bytes` is refused with 413 before it is read: a client
/// sending `Expect: 100-continue` never gets `100 Continue`.
#[tokio::test]
async fn a_huge_content_length_with_expect_continue_gets_413_first() {
    let (up, gw) = setup(GatewayOptions {
        max_body_bytes: 4096,
        ..opts()
    })
    .await;
    for path in [
        "/v1/chat/completions",
        "/v1/messages",
        "/api/chat",
        "/v1/embeddings",
    ] {
        let (text, _) = with_health_probes(
            &gw,
            raw_exchange(
                gw.addr,
                head(
                    path,
                    "Content-Length: 10000000000\r\nExpect: 100-continue\r\n",
                ),
                None,
            ),
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 413"), "{path}: {text}");
        assert!(!text.contains("100 Continue"), "{path}: {text}");
        assert!(text.contains("--max-body-bytes"), "{path}: {text}");
        assert!(text.contains("4096 bytes"), "{path}: {text}");
    }
    assert_eq!(up.requests().len(), 0);
}

/// An upstream whose stream quotes the provider key: in a malformed event, in an error event
/// and in a plain chunk.
async fn leaky_upstream(key: &'static str) -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(move || async move {
        let chunk = json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": format!("echo {key}")}}]});
        let body = format!(
            "data: {chunk}\n\ndata: not json {key}\n\ndata: {}\n\n",
            json!({"error": {"message": format!("Incorrect API key provided: {key}")}})
        );
        ([("content-type", "text/event-stream")], body).into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Captures what the gateway logs on this thread, in text or JSON form.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The provider key never reaches the client or the log through a stream: relayed events and
/// the dropped-event warning show it as `sk-…` and its last four characters.
#[tokio::test]
async fn a_key_quoted_in_an_upstream_stream_is_redacted_in_the_relay_and_the_log() {
    const KEY: &str = "sk-leaky-provider-key-0123456789abcdef";
    let up = leaky_upstream(KEY).await;
    let policy = r#"
on_http_request:
  - type: ai-gateway
    config:
      providers:
        - id: local
          base_url: "https://local.internal"
          api_keys:
            - value: ${secrets.get('aigw', 'local-key')}
          models:
            - id: made-up-chat
"#;
    let gw = start_policy(
        policy,
        &[("local", up)],
        &[("AIGW_SECRET_AIGW_LOCAL_KEY", KEY)],
        opts(),
    )
    .await;
    for json_logs in [false, true] {
        let captured = Captured::default();
        let writer = captured.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false);
        let _guard = if json_logs {
            tracing::subscriber::set_default(builder.json().finish())
        } else {
            tracing::subscriber::set_default(builder.finish())
        };
        let (text, _) = with_health_probes(&gw, async {
            let r = client()
                .post(gw.url("/v1/chat/completions"))
                .json(&json!({"model": "made-up-chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            (r.text().await.unwrap(), ())
        })
        .await;
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains(KEY), "relayed: {text}");
        assert!(text.contains("sk-…cdef"), "relayed: {text}");
        assert!(
            text.contains("Incorrect API key provided: sk-…cdef"),
            "{text}"
        );
        assert!(log.contains("dropped a malformed stream event"), "{log}");
        assert!(!log.contains(KEY), "json={json_logs}: {log}");
        assert!(
            !log.contains("sk-leaky"),
            "json={json_logs}: a cut-off key: {log}"
        );
    }
}

/// Every numeric form of a token limit is clamped to `max_output_tokens` before it leaves:
/// `max_tokens` (and its siblings) on the OpenAI route, `options.num_predict` on Ollama's.
#[tokio::test]
async fn max_output_tokens_cannot_be_bypassed_with_other_number_forms() {
    use aigw::policy::model::Sp;
    let openai = StandIn::start(Kind::OpenAi)
        .await
        .with_label("openai-like")
        .with_models(&["made-up-chat"]);
    let ollama = StandIn::start(Kind::Ollama)
        .await
        .with_label("gpu")
        .with_models(&["llama3.2"]);
    let fixed = |ollama_provider: bool, url: String, model: &str| {
        let mut r = support::FixedRouting::new(
            vec![support::FixedProvider {
                id: "p".into(),
                base_url: url,
                ollama: ollama_provider,
                keys: Vec::new(),
            }],
            &[("p", model)],
        );
        r.gateway.max_output_tokens = Some(Sp::new(1000, 0..0));
        std::sync::Arc::new(r)
    };
    let gw_openai = support::start(fixed(false, openai.url(), "made-up-chat"), opts()).await;
    let gw_ollama = support::start(fixed(true, ollama.url(), "llama3.2"), opts()).await;
    let forms = [
        "1e3",
        "1000.5",
        "1e400",
        "18446744073709551616",
        "-1",
        "-2",
        "5000",
    ];
    for (i, form) in forms.iter().enumerate() {
        for key in ["max_tokens", "max_completion_tokens"] {
            let body = format!(
                r#"{{"model": "made-up-chat", "{key}": {form}, "messages": [{{"role": "user", "content": "hi"}}]}}"#
            );
            let (status, v) =
                with_health_probes(&gw_openai, post(&gw_openai, "/v1/chat/completions", body))
                    .await;
            assert_eq!(status, 200, "{key}: {form}: {v}");
            let seen = openai.requests();
            let sent = seen.last().unwrap().json.clone().expect("JSON upstream");
            let n = sent[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{key}: {form}: {sent}"));
            assert!(n <= 1000, "{key}: {form} went upstream as {n}");
        }
        let body = format!(
            r#"{{"model": "llama3.2", "stream": false, "options": {{"num_predict": {form}}}, "messages": [{{"role": "user", "content": "hi"}}]}}"#
        );
        let (status, v) = with_health_probes(&gw_ollama, post(&gw_ollama, "/api/chat", body)).await;
        assert_eq!(status, 200, "num_predict: {form}: {v}");
        let seen = ollama.requests();
        assert_eq!(seen.len(), i + 1);
        let sent = seen.last().unwrap().json.clone().expect("JSON upstream");
        let n = sent["options"]["num_predict"]
            .as_u64()
            .unwrap_or_else(|| panic!("num_predict: {form}: {sent}"));
        assert!(n <= 1000, "num_predict: {form} went upstream as {n}");
    }
}

/// A secret holding a line break would make hyper drop the `Authorization` header it is sent
/// in: `serve` refuses to start, naming the secret (never its value).
#[test]
fn serve_refuses_a_secret_with_a_line_break_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "on_http_request:\n  - type: ai-gateway\n    config:\n      providers:\n        - id: local\n          base_url: \"http://127.0.0.1:9\"\n          api_keys:\n            - value: ${secrets.get('vault', 'key')}\n          models:\n            - id: made-up-chat\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aigw"))
        .args(["serve", "--listen", "127.0.0.1:0", "--policy"])
        .arg(&policy)
        .env("AIGW_SECRET_VAULT_KEY", "sk-with-newline-1234\n")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("serve started with a secret holding a newline");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("`AIGW_SECRET_VAULT_KEY`"), "{err}");
    assert!(err.contains("line break"), "{err}");
    assert!(!err.contains("sk-with-newline"), "{err}");
}
