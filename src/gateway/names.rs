//! Header names aigw reads or sets on every request, as constants.
//!
//! A `&str` name is parsed and validated on each lookup (`HeaderMap::get("x-…")`); these are
//! built at compile time, so a lookup only hashes.

use axum::http::{HeaderName, HeaderValue};

pub const X_AIGW_ATTEMPTS: HeaderName = HeaderName::from_static("x-aigw-attempts");
/// Milliseconds the request waited for a `--max-in-flight` slot.
pub const X_AIGW_QUEUE_MS: HeaderName = HeaderName::from_static("x-aigw-queue-ms");
pub const X_AIGW_PROVIDER: HeaderName = HeaderName::from_static("x-aigw-provider");
pub const X_AIGW_MODEL: HeaderName = HeaderName::from_static("x-aigw-model");
pub const X_AIGW_TOKEN: HeaderName = HeaderName::from_static("x-aigw-token");
pub const X_AIGW_VIA: HeaderName = HeaderName::from_static("x-aigw-via");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
pub const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
pub const NGROK_ERROR_CODE: HeaderName = HeaderName::from_static("ngrok-error-code");

/// `x-aigw-attempts` for the usual counts without formatting a number.
pub fn attempts_value(n: usize) -> HeaderValue {
    static SMALL: [HeaderValue; 10] = [
        HeaderValue::from_static("0"),
        HeaderValue::from_static("1"),
        HeaderValue::from_static("2"),
        HeaderValue::from_static("3"),
        HeaderValue::from_static("4"),
        HeaderValue::from_static("5"),
        HeaderValue::from_static("6"),
        HeaderValue::from_static("7"),
        HeaderValue::from_static("8"),
        HeaderValue::from_static("9"),
    ];
    SMALL
        .get(n)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

#[cfg(test)]
mod tests {
    #[test]
    fn attempts_values_are_the_numbers() {
        for n in [0, 1, 9, 10, 123] {
            assert_eq!(super::attempts_value(n).to_str().unwrap(), n.to_string());
        }
    }
}
