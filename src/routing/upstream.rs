//! Where a provider's requests go: base URLs, local mapping of ngrok-only hosts, URL joining.

use std::collections::HashMap;

use crate::policy::checks::host_of;

/// Ollama's address when nothing else is said.
pub const OLLAMA_DEFAULT_URL: &str = "http://localhost:11434";

/// Local replacements for provider base URLs (`--base-url ID=URL`, `AIGW_BASE_URL_<ID>`).
#[derive(Debug, Clone, Default)]
pub struct BaseUrlOverrides {
    by_id: HashMap<String, String>,
}

impl BaseUrlOverrides {
    /// From `ID=URL` flags; the environment fills in what the flags do not say.
    pub fn new(
        flags: &[(String, String)],
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut by_id: HashMap<String, String> = env
            .into_iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("AIGW_BASE_URL_")
                    .map(|id| (normalize(id), v))
            })
            .collect();
        for (id, url) in flags {
            by_id.insert(normalize(id), url.clone());
        }
        BaseUrlOverrides { by_id }
    }

    pub fn get(&self, provider_id: &str) -> Option<&str> {
        self.by_id.get(&normalize(provider_id)).map(String::as_str)
    }
}

/// Ids compare upper-cased with non-alphanumerics as `_`, as environment variable names must.
fn normalize(id: &str) -> String {
    crate::policy::secrets::env_word(id)
}

/// Percent-encodes all but RFC 3986's unreserved characters (query values, userinfo).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How a provider's effective base URL was decided, for notices and `explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlOrigin {
    /// As written in the policy or the catalog.
    AsConfigured,
    /// Replaced by `--base-url` or `AIGW_BASE_URL_<ID>`.
    Override { configured: Option<String> },
    /// An ngrok `.internal` Ollama endpoint, mapped to the local Ollama default.
    OllamaDefault { configured: String },
    /// An ngrok `.internal` endpoint nobody mapped: unreachable outside ngrok.
    UnmappedInternal,
}

/// The effective base URL of a provider.
pub fn resolve(
    provider_id: &str,
    configured: Option<&str>,
    overrides: &BaseUrlOverrides,
) -> (Option<String>, UrlOrigin) {
    if let Some(url) = overrides.get(provider_id) {
        return (
            Some(url.to_string()),
            UrlOrigin::Override {
                configured: configured.map(String::from),
            },
        );
    }
    let Some(url) = configured else {
        return (None, UrlOrigin::AsConfigured);
    };
    if is_internal(url) {
        if looks_like_ollama(provider_id, url) {
            return (
                Some(OLLAMA_DEFAULT_URL.to_string()),
                UrlOrigin::OllamaDefault {
                    configured: url.to_string(),
                },
            );
        }
        return (Some(url.to_string()), UrlOrigin::UnmappedInternal);
    }
    (Some(url.to_string()), UrlOrigin::AsConfigured)
}

/// `https://x.internal` exists only inside ngrok.
pub fn is_internal(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| host_of(rest).ends_with(".internal"))
        .unwrap_or(false)
}

/// A provider "looks like Ollama" when its id or host says so.
pub fn looks_like_ollama(provider_id: &str, url: &str) -> bool {
    let host = url.split_once("://").map(|(_, r)| host_of(r)).unwrap_or("");
    provider_id.to_ascii_lowercase().contains("ollama")
        || host.to_ascii_lowercase().contains("ollama")
}

/// Joins a base URL and the client's API path (DESIGN.md): a base URL with no path gets the full
/// path (`/v1/chat/completions`); one with a path gets the part after `/v1`
/// (`https://api.groq.com/openai/v1` + `/chat/completions`).
pub fn join(base: &str, client_path: &str) -> String {
    let base = base.trim_end_matches('/');
    let has_path = base
        .split_once("://")
        .map(|(_, rest)| rest.contains('/'))
        .unwrap_or(false);
    if has_path {
        let tail = client_path.strip_prefix("/v1").unwrap_or(client_path);
        format!("{base}{tail}")
    } else {
        format!("{base}{client_path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joining_follows_the_design() {
        assert_eq!(
            join("https://ollama.internal", "/v1/chat/completions"),
            "https://ollama.internal/v1/chat/completions"
        );
        assert_eq!(
            join("https://api.openai.com/v1/", "/v1/chat/completions"),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            join("https://api.groq.com/openai/v1", "/v1/chat/completions"),
            "https://api.groq.com/openai/v1/chat/completions"
        );
        assert_eq!(
            join("https://api.deepseek.com", "/v1/chat/completions"),
            "https://api.deepseek.com/v1/chat/completions"
        );
        assert_eq!(
            join(
                "https://generativelanguage.googleapis.com/v1beta/openai/",
                "/v1/chat/completions"
            ),
            "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"
        );
    }

    #[test]
    fn internal_ollama_maps_to_localhost() {
        let none = BaseUrlOverrides::default();
        let (url, origin) = resolve("ollama", Some("https://ollama.internal"), &none);
        assert_eq!(url.as_deref(), Some(OLLAMA_DEFAULT_URL));
        assert!(matches!(origin, UrlOrigin::OllamaDefault { .. }));
        let (_, origin) = resolve("vllm", Some("https://vllm.internal"), &none);
        assert_eq!(origin, UrlOrigin::UnmappedInternal);
    }

    #[test]
    fn flags_beat_environment() {
        let o = BaseUrlOverrides::new(
            &[("ollama-gpu-1".into(), "http://127.0.0.1:1".into())],
            [
                (
                    "AIGW_BASE_URL_OLLAMA_GPU_1".into(),
                    "http://127.0.0.1:2".into(),
                ),
                ("AIGW_BASE_URL_VLLM".into(), "http://127.0.0.1:3".into()),
            ],
        );
        assert_eq!(o.get("ollama-gpu-1"), Some("http://127.0.0.1:1"));
        assert_eq!(o.get("vllm"), Some("http://127.0.0.1:3"));
    }
}
