//! The router: OpenAI, Anthropic and Ollama routes, inbound auth, `/healthz`, `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::body::{BodyError, JsonBody};
use super::errors::{
    BODY_TOO_LARGE, Dialect, GatewayError, METHOD_NOT_ALLOWED, NOT_FOUND, UNAUTHORIZED, codes,
};
use super::forward::{self, Inbound, Report};
use super::{Gateway, names, ollama_api};

pub fn router(gw: Arc<Gateway>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(openai))
        .route("/v1/completions", post(openai))
        .route("/v1/embeddings", post(openai))
        .route("/v1/responses", post(openai))
        .route("/v1/messages", post(openai))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/api/chat", post(ollama_api::inference))
        .route("/api/generate", post(ollama_api::inference))
        .route("/api/embed", post(ollama_api::inference))
        .route("/api/embeddings", post(ollama_api::inference))
        .route("/api/show", post(ollama_api::inference))
        .route("/api/tags", get(ollama_api::tags))
        .route("/api/ps", get(ollama_api::ps))
        .route("/api/version", get(ollama_api::version))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(gw.clone(), auth))
        // Before auth: a request looping back through aigw carries no inbound token.
        .layer(middleware::from_fn_with_state(gw.clone(), loop_guard));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(|| async { "aigw is running" }))
        .merge(api)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(gw.opts.max_body_bytes))
        .with_state(gw)
}

pub fn dialect_of(path: &str) -> Dialect {
    if path.starts_with("/api/") {
        Dialect::Ollama
    } else if path == "/v1/messages" {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}

/// Constant-time comparison of the inbound token with the configured one.
///
/// `subtle`'s `ConstantTimeEq` (a well-reviewed crate, RustCrypto's dependency) rather than a
/// hand-written fold: it guards the comparison with optimisation barriers so the compiler cannot
/// turn it back into an early-exit loop. Only the length is revealed by timing (it returns at
/// once on a length mismatch), which tells an attacker nothing useful about a random token.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

/// Refuses requests that already went through this aigw (508 Loop Detected, see [`super::hops`]).
async fn loop_guard(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    match looped(&gw, req.headers(), req.uri().path()) {
        Some(refused) => refused,
        None => next.run(req).await,
    }
}

/// The 508 for a request that already went through this aigw, if it did.
fn looped(gw: &Gateway, headers: &HeaderMap, path: &str) -> Option<Response> {
    let e = super::hops::check(headers, &gw.instance_id)?;
    gw.metrics.request(path, e.status);
    tracing::warn!(target: "aigw::request", path, "{}", e.message);
    Some(e.response(dialect_of(path)))
}

/// 413, naming the limit and the flag that raises it.
fn too_large(max_body_bytes: usize) -> GatewayError {
    GatewayError::new(
        BODY_TOO_LARGE,
        format!(
            "Request body too large: aigw accepts at most {max_body_bytes} bytes; send a smaller body or \
             restart the gateway with a higher `aigw serve --max-body-bytes`"
        ),
    )
}

/// The error for a body extractor's rejection: 413 names the limit and the flag that raises it.
pub fn body_error(e: &BytesRejection, max_body_bytes: usize) -> GatewayError {
    let status = e.status().as_u16();
    if status == 413 {
        return too_large(max_body_bytes);
    }
    GatewayError::new(
        (codes::INVALID_BODY.0, status),
        format!("Invalid request body: {}", e.body_text()),
    )
}

/// With `--auth-token`, every route but `/healthz` needs the token as `Authorization: Bearer`,
/// `x-api-key` (Anthropic SDKs) or `x-aigw-token` (which leaves `Authorization` free for a
/// passthrough provider key). The token is never forwarded upstream.
async fn auth(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    match unauthorized(&gw, req.headers(), req.uri().path()) {
        Some(refused) => refused,
        None => next.run(req).await,
    }
}

/// The 401 for a request without the gateway's token, when it has one.
fn unauthorized(gw: &Gateway, h: &HeaderMap, path: &str) -> Option<Response> {
    let token = gw.opts.auth_token.as_deref()?;
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let others =
        [names::X_API_KEY, names::X_AIGW_TOKEN].map(|n| h.get(n).and_then(|v| v.to_str().ok()));
    let ok = bearer
        .into_iter()
        .chain(others.into_iter().flatten())
        .any(|v| ct_eq(v.trim().as_bytes(), token.as_bytes()));
    if ok {
        return None;
    }
    gw.metrics.request(path, 401);
    let e = GatewayError::new(
        UNAUTHORIZED,
        "missing or wrong gateway token: send `Authorization: Bearer <token>` (the serve --auth-token)",
    );
    Some(e.response(dialect_of(path)))
}

/// Whether a request goes to [`fast_path`]: a POST to an OpenAI or Anthropic inference route,
/// exactly as the router would route it.
pub fn is_fast_path(method: &Method, path: &str) -> bool {
    method == Method::POST
        && matches!(
            path,
            "/v1/chat/completions"
                | "/v1/completions"
                | "/v1/embeddings"
                | "/v1/responses"
                | "/v1/messages"
        )
}

/// What the router does for those routes (loop guard, then token, then the body within
/// `--max-body-bytes`, then [`handle`]) without its per-request layers: boxed middleware
/// futures, extractors and extensions were a tenth of serve's CPU per proxied request.
/// Everything else still goes through [`router`].
pub async fn fast_path(
    gw: Arc<Gateway>,
    req: axum::http::Request<hyper::body::Incoming>,
    client: SocketAddr,
) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    if let Some(refused) = looped(&gw, &parts.headers, path) {
        return refused;
    }
    if let Some(refused) = unauthorized(&gw, &parts.headers, path) {
        return refused;
    }
    let max = gw.opts.max_body_bytes;
    let body = match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, max)).await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(max)),
        Err(e) => Err(GatewayError::new(
            (codes::INVALID_BODY.0, 400),
            format!("Invalid request body: Failed to read the request body: {e}"),
        )),
    };
    let path = path.to_string();
    let dialect = dialect_of(&path);
    handle(
        gw,
        dialect,
        path,
        None,
        parts.method,
        parts.uri,
        parts.headers,
        client,
        body,
    )
    .await
}

pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(names::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(String::from)
        .unwrap_or_else(|| new_request_id(rand::random()))
}

/// `req_` and 16 hex digits (written by hand: `format!` was a visible share of a request).
fn new_request_id(n: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(20);
    id.push_str("req_");
    for shift in (0..16).rev() {
        id.push(HEX[((n >> (shift * 4)) & 0xf) as usize] as char);
    }
    id
}

/// Parses a JSON object body (ERR_NGROK_3801 otherwise).
pub fn json_body(body: &[u8]) -> Result<JsonBody, GatewayError> {
    JsonBody::parse(body).map_err(|e| match e {
        BodyError::Empty => GatewayError::new(
            codes::INVALID_BODY,
            "Invalid request body: the body is empty; send a JSON object such as {\"model\": \"…\", \"messages\": […]}",
        ),
        BodyError::NotAnObject => GatewayError::new(
            codes::INVALID_BODY,
            "Invalid request body: expected a JSON object such as {\"model\": \"…\", \"messages\": […]}",
        ),
        BodyError::Invalid(e) => GatewayError::new(
            codes::INVALID_BODY,
            format!("Invalid request body: {e}; the body must be one JSON object"),
        ),
    })
}

/// Runs one proxied request and writes its log line and metrics.
#[allow(clippy::too_many_arguments)]
pub async fn handle(
    gw: Arc<Gateway>,
    dialect: Dialect,
    plan_path: String,
    native_path: Option<&'static str>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    client: SocketAddr,
    body: Result<Bytes, GatewayError>,
) -> Response {
    let started = Instant::now();
    let id = request_id(&headers);
    let path = uri.path().to_string();
    let parsed = body.and_then(|b| json_body(&b));
    let (mut resp, report) = match parsed {
        Ok(body) => {
            let inb = Inbound {
                dialect,
                plan_path,
                native_path,
                method: method.clone(),
                path: path.clone(),
                query: uri.query().unwrap_or("").to_string(),
                headers,
                body,
                client,
                request_id: id.clone(),
                started,
            };
            forward::execute(&gw, inb).await
        }
        Err(e) => {
            let report = Report {
                status: e.status,
                error_code: Some(e.code),
                ..Report::default()
            };
            (e.response(dialect), report)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(names::X_REQUEST_ID, v);
    }
    log_request(&gw, &method, &path, &id, &report, started);
    resp
}

pub fn log_request(
    gw: &Gateway,
    method: &Method,
    path: &str,
    id: &str,
    report: &Report,
    started: Instant,
) {
    gw.metrics.request(path, report.status);
    if !tracing::enabled!(target: "aigw::request", tracing::Level::INFO) {
        return;
    }
    let total = ms(started.elapsed());
    let upstream = ms(report.upstream);
    let model = report.model.as_deref().unwrap_or("-");
    let chosen = report.chosen.as_deref().unwrap_or("-");
    let status = report.status;
    let attempts = report.attempts;
    let error = report.error_code.unwrap_or("-");
    match &gw.opts.access_log {
        Some(log) => log.write(&super::access_log::Line {
            method: method.as_str(),
            path,
            model,
            chosen,
            status,
            attempts,
            streaming: report.streaming,
            upstream_ms: upstream,
            total_ms: total,
            error,
            request_id: id,
        }),
        None => tracing::info!(
            target: "aigw::request",
            request_id = id,
            method = method.as_str(),
            path,
            model,
            chosen,
            attempts,
            status,
            error,
            stream = report.streaming,
            upstream_ms = upstream,
            total_ms = total,
            "{method} {path} {model} → {chosen} {status}",
        ),
    }
}

/// Milliseconds with one decimal.
fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

async fn openai(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let path = uri.path().to_string();
    let body = body.map_err(|e| body_error(&e, gw.opts.max_body_bytes));
    handle(
        gw,
        dialect_of(&path),
        path,
        None,
        method,
        uri,
        headers,
        client,
        body,
    )
    .await
}

/// `GET /v1/models`: the policy's candidates for a chat request with no model, as
/// `provider:model`, in OpenAI's list shape.
/// The models `/v1/models` lists: the candidates of a chat request with no model.
fn model_list(gw: &Gateway) -> Vec<Value> {
    let routing = gw.current();
    let plan = routing.plan(
        &crate::routing::plan::Request {
            path: "/v1/chat/completions".into(),
            model: None,
            models: Vec::new(),
        },
        0,
    );
    let mut seen = std::collections::HashSet::new();
    plan.attempts
        .iter()
        .filter(|a| seen.insert(format!("{}:{}", a.provider, a.model)))
        .map(|a| json!({"id": format!("{}:{}", a.provider, a.model), "object": "model", "created": 0, "owned_by": a.provider}))
        .collect()
}

/// `GET /v1/models`: the policy's candidates for a chat request with no model, as
/// `provider:model`, in OpenAI's list shape.
async fn models(State(gw): State<Arc<Gateway>>) -> Response {
    let data = model_list(&gw);
    gw.metrics.request("/v1/models", 200);
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}` (the SDKs' `models.retrieve`); ids may hold `/` and `:`.
async fn model(
    State(gw): State<Arc<Gateway>>,
    id: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let id = match id {
        Ok(axum::extract::Path(id)) => id,
        Err(e) => {
            gw.metrics.request("/v1/models/{id}", 400);
            return GatewayError::new(
                (codes::INVALID_BODY.0, 400),
                format!("Invalid model id in the path: {}", e.body_text()),
            )
            .response(Dialect::OpenAi);
        }
    };
    let found = model_list(&gw).into_iter().find(|m| m["id"] == id.as_str());
    match found {
        Some(m) => {
            gw.metrics.request("/v1/models/{id}", 200);
            axum::Json(m).into_response()
        }
        None => {
            gw.metrics.request("/v1/models/{id}", 404);
            GatewayError::new(
                NOT_FOUND,
                format!("The model `{id}` is not among this gateway's candidates"),
            )
            .response(Dialect::OpenAi)
        }
    }
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Readiness (see [`super::fleet::readiness`]): 200 when every box answers and every policy
/// model is installed somewhere, else 503 naming what is wrong. `/healthz` stays liveness.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    use super::fleet::readiness::{Inputs, readiness};
    let snap = gw.fleet.state.snapshot();
    let models = gw.current().policy_models();
    let r = readiness(Inputs {
        fleet: &snap,
        policy_models: &models,
    });
    let status = if r.ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    gw.metrics.request("/readyz", status.as_u16());
    (status, axum::Json(r)).into_response()
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let mut text = gw.metrics.render();
    text.push_str(&gw.breakers.render(std::time::Instant::now()));
    text.push_str(&gw.fleet.render_metrics());
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

async fn not_found(State(gw): State<Arc<Gateway>>, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    gw.metrics.request("other", 404);
    GatewayError::new(NOT_FOUND, format!("aigw has no route {method} {path}"))
        .response(dialect_of(path))
}

async fn method_not_allowed(State(gw): State<Arc<Gateway>>, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    gw.metrics.request("other", 405);
    GatewayError::new(
        METHOD_NOT_ALLOWED,
        format!("aigw serves {path} but not with {method}: use POST for inference routes and GET for listings"),
    )
    .response(dialect_of(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_req_and_16_hex_digits() {
        assert_eq!(new_request_id(0), "req_0000000000000000");
        assert_eq!(
            new_request_id(0xdead_beef_0123_4567),
            "req_deadbeef01234567"
        );
        assert_eq!(new_request_id(u64::MAX), format!("req_{:016x}", u64::MAX));
        let mut h = HeaderMap::new();
        h.insert(names::X_REQUEST_ID, HeaderValue::from_static("client-id-1"));
        assert_eq!(request_id(&h), "client-id-1");
        h.insert(names::X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert!(request_id(&h).starts_with("req_"));
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secret2"));
    }
}
