//! `--max-in-flight ID=N`: at most N requests in flight per provider. Past it requests wait in
//! a FIFO queue (tokio's semaphore hands permits out in arrival order) of at most
//! `--queue-depth` requests, each for at most `--queue-timeout`; past that, the caller answers
//! 429 with a `Retry-After`. In-flight counts per provider and per model are kept for every
//! provider (limited or not): least-busy ordering and keep-warm read them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::gateway::observe::metrics::Histogram;

#[derive(Debug, Clone, PartialEq)]
pub struct LimitOptions {
    /// Most requests in flight, by provider id.
    pub max_in_flight: HashMap<String, usize>,
    /// Most requests waiting per limited provider.
    pub queue_depth: usize,
    /// Longest wait in the queue.
    pub queue_timeout: Duration,
}

impl Default for LimitOptions {
    fn default() -> Self {
        LimitOptions {
            max_in_flight: HashMap::new(),
            queue_depth: 64,
            queue_timeout: Duration::from_secs(30),
        }
    }
}

/// One limited provider.
#[derive(Debug)]
struct Gate {
    max: usize,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// Moving average of how long a slot is held (µs), for `Retry-After`.
    hold_us: AtomicU64,
    rejected: AtomicU64,
}

/// Why a request got no slot.
#[derive(Debug, Clone, PartialEq)]
pub enum Busy {
    QueueFull {
        provider: String,
        max: usize,
        depth: usize,
        retry_after: Duration,
    },
    WaitedTooLong {
        provider: String,
        max: usize,
        waited: Duration,
        retry_after: Duration,
    },
}

impl Busy {
    pub fn retry_after(&self) -> Duration {
        match self {
            Busy::QueueFull { retry_after, .. } | Busy::WaitedTooLong { retry_after, .. } => {
                *retry_after
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Busy::QueueFull {
                provider,
                max,
                depth,
                ..
            } => format!(
                "{provider} has {max} request(s) in flight (--max-in-flight) and {depth} waiting, a full queue (--queue-depth)"
            ),
            Busy::WaitedTooLong {
                provider,
                max,
                waited,
                ..
            } => format!(
                "{provider} had {max} request(s) in flight (--max-in-flight) for the {} this request waited (--queue-timeout)",
                crate::policy::duration::format(*waited)
            ),
        }
    }
}

/// A place in flight; counts go down (and the permit goes back) when it is dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    limits: Arc<Counts>,
    gate: Option<Arc<Gate>>,
    key: (String, String),
    since: Instant,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.change(&self.key, false);
        if let Some(g) = &self.gate {
            let held = self.since.elapsed().as_micros() as u64;
            let old = g.hold_us.load(Ordering::Relaxed);
            let avg = if old == 0 { held } else { (old * 7 + held) / 8 };
            g.hold_us.store(avg, Ordering::Relaxed);
        }
    }
}

/// In-flight counts by provider and by `provider:model`.
#[derive(Debug, Default)]
struct Counts {
    by: Mutex<HashMap<(String, String), usize>>,
}

impl Counts {
    fn change(&self, key: &(String, String), up: bool) {
        let mut by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        let n = by.entry(key.clone()).or_default();
        if up {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by.remove(key);
            }
        }
    }
}

#[derive(Debug)]
pub struct Limits {
    opts: LimitOptions,
    gates: HashMap<String, Arc<Gate>>,
    counts: Arc<Counts>,
    pub queue_wait: Histogram,
}

const QUEUE_BOUNDS: &[f64] = &[0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

impl Default for Limits {
    fn default() -> Self {
        Limits::new(LimitOptions::default())
    }
}

impl Limits {
    pub fn new(opts: LimitOptions) -> Limits {
        let gates = opts
            .max_in_flight
            .iter()
            .map(|(id, max)| {
                (
                    id.clone(),
                    Arc::new(Gate {
                        max: *max,
                        permits: Arc::new(Semaphore::new(*max)),
                        waiting: AtomicUsize::new(0),
                        hold_us: AtomicU64::new(0),
                        rejected: AtomicU64::new(0),
                    }),
                )
            })
            .collect();
        Limits {
            opts,
            gates,
            counts: Arc::default(),
            queue_wait: Histogram::new(QUEUE_BOUNDS),
        }
    }

    pub fn limited(&self, provider: &str) -> bool {
        self.gates.contains_key(provider)
    }

    /// Requests in flight on a provider (all models).
    pub fn in_flight(&self, provider: &str) -> usize {
        let by = self.counts.by.lock().unwrap_or_else(|e| e.into_inner());
        by.iter()
            .filter(|((p, _), _)| p == provider)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests in flight on one model of a provider.
    pub fn in_flight_model(&self, provider: &str, model: &str) -> usize {
        let by = self.counts.by.lock().unwrap_or_else(|e| e.into_inner());
        by.get(&(provider.to_string(), model.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests waiting for a provider.
    pub fn queued(&self, provider: &str) -> usize {
        self.gates
            .get(provider)
            .map_or(0, |g| g.waiting.load(Ordering::Relaxed))
    }

    fn retry_after(&self, g: &Gate) -> Duration {
        // The queue ahead, drained `max` at a time at the average hold time.
        let hold = Duration::from_micros(g.hold_us.load(Ordering::Relaxed).max(1));
        let rounds = (g.waiting.load(Ordering::Relaxed) / g.max.max(1)) as u32 + 1;
        (hold * rounds)
            .max(Duration::from_secs(1))
            .min(Duration::from_secs(3600))
    }

    /// A slot on `provider` for `model`, waiting in the queue at most `queue_timeout` (and at
    /// most `budget`). Returns the slot and the time waited.
    pub async fn acquire(
        &self,
        provider: &str,
        model: &str,
        budget: Duration,
    ) -> Result<(Slot, Duration), Busy> {
        let key = (provider.to_string(), model.to_string());
        let Some(g) = self.gates.get(provider) else {
            self.counts.change(&key, true);
            return Ok((
                Slot {
                    _permit: None,
                    limits: self.counts.clone(),
                    gate: None,
                    key,
                    since: Instant::now(),
                },
                Duration::ZERO,
            ));
        };
        let start = Instant::now();
        let permit = match g.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if g.waiting.load(Ordering::Relaxed) >= self.opts.queue_depth {
                    g.rejected.fetch_add(1, Ordering::Relaxed);
                    return Err(Busy::QueueFull {
                        provider: provider.to_string(),
                        max: g.max,
                        depth: self.opts.queue_depth,
                        retry_after: self.retry_after(g),
                    });
                }
                g.waiting.fetch_add(1, Ordering::Relaxed);
                let wait = self.opts.queue_timeout.min(budget);
                let got = tokio::time::timeout(wait, g.permits.clone().acquire_owned()).await;
                g.waiting.fetch_sub(1, Ordering::Relaxed);
                match got {
                    Ok(Ok(p)) => p,
                    _ => {
                        g.rejected.fetch_add(1, Ordering::Relaxed);
                        return Err(Busy::WaitedTooLong {
                            provider: provider.to_string(),
                            max: g.max,
                            waited: start.elapsed(),
                            retry_after: self.retry_after(g),
                        });
                    }
                }
            }
        };
        let waited = start.elapsed();
        self.queue_wait.observe(waited);
        self.counts.change(&key, true);
        Ok((
            Slot {
                _permit: Some(permit),
                limits: self.counts.clone(),
                gate: Some(g.clone()),
                key,
                since: Instant::now(),
            },
            waited,
        ))
    }

    /// Prometheus lines for in-flight, queued and rejected requests of limited providers, and
    /// the queue-wait histogram.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        if self.gates.is_empty() {
            return;
        }
        let mut ids: Vec<&String> = self.gates.keys().collect();
        ids.sort();
        let esc = crate::gateway::observe::metrics::escape_label;
        out.push_str("# HELP aigw_in_flight Requests in flight to a provider limited by --max-in-flight.\n# TYPE aigw_in_flight gauge\n");
        for id in &ids {
            let _ = writeln!(
                out,
                "aigw_in_flight{{provider=\"{}\"}} {}",
                esc(id),
                self.in_flight(id)
            );
        }
        out.push_str("# HELP aigw_queued Requests waiting for a provider's --max-in-flight.\n# TYPE aigw_queued gauge\n");
        for id in &ids {
            let _ = writeln!(
                out,
                "aigw_queued{{provider=\"{}\"}} {}",
                esc(id),
                self.queued(id)
            );
        }
        out.push_str("# HELP aigw_queue_rejected_total Requests answered 429: the queue was full or the wait too long.\n# TYPE aigw_queue_rejected_total counter\n");
        for id in &ids {
            let _ = writeln!(
                out,
                "aigw_queue_rejected_total{{provider=\"{}\"}} {}",
                esc(id),
                self.gates[*id].rejected.load(Ordering::Relaxed)
            );
        }
        self.queue_wait.render(
            "aigw_queue_wait_seconds",
            "Time requests waited for a slot on a limited provider.",
            out,
        );
    }
}

/// Every candidate was at its limit: 429 with the soonest `Retry-After`.
pub const QUEUE_FULL: (&str, u16) = ("AIGW_QUEUE_FULL", 429);

/// The 429 when no candidate got a slot, in the client's error shape.
pub fn busy_response(
    retry_after: Duration,
    reasons: &[String],
    dialect: crate::gateway::errors::Dialect,
    mut report: crate::gateway::attempts::forward::Report,
) -> (
    axum::response::Response,
    crate::gateway::attempts::forward::Report,
) {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let e = crate::gateway::errors::GatewayError::new(
        QUEUE_FULL,
        format!(
            "Too many requests waiting: {}. Retry after {secs}s, or raise `aigw serve --max-in-flight` / `--queue-depth`.",
            reasons.join("; ")
        ),
    );
    report.status = e.status;
    report.error_code = Some(e.code);
    let mut resp = e.response(dialect);
    resp.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(secs),
    );
    (resp, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, depth: usize, timeout_ms: u64) -> Arc<Limits> {
        Arc::new(Limits::new(LimitOptions {
            max_in_flight: [("box".to_string(), max)].into(),
            queue_depth: depth,
            queue_timeout: Duration::from_millis(timeout_ms),
        }))
    }

    #[tokio::test]
    async fn waiters_are_served_in_arrival_order_and_the_queue_is_bounded() {
        let l = limits(1, 2, 30_000);
        let big = Duration::from_secs(60);
        let (first, _) = l.acquire("box", "m", big).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..2 {
            let (lc, order) = (l.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let (slot, waited) = lc.acquire("box", "m", big).await.unwrap();
                order.lock().unwrap().push(i);
                drop(slot);
                waited
            }));
            // Each waiter is queued before the next arrives.
            while l.queued("box") < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(l.in_flight("box"), 1);
        let full = l.acquire("box", "m", big).await.unwrap_err();
        assert!(matches!(full, Busy::QueueFull { depth: 2, .. }), "{full:?}");
        assert!(full.retry_after() >= Duration::from_secs(1));
        drop(first);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1]);
        assert_eq!(l.in_flight("box"), 0);
        assert_eq!(l.queue_wait.count(), 3);
    }

    #[tokio::test]
    async fn a_wait_past_the_limit_is_refused_and_unlimited_providers_only_count() {
        let l = limits(1, 4, 50);
        let (_held, _) = l
            .acquire("box", "m", Duration::from_secs(60))
            .await
            .unwrap();
        let e = l
            .acquire("box", "m", Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(matches!(e, Busy::WaitedTooLong { .. }), "{e:?}");
        let (a, _) = l.acquire("free", "x", Duration::ZERO).await.unwrap();
        let (_b, _) = l.acquire("free", "x", Duration::ZERO).await.unwrap();
        assert_eq!(l.in_flight_model("free", "x"), 2);
        drop(a);
        assert_eq!(l.in_flight("free"), 1);
    }
}
