//! Talking to upstreams: the Ollama native API, OpenAI- and Anthropic-format model lists, and
//! connection timings. Used by `aigw probe`; serve and `explain --discover` can reuse the clients
//! (e.g. [`ollama::ollama_installed_models`] as the live catalog of an Ollama provider).

pub mod ollama;
pub mod openai;
pub mod timing;

use std::time::Duration;

use serde::Serialize;

/// Why a request to a provider did not give a usable answer. Each kind gets its own advice in
/// `aigw probe`, so keep them apart rather than folding them into one message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProbeError {
    #[error("invalid URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot resolve {host}: {reason}")]
    Dns { host: String, reason: String },
    #[error("cannot connect to {addr} (connection refused)")]
    Refused { addr: String },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("TLS with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("no answer from {url} within {after}")]
    Timeout { url: String, after: String },
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} did not answer JSON ({detail}): {snippet}")]
    NotJson {
        url: String,
        detail: String,
        snippet: String,
    },
    #[error("request to {url} failed: {reason}")]
    Http { url: String, reason: String },
}

impl ProbeError {
    /// A short stable name for JSON output and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeError::BadUrl { .. } => "bad_url",
            ProbeError::Dns { .. } => "dns",
            ProbeError::Refused { .. } => "refused",
            ProbeError::Connect { .. } => "connect",
            ProbeError::Tls { .. } => "tls",
            ProbeError::Timeout { .. } => "timeout",
            ProbeError::Status { .. } => "status",
            ProbeError::NotJson { .. } => "not_json",
            ProbeError::Http { .. } => "http",
        }
    }

    /// Classifies a reqwest error: timeouts, refused connections and TLS failures apart.
    pub fn from_reqwest(url: &str, timeout: Duration, e: &reqwest::Error) -> ProbeError {
        let chain = error_chain(e);
        let addr = authority(url);
        if e.is_timeout() {
            return ProbeError::Timeout {
                url: url.to_string(),
                after: crate::policy::duration::format(timeout),
            };
        }
        if is_refused(e) {
            return ProbeError::Refused { addr };
        }
        let lower = chain.to_ascii_lowercase();
        let tls_words = [
            "certificate",
            "tls",
            "handshake",
            "corrupt message",
            "invalidcontenttype",
            "alert",
        ];
        if url.starts_with("https://") && tls_words.iter().any(|w| lower.contains(w)) {
            return ProbeError::Tls {
                host: addr,
                reason: chain,
            };
        }
        if e.is_connect() {
            return ProbeError::Connect {
                addr,
                reason: chain,
            };
        }
        ProbeError::Http {
            url: url.to_string(),
            reason: chain,
        }
    }
}

fn is_refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// The messages of an error and its causes, joined, without reqwest's URL prefix repeated.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    // reqwest's own top message is "error sending request for url (…)"; the causes say more.
    if parts.len() > 1 {
        parts.remove(0);
    }
    parts.join(": ")
}

/// `host:port` of a URL, for messages.
pub fn authority(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port_or_known_default() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_string(),
            }
        }
        Err(_) => url.to_string(),
    }
}

/// One HTTP client for probing: no system proxy (local Ollama must not go through one), no
/// redirects (a redirect is a finding, not something to follow silently), bounded connect time.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .user_agent(concat!("aigw/", env!("CARGO_PKG_VERSION"), " (probe)"))
        .build()
        .expect("a client with these settings always builds")
}

/// The start of a body, for messages: one line, at most 120 characters.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 120 {
        let cut: String = one_line.chars().take(117).collect();
        format!("{cut}…")
    } else if one_line.is_empty() {
        "(empty body)".to_string()
    } else {
        one_line
    }
}

/// GET/POST helper: sends, checks the status, reads the body; non-2xx becomes `Status`.
pub(crate) async fn send(
    url: &str,
    timeout: Duration,
    req: reqwest::RequestBuilder,
) -> Result<bytes::Bytes, ProbeError> {
    let resp = req
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| ProbeError::from_reqwest(url, timeout, &e))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| ProbeError::from_reqwest(url, timeout, &e))?;
    if !status.is_success() {
        return Err(ProbeError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            body: error_text(&body),
        });
    }
    Ok(body)
}

/// The `error` of an Ollama (`{"error":"…"}`) or OpenAI (`{"error":{"message":"…"}}`) error body,
/// else the body's start.
pub fn error_text(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        match v.get("error") {
            Some(serde_json::Value::String(s)) => return s.clone(),
            Some(serde_json::Value::Object(o)) => {
                if let Some(serde_json::Value::String(s)) = o.get("message") {
                    return s.clone();
                }
            }
            _ => {}
        }
    }
    snippet(body)
}

/// Parses a JSON body, or says it was not JSON (a proxy's HTML page, a captive portal, …).
pub fn parse_json<T: serde::de::DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, ProbeError> {
    serde_json::from_slice(body).map_err(|e| ProbeError::NotJson {
        url: url.to_string(),
        detail: e.to_string(),
        snippet: snippet(body),
    })
}
