//! Property tests: the loader and the engine never panic, whatever the input.
//! Arbitrary bytes, arbitrary text, and mutations of real policies (the docs corpus) go through
//! the same path as `aigw validate`; valid results are then planned with arbitrary requests.
//! Deterministic: proptest's seed is fixed by `PROPTEST_RNG_SEED` below unless overridden.

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use aigw::commands::validate::check_text;
use aigw::policy::{self, secrets::SecretStore};
use aigw::routing::engine::{Engine, EngineOptions};
use aigw::routing::plan::{PlanOptions, Request};

fn corpus() -> &'static Vec<String> {
    static CORPUS: OnceLock<Vec<String>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/policies");
        let mut out = Vec::new();
        for dir in ["guide", "docs"] {
            for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    out.push(std::fs::read_to_string(path).unwrap());
                }
            }
        }
        out.sort();
        out
    })
}

/// A mutation of a corpus policy: delete, duplicate or replace a slice of it.
fn mutate(text: &str, at: usize, len: usize, how: u8, insert: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return insert.to_string();
    }
    let at = at % chars.len();
    let end = (at + len).min(chars.len());
    match how % 4 {
        0 => {
            chars.drain(at..end);
        }
        1 => {
            let dup: Vec<char> = chars[at..end].to_vec();
            chars.splice(at..at, dup);
        }
        2 => {
            chars.splice(at..end, insert.chars());
        }
        _ => {
            chars.splice(at..at, insert.chars());
        }
    }
    chars.into_iter().collect()
}

fn check_no_panic(bytes: &[u8]) {
    let (_, _diags) = check_text("fuzz.yaml", bytes, &SecretStore::default());
    let loaded = policy::load_bytes("fuzz.yaml", bytes);
    if let Ok((engine, _)) = Engine::build(&loaded, EngineOptions::default()) {
        for model in [
            None,
            Some("llama3.2"),
            Some("openai:gpt-4o"),
            Some("x:y:z"),
            Some(""),
        ] {
            for path in ["/v1/chat/completions", "/v1/messages", "/nope"] {
                let req = Request {
                    path: path.into(),
                    model: model.map(String::from),
                    models: vec!["ngrok/auto".into()],
                };
                let _ = engine.plan(&req, PlanOptions { seed: 7 });
            }
        }
    }
}

fn runner(cases: u32) -> TestRunner {
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x5eed_a16e);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

#[test]
fn arbitrary_bytes_never_panic() {
    runner(2_000)
        .run(&proptest::collection::vec(any::<u8>(), 0..600), |bytes| {
            check_no_panic(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn yamlish_text_never_panics() {
    let alphabet = "[a-z_:{}\\[\\]\\-'\"$.() \n#&*!|>0-9]{0,400}";
    runner(2_000)
        .run(&alphabet, |text| {
            check_no_panic(text.as_bytes());
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_policies_never_panic() {
    let n = corpus().len();
    assert!(n >= 100, "the policy corpus went missing ({n} files)");
    let insert = prop_oneof![
        Just("".to_string()),
        Just(": ".to_string()),
        Just("\n  - ".to_string()),
        Just("${".to_string()),
        Just("ai.models.filter(".to_string()),
        Just("*a".to_string()),
        Just("&a ".to_string()),
        Just("'".to_string()),
        Just("[[[[".to_string()),
        "[ -~]{0,12}",
    ];
    let strategy = (0..n, any::<usize>(), 0usize..40, any::<u8>(), insert);
    runner(3_000)
        .run(&strategy, |(i, at, len, how, insert)| {
            let text = mutate(&corpus()[i], at, len, how, &insert);
            check_no_panic(text.as_bytes());
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// CEL strategy expressions: arbitrary and mutated expressions through `Engine::build` + `plan`.

/// The strategy expressions of the docs corpus, plus some that exercise more of CEL.
fn cel_corpus() -> &'static Vec<String> {
    static CEL: OnceLock<Vec<String>> = OnceLock::new();
    CEL.get_or_init(|| {
        let mut out: Vec<String> = Vec::new();
        for text in corpus() {
            for line in text.lines() {
                let t = line.trim().trim_start_matches("- ").trim();
                let unquoted = t
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .or_else(|| t.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')));
                if let Some(e) = unquoted
                    && e.contains("ai.models")
                {
                    out.push(e.to_string());
                }
            }
        }
        out.extend(
            [
                "ai.models",
                "ai.models.filter(m, m.provider_id == 'alpha' && m.id.startsWith('made'))",
                "ai.models.sortBy(m, -m.pricing.input)",
                "ai.models.filter(m, size(m.id) > 3 ? true : false)",
                "ai.models.filter(m, m.metrics.global.error_rate.total < 0.5)",
                "ai.models.filter(m, m.id in ['made-up-a', 'made-up-b'])",
                "ai.models.random()",
                "ai.models.filter(m, m.id.matches('^made-.*$'))",
                "ai.models.filter(m, int(m.pricing.input * 1000.0) % 2 == 0)",
                "ai.models.filter(m, has(m.metrics) && m.metrics.global.latency.upstream_ms_avg < 1000.0)",
            ]
            .map(String::from),
        );
        out.sort();
        out.dedup();
        out
    })
}

fn cel_policy(expr: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    let quoted = serde_json::to_string(expr).unwrap();
    format!(
        r#"on_http_request:
  - type: ai-gateway
    config:
      only_allow_configured_providers: true
      providers:
        - id: alpha
          base_url: "https://alpha.internal"
          models:
            - id: made-up-a
            - id: made-up-b
        - id: beta
          base_url: "https://beta.internal"
          models:
            - id: made-up-a
      model_selection:
        strategy:
          - {quoted}
          - "ai.models"
"#
    )
}

/// Builds and plans one expression; `true` when the engine accepted it.
fn check_cel(expr: &str) -> bool {
    let text = cel_policy(expr);
    let (_, _diags) = check_text("cel.yaml", text.as_bytes(), &SecretStore::default());
    let loaded = policy::load_bytes("cel.yaml", text.as_bytes());
    let Ok((engine, _)) = Engine::build(&loaded, EngineOptions::default()) else {
        return false;
    };
    for model in [
        None,
        Some("made-up-a"),
        Some("alpha:made-up-b"),
        Some("nope"),
    ] {
        for seed in [0, 7, u64::MAX] {
            let req = Request {
                path: "/v1/chat/completions".into(),
                model: model.map(String::from),
                models: Vec::new(),
            };
            let _ = engine.plan(&req, PlanOptions { seed });
        }
    }
    true
}

#[test]
fn mutated_cel_strategies_never_panic() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let n = cel_corpus().len();
    assert!(n >= 10, "the CEL corpus went missing ({n} expressions)");
    let insert = prop_oneof![
        Just("".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just(".".to_string()),
        Just("m.".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just(" && ".to_string()),
        Just(" || !".to_string()),
        Just(" ? 1 : ".to_string()),
        Just("1/0".to_string()),
        Just("[".to_string()),
        Just("{'a': ".to_string()),
        Just("size(".to_string()),
        Just("int(".to_string()),
        Just("9223372036854775807 + 1".to_string()),
        Just("ai.models.filter(m, ".to_string()),
        Just("ai.models.sortBy(m, ".to_string()),
        Just(".random()".to_string()),
        Just("m.metrics.global.latency.".to_string()),
        Just("((((((((((((((((((((".to_string()),
        Just("\\u0000".to_string()),
        "[ -~]{0,8}",
    ];
    let strategy = (0..n, any::<usize>(), 0usize..20, any::<u8>(), insert);
    let (ran, built) = (AtomicUsize::new(0), AtomicUsize::new(0));
    runner(2_000)
        .run(&strategy, |(i, at, len, how, insert)| {
            let expr = mutate(&cel_corpus()[i], at, len, how, &insert);
            ran.fetch_add(1, Ordering::Relaxed);
            if check_cel(&expr) {
                built.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    for e in cel_corpus() {
        assert!(
            check_cel(e) || e.contains("metrics"),
            "corpus expression rejected: {e}"
        );
    }
    eprintln!(
        "CEL fuzz (mutated): {} expressions from a corpus of {n}, {} built an engine and were planned",
        ran.load(Ordering::Relaxed),
        built.load(Ordering::Relaxed)
    );
}

#[test]
fn arbitrary_cel_text_never_panics() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Bodies of `ai.models.filter(m, …)` from CEL tokens (a bare token soup rarely parses).
    let body = "(m\\.(id|provider_id|pricing\\.input|metrics\\.global\\.error_rate\\.total)|'made-up-a'|[0-9]{1,3}|true|false|null|size\\(m\\.id\\)|==|!=|<|>|&&|\\|\\||!|\\?|:|\\(|\\)|\\[|\\]|,| |\\+|-|in ){1,24}";
    // Well-typed boolean expressions, nested up to 8 deep.
    let leaf = proptest::sample::select(vec![
        "true",
        "m.id == 'made-up-a'",
        "m.provider_id != 'beta'",
        "m.pricing.input < 1.5",
        "size(m.id) > 3",
        "m.id in ['made-up-a', 'x']",
        "m.id.startsWith('made')",
        "m.metrics.global.error_rate.total < 0.5",
    ])
    .prop_map(String::from);
    let typed = leaf.prop_recursive(8, 64, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} && {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} || {b})")),
            inner.clone().prop_map(|a| format!("!({a})")),
            (inner.clone(), inner.clone(), inner)
                .prop_map(|(a, b, c)| format!("({a} ? {b} : {c})")),
        ]
    });
    let strategy = prop_oneof![
        2 => body.prop_map(|b| format!("ai.models.filter(m, {b})")),
        1 => body.prop_map(|b| format!("ai.models.sortBy(m, {b})")),
        3 => typed.prop_map(|b| format!("ai.models.filter(m, {b})")),
    ];
    let (ran, built) = (AtomicUsize::new(0), AtomicUsize::new(0));
    runner(1_000)
        .run(&strategy, |expr| {
            ran.fetch_add(1, Ordering::Relaxed);
            if check_cel(&expr) {
                built.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    // Deep nesting: a parse error, not a stack overflow.
    for depth in [50, 500, 5_000] {
        check_cel(&format!(
            "{}ai.models{}",
            "(".repeat(depth),
            ")".repeat(depth)
        ));
        check_cel(&format!(
            "ai.models.filter(m, {}true{})",
            "!(".repeat(depth),
            ")".repeat(depth)
        ));
    }
    eprintln!(
        "CEL fuzz (generated): {} expressions, {} built an engine and were planned",
        ran.load(Ordering::Relaxed),
        built.load(Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------------------------------
// Long shapes (issue 23): operator chains, method chains, long lists, long request model lists.
// Whatever builds an engine must plan without exhausting the stack (the test thread has 2 MiB).

#[test]
fn long_chains_and_lists_are_refused_or_run() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let term = proptest::sample::select(vec!["1", "m.id", "'a'", "true", "m.pricing.input"]);
    let op = proptest::sample::select(vec![
        " + ", " - ", " * ", " / ", " % ", " || ", " && ", " == ", " < ", " in ",
    ]);
    let shape = prop_oneof![
        // `t op t op t …`, wrapped so that it is a filter condition or fails typing.
        (term.clone(), op, 1usize..1_500)
            .prop_map(|(t, op, n)| format!("ai.models.filter(m, {} > 0)", vec![t; n].join(op))),
        // A ternary chain without brackets.
        (1usize..200).prop_map(|n| format!(
            "ai.models.filter(m, {}true)",
            "m.id == 'a' ? false : ".repeat(n)
        )),
        // A method chain: one level per call.
        (1usize..500).prop_map(|n| format!("ai.models{}", ".filter(m, true)".repeat(n))),
        // A long literal list.
        (1usize..5_000).prop_map(|n| format!(
            "ai.models.filter(m, m.id in [{}])",
            (0..n)
                .map(|i| format!("'m{i}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    ];
    let (ran, built) = (AtomicUsize::new(0), AtomicUsize::new(0));
    runner(100)
        .run(&shape, |expr| {
            ran.fetch_add(1, Ordering::Relaxed);
            if check_cel(&expr) {
                built.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "long CEL shapes: {} expressions, {} built an engine and were planned, the rest refused",
        ran.load(Ordering::Relaxed),
        built.load(Ordering::Relaxed)
    );
}

#[test]
fn long_requested_model_lists_plan_in_linear_time() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let loaded = policy::load_str("cel.yaml", cel_policy("ai.models"));
    let (engine, _) = Engine::build(&loaded, EngineOptions::default()).unwrap();
    let name = proptest::sample::select(vec![
        "made-up-a",
        "alpha:made-up-b",
        "beta:made-up-a",
        "alpha:unknown",
        "nope",
        "openai:gpt-4o",
        "ngrok/auto",
        "",
    ]);
    let list = (
        proptest::collection::vec(name, 0..64),
        0usize..2_000,
        any::<u64>(),
    );
    let ran = AtomicUsize::new(0);
    runner(100)
        .run(&list, |(names, repeat, seed)| {
            ran.fetch_add(1, Ordering::Relaxed);
            // Repeats and distinct pass-through names: the universe grows by the distinct ones.
            let mut models: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            models.extend((0..repeat).map(|i| format!("alpha:x{}", i % 1000)));
            let req = Request {
                path: "/v1/chat/completions".into(),
                model: None,
                models,
            };
            let plan = engine.plan(&req, PlanOptions { seed });
            prop_assert!(plan.error.is_some() || !plan.attempts.is_empty());
            Ok(())
        })
        .unwrap();
    // One list of 20,000 distinct names (0.87 s in a release build when planning was quadratic).
    let req = Request {
        path: "/v1/chat/completions".into(),
        model: None,
        models: (0..20_000).map(|i| format!("alpha:x{i}")).collect(),
    };
    let started = std::time::Instant::now();
    let plan = engine.plan_untraced(&req, PlanOptions { seed: 7 });
    let took = started.elapsed();
    assert!(!plan.attempts.is_empty());
    eprintln!(
        "long request lists: {} plans, and 20,000 distinct names planned in {took:?}",
        ran.load(Ordering::Relaxed)
    );
}
