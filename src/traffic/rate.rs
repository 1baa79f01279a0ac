//! `rate-limit` counters behind a small port, so that replicas can later share them (Redis)
//! while tests and one process use [`InProcess`].
//!
//! The window is ngrok's `sliding_window`, computed the usual constant-memory way: the count
//! of the current fixed window plus the previous window's count weighted by how much of it
//! still overlaps the sliding window. Capacity up to 2e9 costs two integers per bucket.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// What a rate-limit check answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over capacity; try again after this long (at least one second, as `retry-after` counts
    /// whole seconds).
    Limited {
        retry_after: Duration,
    },
}

/// Where the counters live.
pub trait RateState: Send + Sync {
    /// Counts one request in `bucket` (a limiter name plus its bucket-key values) at `now`
    /// (time since the Unix epoch) and says whether it is within `capacity` per `window`.
    /// A limited request is not counted.
    fn hit(&self, bucket: &str, capacity: u64, window: Duration, now: Duration) -> Verdict;

    /// Whether [`RateState::hit`] may wait on the network (a shared store): then the server
    /// runs the rules that use it off its request threads.
    fn blocks(&self) -> bool {
        false
    }
}

/// Counters in this process's memory.
#[derive(Debug, Default)]
pub struct InProcess {
    buckets: Mutex<HashMap<String, Counter>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    /// Index of the current fixed window (`now / window`).
    window: u64,
    current: u64,
    previous: u64,
}

/// Buckets kept before idle ones are dropped (each is a few dozen bytes).
const SWEEP_AT: usize = 100_000;

impl RateState for InProcess {
    fn hit(&self, bucket: &str, capacity: u64, window: Duration, now: Duration) -> Verdict {
        let (index, into) = position(now, window);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|_, c| c.window + 1 >= index);
        }
        let c = buckets.entry(bucket.to_owned()).or_default();
        if c.window != index {
            c.previous = if c.window + 1 == index { c.current } else { 0 };
            c.current = 0;
            c.window = index;
        }
        let verdict = decide(c.current, c.previous, into, capacity, window);
        if verdict == Verdict::Allowed {
            c.current += 1;
        }
        verdict
    }
}

/// The sliding-window decision from a bucket's counts, shared by every [`RateState`]: the
/// current fixed window's count, the previous one's, and how far `into` (0..1) the current
/// window `now` is. Allowed means the caller counts the request.
pub fn decide(current: u64, previous: u64, into: f64, capacity: u64, window: Duration) -> Verdict {
    let estimate = previous as f64 * (1.0 - into) + current as f64;
    if estimate < capacity as f64 {
        return Verdict::Allowed;
    }
    // When the estimate drops below capacity: within this window as the previous count
    // fades, else once this window's own count has become the previous one.
    let secs = window.as_secs_f64();
    let wait = if current < capacity && previous > 0 {
        let needed = 1.0 - (capacity - current) as f64 / previous as f64;
        (needed - into).max(0.0) * secs
    } else {
        let fade = 1.0 - (capacity.saturating_sub(1)) as f64 / current.max(1) as f64;
        (1.0 - into + fade.max(0.0)) * secs
    };
    Verdict::Limited {
        retry_after: Duration::from_secs(wait.ceil().max(1.0) as u64),
    }
}

/// Where `now` falls for `window`: the fixed window's index and how far into it (0..1).
pub fn position(now: Duration, window: Duration) -> (u64, f64) {
    let w = window.as_nanos().max(1);
    (
        (now.as_nanos() / w) as u64,
        (now.as_nanos() % w) as f64 / w as f64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn capacity_per_window_then_429_then_recovers() {
        let s = InProcess::default();
        let t0 = Duration::from_secs(6000); // the start of a window
        for _ in 0..3 {
            assert_eq!(s.hit("k", 3, MIN, t0), Verdict::Allowed);
        }
        let Verdict::Limited { retry_after } = s.hit("k", 3, MIN, t0) else {
            panic!("the fourth request must be limited")
        };
        assert!(retry_after >= Duration::from_secs(60), "{retry_after:?}");
        // Another bucket is independent.
        assert_eq!(s.hit("other", 3, MIN, t0), Verdict::Allowed);
        // After the advertised wait, a request is allowed again.
        assert_eq!(s.hit("k", 3, MIN, t0 + retry_after), Verdict::Allowed);
    }

    #[test]
    fn the_previous_window_still_counts_while_it_overlaps() {
        let s = InProcess::default();
        let t0 = Duration::from_secs(6000);
        for _ in 0..4 {
            assert_eq!(s.hit("k", 4, MIN, t0), Verdict::Allowed);
        }
        // A quarter into the next window, 3/4 of the previous 4 still count: one more fits.
        let t1 = t0 + MIN + Duration::from_secs(15);
        assert_eq!(s.hit("k", 4, MIN, t1), Verdict::Allowed);
        let Verdict::Limited { retry_after } = s.hit("k", 4, MIN, t1) else {
            panic!("limited")
        };
        // 4 * (1 - x) + 1 < 4 once x > 1/4: right after now, rounded up to a second.
        assert_eq!(retry_after, Duration::from_secs(1));
    }
}
