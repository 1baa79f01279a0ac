//! The background task that shares state through Redis: it publishes this replica's events in
//! batches (one pipeline per wake-up) on the `aigw:events` channel, applies the other
//! replicas' events as they arrive, and once a second exchanges the samples behind
//! `m.metrics`. It reconnects with backoff; on each (re)connection it reads the circuits other
//! replicas opened meanwhile and republishes this replica's open ones, so a gap in the link
//! leaves nothing stale for longer than a cooldown.
//!
//! Keys (all under `aigw:`): `aigw:breaker:{provider}:{model}` (an open circuit, expiring
//! when it half-opens) listed in the set `aigw:breakers`; `aigw:traffic:{replica}` (its
//! samples, expiring after [`REPLICA_TTL`]) listed in the sorted set `aigw:replicas` by last
//! push; `aigw:rl:…` are the rate-limit windows ([`super::redis_rate`]).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::AsyncCommands as _;
use tokio::sync::mpsc;

use super::{Envelope, Event, Link};
use crate::gateway::Gateway;
use crate::gateway::observe::traffic::WireModel;

pub const CHANNEL: &str = "aigw:events";
const BREAKERS: &str = "aigw:breakers";
const REPLICAS: &str = "aigw:replicas";
/// How often samples are exchanged (and the link is checked).
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// A replica that stopped pushing is forgotten after this long.
const REPLICA_TTL: Duration = Duration::from_secs(15);
/// Longest any one Redis operation of the sync task may take before the link counts as lost.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BATCH: usize = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why the link failed, in words.
pub fn describe(e: &redis::RedisError) -> String {
    if e.is_connection_refusal() {
        "connection refused (is redis-server running there?)".into()
    } else if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_io_error() || e.is_connection_dropped() {
        format!("connection lost: {e}")
    } else {
        e.to_string()
    }
}

/// Why a session with Redis ended; [`Link::down`] shows its text on `/healthz` and in the log.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{}", describe(.0))]
    Redis(redis::RedisError),
    #[error("no answer within {}s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("the subscription connection closed")]
    SubscriptionClosed,
}

type Result<T> = std::result::Result<T, LinkError>;

async fn op<T>(f: impl Future<Output = redis::RedisResult<T>>) -> Result<T> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(LinkError::Redis(e)),
        Err(_) => Err(LinkError::Timeout(OP_TIMEOUT)),
    }
}

/// Runs until the gateway shuts down.
pub fn spawn(
    gw: Arc<Gateway>,
    client: redis::Client,
    link: Arc<Link>,
    rx: mpsc::Receiver<Event>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut task = Sync {
            gw,
            client,
            link,
            rx,
        };
        task.run().await
    })
}

struct Sync {
    gw: Arc<Gateway>,
    client: redis::Client,
    link: Arc<Link>,
    rx: mpsc::Receiver<Event>,
}

impl Sync {
    async fn run(&mut self) {
        let mut backoff = MIN_BACKOFF;
        let stop = self.gw.shutdown.clone();
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.session() => r,
            };
            match result {
                Ok(()) => return,
                Err(why) => self.link.down(&why.to_string()),
            }
            // What was queued while the link was down is republished as state on reconnect.
            while self.rx.try_recv().is_ok() {}
            if started.elapsed() > MAX_BACKOFF * 2 {
                backoff = MIN_BACKOFF;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection's life: `Ok` only when the gateway stops.
    async fn session(&mut self) -> Result<()> {
        let mut con = op(self.client.get_multiplexed_async_connection()).await?;
        let mut pubsub = op(self.client.get_async_pubsub()).await?;
        op(pubsub.subscribe(CHANNEL)).await?;
        let mut messages = pubsub.into_on_message();
        self.catch_up(&mut con).await?;
        self.sync_traffic(&mut con).await?;
        self.link.up();
        let mut tick = tokio::time::interval(SYNC_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.rx.recv() => {
                    let Some(event) = event else { return Ok(()) };
                    let mut batch = vec![event];
                    while batch.len() < MAX_BATCH {
                        match self.rx.try_recv() {
                            Ok(e) => batch.push(e),
                            Err(_) => break,
                        }
                    }
                    self.publish(&mut con, &batch).await?;
                }
                msg = messages.next() => {
                    let Some(msg) = msg else {
                        return Err(LinkError::SubscriptionClosed);
                    };
                    self.apply(&msg);
                }
                _ = tick.tick() => {
                    self.sync_traffic(&mut con).await?;
                    self.link.up();
                }
            }
        }
    }

    /// Publishes `events` and records open circuits as keys, in one pipeline.
    async fn publish(
        &self,
        con: &mut redis::aio::MultiplexedConnection,
        events: &[Event],
    ) -> Result<()> {
        let mut pipe = redis::pipe();
        for event in events {
            let envelope = Envelope {
                from: self.gw.instance_id.clone(),
                event: event.clone(),
            };
            let Ok(text) = serde_json::to_string(&envelope) else {
                continue;
            };
            pipe.publish(CHANNEL, &text).ignore();
            match event {
                Event::BreakerOpen {
                    provider,
                    model,
                    open_ms,
                    ..
                } => {
                    let key = breaker_key(provider, model);
                    pipe.pset_ex(&key, &text, (*open_ms).max(1)).ignore();
                    pipe.sadd(BREAKERS, &key).ignore();
                }
                Event::BreakerClosed { provider, model } => {
                    let key = breaker_key(provider, model);
                    pipe.del(&key).ignore();
                    pipe.srem(BREAKERS, &key).ignore();
                }
                _ => {}
            }
        }
        op(pipe.query_async::<()>(con)).await?;
        self.link
            .published
            .fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn apply(&self, msg: &redis::Msg) {
        let Ok(text) = msg.get_payload::<String>() else {
            return;
        };
        let Ok(envelope) = serde_json::from_str::<Envelope>(&text) else {
            tracing::debug!("shared state: ignoring a message that is not aigw's: {text:.200}");
            return;
        };
        if envelope.from == self.gw.instance_id {
            return;
        }
        self.link
            .applied
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &envelope.event {
            e @ (Event::BreakerOpen { .. } | Event::BreakerClosed { .. }) => {
                self.gw.breakers.apply(e, Instant::now())
            }
            e => self.gw.fleet.apply(e),
        }
    }

    /// Applies the circuits other replicas hold open, then republishes this one's.
    async fn catch_up(&self, con: &mut redis::aio::MultiplexedConnection) -> Result<()> {
        let keys: Vec<String> = op(con.smembers(BREAKERS)).await?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.get(k).pttl(k);
            }
            let found: Vec<(Option<String>, i64)> = op(pipe.query_async(con)).await?;
            let now = Instant::now();
            for (key, (text, ttl)) in keys.iter().zip(found) {
                let event = text
                    .and_then(|t| serde_json::from_str::<Envelope>(&t).ok())
                    .filter(|_| ttl > 0);
                match event {
                    Some(Envelope {
                        event:
                            Event::BreakerOpen {
                                provider,
                                model,
                                failures,
                                ..
                            },
                        ..
                    }) => self.gw.breakers.apply(
                        &Event::BreakerOpen {
                            provider,
                            model,
                            failures,
                            open_ms: ttl as u64,
                        },
                        now,
                    ),
                    _ => {
                        let _: std::result::Result<(), _> =
                            op(con.srem::<_, _, ()>(BREAKERS, key)).await;
                    }
                }
            }
        }
        let mine = self.gw.breakers.open_events(Instant::now());
        if !mine.is_empty() {
            self.publish(con, &mine).await?;
        }
        Ok(())
    }

    /// Pushes this replica's samples and takes the live replicas' others.
    async fn sync_traffic(&self, con: &mut redis::aio::MultiplexedConnection) -> Result<()> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let id = &self.gw.instance_id;
        let mine = serde_json::to_string(&self.gw.traffic.export()).unwrap_or_default();
        let ttl = REPLICA_TTL.as_millis() as u64;
        let (live,): (Vec<String>,) = op(redis::pipe()
            .pset_ex(format!("aigw:traffic:{id}"), mine, ttl)
            .ignore()
            .zadd(REPLICAS, id, now_ms)
            .ignore()
            .zrembyscore(REPLICAS, "-inf", now_ms.saturating_sub(ttl))
            .ignore()
            .zrange(REPLICAS, 0, -1)
            .query_async(con))
        .await?;
        let others: Vec<String> = live
            .iter()
            .filter(|r| *r != id)
            .map(|r| format!("aigw:traffic:{r}"))
            .collect();
        let mut remote: Vec<WireModel> = Vec::new();
        if !others.is_empty() {
            let texts: Vec<Option<String>> =
                op(redis::cmd("MGET").arg(&others).query_async(con)).await?;
            for text in texts.into_iter().flatten() {
                if let Ok(models) = serde_json::from_str::<Vec<WireModel>>(&text) {
                    remote.extend(models);
                }
            }
        }
        self.gw.traffic.set_remote(remote);
        Ok(())
    }
}

fn breaker_key(provider: &str, model: &str) -> String {
    format!("aigw:breaker:{provider}:{model}")
}
