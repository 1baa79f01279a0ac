//! Which of a plan's candidates the fleet can serve now, decided before the attempt loop so a
//! down box or one without the model costs no failed attempt. Pure: a plan and a snapshot in, a
//! plan (with the dropped candidates and why in `left_out`) or an error that says what to do out.

use super::state::{BoxStatus, FleetSnapshot, Health};
use crate::routing::plan::{Attempt, LeftOut, Plan, codes};

/// What the client gets when no candidate is left.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetError {
    pub code: &'static str,
    pub status: u16,
    pub message: String,
}

/// A model no box has: 404 with the `ollama pull` to run.
pub const MODEL_NOT_INSTALLED: (&str, u16) = ("AIGW_MODEL_NOT_INSTALLED", 404);

/// Why a candidate is dropped.
#[derive(Debug, Clone, PartialEq)]
enum Drop {
    /// The box is down (`reason` from its last check or real traffic).
    Down { address: String, reason: String },
    /// The box answers but lacks the model.
    NotInstalled { address: String },
}

fn verdict(b: &BoxStatus, model: &str) -> Option<Drop> {
    if b.health == Health::Down {
        return Some(Drop::Down {
            address: b.address.clone(),
            reason: b
                .last_error
                .clone()
                .unwrap_or_else(|| "it does not answer".into()),
        });
    }
    if b.ollama && b.has_model(model) == Some(false) {
        return Some(Drop::NotInstalled {
            address: b.address.clone(),
        });
    }
    None
}

fn reason(a: &Attempt, d: &Drop) -> String {
    match d {
        Drop::Down { address, reason } => {
            format!("{} at {address} is down: {reason}", a.provider)
        }
        Drop::NotInstalled { address } => format!(
            "{} at {address} does not have {} installed",
            a.provider, a.model
        ),
    }
}

/// The plan to run: `Ok(None)` when every candidate stays (the shared plan is used as is),
/// `Ok(Some(plan))` when some were dropped, `Err` when none is left.
pub fn admit(plan: &Plan, snap: &FleetSnapshot) -> Result<Option<Plan>, FleetError> {
    if snap.boxes.is_empty() || plan.attempts.is_empty() {
        return Ok(None);
    }
    let verdicts: Vec<Option<Drop>> = plan
        .attempts
        .iter()
        .map(|a| snap.get(&a.provider).and_then(|b| verdict(b, &a.model)))
        .collect();
    if verdicts.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut out = plan.clone();
    out.attempts.clear();
    let mut dropped: Vec<(&Attempt, &Drop)> = Vec::new();
    for (a, v) in plan.attempts.iter().zip(&verdicts) {
        match v {
            None => out.attempts.push(a.clone()),
            Some(d) => {
                let label = format!("{}:{}", a.provider, a.model);
                // One line per model, not per key.
                if !out.left_out.iter().any(|l| l.model == label) {
                    out.left_out.push(LeftOut {
                        model: label,
                        reason: reason(a, d),
                    });
                }
                dropped.push((a, d));
            }
        }
    }
    if !out.attempts.is_empty() {
        return Ok(Some(out));
    }
    Err(no_candidate(&dropped))
}

fn no_candidate(dropped: &[(&Attempt, &Drop)]) -> FleetError {
    let mut down: Vec<String> = Vec::new();
    for (a, d) in dropped {
        if let Drop::Down { address, reason } = d {
            let line = format!("{} at {address} ({reason})", a.provider);
            if !down.contains(&line) {
                down.push(line);
            }
        }
    }
    let model = dropped
        .first()
        .map(|(a, _)| a.model.as_str())
        .unwrap_or("?");
    if !down.is_empty() {
        return FleetError {
            code: codes::ALL_FAILED.0,
            status: codes::ALL_FAILED.1,
            message: format!(
                "no box that can serve '{model}' is reachable: tried {}. Is `ollama serve` running there? \
                 Run `aigw probe` to check each box.",
                down.join("; ")
            ),
        };
    }
    let mut checked: Vec<String> = Vec::new();
    for (a, d) in dropped {
        if let Drop::NotInstalled { address } = d {
            let line = format!("{} at {address}", a.provider);
            if !checked.contains(&line) {
                checked.push(line);
            }
        }
    }
    not_installed(model, &checked)
}

/// 404: `model` is installed on none of `checked` (`provider at address`).
pub fn not_installed(model: &str, checked: &[String]) -> FleetError {
    FleetError {
        code: MODEL_NOT_INSTALLED.0,
        status: MODEL_NOT_INSTALLED.1,
        message: format!(
            "model '{model}' is not installed on any Ollama box (checked {}): run `ollama pull {model}` on one of them",
            checked.join(", ")
        ),
    }
}

/// For a request the engine found no candidate for: when it names a plain model (or one
/// prefixed with an Ollama box's id) and every Ollama box answered without it, the 404 with
/// `ollama pull`; when no Ollama box answers, the 503 naming them. `None`: keep the engine's
/// error (the model may be meant for another provider, or nothing is known yet).
pub fn unplanned(requested: &str, snap: &FleetSnapshot) -> Option<FleetError> {
    let ollama: Vec<&BoxStatus> = snap
        .boxes
        .iter()
        .filter(|b| b.ollama || b.health == Health::Down)
        .collect();
    if ollama.is_empty() {
        return None;
    }
    let model = match requested.split_once(':') {
        Some((prefix, rest))
            if ollama
                .iter()
                .any(|b| b.provider.eq_ignore_ascii_case(prefix)) =>
        {
            rest
        }
        _ => requested,
    };
    if model.is_empty() || model.contains('/') && model.starts_with("http") {
        return None;
    }
    if ollama.iter().any(|b| b.has_model(model) == Some(true)) {
        return None;
    }
    let down: Vec<String> = ollama
        .iter()
        .filter(|b| b.health == Health::Down)
        .map(|b| {
            format!(
                "{} at {} ({})",
                b.provider,
                b.address,
                b.last_error.as_deref().unwrap_or("it does not answer")
            )
        })
        .collect();
    let answering: Vec<String> = ollama
        .iter()
        .filter(|b| b.ollama && b.health != Health::Down && b.installed.is_some())
        .map(|b| format!("{} at {}", b.provider, b.address))
        .collect();
    if answering.is_empty() {
        if down.is_empty() {
            return None;
        }
        return Some(FleetError {
            code: codes::ALL_FAILED.0,
            status: codes::ALL_FAILED.1,
            message: format!(
                "no Ollama box answers, so '{model}' cannot be served: tried {}. Is `ollama serve` running there? \
                 Run `aigw probe` to check each box.",
                down.join("; ")
            ),
        });
    }
    let mut e = not_installed(model, &answering);
    if !down.is_empty() {
        e.message.push_str(&format!(
            " ({} did not answer, so it may have it: {})",
            if down.len() == 1 {
                "one box"
            } else {
                "some boxes"
            },
            down.join("; ")
        ));
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::super::state::{CheckResult, FleetState, LocalFleetState};
    use super::*;
    use crate::routing::plan::KeyChoice;

    fn attempt(provider: &str, model: &str) -> Attempt {
        Attempt {
            provider: provider.into(),
            model: model.into(),
            url: Some(format!("http://{provider}/v1/chat/completions")),
            key: KeyChoice::Passthrough,
            model_index: 0,
        }
    }

    fn plan(attempts: Vec<Attempt>) -> Plan {
        Plan {
            route: None,
            requested: Vec::new(),
            strategies: Vec::new(),
            attempts,
            truncated: 0,
            left_out: Vec::new(),
            error: None,
        }
    }

    /// a: down; b: up without the model; c: up with it.
    fn fleet() -> std::sync::Arc<FleetSnapshot> {
        let s = LocalFleetState::default();
        for p in ["a", "b", "c"] {
            s.track(p, &format!("http://{p}:11434"));
        }
        s.record_check(
            "a",
            CheckResult::Unreachable(
                "cannot connect to http://a:11434 (connection refused)".into(),
            ),
        );
        let ollama = |m: &[&str]| CheckResult::Ollama {
            version: "0.12.6".into(),
            installed: m.iter().map(|s| s.to_string()).collect(),
            loaded: Vec::new(),
        };
        s.record_check("b", ollama(&["mistral:latest"]));
        s.record_check("c", ollama(&["llama3.2:latest", "mistral:latest"]));
        s.snapshot()
    }

    #[test]
    fn down_boxes_and_boxes_without_the_model_are_dropped_with_the_reason() {
        let p = plan(vec![
            attempt("a", "llama3.2"),
            attempt("b", "llama3.2"),
            attempt("c", "llama3.2"),
        ]);
        let out = admit(&p, &fleet()).unwrap().unwrap();
        assert_eq!(out.order(), ["c:llama3.2"]);
        let reasons: Vec<&str> = out.left_out.iter().map(|l| l.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "a at http://a:11434 is down: cannot connect to http://a:11434 (connection refused)",
                "b at http://b:11434 does not have llama3.2 installed",
            ]
        );
    }

    #[test]
    fn nothing_dropped_keeps_the_shared_plan() {
        let p = plan(vec![
            attempt("c", "mistral"),
            attempt("b", "mistral:latest"),
        ]);
        assert!(admit(&p, &fleet()).unwrap().is_none());
    }

    #[test]
    fn every_box_down_is_503_naming_each_address_and_probe() {
        let p = plan(vec![attempt("a", "llama3.2")]);
        let e = admit(&p, &fleet()).unwrap_err();
        assert_eq!(e.status, 503);
        assert_eq!(
            e.message,
            "no box that can serve 'llama3.2' is reachable: tried a at http://a:11434 (cannot connect to \
             http://a:11434 (connection refused)). Is `ollama serve` running there? Run `aigw probe` to check each box."
        );
    }

    #[test]
    fn installed_nowhere_is_404_with_the_pull_line() {
        let p = plan(vec![attempt("b", "qwen2.5"), attempt("c", "qwen2.5")]);
        let e = admit(&p, &fleet()).unwrap_err();
        assert_eq!((e.code, e.status), MODEL_NOT_INSTALLED);
        assert_eq!(
            e.message,
            "model 'qwen2.5' is not installed on any Ollama box (checked b at http://b:11434, c at http://c:11434): \
             run `ollama pull qwen2.5` on one of them"
        );
    }

    #[test]
    fn an_unplanned_plain_name_says_pull_unless_some_box_has_it() {
        let snap = fleet();
        let e = unplanned("qwen2.5", &snap).unwrap();
        assert_eq!(e.status, 404);
        assert!(e.message.contains("`ollama pull qwen2.5`"), "{}", e.message);
        assert!(e.message.contains("a at http://a:11434"), "{}", e.message);
        assert_eq!(unplanned("b:qwen2.5", &snap).unwrap().status, 404);
        assert_eq!(unplanned("mistral", &snap), None);
        assert_eq!(unplanned("", &FleetSnapshot::default()), None);
    }
}
