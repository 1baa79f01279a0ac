//! Circuit breakers, one per `provider:model`.
//!
//! After `failures` consecutive failures that blame the provider (5xx, 408, connection errors,
//! timeouts: see [`super::failure::Failure::counts_against_provider`]) the circuit opens: for
//! `cooldown` the model is skipped and traffic goes to the plan's next candidates. Then it is
//! half-open: one request is let through as a probe; its success closes the circuit, its
//! failure opens it again for twice as long as the last time (backoff while it keeps failing,
//! up to [`MAX_BACKOFF`] or the cooldown if that is longer). A probe that never reports (its
//! client went away) is replaced after `cooldown`. A refused key or request is an answer, so
//! it closes the circuit like a success; a rate limit leaves it as it is. An open circuit only
//! diverts traffic: the attempt loop still tries a model whose circuit is open when no other
//! candidate is left (`super::run`). ngrok has no circuit breaker; `--breaker-failures 0`
//! turns it off.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::gateway::shared::{Event, Outbox};

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
            // Short, because probing backs off: a provider that is back gets traffic again
            // within seconds, one that stays down costs one probe per (doubling) cooldown.
            cooldown: Duration::from_secs(5),
        }
    }
}

/// The longest an open circuit waits between probes (unless the cooldown is longer).
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct State {
    consecutive: u32,
    open_until: Option<Instant>,
    probe_since: Option<Instant>,
    /// How long the circuit was last opened for (doubles with each failed probe).
    open_for: Duration,
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

/// One circuit as the status page shows it. Models without an entry are closed with no
/// recent failures.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Circuit {
    pub provider: String,
    pub model: String,
    /// `closed` (failing, below the threshold), `open`, `half-open` (the next request probes)
    /// or `probing` (a probe is under way).
    pub state: &'static str,
    pub consecutive_failures: u32,
    pub retry_in_ms: u64,
}

#[derive(Debug, Default)]
pub struct Breakers {
    opts: Option<BreakerOptions>,
    /// Only models that failed recently have an entry; a success removes it.
    states: Mutex<HashMap<String, State>>,
    /// Where openings and closings go for the other replicas (`--state`).
    outbox: Outbox,
}

fn key(provider: &str, model: &str) -> String {
    format!("{provider}:{model}")
}

impl Breakers {
    pub fn new(opts: BreakerOptions) -> Self {
        Breakers {
            opts: (opts.failures > 0).then_some(opts),
            states: Mutex::default(),
            outbox: Outbox::default(),
        }
    }

    /// Shares this replica's openings and closings through `outbox`.
    pub fn with_outbox(mut self, outbox: Outbox) -> Self {
        self.outbox = outbox;
        self
    }

    /// Applies what another replica learned: its circuit opened (for `open_for` from now) or
    /// closed. Never published again.
    pub fn apply(&self, event: &Event, now: Instant) {
        if self.opts.is_none() {
            return;
        }
        match event {
            Event::BreakerOpen {
                provider,
                model,
                failures,
                open_ms,
            } => {
                let open_for = Duration::from_millis(*open_ms);
                let mut states = self.states();
                let s = states.entry(key(provider, model)).or_default();
                s.consecutive = s.consecutive.max(*failures);
                s.open_for = open_for;
                s.probe_since = None;
                if s.open_until.is_none_or(|t| t < now + open_for) {
                    s.open_until = Some(now + open_for);
                }
            }
            Event::BreakerClosed { provider, model } => {
                self.states().remove(&key(provider, model));
            }
            _ => {}
        }
    }

    /// The circuits open now, as events, for republishing after the shared store was away.
    pub fn open_events(&self, now: Instant) -> Vec<Event> {
        self.circuits(now)
            .into_iter()
            .filter(|c| c.retry_in_ms > 0)
            .map(|c| Event::BreakerOpen {
                provider: c.provider,
                model: c.model,
                failures: c.consecutive_failures,
                open_ms: c.retry_in_ms,
            })
            .collect()
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
        if !states.is_empty()
            && let Some(s) = states.remove(&key(provider, model))
            && s.open_until.is_some()
        {
            self.outbox.send(Event::BreakerClosed {
                provider: provider.to_string(),
                model: model.to_string(),
            });
        }
    }

    pub fn failure(&self, provider: &str, model: &str, now: Instant) {
        let Some(opts) = self.opts else { return };
        let mut states = self.states();
        let s = states.entry(key(provider, model)).or_default();
        s.consecutive = s.consecutive.saturating_add(1);
        let probe_failed = s.probe_since.take().is_some();
        if probe_failed || s.consecutive >= opts.failures {
            let was_open = s.open_until.is_some();
            s.open_for = if probe_failed && was_open {
                s.open_for
                    .saturating_mul(2)
                    .min(MAX_BACKOFF.max(opts.cooldown))
            } else if was_open {
                s.open_for.max(opts.cooldown)
            } else {
                opts.cooldown
            };
            if s.open_until.is_none_or(|t| t <= now) {
                tracing::warn!(
                    "circuit open for {provider}:{model} after {} consecutive failures; probing it again in {}",
                    s.consecutive,
                    crate::policy::duration::format(s.open_for)
                );
            }
            s.open_until = Some(now + s.open_for);
            self.outbox.send(Event::BreakerOpen {
                provider: provider.to_string(),
                model: model.to_string(),
                failures: s.consecutive,
                open_ms: s.open_for.as_millis().min(u64::MAX as u128) as u64,
            });
        }
    }

    /// Every circuit that failed recently, for the status page; sorted by `provider:model`.
    pub fn circuits(&self, now: Instant) -> Vec<Circuit> {
        let Some(opts) = self.opts else {
            return Vec::new();
        };
        let states = self.states();
        let mut out: Vec<Circuit> = states
            .iter()
            .map(|(k, s)| {
                let (provider, model) = k.split_once(':').unwrap_or((k.as_str(), ""));
                let open = s.open_until.is_some_and(|t| t > now);
                let probing = s
                    .probe_since
                    .is_some_and(|t| now.duration_since(t) < opts.cooldown);
                Circuit {
                    provider: provider.to_string(),
                    model: model.to_string(),
                    state: if probing {
                        "probing"
                    } else if open {
                        "open"
                    } else if s.open_until.is_some() {
                        // Cooldown over: the next request is let through as the probe.
                        "half-open"
                    } else {
                        "closed"
                    },
                    consecutive_failures: s.consecutive,
                    retry_in_ms: s
                        .open_until
                        .map_or(0, |t| t.saturating_duration_since(now).as_millis() as u64),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.provider, &a.model).cmp(&(&b.provider, &b.model)));
        out
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
        // The probe fails: open again for twice the cooldown (backoff).
        b.failure("p", "m", later);
        assert!(matches!(
            b.admit("p", "m", later + Duration::from_secs(19)),
            Admit::Open { retry_in, .. } if retry_in == Duration::from_secs(1)
        ));
        let again = later + Duration::from_secs(20);
        assert_eq!(b.admit("p", "m", again), Admit::Probe);
        b.success("p", "m");
        assert_eq!(b.admit("p", "m", again), Admit::Closed);
        assert!(b.render(again).lines().count() == 2);
    }

    #[test]
    fn circuits_show_each_state_for_the_status_page() {
        let b = Breakers::new(BreakerOptions {
            failures: 2,
            cooldown: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        b.failure("p", "llama3.2:1b", t0);
        let c = b.circuits(t0);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].provider.as_str(), c[0].model.as_str()),
            ("p", "llama3.2:1b")
        );
        assert_eq!((c[0].state, c[0].consecutive_failures), ("closed", 1));
        b.failure("p", "llama3.2:1b", t0);
        let c = b.circuits(t0 + Duration::from_secs(4));
        assert_eq!((c[0].state, c[0].retry_in_ms), ("open", 6000));
        let later = t0 + Duration::from_secs(11);
        assert_eq!(b.circuits(later)[0].state, "half-open");
        assert_eq!(b.admit("p", "llama3.2:1b", later), Admit::Probe);
        assert_eq!(b.circuits(later)[0].state, "probing");
        b.success("p", "llama3.2:1b");
        assert!(b.circuits(later).is_empty());
        assert!(
            Breakers::new(BreakerOptions {
                failures: 0,
                cooldown: Duration::ZERO
            })
            .circuits(t0)
            .is_empty()
        );
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
    fn failed_probes_back_off_up_to_the_cap_and_a_success_resets() {
        let cooldown = Duration::from_secs(5);
        let b = Breakers::new(BreakerOptions {
            failures: 1,
            cooldown,
        });
        let mut t = Instant::now();
        b.failure("p", "m", t);
        let mut waits = Vec::new();
        for _ in 0..6 {
            let Admit::Open { retry_in, .. } = b.admit("p", "m", t) else {
                panic!("open")
            };
            waits.push(retry_in.as_secs());
            t += retry_in;
            assert_eq!(b.admit("p", "m", t), Admit::Probe);
            b.failure("p", "m", t);
        }
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        b.success("p", "m");
        b.failure("p", "m", t);
        assert!(matches!(
            b.admit("p", "m", t),
            Admit::Open { retry_in, .. } if retry_in == cooldown
        ));
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
