//! Keep-alive connections to plain-`http://` upstreams (Ollama, local servers), one pool per
//! worker.
//!
//! hyper-util's pooled client was a sixth of serve's instructions per proxied request: a
//! pool lock shared by every task, SipHash over the authority byte by byte three times, a lazy
//! connect future built and raced against the checkout, a task spawned to return the
//! connection. Here a worker's connections sit in its own map (its lock is never contended),
//! the request goes straight to hyper's HTTP/1 connection, and a connection goes back to the
//! pool when its response body has been read to the end. `https://` upstreams stay on
//! hyper-util, which does TLS and HTTP/2 (ALPN); over the internet, its cost is noise.
//!
//! A connection is reused only once its response was read to the end; one whose body was
//! dropped half-way is closed by hyper. A pooled connection that turns out to be closed when a
//! request is put on it is discarded and the request goes on another (or a new) connection,
//! as long as nothing of it was sent.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{Request, Response, Uri};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::failed::SendError;

type Sender = SendRequest<Full<Bytes>>;

/// Most idle connections kept per upstream (more are closed when they come back).
const MAX_IDLE_PER_UPSTREAM: usize = 256;

#[derive(Debug)]
pub struct Pool {
    /// Idle connections by `host:port`, oldest first.
    idle: Mutex<HashMap<String, Vec<Idle>, foldhash::fast::RandomState>>,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

#[derive(Debug)]
struct Idle {
    tx: Sender,
    since: Instant,
}

impl Pool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Arc<Pool> {
        Arc::new(Pool {
            idle: Mutex::default(),
            idle_timeout,
            connect_timeout,
        })
    }

    fn idle(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Idle>, foldhash::fast::RandomState>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection to `key` that is still open and fresh, newest first.
    fn checkout(&self, key: &str) -> Option<Sender> {
        let mut idle = self.idle();
        let list = idle.get_mut(key)?;
        while let Some(c) = list.pop() {
            if c.since.elapsed() >= self.idle_timeout {
                // The rest are older still.
                list.clear();
                return None;
            }
            if !c.tx.is_closed() {
                return Some(c.tx);
            }
        }
        None
    }

    fn put(&self, key: String, tx: Sender) {
        if tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle();
        let list = idle.entry(key).or_default();
        let stale = list
            .iter()
            .take_while(|c| now.duration_since(c.since) >= self.idle_timeout)
            .count();
        list.drain(..stale);
        if list.len() >= MAX_IDLE_PER_UPSTREAM {
            list.remove(0);
        }
        list.push(Idle { tx, since: now });
    }

    /// Idle connections kept (all upstreams).
    pub fn idle_count(&self) -> usize {
        self.idle().values().map(Vec::len).sum()
    }

    async fn connect(&self, uri: &Uri) -> Result<Sender, SendError> {
        let refused = |reason: String| SendError {
            connect: true,
            reason,
        };
        let host = uri
            .host()
            .ok_or_else(|| refused("the upstream URL has no host".into()))?;
        // `[::1]` in a URL, `::1` to connect.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| refused("connection timed out".into()))?
        .map_err(|e| refused(super::failed::describe_connect(&e)))?;
        // Without TCP_NODELAY a request's head and body, or small SSE writes, can wait for
        // delayed ACKs.
        let _ = stream.set_nodelay(true);
        let (tx, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| refused(super::failed::describe(&e)))?;
        // On the worker's own runtime: the connection's I/O stays on this thread.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        Ok(tx)
    }

    /// Sends `req` (its URI in absolute form, a `Host` header set) on a pooled or new
    /// connection; resolves when the response head has arrived.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<PooledBody>, SendError> {
        let uri = std::mem::take(req.uri_mut());
        let key = uri
            .authority()
            .map(|a| a.as_str())
            .unwrap_or("")
            .to_string();
        // HTTP/1 to an origin sends the path alone.
        *req.uri_mut() = uri
            .path_and_query()
            .map(|p| Uri::from(p.clone()))
            .unwrap_or_else(|| Uri::from_static("/"));
        let mut req = Some(req);
        loop {
            let (mut tx, reused) = match self.checkout(&key) {
                Some(tx) => (tx, true),
                None => (self.connect(&uri).await?, false),
            };
            if tx.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(SendError {
                    connect: true,
                    reason: "the connection closed".into(),
                });
            }
            let Some(r) = req.take() else {
                unreachable!("the request is put back before every retry")
            };
            match tx.try_send_request(r).await {
                Ok(resp) => {
                    let back = Some(Return {
                        pool: self.clone(),
                        key,
                        tx,
                    });
                    return Ok(resp.map(|inner| PooledBody { inner, back }));
                }
                Err(mut e) => match e.take_message() {
                    // Nothing was sent: a pooled connection closed under us.
                    Some(r) if reused => req = Some(r),
                    _ => {
                        return Err(SendError {
                            connect: false,
                            reason: super::failed::describe(e.error()),
                        });
                    }
                },
            }
        }
    }
}

/// A connection to give back once its response has been read.
#[derive(Debug)]
struct Return {
    pool: Arc<Pool>,
    key: String,
    tx: Sender,
}

/// A response body from a pooled connection: the connection goes back to the pool when the
/// body ends; dropped earlier (a client that went away mid-stream), the connection closes.
#[derive(Debug)]
pub struct PooledBody {
    inner: Incoming,
    back: Option<Return>,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some(r) = self.back.take() {
            r.pool.put(r.key, r.tx);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.give_back(),
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
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
    use axum::http::{HeaderValue, header};
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server answering each request with `body` (`Content-Length`); after each response
    /// it keeps the connection when `keep` says so, and counts the connections it accepted.
    /// A request for `/slow` gets its head and half its body, the rest after `release`.
    async fn server(keep: bool, release: Arc<tokio::sync::Notify>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let release = release.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request: a head (these tests send bodies with Content-Length 2).
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        while buf.len() < end + 2 {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..end + 2);
                        if head.starts_with("POST /slow") {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab")
                                .await;
                            release.notified().await;
                            let _ = s.write_all(b"cd").await;
                        } else {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                        }
                        if !keep {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), accepted)
    }

    fn post(base: &str, path: &str) -> Request<Full<Bytes>> {
        let uri: Uri = format!("{base}{path}").parse().unwrap();
        let mut req = Request::new(Full::new(Bytes::from_static(b"{}")));
        *req.method_mut() = axum::http::Method::POST;
        let host = uri.authority().unwrap().as_str().to_string();
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_str(&host).unwrap());
        *req.uri_mut() = uri;
        req
    }

    async fn read(resp: Response<PooledBody>) -> Bytes {
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    fn pool() -> Arc<Pool> {
        Pool::new(Duration::from_secs(10), Duration::from_secs(60))
    }

    #[tokio::test]
    async fn one_connection_serves_requests_one_after_another() {
        let (base, accepted) = server(true, Default::default()).await;
        let pool = pool();
        for _ in 0..5 {
            let resp = pool
                .send(post(&base, "/v1/chat/completions"))
                .await
                .unwrap();
            assert_eq!(read(resp).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced() {
        let (base, accepted) = server(false, Default::default()).await;
        let pool = pool();
        for _ in 0..3 {
            let resp = pool.send(post(&base, "/x")).await.unwrap();
            assert_eq!(read(resp).await, "ok");
            // Let the pooled connection see the upstream's close (or not: either way the
            // next request must succeed).
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_body_still_being_read_does_not_hold_up_other_requests() {
        let release = Arc::new(tokio::sync::Notify::new());
        let (base, accepted) = server(true, release.clone()).await;
        let pool = pool();
        let slow = pool.send(post(&base, "/slow")).await.unwrap();
        // The slow response's connection is busy: this one needs its own.
        let quick = pool.send(post(&base, "/quick")).await.unwrap();
        assert_eq!(read(quick).await, "ok");
        release.notify_one();
        assert_eq!(read(slow).await, "abcd");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle_count(), 2);
    }

    #[tokio::test]
    async fn a_body_dropped_half_way_closes_its_connection() {
        let release = Arc::new(tokio::sync::Notify::new());
        let (base, accepted) = server(true, release.clone()).await;
        let pool = pool();
        let slow = pool.send(post(&base, "/slow")).await.unwrap();
        drop(slow);
        assert_eq!(pool.idle_count(), 0);
        let resp = pool.send(post(&base, "/next")).await.unwrap();
        assert_eq!(read(resp).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn expired_connections_are_not_reused() {
        let (base, accepted) = server(true, Default::default()).await;
        let pool = Pool::new(Duration::from_secs(10), Duration::ZERO);
        for _ in 0..2 {
            let resp = pool.send(post(&base, "/x")).await.unwrap();
            assert_eq!(read(resp).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = pool()
            .send(post(&format!("http://127.0.0.1:{port}"), "/x"))
            .await
            .err()
            .unwrap();
        assert!(err.connect);
        assert_eq!(err.reason, "connection refused");
    }
}
