//! The `/ui` status page: `state.json` against stand-in providers (providers, circuits, recent
//! requests, strategy counts, nothing secret, the inbound token), and the page itself in
//! Debian's headless Chromium driven by Playwright's Python client
//! (`tests/e2e/test_ui.py`; needs `apt-get install chromium` and
//! `pip install -r tests/e2e/requirements.txt`, which `tests/setup.sh` does).

#[path = "gateway_support/mod.rs"]
mod support;

use std::time::Duration;

use aigw::gateway::GatewayOptions;
use aigw::gateway::attempts::breaker::BreakerOptions;
use serde_json::{Value, json};
use support::standin::{Fault, Kind, StandIn};

const POLICY: &str = r#"
on_http_request:
  - type: ai-gateway
    config:
      only_allow_configured_providers: true
      only_allow_configured_models: true
      per_request_timeout: 30s
      providers:
        - id: primary
          base_url: "https://primary.internal"
          models:
            - id: chat
        - id: backup
          base_url: "https://backup.internal"
          api_keys:
            - value: ${secrets.get('backup', 'key')}
          models:
            - id: chat
      model_selection:
        strategy:
          - "ai.models.filter(m, m.provider_id == 'nowhere')"
          - "ai.models"
"#;

const SECRET: &str = "sk-backup-secret-value-98765";

/// A failing primary and a working backup for one model name; the breaker opens after two
/// failures.
async fn start(auth_token: Option<&str>) -> (support::Started, StandIn, StandIn) {
    let primary = StandIn::start(Kind::OpenAi)
        .await
        .with_label("primary")
        .with_models(&["chat"]);
    primary.set_fault(Some(Fault::status(500)));
    let backup = StandIn::start(Kind::OpenAi)
        .await
        .with_label("backup")
        .with_models(&["chat"]);
    let gw = support::start_policy(
        POLICY,
        &[("primary", primary.url()), ("backup", backup.url())],
        &[("AIGW_SECRET_BACKUP_KEY", SECRET)],
        GatewayOptions {
            auth_token: auth_token.map(String::from),
            breaker: BreakerOptions {
                failures: 2,
                cooldown: Duration::from_secs(600),
            },
            // One failure per request (ngrok's "never the same pair twice"), so the counts
            // below are one per request.
            retry: aigw::gateway::attempts::failure::RetryOptions {
                same_pair_retries: 0,
                ..Default::default()
            },
            ..GatewayOptions::default()
        },
    )
    .await;
    (gw, primary, backup)
}

async fn state(gw: &support::Started) -> Value {
    let resp = support::client()
        .get(gw.url("/ui/state.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(!text.contains(SECRET), "a key in the state: {text}");
    serde_json::from_str(&text).unwrap()
}

fn model<'a>(s: &'a Value, provider: &str, model: &str) -> &'a Value {
    s["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == provider)
        .unwrap_or_else(|| panic!("no provider {provider} in {s:#}"))["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == model)
        .unwrap_or_else(|| panic!("no model {provider}:{model} in {s:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_json_shows_providers_circuits_recent_requests_and_strategy_counts() {
    let (gw, primary, backup) = start(None).await;
    let page = support::client().get(gw.url("/ui")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert!(page.text().await.unwrap().contains("/ui/state.json"));

    // Before anyone watches, nothing is recorded.
    let chat = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
    let client = support::client();
    let send = || async {
        let r = client
            .post(gw.url("/v1/chat/completions"))
            .json(&chat)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    send().await;
    let s = state(&gw).await;
    assert_eq!(s["traffic"]["totals"]["requests"], 0, "{s:#}");
    assert_eq!(model(&s, "primary", "chat")["circuit"], "closed");
    assert_eq!(model(&s, "backup", "chat")["listed"], true);
    assert_eq!(s["strategies"][1]["expression"], "ai.models");
    assert_eq!(s["providers"][1]["keys"], 1);

    // Watching: the second failure of primary opens its circuit; later requests skip it.
    for _ in 0..4 {
        send().await;
    }
    let s = state(&gw).await;
    let totals = &s["traffic"]["totals"];
    assert_eq!(totals["requests"], 4, "{s:#}");
    assert_eq!(
        totals["failovers"], 1,
        "one failover before the circuit opened: {s:#}"
    );
    let p = model(&s, "primary", "chat");
    assert_eq!(p["circuit"], "open", "{s:#}");
    assert_eq!(p["consecutive_failures"], 2);
    assert!(p["retry_in_ms"].as_u64().unwrap() > 500_000);
    assert_eq!(model(&s, "backup", "chat")["requests"], 4);
    assert_eq!(s["strategies"][0]["matched"], 0);
    assert_eq!(s["strategies"][1]["matched"], 4);
    let recent = s["traffic"]["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 4);
    assert_eq!(recent[0]["chosen"], "backup:chat");
    assert_eq!(recent[0]["attempts"], 1);
    assert_eq!(recent[3]["attempts"], 2);
    assert_eq!(recent[0]["strategy"], 2);
    assert_eq!(recent[0]["status"], 200);
    assert!(
        recent[0]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("req_")
    );
    assert_eq!(s["gateway"]["in_flight"], 0);
    assert_eq!(primary.hits("/v1/chat/completions"), 2);
    assert_eq!(backup.hits("/v1/chat/completions"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_is_behind_the_inbound_token_and_the_page_is_not() {
    let (gw, _primary, _backup) = start(Some("ui-token-0123456789")).await;
    let client = support::client();
    let page = client.get(gw.url("/ui")).send().await.unwrap();
    assert_eq!(page.status(), 200, "the page holds no data");
    let refused = client.get(gw.url("/ui/state.json")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let ok = client
        .get(gw.url("/ui/state.json"))
        .bearer_auth("ui-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let text = ok.text().await.unwrap();
    assert!(!text.contains("ui-token-0123456789"));
    assert!(text.contains("\"auth_token\":true"));
}

fn browser_ready() -> Result<(), String> {
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        return Err("no /usr/bin/chromium: run `apt-get install -y chromium`".into());
    }
    support::python::modules_present("playwright.sync_api")
}

/// Headless Chromium loads `/ui`, finds both providers and their circuits, sends traffic and
/// watches the counts, the recent requests and the primary's circuit change. With
/// `AIGW_UI_SCREENSHOT=PATH` it also saves a screenshot under load (how docs/ui.png is made).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_headless_chromium_shows_traffic_live() {
    if let Err(e) = browser_ready() {
        panic!("the browser test needs Chromium and Playwright's Python client: {e}");
    }
    let (gw, _primary, _backup) = start(None).await;
    let out = support::python::run(
        "test_ui.py",
        &[],
        &[("AIGW_UI_URL", gw.url(""))],
        Duration::from_secs(240),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("ui: ok"), "{stdout}\n{stderr}");
}
