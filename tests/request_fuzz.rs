//! Property test ("fuzzing"; cargo-fuzz needs a nightly toolchain) of request parsing through
//! the real router (tower `oneshot`) backed by the real engine and a stand-in upstream: arbitrary
//! and mutated methods, paths, headers and bodies never panic, and every error (status ≥ 400) is
//! a well-formed JSON error in the route's dialect.
//!
//! Inputs: the seed corpus `testdata/fuzz/requests/*.json` (replayed as is, then mutated) plus
//! generated requests. Failures found are kept in
//! `testdata/fuzz/request_fuzz.proptest-regressions` and replayed first on every run.
//! Deterministic: the RNG seed is fixed unless `PROPTEST_RNG_SEED` is set; `AIGW_FUZZ_CASES`
//! changes the number of generated cases (default 4000). The test prints how many inputs ran.
//! A second test sends 1500 mutated seed requests and arbitrary byte strings to a live listener.

#[path = "support/standin/mod.rs"]
mod standin;
#[path = "gateway_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aigw::gateway::errors::Dialect;
use aigw::gateway::server::routes::{dialect_of, router};
use aigw::gateway::{Gateway, GatewayOptions};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use proptest::prelude::*;
use proptest::test_runner::{
    Config, FileFailurePersistence, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};
use serde_json::Value;
use standin::{Kind, StandIn};
use tower::ServiceExt;

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
            - id: made-up-embed
"#;

const TOKEN: &str = "fuzz-inbound-token";

/// One request to try.
#[derive(Debug, Clone)]
struct Input {
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    token: bool,
}

fn seeds() -> Vec<Input> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/fuzz/requests");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let body = match (&v["body"], &v["raw"]) {
                (Value::Null, Value::String(s)) => s.as_bytes().to_vec(),
                (b, _) => b.to_string().into_bytes(),
            };
            Input {
                method: v["method"].as_str().unwrap().to_string(),
                path: v["path"].as_str().unwrap().to_string(),
                headers: v["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| {
                        (
                            h[0].as_str().unwrap().to_string(),
                            h[1].as_str().unwrap().as_bytes().to_vec(),
                        )
                    })
                    .collect(),
                body,
                token: true,
            }
        })
        .collect()
}

const PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/models",
    "/v1/models/local:made-up-chat",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/api/show",
    "/api/tags",
    "/api/ps",
    "/api/version",
    "/metrics",
    "/healthz",
    "/",
];

const METHODS: &[&str] = &[
    "POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "FUZZ",
];

const HEADER_NAMES: &[&str] = &[
    "content-type",
    "content-encoding",
    "authorization",
    "x-api-key",
    "x-aigw-token",
    "x-aigw-via",
    "x-request-id",
    "anthropic-version",
    "accept",
    "accept-encoding",
    "connection",
    "host",
    "x-forwarded-host",
    "forwarded",
    "transfer-encoding",
    "te",
    "expect",
];

/// Byte-level mutation: delete, duplicate, replace or insert a slice.
fn mutate(data: &[u8], at: usize, len: usize, how: u8, insert: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    if v.is_empty() {
        return insert.to_vec();
    }
    let at = at % v.len();
    let end = (at + len).min(v.len());
    match how % 5 {
        0 => {
            v.drain(at..end);
        }
        1 => {
            let dup = v[at..end].to_vec();
            v.splice(at..at, dup);
        }
        2 => {
            v.splice(at..end, insert.iter().copied());
        }
        3 => {
            v.splice(at..at, insert.iter().copied());
        }
        _ => {
            v.truncate(at);
        }
    }
    v
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[ -~]{0,20}".prop_map(Value::String),
        Just(Value::String("made-up-chat".into())),
        Just(Value::String("local:made-up-chat".into())),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("model".to_string()),
                        Just("models".to_string()),
                        Just("messages".to_string()),
                        Just("stream".to_string()),
                        Just("input".to_string()),
                        Just("prompt".to_string()),
                        Just("max_tokens".to_string()),
                        Just("name".to_string()),
                        "[a-z_]{1,10}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~]{0,40}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..40),
        Just(b"application/json".to_vec()),
        Just(b"gzip".to_vec()),
        Just(b"chunked".to_vec()),
        Just(b"100-continue".to_vec()),
        Just(format!("Bearer {TOKEN}").into_bytes()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(PATHS).prop_map(String::from),
        1 => (proptest::sample::select(PATHS), "[ -~]{0,16}").prop_map(|(p, s)| format!("{p}{s}")),
        1 => "/[ -~]{0,40}",
        1 => "/v1/models/[%a-zA-Z0-9:/._~-]{0,30}",
    ]
}

fn generated() -> impl Strategy<Value = Input> {
    (
        prop_oneof![
            6 => Just("POST"),
            2 => Just("GET"),
            1 => proptest::sample::select(METHODS),
        ],
        path(),
        proptest::collection::vec(
            (
                prop_oneof![
                    proptest::sample::select(HEADER_NAMES).prop_map(String::from),
                    "x-[a-z-]{1,12}"
                ],
                header_value(),
            ),
            0..5,
        ),
        prop_oneof![
            3 => json_value().prop_map(|v| v.to_string().into_bytes()),
            1 => proptest::collection::vec(any::<u8>(), 0..300),
            1 => "[{}\\[\\]\":,a-z0-9 .eE+-]{0,200}".prop_map(String::into_bytes),
        ],
        any::<bool>(),
    )
        .prop_map(|(method, path, headers, body, token)| Input {
            method: method.to_string(),
            path,
            headers,
            body,
            token,
        })
}

fn mutated(seeds: Arc<Vec<Input>>) -> impl Strategy<Value = Input> {
    let n = seeds.len();
    (
        0..n,
        any::<usize>(),
        0usize..30,
        any::<u8>(),
        prop_oneof![
            Just(b"".to_vec()),
            Just(b"\"".to_vec()),
            Just(b"{".to_vec()),
            Just(b"]".to_vec()),
            Just(b"null".to_vec()),
            Just(b"\\u0000".to_vec()),
            Just(b"\xff\xfe".to_vec()),
            Just(b"1e999".to_vec()),
            "[ -~]{0,12}".prop_map(String::into_bytes),
        ],
        any::<u8>(),
        proptest::option::of((proptest::sample::select(HEADER_NAMES), header_value())),
    )
        .prop_map(move |(i, at, len, how, insert, what, header)| {
            let mut input = seeds[i].clone();
            match what % 4 {
                0 | 1 => input.body = mutate(&input.body, at, len, how, &insert),
                2 => {
                    let p = mutate(input.path.as_bytes(), at, len, how, &insert);
                    input.path = String::from_utf8_lossy(&p).into_owned();
                }
                _ => input.method = METHODS[at % METHODS.len()].to_string(),
            }
            if let Some((name, value)) = header {
                input.headers.push((name.to_string(), value));
            }
            input
        })
}

/// Builds the HTTP request; `None` when the input is not a valid HTTP request at all (hyper
/// would have refused it before the router).
fn build(input: &Input) -> Option<Request<Body>> {
    let method = Method::from_bytes(input.method.as_bytes()).ok()?;
    let uri: axum::http::Uri = input.path.parse().ok()?;
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(input.body.clone()))
        .ok()?;
    let h = req.headers_mut();
    for (name, value) in &input.headers {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        h.append(n, v);
    }
    if input.token {
        h.insert("x-aigw-token", HeaderValue::from_static(TOKEN));
    }
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    Some(req)
}

/// The error-shape check for one response.
fn check_error(path: &str, status: u16, content_type: &str, body: &[u8]) -> Result<(), String> {
    if content_type != "application/json" {
        return Err(format!("{status} with content-type {content_type:?}"));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "{status}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    })?;
    let ok = match dialect_of(path) {
        Dialect::Ollama => v["error"].as_str().is_some_and(|s| !s.is_empty()),
        Dialect::Anthropic => {
            v["type"] == "error"
                && v["error"]["type"].is_string()
                && v["error"]["message"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
        }
        Dialect::OpenAi => {
            // /v1/models/{id} and the router's own errors use the OpenAI shape on /v1 paths.
            v["error"]["message"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
                && v["error"]["code"].is_string()
                && v["error"]["type"].is_string()
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{status} on {path}: not the route's error shape: {v}"
        ))
    }
}

#[test]
fn requests_through_the_router_never_panic_and_errors_are_well_formed() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (up, app) = rt.block_on(async {
        let up = StandIn::start(Kind::OpenAi)
            .await
            .with_label("local")
            .with_models(&["made-up-chat", "made-up-embed"]);
        let loaded = aigw::policy::load_str("policy.yaml", POLICY);
        let (routing, _) = support::factory(&[("local", up.url())], &[])
            .build(&loaded, Default::default())
            .unwrap();
        let gw = Gateway::new(
            routing,
            Default::default(),
            GatewayOptions {
                upstream_loopback_only: true,
                auth_token: Some(TOKEN.into()),
                max_body_bytes: 64 * 1024,
                ..GatewayOptions::default()
            },
        );
        (up, router(gw))
    });
    let ran = AtomicUsize::new(0);
    let skipped = AtomicUsize::new(0);
    let statuses: Mutex<BTreeMap<u16, usize>> = Mutex::default();
    let one = |input: &Input| -> Result<(), TestCaseError> {
        let Some(req) = build(input) else {
            skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let path = req.uri().path().to_string();
        let resp = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), async {
                let resp = app.clone().oneshot(req).await.unwrap();
                let status = resp.status().as_u16();
                let ct = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let body = axum::body::to_bytes(resp.into_body(), 64 * 1024 * 1024).await;
                (status, ct, body)
            })
            .await
        });
        let (status, ct, body) =
            resp.map_err(|_| TestCaseError::fail(format!("no answer within 60 s: {input:?}")))?;
        ran.fetch_add(1, Ordering::Relaxed);
        *statuses.lock().unwrap().entry(status).or_default() += 1;
        let body = body.map_err(|e| TestCaseError::fail(format!("body error {e}: {input:?}")))?;
        // HEAD answers carry no body (HTTP), so only their status is checked.
        let head = input.method == "HEAD";
        if status >= 400 && !head && !(path == "/metrics" || path == "/healthz" || path == "/") {
            check_error(&path, status, &ct, &body)
                .map_err(|e| TestCaseError::fail(format!("{e}\ninput: {input:?}")))?;
        }
        Ok(())
    };
    let seeds = Arc::new(seeds());
    assert!(seeds.len() >= 10, "the seed corpus went missing");
    for s in seeds.iter() {
        one(s).unwrap_or_else(|e| panic!("seed: {e}"));
    }
    let cases: u32 = std::env::var("AIGW_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x5eed_f022);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/testdata/fuzz/request_fuzz.proptest-regressions"
            )))),
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let strategy = prop_oneof![
        1 => generated(),
        1 => mutated(seeds.clone()),
    ];
    let result = runner.run(&strategy, |input| one(&input));
    let hits = up.requests().len();
    eprintln!(
        "request fuzz: {} inputs ran through the router ({} seeds, {} generated/mutated cases, {} not valid HTTP and skipped); {hits} reached the upstream; statuses {:?}",
        ran.load(Ordering::Relaxed),
        seeds.len(),
        cases,
        skipped.load(Ordering::Relaxed),
        statuses.lock().unwrap()
    );
    result.unwrap();
    rt.block_on(up.stop());
}

/// Raw bytes on a live listener (the hyper layer before the router): mutated seed requests and
/// arbitrary bytes never take the server down; whatever answer comes is HTTP, any JSON it claims
/// is JSON, and the gateway still serves afterwards.
#[test]
fn raw_bytes_on_a_live_listener_never_take_the_server_down() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (up, gw) = rt.block_on(async {
        let up = StandIn::start(Kind::OpenAi)
            .await
            .with_label("local")
            .with_models(&["made-up-chat", "made-up-embed"]);
        let gw = support::start_policy(
            POLICY,
            &[("local", up.url())],
            &[],
            GatewayOptions {
                upstream_loopback_only: true,
                header_read_timeout: Duration::from_secs(2),
                max_body_bytes: 64 * 1024,
                ..GatewayOptions::default()
            },
        )
        .await;
        (up, gw)
    });
    let raw_seeds: Vec<Vec<u8>> = seeds()
        .iter()
        .map(|s| {
            let mut r = format!("{} {} HTTP/1.1\r\nHost: x\r\n", s.method, s.path).into_bytes();
            for (n, v) in &s.headers {
                r.extend_from_slice(n.as_bytes());
                r.extend_from_slice(b": ");
                r.extend_from_slice(v);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(
                format!(
                    "Content-Length: {}\r\nConnection: close\r\n\r\n",
                    s.body.len()
                )
                .as_bytes(),
            );
            r.extend_from_slice(&s.body);
            r
        })
        .collect();
    let n = raw_seeds.len();
    let ran = AtomicUsize::new(0);
    let answered = AtomicUsize::new(0);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&0x5eed_b17e_u64.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 1500,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let strategy = prop_oneof![
        3 => (0..n, any::<usize>(), 0usize..40, any::<u8>(), prop_oneof![
            Just(b"\r\n".to_vec()),
            Just(b"\r\n\r\n".to_vec()),
            Just(b"Content-Length: 99999999\r\n".to_vec()),
            Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
            Just(b"\x00".to_vec()),
            Just(b" HTTP/2.0".to_vec()),
            "[ -~]{0,12}".prop_map(String::into_bytes),
        ]).prop_map(move |(i, at, len, how, ins)| (i, at, len, how, ins)),
        1 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(|b| (usize::MAX, 0, 0, 0, b)),
    ];
    let addr = gw.addr;
    let result = runner.run(&strategy, |(i, at, len, how, ins)| {
        let data = if i == usize::MAX {
            ins
        } else {
            mutate(&raw_seeds[i], at, len, how, &ins)
        };
        ran.fetch_add(1, Ordering::Relaxed);
        let reply = rt.block_on(async {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(&data).await;
            let _ = s.shutdown().await;
            let mut buf = Vec::new();
            // The header-read timeout (2 s) closes whatever stalls; 60 s is a safety net.
            let r = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf)).await;
            (r.is_ok(), buf)
        });
        let (closed, buf) = reply;
        prop_assert!(
            closed,
            "connection never closed: {:?}",
            String::from_utf8_lossy(&data)
        );
        if !buf.is_empty() {
            answered.fetch_add(1, Ordering::Relaxed);
            prop_assert!(
                buf.starts_with(b"HTTP/1.1 "),
                "{:?}",
                String::from_utf8_lossy(&buf)
            );
            let text = String::from_utf8_lossy(&buf);
            // The first response (a mutated seed may pipeline a second request).
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let head = head.to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|n| n.trim().parse::<usize>().ok());
                if let Some(length) = length
                    && head.contains("content-type: application/json")
                    && length > 0
                    && rest.len() >= length
                {
                    let body = &rest.as_bytes()[..length];
                    prop_assert!(
                        serde_json::from_slice::<Value>(body).is_ok(),
                        "JSON answer that is not JSON: {text}"
                    );
                }
            }
        }
        Ok(())
    });
    let healthy = rt.block_on(async {
        support::client()
            .get(gw.url("/healthz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    eprintln!(
        "raw request fuzz: {} byte strings sent to a live listener ({} answered with HTTP, the rest closed)",
        ran.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed)
    );
    result.unwrap();
    assert_eq!(healthy.unwrap(), 200, "the gateway stopped serving");
    rt.block_on(up.stop());
}
