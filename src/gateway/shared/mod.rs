//! What replicas share (`--state redis://…`): circuit breakers, what real traffic found about
//! each box, rate-limit windows and the samples behind `m.metrics`.
//!
//! The hot path never waits on Redis for what a local copy answers: breakers, box health and
//! metrics are read from this process's own state, and what changes in it is put in the
//! [`Outbox`] (a bounded channel, never blocking) that the background [`sync`] task publishes
//! in batches and applies from the other replicas. Only the `rate-limit` action asks Redis on
//! the request path ([`redis_rate`]), because a count that is exact across replicas cannot be
//! answered locally. When Redis is lost every replica keeps serving on its local view (rate
//! limits count per process meanwhile), [`Link`] says so on `/healthz` and `/metrics`, and the
//! sync task reconnects and republishes what it knows.
//!
//! Off by default: without `--state` there is no channel, no task and no cost.

pub mod redis_rate;
pub mod sync;
pub mod url;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// `--state` in a running gateway: the link, and what the sync task starts with.
pub struct Sharing {
    pub link: Arc<Link>,
    client: redis::Client,
    rx: Mutex<Option<mpsc::Receiver<Event>>>,
}

impl Sharing {
    /// The client (nothing is connected yet) and the outbox the breakers and the fleet write to.
    pub fn open(url: &url::StateUrl) -> redis::RedisResult<(Sharing, Outbox)> {
        let client = redis::Client::open(url.connect_url())?;
        let link = Arc::new(Link::new(url.to_string()));
        let (outbox, rx) = Outbox::new(link.clone());
        Ok((
            Sharing {
                link,
                client,
                rx: Mutex::new(Some(rx)),
            },
            outbox,
        ))
    }

    /// Rate-limit windows in Redis, exact across replicas.
    pub fn rate(&self) -> Arc<dyn crate::traffic::RateState> {
        Arc::new(redis_rate::RedisRate::new(
            self.client.clone(),
            self.link.clone(),
        ))
    }

    /// Starts the sync task (once; later calls do nothing).
    pub fn start(&self, gw: Arc<crate::gateway::Gateway>) {
        let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(rx) = rx {
            sync::spawn(gw, self.client.clone(), self.link.clone(), rx);
        }
    }
}

/// A change one replica learned that the others should apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A model's circuit opened (or reopened after a failed probe) for `open_ms`.
    BreakerOpen {
        provider: String,
        model: String,
        failures: u32,
        open_ms: u64,
    },
    /// A model answered again: its circuit is closed.
    BreakerClosed { provider: String, model: String },
    /// Real requests could not reach a box.
    BoxDown {
        provider: String,
        address: String,
        reason: String,
    },
    /// A box that was down or degraded answered a real request.
    BoxUp { provider: String, address: String },
}

/// What travels on the channel: the event and the replica it came from (to skip its own).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub from: String,
    #[serde(flatten)]
    pub event: Event,
}

/// Where a replica puts what it learned; a no-op without `--state`.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    tx: Option<mpsc::Sender<Event>>,
    link: Option<Arc<Link>>,
}

/// Events waiting to be published at most; past it they are dropped (and counted): the sync
/// task republishes the breakers' state after any gap, so nothing stays wrong for long.
pub const OUTBOX_CAPACITY: usize = 4096;

impl Outbox {
    /// An outbox and the receiving end the sync task drains.
    pub fn new(link: Arc<Link>) -> (Outbox, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        (
            Outbox {
                tx: Some(tx),
                link: Some(link),
            },
            rx,
        )
    }

    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `event` without waiting.
    pub fn send(&self, event: Event) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(event).is_err()
            && let Some(link) = &self.link
        {
            link.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The connection to the shared store as `/healthz`, `/metrics` and the logs see it.
#[derive(Debug)]
pub struct Link {
    /// `redis://host:port/db`, without the password.
    pub url: String,
    connected: AtomicBool,
    /// Why it is not connected, and since when.
    lost: Mutex<Option<(String, SystemTime)>>,
    pub published: AtomicU64,
    pub applied: AtomicU64,
    pub dropped: AtomicU64,
    /// Redis commands sent while a request waited (the `rate-limit` action only).
    pub request_path_round_trips: AtomicU64,
    /// Rate-limit checks answered by local counters because Redis was not reachable.
    pub local_fallbacks: AtomicU64,
}

/// The `state` object of `/healthz`.
#[derive(Debug, Serialize, PartialEq)]
pub struct LinkStatus {
    pub backend: &'static str,
    pub url: String,
    pub connected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339, when the link was lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// What that means for traffic, in words.
    pub effect: &'static str,
}

impl Link {
    pub fn new(url: String) -> Link {
        Link {
            url,
            connected: AtomicBool::new(false),
            lost: Mutex::new(Some(("not connected yet".into(), SystemTime::now()))),
            published: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            request_path_round_trips: AtomicU64::new(0),
            local_fallbacks: AtomicU64::new(0),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Connected (again): said once in the log.
    pub fn up(&self) {
        let was = self.lost.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.connected.store(true, Ordering::Release);
        if let Some((why, _)) = was {
            tracing::info!(
                "shared state: connected to {} (was: {why}); sharing breakers, box health, rate limits and metrics",
                self.url
            );
        }
    }

    /// Lost (or not reachable yet): said once per loss in the log.
    pub fn down(&self, why: &str) {
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        self.connected.store(false, Ordering::Release);
        if lost.is_none() {
            tracing::warn!(
                "shared state: lost {}: {why}; serving on this replica's own view (rate limits count per replica) until it is back",
                self.url
            );
            *lost = Some((why.to_string(), SystemTime::now()));
        } else if let Some((w, _)) = lost.as_mut() {
            *w = why.to_string();
        }
    }

    pub fn status(&self) -> LinkStatus {
        let lost = self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let connected = self.is_connected();
        LinkStatus {
            backend: "redis",
            url: self.url.clone(),
            connected,
            error: lost.as_ref().map(|(w, _)| w.clone()),
            since: lost.map(|(_, t)| httpdate::fmt_http_date(t)),
            effect: if connected {
                "breakers, box health, rate limits and m.metrics are shared with the other replicas"
            } else {
                "serving on this replica's own view: breakers, health and metrics are local, rate limits count per replica"
            },
        }
    }

    /// The `aigw_state_*` series of `/metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP aigw_state_connected Whether the shared state store (--state) is reachable.\n# TYPE aigw_state_connected gauge\naigw_state_connected{{backend=\"redis\"}} {}",
            u8::from(self.is_connected())
        );
        let _ = writeln!(
            out,
            "# HELP aigw_state_events_total Shared-state events by direction.\n# TYPE aigw_state_events_total counter"
        );
        for (dir, n) in [
            ("published", &self.published),
            ("applied", &self.applied),
            ("dropped", &self.dropped),
        ] {
            let _ = writeln!(
                out,
                "aigw_state_events_total{{direction=\"{dir}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP aigw_state_request_path_round_trips_total Redis commands a request waited for (rate-limit checks only).\n# TYPE aigw_state_request_path_round_trips_total counter\naigw_state_request_path_round_trips_total {}",
            self.request_path_round_trips.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP aigw_state_local_fallbacks_total Rate-limit checks counted locally because the store was unreachable.\n# TYPE aigw_state_local_fallbacks_total counter\naigw_state_local_fallbacks_total {}",
            self.local_fallbacks.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_travel_as_tagged_json() {
        let e = Envelope {
            from: "r1".into(),
            event: Event::BreakerOpen {
                provider: "ollama".into(),
                model: "llama3.2".into(),
                failures: 5,
                open_ms: 5000,
            },
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"from":"r1","kind":"breaker_open","provider":"ollama","model":"llama3.2","failures":5,"open_ms":5000}"#
        );
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.event, e.event);
    }

    #[test]
    fn a_full_outbox_drops_and_counts_instead_of_waiting() {
        let link = Arc::new(Link::new("redis://h:1/0".into()));
        let (out, _rx) = Outbox::new(link.clone());
        for _ in 0..OUTBOX_CAPACITY + 3 {
            out.send(Event::BreakerClosed {
                provider: "p".into(),
                model: "m".into(),
            });
        }
        assert_eq!(link.dropped.load(Ordering::Relaxed), 3);
        Outbox::default().send(Event::BreakerClosed {
            provider: "p".into(),
            model: "m".into(),
        });
    }

    #[test]
    fn the_link_says_what_losing_it_means() {
        let link = Link::new("redis://h:1/0".into());
        assert!(!link.status().connected);
        link.up();
        let s = link.status();
        assert!(s.connected && s.error.is_none(), "{s:?}");
        link.down("connection refused");
        let s = link.status();
        assert_eq!(s.error.as_deref(), Some("connection refused"));
        assert!(s.effect.contains("own view"));
        assert!(
            link.render()
                .contains("aigw_state_connected{backend=\"redis\"} 0")
        );
    }
}
