//! OpenAI- and Anthropic-format providers: `GET /v1/models`.

use std::time::Duration;

use serde::Deserialize;

use super::{ProbeError, parse_json, send};
use crate::policy::ApiFormat;
use crate::routing::upstream::join;

/// The `anthropic-version` header sent when listing Anthropic models.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Debug, Deserialize)]
struct ModelsPage {
    /// Some OpenAI-compatible servers send `data: null` for no models.
    #[serde(default)]
    data: Option<Vec<ModelEntry>>,
}

#[derive(Debug, Deserialize)]
struct ModelEntry {
    id: String,
}

/// The URL of the model list for a base URL (joined as requests are: `https://api.openai.com`
/// → `/v1/models`; `https://api.groq.com/openai/v1` → `/openai/v1/models`).
pub fn models_url(base_url: &str) -> String {
    join(base_url, "/v1/models")
}

/// Builds the `GET /v1/models` request with the format's auth headers. The key is never logged.
pub fn models_request(
    http: &reqwest::Client,
    base_url: &str,
    format: ApiFormat,
    key: Option<&str>,
) -> reqwest::RequestBuilder {
    // Anthropic pages at 20 models by default; ask for all of them.
    let url = match format {
        ApiFormat::OpenAi => models_url(base_url),
        ApiFormat::Anthropic => format!("{}?limit=1000", models_url(base_url)),
    };
    let mut req = http.get(url);
    if let Some(key) = key {
        req = match format {
            ApiFormat::OpenAi => req.bearer_auth(key),
            ApiFormat::Anthropic => req
                .header("x-api-key", key)
                .header("anthropic-version", ANTHROPIC_VERSION),
        };
    }
    req
}

/// Model ids from `GET /v1/models` (first page).
pub async fn list_models(
    http: &reqwest::Client,
    base_url: &str,
    format: ApiFormat,
    key: Option<&str>,
    timeout: Duration,
) -> Result<Vec<String>, ProbeError> {
    let url = models_url(base_url);
    let req = models_request(http, base_url, format, key);
    let body = send(&url, timeout, req).await?;
    parse_models(&url, &body)
}

/// Parses a `/v1/models` body.
pub fn parse_models(url: &str, body: &[u8]) -> Result<Vec<String>, ProbeError> {
    let page: ModelsPage = parse_json(url, body)?;
    Ok(page
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lists() {
        assert_eq!(
            models_url("https://api.openai.com"),
            "https://api.openai.com/v1/models"
        );
        assert_eq!(
            models_url("https://api.groq.com/openai/v1"),
            "https://api.groq.com/openai/v1/models"
        );
        let ids = parse_models(
            "u",
            br#"{"object":"list","data":[{"id":"gpt-4o","object":"model"}]}"#,
        )
        .unwrap();
        assert_eq!(ids, vec!["gpt-4o"]);
        assert!(parse_models("u", br#"{"data":null}"#).unwrap().is_empty());
        assert_eq!(parse_models("u", b"<html>").unwrap_err().kind(), "not_json");
    }
}
