//! `/metrics`: a small hand-written Prometheus text exposition (no extra crate).
//!
//! - `aigw_requests_total{route,status}`: requests answered, by route and HTTP status.
//! - `aigw_attempts_total{provider,outcome}`: upstream attempts (`ok`, `http_error`,
//!   `rate_limited`, `rejected`, `connect_error`, `timeout`, `error`, `skipped`, `circuit_open`).
//! - `aigw_failovers_total`: attempts that moved on to another key or model.
//! - `aigw_upstream_latency_seconds`: time to the upstream's response headers (and first chunk
//!   for streams), successful attempts only.
//! - `aigw_gateway_overhead_seconds`: time spent in aigw itself before the response starts
//!   (total time to first byte minus the time spent waiting on upstreams).
//! - `aigw_open_streams`: streaming responses in flight.
//! - `aigw_tokens_total{provider,model,kind}`: input and output tokens as providers reported them,
//!   counted for the model that answered.
//! - `aigw_stream_continuations_total{outcome}`: streams that failed midway where another
//!   candidate could continue them: `prefill` and `restart` (a candidate took the answer over
//!   that way), `diverged` (a restarted candidate's answer differed from the text so far),
//!   `exhausted` (no candidate could continue: the stream ended with an error event),
//!   `unsupported` (the answer could not be continued, e.g. a tool call under way).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in self.bounds.iter().enumerate() {
            if secs <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in self.bounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

const LATENCY_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const OVERHEAD_BOUNDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

#[derive(Debug)]
pub struct Metrics {
    // Keyed by route (provider) first, so counting looks the name up by `&str` and allocates
    // only the first time it is seen; rendered in the same (route, status) order.
    requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    attempts: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    failovers: AtomicU64,
    continuations: Mutex<BTreeMap<&'static str, u64>>,
    reloads: Mutex<BTreeMap<&'static str, u64>>,
    pub upstream_latency: Histogram,
    pub overhead: Histogram,
    open_streams: AtomicI64,
    /// Provider, then model: input and output tokens (`None` until one is reported).
    tokens: Mutex<BTreeMap<String, BTreeMap<String, TokenCounts>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::default(),
            attempts: Mutex::default(),
            failovers: AtomicU64::new(0),
            continuations: Mutex::default(),
            reloads: Mutex::default(),
            upstream_latency: Histogram::new(LATENCY_BOUNDS),
            overhead: Histogram::new(OVERHEAD_BOUNDS),
            open_streams: AtomicI64::new(0),
            tokens: Mutex::default(),
        }
    }
}

/// Decrements the open-streams gauge when a stream ends, however it ends.
#[derive(Debug)]
pub struct StreamGuard(std::sync::Arc<Metrics>);

impl StreamGuard {
    pub fn metrics(&self) -> &Metrics {
        &self.0
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16) {
        let mut all = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *by_name(&mut all, route).entry(status).or_default() += 1;
    }

    pub fn attempt(&self, provider: &str, outcome: &'static str) {
        let mut all = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        *by_name(&mut all, provider).entry(outcome).or_default() += 1;
    }

    /// Adds a response's reported token usage to its model's totals.
    pub fn tokens(&self, provider: &str, model: &str, usage: super::usage::Usage) {
        if usage.input.is_none() && usage.output.is_none() {
            return;
        }
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let counts = by_name(by_name(&mut tokens, provider), model);
        for (total, n) in counts.iter_mut().zip([usage.input, usage.output]) {
            if let Some(n) = n {
                *total = Some(total.unwrap_or(0) + n);
            }
        }
    }

    pub fn failover(&self) {
        self.failovers.fetch_add(1, Ordering::Relaxed);
    }

    /// A stream that failed midway, and what became of continuing it (see the module docs).
    pub fn continuation(&self, outcome: &'static str) {
        *self
            .continuations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(outcome)
            .or_default() += 1;
    }

    pub fn reload(&self, outcome: &'static str) {
        *self.reloads.lock().unwrap().entry(outcome).or_default() += 1;
    }

    pub fn open_streams(&self) -> i64 {
        self.open_streams.load(Ordering::Relaxed)
    }

    /// Counts a stream as open until the returned guard is dropped.
    pub fn stream_opened(self: &std::sync::Arc<Self>) -> StreamGuard {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP aigw_requests_total Requests answered, by route and HTTP status.\n# TYPE aigw_requests_total counter\n");
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        for (route, status, n) in requests
            .iter()
            .flat_map(|(r, m)| m.iter().map(move |(s, n)| (r, s, n)))
        {
            let _ = writeln!(
                out,
                "aigw_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP aigw_attempts_total Upstream attempts, by provider and outcome.\n# TYPE aigw_attempts_total counter\n");
        drop(requests);
        let attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        for (provider, outcome, n) in attempts
            .iter()
            .flat_map(|(p, m)| m.iter().map(move |(o, n)| (p, o, n)))
        {
            let _ = writeln!(
                out,
                "aigw_attempts_total{{provider=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(provider)
            );
        }
        drop(attempts);
        let _ = writeln!(
            out,
            "# HELP aigw_failovers_total Attempts that failed and moved on to the next key or model.\n# TYPE aigw_failovers_total counter\naigw_failovers_total {}",
            self.failovers.load(Ordering::Relaxed)
        );
        out.push_str("# HELP aigw_stream_continuations_total Streams that failed midway and were (or could not be) continued on another candidate, by outcome.\n# TYPE aigw_stream_continuations_total counter\n");
        for (outcome, n) in self
            .continuations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "aigw_stream_continuations_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP aigw_policy_reloads_total Policy reloads, by outcome.\n# TYPE aigw_policy_reloads_total counter\n");
        for (outcome, n) in self.reloads.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "aigw_policy_reloads_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        self.upstream_latency.render(
            "aigw_upstream_latency_seconds",
            "Time to the upstream response (first chunk for streams), successful attempts.",
            &mut out,
        );
        self.overhead.render(
            "aigw_gateway_overhead_seconds",
            "Time spent in aigw itself before the response starts.",
            &mut out,
        );
        let _ = writeln!(
            out,
            "# HELP aigw_open_streams Streaming responses in flight.\n# TYPE aigw_open_streams gauge\naigw_open_streams {}",
            self.open_streams()
        );
        out.push_str("# HELP aigw_tokens_total Tokens reported by providers, by the model that answered.\n# TYPE aigw_tokens_total counter\n");
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        for (provider, models) in tokens.iter() {
            for (model, counts) in models {
                for (kind, n) in ["input", "output"].into_iter().zip(counts) {
                    let Some(n) = n else { continue };
                    let _ = writeln!(
                        out,
                        "aigw_tokens_total{{provider=\"{}\",model=\"{}\",kind=\"{kind}\"}} {n}",
                        escape(provider),
                        escape(model)
                    );
                }
            }
        }
        out
    }
}

/// Input and output tokens of one model (`None` until a figure was reported).
type TokenCounts = [Option<u64>; 2];

/// The counters of `name`, created on first use (the only allocation).
fn by_name<'a, V: Default>(all: &'a mut BTreeMap<String, V>, name: &str) -> &'a mut V {
    if !all.contains_key(name) {
        all.insert(name.to_string(), V::default());
    }
    all.get_mut(name).expect("inserted above")
}

/// A Prometheus label value, escaped.
pub fn escape_label(s: &str) -> String {
    escape(s)
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition() {
        let m = std::sync::Arc::new(Metrics::default());
        m.request("/v1/chat/completions", 200);
        m.attempt("ollama", "ok");
        m.failover();
        m.continuation("prefill");
        m.upstream_latency.observe(Duration::from_millis(20));
        {
            let _g = m.stream_opened();
            assert_eq!(m.open_streams(), 1);
        }
        assert_eq!(m.open_streams(), 0);
        let text = m.render();
        assert!(
            text.contains("aigw_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1")
        );
        assert!(text.contains("aigw_attempts_total{provider=\"ollama\",outcome=\"ok\"} 1"));
        assert!(text.contains("aigw_failovers_total 1"));
        assert!(text.contains("aigw_stream_continuations_total{outcome=\"prefill\"} 1"));
        assert!(text.contains("aigw_upstream_latency_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("aigw_upstream_latency_seconds_count 1"));
        assert!(text.contains("aigw_open_streams 0"));
    }
}
