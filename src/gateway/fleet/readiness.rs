//! `GET /readyz`: ready only when every checked provider answers and every model the policy
//! lists for an Ollama box is installed on some box that lists it. One function takes every
//! input; a replica draining on shutdown is not ready whatever its boxes say.

use serde::Serialize;

use super::state::{FleetSnapshot, Health};
use crate::providers::ollama::same_model;

/// Everything readiness depends on.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub fleet: &'a FleetSnapshot,
    /// `(provider, model)` of each model the policy lists.
    pub policy_models: &'a [(String, String)],
    /// A shutdown signal arrived: load balancers must stop sending new requests.
    pub draining: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DownBox {
    pub provider: String,
    pub address: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MissingModel {
    pub model: String,
    /// The boxes that list it (none has it installed).
    pub providers: Vec<String>,
    pub fix: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Readiness {
    pub ready: bool,
    /// Shutting down: requests in flight are finishing, new ones belong elsewhere.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    pub boxes_down: Vec<DownBox>,
    pub models_missing: Vec<MissingModel>,
}

pub fn readiness(inputs: Inputs<'_>) -> Readiness {
    let boxes_down: Vec<DownBox> = inputs
        .fleet
        .boxes
        .iter()
        .filter(|b| matches!(b.health, Health::Down | Health::Unknown))
        .map(|b| DownBox {
            provider: b.provider.clone(),
            address: b.address.clone(),
            reason: match b.health {
                Health::Unknown => "not checked yet".into(),
                _ => b
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "it does not answer".into()),
            },
        })
        .collect();
    let mut models_missing: Vec<MissingModel> = Vec::new();
    for (provider, model) in inputs.policy_models {
        let Some(b) = inputs.fleet.get(provider) else {
            continue;
        };
        if !b.ollama || b.installed.is_none() {
            continue;
        }
        if let Some(m) = models_missing
            .iter_mut()
            .find(|m| same_model(&m.model, model))
        {
            m.providers.push(provider.clone());
            continue;
        }
        // Installed on any box that lists it counts.
        let somewhere = inputs.policy_models.iter().any(|(p, m)| {
            same_model(m, model)
                && inputs
                    .fleet
                    .get(p)
                    .is_some_and(|b| b.has_model(model) == Some(true))
        });
        if !somewhere {
            models_missing.push(MissingModel {
                model: model.clone(),
                providers: vec![provider.clone()],
                fix: format!("ollama pull {model}"),
            });
        }
    }
    Readiness {
        ready: !inputs.draining && boxes_down.is_empty() && models_missing.is_empty(),
        draining: inputs.draining,
        boxes_down,
        models_missing,
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::{CheckResult, FleetState, LocalFleetState};
    use super::*;

    fn models(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn ready_only_when_every_box_answers_and_every_model_is_somewhere() {
        let s = LocalFleetState::default();
        s.track("a", "http://a");
        s.track("b", "http://b");
        let policy = models(&[("a", "llama3.2"), ("b", "llama3.2"), ("b", "qwen2.5")]);
        let r = readiness(Inputs {
            fleet: &s.snapshot(),
            policy_models: &policy,
            draining: false,
        });
        assert!(!r.ready);
        assert_eq!(r.boxes_down.len(), 2);
        assert_eq!(r.boxes_down[0].reason, "not checked yet");
        let ollama = |m: &[&str]| CheckResult::Ollama {
            version: "1".into(),
            installed: m.iter().map(|s| s.to_string()).collect(),
            loaded: Vec::new(),
        };
        s.record_check("a", ollama(&["llama3.2:latest"]));
        s.record_check("b", CheckResult::Unreachable("refused".into()));
        let r = readiness(Inputs {
            fleet: &s.snapshot(),
            policy_models: &policy,
            draining: false,
        });
        assert_eq!(
            r.boxes_down,
            vec![DownBox {
                provider: "b".into(),
                address: "http://b".into(),
                reason: "refused".into()
            }]
        );
        assert!(r.models_missing.is_empty(), "b's models are unknown");
        s.record_check("b", ollama(&[]));
        let r = readiness(Inputs {
            fleet: &s.snapshot(),
            policy_models: &policy,
            draining: false,
        });
        assert_eq!(
            r.models_missing,
            vec![MissingModel {
                model: "qwen2.5".into(),
                providers: vec!["b".into()],
                fix: "ollama pull qwen2.5".into()
            }]
        );
        s.record_check("b", ollama(&["qwen2.5:latest"]));
        let r = readiness(Inputs {
            fleet: &s.snapshot(),
            policy_models: &policy,
            draining: false,
        });
        assert!(r.ready, "{r:?}");
        let r = readiness(Inputs {
            fleet: &s.snapshot(),
            policy_models: &policy,
            draining: true,
        });
        assert!(!r.ready && r.draining, "a draining replica is never ready");
    }
}
