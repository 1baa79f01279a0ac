//! A typed client for Ollama's native API: `/`, `/api/version`, `/api/tags`, `/api/ps` and the
//! load-only form of `/api/generate` (pre-warming), plus Ollama's model-name rules.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{ProbeError, http_client, parse_json, send};

/// `GET /api/version`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Version {
    pub version: String,
}

/// `details` of a model in `/api/tags` and `/api/ps`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ModelDetails {
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub parameter_size: Option<String>,
    #[serde(default)]
    pub quantization_level: Option<String>,
}

/// One installed model (`GET /api/tags`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct InstalledModel {
    /// Display form, tag always shown: `llama3.2:latest`.
    pub name: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub modified_at: Option<String>,
    /// Bytes on disk.
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub details: ModelDetails,
}

/// One loaded model (`GET /api/ps`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct LoadedModel {
    pub name: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub size_vram: u64,
    /// RFC 3339 time at which Ollama unloads it.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub context_length: Option<u64>,
    #[serde(default)]
    pub details: ModelDetails,
}

#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
struct ModelList<T> {
    /// Ollama sends `[]`, never null; tolerate null anyway.
    #[serde(default = "Vec::new", deserialize_with = "null_as_empty")]
    models: Vec<T>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// The reply to a load-only `/api/generate`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct LoadReply {
    #[serde(default)]
    pub done_reason: Option<String>,
    /// Nanoseconds Ollama spent loading (absent when the model was already loaded).
    #[serde(default)]
    pub load_duration: Option<u64>,
}

/// A pre-warm's outcome: the reply and the wall-clock time it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Warmed {
    pub reply: LoadReply,
    pub took: Duration,
}

/// `keep_alive` as Ollama wants it: a Go duration string (`"5m"`, `"-1m"`) or a number of
/// seconds (`-1` keeps the model loaded forever, `0` unloads). A unitless string gives a 400
/// upstream, so numbers are sent as numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum KeepAlive {
    Duration(String),
    Seconds(i64),
}

/// A `keep_alive` that is neither a number of seconds nor a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid keep-alive `{text}`: {reason} (e.g. 5m, 1h, -1 to keep loaded)")]
pub struct KeepAliveError {
    pub text: String,
    pub reason: crate::policy::duration::DurationError,
}

impl KeepAlive {
    pub fn parse(text: &str) -> Result<KeepAlive, KeepAliveError> {
        let t = text.trim();
        if let Ok(n) = t.parse::<i64>() {
            return Ok(KeepAlive::Seconds(n));
        }
        let positive = t.strip_prefix('-').unwrap_or(t);
        crate::policy::duration::parse(positive)
            .map(|_| KeepAlive::Duration(t.to_string()))
            .map_err(|reason| KeepAliveError {
                text: text.to_string(),
                reason,
            })
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            KeepAlive::Duration(s) => serde_json::Value::String(s.clone()),
            KeepAlive::Seconds(n) => serde_json::Value::from(*n),
        }
    }
}

/// A client for one Ollama server.
#[derive(Debug, Clone)]
pub struct OllamaClient {
    base: String,
    http: reqwest::Client,
    timeout: Duration,
}

impl OllamaClient {
    /// `base_url` is the server's root (`http://localhost:11434`); a trailing `/` is ignored.
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        Self::with_client(base_url, timeout, http_client(timeout))
    }

    pub fn with_client(base_url: &str, timeout: Duration, http: reqwest::Client) -> Self {
        OllamaClient {
            base: base_url.trim_end_matches('/').to_string(),
            http,
            timeout,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /`: Ollama answers `Ollama is running`. Returns the body's first line.
    pub async fn root(&self) -> Result<String, ProbeError> {
        let url = self.url("/");
        let body = send(&url, self.timeout, self.http.get(&url)).await?;
        Ok(String::from_utf8_lossy(&body)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string())
    }

    /// `GET /api/version`.
    pub async fn version(&self) -> Result<Version, ProbeError> {
        let url = self.url("/api/version");
        let body = send(&url, self.timeout, self.http.get(&url)).await?;
        parse_json(&url, &body)
    }

    /// `GET /api/tags`: installed models, newest first.
    pub async fn tags(&self) -> Result<Vec<InstalledModel>, ProbeError> {
        let url = self.url("/api/tags");
        let body = send(&url, self.timeout, self.http.get(&url)).await?;
        Ok(parse_json::<ModelList<InstalledModel>>(&url, &body)?.models)
    }

    /// `GET /api/ps`: models loaded now.
    pub async fn ps(&self) -> Result<Vec<LoadedModel>, ProbeError> {
        let url = self.url("/api/ps");
        let body = send(&url, self.timeout, self.http.get(&url)).await?;
        Ok(parse_json::<ModelList<LoadedModel>>(&url, &body)?.models)
    }

    /// Loads a model without generating: `POST /api/generate {"model": M, "keep_alive": K}`, no
    /// prompt. `timeout` bounds the load (Ollama's own limit, OLLAMA_LOAD_TIMEOUT, is 5m).
    pub async fn load(
        &self,
        model: &str,
        keep_alive: &KeepAlive,
        timeout: Duration,
    ) -> Result<Warmed, ProbeError> {
        let url = self.url("/api/generate");
        let body = serde_json::json!({ "model": model, "keep_alive": keep_alive.to_json() });
        let start = Instant::now();
        let reply = send(&url, timeout, self.http.post(&url).json(&body)).await?;
        let took = start.elapsed();
        // A load reply is one object even when streaming; take the first line to be safe.
        let first = reply
            .split(|b| *b == b'\n')
            .find(|l| !l.iter().all(u8::is_ascii_whitespace))
            .unwrap_or(&[]);
        let value: serde_json::Value = parse_json(&url, first)?;
        if let Some(e) = value.get("error") {
            return Err(ProbeError::Status {
                url,
                status: 200,
                body: e.as_str().unwrap_or_default().to_string(),
            });
        }
        let reply: LoadReply = serde_json::from_value(value).unwrap_or(LoadReply {
            done_reason: None,
            load_duration: None,
        });
        Ok(Warmed { reply, took })
    }
}

/// The names of the models an Ollama server has installed, in its display form
/// (`llama3.2:latest`), newest first. A live catalog for an Ollama provider.
pub async fn ollama_installed_models(
    base_url: &str,
    timeout: Duration,
) -> Result<Vec<String>, ProbeError> {
    let models = OllamaClient::new(base_url, timeout).tags().await?;
    Ok(models.into_iter().map(|m| m.name).collect())
}

/// Ollama's canonical form of a model name, for comparing: case folded, the default host and
/// `library/` namespace dropped, `:latest` added when there is no tag. `Llama3.2`,
/// `library/llama3.2` and `registry.ollama.ai/library/llama3.2:latest` all give `llama3.2:latest`.
pub fn canonical_name(name: &str) -> String {
    let mut n = name.trim().to_ascii_lowercase();
    if let Some((base, _digest)) = n.split_once('@') {
        n = base.to_string();
    }
    for prefix in ["registry.ollama.ai/", "library/"] {
        if let Some(rest) = n.strip_prefix(prefix) {
            n = rest.to_string();
        }
    }
    let last = n.rsplit('/').next().unwrap_or(&n);
    if !last.contains(':') {
        n.push_str(":latest");
    }
    n
}

/// The name without its tag: `llama3.2:1b` → `llama3.2` (canonical form).
pub fn base_name(name: &str) -> String {
    let c = canonical_name(name);
    let slash = c.rfind('/').map(|i| i + 1).unwrap_or(0);
    match c[slash..].rfind(':') {
        Some(i) => c[..slash + i].to_string(),
        None => c,
    }
}

/// Whether two names are the same Ollama model.
pub fn same_model(a: &str, b: &str) -> bool {
    canonical_name(a) == canonical_name(b)
}

/// Installed models that differ from `wanted` only by tag (`llama3.2` vs `llama3.2:1b`).
pub fn close_matches<'a>(
    wanted: &str,
    installed: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    let base = base_name(wanted);
    installed
        .into_iter()
        .filter(|i| base_name(i) == base && !same_model(i, wanted))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_as_ollama_does() {
        assert_eq!(canonical_name("llama3.2"), "llama3.2:latest");
        assert_eq!(canonical_name("Llama3.2:LATEST"), "llama3.2:latest");
        assert_eq!(
            canonical_name("registry.ollama.ai/library/llama3.2"),
            "llama3.2:latest"
        );
        assert_eq!(canonical_name("jmorgan/foo:7b"), "jmorgan/foo:7b");
        assert_eq!(
            canonical_name("myreg.local:5000/team/foo"),
            "myreg.local:5000/team/foo:latest"
        );
        assert!(same_model("llama3.2", "llama3.2:latest"));
        assert!(!same_model("llama3.2", "llama3.2:1b"));
        assert_eq!(base_name("llama3.2:1b"), "llama3.2");
        assert_eq!(
            base_name("myreg.local:5000/team/foo:v1"),
            "myreg.local:5000/team/foo"
        );
        assert_eq!(
            close_matches("llama3.2:1b", ["llama3.2:latest", "mistral:latest"]),
            vec!["llama3.2:latest"]
        );
        assert_eq!(
            close_matches("llama3.2", ["llama3.2:latest"]),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn keep_alive_forms() {
        assert_eq!(
            KeepAlive::parse("5m").unwrap().to_json(),
            serde_json::json!("5m")
        );
        assert_eq!(
            KeepAlive::parse("-1").unwrap().to_json(),
            serde_json::json!(-1)
        );
        assert_eq!(
            KeepAlive::parse("-1m").unwrap().to_json(),
            serde_json::json!("-1m")
        );
        assert_eq!(
            KeepAlive::parse("0").unwrap().to_json(),
            serde_json::json!(0)
        );
        assert!(KeepAlive::parse("soon").is_err());
    }

    #[test]
    fn documented_shapes_parse() {
        let tags = r#"{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest","modified_at":"2025-05-04T17:37:44.706015396-07:00",
          "size":2019393189,"digest":"a80c","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"3.2B","quantization_level":"Q4_K_M"}}]}"#;
        let m: ModelList<InstalledModel> = serde_json::from_str(tags).unwrap();
        assert_eq!(m.models[0].details.parameter_size.as_deref(), Some("3.2B"));
        let empty: ModelList<LoadedModel> = serde_json::from_str(r#"{"models":null}"#).unwrap();
        assert!(empty.models.is_empty());
    }
}
