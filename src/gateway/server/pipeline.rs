//! One proxied request from body to answer: the request id, the JSON body, the failover
//! executor, the response's `x-request-id`, the access-log line and the request metrics. Shared
//! by the OpenAI/Anthropic routes and the Ollama native API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::Response;

use super::body::{BodyError, JsonBody};
use super::timed_body::{BodyTimeout, is_timeout};
use crate::gateway::Gateway;
use crate::gateway::attempts::forward::{self, Inbound, Report};
use crate::gateway::errors::{BODY_TIMEOUT, BODY_TOO_LARGE, Dialect, GatewayError, codes};
use crate::gateway::names;
use crate::gateway::observe::status::Recent;
use crate::traffic::cel::Scope;
use crate::traffic::decorate::Rendered;

/// 413, naming the limit and the flag that raises it.
pub fn too_large(max_body_bytes: usize) -> GatewayError {
    GatewayError::new(
        BODY_TOO_LARGE,
        format!(
            "Request body too large: aigw accepts at most {max_body_bytes} bytes; send a smaller body or \
             restart the gateway with a higher `aigw serve --max-body-bytes`"
        ),
    )
}

/// 408 for a body that did not arrive in time, naming the flag.
pub fn body_timeout(t: BodyTimeout) -> GatewayError {
    GatewayError::new(
        BODY_TIMEOUT,
        format!(
            "Request timeout: {t}; send the whole body at once, or restart the gateway with a higher `aigw serve --body-read-timeout`"
        ),
    )
}

/// 413 before reading a body whose `Content-Length` is over `--max-body-bytes` (so a client
/// sending `Expect: 100-continue` is refused instead of invited to send it).
pub fn declared_too_large<B>(gw: &Gateway, req: &axum::http::Request<B>) -> Option<Response> {
    let max = gw.opts.max_body_bytes;
    let declared: u64 = req
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if declared <= max as u64 {
        return None;
    }
    let path = req.uri().path();
    let e = too_large(max);
    let report = Report {
        status: e.status,
        error_code: Some(e.code),
        ..Report::default()
    };
    let id = request_id(req.headers());
    let mut resp = e.response(super::routes::dialect_of(path));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(names::X_REQUEST_ID, v);
    }
    // The body stays unread: the connection cannot be reused.
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    log_request(gw, req.method(), path, &id, &report, Instant::now());
    Some(resp)
}

/// The error for a body extractor's rejection: 413 names the limit and the flag that raises it,
/// 408 the body read timeout.
pub fn body_error(e: &BytesRejection, max_body_bytes: usize) -> GatewayError {
    let status = e.status().as_u16();
    if status == 413 {
        return too_large(max_body_bytes);
    }
    if let Some(t) = is_timeout(e) {
        return body_timeout(t);
    }
    GatewayError::new(
        (codes::INVALID_BODY.0, status),
        format!("Invalid request body: {}", e.body_text()),
    )
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

/// The `ai-gateway` action's `headers`, `query_params` and `body` for this request, against
/// the scope the traffic policy left (its `vars`), or the request alone.
fn decorations(
    gw: &Gateway,
    policy: Option<Arc<Scope>>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    client: SocketAddr,
    id: &str,
) -> Result<Arc<Rendered>, GatewayError> {
    let routing = gw.current();
    let d = routing.decorations();
    if let Some(fixed) = d.fixed() {
        return Ok(fixed);
    }
    let scope = policy.unwrap_or_else(|| {
        let view = super::policy_hook::view_of_parts(method, uri, headers, client, id.to_owned());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Arc::new(Scope::new(Arc::new(view), now))
    });
    d.render(&scope).map(Arc::new).map_err(|e| {
        GatewayError::new(
            codes::CONFIG_EVAL,
            format!(
                "The traffic policy could not be evaluated (ERR_NGROK_2254): `ai-gateway` failed: {e}"
            ),
        )
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
    let _in_flight = gw.status.begin();
    // A policy that ran already named the request (its rules may have read `req.id`).
    let policy = super::policy_hook::request_scope();
    let id = policy
        .as_ref()
        .map(|s| s.request.id.clone())
        .unwrap_or_else(|| request_id(&headers));
    let path = uri.path().to_string();
    let parsed = body.and_then(|b| json_body(&b)).and_then(|body| {
        let decorations = decorations(&gw, policy, &method, &uri, &headers, client, &id)?;
        Ok((body, decorations))
    });
    let (mut resp, report) = match parsed {
        Ok((body, decorations)) => {
            let inb = Inbound {
                decorations,
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
    gw.metrics.request(&path, report.status);
    if report.stream_end.is_none() {
        log_request(&gw, &method, &path, &id, &report, started);
        return resp;
    }
    // A stream's line is written when its body ends, saying how it ended.
    let line = LineOnEnd {
        gw: gw.clone(),
        method,
        path,
        id,
        report,
        started,
    };
    resp.map(|body| Body::new(WithLine { body, _line: line }))
}

/// The access line of a streamed response, written when its body is dropped (ended, or the
/// client went away).
struct LineOnEnd {
    gw: Arc<Gateway>,
    method: Method,
    path: String,
    id: String,
    report: Report,
    started: Instant,
}

impl Drop for LineOnEnd {
    fn drop(&mut self) {
        let l = &*self;
        log_request(&l.gw, &l.method, &l.path, &l.id, &l.report, l.started);
    }
}

/// A response body that writes its access line when dropped.
struct WithLine {
    body: Body,
    _line: LineOnEnd,
}

impl hyper::body::Body for WithLine {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The request's entry on /ui and its access line (the metric is counted when the response
/// starts).
pub fn log_request(
    gw: &Gateway,
    method: &Method,
    path: &str,
    id: &str,
    report: &Report,
    started: Instant,
) {
    // A continued stream asked more candidates after its response began.
    let attempts = report
        .stream_end
        .as_ref()
        .and_then(|e| e.attempts())
        .unwrap_or(report.attempts);
    gw.status.record(|| Recent {
        seq: 0,
        at_ms: 0,
        request_id: id.to_string(),
        method: method.to_string(),
        path: path.to_string(),
        model: report.model.clone().unwrap_or_else(|| "-".into()),
        chosen: report.chosen.clone(),
        status: report.status,
        attempts,
        failovers: attempts.saturating_sub(1),
        streaming: report.streaming,
        upstream_ms: ms(report.upstream),
        total_ms: ms(started.elapsed()),
        error: report.error_code.map(String::from),
        strategy: report.strategy,
    });
    if !tracing::enabled!(target: "aigw::request", tracing::Level::INFO) {
        return;
    }
    let total = ms(started.elapsed());
    let upstream = ms(report.upstream);
    let model = report.model.as_deref().unwrap_or("-");
    let chosen = report.chosen.as_deref().unwrap_or("-");
    let status = report.status;
    let error = report.error_code.unwrap_or("-");
    let end = report.stream_end.as_ref().map(|e| e.get());
    match &gw.opts.access_log {
        Some(log) => log.write(&crate::gateway::observe::access_log::Line {
            method: method.as_str(),
            path,
            model,
            chosen,
            status,
            attempts,
            streaming: report.streaming,
            stream_end: end,
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
            stream_end = end.unwrap_or("-"),
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
}
