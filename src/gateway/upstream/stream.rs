//! Relaying a streaming upstream response to the client, chunk by chunk.
//!
//! The body is a pull-based stream over the upstream's: nothing is buffered or spawned, so a slow
//! client slows the upstream (backpressure) and a client that goes away drops the upstream
//! connection (cancellation). Each chunk must arrive within the idle timeout. Once bytes have
//! reached the client there is no failover, so a stream that fails (upstream error, idle timeout,
//! shutdown, or an upstream that closes before its terminal event) ends with one error event in
//! the client's framing: never a silently truncated "success". Events pass through
//! [`super::events::Events`], so a malformed event is dropped whole rather than passed on, and an
//! upstream that closes after a finished answer but without its terminal event (`[DONE]`,
//! `message_stop`) gets one added, so the client's stream ends promptly and cleanly.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::events::{Events, Framing};
use crate::gateway::errors::{Dialect, GatewayError, UPSTREAM_FAILED};
use crate::gateway::observe::metrics::StreamGuard;

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
}

struct State {
    relay: Relay,
    first: Option<Bytes>,
    events: Events,
    done: bool,
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

/// The client-facing body stream.
pub fn relay(r: Relay) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let state = State {
        events: Events::new(r.framing),
        first: Some(r.first.clone()),
        relay: r,
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(first) = st.first.take() {
                let out = st.events.push(first);
                if !out.is_empty() {
                    return Some((Ok(out), st));
                }
                continue;
            }
            let idle = st.relay.idle;
            let failure = tokio::select! {
                biased;
                _ = st.relay.cancel.cancelled() => Some("the gateway is shutting down".to_string()),
                next = tokio::time::timeout(idle, st.relay.upstream.next()) => match next {
                    Ok(Some(Ok(bytes))) => {
                        let out = st.events.push(bytes);
                        if out.is_empty() {
                            continue;
                        }
                        return Some((Ok(out), st));
                    }
                    Ok(Some(Err(e))) => Some(format!("the upstream stream failed: {}", super::failed::describe(&e))),
                    Ok(None) => None,
                    Err(_) => Some(format!("the upstream sent nothing for {}", crate::policy::duration::format(idle))),
                }
            };
            st.done = true;
            let r = &st.relay;
            let usage = st.events.usage;
            r.guard.metrics().tokens(&r.provider, &r.model, usage);
            let tail = match failure {
                Some(_) => Bytes::new(),
                None => st.events.finish(),
            };
            let message = match failure {
                Some(m) => m,
                None if st.events.terminal => {
                    return (!tail.is_empty()).then_some((Ok(tail), st));
                }
                None if st.events.finished
                    && let Some(end) = terminator(r.dialect, r.framing) =>
                {
                    return Some((Ok(append(tail, &end)), st));
                }
                None => "the upstream closed the stream before it finished".to_string(),
            };
            tracing::warn!(upstream = %format!("{}:{}", r.provider, r.model), "stream ended early: {message}");
            let err = GatewayError::new(
                UPSTREAM_FAILED,
                format!("{}:{}: {message}", r.provider, r.model),
            );
            return Some((Ok(append(tail, &err.stream_event(r.dialect))), st));
        }
    })
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
