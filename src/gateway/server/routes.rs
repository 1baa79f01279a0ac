//! The router: OpenAI, Anthropic and Ollama routes, inbound auth, `/healthz`, `/metrics`, `/ui`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::pipeline::{body_error, body_timeout, handle, too_large};
use super::timed_body::{TimedBody, is_timeout};
use super::{ollama_api, ui};
use crate::gateway::Gateway;
use crate::gateway::errors::{
    Dialect, GatewayError, METHOD_NOT_ALLOWED, NOT_FOUND, UNAUTHORIZED, codes,
};
use crate::gateway::names;
use crate::gateway::token::ct_eq;

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
        .route("/ui/state.json", get(ui::state_json))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(gw.clone(), auth))
        // Before auth: a request looping back through aigw carries no inbound token.
        .layer(middleware::from_fn_with_state(gw.clone(), loop_guard));
    Router::new()
        .route("/healthz", get(healthz))
        // The page holds no data (its state.json is behind the token), so a browser can load
        // it and then ask for the token.
        .route("/ui", get(ui::page))
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

/// `/healthz` and `/readyz`: open without the gateway token and outside the traffic policy.
pub fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
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
    req: axum::http::Request<TimedBody<hyper::body::Incoming>>,
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
        Err(e) if let Some(t) = is_timeout(e.as_ref()) => Err(body_timeout(t)),
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

/// Liveness: 200 while the process serves. With `--state`, also how the link to the other
/// replicas is (a lost link is not a reason to restart: the replica serves on its own view).
async fn healthz(State(gw): State<Arc<Gateway>>) -> Response {
    match &gw.shared {
        None => axum::Json(json!({"status": "ok"})).into_response(),
        Some(s) => axum::Json(json!({"status": "ok", "state": s.link.status()})).into_response(),
    }
}

/// Readiness (see [`crate::gateway::fleet::readiness`]): 200 when every box answers and every policy
/// model is installed somewhere, else 503 naming what is wrong. `/healthz` stays liveness.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    use crate::gateway::fleet::readiness::{Inputs, readiness};
    let snap = gw.fleet.state.snapshot();
    let models = gw.current().policy_models();
    let r = readiness(Inputs {
        fleet: &snap,
        policy_models: &models,
        draining: gw.draining.is_cancelled(),
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
    if let Some(s) = &gw.shared {
        text.push_str(&s.link.render());
    }
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
