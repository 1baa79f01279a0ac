//! End to end with the official Python clients: starts stand-in providers and the gateway
//! in-process, then runs `python3 tests/e2e/test_clients.py` against it (openai + ollama SDKs:
//! chat, streaming, models.list, embeddings, SDK-typed errors (a provider's context-length 400, a
//! stream cut mid-answer, a stream with a malformed event), Ollama chat/stream/list/embed,
//! streams cut midway and continued by the next candidate (openai and ollama SDKs), and the
//! traffic policy's guards as the openai SDK meets them (401, 429 with retry-after).
//!
//! Needs `pip install -r tests/e2e/requirements.txt`; without the packages this test fails and
//! says so (CI installs them).

#[path = "gateway_support/mod.rs"]
mod support;

use std::time::Duration;

use aigw::gateway::GatewayOptions;
use support::standin::{Fault, Kind, StandIn};

const POLICY: &str = r#"
on_http_request:
  - type: ai-gateway
    config:
      only_allow_configured_providers: true
      per_request_timeout: 30s
      providers:
        - id: local
          base_url: "https://local.internal"
          models:
            - id: test-chat
            - id: test-embed
        - id: broken
          base_url: "https://broken.internal"
          models:
            - id: broken-model
        - id: ollama
          base_url: "https://ollama.internal"
          models:
            - id: llama3.2
        - id: toolong
          base_url: "https://toolong.internal"
          models:
            - id: too-long
        - id: faulty
          base_url: "https://faulty.internal"
          models:
            - id: cut-stream
        - id: garbled
          base_url: "https://garbled.internal"
          models:
            - id: garbled-stream
        - id: cutter
          base_url: "https://cutter.internal"
          models:
            - id: cont-chat
        - id: rescuer
          base_url: "https://rescuer.internal"
          models:
            - id: cont-chat
        - id: ollama-cutter
          base_url: "https://ollama-cutter.internal"
          models:
            - id: llama-cont
        - id: ollama-rescuer
          base_url: "https://ollama-rescuer.internal"
          models:
            - id: llama-cont
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_clients_work_through_the_gateway() {
    if let Err(e) = support::python::modules_present("openai, ollama") {
        panic!(
            "the Python e2e test needs the official clients: run `pip install -r tests/e2e/requirements.txt`\n({e})"
        );
    }
    let local = support::openai_standin("local", &["test-chat", "test-embed"]).await;
    let broken = support::openai_standin("broken", &["broken-model"]).await;
    broken.set_fault(Some(Fault::status(500)));
    // One stand-in per fault that must hold for every request the SDK sends.
    let faulty = support::openai_standin("faulty", &["cut-stream"]).await;
    faulty.set_fault(Some(Fault::StreamCutAfter(3)));
    let toolong = support::openai_standin("toolong", &["too-long"]).await;
    toolong.set_fault(Some(Fault::ContextLengthExceeded));
    let garbled = support::openai_standin("garbled", &["garbled-stream"]).await;
    garbled.set_fault(Some(Fault::MalformedChunkAt(2)));
    let ollama = StandIn::start(Kind::Ollama)
        .await
        .with_models(&["llama3.2"]);
    // Continuation: `cont-chat` is cut after "[cutter] you" and continued by `rescuer`;
    // `llama-cont` likewise on two Ollama boxes.
    let cutter = support::openai_standin("cutter", &["cont-chat"]).await;
    cutter.set_fault(Some(Fault::StreamCutAfter(3)));
    let rescuer = support::openai_standin("rescuer", &["cont-chat"]).await;
    let ollama_cutter = StandIn::start(Kind::Ollama)
        .await
        .with_label("ollama-cutter")
        .with_models(&["llama-cont"]);
    ollama_cutter.push_fault_on("/api/chat", Fault::StreamCutAfter(2));
    let ollama_rescuer = StandIn::start(Kind::Ollama)
        .await
        .with_label("ollama-rescuer")
        .with_models(&["llama-cont"]);
    let gw = support::start_policy(
        POLICY,
        &[
            ("local", local.url()),
            ("broken", broken.url()),
            ("ollama", ollama.url()),
            ("faulty", faulty.url()),
            ("toolong", toolong.url()),
            ("garbled", garbled.url()),
            ("cutter", cutter.url()),
            ("rescuer", rescuer.url()),
            ("ollama-cutter", ollama_cutter.url()),
            ("ollama-rescuer", ollama_rescuer.url()),
        ],
        &[],
        GatewayOptions::default(),
    )
    .await;
    let out = support::python::run(
        "test_clients.py",
        &[],
        &[
            ("AIGW_E2E_URL", gw.url("")),
            ("AIGW_E2E_CHAT_MODEL", "local:test-chat".into()),
            ("AIGW_E2E_EMBED_MODEL", "local:test-embed".into()),
            ("AIGW_E2E_FAIL_MODEL", "broken:broken-model".into()),
            ("AIGW_E2E_OLLAMA_MODEL", "llama3.2".into()),
            ("AIGW_E2E_TOOLONG_MODEL", "toolong:too-long".into()),
            ("AIGW_E2E_CUT_MODEL", "faulty:cut-stream".into()),
            ("AIGW_E2E_GARBLED_MODEL", "garbled:garbled-stream".into()),
            ("AIGW_E2E_CONT_MODEL", "cont-chat".into()),
            ("AIGW_E2E_OLLAMA_CONT_MODEL", "llama-cont".into()),
        ],
        Duration::from_secs(300),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "Python e2e failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}\n{stderr}");
    // The SDKs' traffic really went through the gateway to the stand-ins.
    assert!(local.hits("/v1/chat/completions") >= 3);
    assert!(local.hits("/v1/embeddings") >= 1);
    assert!(broken.hits("/v1/chat/completions") >= 1);
    assert!(ollama.hits("/api/chat") >= 2);
    assert_eq!(
        toolong.hits("/v1/chat/completions"),
        1,
        "a context-length refusal is not retried"
    );
    assert_eq!(faulty.hits("/v1/chat/completions"), 1);
    assert_eq!(garbled.hits("/v1/chat/completions"), 1);
    assert_eq!(cutter.hits("/v1/chat/completions"), 1);
    assert_eq!(rescuer.hits("/v1/chat/completions"), 1, "continued once");
    assert_eq!(ollama_cutter.hits("/api/chat"), 1);
    assert_eq!(ollama_rescuer.hits("/api/chat"), 1, "continued once");
    let prefill = |up: &StandIn| {
        up.requests()
            .iter()
            .rev()
            .find(|r| r.path.ends_with("/chat/completions") || r.path == "/api/chat")
            .and_then(|r| r.json.clone())
            .map(|j| j["messages"].as_array().unwrap().last().unwrap().clone())
            .unwrap()
    };
    assert_eq!(
        prefill(&rescuer),
        serde_json::json!({"role": "assistant", "content": "[cutter] you"})
    );
    assert_eq!(
        prefill(&ollama_rescuer),
        serde_json::json!({"role": "assistant", "content": "[ollama-cutter] you"})
    );
}

/// ngrok's BYOK guard recipes (token list, rate limit per key, response-phase headers) met by
/// the official `openai` client: its typed errors are what a guarded gateway's users see.
const GUARDED: &str = r#"
on_http_request:
  - actions:
      - type: set-vars
        config:
          vars:
            - keys: ["Bearer ${secrets.get('team', 'a')}", "Bearer ${secrets.get('team', 'b')}"]
  - expressions:
      - "!(getReqHeader('Authorization').exists(h, h in vars.keys))"
    actions:
      - type: custom-response
        config:
          status_code: 401
          headers:
            content-type: application/json
          body: '{"error": {"message": "Unauthorized: unknown token", "type": "authentication_error"}}'
  - actions:
      - type: rate-limit
        config:
          name: per-token
          algorithm: sliding_window
          capacity: 2
          rate: 60s
          bucket_key: ["getReqHeader('Authorization')"]
      - type: ai-gateway
        config:
          only_allow_configured_providers: true
          providers:
            - id: local
              base_url: "https://local.internal"
              models:
                - id: test-chat
on_http_response:
  - actions:
      - type: add-headers
        config:
          headers:
            x-policy: guarded
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_client_meets_the_policy_guards() {
    if let Err(e) = support::python::modules_present("openai, ollama") {
        panic!(
            "the Python e2e test needs the official clients: run `pip install -r tests/e2e/requirements.txt`\n({e})"
        );
    }
    let local = StandIn::start(Kind::OpenAi)
        .await
        .with_models(&["test-chat"]);
    let gw = support::start_policy(
        GUARDED,
        &[("local", local.url())],
        &[
            ("AIGW_SECRET_TEAM_A", "tok-team-a-1"),
            ("AIGW_SECRET_TEAM_B", "tok-team-b-2"),
        ],
        GatewayOptions::default(),
    )
    .await;
    let out = support::python::run(
        "test_policy_guards.py",
        &[],
        &[
            ("AIGW_E2E_URL", gw.url("")),
            ("AIGW_E2E_CHAT_MODEL", "local:test-chat".into()),
            ("AIGW_E2E_TOKEN_A", "tok-team-a-1".into()),
            ("AIGW_E2E_TOKEN_B", "tok-team-b-2".into()),
        ],
        Duration::from_secs(300),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains(" 0 failed"),
        "Python guard e2e failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Refused requests never reached the provider: one for token A, two for token B.
    assert_eq!(local.hits("/v1/chat/completions"), 3);
}
