//! `Engine::plan_shared`, what serve plans with: the same plan as `plan_untraced`, made once per
//! distinct request, except when a strategy draws random numbers.

use std::sync::Arc;

use aigw::policy;
use aigw::routing::engine::{Engine, EngineOptions};
use aigw::routing::plan::{PlanOptions, Request};

fn engine(name: &str, text: &str) -> Engine {
    let loaded = policy::load_str(name, text);
    Engine::build(&loaded, EngineOptions::default())
        .unwrap_or_else(|d| panic!("{name}: {d:?}"))
        .0
}

fn request(model: Option<&str>, models: &[&str]) -> Request {
    Request {
        path: "/v1/chat/completions".into(),
        model: model.map(String::from),
        models: models.iter().map(|m| m.to_string()).collect(),
    }
}

fn same_plan(a: &aigw::routing::plan::Plan, b: &aigw::routing::plan::Plan) -> bool {
    a.attempts == b.attempts && a.left_out == b.left_out && a.error == b.error
}

#[test]
fn every_guide_policy_plans_the_same_shared_or_not() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/policies/guide");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let requests = [
        request(Some("llama3.2"), &[]),
        request(Some("gpt-4o"), &[]),
        request(Some("ollama:llama3.2"), &["openai:gpt-4o-mini"]),
        request(None, &[]),
        request(Some("no-such-model"), &[]),
    ];
    let mut cached = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let e = engine(&file.display().to_string(), &text);
        assert_eq!(
            e.caches_plans(),
            !text.contains("random"),
            "{}",
            file.display()
        );
        cached += usize::from(e.caches_plans());
        for (i, req) in requests.iter().enumerate() {
            let opts = PlanOptions { seed: i as u64 };
            let first = e.plan_shared(req, opts);
            let again = e.plan_shared(req, opts);
            if e.caches_plans() {
                assert!(Arc::ptr_eq(&first, &again), "{} {req:?}", file.display());
                assert!(
                    same_plan(&first, &e.plan_untraced(req, opts)),
                    "{}",
                    file.display()
                );
            } else {
                assert!(
                    same_plan(&first, &e.plan_untraced(req, opts)),
                    "{}",
                    file.display()
                );
            }
        }
    }
    assert!(cached > 0, "no guide policy is deterministic?");
}

#[test]
fn a_random_strategy_is_drawn_afresh_for_every_request() {
    let text = r#"on_http_request:
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
    let e = engine("random.yaml", text);
    assert!(!e.caches_plans());
    let req = request(None, &[]);
    let firsts: std::collections::HashSet<String> = (0..64)
        .map(|seed| {
            e.plan_shared(&req, PlanOptions { seed })
                .attempts
                .first()
                .map(|a| a.model.clone())
                .unwrap_or_default()
        })
        .collect();
    assert!(
        firsts.len() > 1,
        "every seed chose the same first model: {firsts:?}"
    );
}
