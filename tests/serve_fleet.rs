//! Many Ollamas (issue 19): three Ollama stand-ins behind one policy — `gpu-a` down (nothing
//! listens on its port), `gpu-b` up without `llama3.2`, `gpu-c` up with it — and the real engine,
//! health checks and admission. The ids say nothing of Ollama: the boxes are known by answering
//! Ollama's API.

#[path = "gateway_support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aigw::gateway::fleet::{self, Health, check::CheckOptions};
use aigw::gateway::{Gateway, GatewayOptions};
use serde_json::{Value, json};
use support::standin::{self, Kind, StandIn};
use support::{Started, client, factory, start_with};

const POLICY: &str = r#"
on_http_request:
  - type: ai-gateway
    config:
      providers:
        - id: gpu-a
          base_url: "$A"
          models: [{id: llama3.2}]
        - id: gpu-b
          base_url: "$B"
          models: [{id: llama3.2}]
        - id: gpu-c
          base_url: "$C"
          models: [{id: llama3.2}]
"#;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Fleet {
    a_addr: SocketAddr,
    b: StandIn,
    c: StandIn,
    gw: Started,
}

fn checks() -> CheckOptions {
    CheckOptions {
        interval: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        timeout: Duration::from_secs(5),
    }
}

async fn fleet() -> Fleet {
    let a_addr = free_addr();
    let b = StandIn::start(Kind::Ollama)
        .await
        .with_label("gpu-b")
        .with_models(&["qwen3:8b"]);
    let c = StandIn::start(Kind::Ollama)
        .await
        .with_label("gpu-c")
        .with_models(&["llama3.2", "mistral"]);
    let yaml = POLICY
        .replace("$A", &format!("http://{a_addr}"))
        .replace("$B", &b.url())
        .replace("$C", &format!("{}/v1", c.url()));
    let f = Arc::new(factory(&[], &[]));
    let loaded = aigw::policy::load_str("policy.yaml", &yaml);
    let (routing, _) = f.build(&loaded, Default::default()).unwrap();
    let opts = GatewayOptions {
        upstream_loopback_only: true,
        ..GatewayOptions::default()
    };
    let gw = start_with(routing, opts, support::secret_store(&[])).await;
    f.set_fleet(gw.gw.fleet.state.clone(), checks().interval);
    let hook = f.clone().rediscoverer(gw.gw.clone());
    fleet::start(gw.gw.clone(), checks(), Some(hook)).await;
    Fleet { a_addr, b, c, gw }
}

async fn chat(gw: &Started, path: &str, model: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let body = if path.starts_with("/api/") {
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": false})
    } else {
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    };
    let r = client()
        .post(gw.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

fn openai_message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits (generously) until `done` holds for the gateway's fleet.
async fn until(gw: &Gateway, what: &str, done: impl Fn(&fleet::FleetSnapshot) -> bool) {
    let start = Instant::now();
    while !done(&gw.fleet.state.snapshot()) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}: {:?}",
            gw.fleet.state.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn requests_go_only_to_boxes_that_are_up_and_have_the_model() {
    let f = fleet().await;
    let snap = f.gw.gw.fleet.state.snapshot();
    let health: Vec<(&str, Health, bool)> = snap
        .boxes
        .iter()
        .map(|b| (b.provider.as_str(), b.health, b.ollama))
        .collect();
    assert_eq!(
        health,
        [
            ("gpu-a", Health::Down, false),
            ("gpu-b", Health::Healthy, true),
            ("gpu-c", Health::Healthy, true)
        ]
    );
    for _ in 0..3 {
        let (status, headers, body) = chat(&f.gw, "/v1/chat/completions", "llama3.2").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-aigw-provider"], "gpu-c");
        assert_eq!(
            headers["x-aigw-attempts"], "1",
            "a down box costs no attempt"
        );
    }
    assert_eq!(f.b.hits("/v1/chat/completions"), 0);
    // The Ollama-native route, to boxes known as Ollama by their answers.
    let (status, headers, body) = chat(&f.gw, "/api/chat", "llama3.2:latest").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-aigw-provider"], "gpu-c");
    assert_eq!(f.c.hits("/api/chat"), 1);
}

#[tokio::test]
async fn installed_but_unlisted_models_route_by_plain_name_and_latest() {
    let f = fleet().await;
    for (path, model) in [
        ("/v1/chat/completions", "mistral"),
        ("/v1/chat/completions", "mistral:latest"),
        ("/api/chat", "mistral"),
        ("/api/chat", "mistral:latest"),
        ("/v1/chat/completions", "qwen3:8b"),
    ] {
        let (status, headers, body) = chat(&f.gw, path, model).await;
        assert_eq!(status, 200, "{path} {model}: {body}");
        let want = if model.starts_with("qwen") {
            "gpu-b"
        } else {
            "gpu-c"
        };
        assert_eq!(headers["x-aigw-provider"], want, "{path} {model}");
    }
}

#[tokio::test]
async fn a_model_no_box_has_is_404_with_ollama_pull() {
    let f = fleet().await;
    let (status, headers, body) = chat(&f.gw, "/v1/chat/completions", "qwen2.5").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(headers["ngrok-error-code"], "AIGW_MODEL_NOT_INSTALLED");
    let msg = openai_message(&body);
    assert!(
        msg.contains("model 'qwen2.5' is not installed on any Ollama box"),
        "{msg}"
    );
    assert!(msg.contains("run `ollama pull qwen2.5`"), "{msg}");
    assert!(
        msg.contains(&format!("gpu-a at http://{}", f.a_addr)),
        "{msg}"
    );
    let (status, _, body) = chat(&f.gw, "/api/chat", "qwen2.5").await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("`ollama pull qwen2.5`"),
        "{body}"
    );
}

#[tokio::test]
async fn every_box_with_the_model_down_is_503_naming_each_address() {
    let f = fleet().await;
    let c_url = f.c.url();
    f.c.stop().await;
    until(&f.gw.gw, "gpu-c down", |s| {
        s.get("gpu-c").is_some_and(|b| b.health == Health::Down)
    })
    .await;
    let (status, _, body) = chat(&f.gw, "/v1/chat/completions", "llama3.2").await;
    assert_eq!(status, 503, "{body}");
    let msg = openai_message(&body);
    assert!(
        msg.contains(&format!("gpu-a at http://{}", f.a_addr)),
        "{msg}"
    );
    assert!(msg.contains(&format!("gpu-c at {c_url}")), "{msg}");
    assert!(msg.contains("connection refused"), "{msg}");
    assert!(msg.contains("Run `aigw probe`"), "{msg}");
    assert!(!msg.contains("gpu-b at"), "gpu-b lacks the model: {msg}");
}

#[tokio::test]
async fn readyz_turns_200_when_the_last_box_comes_up_and_metrics_show_health() {
    let f = fleet().await;
    let r = client().get(f.gw.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["boxes_down"][0]["provider"], "gpu-a");
    assert_eq!(body["boxes_down"].as_array().unwrap().len(), 1);
    assert_eq!(body["models_missing"], json!([]));
    let metrics = client()
        .get(f.gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("aigw_provider_health{provider=\"gpu-a\",state=\"down\"} 1"));
    assert!(metrics.contains("aigw_provider_health{provider=\"gpu-c\",state=\"healthy\"} 1"));
    // /healthz is liveness only.
    let r = client().get(f.gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let a = StandIn::start_on(Kind::Ollama, f.a_addr)
        .await
        .unwrap()
        .with_label("gpu-a");
    until(&f.gw.gw, "gpu-a up", |s| {
        s.get("gpu-a").is_some_and(|b| b.health == Health::Healthy)
    })
    .await;
    let r = client().get(f.gw.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"ready": true, "boxes_down": [], "models_missing": []})
    );
    let (status, headers, _) = chat(&f.gw, "/v1/chat/completions", "llama3.2").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-aigw-provider"], "gpu-a", "back in config order");
    a.stop().await;
}

/// The status page's state shows what the health checks learnt: each box's health (with why
/// it is down), what it has installed and loaded, and its requests in flight and queued.
#[tokio::test]
async fn the_status_page_shows_each_boxs_health_installed_models_and_load() {
    let f = fleet().await;
    until(&f.gw.gw, "gpu-a down and gpu-c healthy", |s| {
        s.get("gpu-a").is_some_and(|b| b.health == Health::Down)
            && s.get("gpu-c").is_some_and(|b| b.health == Health::Healthy)
    })
    .await;
    let state: Value = client()
        .get(f.gw.url("/ui/state.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let provider = |id: &str| {
        state["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap_or_else(|| panic!("no provider {id} in {state}"))
            .clone()
    };
    let a = provider("gpu-a");
    assert_eq!(a["health"], "down", "{a}");
    assert!(
        a["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{a}"
    );
    let c = provider("gpu-c");
    assert_eq!(c["health"], "healthy", "{c}");
    let installed: Vec<&str> = c["installed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(installed.iter().any(|m| m.starts_with("llama3.2")), "{c}");
    assert!(installed.iter().any(|m| m.starts_with("mistral")), "{c}");
    assert!(c["loaded"].is_array(), "{c}");
    assert_eq!(c["in_flight"], 0);
    assert_eq!(c["queued"], 0);
    let b = provider("gpu-b");
    assert!(
        b["installed"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| !m.as_str().unwrap().starts_with("llama3.2")),
        "{b}"
    );
}

/// A slow box limited to one request at a time: the rest wait in order (never two upstream at
/// once), the queue holds two, and past it clients get 429 with Retry-After.
#[tokio::test]
async fn a_limited_box_queues_and_past_the_queue_answers_429() {
    let slow = StandIn::start(Kind::Ollama)
        .await
        .with_label("slow")
        .with_models(&["llama3.2"]);
    slow.set_fault(Some(standin::Fault::DelayHeaders(Duration::from_secs(2))));
    let yaml = "on_http_request:\n  - type: ai-gateway\n    config:\n      providers:\n        - id: slow\n          base_url: \"$S\"\n          models: [{id: llama3.2}]\n"
        .replace("$S", &slow.url());
    let opts = GatewayOptions {
        limits: fleet::limit::LimitOptions {
            max_in_flight: [("slow".to_string(), 1)].into(),
            queue_depth: 2,
            queue_timeout: Duration::from_secs(60),
        },
        ..GatewayOptions::default()
    };
    let gw = support::start_policy(&yaml, &[], &[], opts).await;
    let sends = (0..5).map(|_| chat(&gw, "/v1/chat/completions", "llama3.2"));
    let answers = futures_util::future::join_all(sends).await;
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for (status, headers, body) in answers {
        match status {
            200 => ok.push(
                headers["x-aigw-queue-ms"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            ),
            429 => {
                let after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(after >= 1, "{after}");
                assert_eq!(headers["ngrok-error-code"], "AIGW_QUEUE_FULL");
                let msg = openai_message(&body);
                assert!(msg.contains("a full queue (--queue-depth)"), "{msg}");
                assert!(msg.contains("Retry after"), "{msg}");
                refused.push(after);
            }
            s => panic!("unexpected {s}: {body}"),
        }
    }
    assert_eq!(
        (ok.len(), refused.len()),
        (3, 2),
        "one in flight, two queued"
    );
    assert_eq!(slow.max_concurrent("/v1/chat/completions"), 1);
    ok.sort();
    assert!(ok[2] >= 1000, "the last one waited for two answers: {ok:?}");
    let metrics = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("aigw_queue_wait_seconds_count 3"),
        "{metrics}"
    );
    assert!(metrics.contains("aigw_queue_rejected_total{provider=\"slow\"} 2"));
    assert!(metrics.contains("aigw_in_flight{provider=\"slow\"} 0"));
}

/// `aigw explain --live` checks the boxes as serve does and shows why each was left out.
#[tokio::test]
async fn explain_live_leaves_out_down_boxes_and_boxes_without_the_model() {
    let f = fleet().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    let yaml = POLICY
        .replace("$A", &format!("http://{}", f.a_addr))
        .replace("$B", &f.b.url())
        .replace("$C", &format!("{}/v1", f.c.url()));
    std::fs::write(&policy, yaml).unwrap();
    let run = |model: &'static str| {
        let policy = policy.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_aigw"))
                .args(["explain", "--live", "--color", "never", "--model", model])
                .arg("--policy")
                .arg(&policy)
                .env("NO_COLOR", "1")
                .output()
                .unwrap()
        })
    };
    let out = run("llama3.2").await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("gpu-a http://{} down: cannot connect", f.a_addr)),
        "{text}"
    );
    assert!(text.contains("does not have llama3.2 installed"), "{text}");
    assert!(text.contains("→ gpu-c:llama3.2"), "{text}");
    let out = run("qwen2.5").await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ollama pull qwen2.5"), "{text}");
}

/// `--keep-warm`: a load-only request per model on each box that has it, never while a real
/// request runs on that model.
#[tokio::test]
async fn keep_warm_loads_idle_models_only() {
    let f = fleet().await;
    let keep = Duration::from_secs(600);
    let gw = &f.gw.gw;
    let warmed = fleet::warm::round(gw, keep).await;
    assert_eq!(warmed, [("gpu-c".to_string(), "llama3.2".to_string())]);
    let load =
        f.c.requests()
            .into_iter()
            .find(|r| r.path == "/api/generate")
            .unwrap();
    assert_eq!(load.json.as_ref().unwrap()["keep_alive"], json!(600));
    assert_eq!(load.json.as_ref().unwrap()["model"], "llama3.2");
    assert_eq!(f.b.hits("/api/generate"), 0, "gpu-b lacks the model");

    // A slow real request on the model: no warm-up competes with it.
    f.c.push_fault_on(
        "/v1/chat/completions",
        standin::Fault::DelayHeaders(Duration::from_secs(2)),
    );
    let started = f.gw.url("/v1/chat/completions");
    let busy = tokio::spawn(async move {
        client()
            .post(started)
            .json(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
            .status()
    });
    let t = Instant::now();
    while gw.fleet.limits.in_flight_model("gpu-c", "llama3.2") == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the request never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fleet::warm::round(gw, keep).await.is_empty());
    assert_eq!(f.c.hits("/api/generate"), 1);
    assert_eq!(busy.await.unwrap(), 200);
    assert_eq!(fleet::warm::round(gw, keep).await.len(), 1);
    assert_eq!(gw.fleet.warmed.count("gpu-c"), 2);
    let metrics = client()
        .get(f.gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("aigw_keep_warm_total{provider=\"gpu-c\"} 2"),
        "{metrics}"
    );
}

/// The 404 (a model no box has) and the 503 (every box with the model down) as the official
/// `openai` and `ollama` Python clients raise them: their types, statuses and messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_raise_the_404_and_503_with_what_to_do() {
    if let Err(e) = support::python::modules_present("openai, ollama") {
        panic!("this test needs the official Python clients: {e}");
    }
    let f = fleet().await;
    let url = f.gw.url("");
    let run = |model: &'static str, calls: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut args = vec![model];
            args.extend_from_slice(calls);
            let out = support::python::run(
                "fleet_errors.py",
                &args,
                &[("AIGW_E2E_URL", url)],
                Duration::from_secs(120),
            )
            .await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "fleet_errors.py failed:\n{stderr}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let mut transcript = String::from("# qwen2.5: installed on no box\n");
    transcript += &run(
        "qwen2.5",
        &[
            "openai-chat",
            "openai-stream",
            "ollama-chat",
            "ollama-generate",
        ],
    )
    .await;
    let (b_url, c_url) = (f.b.url(), f.c.url());
    f.c.stop().await;
    until(&f.gw.gw, "gpu-c down", |s| {
        s.get("gpu-c").is_some_and(|b| b.health == Health::Down)
    })
    .await;
    transcript += "\n# llama3.2: every box that has it is down\n";
    transcript += &run(
        "llama3.2",
        &["openai-chat", "openai-stream", "ollama-chat", "ollama-list"],
    )
    .await;
    let transcript = transcript
        .replace(&format!("http://{}", f.a_addr), "http://GPU_A")
        .replace(&b_url, "http://GPU_B")
        .replace(&c_url, "http://GPU_C");
    insta::with_settings!({snapshot_path => "../snapshots/serve", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("errors-fleet-python-clients", transcript);
    });
}

/// First-byte limits (issue 18): a stream with somewhere else to go leaves a silent box after
/// the stream default, unless the box is loading the model (not in `/api/ps`), which gets the
/// cold-start budget; a non-streaming answer is waited for.
#[tokio::test]
async fn a_cold_model_gets_its_load_time_and_a_warm_silent_one_is_left() {
    let primary = StandIn::start(Kind::Ollama)
        .await
        .with_label("primary")
        .with_models(&["llama3.2"]);
    let fallback = StandIn::start(Kind::Ollama)
        .await
        .with_label("fallback")
        .with_models(&["llama3.2"]);
    let yaml = format!(
        "on_http_request:\n  - type: ai-gateway\n    config:\n      providers:\n        - id: primary\n          base_url: \"{}\"\n          models: [{{id: llama3.2}}]\n        - id: fallback\n          base_url: \"{}\"\n          models: [{{id: llama3.2}}]\n",
        primary.url(),
        fallback.url()
    );
    let f = Arc::new(factory(&[], &[]));
    let loaded = aigw::policy::load_str("policy.yaml", &yaml);
    let (routing, _) = f.build(&loaded, Default::default()).unwrap();
    let opts = GatewayOptions {
        upstream_loopback_only: true,
        stream_first_byte_timeout: Duration::from_millis(500),
        cold_start_timeout: Duration::from_secs(30),
        ..GatewayOptions::default()
    };
    let gw = start_with(routing, opts, support::secret_store(&[])).await;
    f.set_fleet(gw.gw.fleet.state.clone(), checks().interval);
    fleet::start(gw.gw.clone(), checks(), None).await;
    until(&gw.gw, "both boxes checked", |s| {
        ["primary", "fallback"]
            .iter()
            .all(|p| s.get(p).is_some_and(|b| b.installed.is_some()))
    })
    .await;
    let ask = |body: Value| {
        let url = gw.url("/api/chat");
        async move {
            let r = client().post(url).json(&body).send().await.unwrap();
            let provider = r.headers()["x-aigw-provider"].to_str().unwrap().to_string();
            (r.status().as_u16(), provider, r.text().await.unwrap())
        }
    };
    let chat = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]});

    // Cold: 2 s before the first byte is the model loading, and it is waited for.
    primary.push_fault_on(
        "/api/chat",
        standin::Fault::SlowFirstChunk(Duration::from_secs(2)),
    );
    let (status, provider, text) = ask(chat.clone()).await;
    assert_eq!((status, provider.as_str()), (200, "primary"), "{text}");
    assert!(text.contains("\"done\":true"), "{text}");

    // Now loaded: the same silence is a stalled box, left for the fallback.
    until(&gw.gw, "the model loaded on primary", |s| {
        s.get("primary")
            .and_then(|b| b.has_loaded("llama3.2"))
            .unwrap_or(false)
    })
    .await;
    primary.push_fault_on(
        "/api/chat",
        standin::Fault::SlowFirstChunk(Duration::from_secs(20)),
    );
    let t0 = Instant::now();
    let (status, provider, text) = ask(chat.clone()).await;
    assert_eq!((status, provider.as_str()), (200, "fallback"), "{text}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(!text.contains("[primary]"), "{text}");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("aigw_attempts_total{provider=\"primary\",outcome=\"timeout\"} 1"),
        "{metrics}"
    );

    // Not streaming: the first byte is the whole answer, and a long one is waited for.
    primary.clear_faults();
    primary.push_fault_on(
        "/api/chat",
        standin::Fault::DelayHeaders(Duration::from_secs(2)),
    );
    let mut whole = chat.clone();
    whole["stream"] = json!(false);
    let (status, provider, text) = ask(whole).await;
    assert_eq!((status, provider.as_str()), (200, "primary"), "{text}");
}
