//! A request body that must arrive within `--body-read-timeout`.
//!
//! hyper's `header_read_timeout` ends at the blank line after the headers; a client could then
//! send a `Content-Length: 1000` body 10 bytes at a time, or nothing, and hold a connection
//! (and a `--max-connections` slot) forever. The deadline starts the first time the gateway
//! waits for body bytes: a body that has already arrived with its head (the usual case) costs
//! one poll and no timer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error a body read ends with when its deadline passes.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {}",
            humantime::format_duration(self.0)
        )
    }
}

impl std::error::Error for BodyTimeout {}

/// Whether `e`, or an error it wraps, is a [`BodyTimeout`].
pub fn is_timeout(e: &(dyn std::error::Error + 'static)) -> Option<BodyTimeout> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<BodyTimeout>() {
            return Some(*t);
        }
        next = e.source();
    }
    None
}

/// `inner`, ending with [`BodyTimeout`] if it is not complete `limit` after the first wait.
pub struct TimedBody<B> {
    inner: B,
    limit: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, limit: Duration) -> Self {
        TimedBody {
            inner,
            limit,
            deadline: None,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let limit = this.limit;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_stalled_body_ends_with_the_timeout_and_a_complete_one_does_not() {
        let stalled = Stalled([Bytes::from_static(b"{\"a\"")].into());
        let body = TimedBody::new(stalled, Duration::from_millis(200));
        let err = body.collect().await.unwrap_err();
        let t = is_timeout(err.as_ref()).expect("a BodyTimeout");
        assert_eq!(t.0, Duration::from_millis(200));
        assert_eq!(
            err.to_string(),
            "the request body did not arrive within 200ms"
        );
        let done = TimedBody::new(
            http_body_util::Full::new(Bytes::from_static(b"{}")),
            Duration::from_secs(5),
        );
        assert_eq!(done.collect().await.unwrap().to_bytes(), "{}");
    }

    /// A body that yields what was pushed, then waits forever.
    struct Stalled(std::collections::VecDeque<Bytes>);
    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.0.pop_front() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Pending,
            }
        }
    }
}
