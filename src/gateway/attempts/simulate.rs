//! A dry run of the attempt loop, for `explain --fail` and `aigw test`'s `fail:`: each
//! candidate's simulated failure is classified by the table serve acts on ([`super::failure`]),
//! and the walk does what serve's loop would do next: send the same pair again after a
//! transient failure, skip the other keys of a model that refused the request or stayed
//! silent, stop at a final error. A simulated failure is taken to persist, so every send to
//! that candidate fails the same way.

use std::str::FromStr;

use serde::Serialize;

use super::failure::{Failure, Next, RetryOptions};
use crate::routing::plan::{Attempt, KeyChoice};

/// The errors `--fail` can simulate, as the user names them.
pub const ERROR_NAMES: &str =
    "down, timeout, reset, a status (400…599), content_filter, context_length, unknown_model";

/// `PROVIDER[:MODEL][=ERROR]`: which candidates fail, and how (`down` when not said).
#[derive(Debug, Clone, PartialEq)]
pub struct FailSpec {
    pub provider: String,
    pub model: Option<String>,
    pub error: SimError,
}

/// One simulated upstream error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimError {
    /// Nothing listens (connection refused).
    Down,
    /// No first byte within the attempt's budget.
    Timeout,
    /// The connection broke after the request was sent.
    Reset,
    /// The provider answered with this status (its plain reason).
    Status(u16),
    /// 400 `content_filter`: a moderation decision.
    ContentFilter,
    /// 400 `context_length_exceeded`.
    ContextLength,
    /// 404 `model_not_found`.
    UnknownModel,
}

/// Why a `--fail` value is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailSpecError {
    #[error(
        "`{0}` names no provider; write PROVIDER[:MODEL][=ERROR], e.g. ollama or openai:gpt-4o=503"
    )]
    NoProvider(String),
    #[error("unknown error `{0}`; use one of: {ERROR_NAMES}")]
    UnknownError(String),
}

impl FromStr for FailSpec {
    type Err = FailSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (target, error) = match s.rsplit_once('=') {
            Some((t, e)) => (t, e.trim().parse()?),
            None => (s, SimError::Down),
        };
        let (provider, model) = match target.split_once(':') {
            Some((p, m)) => (p.trim(), Some(m.trim().to_string())),
            None => (target.trim(), None),
        };
        if provider.is_empty() {
            return Err(FailSpecError::NoProvider(s.to_string()));
        }
        Ok(FailSpec {
            provider: provider.to_string(),
            model: model.filter(|m| !m.is_empty()),
            error,
        })
    }
}

impl FromStr for SimError {
    type Err = FailSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "down" | "refused" => SimError::Down,
            "timeout" => SimError::Timeout,
            "reset" => SimError::Reset,
            "content_filter" | "content_policy" => SimError::ContentFilter,
            "context_length" => SimError::ContextLength,
            "unknown_model" => SimError::UnknownModel,
            "rate_limited" => SimError::Status(429),
            other => match other.parse::<u16>() {
                Ok(n @ 400..=599) => SimError::Status(n),
                _ => return Err(FailSpecError::UnknownError(s.to_string())),
            },
        })
    }
}

impl SimError {
    /// The failure serve would see.
    pub fn failure(self) -> Failure {
        let http = |status: u16, detail: &str, code: Option<&str>| Failure::Http {
            status,
            detail: detail.to_string(),
            code: code.map(String::from),
            retry_after: None,
        };
        match self {
            SimError::Down => Failure::Connect("connection refused".into()),
            SimError::Timeout => Failure::Timeout {
                after: super::forward::DEFAULT_PER_REQUEST_TIMEOUT,
                total: false,
                first_byte: None,
            },
            SimError::Reset => Failure::Other("connection reset".into()),
            SimError::Status(status) => http(status, "", None),
            SimError::ContentFilter => http(
                400,
                "the request was rejected by the content filter",
                Some("content_filter"),
            ),
            SimError::ContextLength => http(
                400,
                "the prompt is longer than the model's context",
                Some("context_length_exceeded"),
            ),
            SimError::UnknownModel => {
                http(404, "the model does not exist", Some("model_not_found"))
            }
        }
    }
}

impl FailSpec {
    /// Whether this spec names the attempt's provider (by id or alias) and model.
    pub fn matches(&self, a: &Attempt, aliases: &[String]) -> bool {
        let provider = a.provider.eq_ignore_ascii_case(&self.provider)
            || aliases
                .iter()
                .any(|x| x.eq_ignore_ascii_case(&self.provider));
        provider
            && self
                .model
                .as_ref()
                .is_none_or(|m| a.model.eq_ignore_ascii_case(m))
    }
}

/// What the loop did with one candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Step {
    Answers,
    Fails {
        /// The failure as serve's logs word it.
        error: String,
        /// Its class in the failure table ([`Next::name`]).
        class: &'static str,
        /// Sends of this pair, retries included.
        sends: u32,
    },
    /// Not sent: its model already refused the request or stayed silent.
    Skipped,
    /// The loop ended before it.
    NotTried,
}

/// The whole dry run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Walk {
    pub steps: Vec<Step>,
    /// The candidate that answers.
    pub answer: Option<usize>,
    /// A final failure: the client gets this candidate's answer.
    pub final_at: Option<FinalAt>,
}

/// The candidate whose refusal is final, and the status the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FinalAt {
    pub index: usize,
    pub status: u16,
}

impl Walk {
    /// Whether any candidate was simulated as failing.
    pub fn simulates(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Fails { .. }))
    }
}

/// Walks `attempts` as serve's loop would, with `fails[i]` the error candidate `i` gives
/// (`None`: it answers).
pub fn walk(attempts: &[Attempt], fails: &[Option<SimError>], retry: &RetryOptions) -> Walk {
    let mut steps = vec![Step::NotTried; attempts.len()];
    let mut done_models: Vec<(&str, &str)> = Vec::new();
    for (i, a) in attempts.iter().enumerate() {
        if done_models.contains(&(a.provider.as_str(), a.model.as_str())) {
            steps[i] = Step::Skipped;
            continue;
        }
        let Some(error) = fails.get(i).copied().flatten() else {
            steps[i] = Step::Answers;
            return Walk {
                steps,
                answer: Some(i),
                final_at: None,
            };
        };
        let failure = error.failure();
        let next = failure.next_for(matches!(a.key, KeyChoice::Passthrough));
        let other_key = attempts[i + 1..]
            .iter()
            .any(|b| b.provider == a.provider && b.model == a.model);
        let sends = 1 + match next {
            Next::RateLimited(_) if !other_key => retry.rate_limit_retries,
            _ if failure.is_transient() => retry.same_pair_retries,
            _ => 0,
        };
        // The real budget depends on the policy and the request; the dry run does not guess.
        let described = match error {
            SimError::Timeout => "no answer within the attempt's budget".to_string(),
            _ => failure.describe(),
        };
        steps[i] = Step::Fails {
            error: described,
            class: next.name(),
            sends,
        };
        match next {
            Next::Final(_) => {
                let status = match failure {
                    Failure::Http { status, .. } => status,
                    _ => 502,
                };
                return Walk {
                    steps,
                    answer: None,
                    final_at: Some(FinalAt { index: i, status }),
                };
            }
            Next::NextModel(_) => done_models.push((&a.provider, &a.model)),
            _ => {}
        }
    }
    Walk {
        steps,
        answer: None,
        final_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(provider: &str, model: &str, key: Option<usize>) -> Attempt {
        Attempt {
            provider: provider.into(),
            model: model.into(),
            url: None,
            key: match key {
                None => KeyChoice::Passthrough,
                Some(index) => KeyChoice::Configured {
                    index,
                    label: format!("k{index}"),
                },
            },
            model_index: 0,
        }
    }

    #[test]
    fn parses_what_users_write() {
        let s: FailSpec = "ollama".parse().unwrap();
        assert_eq!(
            (s.provider.as_str(), s.model, s.error),
            ("ollama", None, SimError::Down)
        );
        let s: FailSpec = "ollama:llama3.2:latest=503".parse().unwrap();
        assert_eq!(s.model.as_deref(), Some("llama3.2:latest"));
        assert_eq!(s.error, SimError::Status(503));
        let s: FailSpec = "openai=content_filter".parse().unwrap();
        assert_eq!(s.error, SimError::ContentFilter);
        assert_eq!(
            "openai=bogus".parse::<FailSpec>(),
            Err(FailSpecError::UnknownError("bogus".into()))
        );
        assert!("openai=200".parse::<FailSpec>().is_err());
        assert!("=503".parse::<FailSpec>().is_err());
    }

    #[test]
    fn a_content_filter_is_final_and_nobody_else_is_tried() {
        let plan = [
            attempt("openai", "gpt-4o", Some(0)),
            attempt("ollama", "llama3.2", None),
        ];
        let w = walk(
            &plan,
            &[Some(SimError::ContentFilter), None],
            &RetryOptions::default(),
        );
        assert_eq!(w.answer, None);
        assert_eq!(
            w.final_at,
            Some(FinalAt {
                index: 0,
                status: 400
            })
        );
        assert!(matches!(w.steps[0], Step::Fails { class: "final", .. }));
        assert_eq!(w.steps[1], Step::NotTried);
    }

    #[test]
    fn a_transient_error_is_sent_twice_then_the_next_candidate_answers() {
        let plan = [
            attempt("openai", "gpt-4o", Some(0)),
            attempt("ollama", "llama3.2", None),
        ];
        let w = walk(
            &plan,
            &[Some(SimError::Status(500)), None],
            &RetryOptions::default(),
        );
        assert_eq!(w.answer, Some(1));
        assert!(matches!(
            w.steps[0],
            Step::Fails {
                sends: 2,
                class: "next candidate",
                ..
            }
        ));
        let ngrok = RetryOptions {
            same_pair_retries: 0,
            ..RetryOptions::default()
        };
        let w = walk(&plan, &[Some(SimError::Status(500)), None], &ngrok);
        assert!(matches!(w.steps[0], Step::Fails { sends: 1, .. }));
    }

    #[test]
    fn a_silent_model_skips_its_other_keys_and_a_refused_key_tries_the_next() {
        let plan = [
            attempt("openai", "gpt-4o", Some(0)),
            attempt("openai", "gpt-4o", Some(1)),
            attempt("ollama", "llama3.2", None),
        ];
        let t = Some(SimError::Timeout);
        let w = walk(&plan, &[t, t, None], &RetryOptions::default());
        assert_eq!(w.steps[1], Step::Skipped);
        assert_eq!(w.answer, Some(2));
        let w = walk(
            &plan,
            &[Some(SimError::Status(401)), None, None],
            &RetryOptions::default(),
        );
        assert!(matches!(
            w.steps[0],
            Step::Fails {
                class: "next key",
                ..
            }
        ));
        assert_eq!(w.answer, Some(1));
    }

    #[test]
    fn the_clients_own_key_refused_is_final_and_everyone_down_is_3807() {
        let plan = [
            attempt("openai", "gpt-4o", None),
            attempt("ollama", "llama3.2", None),
        ];
        let w = walk(
            &plan,
            &[Some(SimError::Status(401)), None],
            &RetryOptions::default(),
        );
        assert_eq!(
            w.final_at,
            Some(FinalAt {
                index: 0,
                status: 401
            })
        );
        let down = Some(SimError::Down);
        let w = walk(&plan, &[down, down], &RetryOptions::default());
        assert_eq!((w.answer, w.final_at), (None, None));
        assert!(w.simulates());
    }

    #[test]
    fn a_rate_limit_on_the_last_key_is_retried() {
        let plan = [
            attempt("openai", "gpt-4o", Some(0)),
            attempt("ollama", "llama3.2", None),
        ];
        let w = walk(
            &plan,
            &[Some(SimError::Status(429)), None],
            &RetryOptions::default(),
        );
        assert!(matches!(w.steps[0], Step::Fails { sends: 3, .. }));
        assert_eq!(w.answer, Some(1));
    }
}
