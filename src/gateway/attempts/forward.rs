//! The failover executor: runs a [`Plan`]'s attempts in order until one succeeds.
//!
//! Per attempt: rewrite the body (upstream model id, no `models`, merged `body`, parameter
//! stripping, `max_output_tokens` clamp), build the headers (hop-by-hop and inbound auth
//! stripped, `headers` templates, the provider key or the client's), add `query_params`, send.
//! What a failure means for the attempts after it (next key, next model, wait and retry a 429)
//! is [`super::failure`]'s; models whose circuit is open are skipped ([`super::breaker`]).
//! `per_request_timeout` bounds each attempt up to its first byte (the whole body for
//! non-streaming responses), `total_timeout` bounds the whole loop (504 ERR_NGROK_3810), and
//! when nothing is left the client gets the first failure: the provider's own refusal when it
//! refused the request, else 503 ERR_NGROK_3807 with every attempt's reason. A streaming
//! response is committed once its first chunk has arrived; after
//! that [`crate::gateway::upstream::stream`] relays it. The loop over the attempts is
//! [`super::run`]'s.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyDataStream, BodyExt};
use serde_json::Value;

use super::failure::Failure;
use crate::gateway::Gateway;
use crate::gateway::Routing;
use crate::gateway::errors::{Dialect, GatewayError, codes};
use crate::gateway::limits;
use crate::gateway::names;
use crate::gateway::server::body::{Field, JsonBody};
use crate::gateway::upstream::events::Framing;
use crate::gateway::upstream::stream::Relay;
use crate::policy::{AiGateway, ApiFormat};
use crate::routing::plan::{Attempt, KeyChoice, Plan, Request};
use crate::routing::upstream::percent_encode as encode;
use crate::traffic::decorate::Rendered;

/// ngrok's documented defaults (DESIGN.md).
pub const DEFAULT_PER_REQUEST_TIMEOUT: Duration = Duration::from_secs(180);
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(360);

/// A parsed inbound request, ready for planning.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub dialect: Dialect,
    /// The path the engine plans for (`/v1/chat/completions` also for Ollama's `/api/chat`).
    pub plan_path: String,
    /// For the Ollama native API: the native path to call on Ollama providers instead.
    pub native_path: Option<&'static str>,
    pub method: Method,
    /// The path as the client called it.
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: JsonBody,
    pub client: SocketAddr,
    pub request_id: String,
    pub started: Instant,
    /// The `ai-gateway` action's `headers`, `query_params` and `body`, rendered for this
    /// request.
    pub decorations: Arc<Rendered>,
}

impl Inbound {
    /// Whether the client asked for a stream: `"stream": true`, or Ollama's native chat and
    /// generate, which stream unless told `"stream": false`.
    pub fn streams(&self) -> bool {
        match self.body.raw("stream") {
            Some(v) => v.trim() == "true",
            None => matches!(self.native_path, Some("/api/chat" | "/api/generate")),
        }
    }
}

/// What the request log line says about a request.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub model: Option<String>,
    pub chosen: Option<String>,
    pub attempts: usize,
    pub status: u16,
    pub upstream: Duration,
    pub error_code: Option<&'static str>,
    pub streaming: bool,
    /// For a stream: how it ended, known once its body has ended.
    pub stream_end: Option<crate::gateway::upstream::stream::EndNote>,
    /// 1-based number of the strategy whose candidates were tried.
    pub strategy: Option<usize>,
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus those aigw sets.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

pub(super) enum Success {
    Whole {
        status: u16,
        headers: HeaderMap,
        body: Bytes,
    },
    Stream {
        status: u16,
        headers: HeaderMap,
        first: Bytes,
        rest: crate::gateway::upstream::client::DataStream,
        framing: Framing,
    },
}

/// Estimated input tokens: characters of every string in the body but `model`/`models`, over 4
/// (rounded up). aigw has no tokenizer; this is a deliberately simple, documented estimate.
pub fn estimate_tokens(body: &JsonBody) -> u64 {
    fn chars(v: &Value) -> usize {
        match v {
            Value::String(s) => s.chars().count(),
            Value::Array(a) => a.iter().map(chars).sum(),
            Value::Object(o) => o.values().map(chars).sum(),
            _ => 0,
        }
    }
    let n: usize = body
        .iter()
        .filter(|(k, _)| *k != "model" && *k != "models")
        .map(|(_, raw)| chars(&crate::gateway::server::body::parsed(raw)))
        .sum();
    (n as u64).div_ceil(4)
}

/// Reads `model` and `models` (ERR_NGROK_3801 when they have the wrong type, when the list is
/// longer than [`limits::MAX_REQUESTED_MODELS`] or a name longer than
/// [`limits::MAX_MODEL_NAME_BYTES`]).
pub fn requested_models(body: &JsonBody) -> Result<(Option<String>, Vec<String>), GatewayError> {
    let not_strings = || {
        GatewayError::new(
            codes::INVALID_BODY,
            "Invalid request body: `models` must be a list of strings",
        )
    };
    let model = match body.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(GatewayError::new(
                codes::INVALID_BODY,
                "Invalid request body: `model` must be a string",
            ));
        }
    };
    let models = match body.raw("models") {
        None | Some("null") => Vec::new(),
        Some(raw) => match serde_json::from_str::<BoundedList>(raw) {
            Ok(BoundedList::Strings(list)) => list,
            Ok(BoundedList::TooLong) => {
                return Err(GatewayError::new(
                    codes::INVALID_BODY,
                    format!(
                        "Invalid request body: `models` lists more than {} names; aigw accepts at most {} model names per request (`model` and `models` together)",
                        limits::MAX_REQUESTED_MODELS,
                        limits::MAX_REQUESTED_MODELS
                    ),
                ));
            }
            Err(_) => return Err(not_strings()),
        },
    };
    if model.is_some() as usize + models.len() > limits::MAX_REQUESTED_MODELS {
        return Err(GatewayError::new(
            codes::INVALID_BODY,
            format!(
                "Invalid request body: aigw accepts at most {} model names per request (`model` and `models` together)",
                limits::MAX_REQUESTED_MODELS
            ),
        ));
    }
    if let Some(long) = model
        .iter()
        .chain(&models)
        .find(|m| m.len() > limits::MAX_MODEL_NAME_BYTES)
    {
        return Err(GatewayError::new(
            codes::INVALID_BODY,
            format!(
                "Invalid request body: a model name of {} bytes (`{}`); aigw accepts names of at most {} bytes",
                long.len(),
                limits::cut(long),
                limits::MAX_MODEL_NAME_BYTES
            ),
        ));
    }
    Ok((model, models))
}

/// `models[]` read without building more than [`limits::MAX_REQUESTED_MODELS`] strings: the
/// visitor stops at the first name past the limit (a 16 MB list of a million names cost
/// gigabytes once planned).
enum BoundedList {
    Strings(Vec<String>),
    TooLong,
}

impl<'de> serde::Deserialize<'de> for BoundedList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = BoundedList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<BoundedList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    if out.len() == limits::MAX_REQUESTED_MODELS {
                        // The rest is skipped unparsed (serde_json wants the list consumed).
                        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                        return Ok(BoundedList::TooLong);
                    }
                    out.push(s);
                }
                Ok(BoundedList::Strings(out))
            }
        }
        d.deserialize_seq(Visitor)
    }
}

/// `http://127.x.y.z…` or `http://localhost…`.
pub fn is_loopback_url(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| crate::policy::checks::host_of(rest))
        .is_some_and(|h| {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
}

/// The Ollama native URL for a provider base URL (`http://h:11434/v1` → `http://h:11434/api/chat`).
pub fn native_url(base: &str, native_path: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    format!("{base}{native_path}")
}

/// Plans the request; for the Ollama native API keeps only Ollama providers and points attempts
/// at their native path.
pub fn plan_for(
    routing: &dyn Routing,
    fleet: &crate::gateway::fleet::Fleet,
    inb: &Inbound,
    model: Option<String>,
    models: Vec<String>,
) -> Arc<Plan> {
    let seed = rand::random::<u64>();
    let req = Request {
        path: inb.plan_path.clone(),
        model,
        models,
    };
    let shared = routing.plan(&req, seed);
    let Some(native) = inb.native_path else {
        return shared;
    };
    let providers = fleet.providers(routing);
    // A box that has never answered may be an Ollama box that is down: it stays, so that
    // admission names it among the boxes tried instead of leaving it out unsaid.
    let live = fleet.live();
    let never_answered = |id: &str| {
        live.as_ref().and_then(|s| s.get(id)).is_some_and(|b| {
            !b.ollama && b.version.is_none() && b.health == crate::gateway::fleet::Health::Down
        })
    };
    let restrict = |plan: Arc<Plan>| {
        let mut plan = Arc::unwrap_or_clone(plan);
        plan.attempts.retain(|a| {
            providers
                .iter()
                .any(|p| p.id == a.provider && (p.ollama || never_answered(&p.id)))
        });
        for a in &mut plan.attempts {
            let base = providers
                .iter()
                .find(|p| p.id == a.provider)
                .and_then(|p| p.base_url.clone());
            a.url = base.map(|b| native_url(&b, native));
        }
        plan
    };
    let mut plan = restrict(shared);
    // Ollama clients say `llama3.2:latest` for the policy's `llama3.2`.
    if plan.attempts.is_empty()
        && let Some(stripped) = req.model.as_deref().and_then(|m| m.strip_suffix(":latest"))
    {
        let again = Request {
            path: req.path.clone(),
            model: Some(stripped.to_string()),
            models: req.models.clone(),
        };
        let again = restrict(routing.plan(&again, seed));
        if !again.attempts.is_empty() {
            return Arc::new(again);
        }
    }
    if plan.error.is_none() && plan.attempts.is_empty() {
        plan.error = Some(crate::routing::plan::PlanError {
            code: codes::NO_COMPATIBLE_MODELS.0,
            status: 404,
            message: format!(
                "model '{}' not found: no Ollama provider in the policy serves it",
                req.model.as_deref().unwrap_or("?")
            ),
        });
    }
    Arc::new(plan)
}

/// Executes a request end to end: plan, attempts, response.
pub async fn execute(gw: &Arc<Gateway>, inb: Inbound) -> (Response, Report) {
    let mut report = Report::default();
    // Ollama's legacy `name` (show, pull…) names the model too.
    let mut inb = inb;
    if inb.dialect == Dialect::Ollama && !inb.body.contains_key("model") {
        inb.body.rename("name", "model");
    }
    let (model, models) = match requested_models(&inb.body) {
        Ok(m) => m,
        Err(e) => return error_response(e, inb.dialect, &mut report),
    };
    report.model = model.clone().or_else(|| models.first().cloned());
    let routing = gw.current();
    let g = routing.gateway();
    if let Some(max) = &g.max_input_tokens {
        let estimate = estimate_tokens(&inb.body);
        if estimate > max.value {
            let e = GatewayError::new(
                codes::INPUT_TOO_LARGE,
                format!(
                    "Input too large: about {estimate} tokens (max {}). Shorten your prompt. (aigw estimates tokens as characters / 4)",
                    max.value
                ),
            );
            return error_response(e, inb.dialect, &mut report);
        }
    }
    let requested = report.model.clone();
    let plan = plan_for(routing.as_ref(), &gw.fleet, &inb, model, models);
    // Down boxes and boxes without the model are dropped here, before the attempt loop.
    let plan = match crate::gateway::fleet::admit_plan(&gw.fleet, plan, requested.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(request_id = %inb.request_id, "{}", e.message);
            return error_response(e, inb.dialect, &mut report);
        }
    };
    if let Some(e) = &plan.error {
        let err = GatewayError {
            status: e.status,
            code: e.code,
            message: e.message.clone(),
        };
        return error_response(err, inb.dialect, &mut report);
    }
    report.strategy = plan.strategies.iter().position(|s| s.chosen).map(|i| i + 1);
    if plan.attempts.is_empty() {
        let e = GatewayError::new(
            codes::SELECTION_EMPTY,
            "Model selection returned no results",
        );
        return error_response(e, inb.dialect, &mut report);
    }
    // Shared, so that a stream can be continued on the rest of the plan after this returns.
    let inb = Arc::new(inb);
    super::run::run(gw, &routing, &inb, &plan, report).await
}

/// `provider:model`, for reasons and the report.
pub(super) struct Label<'a>(pub(super) &'a Attempt);

impl std::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.0.provider, self.0.model)
    }
}

/// ` (key #n)` for a configured key, nothing for a passthrough key.
pub(super) struct KeyLabel<'a>(pub(super) &'a KeyChoice);

impl std::fmt::Display for KeyLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            KeyChoice::Configured { index, .. } => write!(f, " (key #{})", index + 1),
            KeyChoice::Passthrough => Ok(()),
        }
    }
}

pub(super) fn total_timeout(
    total: Duration,
    reasons: &[String],
    dialect: Dialect,
    tried: usize,
    mut report: Report,
) -> (Response, Report) {
    report.attempts = tried;
    let mut msg = format!(
        "Request timed out after {} (total_timeout). Try a shorter prompt or increase your timeout.",
        crate::policy::duration::format(total)
    );
    if !reasons.is_empty() {
        msg.push_str(&format!(" Errors: {}", reasons.join("; ")));
    }
    let (mut resp, report) = error_response(
        GatewayError::new(codes::TOTAL_TIMEOUT, msg),
        dialect,
        &mut report,
    );
    resp.headers_mut()
        .insert(names::X_AIGW_ATTEMPTS, names::attempts_value(tried));
    (resp, report)
}

pub(super) fn error_response(
    e: GatewayError,
    dialect: Dialect,
    report: &mut Report,
) -> (Response, Report) {
    report.status = e.status;
    report.error_code = Some(e.code);
    (e.response(dialect), report.clone())
}

pub(super) async fn send(
    gw: &Gateway,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Success, Failure> {
    let resp = gw
        .client()
        .send(method, uri, headers, body)
        .await
        .map_err(|e| {
            if e.connect {
                Failure::Connect(e.reason)
            } else {
                Failure::Other(e.reason)
            }
        })?;
    let (parts, body) = resp.into_parts();
    let status = parts.status.as_u16();
    let headers = parts.headers;
    if !parts.status.is_success() {
        let retry_after = super::failure::retry_after(&headers);
        let (detail, code) = error_detail(body).await;
        return Err(Failure::Http {
            status,
            detail,
            code,
            retry_after,
        });
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let starts = |prefix: &str| {
        content_type
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    let framing = if starts("text/event-stream") {
        Some(Framing::Sse)
    } else if starts("application/x-ndjson") {
        Some(Framing::Ndjson)
    } else {
        None
    };
    match framing {
        None => {
            let body = body
                .collect()
                .await
                .map_err(|e| Failure::Other(body_broke(&e)))?
                .to_bytes();
            Ok(Success::Whole {
                status,
                headers,
                body,
            })
        }
        Some(framing) => {
            let mut rest = BodyDataStream::new(body);
            loop {
                match rest.next().await {
                    Some(Ok(b)) if b.is_empty() => continue,
                    Some(Ok(first)) => {
                        return Ok(Success::Stream {
                            status,
                            headers,
                            first,
                            rest,
                            framing,
                        });
                    }
                    Some(Err(e)) => return Err(Failure::Other(body_broke(&e))),
                    None => {
                        return Err(Failure::Other(
                            "the upstream stream ended before its first byte".into(),
                        ));
                    }
                }
            }
        }
    }
}

/// A response body that failed part-way, as a reason.
pub fn body_broke(e: &hyper::Error) -> String {
    format!(
        "the response body broke off ({})",
        crate::gateway::upstream::client::describe(e)
    )
}

/// The provider's reason and code from an error body (at most its first 4 KiB are read).
async fn error_detail(
    body: crate::gateway::upstream::client::UpstreamBody,
) -> (String, Option<String>) {
    let mut text = Vec::new();
    let mut stream = BodyDataStream::new(body);
    while let Some(Ok(chunk)) = stream.next().await {
        text.extend_from_slice(&chunk);
        if text.len() >= 4096 {
            break;
        }
    }
    super::failure::parse_error_body(&text)
}

/// The client's response for an answering attempt (`report.attempts`: the attempts so far, for
/// `x-aigw-attempts`); a stream is relayed holding `slot` and continued with `resume`.
pub(super) fn respond(
    gw: &Arc<Gateway>,
    success: Success,
    inb: &Inbound,
    attempt: &Attempt,
    report: &mut Report,
    resume: Option<crate::gateway::upstream::stream::Continue>,
    slot: crate::gateway::fleet::limit::Slot,
) -> Response {
    let tried = report.attempts;
    let (status, up_headers, body, streaming) = match success {
        Success::Whole {
            status,
            headers,
            body,
        } => {
            if let Some(usage) = crate::gateway::observe::usage::Usage::from_json(&body) {
                gw.metrics.tokens(&attempt.provider, &attempt.model, usage);
            }
            (status, headers, Body::from(body), false)
        }
        Success::Stream {
            status,
            headers,
            first,
            rest,
            framing,
        } => {
            let relay = Relay {
                first,
                upstream: rest,
                idle: gw.opts.stream_idle_timeout,
                dialect: inb.dialect,
                framing,
                cancel: gw.shutdown.clone(),
                guard: gw.metrics.stream_opened(),
                provider: attempt.provider.clone(),
                model: attempt.model.clone(),
                redact: gw.redactor.get(gw),
                request_id: inb.request_id.clone(),
                end: Default::default(),
                resume,
                health: gw.clone(),
                // Held while the stream runs (a whole body is read: its slot goes with it).
                hold: Some(Box::new(slot)),
            };
            report.stream_end = Some(relay.end.clone());
            (
                status,
                headers,
                Body::from_stream(crate::gateway::upstream::stream::relay(relay)),
                true,
            )
        }
    };
    report.status = status;
    report.streaming = streaming;
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    h.reserve(up_headers.len() + 6);
    for (name, value) in up_headers.iter() {
        if HOP_BY_HOP.contains(&name.as_str()) || name.as_str().starts_with("x-aigw-") {
            continue;
        }
        h.append(name.clone(), value.clone());
    }
    if streaming {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(names::X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    }
    if let Ok(v) = HeaderValue::from_str(&attempt.provider) {
        h.insert(names::X_AIGW_PROVIDER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&attempt.model) {
        h.insert(names::X_AIGW_MODEL, v);
    }
    h.insert(names::X_AIGW_ATTEMPTS, names::attempts_value(tried));
    resp
}

/// The body sent to one attempt.
#[allow(clippy::too_many_arguments)]
pub fn upstream_body(
    body: &JsonBody,
    attempt: &Attempt,
    g: &AiGateway,
    format: ApiFormat,
    surface: &str,
    native: bool,
    decorations: &Rendered,
) -> Bytes {
    let mut b = body.edit();
    b.insert(
        Cow::Borrowed("model"),
        Field::Value(Value::String(attempt.model.clone())),
    );
    b.shift_remove("models");
    for (key, value) in &decorations.body {
        b.insert(Cow::Borrowed(key.as_str()), Field::Value(value.clone()));
    }
    let provider = g
        .providers
        .iter()
        .find(|p| p.id.eq_ignore_ascii_case(&attempt.provider));
    let mut limit = g.max_output_tokens.as_ref().map(|m| m.value);
    if let Some(p) = provider {
        let allowed: Vec<&str> = p
            .supported_api_surfaces
            .iter()
            .filter(|s| {
                *s.format == format && s.surface.as_ref().is_none_or(|n| n.value == surface)
            })
            .flat_map(|s| s.supported_params.iter().map(|p| p.value.as_str()))
            .collect();
        if !allowed.is_empty() && !native {
            b.retain(|k, _| k == "model" || k == "stream" || allowed.contains(&k.as_ref()));
        }
        if let Some(m) = p.models.iter().find(|m| {
            m.id.value == attempt.model || m.id_aliases.iter().any(|a| a.value == attempt.model)
        }) {
            for param in &m.unsupported_params {
                b.shift_remove(param.value.as_str());
            }
            if let Some(mo) = m.max_output_tokens {
                limit = Some(limit.map_or(mo, |l| l.min(mo)));
            }
        }
    }
    if let Some(limit) = limit {
        for key in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
            if let Some(v) = b.get_mut(key) {
                let n = match v {
                    Field::Raw(r) => clamped(r.get(), limit),
                    Field::Value(v) if v.is_number() => clamped(&v.to_string(), limit),
                    Field::Value(_) => None,
                };
                if let Some(n) = n {
                    *v = Field::Value(Value::from(n));
                }
            }
        }
        if native
            && let Some(options) = b.get_mut("options")
            && let Some(o) = clamp_num_predict(options, limit)
        {
            *options = Field::Value(Value::Object(o));
        }
    }
    Bytes::from(crate::gateway::server::body::write(&b))
}

/// Ollama's `options` with `num_predict` clamped, when it needs to be. Read entry by entry:
/// `1e400` is valid JSON that `Value` cannot hold, so parsing the whole object would fail and
/// leave the limit unclamped; another entry no `Value` can hold is dropped (no upstream could
/// read it either).
fn clamp_num_predict(options: &Field<'_>, limit: u64) -> Option<serde_json::Map<String, Value>> {
    let text = match options {
        Field::Raw(r) => Cow::Borrowed(r.get()),
        Field::Value(v) => Cow::Owned(v.to_string()),
    };
    let entries: indexmap::IndexMap<String, &serde_json::value::RawValue> =
        serde_json::from_str(&text).ok()?;
    let n = clamped(entries.get("num_predict")?.get(), limit)?;
    Some(
        entries
            .into_iter()
            .filter_map(|(k, raw)| {
                let v = if k == "num_predict" {
                    Value::from(n)
                } else {
                    serde_json::from_str(raw.get()).ok()?
                };
                Some((k, v))
            })
            .collect(),
    )
}

/// A token limit the client wrote as a JSON number, when it must be rewritten to stay within
/// `limit`: every numeric form counts, not only plain integers. Over the limit (`1e400`,
/// `18446744073709551616` too) or negative (Ollama's "no limit" `-1`, "fill the context" `-2`)
/// becomes `limit`; a fraction is rounded down and an exponent written out (`1e3` → 1000), so
/// the upstream gets an integer it cannot read as more. `None`: keep it (or not a number).
pub fn clamped(raw: &str, limit: u64) -> Option<u64> {
    let text = raw.trim();
    if let Ok(n) = text.parse::<u64>() {
        return (n > limit).then_some(limit);
    }
    let x: f64 = text.parse().ok()?;
    Some(if x.is_nan() || x < 0.0 || x >= limit as f64 {
        limit
    } else {
        x.floor() as u64
    })
}

/// Whether an inbound header carries the gateway's own token (never forwarded).
fn is_inbound_token(value: &HeaderValue, token: Option<&str>) -> bool {
    let Some(token) = token else { return false };
    let v = value.to_str().unwrap_or("");
    let v = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .unwrap_or(v);
    crate::gateway::token::ct_eq(v.trim().as_bytes(), token.as_bytes())
}

/// The headers sent to one attempt.
pub fn upstream_headers(
    inbound: &HeaderMap,
    key: Option<&str>,
    format: ApiFormat,
    decorations: &Rendered,
    gw: &Gateway,
) -> HeaderMap {
    let token = gw.opts.auth_token.as_deref();
    let connection_listed: Vec<String> = inbound
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    // Room for what is copied and what is added (key, content type, hop, host): no regrowth.
    let mut out = HeaderMap::with_capacity(inbound.len() + 4);
    for (name, value) in inbound.iter() {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n)
            || connection_listed.iter().any(|c| c == n)
            || n == "authorization"
            || n == "x-api-key"
            || n == "accept-encoding"
            || n.starts_with("x-aigw-")
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    match key {
        Some(k) => match format {
            ApiFormat::OpenAi => {
                if let Ok(v) = HeaderValue::from_str(&format!("Bearer {k}")) {
                    out.insert(header::AUTHORIZATION, v);
                }
            }
            ApiFormat::Anthropic => {
                if let Ok(v) = HeaderValue::from_str(k) {
                    out.insert(names::X_API_KEY, v);
                }
                if !out.contains_key(names::ANTHROPIC_VERSION) {
                    out.insert(
                        names::ANTHROPIC_VERSION,
                        HeaderValue::from_static("2023-06-01"),
                    );
                }
            }
        },
        None => {
            for name in [header::AUTHORIZATION, names::X_API_KEY] {
                if let Some(v) = inbound.get(&name)
                    && !is_inbound_token(v, token)
                {
                    out.insert(name, v.clone());
                }
            }
        }
    }
    for (name, value) in &decorations.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            out.insert(n, v);
        }
    }
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}

/// The URL of one attempt: the client's query string, then `query_params`.
pub(super) fn with_query(url: &str, client_query: &str, decorations: &Rendered) -> String {
    let mut pairs: Vec<String> = Vec::new();
    if !client_query.is_empty() {
        pairs.push(client_query.to_string());
    }
    for (name, value) in &decorations.query_params {
        pairs.push(format!("{}={}", encode(name), encode(value)));
    }
    if pairs.is_empty() {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_numeric_form_of_a_token_limit_is_clamped() {
        for (raw, want) in [
            ("100", None),
            ("1000", None),
            ("1001", Some(1000)),
            ("1e3", Some(1000)),
            ("1e2", Some(100)),
            ("1000.5", Some(1000)),
            ("999.9", Some(999)),
            ("1e400", Some(1000)),
            ("18446744073709551616", Some(1000)),
            ("-1", Some(1000)),
            ("-2", Some(1000)),
            ("-1e400", Some(1000)),
            ("\"5000\"", None),
            ("null", None),
        ] {
            assert_eq!(clamped(raw, 1000), want, "{raw}");
        }
    }

    #[test]
    fn tokens_and_models() {
        let body =
            JsonBody::parse(br#"{"model":"x","messages":[{"role":"user","content":"12345678"}]}"#)
                .unwrap();
        assert_eq!(estimate_tokens(&body), 3); // "user" + "12345678" = 12 chars
        assert_eq!(requested_models(&body).unwrap().0.as_deref(), Some("x"));
        let bad = JsonBody::parse(br#"{"model":1}"#).unwrap();
        assert_eq!(requested_models(&bad).unwrap_err().code, "ERR_NGROK_3801");
        let bad = JsonBody::parse(br#"{"models":["a",2]}"#).unwrap();
        assert!(requested_models(&bad).is_err());
    }

    #[test]
    fn native_urls() {
        assert_eq!(
            native_url("http://localhost:11434", "/api/chat"),
            "http://localhost:11434/api/chat"
        );
        assert_eq!(
            native_url("http://localhost:11434/v1/", "/api/tags"),
            "http://localhost:11434/api/tags"
        );
    }

    #[test]
    fn loopback_urls() {
        assert!(is_loopback_url("http://127.0.0.1:9/v1"));
        assert!(is_loopback_url("http://localhost:11434"));
        assert!(is_loopback_url("http://[::1]:80/x"));
        assert!(!is_loopback_url("https://api.openai.com/v1"));
        assert!(!is_loopback_url("http://127.0.0.1.evil.com/"));
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
