//! Errors the gateway itself produces, in the shape each client family expects.
//!
//! - OpenAI routes: `{"error":{"message","type","code"}}` with ngrok's code (`ERR_NGROK_3807`…).
//! - Anthropic `/v1/messages`: `{"type":"error","error":{"type","message","code"}}`.
//! - Ollama `/api/*`: `{"error":"…"}`.
//!
//! Every error also carries an `ngrok-error-code` header, as ngrok sets on its own errors.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;

pub use crate::routing::plan::codes;

/// Which client family a route serves; decides error shapes and stream framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
    Ollama,
}

/// Could not reach the provider (connection error mid-stream and similar).
pub const UPSTREAM_FAILED: (&str, u16) = ("ERR_NGROK_3800", 502);
/// aigw's own code for a missing or wrong inbound token (ngrok's AI Gateway API key error).
pub const UNAUTHORIZED: (&str, u16) = ("ERR_NGROK_27007", 401);
/// An unknown route.
pub const NOT_FOUND: (&str, u16) = ("AIGW_NOT_FOUND", 404);
/// A known route called with the wrong method.
pub const METHOD_NOT_ALLOWED: (&str, u16) = ("AIGW_METHOD_NOT_ALLOWED", 405);
/// A request body over `--max-body-bytes`: ngrok's invalid-body code, with status 413.
pub const BODY_TOO_LARGE: (&str, u16) = ("ERR_NGROK_3801", 413);
/// A request body not received within `--body-read-timeout`: aigw's code, status 408.
pub const BODY_TIMEOUT: (&str, u16) = ("AIGW_BODY_TIMEOUT", 408);

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl GatewayError {
    pub fn new((code, status): (&'static str, u16), message: impl Into<String>) -> Self {
        GatewayError {
            status,
            code,
            message: message.into(),
        }
    }

    /// OpenAI's `type`: client mistakes are `invalid_request_error`, the rest `gateway_error`.
    pub fn kind(&self) -> &'static str {
        match self.status {
            401 => "authentication_error",
            400..=499 => "invalid_request_error",
            _ => "gateway_error",
        }
    }

    pub fn body(&self, dialect: Dialect) -> serde_json::Value {
        match dialect {
            Dialect::OpenAi => {
                json!({"error": {"message": self.message, "type": self.kind(), "code": self.code}})
            }
            Dialect::Anthropic => {
                json!({"type": "error", "error": {"type": anthropic_type(self.status), "message": self.message, "code": self.code}})
            }
            Dialect::Ollama => json!({"error": format!("{} ({})", self.message, self.code)}),
        }
    }

    pub fn response(&self, dialect: Dialect) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut resp = Response::new(Body::from(self.body(dialect).to_string()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            super::names::NGROK_ERROR_CODE,
            HeaderValue::from_static(self.code),
        );
        resp
    }

    /// The last event of a stream that failed after it started: an SSE `data:` event for
    /// OpenAI clients, an `event: error` for Anthropic ones, an NDJSON line for Ollama ones.
    pub fn stream_event(&self, dialect: Dialect) -> Bytes {
        let body = self.body(dialect);
        match dialect {
            Dialect::OpenAi => Bytes::from(format!("data: {body}\n\n")),
            Dialect::Anthropic => Bytes::from(format!("event: error\ndata: {body}\n\n")),
            Dialect::Ollama => Bytes::from(format!("{body}\n")),
        }
    }
}

/// A provider refused the request itself (context length, content policy, a bad parameter): its
/// status, reason and code reach the client as the provider gave them, in the client's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
    /// The provider's `error.code` (or `error.type`), e.g. `context_length_exceeded`.
    pub code: Option<String>,
}

impl Refusal {
    pub fn body(&self, dialect: Dialect) -> serde_json::Value {
        match dialect {
            Dialect::OpenAi => json!({"error": {
                "message": self.message,
                "type": "invalid_request_error",
                "param": null,
                "code": self.code,
            }}),
            Dialect::Anthropic => json!({"type": "error", "error": {
                "type": anthropic_type(self.status),
                "message": self.message,
            }}),
            Dialect::Ollama => json!({"error": self.message}),
        }
    }

    pub fn response(&self, dialect: Dialect) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut resp = Response::new(Body::from(self.body(dialect).to_string()));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

fn anthropic_type(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let e = GatewayError::new(codes::ALL_FAILED, "all 2 candidates failed: a; b");
        assert_eq!(
            e.body(Dialect::OpenAi),
            json!({"error": {"message": "all 2 candidates failed: a; b", "type": "gateway_error", "code": "ERR_NGROK_3807"}})
        );
        assert_eq!(
            e.body(Dialect::Ollama),
            json!({"error": "all 2 candidates failed: a; b (ERR_NGROK_3807)"})
        );
        assert_eq!(e.response(Dialect::OpenAi).status(), 503);
        let ev = e.stream_event(Dialect::OpenAi);
        assert!(ev.starts_with(b"data: {\"error\""));
        assert!(ev.ends_with(b"\n\n"));
        let e = GatewayError::new(codes::INPUT_TOO_LARGE, "too big");
        assert_eq!(e.kind(), "invalid_request_error");
    }
}
