//! The live status page: `GET /ui` (one embedded HTML page, vanilla JavaScript, no external
//! assets) and `GET /ui/state.json`, which the page polls once a second.
//!
//! The page holds no data, so it is served without the inbound token; `state.json` is behind
//! it like every other route (the page asks for the token once and sends it as
//! `Authorization: Bearer`). Nothing secret is in the state: keys appear only as counts, and
//! base URLs lose any `user:password@`.
//!
//! [`State`] is built from what the gateway already keeps (providers, breakers, traffic
//! figures, the status recorder); later facts (a box's health, its installed and loaded models,
//! queues, traffic-policy rules) are added as fields, which the page shows when present.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State as Extract;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::gateway::attempts::breaker::Circuit;
use crate::gateway::observe::status::{ModelCounts, Recorded};
use crate::gateway::{Gateway, Routing};

const PAGE: &str = include_str!("ui.html");

/// Everything the page shows.
#[derive(Debug, Serialize)]
pub struct State {
    pub version: &'static str,
    /// Unix milliseconds when this state was taken.
    pub now_ms: u64,
    pub gateway: GatewayFacts,
    pub providers: Vec<Provider>,
    pub strategies: Vec<Strategy>,
    /// Requests the page saw planned without a strategy (the policy has none).
    pub unstrategised: u64,
    pub traffic: Traffic,
}

#[derive(Debug, Serialize)]
pub struct GatewayFacts {
    pub in_flight: i64,
    pub open_streams: i64,
    pub max_attempts: usize,
    /// `--breaker-failures` (0: circuit breaking is off).
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
    pub auth_token: bool,
}

#[derive(Debug, Serialize)]
pub struct Provider {
    pub id: String,
    pub base_url: Option<String>,
    /// `ollama`, `built-in` or `custom`.
    pub kind: &'static str,
    pub configured: bool,
    /// Configured keys; 0: the client's key passes through.
    pub keys: usize,
    /// Models the engine knows for it (listed, discovered or from the catalog).
    pub models_known: usize,
    pub models: Vec<Model>,
    /// `healthy` / `degraded` / `down` / `unknown` from serve's health checks; absent for a
    /// provider that is not checked (a built-in public API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Why it is down or degraded, from the last check or request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Models installed on an Ollama box (`/api/tags`), once a check has read them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed: Option<Vec<String>>,
    /// Models loaded in its memory (`/api/ps`) at the last check.
    pub loaded: Vec<String>,
    /// Requests in flight to it, and waiting in its `--max-in-flight` queue.
    pub in_flight: usize,
    pub queued: usize,
}

#[derive(Debug, Serialize)]
pub struct Model {
    pub id: String,
    /// Listed in the policy (else seen in traffic only).
    pub listed: bool,
    /// `closed` unless the breaker has an entry (see [`Circuit`]).
    pub circuit: &'static str,
    pub consecutive_failures: u32,
    pub retry_in_ms: u64,
    #[serde(flatten)]
    pub counts: ModelCounts,
}

#[derive(Debug, Serialize)]
pub struct Strategy {
    /// 1-based, as `explain` numbers them.
    pub number: usize,
    pub expression: String,
    /// Requests whose candidates it chose while the page watched.
    pub matched: u64,
}

#[derive(Debug, Serialize)]
pub struct Traffic {
    #[serde(flatten)]
    pub recorded: Recorded,
}

/// `https://user:pass@host/…` → `https://host/…`.
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// The state from the gateway's parts (pure but for reading them).
pub fn state(gw: &Gateway, routing: &dyn Routing, now: Instant) -> State {
    let recorded = gw.status.recorded();
    let circuits = gw.breakers.circuits(now);
    let fleet = gw.fleet.state.snapshot();
    let g = routing.gateway();
    let mut providers: Vec<Provider> = routing
        .providers()
        .into_iter()
        // Built-in providers the policy does not name are reachable by passthrough only: the
        // page lists them when traffic went there.
        .filter(|p| {
            p.configured
                || recorded
                    .models
                    .keys()
                    .any(|k| k.split_once(':').is_some_and(|(pid, _)| pid == p.id))
        })
        .map(|p| {
            let listed: Vec<String> = g
                .providers
                .iter()
                .filter(|c| c.id.value == p.id)
                .flat_map(|c| c.models.iter().map(|m| m.id.value.clone()))
                .collect();
            let mut models: BTreeMap<String, Model> = BTreeMap::new();
            let blank = |id: &str, listed: bool| Model {
                id: id.to_string(),
                listed,
                circuit: "closed",
                consecutive_failures: 0,
                retry_in_ms: 0,
                counts: ModelCounts::default(),
            };
            for id in &listed {
                models.insert(id.clone(), blank(id, true));
            }
            for (key, counts) in &recorded.models {
                if let Some((pid, mid)) = key.split_once(':')
                    && pid == p.id
                {
                    models
                        .entry(mid.to_string())
                        .or_insert_with(|| blank(mid, false))
                        .counts = counts.clone();
                }
            }
            for c in circuits.iter().filter(|c| c.provider == p.id) {
                let Circuit {
                    model,
                    state,
                    consecutive_failures,
                    retry_in_ms,
                    ..
                } = c;
                let m = models
                    .entry(model.clone())
                    .or_insert_with(|| blank(model, false));
                m.circuit = state;
                m.consecutive_failures = *consecutive_failures;
                m.retry_in_ms = *retry_in_ms;
            }
            // Listed models first, in the policy's order; then the others by name.
            let mut ordered: Vec<Model> =
                listed.iter().filter_map(|id| models.remove(id)).collect();
            ordered.extend(models.into_values());
            Provider {
                id: p.id.clone(),
                base_url: p.base_url.as_deref().map(without_credentials),
                kind: if p.ollama {
                    "ollama"
                } else if p.builtin {
                    "built-in"
                } else {
                    "custom"
                },
                configured: p.configured,
                keys: p.keys,
                models_known: p.models,
                models: ordered,
                health: fleet.get(&p.id).map(|b| b.health.as_str().to_string()),
                last_error: fleet.get(&p.id).and_then(|b| b.last_error.clone()),
                installed: fleet.get(&p.id).and_then(|b| b.installed.clone()),
                loaded: fleet
                    .get(&p.id)
                    .map(|b| b.loaded.clone())
                    .unwrap_or_default(),
                in_flight: gw.fleet.limits.in_flight(&p.id),
                queued: gw.fleet.limits.queued(&p.id),
            }
        })
        .collect();
    providers.sort_by_key(|p| !p.configured);
    let strategies = g
        .model_strategies()
        .iter()
        .enumerate()
        .map(|(i, s)| Strategy {
            number: i + 1,
            expression: s.value.clone(),
            matched: recorded.strategies.get(&(i + 1)).copied().unwrap_or(0),
        })
        .collect();
    let breaker = gw.opts.breaker;
    State {
        version: env!("CARGO_PKG_VERSION"),
        now_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        gateway: GatewayFacts {
            in_flight: gw.status.in_flight(),
            open_streams: gw.metrics.open_streams(),
            max_attempts: gw.opts.max_attempts,
            breaker_failures: breaker.failures,
            breaker_cooldown_ms: breaker.cooldown.as_millis() as u64,
            auth_token: gw.opts.auth_token.is_some(),
        },
        providers,
        strategies,
        unstrategised: recorded.strategies.get(&0).copied().unwrap_or(0),
        traffic: Traffic { recorded },
    }
}

/// `GET /ui`: the page.
pub async fn page() -> Response {
    let mut resp = PAGE.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Everything is inline; nothing may be fetched from elsewhere.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /ui/state.json`: the state; asking for it keeps the recorder on (see
/// [`crate::gateway::observe::status`]).
pub async fn state_json(Extract(gw): Extract<Arc<Gateway>>) -> Response {
    gw.status.watch();
    let routing = gw.current();
    let mut resp = axum::Json(state(&gw, routing.as_ref(), Instant::now())).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_leave_a_base_url() {
        assert_eq!(
            without_credentials("https://user:pw@host.example/v1"),
            "https://host.example/v1"
        );
        assert_eq!(
            without_credentials("http://localhost:11434"),
            "http://localhost:11434"
        );
        assert_eq!(without_credentials("https://host/a@b"), "https://host/a@b");
    }

    #[test]
    fn the_page_is_self_contained() {
        // No external scripts, styles, fonts or images: it must work with no internet.
        for needle in [
            "src=\"http",
            "href=\"http",
            "@import",
            "url(http",
            "innerHTML",
        ] {
            assert!(!PAGE.contains(needle), "the page uses {needle}");
        }
        assert!(PAGE.contains("/ui/state.json"));
    }
}
