//! `aigw probe`: talk to each provider before traffic does, and say what to fix.
//!
//! [`targets::select`] decides what to probe; [`probe`] runs the checks of one target in order
//! (URL → DNS → TCP → first byte → API), each failure becoming a [`Finding`] with a concrete
//! fix; [`crate::render::probe`] prints the [`Report`]. The network work lives in
//! [`crate::providers`].

pub mod targets;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::policy::ApiFormat;
use crate::policy::secrets::redact;
use crate::providers::ollama::{self, InstalledModel, KeepAlive, LoadedModel, OllamaClient};
use crate::providers::timing::{self, Target, Timings, ms};
use crate::providers::{ProbeError, http_client, openai};
use crate::routing::upstream::UrlOrigin;
pub use targets::{Keys, Kind, ProbeTarget};

/// Version of the JSON document; bump on any incompatible change.
pub const JSON_FORMAT: &str = "aigw-probe/1";

/// How to probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Budget of each check (DNS, connect, each request).
    pub timeout: Duration,
    /// Pre-warm the policy's installed models on Ollama providers.
    pub warm: bool,
    pub keep_alive: KeepAlive,
    /// Budget of one pre-warm (loading can take minutes): `max(timeout, 5m)` from the CLI, the
    /// same as Ollama's own OLLAMA_LOAD_TIMEOUT.
    pub warm_timeout: Duration,
}

/// Live progress of the slow steps (pre-warming), for a spinner or plain lines.
pub trait Progress: Send + Sync {
    /// A step starts; the returned handle is told how it ended.
    fn start(&self, label: &str) -> Box<dyn ProgressItem>;
}

pub trait ProgressItem: Send {
    fn finish(self: Box<Self>, ok: bool, message: &str);
}

/// No progress output (library use, tests, JSON to a pipe).
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _label: &str) -> Box<dyn ProgressItem> {
        Box::new(SilentItem)
    }
}

struct SilentItem;

impl ProgressItem for SilentItem {
    fn finish(self: Box<Self>, _ok: bool, _message: &str) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A check failed: traffic to this provider or model would fail (exit 1).
    Error,
    /// Likely to bite, but traffic can flow.
    Warning,
    /// For information.
    Note,
}

/// Something probe found, with what to do about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable short name, e.g. `refused`, `model-not-installed`.
    pub code: &'static str,
    pub message: String,
    pub fix: Option<String>,
    /// The model it concerns, if any.
    pub model: Option<String>,
}

impl Finding {
    fn new(severity: Severity, code: &'static str, message: impl Into<String>) -> Self {
        Finding {
            severity,
            code,
            message: message.into(),
            fix: None,
            model: None,
        }
    }
    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
    fn model(mut self, m: &str) -> Self {
        self.model = Some(m.to_string());
        self
    }
}

/// Loaded-now facts from `/api/ps`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Loaded {
    pub size_vram: u64,
    pub size: u64,
    pub expires_at: Option<String>,
    pub context_length: Option<u64>,
}

/// Outcome of a pre-warm.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Warm {
    /// Not a candidate (not installed, or no warm-up for this kind of provider).
    NotApplicable,
    /// Installed but not in the policy: not warmed.
    Skipped,
    /// `--no-warm`.
    Disabled,
    /// Loaded; `ms` is the wall-clock time, `load_ms` what Ollama reported.
    Done {
        ms: f64,
        load_ms: Option<f64>,
    },
    Failed {
        error: String,
    },
}

/// One line of a provider's model table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRow {
    /// The policy's id, or the installed name for a model the policy does not list.
    pub id: String,
    pub in_policy: bool,
    /// The name the provider knows it by (`llama3.2:latest`); `None`: not installed / not listed.
    pub installed: Option<String>,
    pub parameter_size: Option<String>,
    pub quantization: Option<String>,
    pub size_bytes: Option<u64>,
    pub modified_at: Option<String>,
    /// `None`: not loaded (or unknown for this kind of provider).
    pub loaded: Option<Loaded>,
    pub warm: Warm,
}

/// The server answering at the URL.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Server {
    pub product: String,
    pub version: Option<String>,
}

/// Everything probe learned about one provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderReport {
    pub id: String,
    pub kind: Kind,
    pub in_policy: bool,
    pub configured_url: Option<String>,
    pub url: Option<String>,
    pub url_origin: &'static str,
    /// The address the TCP connect reached.
    pub address: Option<String>,
    pub reachable: bool,
    /// `Some(true)`: an https URL whose TLS handshake succeeded.
    pub tls: Option<bool>,
    pub timings: Timings,
    pub server: Option<Server>,
    /// `api_keys` state: `passthrough`, `resolved`, `unresolved`.
    pub keys: &'static str,
    /// For API-format providers: how many models `/v1/models` listed.
    pub listed_models: Option<usize>,
    pub models: Vec<ModelRow>,
    pub findings: Vec<Finding>,
    #[serde(skip)]
    pub origin: UrlOrigin,
}

impl ProviderReport {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }
}

/// Counts over every provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub providers: usize,
    pub errors: usize,
    pub warnings: usize,
    pub notes: usize,
    /// No errors: every check passed.
    pub ok: bool,
}

/// The whole result, as `--format json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub format: &'static str,
    pub policy: String,
    pub providers: Vec<ProviderReport>,
    pub summary: Summary,
}

impl Report {
    pub fn new(policy: String, providers: Vec<ProviderReport>) -> Report {
        let count = |s: Severity| {
            providers
                .iter()
                .flat_map(|p| &p.findings)
                .filter(|f| f.severity == s)
                .count()
        };
        let summary = Summary {
            providers: providers.len(),
            errors: count(Severity::Error),
            warnings: count(Severity::Warning),
            notes: count(Severity::Note),
            ok: count(Severity::Error) == 0,
        };
        Report {
            format: JSON_FORMAT,
            policy,
            providers,
            summary,
        }
    }
}

/// Probes every target in order.
pub async fn run(
    policy: String,
    targets: &[ProbeTarget],
    opts: &ProbeOptions,
    progress: &dyn Progress,
) -> Report {
    let mut reports = Vec::new();
    for t in targets {
        reports.push(probe(t, opts, progress).await);
    }
    Report::new(policy, reports)
}

/// Probes one provider.
pub async fn probe(
    t: &ProbeTarget,
    opts: &ProbeOptions,
    progress: &dyn Progress,
) -> ProviderReport {
    let mut r = ProviderReport {
        id: t.id.clone(),
        kind: t.kind,
        in_policy: t.in_policy,
        configured_url: t.configured_url.clone(),
        url: t.url.clone(),
        url_origin: match t.origin {
            UrlOrigin::AsConfigured => "as_configured",
            UrlOrigin::Override { .. } => "override",
            UrlOrigin::OllamaDefault { .. } => "ollama_default",
            UrlOrigin::UnmappedInternal => "unmapped_internal",
        },
        address: None,
        reachable: false,
        tls: None,
        timings: Timings::default(),
        server: None,
        keys: match t.keys {
            Keys::Passthrough => "passthrough",
            Keys::Resolved(_) => "resolved",
            Keys::Unresolved(_) => "unresolved",
        },
        listed_models: None,
        models: Vec::new(),
        findings: Vec::new(),
        origin: t.origin.clone(),
    };
    let Some(url) = t.url.clone() else {
        r.findings.push(
            Finding::new(
                Severity::Error,
                "no-base-url",
                format!("{} has no base URL", t.id),
            )
            .fix(format!(
                "set `base_url` for it in the policy, or map it: --base-url {}=URL",
                t.id
            )),
        );
        return r;
    };
    if t.origin == UrlOrigin::UnmappedInternal {
        r.findings.push(
            Finding::new(
                Severity::Error,
                "unmapped-internal",
                format!("{url} is an ngrok internal endpoint: it exists only inside ngrok, not on this machine"),
            )
            .fix(format!("map it to where the service listens: --base-url {}=http://HOST:PORT (or AIGW_BASE_URL_{})", t.id, env_id(&t.id))),
        );
        return r;
    }
    if let UrlOrigin::OllamaDefault { configured } = &t.origin {
        r.findings.push(
            Finding::new(
                Severity::Note,
                "internal-mapped",
                format!("{configured} exists only inside ngrok; probing the local Ollama at {url} instead"),
            )
            .fix(format!("to probe another machine: --base-url {}=http://HOST:11434", t.id)),
        );
    }
    if t.disabled {
        r.findings.push(
            Finding::new(
                Severity::Note,
                "disabled",
                format!(
                    "{} is disabled in the policy: serve does not route to it",
                    t.id
                ),
            )
            .fix("remove `disabled: true` to use it"),
        );
    }
    if let Keys::Unresolved(missing) = &t.keys {
        r.findings.push(
            Finding::new(
                Severity::Error,
                "key-unresolved",
                format!(
                    "an API key of {} does not resolve: {}",
                    t.id,
                    missing.join(", ")
                ),
            )
            .fix("set the variable(s), or pass --secrets FILE with `vault: {name: value}`"),
        );
    }
    let target = match Target::parse(&url) {
        Ok(x) => x,
        Err(e) => {
            r.findings.push(
                Finding::new(Severity::Error, "bad-url", e.to_string())
                    .fix("fix `base_url` in the policy or the --base-url flag"),
            );
            return r;
        }
    };
    match timing::dns_and_connect(&target, opts.timeout, &mut r.timings).await {
        Ok(addr) => r.address = Some(addr.to_string()),
        Err(e) => {
            r.findings.push(connection_finding(&e, t, &url));
            return r;
        }
    }
    r.timings.first_byte_includes_tls = target.is_tls();
    match t.kind {
        Kind::Ollama => ollama_checks(&mut r, t, &url, None, opts, progress).await,
        Kind::OpenAi => api_checks(&mut r, t, &url, ApiFormat::OpenAi, opts).await,
        Kind::Anthropic => api_checks(&mut r, t, &url, ApiFormat::Anthropic, opts).await,
        Kind::Detect => {
            let client = OllamaClient::new(&url, opts.timeout);
            let start = Instant::now();
            let root = client.root().await;
            if let Ok(body) = &root
                && body.starts_with("Ollama is running")
            {
                r.kind = Kind::Ollama;
                r.timings.first_byte_ms = Some(ms(start.elapsed()));
                ollama_checks(&mut r, t, &url, Some(root), opts, progress).await;
            } else {
                r.kind = Kind::OpenAi;
                api_checks(&mut r, t, &url, ApiFormat::OpenAi, opts).await;
            }
        }
    }
    if target.is_tls() && r.reachable {
        r.tls = Some(true);
    }
    r
}

/// A connection error on a request made right after our own TCP connect to the same address
/// succeeded: on https, what failed is TLS.
fn after_tcp(e: ProbeError, url: &str) -> ProbeError {
    match e {
        ProbeError::Connect { addr, reason } if url.starts_with("https://") => {
            ProbeError::Tls { host: addr, reason }
        }
        other => other,
    }
}

fn env_id(id: &str) -> String {
    crate::policy::secrets::env_word(id)
}

/// A failure to reach the provider at all, with the fix for each cause.
fn connection_finding(e: &ProbeError, t: &ProbeTarget, url: &str) -> Finding {
    let ollama = t.kind == Kind::Ollama;
    // A bare URL on the command line has no provider id to map.
    let map = if t.id.contains("://") {
        format!(
            "or probe another address: aigw probe http://HOST:{}",
            if ollama { "11434" } else { "PORT" }
        )
    } else if ollama {
        format!("or map the provider: --base-url {}=http://HOST:11434", t.id)
    } else {
        format!("or map the provider: --base-url {}=URL", t.id)
    };
    match e {
        ProbeError::Refused { addr } => {
            let fix = if ollama {
                format!("is `ollama serve` running? {}", capitalise(&map))
            } else {
                format!("is the server running and listening on that port? {}", capitalise(&map))
            };
            Finding::new(Severity::Error, "refused", format!("cannot connect to {url} ({addr}: connection refused)")).fix(fix)
        }
        ProbeError::Timeout { after, .. } => Finding::new(Severity::Error, "timeout", format!("no answer from {url} within {after}"))
            .fix("a firewall may drop the packets, or the host is down; raise --timeout if it is only slow"),
        ProbeError::Dns { host, reason } => Finding::new(Severity::Error, "dns", format!("cannot resolve {host}: {reason}"))
            .fix(format!("check the host name in base_url, {map}")),
        ProbeError::Tls { reason, .. } => Finding::new(Severity::Error, "tls", format!("TLS with {url} failed: {reason}"))
            .fix("check the scheme (http:// vs https://) and the server's certificate"),
        ProbeError::BadUrl { .. } => Finding::new(Severity::Error, "bad-url", e.to_string()).fix("fix `base_url` or the --base-url flag"),
        ProbeError::Connect { addr, reason } => {
            Finding::new(Severity::Error, "connect", format!("cannot connect to {url} ({addr}): {reason}")).fix(format!("check the address, {map}"))
        }
        other => response_finding(other, t),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A request that reached the server but got a bad answer.
fn response_finding(e: &ProbeError, t: &ProbeTarget) -> Finding {
    match e {
        ProbeError::Status { url, status: 404, body } => Finding::new(
            Severity::Error,
            "http-404",
            format!("{url} answered 404 ({body}): no such API at this address"),
        )
        .fix(if t.kind == Kind::Ollama {
            "base_url must be the Ollama server's root (http://HOST:11434), without /api or /v1".to_string()
        } else {
            "check base_url: does the provider need a path such as /v1 or /openai/v1?".to_string()
        }),
        ProbeError::Status { url, status: 403, body } if t.kind == Kind::Ollama && body == "(empty body)" => Finding::new(
            Severity::Error,
            "http-403",
            format!("{url} answered 403 with an empty body: Ollama refuses requests whose Host is not local"),
        )
        .fix("reach Ollama through a local address (localhost, 127.0.0.1), or start it with OLLAMA_HOST=0.0.0.0"),
        ProbeError::Status { url, status, body } => {
            Finding::new(Severity::Error, "http-status", format!("{url} answered HTTP {status}: {body}")).fix("see the server's logs")
        }
        ProbeError::NotJson { url, snippet, .. } => Finding::new(
            Severity::Error,
            "not-json",
            format!("{url} answered something that is not JSON: «{snippet}»"),
        )
        .fix(if t.kind == Kind::Ollama {
            "another server (a proxy, a web page) answers at this address; point base_url at Ollama"
        } else {
            "another server (a proxy, a login page) answers at this address; check base_url"
        }),
        ProbeError::Timeout { url, after } => Finding::new(Severity::Error, "timeout", format!("{url} accepted the connection but sent no answer within {after}"))
            .fix("the server is up but stuck or very slow; check its logs, or raise --timeout"),
        other => connection_finding(other, t, t.url.as_deref().unwrap_or("")),
    }
}

async fn ollama_checks(
    r: &mut ProviderReport,
    t: &ProbeTarget,
    url: &str,
    root: Option<Result<String, ProbeError>>,
    opts: &ProbeOptions,
    progress: &dyn Progress,
) {
    let client = OllamaClient::with_client(url, opts.timeout, http_client(opts.timeout));
    let root = match root {
        Some(x) => x,
        None => {
            let start = Instant::now();
            let x = client.root().await;
            r.timings.first_byte_ms = Some(ms(start.elapsed()));
            x
        }
    };
    match root {
        Ok(body) => {
            r.reachable = true;
            if !body.starts_with("Ollama is running") {
                r.findings.push(
                    Finding::new(Severity::Warning, "not-ollama-root", format!("GET {url}/ answered «{}», not «Ollama is running»", crate::providers::snippet(body.as_bytes())))
                        .fix("check that base_url points at Ollama itself and not at a proxy in front of it"),
                );
            }
        }
        Err(e) => {
            let forbidden = matches!(&e, ProbeError::Status { status: 403, .. });
            if forbidden || !matches!(e, ProbeError::Status { .. } | ProbeError::NotJson { .. }) {
                let f = response_finding(&after_tcp(e, url), t);
                if f.code == "tls" {
                    r.tls = Some(false);
                }
                r.findings.push(f);
                return;
            }
            r.reachable = true;
            r.findings.push(
                Finding::new(Severity::Warning, "not-ollama-root", format!("GET {url}/: {e}"))
                    .fix("Ollama answers `GET /` with «Ollama is running»; check that base_url points at Ollama"),
            );
        }
    }
    match client.version().await {
        Ok(v) => {
            if v.version == "0.0.0" {
                r.findings.push(Finding::new(
                    Severity::Note,
                    "dev-build",
                    "Ollama reports version 0.0.0 (a development build)",
                ));
            }
            r.server = Some(Server {
                product: "Ollama".into(),
                version: Some(v.version),
            });
        }
        Err(e) => {
            r.findings.push(response_finding(&e, t));
            return;
        }
    }
    let installed = match client.tags().await {
        Ok(m) => m,
        Err(e) => {
            r.findings.push(response_finding(&e, t));
            return;
        }
    };
    let loaded = match client.ps().await {
        Ok(l) => l,
        Err(e) => {
            let mut f = response_finding(&e, t);
            f.severity = Severity::Warning;
            f.code = "ps-failed";
            r.findings.push(f);
            Vec::new()
        }
    };
    diff_models(r, t, &installed, &loaded, opts);
    if opts.warm && warm_models(r, &client, opts, progress).await > 0 {
        // Show what the warm-up left loaded (and until when), not the state before it.
        if let Ok(after) = client.ps().await {
            for row in &mut r.models {
                if let Some(name) = &row.installed {
                    row.loaded = loaded_of(name, &after);
                }
            }
        }
    }
}

fn loaded_of(name: &str, loaded: &[LoadedModel]) -> Option<Loaded> {
    loaded
        .iter()
        .find(|l| ollama::same_model(&l.name, name))
        .map(|l| Loaded {
            size_vram: l.size_vram,
            size: l.size,
            expires_at: l.expires_at.clone(),
            context_length: l.context_length,
        })
}

fn installed_row(
    id: &str,
    in_policy: bool,
    m: &InstalledModel,
    loaded: &[LoadedModel],
    warm: Warm,
) -> ModelRow {
    ModelRow {
        id: id.to_string(),
        in_policy,
        installed: Some(m.name.clone()),
        parameter_size: m.details.parameter_size.clone(),
        quantization: m.details.quantization_level.clone(),
        size_bytes: Some(m.size),
        modified_at: m.modified_at.clone(),
        loaded: loaded_of(&m.name, loaded),
        warm,
    }
}

/// The policy's models against what Ollama has installed.
fn diff_models(
    r: &mut ProviderReport,
    t: &ProbeTarget,
    installed: &[InstalledModel],
    loaded: &[LoadedModel],
    opts: &ProbeOptions,
) {
    let warm_state = if opts.warm {
        Warm::NotApplicable
    } else {
        Warm::Disabled
    };
    for id in &t.models {
        match installed.iter().find(|m| ollama::same_model(&m.name, id)) {
            Some(m) => r
                .models
                .push(installed_row(id, true, m, loaded, warm_state.clone())),
            None => {
                r.models.push(ModelRow {
                    id: id.clone(),
                    in_policy: true,
                    installed: None,
                    parameter_size: None,
                    quantization: None,
                    size_bytes: None,
                    modified_at: None,
                    loaded: None,
                    warm: Warm::NotApplicable,
                });
                let close = ollama::close_matches(id, installed.iter().map(|m| m.name.as_str()));
                let mut msg = format!("{id} is in the policy but not installed");
                if !id.contains(':') {
                    msg.push_str(&format!(" (Ollama reads `{id}` as `{id}:latest`)"));
                }
                if !close.is_empty() {
                    msg.push_str(&format!(
                        "; installed with another tag: {}",
                        close.join(", ")
                    ));
                }
                let mut fix = format!("ollama pull {id}");
                if let Some(c) = close.first() {
                    let short = c.strip_suffix(":latest").unwrap_or(c);
                    fix.push_str(&format!(", or use the installed one: `- id: \"{short}\"`"));
                }
                r.findings.push(
                    Finding::new(Severity::Error, "model-not-installed", msg)
                        .fix(fix)
                        .model(id),
                );
            }
        }
    }
    for m in installed {
        if t.models.iter().any(|id| ollama::same_model(id, &m.name)) {
            continue;
        }
        let warm = if opts.warm {
            Warm::Skipped
        } else {
            Warm::Disabled
        };
        let short = m.name.strip_suffix(":latest").unwrap_or(&m.name);
        r.models.push(installed_row(short, false, m, loaded, warm));
        if t.in_policy {
            let short = m.name.strip_suffix(":latest").unwrap_or(&m.name);
            r.findings.push(
                Finding::new(Severity::Note, "model-not-in-policy", format!("{} is installed but not in the policy", m.name))
                    .fix(if t.unlisted_models_allowed {
                        format!("add `- id: \"{short}\"` to use it by name (clients can still ask for `{}:{short}`)", t.id)
                    } else {
                        format!("add `- id: \"{short}\"` to use it (only_allow_configured_models is on: clients cannot reach it now)")
                    })
                    .model(&m.name),
            );
        }
    }
}

/// Pre-warms the installed policy models; returns how many loaded.
async fn warm_models(
    r: &mut ProviderReport,
    client: &OllamaClient,
    opts: &ProbeOptions,
    progress: &dyn Progress,
) -> usize {
    let mut warmed = 0;
    for i in 0..r.models.len() {
        let row = &r.models[i];
        if !row.in_policy || row.installed.is_none() {
            continue;
        }
        let model = row.id.clone();
        let item = progress.start(&format!("{}: warming {model}", r.id));
        match client
            .load(&model, &opts.keep_alive, opts.warm_timeout)
            .await
        {
            Ok(w) => {
                let took = ms(w.took);
                item.finish(
                    true,
                    &format!("{}: {model} loaded in {}", r.id, human_ms(took)),
                );
                r.models[i].warm = Warm::Done {
                    ms: took,
                    load_ms: w.reply.load_duration.map(|ns| ms(Duration::from_nanos(ns))),
                };
                warmed += 1;
            }
            Err(e) => {
                item.finish(false, &format!("{}: {model} failed to load", r.id));
                r.models[i].warm = Warm::Failed {
                    error: e.to_string(),
                };
                let f = match &e {
                    ProbeError::Status { status: 404, body, .. } => {
                        Finding::new(Severity::Error, "warm-model-not-found", format!("Ollama could not find {model} when loading it: {body}"))
                            .fix(format!("ollama pull {model}"))
                    }
                    ProbeError::Timeout { after, .. } => Finding::new(Severity::Error, "warm-timeout", format!("loading {model} took longer than {after}"))
                        .fix("it may still be loading (check `ollama ps`); raise per_request_timeout for first requests"),
                    ProbeError::Status { status, body, .. } => Finding::new(
                        Severity::Error,
                        "warm-failed",
                        format!("Ollama failed to load {model} (HTTP {status}): {body}"),
                    )
                    .fix("out of memory? Try a smaller or more quantized model (e.g. llama3.2:1b), or see `ollama serve`'s log"),
                    ProbeError::NotJson { snippet, .. } => Finding::new(
                        Severity::Error,
                        "warm-not-json",
                        format!("loading {model} gave an answer that is not JSON: «{snippet}»"),
                    )
                    .fix("something other than Ollama answers /api/generate; check base_url"),
                    other => Finding::new(Severity::Error, "warm-failed", format!("loading {model} failed: {other}")),
                };
                r.findings.push(f.model(&model));
            }
        }
    }
    warmed
}

/// `/v1/models` for OpenAI- and Anthropic-format providers: reachability, TLS, key, models.
async fn api_checks(
    r: &mut ProviderReport,
    t: &ProbeTarget,
    url: &str,
    format: ApiFormat,
    opts: &ProbeOptions,
) {
    let http = http_client(opts.timeout);
    let key = match &t.keys {
        Keys::Resolved(k) => k.first().map(String::as_str),
        _ => None,
    };
    let models_url = openai::models_url(url);
    let start = Instant::now();
    let sent = openai::models_request(&http, url, format, key)
        .timeout(opts.timeout)
        .send()
        .await;
    r.timings.first_byte_ms = Some(ms(start.elapsed()));
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) => {
            let e = after_tcp(ProbeError::from_reqwest(&models_url, opts.timeout, &e), url);
            let f = match e {
                ProbeError::Timeout { .. } => response_finding(&e, t),
                _ => connection_finding(&e, t, url),
            };
            if f.code == "tls" {
                r.tls = Some(false);
            }
            r.findings.push(f);
            return;
        }
    };
    r.reachable = true;
    let product = match format {
        ApiFormat::OpenAi => "OpenAI-format API",
        ApiFormat::Anthropic => "Anthropic-format API",
    };
    r.server = Some(Server {
        product: product.to_string(),
        version: None,
    });
    let status = resp.status().as_u16();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            r.findings.push(response_finding(
                &ProbeError::from_reqwest(&models_url, opts.timeout, &e),
                t,
            ));
            return;
        }
    };
    match status {
        200..=299 => {}
        401 | 403 if key.is_none() => {
            // With an unresolved key the error is already reported; otherwise: passthrough.
            if !matches!(t.keys, Keys::Unresolved(_)) {
                r.findings.push(
                Finding::new(
                    Severity::Note,
                    "no-key",
                    format!("reachable; no API key in the policy, so clients' keys pass through and {models_url} was not checked"),
                )
                .fix(format!("add `api_keys` to {} in the policy to let probe check its models", t.id)),
                );
            }
            policy_rows(r, t, None);
            return;
        }
        401 | 403 => {
            r.findings.push(
                Finding::new(
                    Severity::Error,
                    "key-rejected",
                    format!(
                        "the key {} was rejected: HTTP {status} {}",
                        redact(key.unwrap_or_default()),
                        crate::providers::error_text(&body)
                    ),
                )
                .fix("check the secret's value (and that it belongs to this provider)"),
            );
            policy_rows(r, t, None);
            return;
        }
        _ => {
            let e = ProbeError::Status {
                url: models_url.clone(),
                status,
                body: crate::providers::error_text(&body),
            };
            r.findings.push(response_finding(&e, t));
            policy_rows(r, t, None);
            return;
        }
    }
    let listed = match openai::parse_models(&models_url, &body) {
        Ok(l) => l,
        Err(e) => {
            r.findings.push(response_finding(&e, t));
            return;
        }
    };
    r.listed_models = Some(listed.len());
    policy_rows(r, t, Some(&listed));
    for id in &t.models {
        if listed.iter().any(|l| l == id) {
            continue;
        }
        let close = listed
            .iter()
            .filter(|l| strsim::jaro_winkler(l, id) > 0.9)
            .max_by(|a, b| strsim::jaro_winkler(a, id).total_cmp(&strsim::jaro_winkler(b, id)));
        let mut f = Finding::new(
            Severity::Error,
            "model-not-listed",
            format!("{id} is in the policy but {} does not list it", t.id),
        )
        .model(id);
        f = match close {
            Some(c) => f.fix(format!("did you mean `{c}`?")),
            None => f.fix(format!("check the id against {models_url}")),
        };
        r.findings.push(f);
    }
}

fn policy_rows(r: &mut ProviderReport, t: &ProbeTarget, listed: Option<&[String]>) {
    for id in &t.models {
        r.models.push(ModelRow {
            id: id.clone(),
            in_policy: true,
            installed: listed.and_then(|l| l.iter().find(|x| *x == id).cloned()),
            parameter_size: None,
            quantization: None,
            size_bytes: None,
            modified_at: None,
            loaded: None,
            warm: Warm::NotApplicable,
        });
    }
}

/// `3.2 ms`, `1.84 s`.
pub fn human_ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// Live model lists of the policy's Ollama providers, keyed by provider id, in the form
/// [`crate::routing::engine::EngineOptions::discovered`] takes (for `explain --discover` and
/// serve). A provider that cannot be reached is left out; its error comes back beside the map.
pub async fn discover_ollama(
    engine: &crate::routing::engine::Engine,
    timeout: Duration,
) -> (
    std::collections::HashMap<String, Vec<String>>,
    Vec<(String, ProbeError)>,
) {
    let mut found = std::collections::HashMap::new();
    let mut errors = Vec::new();
    for p in engine
        .providers()
        .iter()
        .filter(|p| p.configured && p.ollama)
    {
        let Some(url) = &p.base_url else { continue };
        if p.origin == UrlOrigin::UnmappedInternal {
            continue;
        }
        match ollama::ollama_installed_models(url, timeout).await {
            Ok(models) => {
                found.insert(p.id.clone(), models);
            }
            Err(e) => errors.push((p.id.clone(), e)),
        }
    }
    (found, errors)
}
