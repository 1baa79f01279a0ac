//! Faults, provider error shapes, and turning a [`Reply`] into an HTTP response.

use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Ctx, Reply, Surface};

/// A misbehaviour to inject. Streaming faults count chunks as described in the module docs;
/// on a non-streaming reply the whole body is a single chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status. `body: None` gives a realistic error in the provider's own
    /// shape; `Some(text)` is sent verbatim (as JSON when it parses). `retry_after` adds a
    /// `Retry-After: SECS` header.
    Status {
        code: u16,
        body: Option<String>,
        retry_after: Option<u64>,
    },
    /// Sleep this long before sending the (normal) response headers.
    DelayHeaders(Duration),
    /// Read the request, never answer (until the stand-in stops, which aborts the connection).
    Hang,
    /// Drop the TCP connection (with a reset) without sending any response byte.
    ResetBeforeHeaders,
    /// Send the first N chunks, then close the connection without the terminator (an
    /// unterminated chunked body). N beyond the content chunks cuts just before the terminator.
    StreamCutAfter(usize),
    /// Send the first N chunks, then keep the connection open without sending anything more.
    StreamStallAfter(usize),
    /// Send the first N chunks, then end the body cleanly (a properly terminated chunked body):
    /// an upstream that closes before its answer finished.
    StreamEndAfter(usize),
    /// The chunk at this 0-based index is replaced by garbage that is not JSON (SSE/NDJSON
    /// framing kept); the rest of the stream is normal.
    MalformedChunkAt(usize),
    /// The full stream without its terminator (`data: [DONE]`, `done:true` line,
    /// `message_stop`, `response.completed`), ended cleanly.
    NoDoneMarker,
    /// [`Fault::NoDoneMarker`] with every event's JSON written with Python's default separators
    /// (`", "` and `": "`), as a Python server ends a finished stream.
    NoDoneMarkerSpaced,
    /// Headers at once, the first chunk after this delay.
    SlowFirstChunk(Duration),
    /// 400: the prompt is too long (OpenAI `code: "context_length_exceeded"`).
    ContextLengthExceeded,
    /// 400: the request was rejected by a content policy.
    ContentPolicy,
    /// Send the first N chunks, then the provider's own error event (Anthropic
    /// `event: error` `overloaded_error`, OpenAI `data: {"error": …}`, Ollama `{"error": …}`),
    /// then end the body cleanly.
    StreamErrorAfter(usize),
}

impl Fault {
    /// `Status { code, body: None, retry_after: None }`.
    pub fn status(code: u16) -> Fault {
        Fault::Status {
            code,
            body: None,
            retry_after: None,
        }
    }

    /// A 429 in the provider's shape with `Retry-After: secs`.
    pub fn rate_limited(retry_after_secs: u64) -> Fault {
        Fault::Status {
            code: 429,
            body: None,
            retry_after: Some(retry_after_secs),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Error shapes

/// An error in the request's dialect. `etype`/`code` default from the status.
pub fn api_error(
    ctx: &Ctx,
    status: StatusCode,
    message: &str,
    etype: Option<&str>,
    param: Option<&str>,
    code: Option<&str>,
) -> Reply {
    let s = status.as_u16();
    let body = match ctx.surface {
        Surface::Ollama => json!({ "error": message }),
        // Ollama's openai.NewError: type from the status, param and code always null.
        Surface::OllamaV1 => json!({ "error": {
            "message": message,
            "type": match s { 400 => "invalid_request_error", 404 => "not_found_error", _ => "api_error" },
            "param": null,
            "code": null,
        }}),
        Surface::OpenAi => json!({ "error": {
            "message": message,
            "type": etype.unwrap_or(match s {
                429 => "requests",
                500.. => "server_error",
                _ => "invalid_request_error",
            }),
            "param": param,
            "code": code,
        }}),
        Surface::Anthropic => json!({
            "type": "error",
            "error": {
                "type": etype.unwrap_or(match s {
                    401 => "authentication_error",
                    402 => "billing_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    413 => "request_too_large",
                    429 => "rate_limit_error",
                    504 => "timeout_error",
                    529 => "overloaded_error",
                    500.. => "api_error",
                    _ => "invalid_request_error",
                }),
                "message": message,
            },
            "request_id": format!("req_standin_{}", ctx.seq),
        }),
    };
    Reply::Json(status, body)
}

/// A 400 in the request's dialect.
pub fn bad_request(ctx: &Ctx, message: &str) -> Reply {
    api_error(ctx, StatusCode::BAD_REQUEST, message, None, None, None)
}

/// The reply for a fault that replaces the whole response, if `fault` is one.
pub fn error_reply(ctx: &Ctx, fault: &Fault) -> Option<Reply> {
    let surface = ctx.surface;
    match fault {
        Fault::Status {
            code,
            body: Some(text),
            ..
        } => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let ct = if serde_json::from_str::<Value>(text).is_ok() {
                surface.json_content_type()
            } else {
                "text/plain; charset=utf-8"
            };
            Some(Reply::Raw(status, ct, Bytes::from(text.clone())))
        }
        Fault::Status {
            code, body: None, ..
        } => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let (message, etype, ecode) = default_error(surface, *code);
            Some(api_error(ctx, status, &message, etype, None, ecode))
        }
        Fault::ContextLengthExceeded => Some(match surface {
            Surface::OpenAi => api_error(
                ctx,
                StatusCode::BAD_REQUEST,
                "This model's maximum context length is 128000 tokens. However, your messages \
                 resulted in 131072 tokens. Please reduce the length of the messages.",
                Some("invalid_request_error"),
                Some("messages"),
                Some("context_length_exceeded"),
            ),
            Surface::Anthropic => {
                bad_request(ctx, "prompt is too long: 210000 tokens > 200000 maximum")
            }
            Surface::Ollama | Surface::OllamaV1 => {
                bad_request(ctx, "the input length exceeds the context length")
            }
        }),
        Fault::ContentPolicy => Some(match surface {
            Surface::OpenAi => api_error(
                ctx,
                StatusCode::BAD_REQUEST,
                "Your request was rejected as a result of our safety system. Your prompt may \
                 contain text that is not allowed by our safety system.",
                Some("invalid_request_error"),
                None,
                Some("content_policy_violation"),
            ),
            Surface::Anthropic => bad_request(ctx, "Output blocked by content filtering policy"),
            Surface::Ollama | Surface::OllamaV1 => bad_request(
                ctx,
                "content policy violation: the request was rejected by the safety filter",
            ),
        }),
        _ => None,
    }
}

/// Message, OpenAI/Anthropic `type` and OpenAI `code` of an injected status.
fn default_error(
    surface: Surface,
    code: u16,
) -> (String, Option<&'static str>, Option<&'static str>) {
    let generic = format!("stand-in injected error (HTTP {code})");
    match surface {
        Surface::Ollama | Surface::OllamaV1 => {
            let m = match code {
                400 => "bad request",
                401 => "unauthorized",
                404 => "model not found",
                429 => "too many requests",
                500 => "an error was encountered while running the model",
                503 => "server busy, please try again.  maximum pending requests exceeded",
                _ => return (generic, None, None),
            };
            (m.to_string(), None, None)
        }
        Surface::OpenAi => {
            let (m, t, c) = match code {
                400 => ("Bad request.", None, None),
                401 => (
                    "Incorrect API key provided. You can find your API key at \
                     https://platform.openai.com/account/api-keys.",
                    None,
                    Some("invalid_api_key"),
                ),
                403 => (
                    "You are not allowed to access this resource.",
                    Some("permission_error"),
                    None,
                ),
                404 => ("Not found.", None, None),
                429 => (
                    "Rate limit reached for requests. Please try again later.",
                    Some("requests"),
                    Some("rate_limit_exceeded"),
                ),
                500 => (
                    "The server had an error while processing your request. Sorry about that!",
                    None,
                    None,
                ),
                503 => (
                    "The engine is currently overloaded, please try again later.",
                    None,
                    None,
                ),
                _ => return (generic, None, None),
            };
            (m.to_string(), t, c)
        }
        Surface::Anthropic => {
            let m = match code {
                400 => "Bad request",
                401 => "invalid x-api-key",
                403 => "Your API key does not have permission to use the specified resource.",
                404 => "Not found",
                413 => "Request exceeds the maximum allowed number of bytes.",
                429 => "Number of request tokens has exceeded your per-minute rate limit",
                500 => "Internal server error",
                529 => "Overloaded",
                _ => return (generic, None, None),
            };
            (m.to_string(), None, None)
        }
    }
}

/// The 401 for a missing (`None`) or wrong API key.
pub fn auth_error(ctx: &Ctx, given: Option<&str>) -> Reply {
    let unauthorized = StatusCode::UNAUTHORIZED;
    match (ctx.surface, given) {
        (Surface::Ollama | Surface::OllamaV1, _) => {
            api_error(ctx, unauthorized, "unauthorized", None, None, None)
        }
        (Surface::OpenAi, None) => api_error(
            ctx,
            unauthorized,
            "You didn't provide an API key. You need to provide your API key in an Authorization \
             header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an \
             API key from https://platform.openai.com/account/api-keys.",
            Some("invalid_request_error"),
            None,
            None,
        ),
        (Surface::OpenAi, Some(key)) => {
            let masked = if key.len() > 8 && key.is_ascii() {
                format!(
                    "{}{}{}",
                    &key[..3],
                    "*".repeat(key.len() - 7),
                    &key[key.len() - 4..]
                )
            } else {
                "****".to_string()
            };
            api_error(
                ctx,
                unauthorized,
                &format!(
                    "Incorrect API key provided: {masked}. You can find your API key at \
                     https://platform.openai.com/account/api-keys."
                ),
                Some("invalid_request_error"),
                None,
                Some("invalid_api_key"),
            )
        }
        (Surface::Anthropic, None) => api_error(
            ctx,
            unauthorized,
            "x-api-key header is required",
            None,
            None,
            None,
        ),
        (Surface::Anthropic, Some(_)) => {
            api_error(ctx, unauthorized, "invalid x-api-key", None, None, None)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// Builds the HTTP response, applying the body-level faults and the chunk delay.
pub fn render(reply: Reply, ctx: &Ctx, fault: Option<&Fault>, chunk_delay: Duration) -> Response {
    let surface = ctx.surface;
    let (status, content_type, mut items, end, streaming) = match reply {
        Reply::Json(s, v) => (
            s,
            Some(surface.json_content_type()),
            vec![Bytes::from(v.to_string())],
            Vec::new(),
            false,
        ),
        Reply::Text(s, t) => (
            s,
            Some("text/plain; charset=utf-8"),
            vec![Bytes::from(t)],
            Vec::new(),
            false,
        ),
        Reply::Raw(s, ct, b) => (s, Some(ct), vec![b], Vec::new(), false),
        Reply::Empty(s) => (s, None, Vec::new(), Vec::new(), false),
        Reply::Stream { chunks, end } => (
            StatusCode::OK,
            Some(surface.stream_content_type()),
            chunks,
            end,
            true,
        ),
    };

    let mut builder = Response::builder().status(status);
    if let Some(ct) = content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    if streaming && surface.is_sse() {
        builder = builder.header(header::CACHE_CONTROL, "no-cache");
    }

    let body_fault = matches!(
        fault,
        Some(
            Fault::StreamCutAfter(_)
                | Fault::StreamStallAfter(_)
                | Fault::StreamEndAfter(_)
                | Fault::MalformedChunkAt(_)
                | Fault::NoDoneMarker
                | Fault::NoDoneMarkerSpaced
                | Fault::SlowFirstChunk(_)
                | Fault::StreamErrorAfter(_)
        )
    );
    if !streaming && !body_fault {
        let body = items.pop().map(Body::from).unwrap_or_else(Body::empty);
        return builder.body(body).expect("stand-in: response");
    }

    let mut plan = Plan {
        items,
        next: 0,
        first_delay: None,
        chunk_delay: if streaming {
            chunk_delay
        } else {
            Duration::ZERO
        },
        cut_after: None,
        stall_after: None,
        end_after: None,
        cancel: ctx.shared.cancel.clone(),
        finished: false,
    };
    // Cuts, stalls, early ends and NoDoneMarker never send the terminator.
    if !matches!(
        fault,
        Some(
            Fault::StreamCutAfter(_)
                | Fault::StreamStallAfter(_)
                | Fault::StreamEndAfter(_)
                | Fault::NoDoneMarker
                | Fault::NoDoneMarkerSpaced
                | Fault::StreamErrorAfter(_)
        )
    ) {
        plan.items.extend(end);
    }
    match fault {
        Some(Fault::StreamCutAfter(n)) => plan.cut_after = Some(*n),
        Some(Fault::StreamStallAfter(n)) => plan.stall_after = Some(*n),
        Some(Fault::StreamEndAfter(n)) => plan.end_after = Some(*n),
        Some(Fault::SlowFirstChunk(d)) => plan.first_delay = Some(*d),
        Some(Fault::StreamErrorAfter(n)) => {
            plan.items.truncate(*n);
            plan.items.push(error_event(surface));
        }
        Some(Fault::NoDoneMarkerSpaced) => {
            for chunk in &mut plan.items {
                *chunk = spaced(chunk);
            }
        }
        Some(Fault::MalformedChunkAt(i)) => {
            if let Some(chunk) = plan.items.get_mut(*i) {
                *chunk = malformed(chunk, surface, streaming);
            }
        }
        _ => {}
    }
    builder
        .body(Body::from_stream(plan.into_stream()))
        .expect("stand-in: response")
}

/// Compact JSON respaced as Python's `json.dumps` writes it: a space after every `,` and `:`
/// outside strings. (Applied to whole chunks: SSE field names have no `:` inside a JSON value.)
fn spaced(chunk: &Bytes) -> Bytes {
    let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 8);
    let (mut in_json, mut in_string, mut escaped) = (false, false, false);
    for &b in chunk.iter() {
        out.push(b);
        match b {
            b'\n' => in_json = false,
            b'{' | b'[' if !in_string => in_json = true,
            _ => {}
        }
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if in_json {
            match b {
                b'"' => in_string = true,
                b',' | b':' => out.push(b' '),
                _ => {}
            }
        }
    }
    Bytes::from(out)
}

/// A provider's own error event in the middle of a stream, as each one sends it.
fn error_event(surface: Surface) -> Bytes {
    Bytes::from_static(match surface {
        Surface::Anthropic => {
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
        }
        Surface::OpenAi | Surface::OllamaV1 => {
            b"data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n"
        }
        Surface::Ollama => {
            b"{\"error\":\"an error was encountered while running the model: unexpected EOF\"}\n"
        }
    })
}

/// Garbage that keeps the framing of the chunk it replaces.
fn malformed(chunk: &Bytes, surface: Surface, streaming: bool) -> Bytes {
    const GARBAGE: &str = "{\"standin\": this is not json";
    if !streaming {
        return Bytes::from_static(GARBAGE.as_bytes());
    }
    if !surface.is_sse() {
        return Bytes::from(format!("{GARBAGE}\n"));
    }
    let text = String::from_utf8_lossy(chunk);
    let event: String = text
        .lines()
        .filter(|l| l.starts_with("event:"))
        .map(|l| format!("{l}\n"))
        .collect();
    Bytes::from(format!("{event}data: {GARBAGE}\n\n"))
}

/// The chunks of a body and how to misbehave while sending them.
struct Plan {
    items: Vec<Bytes>,
    next: usize,
    first_delay: Option<Duration>,
    chunk_delay: Duration,
    cut_after: Option<usize>,
    stall_after: Option<usize>,
    end_after: Option<usize>,
    cancel: CancellationToken,
    finished: bool,
}

fn aborted(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!("stand-in: {what}"),
    )
}

impl Plan {
    /// One item per chunk: hyper writes each as its own HTTP chunk. An `Err` item makes hyper
    /// close the connection without terminating the chunked body.
    fn into_stream(self) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold(self, |mut p| async move {
            if p.finished {
                return None;
            }
            let i = p.next;
            let len = p.items.len();
            if p.cut_after.is_some_and(|n| i >= n.min(len)) {
                // Give hyper a moment to flush what was sent, then break the body.
                tokio::time::sleep(Duration::from_millis(20)).await;
                p.finished = true;
                return Some((Err(aborted("stream cut")), p));
            }
            if p.stall_after.is_some_and(|n| i >= n.min(len)) {
                p.cancel.cancelled().await;
                p.finished = true;
                return Some((Err(aborted("stopped while stalled")), p));
            }
            if i >= len || p.end_after.is_some_and(|n| i >= n) {
                return None;
            }
            let delay = match (i, p.first_delay) {
                (0, Some(d)) => d,
                (0, None) => Duration::ZERO,
                _ => p.chunk_delay,
            };
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = p.cancel.cancelled() => {
                        p.finished = true;
                        return Some((Err(aborted("stopped")), p));
                    }
                }
            }
            p.next += 1;
            Some((Ok(p.items[i].clone()), p))
        })
    }
}
