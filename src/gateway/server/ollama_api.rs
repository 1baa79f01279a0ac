//! The Ollama native API (`/api/*`), so Ollama clients can use the gateway too.
//!
//! Choice: requests are routed with the same planning and failover as `/v1` (planned as the
//! matching OpenAI surface: `/api/chat` and `/api/generate` as chat completions, `/api/embed` as
//! embeddings), restricted to Ollama providers, and sent to each provider's **native** API
//! (`base_url` without `/v1`, plus `/api/chat`…). Bodies and NDJSON streams pass through
//! unchanged apart from the model rewrite, so every Ollama feature (options, keep_alive, think,
//! images, tools) works with no translation layer. `/api/tags` and `/api/ps` merge the lists of
//! every reachable Ollama provider; `/api/version` reports the first reachable one's version;
//! `/api/show` goes to the provider the model would be routed to.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::pipeline::{body_error, handle};
use crate::gateway::Gateway;
use crate::gateway::attempts::forward::native_url;
use crate::gateway::errors::{Dialect, GatewayError};

const LIST_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn inference(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (plan_path, native): (&str, &'static str) = match uri.path() {
        "/api/chat" => ("/v1/chat/completions", "/api/chat"),
        "/api/generate" => ("/v1/chat/completions", "/api/generate"),
        "/api/embeddings" => ("/v1/embeddings", "/api/embeddings"),
        "/api/show" => ("/v1/chat/completions", "/api/show"),
        _ => ("/v1/embeddings", "/api/embed"),
    };
    let body = body.map_err(|e| body_error(&e, gw.opts.max_body_bytes));
    handle(
        gw,
        Dialect::Ollama,
        plan_path.into(),
        Some(native),
        method,
        uri,
        headers,
        client,
        body,
    )
    .await
}

/// Native base URLs of the policy's Ollama providers, without duplicates.
/// `(provider id, native base URL)` of each Ollama provider, without duplicate URLs.
fn ollama_bases(gw: &Gateway) -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    gw.fleet
        .providers(gw.current().as_ref())
        .into_iter()
        .filter(|p| p.ollama)
        .filter_map(|p| Some((p.id, native_url(&p.base_url?, ""))))
        .filter(|(_, b)| seen.insert(b.clone()))
        .collect()
}

/// GETs a listing from one Ollama provider, with `x-aigw-via` (a provider pointing back at aigw
/// would otherwise make each listing call itself, see [`super::hops`]).
async fn get_json(gw: &Gateway, inbound: &HeaderMap, provider: &str, url: String) -> Option<Value> {
    let mut headers = HeaderMap::new();
    super::hops::stamp(&mut headers, inbound, &gw.instance_id, provider);
    let uri = url.parse().ok()?;
    let (status, body) = gw.client().get(uri, headers, LIST_TIMEOUT).await?;
    if !(200..300).contains(&status) {
        return None;
    }
    serde_json::from_slice(&body).ok()
}

/// The merged lists, or (when there are Ollama boxes and none answered) the error that names
/// them: a down fleet must not look like one with no models.
async fn merged_models(
    gw: &Gateway,
    inbound: &HeaderMap,
    path: &str,
) -> Result<Vec<Value>, GatewayError> {
    let bases = ollama_bases(gw);
    let futures = bases
        .iter()
        .map(|(id, b)| async move { get_json(gw, inbound, id, format!("{b}{path}")).await });
    let answers: Vec<Option<Value>> = futures_util::future::join_all(futures).await;
    if !bases.is_empty() && answers.iter().all(Option::is_none) {
        return Err(fleet_down(gw, &bases));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for v in answers.into_iter().flatten() {
        for m in v
            .get("models")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let name = m
                .get("model")
                .or_else(|| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if seen.insert(name) {
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// 503: no Ollama box answered a listing; each address with what the health checks know.
fn fleet_down(gw: &Gateway, bases: &[(String, String)]) -> GatewayError {
    let snap = gw.fleet.state.snapshot();
    let tried: Vec<String> = bases
        .iter()
        .map(|(id, b)| {
            let why = snap
                .get(id)
                .and_then(|s| s.last_error.clone())
                .unwrap_or_else(|| "no answer".into());
            format!("{id} at {b} ({why})")
        })
        .collect();
    GatewayError::new(
        crate::gateway::errors::codes::ALL_FAILED,
        format!(
            "no Ollama box answers: tried {}. Is `ollama serve` running there? Run `aigw probe` to check each box.",
            tried.join("; ")
        ),
    )
}

fn listing(gw: &Gateway, route: &str, models: Result<Vec<Value>, GatewayError>) -> Response {
    match models {
        Ok(models) => {
            gw.metrics.request(route, 200);
            axum::Json(json!({"models": models})).into_response()
        }
        Err(e) => {
            tracing::warn!("GET {route}: {}", e.message);
            gw.metrics.request(route, e.status);
            e.response(Dialect::Ollama)
        }
    }
}

pub async fn tags(State(gw): State<Arc<Gateway>>, inbound: HeaderMap) -> Response {
    let models = merged_models(&gw, &inbound, "/api/tags").await;
    listing(&gw, "/api/tags", models)
}

pub async fn ps(State(gw): State<Arc<Gateway>>, inbound: HeaderMap) -> Response {
    let models = merged_models(&gw, &inbound, "/api/ps").await;
    listing(&gw, "/api/ps", models)
}

pub async fn version(State(gw): State<Arc<Gateway>>, inbound: HeaderMap) -> Response {
    let mut version = None;
    for (id, b) in ollama_bases(&gw) {
        if let Some(v) = get_json(&gw, &inbound, &id, format!("{b}/api/version")).await
            && let Some(s) = v.get("version").and_then(Value::as_str)
        {
            version = Some(s.to_string());
            break;
        }
    }
    gw.metrics.request("/api/version", 200);
    let version = version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
    axum::Json(json!({"version": version})).into_response()
}

/// Installed models of each reachable Ollama provider (`/api/tags`), for the engine's
/// `discovered` input. Unreachable providers are left out; nothing waits longer than `budget`.
pub async fn discover(
    providers: &[crate::gateway::ProviderView],
    budget: Duration,
) -> std::collections::HashMap<String, Vec<String>> {
    let Ok(client) = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(budget)
        .build()
    else {
        return Default::default();
    };
    let lookups = providers.iter().filter(|p| p.ollama).filter_map(|p| {
        let url = format!("{}/api/tags", native_url(p.base_url.as_deref()?, ""));
        let client = client.clone();
        let id = p.id.clone();
        Some(async move {
            let resp = tokio::time::timeout(budget, client.get(&url).send())
                .await
                .ok()?
                .ok()?;
            let v: Value = tokio::time::timeout(budget, resp.json()).await.ok()?.ok()?;
            let names: Vec<String> = v
                .get("models")?
                .as_array()?
                .iter()
                .filter_map(|m| {
                    m.get("model")
                        .or_else(|| m.get("name"))
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .collect();
            Some((id, names))
        })
    });
    futures_util::future::join_all(lookups)
        .await
        .into_iter()
        .flatten()
        .collect()
}
