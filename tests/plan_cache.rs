//! `Engine::plan_shared`, what serve plans with, checked by what it does rather than by how
//! it decides: a shared plan is always the plan made fresh for that request and seed; a policy
//! that draws no random numbers is planned once per distinct request; a strategy that draws
//! random numbers (model or key selection) is drawn afresh for every request.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use aigw::policy;
use aigw::routing::engine::{Engine, EngineOptions};
use aigw::routing::plan::{Plan, PlanOptions, Request};

fn engine(name: &str, text: &str) -> Option<Engine> {
    let loaded = policy::load_str(name, text);
    Engine::build(&loaded, EngineOptions::default())
        .ok()
        .map(|(e, _)| e)
}

fn built(name: &str, text: &str) -> Engine {
    engine(name, text).unwrap_or_else(|| panic!("{name} does not build"))
}

fn request(model: Option<&str>, models: &[&str]) -> Request {
    Request {
        path: "/v1/chat/completions".into(),
        model: model.map(String::from),
        models: models.iter().map(|m| m.to_string()).collect(),
    }
}

/// The whole plan (route, requested models, strategy steps, attempts, left-out, error).
fn json(plan: &Plan) -> serde_json::Value {
    serde_json::to_value(plan).unwrap()
}

fn policies() -> Vec<PathBuf> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/policies");
    let mut files = Vec::new();
    for dir in ["guide", "docs"] {
        for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn requests() -> [Request; 6] {
    [
        request(Some("llama3.2"), &[]),
        request(Some("gpt-4o"), &[]),
        request(Some("ollama:llama3.2"), &["openai:gpt-4o-mini"]),
        request(None, &[]),
        request(Some("no-such-model"), &[]),
        request(None, &["openai:gpt-4o", "ollama:llama3.2"]),
    ]
}

const RANDOM_MODELS: &str = r#"on_http_request:
  - type: ai-gateway
    config:
      providers:
        - id: a
          base_url: "http://127.0.0.1:9/v1"
          models: [{id: m1}, {id: m2}, {id: m3}, {id: m4}]
      model_selection:
        strategy:
          - "ai.models.filter(m, m.provider_id == 'a').randomize()"
"#;

const RANDOM_KEYS: &str = r#"on_http_request:
  - type: ai-gateway
    config:
      providers:
        - id: a
          base_url: "http://127.0.0.1:9/v1"
          models: [{id: m1}]
          api_keys:
            - value: k1
            - value: k2
            - value: k3
            - value: k4
      api_key_selection:
        strategy:
          - "ai.keys.randomize()"
"#;

#[test]
fn a_shared_plan_is_the_plan_made_fresh_for_every_policy_request_and_seed() {
    let mut engines = 0;
    for file in policies() {
        let name = file.display().to_string();
        let Some(e) = engine(&name, &std::fs::read_to_string(&file).unwrap()) else {
            continue;
        };
        engines += 1;
        // Twice round: the second round is served from the cache where there is one.
        for round in 0..2 {
            for (i, req) in requests().iter().enumerate() {
                for seed in [0, 1, i as u64 + 7] {
                    let opts = PlanOptions { seed };
                    let shared = e.plan_shared(req, opts);
                    assert_eq!(
                        json(&shared),
                        json(&e.plan_untraced(req, opts)),
                        "{name}, round {round}, {req:?}, seed {seed}"
                    );
                    if e.caches_plans() {
                        let again = e.plan_shared(req, opts);
                        assert!(
                            Arc::ptr_eq(&shared, &again),
                            "{name} {req:?}: planned twice"
                        );
                    }
                }
            }
        }
    }
    assert!(engines >= 20, "only {engines} documented policies build");
}

#[test]
fn a_policy_without_random_draws_plans_each_distinct_request_once() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/policies/guide/03-failover-to-openai.yaml"
    );
    let e = built(path, &std::fs::read_to_string(path).unwrap());
    assert!(e.caches_plans());
    let local = request(Some("llama3.2"), &[]);
    let cloud = request(Some("gpt-4o"), &[]);
    let first = e.plan_shared(&local, PlanOptions { seed: 1 });
    let other = e.plan_shared(&cloud, PlanOptions { seed: 1 });
    // The same request again, with another seed (which a deterministic policy ignores).
    let again = e.plan_shared(&local, PlanOptions { seed: 2 });
    assert!(Arc::ptr_eq(&first, &again), "planned twice");
    assert!(!Arc::ptr_eq(&first, &other));
    assert_eq!(first.order(), vec!["ollama:llama3.2"]);
    assert_eq!(other.order(), vec!["openai:gpt-4o"]);
}

#[test]
fn random_model_and_key_strategies_are_drawn_afresh_for_every_request() {
    for (name, text) in [
        ("random-models.yaml", RANDOM_MODELS),
        ("random-keys.yaml", RANDOM_KEYS),
    ] {
        let e = built(name, text);
        assert!(!e.caches_plans(), "{name}");
        let req = request(None, &[]);
        let mut drawn = BTreeSet::new();
        for seed in 0..64 {
            let opts = PlanOptions { seed };
            let shared = json(&e.plan_shared(&req, opts));
            assert_eq!(shared, json(&e.plan_untraced(&req, opts)), "{name} {seed}");
            drawn.insert(shared["attempts"].to_string());
        }
        assert!(
            drawn.len() > 1,
            "{name}: every seed gave the same plan: {drawn:?}"
        );
    }
}
