//! `aigw serve --workers N`: connections are spread over N threads, each with its own runtime
//! and upstream pool. Requests on many connections at once all succeed (JSON, failover,
//! streams), and shutdown stops every worker.

#[path = "gateway_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use aigw::gateway::{Gateway, GatewayOptions};
use aigw::policy::secrets::SecretStore;
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::mini::{self, Mode};
use support::{FixedProvider, FixedRouting, client};

fn provider(id: &str, base: &str) -> FixedProvider {
    FixedProvider {
        id: id.into(),
        base_url: base.into(),
        ollama: false,
        keys: Vec::new(),
    }
}

/// A gateway served on `workers` workers until [`Running::stop`].
struct Running {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(routing: FixedRouting, workers: usize) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let opts = GatewayOptions {
            workers,
            drain_timeout: Duration::from_secs(5),
            // Every request must reach the failing upstream: no circuit opens on it.
            breaker: aigw::gateway::attempts::breaker::BreakerOptions {
                failures: 0,
                ..Default::default()
            },
            ..GatewayOptions::default()
        };
        let gw = Gateway::new(Arc::new(routing), SecretStore::default(), opts);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(aigw::gateway::serve(listener, gw, async move {
            let _ = stopped.await;
        }));
        Running {
            url: format!("http://{addr}/v1/chat/completions"),
            stop,
            served,
        }
    }

    /// A chat request on a connection of its own (a new client has an empty pool).
    async fn post(&self, body: Value) -> reqwest::Response {
        client().post(&self.url).json(&body).send().await.unwrap()
    }

    /// Signals shutdown; serve must return, every worker stopped.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.served)
            .await
            .expect("serve returns after the signal")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_over_three_workers_all_succeed_and_fail_over() {
    let (a_url, a) = mini::start("a", Mode::Status(500)).await;
    let (b_url, b) = mini::start("b", Mode::Ok).await;
    let routing = FixedRouting::new(
        vec![provider("a", &a_url), provider("b", &b_url)],
        &[("a", "m1"), ("b", "m2")],
    );
    let gw = Running::start(routing, 3).await;
    let requests = (0..48).map(|i| {
        let gw = &gw;
        async move {
            let resp = gw
                .post(json!({"model": "a:m1", "messages": [{"role": "user", "content": format!("hi {i}")}]}))
                .await;
            let status = resp.status();
            let body: Value = resp.json().await.unwrap();
            (status, body)
        }
    });
    let results = futures_util::future::join_all(requests).await;
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
        let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(answer.starts_with("[b] you said: hi "), "{body}");
    }
    // Each sent to `a` twice: a transient 500 gets one more try on the same pair.
    assert_eq!(a.seen().len(), 96);
    assert_eq!(b.seen().len(), 48);
    // Every request reached the upstream with its own body.
    let mut prompts: Vec<String> = b
        .seen()
        .iter()
        .map(|s| {
            s.body["messages"][0]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    prompts.sort();
    prompts.dedup();
    assert_eq!(prompts.len(), 48);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_on_every_worker_arrive_whole() {
    let (s_url, _s) = mini::start("s", Mode::Stream { n: 3, die: false }).await;
    let routing = FixedRouting::new(vec![provider("s", &s_url)], &[("s", "m")]);
    let gw = Running::start(routing, 3).await;
    let streams = (0..12).map(|_| {
        let gw = &gw;
        async move {
            let resp = gw
                .post(json!({"model": "s:m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
                .await;
            assert_eq!(resp.status(), 200);
            let mut text = String::new();
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            }
            text
        }
    });
    for text in futures_util::future::join_all(streams).await {
        for word in ["[s]", " you", " said:", " hi"] {
            assert!(text.contains(&format!("\"content\":\"{word}\"")), "{text}");
        }
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }
    gw.stop().await;
}
