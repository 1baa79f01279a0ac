//! `m.metrics.*` from the gateway's own traffic.
//!
//! Every upstream attempt is recorded per (provider, model); a snapshot over a sliding window
//! (5 minutes, at most 1000 attempts per model) gives the figures ngrok documents: request
//! count, error rates (total, timeout, rate_limit, client, server; connection errors count in
//! `total` only), and average / p95 latencies (`upstream_ms`: to the full response, or to the
//! first chunk of a stream; `time_to_first_token_ms`: streams only; `gateway_ms`: time in aigw
//! before the attempt was sent). A local gateway is its own region, account and endpoint, so
//! every scope (`global`, `region`, `account`, `endpoint`) holds the same figures. Token counts
//! stay zero. The engine is rebuilt with a fresh snapshot every few seconds when there was new
//! traffic and the policy mentions `metrics` (see [`crate::gateway::server::reload::spawn_metrics`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::routing::cel::{ErrorRate, Latency, MetricsScope, ModelMetrics};

pub const WINDOW: Duration = Duration::from_secs(300);
const MAX_SAMPLES: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Timeout,
    RateLimit,
    Client,
    Server,
    Connect,
}

impl Outcome {
    pub fn from_status(status: u16) -> Outcome {
        match status {
            429 => Outcome::RateLimit,
            400..=499 => Outcome::Client,
            500..=599 => Outcome::Server,
            _ => Outcome::Server,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub outcome: Outcome,
    pub upstream: Duration,
    pub gateway: Duration,
    pub streaming: bool,
}

/// foldhash (seeded per process): model names can come from clients in passthrough, and
/// SipHash cost more than the rest of recording an attempt.
type Map<V> = HashMap<String, V, foldhash::quality::RandomState>;

/// Samples by lower-cased provider, then lower-cased model.
type Samples = Map<Map<VecDeque<Sample>>>;

#[derive(Debug, Default)]
pub struct Traffic {
    samples: Mutex<Samples>,
    /// The other replicas' recent samples (`--state`), replaced whole at each sync.
    remote: Mutex<Samples>,
    version: AtomicU64,
}

/// One model's recent samples as replicas exchange them: `[age_ms, outcome, upstream_ms,
/// gateway_ms, streaming]` each (compact: up to 1000 per model every second).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WireModel {
    pub provider: String,
    pub model: String,
    pub samples: Vec<[u64; 5]>,
}

impl Outcome {
    fn code(self) -> u64 {
        self as u64
    }

    fn from_code(n: u64) -> Outcome {
        [
            Outcome::Ok,
            Outcome::Timeout,
            Outcome::RateLimit,
            Outcome::Client,
            Outcome::Server,
            Outcome::Connect,
        ]
        .get(n as usize)
        .copied()
        .unwrap_or(Outcome::Server)
    }
}

/// `s` lower-cased, borrowed when it already is (the usual case: no allocation per attempt).
fn lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(s.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

impl Traffic {
    pub fn record(&self, provider: &str, model: &str, sample: Sample) {
        let (provider, model) = (lower(provider), lower(model));
        let mut all = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        // One lookup per level once the pair is known (`entry` would need an owned key).
        let models = match all.get_mut(provider.as_ref()) {
            Some(models) => models,
            None => all.entry(provider.into_owned()).or_default(),
        };
        let q = match models.get_mut(model.as_ref()) {
            Some(q) => q,
            None => models.entry(model.into_owned()).or_default(),
        };
        q.push_back(sample);
        while q.len() > MAX_SAMPLES {
            q.pop_front();
        }
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    /// Changes whenever an attempt is recorded.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// This replica's samples of the last [`WINDOW`], for the other replicas.
    pub fn export(&self) -> Vec<WireModel> {
        let now = Instant::now();
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        let all = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (provider, models) in all.iter() {
            for (model, q) in models {
                let samples: Vec<[u64; 5]> = q
                    .iter()
                    .filter(|s| now.duration_since(s.at) <= WINDOW)
                    .map(|s| {
                        [
                            ms(now.duration_since(s.at)),
                            s.outcome.code(),
                            ms(s.upstream),
                            ms(s.gateway),
                            u64::from(s.streaming),
                        ]
                    })
                    .collect();
                if !samples.is_empty() {
                    out.push(WireModel {
                        provider: provider.clone(),
                        model: model.clone(),
                        samples,
                    });
                }
            }
        }
        out
    }

    /// Replaces the other replicas' samples (what [`Traffic::export`] gave on each of them).
    pub fn set_remote(&self, models: Vec<WireModel>) {
        let now = Instant::now();
        let mut remote = Samples::default();
        for m in models {
            let q: &mut VecDeque<Sample> = remote
                .entry(m.provider.to_ascii_lowercase())
                .or_default()
                .entry(m.model.to_ascii_lowercase())
                .or_default();
            for [age, outcome, upstream, gateway, streaming] in m.samples {
                let Some(at) = now.checked_sub(Duration::from_millis(age)) else {
                    continue;
                };
                q.push_back(Sample {
                    at,
                    outcome: Outcome::from_code(outcome),
                    upstream: Duration::from_millis(upstream),
                    gateway: Duration::from_millis(gateway),
                    streaming: streaming != 0,
                });
            }
        }
        for q in remote.values_mut().flat_map(|m| m.values_mut()) {
            q.make_contiguous().sort_by_key(|s| s.at);
        }
        let mut current = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        if remote.is_empty() && current.is_empty() {
            return;
        }
        *current = remote;
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    /// Figures per (provider, model), lower-cased, over the last [`WINDOW`]: this replica's
    /// attempts and, with `--state`, the other replicas' too.
    pub fn snapshot(&self) -> HashMap<(String, String), ModelMetrics> {
        let now = Instant::now();
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut all = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        let mut merged: Samples = Samples::default();
        if !remote.is_empty() {
            // Both sides' samples per model, in time order, so that the oldest is first.
            for (p, models) in all.iter().chain(remote.iter()) {
                for (m, q) in models {
                    let into = merged
                        .entry(p.clone())
                        .or_default()
                        .entry(m.clone())
                        .or_default();
                    into.extend(q.iter().copied());
                    into.make_contiguous().sort_by_key(|s| s.at);
                }
            }
        }
        let source = if remote.is_empty() {
            &mut *all
        } else {
            &mut merged
        };
        let mut out = HashMap::new();
        for ((provider, model), q) in source
            .iter_mut()
            .flat_map(|(p, m)| m.iter_mut().map(move |(m, q)| ((p, m), q)))
        {
            while q.front().is_some_and(|s| now.duration_since(s.at) > WINDOW) {
                q.pop_front();
            }
            if q.is_empty() {
                continue;
            }
            let scope = scope(provider, model, q, now, unix_now);
            out.insert(
                (provider.clone(), model.clone()),
                ModelMetrics {
                    global: scope.clone(),
                    region: scope.clone(),
                    account: scope.clone(),
                    endpoint: scope,
                    ..ModelMetrics::default()
                },
            );
        }
        out
    }
}

fn scope(
    provider: &str,
    model: &str,
    q: &VecDeque<Sample>,
    now: Instant,
    unix_now: u64,
) -> MetricsScope {
    let n = q.len() as f64;
    let rate = |o: Outcome| q.iter().filter(|s| s.outcome == o).count() as f64 / n;
    let ok: Vec<&Sample> = q.iter().filter(|s| s.outcome == Outcome::Ok).collect();
    let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
    let stats = |values: Vec<u64>| -> (u64, u64) {
        if values.is_empty() {
            return (0, 0);
        }
        let mut v = values;
        v.sort_unstable();
        let avg = v.iter().sum::<u64>() / v.len() as u64;
        let p95 = v[((v.len() as f64 * 0.95).ceil() as usize).clamp(1, v.len()) - 1];
        (avg, p95)
    };
    let (up_avg, up_p95) = stats(ok.iter().map(|s| ms(s.upstream)).collect());
    let (gw_avg, gw_p95) = stats(q.iter().map(|s| ms(s.gateway)).collect());
    let (tt_avg, tt_p95) = stats(
        ok.iter()
            .filter(|s| s.streaming)
            .map(|s| ms(s.upstream))
            .collect(),
    );
    let oldest = q
        .front()
        .map(|s| now.duration_since(s.at).as_secs())
        .unwrap_or(0);
    MetricsScope {
        provider: provider.to_string(),
        model: model.to_string(),
        request_count: q.len() as u64,
        start_time: unix_now.saturating_sub(oldest),
        end_time: unix_now,
        latency: Latency {
            gateway_ms_avg: gw_avg,
            gateway_ms_p95: gw_p95,
            upstream_ms_avg: up_avg,
            upstream_ms_p95: up_p95,
            time_to_first_token_ms_avg: tt_avg,
            time_to_first_token_ms_p95: tt_p95,
            ..Latency::default()
        },
        error_rate: ErrorRate {
            total: 1.0 - ok.len() as f64 / n,
            timeout: rate(Outcome::Timeout),
            rate_limit: rate(Outcome::RateLimit),
            client: rate(Outcome::Client),
            server: rate(Outcome::Server),
        },
        ..MetricsScope::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(outcome: Outcome, ms: u64) -> Sample {
        Sample {
            at: Instant::now(),
            outcome,
            upstream: Duration::from_millis(ms),
            gateway: Duration::from_millis(1),
            streaming: false,
        }
    }

    #[test]
    fn figures() {
        let t = Traffic::default();
        t.record("Ollama", "llama3.2", s(Outcome::Ok, 100));
        t.record("ollama", "llama3.2", s(Outcome::Ok, 300));
        t.record("ollama", "llama3.2", s(Outcome::Server, 0));
        t.record("ollama", "llama3.2", s(Outcome::RateLimit, 0));
        let snap = t.snapshot();
        let m = &snap[&("ollama".to_string(), "llama3.2".to_string())].global;
        assert_eq!(m.request_count, 4);
        assert_eq!(m.error_rate.total, 0.5);
        assert_eq!(m.error_rate.server, 0.25);
        assert_eq!(m.error_rate.rate_limit, 0.25);
        assert_eq!(m.latency.upstream_ms_avg, 200);
        assert_eq!(m.latency.upstream_ms_p95, 300);
        assert_eq!(t.version(), 4);
    }

    #[test]
    fn other_replicas_samples_count_in_the_figures() {
        let a = Traffic::default();
        let b = Traffic::default();
        a.record("ollama", "llama3.2", s(Outcome::Ok, 100));
        b.record("ollama", "llama3.2", s(Outcome::Server, 0));
        b.record("openai", "gpt-4o", s(Outcome::Timeout, 0));
        a.set_remote(b.export());
        let snap = a.snapshot();
        let m = &snap[&("ollama".to_string(), "llama3.2".to_string())].global;
        assert_eq!(m.request_count, 2);
        assert_eq!(m.error_rate.server, 0.5);
        let g = &snap[&("openai".to_string(), "gpt-4o".to_string())].global;
        assert_eq!(g.error_rate.timeout, 1.0);
        // The local samples are untouched: what a replica exports is only its own.
        assert_eq!(a.export().len(), 1);
        a.set_remote(Vec::new());
        assert_eq!(a.snapshot().len(), 1);
    }
}
