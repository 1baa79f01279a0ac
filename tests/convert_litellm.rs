//! `aigw convert` on LiteLLM proxy configs (`testdata/litellm/`, written from the shapes in
//! LiteLLM's proxy docs): the policy and the stderr report are snapshots, every policy passes
//! `validate`, and `explain` routes each model name where LiteLLM's docs say it goes.

#[path = "gateway_support/mod.rs"]
mod support;

use aigw::convert::litellm;
use aigw::gateway::GatewayOptions;
use aigw::policy::{self, Severity};
use aigw::routing::engine::{Engine, EngineOptions};
use aigw::routing::plan::{PlanOptions, Request};

struct Route {
    path: &'static str,
    /// The client's `model`, then `models`.
    models: &'static [&'static str],
    /// `provider:model` in the order they are tried; empty: the request is refused.
    expect: &'static [&'static str],
}

const CHAT: &str = "/v1/chat/completions";

const FIXTURES: &[(&str, &[Route])] = &[
    (
        "two-ollama-boxes",
        &[
            // A model group: every deployment of `llama3` can answer, the local box first.
            Route {
                path: CHAT,
                models: &["llama3"],
                expect: &["ollama:llama3.2", "ollama-2:llama3.2"],
            },
            Route {
                path: "/v1/embeddings",
                models: &["embed"],
                expect: &["ollama:nomic-embed-text"],
            },
            // The proxy serves only its model_list.
            Route {
                path: CHAT,
                models: &["mistral"],
                expect: &[],
            },
        ],
    ),
    (
        "hosted-with-fallbacks",
        &[
            Route {
                path: CHAT,
                models: &["gpt-4o"],
                expect: &["openai:gpt-4o"],
            },
            // `fallbacks: gpt-4o → [claude-sonnet, gpt-4o-mini]`, sent by the client.
            Route {
                path: CHAT,
                models: &["gpt-4o", "claude-sonnet", "gpt-4o-mini"],
                expect: &[
                    "openai:gpt-4o",
                    "anthropic:claude-3-5-sonnet-20241022",
                    "openai:gpt-4o-mini",
                ],
            },
            Route {
                path: CHAT,
                models: &["llama-fast"],
                expect: &["groq:llama-3.1-8b-instant"],
            },
            Route {
                path: CHAT,
                models: &["deepseek-chat"],
                expect: &["deepseek:deepseek-chat"],
            },
            Route {
                path: CHAT,
                models: &["gpt-3.5-turbo"],
                expect: &[],
            },
        ],
    ),
    (
        "azure-and-vllm",
        &[
            // One alias names one model: the EU deployment answers to `gpt-4o`, and the report
            // says how to reach the Canadian one.
            Route {
                path: CHAT,
                models: &["gpt-4o"],
                expect: &["azure:gpt-4o-eu"],
            },
            Route {
                path: CHAT,
                models: &["gpt-4o", "azure-2:gpt-4o-ca"],
                expect: &["azure:gpt-4o-eu", "azure-2:gpt-4o-ca"],
            },
            // router_settings.model_group_alias: gpt-4 → gpt-4o.
            Route {
                path: CHAT,
                models: &["gpt-4"],
                expect: &["azure:gpt-4o-eu"],
            },
            Route {
                path: CHAT,
                models: &["vllm-models"],
                expect: &["vllm:facebook/opt-125m"],
            },
            // Skipped (bedrock/), and reported.
            Route {
                path: CHAT,
                models: &["bedrock-claude"],
                expect: &[],
            },
        ],
    ),
];

#[test]
fn litellm_fixtures_convert_validate_and_route() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/litellm/");
    for (name, routes) in FIXTURES {
        let source = format!("testdata/litellm/{name}.yaml");
        let text = std::fs::read_to_string(format!("{root}{name}.yaml")).unwrap();
        let c = litellm::convert(&source, &text).unwrap_or_else(|e| panic!("{name}: {e}"));
        insta::with_settings!({snapshot_path => "../snapshots/convert", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(format!("{name}.policy"), c.policy);
            insta::assert_snapshot!(format!("{name}.report"), c.report(&source));
        });

        let loaded = policy::load_str(&format!("{name}.converted.yaml"), c.policy.clone());
        let (engine, warnings) =
            Engine::build(&loaded, EngineOptions::default()).unwrap_or_else(|errors| {
                panic!("{name}: the converted policy is invalid: {errors:#?}")
            });
        assert!(
            warnings.iter().all(|d| d.severity != Severity::Error),
            "{name}: {warnings:#?}"
        );
        for r in *routes {
            let req = Request {
                path: r.path.into(),
                model: Some(r.models[0].into()),
                models: r.models[1..].iter().map(|s| s.to_string()).collect(),
            };
            let plan = engine.plan(&req, PlanOptions::default());
            let got: Vec<String> = plan
                .attempts
                .iter()
                .map(|a| format!("{}:{}", a.provider, a.model))
                .collect();
            assert_eq!(got, r.expect, "{name}: {:?} on {}", r.models, r.path);
            assert_eq!(
                plan.error.is_some(),
                r.expect.is_empty(),
                "{name}: {:?}: {:?}",
                r.models,
                plan.error
            );
        }
    }
}

#[test]
fn no_key_value_ever_reaches_the_policy_or_the_report() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/litellm/");
    for (name, _) in FIXTURES {
        let text = std::fs::read_to_string(format!("{root}{name}.yaml")).unwrap();
        let c = litellm::convert(name, &text).unwrap();
        for secret in ["gsk_literalkey", "do-not-print-me"] {
            assert!(!c.policy.contains(secret), "{name}: {secret} in the policy");
            assert!(
                !c.report(name).contains(secret),
                "{name}: {secret} in the report"
            );
        }
    }
}

/// The converted two-box policy serves: `llama3` reaches the first Ollama box and, when it
/// fails, the second, as LiteLLM's model group would (minus the shuffling the report names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converted_model_group_serves_and_fails_over_between_the_boxes() {
    use support::standin::{Fault, Kind, StandIn};
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/litellm/two-ollama-boxes.yaml"
    ))
    .unwrap();
    let c = litellm::convert("two-ollama-boxes.yaml", &text).unwrap();
    let one = StandIn::start(Kind::Ollama)
        .await
        .with_models(&["llama3.2"]);
    let two = StandIn::start(Kind::Ollama)
        .await
        .with_models(&["llama3.2"]);
    // The serve line of the header maps ollama-2; the test maps both boxes to stand-ins.
    let gw = support::start_policy(
        &c.policy,
        &[("ollama", one.url()), ("ollama-2", two.url())],
        &[],
        GatewayOptions::default(),
    )
    .await;
    let client = support::client();
    let ask = || async {
        let r = client
            .post(gw.url("/v1/chat/completions"))
            .json(&serde_json::json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-aigw-provider"].to_str().unwrap().to_string()
    };
    assert_eq!(ask().await, "ollama");
    one.set_fault(Some(Fault::status(500)));
    assert_eq!(ask().await, "ollama-2");
    let sent = two.requests();
    assert_eq!(
        sent.last().unwrap().model(),
        Some("llama3.2"),
        "the upstream id, not the alias"
    );
}

/// `os.environ/NAME` → `secrets.get('env', 'NAME')`, resolved from the plain variable `NAME`;
/// validate says which variable to export when it is missing.
#[test]
fn env_references_resolve_from_the_plain_variable() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/litellm/hosted-with-fallbacks.yaml"
    ))
    .unwrap();
    let c = litellm::convert("hosted-with-fallbacks.yaml", &text).unwrap();
    let secrets = aigw::policy::secrets::SecretStore::from_vars([(
        "OPENAI_API_KEY".to_string(),
        "sk-from-the-plain-variable".to_string(),
    )]);
    let (_, diags) = aigw::commands::validate::check_text("p.yaml", c.policy.as_bytes(), &secrets);
    let unresolved: Vec<String> = diags.iter().map(|d| d.message.clone()).collect();
    assert!(
        !unresolved.iter().any(|m| m.contains("OPENAI_API_KEY")),
        "{unresolved:?}"
    );
    let anthropic = diags
        .iter()
        .find(|d| d.message.contains("env/ANTHROPIC_API_KEY"))
        .expect("the unset variable is reported");
    assert!(
        anthropic
            .help
            .as_deref()
            .unwrap_or("")
            .contains("export ANTHROPIC_API_KEY="),
        "{anthropic:?}"
    );
}

/// Whatever YAML it is given (every file under testdata/, policies and broken ones included,
/// plus LiteLLM-shaped oddities), convert never panics, and what it writes always validates.
#[test]
fn any_input_converts_to_a_valid_policy_or_a_clear_error() {
    let mut inputs: Vec<(String, String)> = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata"
    ))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                inputs.push((path.display().to_string(), text));
            }
        }
    }
    let odd = [
        "model_list: 3\n",
        "model_list: [3, {model_name: x}]\n",
        "model_list:\n  - model_name: \"\"\n    litellm_params: {model: openai/gpt-4o}\n",
        "model_list:\n  - model_name: 7\n    litellm_params: {model: ollama/llama3.2}\n",
        "model_list:\n  - model_name: a\n    litellm_params: {model: \"ollama/\"}\n",
        "model_list:\n  - model_name: a\n    litellm_params: {model: openai/gpt-4o, api_key: 12345}\n",
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {model: openai/gpt-4o}\n  - model_name: gpt-4o\n    litellm_params: {model: openai/GPT-4O}\n",
        "model_list:\n  - model_name: x\n    litellm_params: {model: openai/a}\n  - model_name: a\n    litellm_params: {model: openai/x}\n",
        "model_list:\n  - model_name: \"*\"\n    litellm_params: {model: \"openai/*\"}\n",
        "model_list:\n  - model_name: q\"uote\n    litellm_params: {model: \"ollama/we\\\"ird:tag\", api_base: \"http://10.0.0.2:11434/\"}\nrouter_settings: {timeout: -1, allowed_fails: x, cooldown_time: 1e30, model_group_alias: {q\"uote: nope, z: q\"uote}, fallbacks: 3}\n",
        "model_list:\n  - model_name: g\n    litellm_params: {model: openai/g, api_base: \"ftp://x\"}\n",
    ];
    inputs.extend(
        odd.iter()
            .enumerate()
            .map(|(i, t)| (format!("odd-{i}"), t.to_string())),
    );
    let mut converted = 0;
    for (name, text) in &inputs {
        match litellm::convert(name, text) {
            Ok(c) => {
                converted += 1;
                let loaded = policy::load_str("out.yaml", c.policy.clone());
                if let Err(errors) = Engine::build(&loaded, EngineOptions::default()) {
                    panic!(
                        "{name}: the output does not validate:\n{}\n{errors:#?}",
                        c.policy
                    );
                }
            }
            Err(e) => assert!(!e.message.is_empty() && !e.help.is_empty(), "{name}: {e:?}"),
        }
    }
    assert!(converted >= 8, "only {converted} inputs converted");
}
