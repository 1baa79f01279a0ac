//! Circuit breakers, one per `provider:model`.
//!
//! After `failures` consecutive failures that blame the provider (5xx, 408, connection errors,
//! timeouts: see [`super::failure::Failure::counts_against_provider`]) the circuit opens: for
//! `cooldown` the model is skipped and traffic goes to the plan's next candidates. Then one
//! request is let through as a probe; its success closes the circuit, its failure opens it for
//! another `cooldown`. A probe that never reports (its client went away) is replaced after
//! `cooldown`. A refused key or request is an answer, so it closes the circuit like a success;
//! a rate limit leaves it as it is. ngrok has no circuit breaker; `--breaker-failures 0` turns it off.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct BreakerOptions {
    /// Consecutive failures that open a circuit (0: never).
    pub failures: u32,
    pub cooldown: Duration,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        BreakerOptions {
            failures: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    consecutive: u32,
    open_until: Option<Instant>,
    probe_since: Option<Instant>,
}

/// Whether an attempt may go to a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Closed,
    /// The circuit is open but its cooldown is over: this attempt is the probe.
    Probe,
    /// Skip it: the circuit is open.
    Open {
        failures: u32,
        retry_in: Duration,
    },
}

#[derive(Debug, Default)]
pub struct Breakers {
    opts: Option<BreakerOptions>,
    /// Only models that failed recently have an entry; a success removes it.
    states: Mutex<HashMap<String, State>>,
}

fn key(provider: &str, model: &str) -> String {
    format!("{provider}:{model}")
}

impl Breakers {
    pub fn new(opts: BreakerOptions) -> Self {
        Breakers {
            opts: (opts.failures > 0).then_some(opts),
            states: Mutex::default(),
        }
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn admit(&self, provider: &str, model: &str, now: Instant) -> Admit {
        let Some(opts) = self.opts else {
            return Admit::Closed;
        };
        let mut states = self.states();
        if states.is_empty() {
            return Admit::Closed;
        }
        let Some(s) = states.get_mut(&key(provider, model)) else {
            return Admit::Closed;
        };
        let Some(until) = s.open_until else {
            return Admit::Closed;
        };
        let probing = s
            .probe_since
            .is_some_and(|t| now.duration_since(t) < opts.cooldown);
        if now < until || probing {
            let retry_in = until
                .max(s.probe_since.map_or(until, |t| t + opts.cooldown))
                .saturating_duration_since(now);
            return Admit::Open {
                failures: s.consecutive,
                retry_in,
            };
        }
        s.probe_since = Some(now);
        Admit::Probe
    }

    pub fn success(&self, provider: &str, model: &str) {
        if self.opts.is_none() {
            return;
        }
        let mut states = self.states();
        if !states.is_empty() {
            states.remove(&key(provider, model));
        }
    }

    pub fn failure(&self, provider: &str, model: &str, now: Instant) {
        let Some(opts) = self.opts else { return };
        let mut states = self.states();
        let s = states.entry(key(provider, model)).or_default();
        s.consecutive = s.consecutive.saturating_add(1);
        if s.probe_since.take().is_some() || s.consecutive >= opts.failures {
            if s.open_until.is_none_or(|t| t <= now) {
                tracing::warn!(
                    "circuit open for {provider}:{model} after {} consecutive failures; retrying it in {}",
                    s.consecutive,
                    crate::policy::duration::format(opts.cooldown)
                );
            }
            s.open_until = Some(now + opts.cooldown);
        }
    }

    /// `aigw_circuit_open{provider_model}` gauges for `/metrics`.
    pub fn render(&self, now: Instant) -> String {
        let mut out = String::from(
            "# HELP aigw_circuit_open Whether a model's circuit is open (1) after consecutive failures.\n# TYPE aigw_circuit_open gauge\n",
        );
        let states = self.states();
        let mut open: Vec<(&String, bool)> = states
            .iter()
            .filter(|(_, s)| s.open_until.is_some())
            .map(|(k, s)| (k, s.open_until.is_some_and(|t| t > now)))
            .collect();
        open.sort();
        for (k, is_open) in open {
            let k = k.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "aigw_circuit_open{{model=\"{k}\"}} {}",
                u8::from(is_open)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_and_closes() {
        let b = Breakers::new(BreakerOptions {
            failures: 2,
            cooldown: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        assert_eq!(b.admit("p", "m", t0), Admit::Closed);
        b.failure("p", "m", t0);
        assert_eq!(b.admit("p", "m", t0), Admit::Closed);
        b.failure("p", "m", t0);
        assert!(matches!(
            b.admit("p", "m", t0 + Duration::from_secs(1)),
            Admit::Open { failures: 2, retry_in } if retry_in == Duration::from_secs(9)
        ));
        assert_eq!(b.admit("p", "other", t0), Admit::Closed);
        let later = t0 + Duration::from_secs(11);
        assert_eq!(b.admit("p", "m", later), Admit::Probe);
        // One probe at a time.
        assert!(matches!(b.admit("p", "m", later), Admit::Open { .. }));
        // The probe fails: open again for a whole cooldown.
        b.failure("p", "m", later);
        assert!(matches!(
            b.admit("p", "m", later + Duration::from_secs(9)),
            Admit::Open { .. }
        ));
        let again = later + Duration::from_secs(10);
        assert_eq!(b.admit("p", "m", again), Admit::Probe);
        b.success("p", "m");
        assert_eq!(b.admit("p", "m", again), Admit::Closed);
        assert!(b.render(again).lines().count() == 2);
    }

    #[test]
    fn a_lost_probe_is_replaced_after_the_cooldown() {
        let b = Breakers::new(BreakerOptions {
            failures: 1,
            cooldown: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        b.failure("p", "m", t0);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.admit("p", "m", t1), Admit::Probe);
        assert!(matches!(b.admit("p", "m", t1), Admit::Open { .. }));
        assert_eq!(
            b.admit("p", "m", t1 + Duration::from_secs(10)),
            Admit::Probe
        );
    }

    #[test]
    fn off_means_always_closed() {
        let b = Breakers::new(BreakerOptions {
            failures: 0,
            cooldown: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        for _ in 0..10 {
            b.failure("p", "m", t0);
        }
        assert_eq!(b.admit("p", "m", t0), Admit::Closed);
    }
}
