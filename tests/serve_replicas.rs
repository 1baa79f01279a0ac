//! Replicas that share what they learn (`aigw serve --state redis://…`), with Debian's real
//! `redis-server` started on an ephemeral loopback port and two real `aigw serve` processes:
//! a breaker opened through one replica is honoured by the other within a second, a rate
//! limit of N per key is exact across both, Redis killed under load loses no request (and
//! `/healthz` says so) and is picked up again when it returns; and a stream in flight when
//! SIGTERM arrives finishes with `[DONE]` before the process exits 0.

#[path = "gateway_support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::free_port;
use support::standin::{Fault, Kind, StandIn};

/// Generous bound for anything that should take milliseconds (CI shares 2 cores).
const PATIENCE: Duration = Duration::from_secs(30);

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// `redis-server` on 127.0.0.1:`port`, without persistence; killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run `bash tests/setup.sh` (apt redis-server)");
        let redis = Redis { child, port };
        let deadline = Instant::now() + PATIENCE;
        while !redis.pings() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn pings(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 7];
        tcp.write_all(b"PING\r\n").is_ok()
            && tcp.read_exact(&mut buf).is_ok()
            && &buf == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the server vanishes as a crash or a lost node would.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `aigw serve` process; killed on drop unless it already exited.
struct Replica {
    child: Child,
    addr: String,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Replica {
    /// Serves `policy` on an ephemeral port with `args` (e.g. `--state`, `--base-url`).
    fn start(policy: &str, args: &[String]) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, policy).unwrap();
        let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let child = Command::new(env!("CARGO_BIN_EXE_aigw"))
            .args(["serve", "--no-reload", "--color", "never", "--listen"])
            .arg("127.0.0.1:0")
            .arg("--policy")
            .arg(&path)
            .args(args)
            .current_dir(dir.path())
            .env_remove("AIGW_AUTH_TOKEN")
            .env_remove("AIGW_STATE")
            .env_remove("AIGW_LOG")
            .env("NO_COLOR", "1")
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut replica = Replica {
            child,
            addr: String::new(),
            stdout,
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = read(&replica.stdout);
            if let Some(rest) = out.split("serving on http://").nth(1) {
                replica.addr = rest.split_whitespace().next().unwrap().to_string();
                break;
            }
            assert!(
                Instant::now() < deadline,
                "aigw serve did not start:\n{}",
                replica.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        replica
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            read(&self.stdout),
            read(&self.stderr)
        )
    }

    async fn healthz(&self) -> Value {
        serde_json::from_str(&self.text("/healthz").await).unwrap()
    }

    /// Waits until `/healthz` reports the shared-state link `connected`.
    async fn wait_link(&self, connected: bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let h = self.healthz().await;
            if h["state"]["connected"] == json!(connected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/healthz never said connected={connected}: {h}\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A GET's body as text.
    async fn text(&self, path: &str) -> String {
        let r = support::client().get(self.url(path)).send().await.unwrap();
        r.text().await.unwrap()
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self.text("/metrics").await;
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} is not in /metrics:\n{text}"))
    }

    /// The `aigw_state_*` lines of `/metrics`, for failure messages.
    async fn state_metrics(&self) -> String {
        let text = self.text("/metrics").await;
        text.lines()
            .filter(|l| l.starts_with("aigw_state"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn chat(&self, model: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = support::client().post(self.url("/v1/chat/completions"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ai-gateway` over the given `(provider, model)` pairs, tried in order, behind `rules`.
fn policy(rules: &str, providers: &[(&str, &str)]) -> String {
    let mut p = format!(
        "on_http_request:\n{rules}  - type: ai-gateway\n    config:\n      only_allow_configured_providers: true\n      providers:\n"
    );
    for (id, model) in providers {
        p.push_str(&format!(
            "        - id: {id}\n          base_url: \"https://{id}.internal\"\n          models:\n            - id: {model}\n"
        ));
    }
    p
}

fn base_url(id: &str, up: &StandIn) -> [String; 2] {
    ["--base-url".into(), format!("{id}={}", up.url())]
}

fn state(redis: &Redis) -> [String; 2] {
    ["--state".into(), redis.url()]
}

/// A per-team sliding window of `capacity` requests an hour.
fn rate_rule(capacity: u64) -> String {
    format!(
        "  - actions:\n      - type: rate-limit\n        config:\n          name: per-team\n          algorithm: sliding_window\n          capacity: {capacity}\n          rate: 1h\n          bucket_key: [\"getReqHeader('x-team')\"]\n"
    )
}

/// Rate-limit windows are aligned to the epoch; a test that counts exactly starts well inside
/// one, so the previous window's (empty) count never enters the estimate midway.
async fn away_from_a_window_edge(window: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = Duration::from_nanos((now.as_nanos() % window.as_nanos()) as u64);
    if window - into < Duration::from_secs(60) {
        tokio::time::sleep(window - into + Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opened_through_one_replica_is_honoured_by_the_other_within_a_second() {
    let redis = Redis::start(free_port());
    let first = support::openai_standin("first-box", &["m"]).await;
    let second = support::openai_standin("second-box", &["m"]).await;
    let policy = policy("", &[("first", "m"), ("second", "m")]);
    let args: Vec<String> = [
        &base_url("first", &first)[..],
        &base_url("second", &second)[..],
        &state(&redis)[..],
        &["--breaker-failures".into(), "1".into()],
        &["--breaker-cooldown".into(), "1m".into()],
    ]
    .concat();
    let (a, b) = (
        Replica::start(&policy, &args),
        Replica::start(&policy, &args),
    );
    a.wait_link(true).await;
    b.wait_link(true).await;

    first.set_fault(Some(Fault::status(500)));
    let r = a.chat("m", &[]).await;
    assert_eq!(r.status(), 200, "{}", a.output());
    assert!(r.text().await.unwrap().contains("second-box"));
    let tried_through_a = first.hits("/v1/chat/completions");
    assert!(tried_through_a >= 1);

    // Replica B never saw `first` fail itself; a second later it must already skip it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..5 {
        let r = b.chat("m", &[]).await;
        assert_eq!(r.status(), 200, "{}", b.output());
    }
    assert_eq!(
        first.hits("/v1/chat/completions"),
        tried_through_a,
        "replica B sent requests to the provider whose circuit replica A opened\n{}",
        b.output()
    );
    assert_eq!(second.hits("/v1/chat/completions"), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_of_n_per_key_is_exact_across_replicas() {
    const N: u64 = 7;
    away_from_a_window_edge(Duration::from_secs(3600)).await;
    let redis = Redis::start(free_port());
    let up = StandIn::start(Kind::OpenAi).await.with_models(&["m"]);
    let policy = policy(&rate_rule(N), &[("oa", "m")]);
    let args = [&base_url("oa", &up)[..], &state(&redis)[..]].concat();
    let (a, b) = (
        Replica::start(&policy, &args),
        Replica::start(&policy, &args),
    );
    a.wait_link(true).await;
    b.wait_link(true).await;

    // 30 concurrent requests for team red, spread over both replicas; 4 for team blue.
    let mut calls = Vec::new();
    for i in 0..30 {
        let replica = if i % 2 == 0 { &a } else { &b };
        calls.push(replica.chat("m", &[("x-team", "red")]));
    }
    let answers = futures_util::future::join_all(calls).await;
    let allowed = answers.iter().filter(|r| r.status() == 200).count() as u64;
    let limited: Vec<_> = answers.iter().filter(|r| r.status() == 429).collect();
    assert_eq!(
        allowed, N,
        "team red: {allowed} allowed of 30, want exactly {N}"
    );
    assert_eq!(limited.len() as u64, 30 - N);
    assert!(
        limited
            .iter()
            .all(|r| support::header(r, "retry-after").parse::<u64>().is_ok()),
        "a 429 without a usable Retry-After"
    );
    for replica in [&a, &b] {
        assert_eq!(replica.chat("m", &[("x-team", "blue")]).await.status(), 200);
    }
    assert_eq!(up.hits("/v1/chat/completions") as u64, N + 2);
    // Each rate-limit check was one Redis round trip and nothing else on the request path
    // was: 32 chats, and each replica's `/metrics` scrape (the policy runs for it too).
    let trips = a.metric("aigw_state_request_path_round_trips_total").await
        + b.metric("aigw_state_request_path_round_trips_total").await;
    assert_eq!(
        trips,
        32.0 + 2.0,
        "{}\n{}",
        a.state_metrics().await,
        b.state_metrics().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_loses_no_request_and_is_picked_up_when_it_returns() {
    let port = free_port();
    let redis = Redis::start(port);
    let up = StandIn::start(Kind::OpenAi).await.with_models(&["m"]);
    let policy = policy(&rate_rule(1_000_000), &[("oa", "m")]);
    let args = [&base_url("oa", &up)[..], &state(&redis)[..]].concat();
    let (a, b) = (
        Replica::start(&policy, &args),
        Replica::start(&policy, &args),
    );
    a.wait_link(true).await;
    b.wait_link(true).await;

    // Four clients keep sending through both replicas while Redis goes away.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let urls = [a.url("/v1/chat/completions"), b.url("/v1/chat/completions")];
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut i = c;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let r = support::client()
                    .post(&urls[i % 2])
                    .header("x-team", "red")
                    .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await;
                statuses.push(r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()));
                i += 1;
            }
            statuses
        }));
    }
    let wait_hits = |n: usize| {
        let up = &up;
        async move {
            let deadline = Instant::now() + PATIENCE;
            while up.hits("/v1/chat/completions") < n {
                assert!(Instant::now() < deadline, "the load did not get going");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_hits(40).await;
    redis.kill();
    a.wait_link(false).await;
    b.wait_link(false).await;
    let h = a.healthz().await;
    assert_eq!(h["status"], "ok", "{h}");
    assert!(
        h["state"]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "/healthz does not say why the link is down: {h}"
    );
    let during = up.hits("/v1/chat/completions");
    wait_hits(during + 40).await;

    let redis = Redis::start(port);
    a.wait_link(true).await;
    b.wait_link(true).await;
    let after = up.hits("/v1/chat/completions");
    wait_hits(after + 40).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut total = 0;
    for c in clients {
        for s in c.await.unwrap() {
            assert_eq!(s, Ok(200), "a request was lost while Redis came and went");
            total += 1;
        }
    }
    assert!(total >= 120, "{total}");
    // Requests went on locally meanwhile, and go to Redis again now.
    assert!(
        a.metric("aigw_state_local_fallbacks_total").await
            + b.metric("aigw_state_local_fallbacks_total").await
            > 0.0
    );
    // One trip for the chat, one for the scrape that reads the counter. A check that timed
    // out on a loaded machine takes the link down until the sync task reconnects (and counts
    // locally meanwhile): measure on a link that stayed up throughout.
    let mut trips = None;
    for _ in 0..5 {
        a.wait_link(true).await;
        let local = a.metric("aigw_state_local_fallbacks_total").await;
        let before = a.metric("aigw_state_request_path_round_trips_total").await;
        assert_eq!(a.chat("m", &[("x-team", "red")]).await.status(), 200);
        let after = a.metric("aigw_state_request_path_round_trips_total").await;
        if a.metric("aigw_state_local_fallbacks_total").await == local {
            trips = Some(after - before);
            break;
        }
    }
    assert_eq!(trips, Some(2.0), "{}", a.output());
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_stream_in_flight_finish_with_done_and_exits_zero() {
    let up = StandIn::start(Kind::OpenAi)
        .await
        .with_models(&["slow"])
        .with_chunk_delay(Duration::from_millis(100));
    let policy = policy("", &[("oa", "slow")]);
    let mut replica = Replica::start(&policy, &base_url("oa", &up));
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(replica.url("/v1/chat/completions"))
        .json(&json!({"model": "slow", "stream": true, "messages": [{"role": "user", "content": "a b c d e f g h i j"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut text = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();

    let killed = Command::new("kill")
        .args(["-TERM", &replica.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert_eq!(
        text.trim_end().lines().last(),
        Some("data: [DONE]"),
        "{text}"
    );
    assert!(!text.contains("\"error\""), "{text}");

    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(s) = replica.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "aigw serve did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "{}", replica.output());
    assert!(
        read(&replica.stderr).contains("draining"),
        "{}",
        replica.output()
    );
}
