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
