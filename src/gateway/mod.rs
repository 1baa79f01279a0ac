//! `aigw serve`: a local OpenAI-compatible (and Ollama- and Anthropic-compatible) gateway that
//! executes the engine's [`Plan`](crate::routing::plan::Plan) with failover.
//!
//! - [`routes`]: the axum router, inbound auth, request parsing, `/v1/models`, `/healthz`, `/metrics`.
//! - [`forward`]: the failover executor (request rewriting, keys, timeouts, error mapping).
//! - [`stream`]: chunk-by-chunk relaying of SSE / NDJSON with idle timeouts, cancellation and a
//!   final error event when an upstream dies mid-stream.
//! - [`ollama_api`]: the Ollama native API (`/api/*`), served by Ollama providers' native API.
//! - [`reload`]: polling the policy file and swapping in a new engine atomically.
//! - [`errors`], [`metrics`], [`template`]: error shapes, Prometheus text, `${…}` per request.
//!
//! The gateway sees the engine through the small [`Routing`] trait, so it can be tested with a
//! fixed plan and swapped on reload.

pub mod errors;
pub mod forward;
pub mod metrics;
pub mod ollama_api;
pub mod reload;
pub mod routes;
pub mod stream;
pub mod template;
pub mod traffic;

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
    /// Plans one request; `seed` feeds `random()` / `randomize()`.
    fn plan(&self, req: &Request, seed: u64) -> Plan;
    /// The typed `ai-gateway` config (timeouts, headers, query_params, body, token limits).
    fn gateway(&self) -> &AiGateway;
    /// The configured API key `index` of a provider, secrets substituted.
    fn key_value(&self, provider_id: &str, index: usize) -> Option<String>;
    /// The effective providers (after `--base-url` and `.internal` mapping).
    fn providers(&self) -> Vec<ProviderView>;
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
    /// Extra limit on each attempt's time to first byte, on top of `per_request_timeout`.
    pub first_byte_timeout: Option<Duration>,
    /// A stream that sends nothing for this long ends with an error event.
    pub stream_idle_timeout: Duration,
    pub max_body_bytes: usize,
    pub connect_timeout: Duration,
    /// How long shutdown waits for in-flight requests after cancelling streams.
    pub shutdown_grace: Duration,
    /// Refuse upstreams outside 127.0.0.0/8 and `localhost` (tests use it as a safety net).
    pub upstream_loopback_only: bool,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            auth_token: None,
            max_attempts: 10,
            first_byte_timeout: None,
            stream_idle_timeout: Duration::from_secs(60),
            max_body_bytes: 32 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            upstream_loopback_only: false,
        }
    }
}

/// The running gateway's shared state.
pub struct Gateway {
    routing: RwLock<Arc<dyn Routing>>,
    pub client: reqwest::Client,
    pub secrets: SecretStore,
    pub opts: GatewayOptions,
    pub metrics: Arc<metrics::Metrics>,
    /// Per-model figures of recent attempts, for `m.metrics.*`.
    pub traffic: Arc<traffic::Traffic>,
    /// Cancelled on shutdown: open streams end with an error event.
    pub shutdown: CancellationToken,
}

impl Gateway {
    pub fn new(
        routing: Arc<dyn Routing>,
        secrets: SecretStore,
        opts: GatewayOptions,
    ) -> Arc<Gateway> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(opts.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .expect("a reqwest client with no custom TLS always builds");
        Arc::new(Gateway {
            routing: RwLock::new(routing),
            client,
            secrets,
            opts,
            metrics: Arc::default(),
            traffic: Arc::default(),
            shutdown: CancellationToken::new(),
        })
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
}

/// Serves `gateway` on `listener` until `signal` resolves; then cancels open streams and waits at
/// most `shutdown_grace` for in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let app = routes::router(gateway.clone());
    // Without TCP_NODELAY small SSE writes wait for delayed ACKs (tens of ms per event).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let token = gateway.shutdown.clone();
    let trigger = token.clone();
    tokio::spawn(async move {
        signal.await;
        trigger.cancel();
    });
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(token.clone().cancelled_owned());
    let grace = gateway.opts.shutdown_grace;
    tokio::select! {
        r = server => r,
        _ = async { token.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("shutdown: in-flight requests did not finish within {grace:?}; closing");
            Ok(())
        }
    }
}

/// Whether an address is on the loopback interface (no inbound token needed).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

impl Routing for crate::routing::engine::Engine {
    fn plan(&self, req: &Request, seed: u64) -> Plan {
        // serve never prints the strategy trace: skip formatting it (explain still gets it all).
        let opts = crate::routing::plan::PlanOptions { seed };
        crate::routing::engine::Engine::plan_untraced(self, req, opts)
    }

    fn gateway(&self) -> &AiGateway {
        crate::routing::engine::Engine::gateway(self)
    }

    fn key_value(&self, provider_id: &str, index: usize) -> Option<String> {
        crate::routing::engine::Engine::key_value(self, provider_id, index)
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
}
