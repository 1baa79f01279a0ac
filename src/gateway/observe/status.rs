//! What the `/ui` status page shows of the traffic: requests in flight, the most recent
//! requests, and counts per model and per strategy.
//!
//! Nearly free when nobody looks: requests in flight are one atomic add and subtract per
//! request; everything else is recorded only while the page is watching (a poll of
//! `/ui/state.json` in the last [`WATCH`]), and then costs one short lock per finished request
//! to push into a ring of the last [`RECENT`] requests. The counts start when watching starts,
//! and the page says since when.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Requests kept for the page's table.
pub const RECENT: usize = 100;
/// Recording goes on this long after the page's last poll.
pub const WATCH: Duration = Duration::from_secs(120);

/// One finished request, as the page lists it. Nothing secret: no keys, no bodies.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Recent {
    /// Increases by one per recorded request (the page highlights new rows).
    pub seq: u64,
    /// Unix milliseconds when it finished.
    pub at_ms: u64,
    pub request_id: String,
    pub method: String,
    pub path: String,
    /// What the client asked for (`-` when nothing).
    pub model: String,
    /// `provider:model` that answered, if any.
    pub chosen: Option<String>,
    pub status: u16,
    pub attempts: usize,
    /// Attempts after the first: each moved on to another key or model.
    pub failovers: usize,
    pub streaming: bool,
    pub upstream_ms: f64,
    pub total_ms: f64,
    pub error: Option<String>,
    /// 1-based number of the strategy that chose the candidates (none: no strategies, or
    /// the request failed before planning).
    pub strategy: Option<usize>,
}

/// Totals for one `provider:model` since watching started.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ModelCounts {
    pub requests: u64,
    pub errors: u64,
    pub total_ms_sum: f64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub attempts: u64,
    pub failovers: u64,
}

/// A copy of what was recorded, for one `/ui/state.json`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Recorded {
    /// Unix milliseconds when this watching period started.
    pub since_ms: u64,
    pub totals: Totals,
    /// Newest first.
    pub recent: Vec<Recent>,
    /// By `provider:model` that answered.
    pub models: BTreeMap<String, ModelCounts>,
    /// By 1-based strategy number; `0`: requests planned without a strategy.
    pub strategies: BTreeMap<usize, u64>,
}

#[derive(Debug, Default)]
struct Inner {
    since_ms: u64,
    seq: u64,
    totals: Totals,
    recent: VecDeque<Recent>,
    models: BTreeMap<String, ModelCounts>,
    strategies: BTreeMap<usize, u64>,
}

#[derive(Debug)]
pub struct Status {
    epoch: Instant,
    /// Milliseconds after `epoch` until which requests are recorded (0: never watched).
    watched_until: AtomicU64,
    in_flight: AtomicI64,
    inner: Mutex<Inner>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            epoch: Instant::now(),
            watched_until: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            inner: Mutex::default(),
        }
    }
}

/// Counts a request as in flight until dropped, however the request ends.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Status);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Status {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed).max(0)
    }

    /// Whether finished requests are being recorded (the page polled recently).
    pub fn watching(&self) -> bool {
        self.now_ms() < self.watched_until.load(Ordering::Relaxed)
    }

    /// The page polled: record for another [`WATCH`]. A new watching period starts with
    /// fresh counts, so the page never shows figures with a gap in them.
    pub fn watch(&self) {
        let now = self.now_ms();
        let previous = self
            .watched_until
            .swap(now + WATCH.as_millis() as u64, Ordering::Relaxed);
        if previous <= now {
            *self.inner() = Inner {
                since_ms: unix_ms(),
                ..Inner::default()
            };
        }
    }

    /// Records a finished request while the page watches; `make` runs only then.
    pub fn record(&self, make: impl FnOnce() -> Recent) {
        if !self.watching() {
            return;
        }
        let mut r = make();
        r.at_ms = unix_ms();
        let failed = r.status >= 400;
        let mut inner = self.inner();
        inner.seq += 1;
        r.seq = inner.seq;
        inner.totals.requests += 1;
        inner.totals.errors += u64::from(failed);
        inner.totals.attempts += r.attempts as u64;
        inner.totals.failovers += r.failovers as u64;
        if let Some(chosen) = &r.chosen {
            let m = inner.models.entry(chosen.clone()).or_default();
            m.requests += 1;
            m.errors += u64::from(failed);
            m.total_ms_sum += r.total_ms;
        }
        if r.chosen.is_some() || r.strategy.is_some() {
            *inner.strategies.entry(r.strategy.unwrap_or(0)).or_default() += 1;
        }
        if inner.recent.len() == RECENT {
            inner.recent.pop_back();
        }
        inner.recent.push_front(r);
    }

    pub fn recorded(&self) -> Recorded {
        let inner = self.inner();
        Recorded {
            since_ms: inner.since_ms,
            totals: inner.totals.clone(),
            recent: inner.recent.iter().cloned().collect(),
            models: inner.models.clone(),
            strategies: inner.strategies.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(status: u16, chosen: Option<&str>, strategy: Option<usize>, attempts: usize) -> Recent {
        Recent {
            seq: 0,
            at_ms: 0,
            request_id: "req_1".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            model: "m".into(),
            chosen: chosen.map(String::from),
            status,
            attempts,
            failovers: attempts.saturating_sub(1),
            streaming: false,
            upstream_ms: 1.0,
            total_ms: 2.0,
            error: None,
            strategy,
        }
    }

    #[test]
    fn nothing_is_recorded_until_the_page_watches() {
        let s = Status::default();
        let mut made = false;
        s.record(|| {
            made = true;
            req(200, Some("a:b"), None, 1)
        });
        assert!(!made, "the request's record is not even built");
        assert_eq!(s.recorded(), Recorded::default());
        s.watch();
        s.record(|| req(200, Some("a:b"), Some(2), 1));
        s.record(|| req(502, None, None, 3));
        let r = s.recorded();
        assert!(r.since_ms > 0);
        assert_eq!(r.totals.requests, 2);
        assert_eq!(r.totals.errors, 1);
        assert_eq!(r.totals.failovers, 2);
        assert_eq!(r.recent[0].seq, 2, "newest first");
        assert_eq!(r.models["a:b"].requests, 1);
        assert_eq!(r.strategies.get(&2), Some(&1));
    }

    #[test]
    fn the_ring_keeps_the_last_requests_and_in_flight_follows_guards() {
        let s = Status::default();
        s.watch();
        for _ in 0..RECENT + 5 {
            s.record(|| req(200, Some("a:b"), None, 1));
        }
        let r = s.recorded();
        assert_eq!(r.recent.len(), RECENT);
        assert_eq!(r.recent[0].seq, (RECENT + 5) as u64);
        assert_eq!(r.totals.requests, (RECENT + 5) as u64);
        let g1 = s.begin();
        let g2 = s.begin();
        assert_eq!(s.in_flight(), 2);
        drop(g1);
        drop(g2);
        assert_eq!(s.in_flight(), 0);
    }
}
