//! What aigw knows about each provider box, behind the small [`FleetState`] trait so that a
//! shared store (several replicas) can replace the in-process one without touching callers.
//!
//! Health comes from two sources: active checks ([`super::check`]) and real traffic. An active
//! check that gets no answer marks a box `down` at once; real traffic that cannot connect marks
//! it `degraded`, and `down` after [`DOWN_AFTER`] such failures in a row; any answer (active or
//! real) makes it `healthy` again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use crate::providers::ollama::canonical_name;

/// Consecutive unreachable real requests that mark a box down between active checks.
pub const DOWN_AFTER: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not checked yet.
    Unknown,
    Healthy,
    /// It answered its last check, but real requests have since failed to reach it.
    Degraded,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Down => "down",
        }
    }

    pub const ALL: [Health; 4] = [
        Health::Unknown,
        Health::Healthy,
        Health::Degraded,
        Health::Down,
    ];
}

/// What one active check found.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckResult {
    /// No HTTP answer: the reason, as `aigw probe` words it.
    Unreachable(String),
    /// It answered HTTP but not Ollama's `/api/version` (an OpenAI-format server).
    Answered,
    /// An Ollama box: its version, installed models (`/api/tags`) and loaded ones (`/api/ps`).
    Ollama {
        version: String,
        installed: Vec<String>,
        loaded: Vec<String>,
    },
}

/// A real request's outcome, as far as the box's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passive {
    /// Any HTTP answer, even an error status: the box is up.
    Answered,
    /// Connection refused or reset, or no answer in time.
    Unreachable,
}

/// One provider as aigw knows it now: a read-only copy (`/readyz`, `/metrics`, `explain --live`
/// and the status page read these; nothing writes through them).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BoxStatus {
    pub provider: String,
    /// The base URL checked (native root for Ollama boxes).
    pub address: String,
    pub health: Health,
    /// It answered Ollama's `/api/version`, whatever its id.
    pub ollama: bool,
    pub version: Option<String>,
    /// Installed models as `/api/tags` names them; `None` until an Ollama check succeeded.
    pub installed: Option<Vec<String>>,
    /// Models loaded in memory (`/api/ps`) at the last check.
    pub loaded: Vec<String>,
    /// Why it is down or degraded.
    pub last_error: Option<String>,
    /// Real requests in a row that could not reach it.
    pub passive_failures: u32,
    /// Active checks done so far.
    pub checks: u64,
    #[serde(skip)]
    canonical: HashSet<String>,
}

impl BoxStatus {
    fn new(provider: &str, address: &str) -> BoxStatus {
        BoxStatus {
            provider: provider.to_string(),
            address: address.to_string(),
            health: Health::Unknown,
            ollama: false,
            version: None,
            installed: None,
            loaded: Vec::new(),
            last_error: None,
            passive_failures: 0,
            checks: 0,
            canonical: HashSet::new(),
        }
    }

    /// Whether the box has `model` installed (`mistral` and `mistral:latest` are one model);
    /// `None` when its installed list is not known.
    pub fn has_model(&self, model: &str) -> Option<bool> {
        self.installed.as_ref()?;
        Some(self.canonical.contains(&canonical_name(model)))
    }

    /// Whether an Ollama box had `model` loaded in memory at its last check; `None` when it is
    /// not known to be an Ollama box.
    pub fn has_loaded(&self, model: &str) -> Option<bool> {
        if !self.ollama {
            return None;
        }
        let model = canonical_name(model);
        Some(self.loaded.iter().any(|m| canonical_name(m) == model))
    }
}

/// Every tracked box, in the order they were first tracked.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FleetSnapshot {
    pub boxes: Vec<BoxStatus>,
}

impl FleetSnapshot {
    pub fn get(&self, provider: &str) -> Option<&BoxStatus> {
        self.boxes.iter().find(|b| b.provider == provider)
    }

    /// Installed models by provider, for the engine's `discovered` input.
    pub fn installed(&self) -> HashMap<String, Vec<String>> {
        self.boxes
            .iter()
            .filter_map(|b| Some((b.provider.clone(), b.installed.clone()?)))
            .collect()
    }
}

/// Where per-provider health lives. The in-process [`LocalFleetState`] is the default; a shared
/// implementation must keep [`FleetState::snapshot`] cheap (it is read on every request).
pub trait FleetState: Send + Sync {
    /// Starts tracking a provider at an address (again after a reload: a new address resets it).
    fn track(&self, provider: &str, address: &str);
    /// Stops tracking providers not in `keep` (after a reload removed them).
    fn retain(&self, keep: &[String]);
    fn record_check(&self, provider: &str, result: CheckResult);
    fn record_traffic(&self, provider: &str, outcome: Passive);
    /// The current state; an `Arc` so readers on the request path do not copy it.
    fn snapshot(&self) -> Arc<FleetSnapshot>;
}

/// In-process state: the boxes under a mutex, plus a published copy for readers.
#[derive(Default)]
pub struct LocalFleetState {
    boxes: Mutex<Vec<BoxStatus>>,
    published: RwLock<Arc<FleetSnapshot>>,
}

impl LocalFleetState {
    fn update(&self, f: impl FnOnce(&mut Vec<BoxStatus>) -> bool) {
        let mut boxes = self.boxes.lock().unwrap_or_else(|e| e.into_inner());
        if f(&mut boxes) {
            let snap = Arc::new(FleetSnapshot {
                boxes: boxes.clone(),
            });
            *self.published.write().unwrap_or_else(|e| e.into_inner()) = snap;
        }
    }
}

impl FleetState for LocalFleetState {
    fn track(&self, provider: &str, address: &str) {
        self.update(
            |boxes| match boxes.iter_mut().find(|b| b.provider == provider) {
                Some(b) if b.address == address => false,
                Some(b) => {
                    *b = BoxStatus::new(provider, address);
                    true
                }
                None => {
                    boxes.push(BoxStatus::new(provider, address));
                    true
                }
            },
        );
    }

    fn retain(&self, keep: &[String]) {
        self.update(|boxes| {
            let before = boxes.len();
            boxes.retain(|b| keep.contains(&b.provider));
            boxes.len() != before
        });
    }

    fn record_check(&self, provider: &str, result: CheckResult) {
        self.update(|boxes| {
            let Some(b) = boxes.iter_mut().find(|b| b.provider == provider) else {
                return false;
            };
            b.checks += 1;
            match result {
                CheckResult::Unreachable(why) => {
                    b.health = Health::Down;
                    b.last_error = Some(why);
                }
                CheckResult::Answered => {
                    b.health = Health::Healthy;
                    b.last_error = None;
                    b.passive_failures = 0;
                    b.ollama = false;
                }
                CheckResult::Ollama {
                    version,
                    installed,
                    loaded,
                } => {
                    b.health = Health::Healthy;
                    b.last_error = None;
                    b.passive_failures = 0;
                    b.ollama = true;
                    b.version = Some(version);
                    b.canonical = installed.iter().map(|m| canonical_name(m)).collect();
                    b.installed = Some(installed);
                    b.loaded = loaded;
                }
            }
            true
        });
    }

    fn record_traffic(&self, provider: &str, outcome: Passive) {
        self.update(|boxes| {
            let Some(b) = boxes.iter_mut().find(|b| b.provider == provider) else {
                return false;
            };
            match outcome {
                Passive::Answered => {
                    if b.health == Health::Healthy && b.passive_failures == 0 {
                        return false;
                    }
                    b.passive_failures = 0;
                    b.health = Health::Healthy;
                    b.last_error = None;
                }
                Passive::Unreachable => {
                    b.passive_failures += 1;
                    b.health = if b.passive_failures >= DOWN_AFTER || b.health == Health::Down {
                        Health::Down
                    } else {
                        Health::Degraded
                    };
                    if b.last_error.is_none() {
                        b.last_error = Some(format!(
                            "{} request(s) in a row could not reach it",
                            b.passive_failures
                        ));
                    }
                }
            }
            true
        });
    }

    fn snapshot(&self) -> Arc<FleetSnapshot> {
        self.published
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ollama(installed: &[&str]) -> CheckResult {
        CheckResult::Ollama {
            version: "0.12.6".into(),
            installed: installed.iter().map(|s| s.to_string()).collect(),
            loaded: Vec::new(),
        }
    }

    #[test]
    fn active_checks_set_health_and_installed_models() {
        let s = LocalFleetState::default();
        s.track("a", "http://127.0.0.1:1");
        assert_eq!(s.snapshot().boxes[0].health, Health::Unknown);
        s.record_check("a", ollama(&["mistral:latest", "llama3.2:1b"]));
        let snap = s.snapshot();
        let b = snap.get("a").unwrap();
        assert_eq!(b.health, Health::Healthy);
        assert!(b.ollama);
        assert_eq!(b.has_model("mistral"), Some(true));
        assert_eq!(b.has_model("Mistral:latest"), Some(true));
        assert_eq!(b.has_model("llama3.2"), Some(false));
        s.record_check("a", CheckResult::Unreachable("refused".into()));
        assert_eq!(s.snapshot().boxes[0].health, Health::Down);
        // The last known list stays: a box that comes back is expected to have it still.
        assert_eq!(s.snapshot().boxes[0].has_model("mistral"), Some(true));
    }

    #[test]
    fn real_traffic_degrades_then_downs_and_an_answer_heals() {
        let s = LocalFleetState::default();
        s.track("a", "http://x");
        s.record_check("a", CheckResult::Answered);
        s.record_traffic("a", Passive::Unreachable);
        assert_eq!(s.snapshot().boxes[0].health, Health::Degraded);
        for _ in 1..DOWN_AFTER {
            s.record_traffic("a", Passive::Unreachable);
        }
        assert_eq!(s.snapshot().boxes[0].health, Health::Down);
        s.record_traffic("a", Passive::Answered);
        assert_eq!(s.snapshot().boxes[0].health, Health::Healthy);
        assert_eq!(s.snapshot().boxes[0].passive_failures, 0);
    }

    #[test]
    fn tracking_a_new_address_forgets_the_old_state_and_retain_drops_boxes() {
        let s = LocalFleetState::default();
        s.track("a", "http://x");
        s.track("b", "http://y");
        s.record_check("a", CheckResult::Answered);
        s.track("a", "http://x");
        assert_eq!(s.snapshot().boxes[0].health, Health::Healthy);
        s.track("a", "http://z");
        assert_eq!(s.snapshot().boxes[0].health, Health::Unknown);
        s.retain(&["b".to_string()]);
        assert_eq!(s.snapshot().boxes.len(), 1);
        assert_eq!(s.snapshot().boxes[0].provider, "b");
    }
}
