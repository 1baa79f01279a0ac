//! What `aigw explain` shows, for the seed guide's policies: snapshots of the table and JSON.

use aigw::policy;
use aigw::render::explain::{ExplainView, text};
use aigw::routing::engine::{Engine, EngineOptions};
use aigw::routing::plan::{PlanOptions, Request};

struct Case {
    name: &'static str,
    policy: &'static str,
    models: &'static [&'static str],
    path: &'static str,
    fail: &'static [&'static str],
    seed: u64,
}

const CASES: &[Case] = &[
    Case {
        name: "failover-llama",
        policy: "guide/03-failover-to-openai.yaml",
        models: &["llama3.2"],
        path: "/v1/chat/completions",
        fail: &[],
        seed: 0,
    },
    Case {
        name: "failover-gpt4o",
        policy: "guide/03-failover-to-openai.yaml",
        models: &["gpt-4o"],
        path: "/v1/chat/completions",
        fail: &[],
        seed: 0,
    },
    Case {
        name: "failover-both-ollama-down",
        policy: "guide/03-failover-to-openai.yaml",
        models: &["ollama:llama3.2", "openai:gpt-4o"],
        path: "/v1/chat/completions",
        fail: &["ollama"],
        seed: 0,
    },
    Case {
        name: "failover-transient-then-final",
        policy: "guide/03-failover-to-openai.yaml",
        models: &["openai:gpt-4o", "openai:gpt-4o-mini", "openai:o3-mini"],
        path: "/v1/chat/completions",
        fail: &["openai:gpt-4o=503", "openai:gpt-4o-mini=content_filter"],
        seed: 0,
    },
    Case {
        name: "restricted-rejects-openai",
        policy: "guide/02-restrict-ollama-only.yaml",
        models: &["openai:gpt-4o"],
        path: "/v1/chat/completions",
        fail: &[],
        seed: 0,
    },
    Case {
        name: "basic-tagged-model",
        policy: "guide/01-basic.yaml",
        models: &["ollama:llama3.2:1b"],
        path: "/v1/chat/completions",
        fail: &[],
        seed: 0,
    },
    Case {
        name: "basic-passthrough-unknown",
        policy: "guide/01-basic.yaml",
        models: &["ollama:qwen3:8b"],
        path: "/v1/chat/completions",
        fail: &[],
        seed: 0,
    },
    Case {
        name: "basic-unknown-bare",
        policy: "guide/01-basic.yaml",
        models: &["qwen3"],
        path: "/v1/chat/completions",
        fail: &[],
        seed: 0,
    },
    Case {
        name: "two-gpus-seed-1",
        policy: "guide/05-multiple-instances.yaml",
        models: &["llama3.2"],
        path: "/v1/chat/completions",
        fail: &[],
        seed: 1,
    },
    Case {
        name: "two-gpus-seed-2",
        policy: "guide/05-multiple-instances.yaml",
        models: &["llama3.2"],
        path: "/v1/chat/completions",
        fail: &[],
        seed: 2,
    },
    Case {
        name: "messages-path-ollama",
        policy: "guide/01-basic.yaml",
        models: &["ollama:llama3.2"],
        path: "/v1/messages",
        fail: &[],
        seed: 0,
    },
    Case {
        name: "unknown-path",
        policy: "guide/01-basic.yaml",
        models: &["llama3.2"],
        path: "/v2/chat",
        fail: &[],
        seed: 0,
    },
];

#[test]
fn explain_snapshots() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/policies/");
    for case in CASES {
        let path = format!("{root}{}", case.policy);
        let bytes = std::fs::read(&path).unwrap();
        let loaded = policy::load_bytes(&format!("testdata/policies/{}", case.policy), &bytes);
        let (engine, _) =
            Engine::build(&loaded, EngineOptions::default()).expect("guide policies are valid");
        let req = Request {
            path: case.path.to_string(),
            model: case.models.first().map(|s| s.to_string()),
            models: case.models.iter().skip(1).map(|s| s.to_string()).collect(),
        };
        let plan = engine.plan(&req, PlanOptions { seed: case.seed });
        let specs: Vec<_> = case.fail.iter().map(|f| f.parse().unwrap()).collect();
        let walk = aigw::commands::common::simulate(&engine, &plan, &specs);
        let models: Vec<String> = case.models.iter().map(|s| s.to_string()).collect();
        let view = ExplainView {
            policy: &loaded.source.name,
            strategies: engine.strategy_count(),
            path: case.path,
            models: &models,
            plan: &plan,
            walk: &walk,
            notes: &[],
        };
        insta::with_settings!({snapshot_path => "../snapshots/explain", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(case.name, text(&view));
            insta::assert_json_snapshot!(format!("{}.json", case.name), plan);
        });
    }
}

/// The policy's rules as `explain --header/--client-ip` shows them: refused without a token,
/// refused from an outside address, routed with a token from a private one.
#[test]
fn policy_rule_snapshots() {
    use aigw::render::explain::{policy_json, policy_text};
    use aigw::traffic::{InProcess, Ports, RequestView};
    use std::time::Duration;

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/policies/aigw/guarded.yaml"
    );
    let loaded = policy::load_bytes("guarded.yaml", &std::fs::read(path).unwrap());
    let (engine, _) = Engine::build(&loaded, EngineOptions::default()).unwrap();
    let program = engine.traffic().expect("the guarded policy has rules");
    let cases = [
        ("policy-no-token", "127.0.0.1", None),
        (
            "policy-outside-ip",
            "203.0.113.9",
            Some("Bearer team-a-token"),
        ),
        ("policy-passes", "10.1.2.3", Some("Bearer team-b-token")),
    ];
    for (name, ip, auth) in cases {
        let client = std::net::SocketAddr::new(ip.parse().unwrap(), 50000);
        let mut req = RequestView::new("POST", "/v1/chat/completions", client);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let rate = InProcess::default();
        let ports = Ports {
            rate: &rate,
            keys: &aigw::traffic::jwt::LocalKeys,
            now: Duration::from_secs(1_800_000_000),
        };
        let out = program.on_request(&std::sync::Arc::new(req), ports);
        insta::with_settings!({snapshot_path => "../snapshots/explain", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(name, policy_text(&out));
            insta::assert_json_snapshot!(format!("{name}.json"), policy_json(&out));
        });
    }
}
