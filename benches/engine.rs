//! Criterion benchmarks for the offline pipeline: validating a policy and planning a request.
//! Targets (issues 3 and 4): validate the seed policy well under 10 ms for the whole process;
//! plan the seed policy under 20 µs and a 1,000-model / 3-strategy policy under 100 µs.

use std::fmt::Write;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

use aigw::commands::validate::check_text;
use aigw::policy::{self, secrets::SecretStore};
use aigw::routing::engine::{Engine, EngineOptions};
use aigw::routing::plan::{PlanOptions, Request};

/// The policy `bench/gateway.sh` serves (ports aside).
const BENCH_POLICY: &str = "on_http_request:
  - type: ai-gateway
    config:
      only_allow_configured_providers: true
      providers:
        - id: bench
          base_url: \"http://127.0.0.1:9/v1\"
          models:
            - id: bench
";

const SEED_FAILOVER: &str = include_str!("../testdata/policies/guide/03-failover-to-openai.yaml");

/// A policy with `providers` custom providers of `models_each` models and three strategies.
fn generated_policy(providers: usize, models_each: usize) -> String {
    let mut s =
        String::from("on_http_request:\n  - type: ai-gateway\n    config:\n      providers:\n");
    for p in 0..providers {
        let _ = write!(
            s,
            "        - id: \"p{p}\"\n          base_url: \"https://p{p}.internal\"\n          metadata: {{tier: \"{}\"}}\n          models:\n",
            if p % 3 == 0 { "premium" } else { "budget" }
        );
        for m in 0..models_each {
            let _ = writeln!(s, "            - id: \"model-{m}\"");
        }
    }
    s.push_str(
        "      model_selection:\n        strategy:\n          - \"ai.models.filter(m, m.metadata.tier == 'premium' && m.id.startsWith('model-9'))\"\n          - \"ai.models.filter(m, m.provider_id.startsWith('p1'))\"\n          - \"ai.models\"\n",
    );
    s
}

fn engine(text: &str) -> Engine {
    let loaded = policy::load_str("bench.yaml", text);
    Engine::build(&loaded, EngineOptions::default())
        .expect("bench policy is valid")
        .0
}

fn benches(c: &mut Criterion) {
    let secrets = SecretStore::default();
    c.bench_function("validate/seed-failover", |b| {
        b.iter(|| check_text("policy.yaml", black_box(SEED_FAILOVER.as_bytes()), &secrets))
    });
    let big = generated_policy(1_000, 1);
    c.bench_function("validate/1000-providers", |b| {
        b.iter(|| check_text("policy.yaml", black_box(big.as_bytes()), &secrets))
    });

    let seed = engine(SEED_FAILOVER);
    let gpt = Request {
        path: "/v1/chat/completions".into(),
        model: Some("gpt-4o".into()),
        models: vec![],
    };
    let llama = Request {
        path: "/v1/chat/completions".into(),
        model: Some("llama3.2".into()),
        models: vec![],
    };
    c.bench_function("plan/seed-failover/llama3.2", |b| {
        b.iter(|| seed.plan(black_box(&llama), PlanOptions::default()))
    });
    c.bench_function("plan/seed-failover/gpt-4o", |b| {
        b.iter(|| seed.plan(black_box(&gpt), PlanOptions::default()))
    });

    let thousand = engine(&generated_policy(100, 10));
    let auto = Request {
        path: "/v1/chat/completions".into(),
        model: None,
        models: vec![],
    };
    let named = Request {
        path: "/v1/chat/completions".into(),
        model: Some("p10:model-3".into()),
        models: vec![],
    };
    c.bench_function("plan/1000-models-3-strategies/auto", |b| {
        b.iter(|| thousand.plan(black_box(&auto), PlanOptions::default()))
    });
    c.bench_function("plan/1000-models-3-strategies/named", |b| {
        b.iter(|| thousand.plan(black_box(&named), PlanOptions::default()))
    });
    // What `serve` runs: the same plans without the strategy trace.
    c.bench_function("plan-untraced/1000-models-3-strategies/auto", |b| {
        b.iter(|| thousand.plan_untraced(black_box(&auto), PlanOptions::default()))
    });
    c.bench_function("plan-untraced/1000-models-3-strategies/named", |b| {
        b.iter(|| thousand.plan_untraced(black_box(&named), PlanOptions::default()))
    });
    // bench/gateway.sh's policy: one configured provider, the built-in catalog refused.
    let gateway = engine(BENCH_POLICY);
    let bench_model = Request {
        path: "/v1/chat/completions".into(),
        model: Some("bench:bench".into()),
        models: vec![],
    };
    c.bench_function("plan-untraced/gateway-bench-policy", |b| {
        b.iter(|| gateway.plan_untraced(black_box(&bench_model), PlanOptions::default()))
    });
    // What serve runs per request since plans are remembered: a cache hit.
    c.bench_function("plan-shared/gateway-bench-policy", |b| {
        b.iter(|| gateway.plan_shared(black_box(&bench_model), PlanOptions::default()))
    });
    c.bench_function("plan-shared/1000-models-3-strategies/named", |b| {
        b.iter(|| thousand.plan_shared(black_box(&named), PlanOptions::default()))
    });
}

criterion_group!(engine_benches, benches);
criterion_main!(engine_benches);
