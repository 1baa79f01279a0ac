//! Active health checks: each box gets `GET /api/version` (and, when that answers as Ollama
//! does, `/api/tags` and `/api/ps`) at start-up, then every interval; a box that does not
//! answer is checked again after a backoff that doubles up to `max_backoff`. Checks run on their
//! own task, never on a request's path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::{CheckResult, FleetState};
use crate::gateway::ProviderView;
use crate::gateway::attempts::forward::native_url;
use crate::providers::ProbeError;
use crate::providers::ollama::OllamaClient;
use crate::routing::upstream::UrlOrigin;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// Between checks of a box that answers.
    pub interval: Duration,
    /// Longest wait between checks of a box that does not.
    pub max_backoff: Duration,
    /// One check's budget (each of its requests).
    pub timeout: Duration,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            interval: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
        }
    }
}

/// A provider to check: its id and the root its native API lives under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub provider: String,
    pub address: String,
}

/// The providers worth checking: those the policy configures (or that look like Ollama) with a
/// reachable base URL. Built-in public APIs reached by passthrough are not polled.
pub fn targets(providers: &[ProviderView]) -> Vec<Target> {
    providers
        .iter()
        .filter(|p| p.configured || p.ollama)
        .filter(|p| !matches!(p.origin, UrlOrigin::UnmappedInternal))
        .filter_map(|p| {
            Some(Target {
                provider: p.id.clone(),
                address: native_url(p.base_url.as_deref()?, ""),
            })
        })
        .collect()
}

/// One check of one box.
pub async fn check(address: &str, timeout: Duration) -> CheckResult {
    let client = OllamaClient::new(address, timeout);
    match client.version().await {
        Ok(v) => {
            let (tags, ps) = tokio::join!(client.tags(), client.ps());
            match tags {
                Ok(tags) => CheckResult::Ollama {
                    version: v.version,
                    installed: tags.into_iter().map(|m| m.name).collect(),
                    loaded: ps
                        .map(|l| l.into_iter().map(|m| m.name).collect())
                        .unwrap_or_default(),
                },
                Err(e) => unreachable_or_answered(address, e),
            }
        }
        Err(e) => unreachable_or_answered(address, e),
    }
}

/// An HTTP answer (a 404, a page that is not JSON) means the box is up but is not Ollama.
fn unreachable_or_answered(address: &str, e: ProbeError) -> CheckResult {
    match e {
        ProbeError::Status { .. } | ProbeError::NotJson { .. } => CheckResult::Answered,
        ProbeError::Refused { .. } => {
            CheckResult::Unreachable(format!("cannot connect to {address} (connection refused)"))
        }
        other => CheckResult::Unreachable(other.to_string()),
    }
}

/// Checks every target once, all at once, and records the results.
pub async fn round(state: &dyn FleetState, targets: &[Target], timeout: Duration) {
    for t in targets {
        state.track(&t.provider, &t.address);
    }
    let results =
        futures_util::future::join_all(targets.iter().map(|t| check(&t.address, timeout))).await;
    for (t, r) in targets.iter().zip(results) {
        state.record_check(&t.provider, r);
    }
}

/// When each box is due, and how long its current backoff is.
#[derive(Debug)]
pub struct Schedule {
    opts: CheckOptions,
    due: Vec<(String, Instant, Duration)>,
}

impl Schedule {
    pub fn new(opts: CheckOptions) -> Schedule {
        Schedule {
            opts,
            due: Vec::new(),
        }
    }

    /// The targets due at `now` (targets new to the schedule are due at once).
    pub fn due(&mut self, targets: &[Target], now: Instant) -> Vec<Target> {
        self.due
            .retain(|(p, _, _)| targets.iter().any(|t| &t.provider == p));
        targets
            .iter()
            .filter(|t| {
                self.due
                    .iter()
                    .find(|(p, _, _)| p == &t.provider)
                    .is_none_or(|(_, at, _)| *at <= now)
            })
            .cloned()
            .collect()
    }

    /// Records a check's outcome: an answer is checked again after `interval`, no answer after
    /// a backoff doubling from `interval` to `max_backoff`.
    pub fn checked(&mut self, provider: &str, answered: bool, now: Instant) {
        let interval = self.opts.interval;
        let entry = match self.due.iter_mut().find(|(p, _, _)| p == provider) {
            Some(e) => e,
            None => {
                self.due.push((provider.to_string(), now, Duration::ZERO));
                self.due.last_mut().expect("just pushed")
            }
        };
        let wait = if answered || entry.2.is_zero() {
            interval
        } else {
            (entry.2 * 2).min(self.opts.max_backoff.max(interval))
        };
        entry.1 = now + wait;
        entry.2 = if answered { Duration::ZERO } else { wait };
    }

    /// The earliest due time (or one interval from now when nothing is scheduled).
    pub fn next(&self, now: Instant) -> Instant {
        self.due
            .iter()
            .map(|(_, at, _)| *at)
            .min()
            .unwrap_or(now + self.opts.interval)
    }
}

/// Called after each round (to rebuild the engine when what it routes by changed).
pub type InstalledChanged = Arc<dyn Fn(&super::FleetSnapshot) + Send + Sync>;

/// Checks the boxes of the engine being served until `stop` is cancelled. Targets are read
/// again each time, so a reload's new providers are checked at once.
pub async fn run(
    providers: impl Fn() -> Vec<ProviderView> + Send + 'static,
    state: Arc<dyn FleetState>,
    opts: CheckOptions,
    on_installed: Option<InstalledChanged>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut schedule = Schedule::new(opts);
    // Boxes the start-up round checked are not checked again at once.
    let now = Instant::now();
    for b in state.snapshot().boxes.iter().filter(|b| b.checks > 0) {
        schedule.checked(&b.provider, b.health != super::Health::Down, now);
    }
    loop {
        let all = targets(&providers());
        state.retain(&all.iter().map(|t| t.provider.clone()).collect::<Vec<_>>());
        let due = schedule.due(&all, Instant::now());
        if !due.is_empty() {
            round(state.as_ref(), &due, opts.timeout).await;
            let snap = state.snapshot();
            let now = Instant::now();
            for t in &due {
                let answered = snap
                    .get(&t.provider)
                    .is_some_and(|b| b.health != super::Health::Down);
                schedule.checked(&t.provider, answered, now);
            }
            if let Some(hook) = &on_installed {
                hook(&snap);
            }
        }
        let wake = schedule.next(Instant::now());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(p: &str) -> Target {
        Target {
            provider: p.into(),
            address: format!("http://{p}"),
        }
    }

    #[test]
    fn boxes_that_do_not_answer_back_off_up_to_the_cap() {
        let opts = CheckOptions {
            interval: Duration::from_secs(10),
            max_backoff: Duration::from_secs(35),
            timeout: Duration::from_secs(1),
        };
        let mut s = Schedule::new(opts);
        let now = Instant::now();
        let targets = [t("a"), t("b")];
        assert_eq!(s.due(&targets, now).len(), 2, "new targets are due at once");
        s.checked("a", true, now);
        s.checked("b", false, now);
        assert_eq!(s.next(now), now + Duration::from_secs(10));
        let mut waits = Vec::new();
        let mut at = now;
        for _ in 0..4 {
            at = s.next(at);
            let due = s.due(&[t("b")], at);
            assert_eq!(due, vec![t("b")]);
            s.checked("b", false, at);
            let after = s.due.iter().find(|e| e.0 == "b").unwrap().1;
            waits.push(after - at);
        }
        assert_eq!(
            waits,
            [20, 35, 35, 35].map(Duration::from_secs).to_vec(),
            "doubling from the interval, capped"
        );
        s.checked("b", true, at);
        assert_eq!(
            s.due.iter().find(|e| e.0 == "b").unwrap().1,
            at + Duration::from_secs(10)
        );
    }

    #[tokio::test]
    async fn a_refused_box_is_unreachable_with_its_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("http://127.0.0.1:{port}");
        let r = check(&address, Duration::from_secs(5)).await;
        assert_eq!(
            r,
            CheckResult::Unreachable(format!("cannot connect to {address} (connection refused)"))
        );
    }
}
