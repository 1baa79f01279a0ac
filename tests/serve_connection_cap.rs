//! `--max-connections`: at the cap serve stops accepting; a new client waits in the listen
//! backlog (its request unanswered, not refused) and is served as soon as a connection closes.

#[path = "gateway_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use aigw::gateway::GatewayOptions;
use support::FixedRouting;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: aigw\r\n\r\n";

/// Reads until a whole response head has arrived.
async fn read_head(conn: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Waits (generously) for `conn`'s answer, which must be a 200.
async fn answered(conn: &mut TcpStream, what: &str) {
    let head = tokio::time::timeout(Duration::from_secs(30), read_head(conn))
        .await
        .expect(what);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

async fn served(addr: std::net::SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(HEALTH).await.unwrap();
    answered(&mut c, "a connection under the cap is served").await;
    c
}

#[tokio::test]
async fn a_client_over_the_cap_waits_and_is_served_when_one_closes() {
    let opts = GatewayOptions {
        max_connections: 2,
        ..GatewayOptions::default()
    };
    let gw = support::start(Arc::new(FixedRouting::new(Vec::new(), &[])), opts).await;
    // Two keep-alive connections hold both slots.
    let first = served(gw.addr).await;
    let _second = served(gw.addr).await;
    // The kernel completes the third handshake (backlog); serve does not take it yet.
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    third.write_all(HEALTH).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(500), read_head(&mut third)).await;
    assert!(
        early.is_err(),
        "a third connection was served over a cap of 2"
    );
    // One closes: the waiting client is accepted and answered.
    drop(first);
    answered(&mut third, "the waiting client is served once a slot frees").await;
}

#[tokio::test]
async fn no_cap_serves_every_connection() {
    let gw = support::start(
        Arc::new(FixedRouting::new(Vec::new(), &[])),
        GatewayOptions::default(),
    )
    .await;
    let mut open = Vec::new();
    for _ in 0..20 {
        open.push(served(gw.addr).await);
    }
}

/// One HTTP/2 connection cannot open more concurrent requests (and upstream sockets) than the
/// cap: streams beyond it get 503 at once, naming the flag; when they end, it serves again.
#[tokio::test]
async fn the_cap_bounds_http2_streams_not_only_connections() {
    let (up_url, _up) =
        support::mini::start("slow", support::mini::Mode::Sleep(Duration::from_secs(2))).await;
    let routing = FixedRouting::new(
        vec![support::FixedProvider {
            id: "a".into(),
            base_url: up_url,
            ollama: false,
            keys: vec!["k".into()],
        }],
        &[("a", "m1")],
    );
    // Of 3 slots the connection holds one and the accept loop one (it takes a slot before
    // accepting): one is left for a second concurrent stream.
    let opts = GatewayOptions {
        max_connections: 3,
        ..GatewayOptions::default()
    };
    let gw = support::start(Arc::new(routing), opts).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let body =
        serde_json::json!({"model": "a:m1", "messages": [{"role": "user", "content": "hi"}]});
    let send = || h2.post(gw.url("/v1/chat/completions")).json(&body).send();
    let (a, b, c) = tokio::join!(send(), send(), send());
    let mut statuses: Vec<u16> = [&a, &b, &c]
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 503]);
    for r in [a, b, c] {
        let r = r.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        if r.status() == 503 {
            let text = r.text().await.unwrap();
            assert!(text.contains("--max-connections"), "{text}");
        }
    }
    // The slots came back with the answers.
    let r = send().await.unwrap();
    assert_eq!(r.status(), 200);
}
