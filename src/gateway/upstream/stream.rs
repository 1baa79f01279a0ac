//! Relaying a streaming upstream response to the client, chunk by chunk.
//!
//! The body is a pull-based stream over the upstream's: nothing is buffered or spawned, so a slow
//! client slows the upstream (backpressure) and a client that goes away drops the upstream
//! connection (cancellation). Each chunk must arrive within the idle timeout. Once bytes have
//! reached the client there is no failover, but a chat stream that fails midway (upstream error,
//! idle timeout, an upstream that closes before the answer finished) is *continued* on the rest
//! of the plan when a relay was given a [`Continue`] (see [`super::continuation`]): the client
//! gets one answer with no gap and no repetition. A stream that fails and cannot be continued
//! (shutdown, no candidate left, an answer that cannot be spliced) ends with one error event in
//! the client's framing: never a silently truncated "success". Events pass through
//! [`super::events::Events`], so a malformed event is dropped whole rather than passed on, and an
//! upstream that closes after a finished answer but without its terminal event (`[DONE]`,
//! `message_stop`) gets one added, so the client's stream ends promptly and cleanly.
//!
//! What continuation costs a stream that does not fail: a refcounted clone of each relayed
//! chunk kept in a vector (reserved once), and only when the plan has another candidate to
//! continue on. Nothing is parsed or copied until a failure.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::continuation::{Resume, Shape, Splice};
use super::events::{Events, Framing};
use crate::gateway::errors::{Dialect, GatewayError, UPSTREAM_FAILED};
use crate::gateway::observe::metrics::StreamGuard;
use crate::gateway::observe::usage::Usage;

/// How a relayed stream ended, for the request's access line (written when the body ends).
#[derive(Debug, Clone, Default)]
pub struct EndNote(std::sync::Arc<EndInner>);

#[derive(Debug, Default)]
struct EndInner {
    how: std::sync::OnceLock<&'static str>,
    /// Attempts in all, continuations included (0: the stream was not continued).
    attempts: std::sync::atomic::AtomicUsize,
}

impl EndNote {
    fn set(&self, how: &'static str) {
        let _ = self.0.how.set(how);
    }

    /// `finished`, `terminator_added` (finished without its terminal event), `continued`
    /// (failed midway, and another candidate finished the answer), `cut` (the upstream
    /// connection broke), `unfinished` (closed cleanly before the answer finished), `stalled`
    /// (the idle limit), `upstream_error` (the provider sent an error event), `shutdown`, or
    /// `client_gone` (the client left first).
    pub fn get(&self) -> &'static str {
        self.0.how.get().copied().unwrap_or("client_gone")
    }

    fn set_attempts(&self, n: usize) {
        self.0
            .attempts
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Attempts in all once continuations asked more candidates (`None`: no continuation did).
    pub fn attempts(&self) -> Option<usize> {
        match self.0.attempts.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }
}

/// Told when a candidate's stream fails midway (cut, stalled, closed unfinished, an error
/// event), so that it counts against the model's circuit breaker like a failed attempt.
pub trait MidwayFailure: Send + Sync {
    fn failed_midway(&self, provider: &str, model: &str);
}

/// What a relay needs to continue a stream that fails midway.
pub struct Continue {
    pub shape: Shape,
    /// The rest of the plan.
    pub rest: Box<dyn Resume>,
}

pub struct Relay {
    pub first: Bytes,
    pub upstream: super::client::DataStream,
    pub idle: Duration,
    pub dialect: Dialect,
    pub framing: Framing,
    pub cancel: CancellationToken,
    pub guard: StreamGuard,
    pub provider: String,
    pub model: String,
    /// Keys the policy holds, redacted from every relayed event and log line.
    pub redact: std::sync::Arc<crate::gateway::observe::redact::Redactor>,
    /// For the log line when the stream ends early, so it joins the request's access line.
    pub request_id: String,
    pub end: EndNote,
    /// Continues the answer on the rest of the plan when the stream fails midway (`None`: it
    /// ends with an error event).
    pub resume: Option<Continue>,
    /// Hears of a candidate whose stream failed midway.
    pub health: std::sync::Arc<dyn MidwayFailure>,
    /// The answering candidate's `--max-in-flight` slot: held while its stream runs, let go
    /// when it fails (a continuation holds its own).
    pub hold: Option<Box<dyn std::any::Any + Send>>,
}

/// Why a stream (or the continuation being relayed) stopped short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Shutdown,
    Cut,
    Stalled,
    Unfinished,
    /// A continuation's answer could not be spliced onto the text so far.
    Diverged,
    /// The provider sent its own error event (withheld from the client).
    UpstreamError,
}

impl Stop {
    fn note(self) -> Option<&'static str> {
        match self {
            Stop::Shutdown => Some("shutdown"),
            Stop::Cut => Some("cut"),
            Stop::Stalled => Some("stalled"),
            Stop::Unfinished => Some("unfinished"),
            Stop::UpstreamError => Some("upstream_error"),
            Stop::Diverged => None,
        }
    }

    /// The candidate itself failed (not the gateway, not the splice).
    fn counts_against_provider(self) -> bool {
        matches!(
            self,
            Stop::Cut | Stop::Stalled | Stop::Unfinished | Stop::UpstreamError
        )
    }
}

struct State {
    relay: Relay,
    first: Option<Bytes>,
    events: Events,
    done: bool,
    /// What the client was sent (refcounted clones of the relayed chunks), kept only while
    /// the stream may be continued; parsed only when it fails.
    sent: Vec<Bytes>,
    /// Output to yield before reading on (the last event of a segment that closed early).
    queued: Option<Bytes>,
    /// The continuation being relayed, once the stream was continued.
    splice: Option<Splice>,
    /// Tokens of the candidates that failed, added to the usage the continuation reports.
    carried: Usage,
    /// How the stream last failed, for the access line.
    note: &'static str,
    /// What went wrong, each failure and why no candidate continued, for the error event.
    failures: Vec<String>,
    /// The relayed candidate's `--max-in-flight` slot, held while its stream runs.
    _hold: Option<Box<dyn std::any::Any + Send>>,
}

/// The terminal event a finished answer lacks, in the client's framing.
fn terminator(dialect: Dialect, framing: Framing) -> Option<Bytes> {
    match (dialect, framing) {
        (Dialect::OpenAi, Framing::Sse) => Some(Bytes::from_static(b"data: [DONE]\n\n")),
        (Dialect::Anthropic, Framing::Sse) => Some(Bytes::from_static(
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        )),
        _ => None,
    }
}

/// The stream's last whole event (if any) followed by what aigw adds at its end.
fn append(tail: Bytes, end: &[u8]) -> Bytes {
    let mut out = bytes::BytesMut::from(&tail[..]);
    out.extend_from_slice(end);
    out.freeze()
}

/// How many relayed chunks a continuable stream keeps room for up front (one allocation).
const SENT_RESERVE: usize = 64;

/// The client-facing body stream.
pub fn relay(r: Relay) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let mut r = r;
    let events = events_for(&r);
    let sent = match r.resume {
        Some(_) => Vec::with_capacity(SENT_RESERVE),
        None => Vec::new(),
    };
    let hold = r.hold.take();
    let state = State {
        events,
        first: Some(r.first.clone()),
        relay: r,
        done: false,
        sent,
        queued: None,
        splice: None,
        carried: Usage::default(),
        note: "cut",
        failures: Vec::new(),
        _hold: hold,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(out) = st.queued.take() {
                return Some((Ok(out), st));
            }
            if st.done {
                return None;
            }
            let next = match st.first.take() {
                Some(first) => Ok(Some(first)),
                None => st.read().await,
            };
            let (stop, message) = match next {
                Ok(Some(bytes)) => {
                    let out = st.events.push(bytes);
                    match st.pass(out) {
                        Ok(out) => match st.upstream_error(out) {
                            Ok(out) if out.is_empty() => continue,
                            Ok(out) => return Some((Ok(out), st)),
                            Err(why) => why,
                        },
                        Err(why) => why,
                    }
                }
                Ok(None) => match st.closed() {
                    Ok(out) => return out.map(|out| (Ok(out), st)),
                    Err(why) => why,
                },
                Err(why) => why,
            };
            if st.stopped(stop, message).await {
                continue;
            }
            return Some((Ok(st.error_event()), st));
        }
    })
}

/// The event reader for a relay: it withholds the provider's error events when the stream
/// may be continued on another candidate.
fn events_for(r: &Relay) -> Events {
    let mut events = Events::new(r.framing);
    events.redact = Some(r.redact.clone());
    events.withhold_errors = r.resume.is_some();
    events
}

impl State {
    /// `out` unless the provider sent an error event with it: then `out` goes first and the
    /// stream stops there (to be continued).
    fn upstream_error(&mut self, out: Bytes) -> Result<Bytes, (Stop, String)> {
        let Some(error) = self.events.error.take() else {
            return Ok(out);
        };
        self.queued = (!out.is_empty()).then_some(out);
        Err((
            Stop::UpstreamError,
            format!("the upstream sent an error event ({error})"),
        ))
    }

    /// The upstream's next chunk (`None`: it closed), or why there is none.
    async fn read(&mut self) -> Result<Option<Bytes>, (Stop, String)> {
        let idle = self.relay.idle;
        tokio::select! {
            biased;
            _ = self.relay.cancel.cancelled() => {
                Err((Stop::Shutdown, "the gateway is shutting down".to_string()))
            }
            next = tokio::time::timeout(idle, self.relay.upstream.next()) => match next {
                Ok(Some(Ok(bytes))) => Ok(Some(bytes)),
                Ok(Some(Err(e))) => Err((
                    Stop::Cut,
                    format!("the upstream stream failed: {}", super::failed::describe(&e)),
                )),
                Ok(None) => Ok(None),
                Err(_) => Err((
                    Stop::Stalled,
                    format!("the upstream sent nothing for {}", crate::policy::duration::format(idle)),
                )),
            }
        }
    }

    /// Whole, checked events on their way to the client: redacted, spliced onto the answer so
    /// far when this is a continuation, and kept while the stream may be continued.
    fn pass(&mut self, out: Bytes) -> Result<Bytes, (Stop, String)> {
        if out.is_empty() {
            return Ok(out);
        }
        let out = self.relay.redact.bytes(out);
        let out = match &mut self.splice {
            None => out,
            Some(s) => s.pass(out).map_err(|d| (Stop::Diverged, d.0.to_string()))?,
        };
        if self.relay.resume.is_some() && !out.is_empty() {
            self.sent.push(out.clone());
        }
        Ok(out)
    }

    /// The upstream closed: the end of a finished answer (what to send last, if anything), or
    /// why it is not one.
    fn closed(&mut self) -> Result<Option<Bytes>, (Stop, String)> {
        let tail = self.events.finish();
        let tail = self.pass(tail)?;
        let tail = self.upstream_error(tail)?;
        let (dialect, framing) = (self.relay.dialect, self.relay.framing);
        if self.events.terminal {
            self.end("finished");
            return Ok((!tail.is_empty()).then_some(tail));
        }
        if self.events.finished
            && let Some(end) = terminator(dialect, framing)
        {
            self.end("terminator_added");
            return Ok(Some(append(tail, &end)));
        }
        self.queued = (!tail.is_empty()).then_some(tail);
        Err((
            Stop::Unfinished,
            "the upstream closed the stream before it finished".to_string(),
        ))
    }

    /// The answer ended well: its candidate's tokens are counted and the access line told.
    fn end(&mut self, how: &'static str) {
        self.done = true;
        let r = &self.relay;
        r.guard
            .metrics()
            .tokens(&r.provider, &r.model, self.events.usage);
        r.end.set(if self.splice.is_some() {
            "continued"
        } else {
            how
        });
    }

    /// The current candidate stopped short: continue on the next one if possible (`true`),
    /// else the stream is to end with an error event.
    async fn stopped(&mut self, stop: Stop, message: String) -> bool {
        let r = &self.relay;
        let failed = format!("{}:{}", r.provider, r.model);
        let usage = std::mem::take(&mut self.events.usage);
        r.guard.metrics().tokens(&r.provider, &r.model, usage);
        if let Some(note) = stop.note() {
            self.note = note;
        }
        if stop.counts_against_provider() {
            r.health.failed_midway(&r.provider, &r.model);
        }
        // Its connection is done: its `--max-in-flight` slot goes now, not with the stream.
        self._hold = None;
        self.failures.push(format!("{failed}: {message}"));
        if stop == Stop::Shutdown || self.relay.resume.is_none() {
            return false;
        }
        if stop != Stop::Diverged && self.events.finished {
            // The answer itself was complete: there is nothing to continue.
            return false;
        }
        let metrics = self.relay.guard.metrics();
        if stop == Stop::Diverged {
            metrics.continuation("diverged");
        }
        let Some(c) = self.relay.resume.as_mut() else {
            return false;
        };
        let so_far = super::continuation::so_far(c.shape, &self.sent);
        // The failed candidate's output: as it reported it, else about one token per text event.
        let deltas = match &self.splice {
            Some(s) => s.deltas,
            None => so_far.deltas,
        };
        self.carried.output =
            Some(self.carried.output.unwrap_or(0) + usage.output.unwrap_or(0).max(deltas));
        if let Some(input) = usage.input {
            self.carried.input = Some(self.carried.input.unwrap_or(0) + input);
        }
        if let Some(why) = so_far.blocked {
            metrics.continuation("unsupported");
            self.failures
                .push(format!("the answer cannot be continued ({why} under way)"));
            return false;
        }
        let cancel = self.relay.cancel.clone();
        let taken = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                self.note = "shutdown";
                self.failures.push("the gateway is shutting down".to_string());
                return false;
            }
            taken = c.rest.next(&so_far.text) => taken,
        };
        let t = match taken {
            Ok(t) => t,
            Err(reasons) => {
                self.relay.end.set_attempts(reasons.tried);
                metrics.continuation("exhausted");
                self.failures.push(if reasons.reasons.is_empty() {
                    "no other candidate could continue the answer".to_string()
                } else {
                    format!("no other candidate could continue the answer: {reasons}")
                });
                return false;
            }
        };
        let (mode, repeat, strict) = match t.prefilled {
            Some(n) => (
                "prefill",
                so_far.text.get(n..).unwrap_or("").to_string(),
                false,
            ),
            None => ("restart", so_far.text, true),
        };
        metrics.continuation(mode);
        self.relay.end.set_attempts(t.tried);
        tracing::warn!(
            request_id = %self.relay.request_id,
            upstream = %failed,
            "stream ended early: {message}; {}:{} continues it ({mode})",
            t.provider,
            t.model
        );
        let shape = c.shape;
        self.events = events_for(&self.relay);
        self.first = Some(t.first);
        self.relay.upstream = t.upstream;
        self.relay.provider = t.provider;
        self.relay.model = t.model;
        self._hold = Some(t.hold);
        self.splice = Some(Splice::new(
            shape,
            repeat,
            strict,
            so_far.opened,
            self.carried,
        ));
        true
    }

    /// The stream's last words: what was queued, then one error event saying what failed.
    fn error_event(&mut self) -> Bytes {
        self.done = true;
        let r = &self.relay;
        r.end.set(self.note);
        let message = self.failures.join("; ");
        tracing::warn!(request_id = %r.request_id, upstream = %format!("{}:{}", r.provider, r.model), "stream ended early: {message}");
        let err = GatewayError::new(UPSTREAM_FAILED, message);
        let tail = self.queued.take().unwrap_or_default();
        append(tail, &err.stream_event(r.dialect))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminators_in_the_clients_framing() {
        assert_eq!(
            terminator(Dialect::OpenAi, Framing::Sse).unwrap(),
            Bytes::from_static(b"data: [DONE]\n\n")
        );
        assert!(
            terminator(Dialect::Anthropic, Framing::Sse)
                .unwrap()
                .starts_with(b"event: message_stop")
        );
        assert_eq!(terminator(Dialect::Ollama, Framing::Ndjson), None);
    }
}
