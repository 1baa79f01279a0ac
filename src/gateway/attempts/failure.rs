//! Why an upstream attempt failed, and what that means for the attempts after it.
//!
//! The plan tries keys, then models, never the same (key, model) pair twice (ngrok's semantics),
//! except that aigw sends a transient failure (a 5xx, a reset) to the same pair once more by
//! default, as a careful client would.
//! Some failures say more than "try the next one":
//!
//! This is the one classification of upstream errors: the attempt loop acts on [`Next`], and
//! the README's failover table says the same (kept true by `tests/serve_faults.rs`).
//!
//! | failure                                   | what happens next                              |
//! |-------------------------------------------|------------------------------------------------|
//! | 429                                       | the model's next key if it has one (limits are per key); on its last key, wait (`Retry-After`, else backoff with jitter) and send again, within `--rate-limit-retries` and `--max-retry-wait`; else the next model |
//! | 401, 402, 403 on a configured key         | the key is refused: the next key               |
//! | 401, 402, 403 on the client's own key     | **final**: the client's credentials are wrong; nobody else is tried |
//! | 400, 422 content filter / policy          | **final**: a moderation decision the client must see, never hidden by another model |
//! | 400, 422 other invalid request            | **final**: the request itself is wrong         |
//! | 404, unknown model; 413, context length   | no other key of this model; the next model (which may know it / have a larger window) |
//! | timeout before the first byte ([`super::first_byte`]) | the route is silent: no other key of this model |
//! | 5xx (not 501/505), a reset after sending   | the same (key, model) once more after ~¼ s (`--same-pair-retries`, 0 restores ngrok's "never the same pair twice"), then the next attempt |
//! | 5xx, 408, connection errors               | the next attempt (and a failure for the model's circuit breaker) |

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use rand::Rng;

/// Why one attempt failed.
#[derive(Debug, Clone)]
pub enum Failure {
    Http {
        status: u16,
        /// The provider's message (`error.message`, `error`, `message` or the text), ≤ 200 chars.
        detail: String,
        /// The provider's `error.code` or `error.type`, when it has one.
        code: Option<String>,
        retry_after: Option<Duration>,
    },
    Connect(String),
    Timeout {
        after: Duration,
        /// The attempt's budget was the rest of `total_timeout`.
        total: bool,
        /// A first-byte limit (not `per_request_timeout`) bound it, so its reason names the flag.
        first_byte: Option<super::first_byte::Limit>,
    },
    Other(String),
}

/// What the request itself did wrong, as a provider told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    ContextLength,
    ContentPolicy,
    /// The provider does not know the model (404, `model_not_found`).
    UnknownModel,
    /// Anything else the provider called a bad request (a bad parameter…).
    Invalid,
}

/// What a failure means for the attempts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Rate limited: the same attempt may be sent again after a wait.
    RateLimited(Option<Duration>),
    /// The key was refused: the next key of the same model may work.
    NextKey,
    /// The request was refused (or the route is silent): skip the other keys of this model.
    NextModel(Option<Rejection>),
    /// The provider is in trouble: carry on as planned.
    NextAttempt,
    /// The answer is final: nobody else is tried (a content filter's decision, an invalid
    /// request, the client's own key refused). `None` is the client's key.
    Final(Option<Rejection>),
}

impl Next {
    /// The class's name, for logs and documentation.
    pub fn name(self) -> &'static str {
        match self {
            Next::RateLimited(_) => "rate limited: wait and retry, or next key",
            Next::NextKey => "next key",
            Next::NextModel(_) => "next model",
            Next::NextAttempt => "next candidate",
            Next::Final(_) => "final",
        }
    }
}

impl Failure {
    /// The `outcome` label of `aigw_attempts_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Failure::Http { status: 429, .. } => "rate_limited",
            Failure::Http { .. } if self.rejection().is_some() => "rejected",
            Failure::Http { .. } => "http_error",
            Failure::Connect(_) => "connect_error",
            Failure::Timeout { .. } => "timeout",
            Failure::Other(_) => "error",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Failure::Http { status, detail, .. } if detail.is_empty() => format!("HTTP {status}"),
            Failure::Http { status, detail, .. } => format!("HTTP {status} ({detail})"),
            Failure::Connect(s) | Failure::Other(s) => s.clone(),
            Failure::Timeout {
                after, first_byte, ..
            } => {
                let after = crate::policy::duration::format(*after);
                match first_byte {
                    None => format!("timed out after {after}"),
                    Some(super::first_byte::Limit::FirstByte) => format!(
                        "timed out after {after} before its first byte (--first-byte-timeout)"
                    ),
                    Some(super::first_byte::Limit::ColdStart) => {
                        format!("timed out after {after} loading the model (--cold-start-timeout)")
                    }
                }
            }
        }
    }

    /// The request itself was refused, and would be by any key of this model.
    pub fn rejection(&self) -> Option<Rejection> {
        let Failure::Http {
            status,
            detail,
            code,
            ..
        } = self
        else {
            return None;
        };
        if !matches!(status, 400 | 404 | 413 | 422) {
            return None;
        }
        let text = format!("{} {}", code.as_deref().unwrap_or(""), detail).to_ascii_lowercase();
        const CONTEXT: &[&str] = &[
            "context_length",
            "context length",
            "maximum context",
            "prompt is too long",
            "too many tokens",
            "request_too_large",
        ];
        const POLICY: &[&str] = &[
            "content_policy",
            "content policy",
            "content_filter",
            "content filtering",
            "safety system",
            "safety filter",
            "moderation",
        ];
        const UNKNOWN_MODEL: &[&str] = &["model_not_found", "not_found_error"];
        Some(if CONTEXT.iter().any(|p| text.contains(p)) {
            Rejection::ContextLength
        } else if POLICY.iter().any(|p| text.contains(p)) {
            Rejection::ContentPolicy
        } else if *status == 404 || UNKNOWN_MODEL.iter().any(|p| text.contains(p)) {
            Rejection::UnknownModel
        } else if *status == 413 {
            Rejection::ContextLength
        } else {
            Rejection::Invalid
        })
    }

    /// What comes after this failure, given whose key the attempt carried.
    pub fn next_for(&self, clients_key: bool) -> Next {
        match self.next() {
            Next::NextKey if clients_key => Next::Final(None),
            next => next,
        }
    }

    pub fn next(&self) -> Next {
        match self {
            Failure::Http {
                status: 429,
                retry_after,
                ..
            } => Next::RateLimited(*retry_after),
            Failure::Http {
                status: 401..=403, ..
            } => Next::NextKey,
            Failure::Http { .. } => match self.rejection() {
                Some(r @ (Rejection::ContentPolicy | Rejection::Invalid)) => Next::Final(Some(r)),
                Some(r) => Next::NextModel(Some(r)),
                None => Next::NextAttempt,
            },
            // Do not retry a silent route: another key would wait just as long.
            Failure::Timeout { .. } => Next::NextModel(None),
            Failure::Connect(_) | Failure::Other(_) => Next::NextAttempt,
        }
    }

    /// A blip that the same (key, model) may well not repeat: a 5xx that is not "not
    /// implemented"/"version not supported", or a connection that broke after the request was
    /// sent (a reset). A refused connection is not: the provider is down, not blinking.
    pub fn is_transient(&self) -> bool {
        match self {
            Failure::Http { status, .. } => *status >= 500 && !matches!(status, 501 | 505),
            Failure::Other(_) => true,
            Failure::Connect(_) | Failure::Timeout { .. } => false,
        }
    }

    /// Whether this failure says the provider (not the request or the key) is unwell: these
    /// open a model's circuit.
    pub fn counts_against_provider(&self) -> bool {
        match self {
            Failure::Http { status, .. } => *status >= 500 || *status == 408,
            Failure::Connect(_) | Failure::Timeout { .. } | Failure::Other(_) => true,
        }
    }
}

/// The provider's reason from an error body: `error.message`, `error`, `message` or the text,
/// and `error.code` / `error.type`.
pub fn parse_error_body(body: &[u8]) -> (String, Option<String>) {
    let text = String::from_utf8_lossy(body);
    let (detail, code) = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => {
            let detail = v
                .pointer("/error/message")
                .or_else(|| v.get("error"))
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str().map(String::from))
                .unwrap_or_else(|| text.trim().to_string());
            let code = ["/error/code", "/error/type"]
                .iter()
                .find_map(|p| v.pointer(p).and_then(|c| c.as_str()))
                .map(String::from);
            (detail, code)
        }
        Err(_) => (text.trim().to_string(), None),
    };
    let mut short: String = detail
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if short.chars().count() == 200 && detail.chars().count() > 200 {
        short.push('…');
    }
    (short, code)
}

/// How long a 429 asks us to wait: `retry-after-ms` (OpenAI), else `Retry-After` in seconds or
/// as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let v = text("retry-after")?;
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Retrying a rate-limited attempt.
#[derive(Debug, Clone, Copy)]
pub struct RetryOptions {
    /// How many times one attempt may be sent again after a 429 (0: fail over at once).
    pub rate_limit_retries: u32,
    /// The longest wait aigw accepts before sending again; a longer `Retry-After` fails over.
    pub max_wait: Duration,
    /// The first backoff step when a 429 has no `Retry-After`; it doubles each time. Also the
    /// step before sending a transient failure to the same pair again.
    pub backoff_base: Duration,
    /// How many times the same (key, model) is sent again after a transient failure (a 5xx, a
    /// reset) before moving on; 0 is ngrok's "never the same pair twice".
    pub same_pair_retries: u32,
}

/// Why a rate-limited request is not sent again to the same model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRetry {
    #[error("rate limited (retries are off: --rate-limit-retries 0)")]
    Off,
    #[error("still rate limited after {0} retries")]
    Exhausted(u32),
    #[error("Retry-After {wait} is longer than --max-retry-wait {max}")]
    TooLong { wait: String, max: String },
    #[error("waiting {0} would pass total_timeout")]
    PastTotal(String),
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            rate_limit_retries: 2,
            max_wait: Duration::from_secs(20),
            backoff_base: Duration::from_millis(250),
            same_pair_retries: 1,
        }
    }
}

impl RetryOptions {
    /// The wait before sending a transiently failed attempt to the same pair again (retry
    /// number `retry`, 0-based), or `None` when it should move on: out of retries, or the wait
    /// would pass `total_timeout`. Half a backoff step plus jitter: long enough for a blip to
    /// pass, short next to a fallback's latency.
    pub fn same_pair_wait(
        &self,
        retry: u32,
        remaining: Duration,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        if retry >= self.same_pair_retries {
            return None;
        }
        let half = self.backoff_base / 2;
        let wait = half + half.mul_f64(rng.random::<f64>());
        (wait < remaining).then_some(wait)
    }

    /// The wait before retry number `retry` (0-based) of a 429, or why there is none.
    ///
    /// Without `Retry-After` the step doubles from `backoff_base` and is drawn from its upper
    /// half (equal jitter): clients that were limited together spread out, and no wait is ever
    /// shorter than half a step, so there is never a tight loop.
    pub fn wait(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        remaining: Duration,
        rng: &mut impl Rng,
    ) -> Result<Duration, NoRetry> {
        if retry >= self.rate_limit_retries {
            return Err(match self.rate_limit_retries {
                0 => NoRetry::Off,
                n => NoRetry::Exhausted(n),
            });
        }
        let wait = match retry_after {
            Some(d) => d,
            None => {
                let step = self
                    .backoff_base
                    .saturating_mul(1u32 << retry.min(16))
                    .min(self.max_wait);
                let half = step / 2;
                half + half.mul_f64(rng.random::<f64>())
            }
        };
        let fmt = crate::policy::duration::format;
        if wait > self.max_wait {
            return Err(NoRetry::TooLong {
                wait: fmt(wait),
                max: fmt(self.max_wait),
            });
        }
        if wait >= remaining {
            return Err(NoRetry::PastTotal(fmt(wait)));
        }
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use rand::SeedableRng;

    fn http(status: u16, detail: &str, code: Option<&str>) -> Failure {
        Failure::Http {
            status,
            detail: detail.into(),
            code: code.map(String::from),
            retry_after: None,
        }
    }

    #[test]
    fn classifies_what_comes_next() {
        assert_eq!(http(401, "bad key", None).next(), Next::NextKey);
        assert_eq!(http(503, "", None).next(), Next::NextAttempt);
        assert_eq!(
            http(400, "max", Some("context_length_exceeded")).next(),
            Next::NextModel(Some(Rejection::ContextLength))
        );
        assert_eq!(
            http(400, "prompt is too long: 210000 tokens", None).rejection(),
            Some(Rejection::ContextLength)
        );
        assert_eq!(
            http(400, "rejected", Some("content_policy_violation")).rejection(),
            Some(Rejection::ContentPolicy)
        );
        assert_eq!(
            http(400, "unknown parameter", None).rejection(),
            Some(Rejection::Invalid)
        );
        assert_eq!(
            http(400, "rejected", Some("content_filter")).next(),
            Next::Final(Some(Rejection::ContentPolicy))
        );
        assert_eq!(
            http(400, "unknown parameter", None).next(),
            Next::Final(Some(Rejection::Invalid))
        );
        assert_eq!(
            http(404, "model 'x' not found", None).next(),
            Next::NextModel(Some(Rejection::UnknownModel))
        );
        assert_eq!(
            http(400, "no such model", Some("model_not_found")).next(),
            Next::NextModel(Some(Rejection::UnknownModel))
        );
        assert_eq!(
            http(413, "", None).next(),
            Next::NextModel(Some(Rejection::ContextLength))
        );
        assert_eq!(http(401, "bad key", None).next_for(true), Next::Final(None));
        assert_eq!(http(401, "bad key", None).next_for(false), Next::NextKey);
        assert_eq!(http(500, "", None).rejection(), None);
        let t = Failure::Timeout {
            after: Duration::from_secs(1),
            total: false,
            first_byte: None,
        };
        assert_eq!(t.next(), Next::NextModel(None));
        assert!(t.counts_against_provider());
        assert!(!http(400, "", None).counts_against_provider());
        assert!(!http(429, "", None).counts_against_provider());
    }

    #[test]
    fn transient_failures_get_one_more_try_on_the_same_pair() {
        assert!(http(500, "", None).is_transient());
        assert!(http(503, "", None).is_transient());
        assert!(!http(501, "", None).is_transient());
        assert!(!http(400, "", None).is_transient());
        assert!(!http(429, "", None).is_transient());
        assert!(Failure::Other("connection reset".into()).is_transient());
        assert!(!Failure::Connect("connection refused".into()).is_transient());
        let opts = RetryOptions::default();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let long = Duration::from_secs(10);
        let w = opts.same_pair_wait(0, long, &mut rng).unwrap();
        assert!(w >= opts.backoff_base / 2 && w <= opts.backoff_base);
        assert_eq!(opts.same_pair_wait(1, long, &mut rng), None);
        assert_eq!(
            opts.same_pair_wait(0, Duration::from_millis(10), &mut rng),
            None
        );
        let ngrok = RetryOptions {
            same_pair_retries: 0,
            ..opts
        };
        assert_eq!(ngrok.same_pair_wait(0, long, &mut rng), None);
    }

    #[test]
    fn reads_retry_after() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_doubles_with_equal_jitter_and_respects_budgets() {
        let opts = RetryOptions::default();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let long = Duration::from_secs(100);
        for retry in 0..2 {
            let step = opts.backoff_base * (1 << retry);
            let w = opts.wait(retry, None, long, &mut rng).unwrap();
            assert!(w >= step / 2 && w <= step, "{w:?} for step {step:?}");
        }
        assert!(opts.wait(2, None, long, &mut rng).is_err());
        let ra = Some(Duration::from_secs(3));
        assert_eq!(
            opts.wait(0, ra, long, &mut rng).unwrap(),
            Duration::from_secs(3)
        );
        assert!(
            opts.wait(0, Some(Duration::from_secs(60)), long, &mut rng)
                .unwrap_err()
                .to_string()
                .contains("--max-retry-wait")
        );
        assert!(
            opts.wait(0, ra, Duration::from_secs(1), &mut rng)
                .unwrap_err()
                .to_string()
                .contains("total_timeout")
        );
    }

    #[test]
    fn error_bodies() {
        let (d, c) = parse_error_body(
            br#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
        );
        assert_eq!(
            (d.as_str(), c.as_deref()),
            ("too long", Some("context_length_exceeded"))
        );
        let (d, c) = parse_error_body(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
        );
        assert_eq!(
            (d.as_str(), c.as_deref()),
            ("busy", Some("overloaded_error"))
        );
        let (d, c) = parse_error_body(br#"{"error":"model not found"}"#);
        assert_eq!((d.as_str(), c), ("model not found", None));
        let (d, _) = parse_error_body(&[b'x'; 500]);
        assert!(d.ends_with('…'));
    }
}
