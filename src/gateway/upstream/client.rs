//! The pooled HTTP client `serve` forwards with.
//!
//! hyper-util's legacy client, the same pooled client reqwest wraps, over hyper-rustls (the
//! rustls connector reqwest uses too, with the platform's certificate verifier). reqwest stays
//! for `probe` and start-up discovery; on the request path it cost a fifth of serve's CPU per
//! request: it parsed the upstream URL three times per request (into a `Url`, for its redirect
//! layer, and back into a `Uri`, each time with IDNA) and ran redirect and retry layers serve
//! never uses. Here a request is a `Uri`, a `HeaderMap` and the body's `Bytes`, sent as given.
//! No proxy variables are read and no redirect is followed, as before.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use super::failed::{SendError, describe};
use super::pool::Pool;

/// A body chunk stream from an upstream response (data frames only).
pub type DataStream = BodyDataStream<UpstreamBody>;

/// An upstream response body: from a plain-http pooled connection or from hyper-util's client.
#[derive(Debug)]
pub enum UpstreamBody {
    Pooled(super::pool::PooledBody),
    Legacy(Incoming),
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Pooled(b) => std::pin::Pin::new(b).poll_frame(cx),
            UpstreamBody::Legacy(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Pooled(b) => b.is_end_stream(),
            UpstreamBody::Legacy(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            UpstreamBody::Pooled(b) => b.size_hint(),
            UpstreamBody::Legacy(b) => b.size_hint(),
        }
    }
}

fn connector(connect_timeout: Duration) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    // Without TCP_NODELAY a request's head and body, or small SSE writes, can wait for
    // delayed ACKs.
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    match HttpsConnectorBuilder::new().try_with_platform_verifier() {
        Ok(b) => b
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http),
        Err(e) => {
            // No usable certificate store: plain-http upstreams (Ollama, local servers) still
            // work; an https one fails to connect (unknown issuer) instead of serve not starting.
            tracing::warn!(
                "TLS is unavailable ({e}); only http:// upstreams can be reached until that is fixed"
            );
            let empty = rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            HttpsConnectorBuilder::new()
                .with_tls_config(empty)
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http)
        }
    }
}

#[derive(Clone)]
pub struct UpstreamClient {
    /// `https://` upstreams (TLS, HTTP/2 by ALPN).
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `http://` upstreams.
    plain: Arc<Pool>,
}

impl UpstreamClient {
    pub fn new(connect_timeout: Duration, pool_idle_timeout: Duration) -> UpstreamClient {
        Self::per_worker(1, connect_timeout, pool_idle_timeout).remove(0)
    }

    /// `n` clients with their own connection pools (one per worker, see [`crate::gateway::server::workers`])
    /// over one TLS configuration (loading the platform's roots is done once).
    pub fn per_worker(
        n: usize,
        connect_timeout: Duration,
        pool_idle_timeout: Duration,
    ) -> Vec<UpstreamClient> {
        let connector = connector(connect_timeout);
        (0..n.max(1))
            .map(|_| UpstreamClient {
                plain: Pool::new(connect_timeout, pool_idle_timeout),
                inner: Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(pool_idle_timeout)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(connector.clone()),
            })
            .collect()
    }

    /// Sends one request; resolves when the response head has arrived.
    pub async fn send(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let mut headers = headers;
        if !headers.contains_key(header::HOST)
            && let Some(host) = host_value(&uri)
        {
            headers.insert(header::HOST, host);
        }
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        if req.uri().scheme_str() == Some("http") {
            return Ok(self.plain.send(req).await?.map(UpstreamBody::Pooled));
        }
        match self.inner.request(req).await {
            Ok(resp) => Ok(resp.map(UpstreamBody::Legacy)),
            Err(e) => Err(SendError {
                connect: e.is_connect(),
                reason: describe(&e),
            }),
        }
    }

    /// A GET whose whole body is read (listings), within `timeout`.
    pub async fn get(
        &self,
        uri: Uri,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Option<(u16, Bytes)> {
        let work = async {
            let resp = self
                .send(Method::GET, uri, headers, Bytes::new())
                .await
                .ok()?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            Some((status, body))
        };
        tokio::time::timeout(timeout, work).await.ok().flatten()
    }
}

/// The `Host` header for `uri`: its authority without user info or the scheme's default port.
/// (hyper-util would build the same with `format!` and a port parse on every request.)
fn host_value(uri: &Uri) -> Option<HeaderValue> {
    let authority = uri.authority()?.as_str();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default = if uri.scheme_str() == Some("https") {
        ":443"
    } else {
        ":80"
    };
    let host = host.strip_suffix(default).unwrap_or(host);
    HeaderValue::from_str(host).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_the_authority_without_user_info_or_default_port() {
        let host = |u: &str| host_value(&u.parse().unwrap()).unwrap();
        assert_eq!(host("http://127.0.0.1:11434/v1"), "127.0.0.1:11434");
        assert_eq!(host("http://localhost:80/v1"), "localhost");
        assert_eq!(host("https://api.openai.com:443/v1"), "api.openai.com");
        assert_eq!(host("https://example.com:80/v1"), "example.com:80");
        assert_eq!(host("http://user:pw@[::1]:8080/"), "[::1]:8080");
        assert_eq!(host("https://api.anthropic.com"), "api.anthropic.com");
    }

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = UpstreamClient::new(Duration::from_secs(5), Duration::from_secs(5));
        let uri: Uri = format!("http://127.0.0.1:{port}/v1/chat/completions")
            .parse()
            .unwrap();
        let err = client
            .send(Method::POST, uri, HeaderMap::new(), Bytes::new())
            .await
            .unwrap_err();
        assert!(err.connect);
        assert_eq!(err.reason, "connection refused");
    }

    #[tokio::test]
    async fn a_tls_failure_says_what_failed() {
        // An https:// upstream that answers in plain text.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            if let Ok((mut tcp, _)) = listener.accept().await {
                let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let client = UpstreamClient::new(Duration::from_secs(5), Duration::from_secs(5));
        let uri: Uri = format!("https://127.0.0.1:{port}/v1").parse().unwrap();
        let err = client
            .send(Method::POST, uri, HeaderMap::new(), Bytes::new())
            .await
            .unwrap_err();
        assert!(err.connect, "{err:?}");
        assert!(err.reason.starts_with("cannot connect ("), "{}", err.reason);
        assert!(
            err.reason.len() > "cannot connect ()".len(),
            "{}",
            err.reason
        );
    }
}
