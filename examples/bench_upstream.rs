//! A minimal, fast OpenAI-format upstream for `bench/gateway.sh`.
//!
//! ```text
//! cargo run --release --example bench_upstream -- [--port N] [--threads N]
//!     [--chunks N] [--delay-ms MS]
//! ```
//! `POST /v1/chat/completions` (or `/chat/completions`) answers a fixed chat completion, or with
//! `"stream": true` in the body a fixed SSE stream: `chunks` events, the first at once, then one
//! every `delay-ms`, each written as its own HTTP chunk when it is produced, then `data: [DONE]`.
//! A request may override both with the body fields `bench_chunks` and `bench_delay_ms` (aigw
//! forwards unknown fields), so one upstream serves the TTFB run and the 1,000 open streams.
//! `GET /v1/models` lists the one model. Listens on 127.0.0.1 only, with TCP_NODELAY, and prints
//! `bench_upstream listening on http://127.0.0.1:PORT` once it accepts connections.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};

/// The fixed non-streaming answer (the same bytes nginx serves in the harness).
pub const CHAT_JSON: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the bench upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16}}"#;

#[derive(Clone, Copy)]
struct Defaults {
    chunks: u64,
    delay: Duration,
}

fn event(i: u64) -> Bytes {
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}]}}\n\n"
    ))
}

async fn chat(defaults: Defaults, body: Bytes) -> Response {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let streaming = v.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
    if !streaming {
        let mut r = Response::new(Body::from(CHAT_JSON));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return r;
    }
    let chunks = v
        .get("bench_chunks")
        .and_then(|n| n.as_u64())
        .unwrap_or(defaults.chunks);
    let delay = v
        .get("bench_delay_ms")
        .and_then(|n| n.as_u64())
        .map(Duration::from_millis)
        .unwrap_or(defaults.delay);
    // Event 0 goes out at once, without touching the timer (a tokio sleep rounds up to the next
    // millisecond tick even when already due); event i at start + i·delay, so delays don't drift.
    let start = tokio::time::Instant::now();
    let stream = futures_util::stream::unfold(0u64, move |i| async move {
        if i > chunks {
            return None;
        }
        if i > 0 && !delay.is_zero() {
            tokio::time::sleep_until(start + delay * i as u32).await;
        }
        let bytes = if i == chunks {
            Bytes::from_static(b"data: [DONE]\n\n")
        } else {
            event(i)
        };
        Some((Ok::<_, Infallible>(bytes), i + 1))
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn models() -> Response {
    let mut r = Response::new(Body::from(
        r#"{"object":"list","data":[{"id":"bench","object":"model","created":0,"owned_by":"bench"}]}"#,
    ));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn main() {
    let mut port = 0u16;
    let mut threads = 1usize;
    let mut defaults = Defaults {
        chunks: 20,
        delay: Duration::from_millis(1),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&flag));
        match flag.as_str() {
            "--port" => port = value().parse().unwrap_or_else(|_| usage("--port")),
            "--threads" => threads = value().parse().unwrap_or_else(|_| usage("--threads")),
            "--chunks" => defaults.chunks = value().parse().unwrap_or_else(|_| usage("--chunks")),
            "--delay-ms" => {
                defaults.delay =
                    Duration::from_millis(value().parse().unwrap_or_else(|_| usage("--delay-ms")))
            }
            _ => usage(&flag),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        use axum::serve::ListenerExt;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = Router::new()
            .route("/v1/models", get(models))
            .route(
                "/v1/chat/completions",
                post(move |body: Bytes| chat(defaults, body)),
            )
            .route(
                "/chat/completions",
                post(move |body: Bytes| chat(defaults, body)),
            );
        println!("bench_upstream listening on http://{addr}");
        axum::serve(listener, app).await.expect("serve");
    });
}

fn usage(flag: &str) -> ! {
    eprintln!(
        "bench_upstream: bad or incomplete flag {flag}\nusage: bench_upstream [--port N] [--threads N] [--chunks N] [--delay-ms MS]"
    );
    std::process::exit(2)
}
