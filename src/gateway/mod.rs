//! `aigw serve`: a local OpenAI-compatible (and Ollama- and Anthropic-compatible) gateway that
//! executes the engine's [`Plan`](crate::routing::plan::Plan) with failover.
//!
//! Its rooms (no two files import each other; [`errors`], [`limits`], [`names`] and [`token`] are
//! shared):
//! - [`server`]: the inbound side: the axum router and inbound auth ([`server::routes`]), one
//!   request from body to answer ([`server::pipeline`]), the traffic policy's rules around it
//!   ([`server::policy_hook`]), body parsing, the Ollama native API, loop detection, workers,
//!   open-file limits, policy reload, the `/ui` status page ([`server::ui`]).
//! - [`attempts`]: the failover executor ([`attempts::forward`]), failure classes and retries,
//!   circuit breakers, `${…}` per request.
//! - [`upstream`]: the outbound side: the keep-alive pool and client, why a send failed,
//!   chunk-by-chunk relaying of SSE / NDJSON with idle timeouts and a final error event, stream
//!   event parsing.
//! - [`observe`]: what aigw tells about traffic: metrics, the access log and its writer, token
//!   usage, rolling per-model figures for `m.metrics`, key redaction, what the status page
//!   shows of recent requests ([`observe::status`]).
//!
//! The gateway sees the engine through the small [`Routing`] trait, so it can be tested with a
//! fixed plan and swapped on reload.

pub mod attempts;
pub mod errors;
pub mod fleet;
pub mod limits;
pub mod names;
pub mod observe;
pub mod server;
pub mod shared;
pub mod token;
pub mod upstream;

use attempts::{breaker, failure};
use observe::{access_log, metrics, status, traffic};
use server::{hops, policy_hook, routes, workers};
use upstream::client;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::policy::secrets::SecretStore;
use crate::policy::{AiGateway, ApiFormat};
use crate::routing::plan::{Plan, Request};
use crate::routing::upstream::UrlOrigin;

/// What the gateway needs from a routing engine.
pub trait Routing: Send + Sync + 'static {
    /// Plans one request; `seed` feeds `random()` / `randomize()`. Shared: an engine may hand
    /// the same plan to every request that asks the same thing.
    fn plan(&self, req: &Request, seed: u64) -> Arc<Plan>;
    /// The typed `ai-gateway` config (timeouts, headers, query_params, body, token limits).
    fn gateway(&self) -> &AiGateway;
    /// The configured API key `index` of a provider, secrets substituted.
    fn key_value(&self, provider_id: &str, index: usize) -> Option<String>;
    /// The effective providers (after `--base-url` and `.internal` mapping).
    fn providers(&self) -> Vec<ProviderView>;
    /// The policy's rules around `ai-gateway` (`None`: nothing to evaluate per request).
    fn traffic(&self) -> Option<Arc<crate::traffic::Program>> {
        None
    }
    /// The `ai-gateway` action's `headers`, `query_params` and `body`, compiled.
    fn decorations(&self) -> &crate::traffic::decorate::Decorations {
        static NONE: std::sync::LazyLock<crate::traffic::decorate::Decorations> =
            std::sync::LazyLock::new(Default::default);
        &NONE
    }
    /// `(provider, model)` of every model the policy lists (not discovered ones), for
    /// readiness and the start-up "installed nowhere" warning.
    fn policy_models(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// One provider as the gateway sees it.
#[derive(Debug, Clone)]
pub struct ProviderView {
    pub id: String,
    pub base_url: Option<String>,
    pub origin: UrlOrigin,
    pub ollama: bool,
    pub builtin: bool,
    /// Listed under `providers` in the policy (else a built-in one reached by passthrough).
    pub configured: bool,
    pub formats: Vec<ApiFormat>,
    /// Configured API keys (0 means the client's key passes through).
    pub keys: usize,
    /// Models known for this provider (configured or discovered).
    pub models: usize,
}

/// Tunables from the command line.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Inbound token (`Authorization: Bearer TOKEN` or `x-api-key: TOKEN`); required off loopback.
    pub auth_token: Option<String>,
    pub max_attempts: usize,
    /// `--first-byte-timeout`: a limit on every attempt's time to first byte, on top of
    /// `per_request_timeout` (see [`attempts::first_byte`] for what applies without it).
    pub first_byte_timeout: Option<Duration>,
    /// Without `--first-byte-timeout`: the limit on a stream's first byte while another model
    /// is left to try.
    pub stream_first_byte_timeout: Duration,
    /// `--cold-start-timeout`: the first-byte budget of an Ollama model that is not loaded.
    pub cold_start_timeout: Duration,
    /// A stream that sends nothing for this long ends with an error event (or is continued).
    pub stream_idle_timeout: Duration,
    /// Continue a chat stream that fails midway on the plan's next candidate
    /// (`--no-stream-continuation` turns it off: the stream ends with an error event).
    pub stream_continuation: bool,
    /// Largest request body accepted (bytes); a larger one gets 413 naming `--max-body-bytes`.
    pub max_body_bytes: usize,
    /// A client must send its request head (line and headers) within this time, else the
    /// connection is closed (slow-loris defence). Also bounds the time from connecting to the
    /// first complete request (HTTP/1 or HTTP/2).
    pub header_read_timeout: Duration,
    /// A request body must arrive within this time from when the gateway first waits for it,
    /// else the client gets 408 and the connection is closed (a stalled or trickled body).
    pub body_read_timeout: Duration,
    pub connect_timeout: Duration,
    /// On shutdown, how long requests and streams in flight may take to finish before open
    /// streams are ended with an error event.
    pub drain_timeout: Duration,
    /// Refuse upstreams outside 127.0.0.0/8 and `localhost` (tests use it as a safety net).
    pub upstream_loopback_only: bool,
    /// Waiting and retrying after a 429.
    pub retry: failure::RetryOptions,
    /// Skipping a model whose circuit is open.
    pub breaker: breaker::BreakerOptions,
    /// Threads serving connections (see [`workers`]); 1 serves them on the caller's runtime.
    pub workers: usize,
    /// Most client connections served at once (0: no cap). At the cap the accept loop waits
    /// for one to close and new clients wait in the listen backlog, rather than being accepted
    /// only to fail when their upstream connection finds no file descriptor left.
    pub max_connections: usize,
    /// Where request lines go in text form; `None`: as a structured `tracing` event (JSON logs).
    pub access_log: Option<access_log::AccessLog>,
    /// `--max-in-flight`, `--queue-depth`, `--queue-timeout`.
    pub limits: fleet::limit::LimitOptions,
    /// `--state`: share breakers, box health, rate limits and metrics through Redis.
    pub state: Option<shared::url::StateUrl>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            auth_token: None,
            max_attempts: 10,
            first_byte_timeout: None,
            stream_first_byte_timeout: attempts::first_byte::STREAM_DEFAULT,
            cold_start_timeout: attempts::first_byte::COLD_START_DEFAULT,
            // A stall is noticed within ~10 s. Safe for slow local models: the first chunk
            // (where a cold model load waits) is bounded by the attempt's budget, not by this.
            stream_idle_timeout: Duration::from_secs(10),
            stream_continuation: true,
            max_body_bytes: 32 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            upstream_loopback_only: false,
            retry: failure::RetryOptions::default(),
            breaker: breaker::BreakerOptions::default(),
            workers: 1,
            max_connections: 0,
            access_log: None,
            limits: fleet::limit::LimitOptions::default(),
            state: None,
        }
    }
}

/// The running gateway's shared state.
pub struct Gateway {
    routing: RwLock<Arc<dyn Routing>>,
    /// Pooled upstream clients, one per worker (see [`workers`]).
    clients: Vec<client::UpstreamClient>,
    pub secrets: SecretStore,
    pub opts: GatewayOptions,
    pub metrics: Arc<metrics::Metrics>,
    /// Per-model figures of recent attempts, for `m.metrics.*`.
    pub traffic: Arc<traffic::Traffic>,
    /// One circuit breaker per `provider:model`.
    pub breakers: breaker::Breakers,
    /// Requests in flight and, while `/ui` watches, the recent ones.
    pub status: status::Status,
    /// Cancelled when a shutdown signal arrives: `/readyz` answers 503 and no new connection
    /// is accepted, while requests in flight go on (see [`serve`]).
    pub draining: CancellationToken,
    /// Cancelled when the drain is over: open streams end with an error event and background
    /// tasks stop.
    pub shutdown: CancellationToken,
    /// This process's id in `x-aigw-via` (routing-loop detection, see [`hops`]).
    pub instance_id: String,
    /// What streams and their log lines scrub (see [`redact::Redactor`]).
    pub redactor: observe::redact::RedactorCache,
    /// `rate-limit` counters; they outlive policy reloads.
    pub rate_limits: Arc<dyn crate::traffic::RateState>,
    /// What is known about each provider box (health, installed models).
    pub fleet: fleet::Fleet,
    /// Key sets the policy's `jwt-validation` actions fetch from URLs.
    pub jwks: Arc<server::jwks::Jwks>,
    /// `--state`: what is shared with the other replicas, and how the link to them is.
    pub shared: Option<shared::Sharing>,
}

/// A stream that fails midway is a failure of its model, as a failed attempt is.
impl upstream::stream::MidwayFailure for Gateway {
    fn failed_midway(&self, provider: &str, model: &str) {
        self.breakers
            .failure(provider, model, std::time::Instant::now());
    }
}

impl Gateway {
    pub fn new(
        routing: Arc<dyn Routing>,
        secrets: SecretStore,
        opts: GatewayOptions,
    ) -> Arc<Gateway> {
        let clients = client::UpstreamClient::per_worker(
            opts.workers.max(1),
            opts.connect_timeout,
            Duration::from_secs(30),
        );
        let (sharing, outbox) = match &opts.state {
            None => (None, shared::Outbox::default()),
            Some(url) => match shared::Sharing::open(url) {
                Ok((s, o)) => (Some(s), o),
                Err(e) => {
                    tracing::error!(
                        "--state {url}: {}; each replica keeps its own state",
                        shared::sync::describe(&e)
                    );
                    (None, shared::Outbox::default())
                }
            },
        };
        let rate_limits: Arc<dyn crate::traffic::RateState> = match &sharing {
            Some(s) => s.rate(),
            None => Arc::new(crate::traffic::InProcess::default()),
        };
        let opts_loopback = opts.upstream_loopback_only;
        let fleet = fleet::Fleet::new(
            Arc::new(fleet::state::LocalFleetState::default()),
            opts.limits.clone(),
        )
        .with_outbox(outbox.clone());
        Arc::new(Gateway {
            routing: RwLock::new(routing),
            breakers: breaker::Breakers::new(opts.breaker).with_outbox(outbox),
            clients,
            secrets,
            opts,
            metrics: Arc::default(),
            traffic: Arc::default(),
            status: status::Status::default(),
            draining: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            instance_id: hops::new_instance_id(),
            redactor: observe::redact::RedactorCache::default(),
            rate_limits,
            jwks: server::jwks::Jwks::new(opts_loopback),
            fleet,
            shared: sharing,
        })
    }

    /// The upstream client of the worker this runs on (its pool's connections are driven by
    /// this thread).
    pub fn client(&self) -> &client::UpstreamClient {
        &self.clients[workers::current() % self.clients.len()]
    }

    /// The engine serving new requests (in-flight requests keep the one they started with).
    pub fn current(&self) -> Arc<dyn Routing> {
        self.routing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in a new engine atomically.
    pub fn swap(&self, routing: Arc<dyn Routing>) {
        *self.routing.write().unwrap_or_else(|e| e.into_inner()) = routing;
    }

    /// Fetches the key sets `routing`'s `jwt-validation` actions name and this gateway does
    /// not hold fresh yet (before it serves, so its first tokens can be checked).
    pub async fn fetch_keys(&self, routing: &dyn Routing) {
        if let Some(program) = routing.traffic() {
            self.jwks.prefetch(&program.key_urls()).await;
        }
    }
}

/// Serves `gateway` on `listener` until `signal` resolves, then drains: `/readyz` turns 503,
/// the listener closes (new connections are refused), idle keep-alive connections close, and
/// requests and streams in flight get `drain_timeout` to finish. Streams still open then end
/// with an error event (a second, short wait lets them say so).
///
/// A hand-written accept loop rather than `axum::serve`, which has no header-read timeout: each
/// connection is served by hyper-util's auto (HTTP/1 + HTTP/2) builder with
/// `header_read_timeout`, TCP_NODELAY, and hyper-util's graceful shutdown, on one of
/// `opts.workers` [`workers`] (this runtime is the first).
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    use hyper_util::server::conn::auto;

    let app = routes::router(gateway.clone());
    if let Some(s) = &gateway.shared {
        s.start(gateway.clone());
    }
    // `jwt-validation` key sets before the first request, then kept fresh.
    gateway.fetch_keys(gateway.current().as_ref()).await;
    server::jwks::spawn_refresh(gateway.clone());
    let token = gateway.draining.clone();
    let trigger = token.clone();
    tokio::spawn(async move {
        signal.await;
        trigger.cancel();
    });
    let mut workers = workers::Workers::start(gateway.opts.workers)?;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(gateway.opts.header_read_timeout);
    // HTTP/2: a peer that stops answering pings is dropped (frames after the first request
    // have a time limit too), and one connection carries at most H2_MAX_STREAMS requests.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(gateway.opts.header_read_timeout))
        .keep_alive_timeout(gateway.opts.header_read_timeout)
        .max_concurrent_streams(H2_MAX_STREAMS);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut cap = ConnectionCap::new(gateway.opts.max_connections);
    loop {
        let slot = tokio::select! {
            _ = token.cancelled() => break,
            slot = cap.acquire() => slot,
        };
        let (tcp, remote) = tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {}", accept_error(&e));
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let conn = Connection {
            streams: cap.shared(),
            gateway: gateway.clone(),
            app: app.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            head_timeout: gateway.opts.header_read_timeout,
            remote,
        };
        // `slot` is held by the connection's task and given back when it ends.
        if workers.len() == 1 {
            workers.spawn(async move {
                let _slot = slot;
                conn.serve(tcp).await
            });
            continue;
        }
        // The socket moves to the worker's own reactor, so its readiness wakes that thread.
        match tcp.into_std() {
            Ok(std) => workers.spawn(async move {
                let _slot = slot;
                match tokio::net::TcpStream::from_std(std) {
                    Ok(tcp) => conn.serve(tcp).await,
                    Err(e) => tracing::warn!("cannot serve a connection from {remote}: {e}"),
                }
            }),
            Err(e) => tracing::warn!("cannot serve a connection from {remote}: {e}"),
        }
    }
    drop(listener);
    let drain = gateway.opts.drain_timeout;
    let finished = graceful.shutdown();
    tokio::pin!(finished);
    if tokio::time::timeout(drain, &mut finished).await.is_err() {
        let open = gateway.metrics.open_streams();
        tracing::warn!(
            "shutdown: requests still in flight after --drain-timeout {}; ending {open} open stream(s) with an error event",
            humantime::format_duration(drain)
        );
        gateway.shutdown.cancel();
        let _ = tokio::time::timeout(SAY_GOODBYE, &mut finished).await;
    }
    // Background tasks (health checks, reload watching, state sync) stop here.
    gateway.shutdown.cancel();
    drop(workers);
    Ok(())
}

/// After the drain timeout, how long streams get to send their final error event.
const SAY_GOODBYE: Duration = Duration::from_secs(2);

/// `--max-connections`: one permit per connection being served, given back when it closes.
struct ConnectionCap {
    permits: Option<(Arc<tokio::sync::Semaphore>, usize)>,
    /// When serve last said it is at the cap (said at most once a minute).
    warned: Option<std::time::Instant>,
}

impl ConnectionCap {
    fn new(max: usize) -> ConnectionCap {
        let max = max.min(tokio::sync::Semaphore::MAX_PERMITS);
        ConnectionCap {
            permits: (max > 0).then(|| (Arc::new(tokio::sync::Semaphore::new(max)), max)),
            warned: None,
        }
    }

    /// The permits, for HTTP/2 streams beyond a connection's first (see [`StreamSlot`]).
    fn shared(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        self.permits.as_ref().map(|(p, _)| p.clone())
    }

    /// A slot for the next connection, waiting while `max` are open.
    async fn acquire(&mut self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let (permits, max) = self.permits.as_ref()?;
        if let Ok(p) = permits.clone().try_acquire_owned() {
            return Some(p);
        }
        if self
            .warned
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            self.warned = Some(std::time::Instant::now());
            tracing::warn!(
                "{max} connections open, the --max-connections cap: new clients wait until one closes"
            );
        }
        // Never closed: it lives as long as the accept loop.
        permits.clone().acquire_owned().await.ok()
    }
}

/// Most concurrent requests on one HTTP/2 connection.
const H2_MAX_STREAMS: u32 = 64;

/// One request in flight on an HTTP/2 connection. The connection's own permit covers its first
/// stream; every further concurrent stream holds a permit of `--max-connections` too, so the
/// cap bounds requests (and the upstream sockets they open), not only connections. Held by the
/// response body until it ends.
struct StreamSlot {
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl StreamSlot {
    /// A slot, or `None` when the cap is reached (the request is refused at once, never
    /// queued: a queued stream would wait on connections that are merely idle).
    fn take(
        in_flight: &Arc<std::sync::atomic::AtomicUsize>,
        permits: Option<&Arc<tokio::sync::Semaphore>>,
    ) -> Option<StreamSlot> {
        use std::sync::atomic::Ordering;
        let before = in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = |permit| StreamSlot {
            in_flight: in_flight.clone(),
            _permit: permit,
        };
        match permits {
            Some(p) if before > 0 => match p.clone().try_acquire_owned() {
                Ok(permit) => Some(slot(Some(permit))),
                Err(_) => {
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                    None
                }
            },
            _ => Some(slot(None)),
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A response body that holds its stream's slot until it ends.
struct Held {
    body: axum::body::Body,
    _slot: StreamSlot,
}

impl hyper::body::Body for Held {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// 503 for an HTTP/2 stream over the cap.
fn over_stream_cap() -> axum::response::Response {
    let mut resp = axum::response::Response::new(axum::body::Body::from(
        "{\"error\":{\"message\":\"aigw is serving --max-connections requests at once (HTTP/2 streams count too); retry shortly, or raise --max-connections\",\"type\":\"overloaded\"}}",
    ));
    *resp.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// One accepted connection, ready to be served on a worker.
struct Connection {
    /// `--max-connections`' permits, shared with HTTP/2 streams.
    streams: Option<Arc<tokio::sync::Semaphore>>,
    gateway: Arc<Gateway>,
    app: axum::Router,
    builder: hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    head_timeout: Duration,
    remote: SocketAddr,
}

impl Connection {
    /// One request: refused early when its declared body is too large, its body read under a
    /// deadline, the policy's rules (when it has any besides `ai-gateway`) around the fast path
    /// (health, metrics) or the router. `Err` makes hyper drop the connection (close-connection).
    async fn answer(
        gateway: Arc<Gateway>,
        app: axum::Router,
        req: axum::http::Request<hyper::body::Incoming>,
        remote: SocketAddr,
        local: Option<SocketAddr>,
    ) -> Result<axum::response::Response, policy_hook::Closed> {
        use tower::ServiceExt;
        // Before the body is read: hyper sends `100 Continue` only once it is.
        if let Some(refused) = server::pipeline::declared_too_large(&gateway, &req) {
            return Ok(refused);
        }
        let limit = gateway.opts.body_read_timeout;
        let req = req.map(|b| server::timed_body::TimedBody::new(b, limit));
        let route =
            |mut req: axum::http::Request<server::timed_body::TimedBody<hyper::body::Incoming>>| {
                let gateway = gateway.clone();
                async move {
                    if routes::is_fast_path(req.method(), req.uri().path()) {
                        return routes::fast_path(gateway, req, remote).await;
                    }
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(remote));
                    match app.oneshot(req).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                }
            };
        match gateway.current().traffic() {
            // Probes answer for the process, not for the policy's clients: a guard or a
            // rate limit must not make Kubernetes restart or unroute a healthy replica.
            _ if routes::is_probe(req.uri().path()) => Ok(route(req).await),
            None => Ok(route(req).await),
            Some(program) => {
                policy_hook::apply(gateway.clone(), program, req, remote, local, route).await
            }
        }
    }

    async fn serve(self, tcp: tokio::net::TcpStream) {
        use hyper_util::rt::TokioIo;

        let Connection {
            streams,
            gateway,
            app,
            builder,
            watcher,
            head_timeout,
            remote,
        } = self;
        // Without TCP_NODELAY small SSE writes wait for delayed ACKs (tens of ms per event).
        let _ = tcp.set_nodelay(true);
        // Set once the connection's first request is parsed (see the first-request deadline).
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = started.clone();
        let local = tcp.local_addr().ok();
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let svc =
            hyper::service::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
                seen.store(true, std::sync::atomic::Ordering::Relaxed);
                let gateway = gateway.clone();
                let app = app.clone();
                // HTTP/1 serves one request at a time on the connection's own permit.
                let slot = (req.version() == axum::http::Version::HTTP_2)
                    .then(|| StreamSlot::take(&in_flight, streams.as_ref()));
                async move {
                    let slot = match slot {
                        None => None,
                        Some(None) => return Ok::<_, policy_hook::Closed>(over_stream_cap()),
                        Some(Some(slot)) => Some(slot),
                    };
                    let resp = Self::answer(gateway, app, req, remote, local).await?;
                    Ok(match slot {
                        None => resp,
                        Some(slot) => {
                            resp.map(|body| axum::body::Body::new(Held { body, _slot: slot }))
                        }
                    })
                }
            });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
            .into_owned();
        let conn = watcher.watch(conn);
        // hyper's header_read_timeout covers HTTP/1 heads that have begun; a client that sends
        // nothing, or half an HTTP/2 preface, would hold the connection forever: it must have
        // sent a whole first request head within the same time.
        let mut conn = std::pin::pin!(conn);
        let result = tokio::select! {
            r = &mut conn => r,
            _ = tokio::time::sleep(head_timeout) => {
                if !started.load(std::sync::atomic::Ordering::Relaxed) {
                    tracing::debug!(target: "aigw::conn", %remote, "closed: no request within {head_timeout:?}");
                    return;
                }
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(target: "aigw::conn", %remote, "connection ended: {e}");
        }
    }
}

/// Whether an address is on the loopback interface (no inbound token needed).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

impl Routing for crate::routing::engine::Engine {
    fn plan(&self, req: &Request, seed: u64) -> Arc<Plan> {
        // serve never prints the strategy trace: skip formatting it (explain still gets it all).
        let opts = crate::routing::plan::PlanOptions { seed };
        crate::routing::engine::Engine::plan_shared(self, req, opts)
    }

    fn gateway(&self) -> &AiGateway {
        crate::routing::engine::Engine::gateway(self)
    }

    fn key_value(&self, provider_id: &str, index: usize) -> Option<String> {
        crate::routing::engine::Engine::key_value(self, provider_id, index)
    }

    fn traffic(&self) -> Option<Arc<crate::traffic::Program>> {
        crate::routing::engine::Engine::traffic(self).cloned()
    }

    fn decorations(&self) -> &crate::traffic::decorate::Decorations {
        crate::routing::engine::Engine::decorations(self)
    }

    fn providers(&self) -> Vec<ProviderView> {
        let models = self.models();
        crate::routing::engine::Engine::providers(self)
            .iter()
            .map(|p| ProviderView {
                id: p.id.clone(),
                base_url: p.base_url.clone(),
                origin: p.origin.clone(),
                ollama: p.ollama,
                builtin: p.builtin,
                configured: p.configured,
                formats: p.formats.clone(),
                keys: p.keys.len(),
                models: models.iter().filter(|m| m.provider_id == p.id).count(),
            })
            .collect()
    }

    fn policy_models(&self) -> Vec<(String, String)> {
        crate::routing::engine::Engine::configured_models(self)
    }
}
/// Why accept failed, and for a lack of file descriptors which limit to raise.
fn accept_error(e: &std::io::Error) -> String {
    // EMFILE (24): this process's open-file limit; ENFILE (23): the whole system's.
    match e.raw_os_error() {
        Some(24) => format!(
            "{e}: the process is out of file descriptors; raise its open-file limit (`ulimit -n`, LimitNOFILE= in a systemd unit) or lower --max-connections"
        ),
        Some(23) => format!(
            "{e}: the system is out of file descriptors; raise fs.file-max (sysctl) or lower --max-connections"
        ),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_errors_name_the_limit_to_raise() {
        let emfile = std::io::Error::from_raw_os_error(24);
        assert!(super::accept_error(&emfile).contains("ulimit -n"));
        let enfile = std::io::Error::from_raw_os_error(23);
        assert!(super::accept_error(&enfile).contains("fs.file-max"));
        let other = std::io::Error::from_raw_os_error(104);
        assert!(!super::accept_error(&other).contains("limit"));
    }
}
