//! Relaying a streaming upstream response to the client, chunk by chunk.
//!
//! The body is a pull-based stream over the upstream's: nothing is buffered or spawned, so a slow
//! client slows the upstream (backpressure) and a client that goes away drops the upstream
//! connection (cancellation). Each chunk must arrive within the idle timeout. Once bytes have
//! reached the client there is no failover, so a stream that fails (upstream error, idle timeout,
//! shutdown, or an upstream that closes before its terminal event) ends with one error event in
//! the client's framing: never a silently truncated "success".

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::errors::{Dialect, GatewayError, UPSTREAM_FAILED};
use super::metrics::StreamGuard;

pub type Upstream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// How the end of a well-formed stream looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent events: OpenAI `data: [DONE]`, Responses `response.completed`, Anthropic
    /// `message_stop`.
    Sse,
    /// Ollama's NDJSON: a `"done":true` line.
    Ndjson,
}

/// Watches the bytes going by for the stream's terminal marker (across chunk boundaries).
#[derive(Debug)]
pub struct Terminal {
    framing: Framing,
    tail: Vec<u8>,
    pub seen: bool,
}

const SSE_MARKERS: &[&[u8]] = &[
    b"[DONE]",
    b"message_stop",
    b"response.completed",
    b"response.incomplete",
    b"response.failed",
    b"\"error\"",
];
const NDJSON_MARKERS: &[&[u8]] = &[b"\"done\":true", b"\"done\": true", b"\"error\""];

impl Terminal {
    pub fn new(framing: Framing) -> Self {
        Terminal {
            framing,
            tail: Vec::with_capacity(2 * KEEP),
            seen: false,
        }
    }

    /// Looks for a terminal marker in `chunk` and across its boundary with the previous one,
    /// keeping only the last [`KEEP`] bytes seen (in a buffer reused chunk after chunk).
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.seen {
            return;
        }
        let markers = match self.framing {
            Framing::Sse => SSE_MARKERS,
            Framing::Ndjson => NDJSON_MARKERS,
        };
        let found = |hay: &[u8]| {
            markers
                .iter()
                .any(|m| hay.windows(m.len()).any(|w| w == *m))
        };
        // A marker that straddles the boundary lies within the old tail and this chunk's head.
        self.tail.extend_from_slice(&chunk[..chunk.len().min(KEEP)]);
        if found(&self.tail) || found(chunk) {
            self.seen = true;
        }
        if chunk.len() >= KEEP {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - KEEP..]);
        } else {
            let excess = self.tail.len().saturating_sub(KEEP);
            self.tail.drain(..excess);
        }
    }
}

/// Bytes kept between chunks: more than the longest marker.
const KEEP: usize = 24;

pub struct Relay {
    pub first: Bytes,
    pub upstream: Upstream,
    pub idle: Duration,
    pub dialect: Dialect,
    pub framing: Framing,
    pub cancel: CancellationToken,
    pub guard: StreamGuard,
    /// `provider:model`, for the error message.
    pub label: String,
}

struct State {
    relay: Relay,
    first: Option<Bytes>,
    terminal: Terminal,
    done: bool,
}

/// The client-facing body stream.
pub fn relay(r: Relay) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let mut terminal = Terminal::new(r.framing);
    terminal.feed(&r.first);
    let state = State {
        first: Some(r.first.clone()),
        relay: r,
        terminal,
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if let Some(first) = st.first.take() {
            return Some((Ok(first), st));
        }
        if st.done {
            return None;
        }
        let idle = st.relay.idle;
        let failure = tokio::select! {
            biased;
            _ = st.relay.cancel.cancelled() => Some("the gateway is shutting down".to_string()),
            next = tokio::time::timeout(idle, st.relay.upstream.next()) => match next {
                Ok(Some(Ok(bytes))) => {
                    st.terminal.feed(&bytes);
                    return Some((Ok(bytes), st));
                }
                Ok(Some(Err(e))) => Some(format!("the upstream stream failed: {}", super::forward::describe_reqwest(&e))),
                Ok(None) if st.terminal.seen => None,
                Ok(None) => Some("the upstream closed the stream before it finished".to_string()),
                Err(_) => Some(format!("the upstream sent nothing for {}", crate::policy::duration::format(idle))),
            }
        };
        st.done = true;
        let message = failure?;
        tracing::warn!(upstream = %st.relay.label, "stream ended early: {message}");
        let err = GatewayError::new(UPSTREAM_FAILED, format!("{}: {message}", st.relay.label));
        Some((Ok(err.stream_event(st.relay.dialect)), st))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_markers_across_chunks() {
        let mut t = Terminal::new(Framing::Sse);
        t.feed(b"data: {\"x\":1}\n\ndata: [DO");
        assert!(!t.seen);
        t.feed(b"NE]\n\n");
        assert!(t.seen);
        let mut t = Terminal::new(Framing::Ndjson);
        t.feed(b"{\"done\":false}\n");
        assert!(!t.seen);
        t.feed(b"{\"done\":true}\n");
        assert!(t.seen);
        // A long chunk ending in half a marker, a short one, then the rest.
        let mut t = Terminal::new(Framing::Sse);
        t.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [D");
        t.feed(b"ON");
        assert!(!t.seen);
        t.feed(b"E]\n\n");
        assert!(t.seen);
    }
}
