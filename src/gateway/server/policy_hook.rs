//! Applies the traffic policy's decisions around every request: the `on_http_request` rules
//! before routing (a reply, a closed connection, or header edits), the `on_http_response`
//! rules on the way back. The decisions come from the pure evaluator in [`crate::traffic`].
//!
//! Only policies with rules besides a bare `ai-gateway` reach this module: for the others the
//! engine has no program and serve skips it (no per-request cost).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use axum::response::Response;

use crate::gateway::{Gateway, names};
use crate::traffic::cel::Scope;
use crate::traffic::{HeaderEdit, Outcome, Ports, Program, Reply, RequestView, ResponseView, Stop};

/// Why a connection is closed without a response (`close-connection`).
#[derive(Debug, thiserror::Error)]
#[error("the traffic policy closed the connection (close-connection)")]
pub struct Closed;

/// Largest error body read back to fill `actions.ngrok.ai_gateway.error` (aigw's own errors
/// are a few hundred bytes).
const ERROR_BODY_MAX: usize = 64 * 1024;

tokio::task_local! {
    /// The request phase's scope (`vars`, `req`), for the `${…}` of the `ai-gateway` action
    /// that routes the same request: the route runs inside [`apply`]'s future.
    static SCOPE: Arc<Scope>;
}

/// The scope the traffic policy left for this request, when a policy ran.
pub fn request_scope() -> Option<Arc<Scope>> {
    SCOPE.try_with(Arc::clone).ok()
}

/// Runs `inner` (aigw's routing) under `program`.
pub async fn apply<B, F, Fut>(
    gw: Arc<Gateway>,
    program: Arc<Program>,
    mut req: Request<B>,
    client: SocketAddr,
    server: Option<SocketAddr>,
    inner: F,
) -> Result<Response, Closed>
where
    F: FnOnce(Request<B>) -> Fut,
    Fut: Future<Output = Response>,
{
    let view = Arc::new(view_of(&req, client, server));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let keys = super::jwks::Keys(gw.jwks.clone());
    let ports = Ports {
        rate: &*gw.rate_limits,
        keys: &keys,
        now,
    };
    // A shared rate-limit store answers over the network: such rules run on a blocking
    // thread, so the request threads never wait on Redis.
    let shared_rate = gw.rate_limits.blocks() && program.limits_rate();
    let out = if shared_rate {
        let (p, v, owned) = (program.clone(), view.clone(), OwnedPorts::of(&gw, now));
        blocking(move || p.on_request(&v, owned.ports())).await
    } else {
        program.on_request(&view, ports)
    };
    log(&out);
    let (response, scope) = match out.stop {
        Stop::Reply(reply) => (reply_response(reply)?, out.scope),
        Stop::End | Stop::AiGateway { .. } => {
            edit(req.headers_mut(), &out.edits);
            if let Some(uri) = out.rewrite.as_deref().and_then(|u| u.parse().ok()) {
                *req.uri_mut() = uri;
            }
            // The route reads the scope while the task-local holds it, then lets it go.
            let shared = Arc::new(out.scope);
            let response = SCOPE.scope(shared.clone(), inner(req)).await;
            let scope = Arc::try_unwrap(shared).unwrap_or_else(|s| (*s).clone());
            let failed = response.headers().get(names::NGROK_ERROR_CODE).cloned();
            match (&out.stop, failed) {
                (Stop::AiGateway { resume: Some(at) }, Some(code)) => {
                    let (parts, body) = response.into_parts();
                    let bytes = axum::body::to_bytes(body, ERROR_BODY_MAX)
                        .await
                        .unwrap_or_default();
                    let message = error_message(&bytes);
                    let code = code.to_str().unwrap_or_default();
                    let again = if shared_rate {
                        let (p, owned) = (program.clone(), OwnedPorts::of(&gw, now));
                        let (at, code) = (at.clone(), code.to_owned());
                        blocking(move || p.resume(&at, scope, owned.ports(), &code, &message)).await
                    } else {
                        program.resume(at, scope, ports, code, &message)
                    };
                    log(&again);
                    match again.stop {
                        Stop::Reply(reply) => (reply_response(reply)?, again.scope),
                        // Nothing answered in its place: the gateway's own error stands.
                        _ => (Response::from_parts(parts, Body::from(bytes)), again.scope),
                    }
                }
                _ => (response, scope),
            }
        }
    };
    if program.response.is_empty() {
        return Ok(response);
    }
    let res = ResponseView {
        status: response.status().as_u16(),
        headers: pairs(response.headers()),
    };
    let out = program.on_response(scope, &res, ports);
    log(&out);
    match out.stop {
        Stop::Reply(reply) => reply_response(reply),
        _ => {
            let mut response = response;
            edit(response.headers_mut(), &out.edits);
            Ok(response)
        }
    }
}

/// What an evaluation on another thread borrows its [`Ports`] from.
struct OwnedPorts {
    rate: Arc<dyn crate::traffic::RateState>,
    keys: super::jwks::Keys,
    now: Duration,
}

impl OwnedPorts {
    fn of(gw: &Gateway, now: Duration) -> OwnedPorts {
        OwnedPorts {
            rate: gw.rate_limits.clone(),
            keys: super::jwks::Keys(gw.jwks.clone()),
            now,
        }
    }

    fn ports(&self) -> Ports<'_> {
        Ports {
            rate: &*self.rate,
            keys: &self.keys,
            now: self.now,
        }
    }
}

/// Runs `f` on tokio's blocking pool; a panic in it is a panic here, as if run inline.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn view_of<B>(req: &Request<B>, client: SocketAddr, server: Option<SocketAddr>) -> RequestView {
    let id = super::pipeline::request_id(req.headers());
    let mut view = view_of_parts(req.method(), req.uri(), req.headers(), client, id);
    view.server = server;
    view.version = format!("{:?}", req.version());
    view
}

/// The request as the traffic policy sees it; `id` is the one its answer will carry.
pub fn view_of_parts(
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    client: SocketAddr,
    id: String,
) -> RequestView {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    RequestView {
        id,
        method: method.as_str().to_owned(),
        scheme: "http".to_owned(),
        host,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers: pairs(headers),
        client,
        server: None,
        version: "HTTP/1.1".to_owned(),
    }
}

fn pairs(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Header edits in order; a name or value HTTP cannot carry is skipped (and logged).
fn edit(h: &mut HeaderMap, edits: &[HeaderEdit]) {
    for e in edits {
        match e {
            HeaderEdit::Remove(name) => {
                h.remove(name.as_str());
            }
            HeaderEdit::Add(name, value) => {
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    (Ok(n), Ok(v)) => {
                        // ngrok appends, except `host`, which replaces.
                        if n == axum::http::header::HOST {
                            h.insert(n, v);
                        } else {
                            h.append(n, v);
                        }
                    }
                    _ => tracing::warn!(
                        target: "aigw::policy",
                        header = %name,
                        "add-headers: skipped a header HTTP cannot carry"
                    ),
                }
            }
        }
    }
}

fn reply_response(reply: Reply) -> Result<Response, Closed> {
    let Reply::Respond {
        status,
        headers,
        body,
    } = reply
    else {
        return Err(Closed);
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let edits: Vec<HeaderEdit> = headers
        .into_iter()
        .map(|(n, v)| HeaderEdit::Add(n, v))
        .collect();
    edit(response.headers_mut(), &edits);
    Ok(response)
}

/// The message of an aigw error body, in any of its dialects.
fn error_message(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::from_utf8_lossy(body).into_owned();
    };
    v.pointer("/error/message")
        .or_else(|| v.get("error"))
        .and_then(|m| m.as_str())
        .map_or_else(|| v.to_string(), str::to_owned)
}

/// `log` actions go to aigw's structured log; each rule's fate at debug level.
fn log(out: &Outcome) {
    for entry in &out.logs {
        tracing::info!(target: "aigw::policy", metadata = %entry, "traffic policy log");
    }
    if tracing::enabled!(target: "aigw::policy", tracing::Level::DEBUG) {
        for t in &out.trace {
            tracing::debug!(
                target: "aigw::policy",
                rule = t.index,
                name = t.name.as_deref().unwrap_or(""),
                matched = t.matched,
                actions = ?t.actions.iter().map(|a| format!("{}: {}", a.kind, a.outcome)).collect::<Vec<_>>(),
                "rule"
            );
        }
    }
}
