//! `m.metrics.*` fed from the gateway's own traffic: a strategy that filters out models with a
//! high error rate stops sending requests to a failing provider once the figures refresh.

#[path = "support/standin/mod.rs"]
mod standin;
#[path = "gateway_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use aigw::gateway::GatewayOptions;
use serde_json::json;
use standin::{Fault, Kind, StandIn};
use support::client;

const POLICY: &str = r#"
on_http_request:
  - type: ai-gateway
    config:
      only_allow_configured_providers: true
      model_selection:
        strategy:
          - "ai.models.filter(m, m.metrics.global.error_rate.total < 0.5)"
          - "ai.models"
      providers:
        - id: flaky
          base_url: "https://flaky.internal"
          models:
            - id: m
        - id: steady
          base_url: "https://steady.internal"
          models:
            - id: m
"#;

#[tokio::test]
async fn error_rates_from_live_traffic_steer_routing() {
    let flaky = StandIn::start(Kind::OpenAi)
        .await
        .with_label("flaky")
        .with_models(&["m"]);
    let steady = StandIn::start(Kind::OpenAi)
        .await
        .with_label("steady")
        .with_models(&["m"]);
    flaky.set_fault(Some(Fault::status(500)));
    let f = Arc::new(support::factory(
        &[("flaky", flaky.url()), ("steady", steady.url())],
        &[],
    ));
    let loaded = aigw::policy::load_str("policy.yaml", POLICY);
    let (routing, _) = f
        .build(&loaded, Default::default())
        .unwrap_or_else(|d| panic!("{d}"));
    let gw = support::start(routing, GatewayOptions::default()).await;
    aigw::gateway::server::reload::spawn_metrics(
        gw.gw.clone(),
        Duration::from_millis(100),
        f.clone().metrics_rebuilder(),
    );
    let ask = || async {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-aigw-attempts"].to_str().unwrap().to_string()
    };
    // No figures yet: flaky is tried first and fails over.
    assert_eq!(ask().await, "2");
    let mut direct = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if ask().await == "1" {
            direct = true;
            break;
        }
    }
    assert!(
        direct,
        "the error rate never steered requests away from the failing provider"
    );
    let before = flaky.hits("/v1/chat/completions");
    assert_eq!(ask().await, "1");
    assert_eq!(flaky.hits("/v1/chat/completions"), before);
    let snap = gw.gw.traffic.snapshot();
    let m = &snap[&("flaky".to_string(), "m".to_string())].global;
    assert_eq!(m.error_rate.total, 1.0);
    assert_eq!(m.error_rate.server, 1.0);
}
