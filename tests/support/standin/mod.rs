//! Stand-in upstream providers: in-process fakes of Ollama, OpenAI and Anthropic that speak
//! their real wire formats, record every request and misbehave on demand.
//!
//! # Including it
//! From an integration test (`tests/foo.rs`):
//! ```ignore
//! #[path = "support/standin/mod.rs"]
//! mod standin;
//! use standin::{Fault, Kind, StandIn};
//! ```
//! (If a shared `tests/support/mod.rs` exists, `pub mod standin;` in it works as well.)
//! From an example or bench: `#[path = "../tests/support/standin/mod.rs"] mod standin;`.
//!
//! # Using it
//! ```ignore
//! let up = StandIn::start(Kind::OpenAi).await.with_label("openai-a").with_models(&["gpt-4o-mini"]);
//! up.push_fault(Fault::status(503));          // the next request gets a 503 in OpenAI's error shape
//! // ... point the gateway at up.url() and send a request ...
//! assert_eq!(up.hits("/v1/chat/completions"), 2); // every attempt is recorded, faulted or not
//! ```
//!
//! # Behaviour
//! * Binds `127.0.0.1:0` (or the given address), sets `TCP_NODELAY`, serves HTTP/1.1 and h2c.
//! * Replies are deterministic: the assistant text is `"[LABEL] you said: LAST_USER_TEXT"`,
//!   split into one streamed chunk per word; token counts are word counts; timestamps are fixed
//!   (`created` = 1700000000, Ollama `created_at` = `2025-01-01T00:00:00Z`); ids number requests.
//! * Every response carries `x-standin-label: LABEL`, so tests can tell which upstream answered.
//! * Assistant prefill (chat: OpenAI, Ollama `/api/chat` and `/v1`, Anthropic): when the last
//!   message is the assistant's with text P, the reply is only what follows P in the stand-in's
//!   own answer (compared without the `[LABEL]`, so another stand-in's partial answer is
//!   continued too), else ` (continued by [LABEL])`; usage counts that part. A stand-in built
//!   [`StandIn::without_prefill`] ignores the assistant message and answers anew, as
//!   api.openai.com does.
//! * Faults: [`StandIn::push_fault`] queues one-shot faults (first in, first out; optionally only
//!   for one path with [`StandIn::push_fault_on`]); [`StandIn::set_fault`] sets a persistent fault
//!   used when the queue has none for the request. A request is recorded before its fault applies.
//! * Streams are sent one chunk per write through `Body::from_stream`, with an optional
//!   inter-chunk delay ([`StandIn::with_chunk_delay`]). A "chunk" is one NDJSON line (Ollama
//!   native) or one SSE event (`data: ...\n\n`, or `event: ...\ndata: ...\n\n`). The stream's
//!   terminator (OpenAI `data: [DONE]`, Ollama's `done:true` line, Anthropic `message_stop`,
//!   Responses `response.completed`) counts as the last chunk(s). A non-streaming body is one chunk.
//!   Chunk order: OpenAI chat: role chunk, one per word, finish chunk, usage chunk (with
//!   `include_usage`), `[DONE]`. Anthropic: message_start, content_block_start, ping, one
//!   content_block_delta per word, content_block_stop, message_delta, message_stop. Ollama
//!   native: one line per word, then the `done:true` line. Load/unload replies are one object.
//! * Ollama words "not found" per endpoint as the real server does: generate/chat/show
//!   `model 'x' not found`, embed `model "x" not found, try pulling it first`; `/v1/*` uses
//!   Ollama's OpenAI error shape (`not_found_error`, `param`/`code` null).
//! * [`StandIn::stop`] (or dropping the `StandIn`) releases hung requests and stalled streams by
//!   aborting their connections, then shuts the server down.
#![allow(dead_code)]

mod anthropic;
mod fault;
mod ollama;
mod openai;
mod text;

pub use fault::Fault;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Which provider a stand-in imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Ollama: native `/api/*` (NDJSON) plus its OpenAI-compatible `/v1/*`.
    Ollama,
    /// OpenAI: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`, `/v1/models`.
    OpenAi,
    /// Anthropic: `/v1/messages` (JSON and SSE) and `/v1/models`.
    Anthropic,
}

impl Kind {
    /// Parses `ollama`, `openai` or `anthropic` (case-insensitive).
    pub fn parse(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "ollama" => Some(Kind::Ollama),
            "openai" | "open-ai" => Some(Kind::OpenAi),
            "anthropic" => Some(Kind::Anthropic),
            _ => None,
        }
    }

    /// The default label, also used in reply texts: `ollama`, `openai` or `anthropic`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ollama => "ollama",
            Kind::OpenAi => "openai",
            Kind::Anthropic => "anthropic",
        }
    }

    /// Models a fresh stand-in knows (replace them with [`StandIn::with_models`]).
    pub fn default_models(self) -> &'static [&'static str] {
        match self {
            Kind::Ollama => &["llama3.2:latest", "nomic-embed-text:latest"],
            Kind::OpenAi => &["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"],
            Kind::Anthropic => &["claude-sonnet-4-5", "claude-haiku-4-5"],
        }
    }
}

/// One request as the stand-in received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// 0-based arrival number on this stand-in (also used in response ids).
    pub seq: usize,
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
    /// The fault applied to this request, if any.
    pub fault: Option<Fault>,
    /// When the request arrived (its body read).
    pub at: std::time::Instant,
}

impl Recorded {
    /// A header's value as text (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `model` field of the JSON body.
    pub fn model(&self) -> Option<&str> {
        self.json.as_ref()?.get("model")?.as_str()
    }
}

/// A running stand-in provider. Stops when dropped.
pub struct StandIn {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl StandIn {
    /// Starts a stand-in on `127.0.0.1` with an ephemeral port.
    pub async fn start(kind: Kind) -> StandIn {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        StandIn::start_on(kind, addr)
            .await
            .expect("stand-in: bind 127.0.0.1:0")
    }

    /// Starts a stand-in on a given address (for the `standin` example and benchmarks).
    pub async fn start_on(kind: Kind, addr: SocketAddr) -> io::Result<StandIn> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            kind,
            cancel: CancellationToken::new(),
            concurrency: Mutex::default(),
            inner: Mutex::new(Inner {
                label: kind.name().to_string(),
                models: kind
                    .default_models()
                    .iter()
                    .map(|m| text::model_display(kind, m))
                    .collect(),
                key: None,
                revoked: Vec::new(),
                any_model: false,
                chunk_delay: Duration::ZERO,
                prefill: true,
                queue: VecDeque::new(),
                persistent: None,
                requests: Vec::new(),
                next_seq: 0,
                loaded: Vec::new(),
            }),
        });
        let app = Router::new()
            .fallback(dispatch)
            .with_state(shared.clone())
            .into_make_service_with_connect_info::<ConnHandle>();
        let stop = shared.cancel.clone();
        let task = tokio::spawn(async move {
            let server = axum::serve(StandInListener(listener), app)
                .with_graceful_shutdown(stop.cancelled_owned());
            let _ = server.await;
        });
        Ok(StandIn {
            addr,
            shared,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kind(&self) -> Kind {
        self.shared.kind
    }

    /// Replaces the known models (Ollama names are normalised: `llama3.2` → `llama3.2:latest`).
    /// Requests for other models get the provider's 404.
    pub fn with_models(self, ids: &[&str]) -> Self {
        let kind = self.shared.kind;
        self.shared.lock().models = ids.iter().map(|m| text::model_display(kind, m)).collect();
        self
    }

    /// Answers every model name as if it knew it (like an OpenAI-compatible server that does
    /// not check), for tests whose plans name arbitrary models.
    pub fn with_any_model(self) -> Self {
        self.shared.lock().any_model = true;
        self
    }

    /// Sets the label used in reply texts (`"[LABEL] you said: ..."`) and `x-standin-label`.
    pub fn with_label(self, label: &str) -> Self {
        self.shared.lock().label = label.to_string();
        self
    }

    /// Sleeps this long between streamed chunks (default: no delay).
    pub fn with_chunk_delay(self, delay: Duration) -> Self {
        self.shared.lock().chunk_delay = delay;
        self
    }

    /// Ignores an assistant prefill (a last assistant message) and answers anew, as
    /// api.openai.com does; by default a stand-in continues one.
    pub fn without_prefill(self) -> Self {
        self.shared.lock().prefill = false;
        self
    }

    /// Builder form of [`StandIn::require_key`].
    pub fn with_key(self, key: &str) -> Self {
        self.require_key(key);
        self
    }

    /// From now on, require `Authorization: Bearer KEY` (Ollama, OpenAI) or `x-api-key: KEY`
    /// (Anthropic, which also takes the bearer form as its 2.x Python SDK sends) on every
    /// request; others get a 401 in the provider's error shape.
    pub fn require_key(&self, key: &str) {
        self.shared.lock().key = Some(key.to_string());
    }

    /// From now on, answer requests bearing one of these keys (`Authorization: Bearer KEY`,
    /// or Anthropic's `x-api-key`) with the provider's 401, as for revoked keys; other keys
    /// pass. Replaces the previous list (`&[]` revokes none).
    pub fn set_revoked_keys(&self, keys: &[&str]) {
        self.shared.lock().revoked = keys.iter().map(|k| k.to_string()).collect();
    }

    /// Queues a one-shot fault for the next request (any path).
    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().queue.push_back((None, fault));
    }

    /// Queues a one-shot fault for the next request to exactly this path (e.g. `/api/chat`),
    /// so that health probes on other paths don't consume it.
    pub fn push_fault_on(&self, path: &str, fault: Fault) {
        self.shared
            .lock()
            .queue
            .push_back((Some(path.to_string()), fault));
    }

    /// Drops every queued one-shot fault (those a request did not consume).
    pub fn clear_faults(&self) {
        self.shared.lock().queue.clear();
    }

    /// Sets (or clears with `None`) a fault applied to every request the queue has nothing for.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.shared.lock().persistent = fault;
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// How many requests arrived for this path (any method).
    pub fn hits(&self, path: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// The most requests to `path` this stand-in handled at once (until their response head
    /// was sent).
    pub fn max_concurrent(&self, path: &str) -> usize {
        self.shared
            .concurrency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .map_or(0, |e| e.1)
    }

    /// Forgets the recorded requests (ids keep counting).
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Gracefully stops: aborts hung and stalled requests, closes connections, frees the port.
    pub async fn stop(mut self) {
        self.shared.cancel.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        // The server task finishes on its own once cancelled (hung requests are released too).
        self.shared.cancel.cancel();
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state

struct Shared {
    kind: Kind,
    cancel: CancellationToken,
    inner: Mutex<Inner>,
    /// Requests being handled now, by path, and the most ever at once.
    concurrency: Mutex<std::collections::HashMap<String, (usize, usize)>>,
}

/// Counts a request as in flight on its path until dropped.
struct InFlight(Arc<Shared>, String);

impl InFlight {
    fn new(shared: &Arc<Shared>, path: &str) -> InFlight {
        let mut c = shared.concurrency.lock().unwrap_or_else(|e| e.into_inner());
        let e = c.entry(path.to_string()).or_default();
        e.0 += 1;
        e.1 = e.1.max(e.0);
        InFlight(shared.clone(), path.to_string())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut c = self.0.concurrency.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = c.get_mut(&self.1) {
            e.0 -= 1;
        }
    }
}

struct Inner {
    label: String,
    models: Vec<String>,
    key: Option<String>,
    /// Keys answered with a 401 ([`StandIn::set_revoked_keys`]).
    revoked: Vec<String>,
    any_model: bool,
    chunk_delay: Duration,
    /// Continues an assistant prefill (see the module docs).
    prefill: bool,
    queue: VecDeque<(Option<String>, Fault)>,
    persistent: Option<Fault>,
    requests: Vec<Recorded>,
    next_seq: usize,
    /// Ollama: models "in memory" (display names, most recently used first).
    loaded: Vec<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which wire dialect a request is answered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Surface {
    /// Ollama `/api/*` and everything outside `/v1` on an Ollama stand-in.
    Ollama,
    /// Ollama's OpenAI-compatible `/v1/*`.
    OllamaV1,
    OpenAi,
    Anthropic,
}

impl Surface {
    fn of(kind: Kind, path: &str) -> Surface {
        match kind {
            Kind::Ollama if path.starts_with("/v1/") => Surface::OllamaV1,
            Kind::Ollama => Surface::Ollama,
            Kind::OpenAi => Surface::OpenAi,
            Kind::Anthropic => Surface::Anthropic,
        }
    }

    fn json_content_type(self) -> &'static str {
        match self {
            Surface::Ollama | Surface::OllamaV1 => "application/json; charset=utf-8",
            Surface::OpenAi | Surface::Anthropic => "application/json",
        }
    }

    fn stream_content_type(self) -> &'static str {
        match self {
            Surface::Ollama => "application/x-ndjson",
            Surface::OllamaV1 => "text/event-stream",
            Surface::OpenAi | Surface::Anthropic => "text/event-stream; charset=utf-8",
        }
    }

    fn is_sse(self) -> bool {
        self != Surface::Ollama
    }
}

/// What a route handler sees.
struct Ctx {
    kind: Kind,
    surface: Surface,
    seq: usize,
    label: String,
    models: Vec<String>,
    any_model: bool,
    /// Continues an assistant prefill.
    prefill: bool,
    shared: Arc<Shared>,
    method: Method,
    path: String,
    body: Bytes,
    json: Option<Value>,
}

impl Ctx {
    /// The known model matching `requested` (Ollama: normalised, case-insensitive).
    fn find_model(&self, requested: &str) -> Option<String> {
        if self.any_model {
            return Some(text::model_display(self.kind, requested));
        }
        let want = text::model_key(self.kind, requested);
        self.models
            .iter()
            .find(|m| text::model_key(self.kind, m) == want)
            .cloned()
    }

    /// Ollama: mark a model as loaded (most recent first).
    fn load(&self, display: &str) {
        let mut inner = self.shared.lock();
        inner.loaded.retain(|m| m != display);
        inner.loaded.insert(0, display.to_string());
    }

    fn unload(&self, display: &str) {
        self.shared.lock().loaded.retain(|m| m != display);
    }

    fn loaded(&self) -> Vec<String> {
        self.shared.lock().loaded.clone()
    }

    fn field(&self, key: &str) -> Option<&Value> {
        self.json.as_ref()?.get(key)
    }

    fn str_field(&self, key: &str) -> Option<&str> {
        self.field(key)?.as_str()
    }

    /// The reply to a chat `messages` list, continuing an assistant prefill if it ends with one.
    fn chat_answer(&self, messages: Option<&Value>, max_tokens: Option<u64>) -> text::Answer {
        text::Answer::after(
            &self.label,
            &text::last_user_text(messages),
            max_tokens,
            text::prefill(messages).as_deref(),
            self.prefill,
        )
    }
}

/// A route's answer, before faults and framing delays are applied.
enum Reply {
    Json(StatusCode, Value),
    Text(StatusCode, String),
    Empty(StatusCode),
    /// `chunks` then `end` (the terminator chunks, left out by [`Fault::NoDoneMarker`]).
    Stream {
        chunks: Vec<Bytes>,
        end: Vec<Bytes>,
    },
    /// Preformatted body (e.g. a `Fault::Status` body given by a test).
    Raw(StatusCode, &'static str, Bytes),
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply::Json(StatusCode::OK, body)
    }
}

// ---------------------------------------------------------------------------------------------
// Request handling

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let json = serde_json::from_slice::<Value>(&body).ok();
    let path = parts.uri.path().to_string();
    let _in_flight = InFlight::new(&shared, &path);
    let kind = shared.kind;
    let surface = Surface::of(kind, &path);

    // Record first, then take the fault, so that tests can count every attempt.
    let (ctx, fault, auth, chunk_delay) = {
        let mut inner = shared.lock();
        let fault = match inner
            .queue
            .iter()
            .position(|(p, _)| p.as_deref().is_none_or(|p| p == path))
        {
            Some(i) => inner.queue.remove(i).map(|(_, f)| f),
            None => inner.persistent.clone(),
        };
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.requests.push(Recorded {
            seq,
            method: parts.method.clone(),
            path: path.clone(),
            query: parts.uri.query().map(str::to_string),
            headers: parts.headers.clone(),
            body: body.clone(),
            json: json.clone(),
            fault: fault.clone(),
            at: std::time::Instant::now(),
        });
        let ctx = Ctx {
            kind,
            surface,
            seq,
            label: inner.label.clone(),
            models: inner.models.clone(),
            any_model: inner.any_model,
            prefill: inner.prefill,
            shared: shared.clone(),
            method: parts.method.clone(),
            path,
            body,
            json,
        };
        let auth = Auth {
            key: inner.key.clone(),
            revoked: inner.revoked.clone(),
        };
        (ctx, fault, auth, inner.chunk_delay)
    };

    // Faults that act before any response header.
    match &fault {
        Some(Fault::ResetBeforeHeaders) => {
            conn.kill();
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Some(Fault::Hang) => {
            shared.cancel.cancelled().await;
            conn.kill();
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Some(Fault::DelayHeaders(d)) => {
            tokio::select! {
                _ = tokio::time::sleep(*d) => {}
                _ = shared.cancel.cancelled() => {
                    conn.kill();
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
            }
        }
        _ => {}
    }
    let reply = match fault.as_ref().and_then(|f| fault::error_reply(&ctx, f)) {
        Some(reply) => reply,
        None => match auth_failure(&ctx, &parts.headers, &auth) {
            Some(reply) => reply,
            None => match kind {
                Kind::Ollama => ollama::route(&ctx),
                Kind::OpenAi => openai::route(&ctx),
                Kind::Anthropic => anthropic::route(&ctx),
            },
        },
    };
    let mut resp = fault::render(reply, &ctx, fault.as_ref(), chunk_delay);
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&ctx.label) {
        h.insert("x-standin-label", v);
    }
    let request_id = HeaderValue::from_str(&format!("req_standin_{}", ctx.seq)).ok();
    match (surface, request_id) {
        (Surface::OpenAi, Some(id)) => {
            h.insert("x-request-id", id);
        }
        (Surface::Anthropic, Some(id)) => {
            h.insert("request-id", id);
        }
        _ => {}
    }
    if let Some(Fault::Status {
        retry_after: Some(secs),
        ..
    }) = &fault
    {
        h.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
    }
    resp
}

/// The keys a stand-in checks: the one it requires, and those it rejects.
struct Auth {
    key: Option<String>,
    revoked: Vec<String>,
}

fn auth_failure(ctx: &Ctx, headers: &HeaderMap, auth: &Auth) -> Option<Reply> {
    if auth.key.is_none() && auth.revoked.is_empty() {
        return None;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = match ctx.surface {
        // The API takes `x-api-key`; the anthropic Python SDK (2.x) sends the key as a bearer
        // token, so both are accepted.
        Surface::Anthropic => headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .or(bearer),
        _ => bearer,
    };
    if let Some(k) = given.filter(|k| auth.revoked.iter().any(|r| r == k)) {
        return Some(fault::auth_error(ctx, Some(k)));
    }
    let key = auth.key.as_deref()?;
    match given {
        Some(k) if k == key => None,
        Some(k) => Some(fault::auth_error(ctx, Some(k))),
        None => Some(fault::auth_error(ctx, None)),
    }
}

// ---------------------------------------------------------------------------------------------
// Listener whose connections can be aborted from a handler (for `ResetBeforeHeaders`).

struct StandInListener(TcpListener);

impl Listener for StandInListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = KillableStream {
                        stream,
                        killed: Arc::new(AtomicBool::new(false)),
                    };
                    return (conn, addr);
                }
                // e.g. EMFILE: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A TCP stream that fails every read and write once killed; hyper then drops it, and the
/// zero linger turns the close into a TCP reset.
struct KillableStream {
    stream: TcpStream,
    killed: Arc<AtomicBool>,
}

impl KillableStream {
    fn check(&self) -> io::Result<()> {
        if self.killed.load(Ordering::Acquire) {
            let _ = self.stream.set_zero_linger();
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "stand-in: connection killed",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Per-connection handle given to handlers through `ConnectInfo`.
#[derive(Clone)]
struct ConnHandle(Arc<AtomicBool>);

impl ConnHandle {
    fn kill(&self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Connected<IncomingStream<'_, StandInListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, StandInListener>) -> Self {
        ConnHandle(stream.io().killed.clone())
    }
}
