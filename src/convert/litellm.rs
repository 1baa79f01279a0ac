//! LiteLLM proxy `config.yaml` → aigw policy.
//!
//! - Each `model_list` entry is a deployment: `litellm_params.model` names the provider
//!   (`ollama/llama3.2`) and `model_name` the name clients send. Deployments of one provider
//!   kind, address and key become one aigw provider; a `model_name` different from the upstream
//!   model becomes a model alias, so several deployments of one name are tried in file order.
//! - Keys are never copied: `os.environ/NAME` becomes `${secrets.get('env', 'NAME')}` (read from
//!   the variable `NAME`), a literal key a reference to export plus a warning, an absent key the
//!   variable LiteLLM itself would read (`OPENAI_API_KEY`…).
//! - Router settings become `per_request_timeout` or `serve` flags where they can; the rest, and
//!   every key this module does not read, is reported with its line.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::emit::{OutModel, OutPolicy, OutProvider};
use super::{Conversion, ConvertError, Note, NoteKind, line_of};
use crate::policy::node::{self, Node, Value};

/// What a deployment's `model` prefix maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Ollama's OpenAI-compatible API (`ollama/`, `ollama_chat/`).
    Ollama,
    /// A provider aigw knows by id (`openai`, `anthropic`, `groq`…), with LiteLLM's env var.
    Builtin {
        id: &'static str,
        env: &'static str,
        base: &'static str,
    },
    /// Azure OpenAI, through its OpenAI-compatible v1 API.
    Azure,
    /// Any OpenAI-compatible server at `api_base` (`hosted_vllm/`, `openai/` with `api_base`…).
    Compatible { label: &'static str },
}

const BUILTINS: &[(&str, &str, &str, &str)] = &[
    // (LiteLLM prefix, aigw id, LiteLLM's default key variable, default API base)
    (
        "openai",
        "openai",
        "OPENAI_API_KEY",
        "https://api.openai.com/v1",
    ),
    (
        "anthropic",
        "anthropic",
        "ANTHROPIC_API_KEY",
        "https://api.anthropic.com",
    ),
    (
        "groq",
        "groq",
        "GROQ_API_KEY",
        "https://api.groq.com/openai/v1",
    ),
    (
        "deepseek",
        "deepseek",
        "DEEPSEEK_API_KEY",
        "https://api.deepseek.com",
    ),
    (
        "gemini",
        "google",
        "GEMINI_API_KEY",
        "https://generativelanguage.googleapis.com/v1beta/openai",
    ),
    (
        "openrouter",
        "openrouter",
        "OPENROUTER_API_KEY",
        "https://openrouter.ai/api/v1",
    ),
    (
        "hyperbolic",
        "hyperbolic",
        "HYPERBOLIC_API_KEY",
        "https://api.hyperbolic.xyz/v1",
    ),
];

/// Prefixes of OpenAI-compatible servers that need an `api_base`.
const COMPATIBLE: &[(&str, &str)] = &[
    ("hosted_vllm", "vllm"),
    ("lm_studio", "lm-studio"),
    ("llamafile", "llamafile"),
    ("openai_like", "openai-compatible"),
];

fn builtin(prefix: &str) -> Option<Kind> {
    BUILTINS
        .iter()
        .find(|b| b.0 == prefix)
        .map(|&(_, id, env, base)| Kind::Builtin { id, env, base })
}

/// Why a deployment's `model` maps to no aigw provider; the entry is skipped with this note.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ClassifyError {
    #[error(
        "`{0}` has no provider prefix aigw recognises; write it as `openai/{0}`, `ollama/{0}`… and convert again"
    )]
    NoPrefix(String),
    #[error("`{0}` names no model after the provider prefix")]
    NoModel(String),
    #[error(
        "provider `{0}/` has no aigw equivalent (aigw speaks the OpenAI, Anthropic and Ollama APIs; ollama/, openai/, anthropic/, azure/, groq/, deepseek/, gemini/, openrouter/, hyperbolic/, hosted_vllm/, lm_studio/ and llamafile/ convert)"
    )]
    UnknownProvider(String),
}

/// `ollama_chat/llama3.2` → (Ollama, `llama3.2`); a bare `gpt-4o` → OpenAI, as LiteLLM infers.
fn classify(model: &str) -> Result<(Kind, String), ClassifyError> {
    let Some((prefix, rest)) = model.split_once('/') else {
        let lower = model.to_ascii_lowercase();
        if lower.starts_with("claude") {
            return Ok((builtin("anthropic").expect("listed"), model.into()));
        }
        if [
            "gpt-",
            "o1",
            "o3",
            "o4",
            "chatgpt",
            "text-embedding",
            "davinci",
        ]
        .iter()
        .any(|p| lower.starts_with(p))
        {
            return Ok((builtin("openai").expect("listed"), model.into()));
        }
        return Err(ClassifyError::NoPrefix(model.into()));
    };
    if rest.is_empty() {
        return Err(ClassifyError::NoModel(model.into()));
    }
    let kind = match prefix {
        "ollama" | "ollama_chat" => Kind::Ollama,
        "azure" => Kind::Azure,
        p => {
            if let Some(k) = builtin(p) {
                k
            } else if let Some(&(_, label)) = COMPATIBLE.iter().find(|c| c.0 == p) {
                Kind::Compatible { label }
            } else {
                return Err(ClassifyError::UnknownProvider(p.into()));
            }
        }
    };
    Ok((kind, rest.to_string()))
}

/// How a deployment authenticates, as a policy template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyRef {
    /// `os.environ/NAME` or LiteLLM's default variable.
    Env(String),
    /// A literal key: never copied; the byte offset of the value identifies it.
    Literal(String),
}

/// One `model_list` entry, read.
#[derive(Debug)]
struct Deployment {
    line: usize,
    name: String,
    kind: Kind,
    upstream: String,
    /// Where requests go, before mapping to a policy `base_url`.
    api_base: Option<String>,
    key: Option<KeyRef>,
    /// The entry's `litellm_params.model`, for comments.
    model_text: String,
}

/// Reading state: notes, and which keys were read (by the byte offset of the key).
struct Reader<'a> {
    text: &'a str,
    notes: Vec<Note>,
    used: HashSet<usize>,
    /// Containers whose children are checked one by one for leftovers.
    opened: HashSet<usize>,
}

impl<'a> Reader<'a> {
    fn note(&mut self, at: usize, kind: NoteKind, message: String) {
        self.notes.push(Note {
            line: line_of(self.text, at),
            kind,
            message,
        });
    }

    /// `map[key]`, marking the key as read.
    fn take<'n>(&mut self, map: &'n Node, key: &str) -> Option<(usize, &'n Node)> {
        let (k, v) = map.as_map()?.iter().find(|(k, _)| k.text == key)?;
        self.used.insert(k.span.start);
        Some((k.span.start, v))
    }

    /// Marks a mapping whose keys are read one by one (leftovers get reported).
    fn open(&mut self, n: &Node) {
        self.opened.insert(n.span.start);
    }

    /// A skipped entry is reported once, as a whole, not key by key.
    fn close(&mut self, n: &Node) {
        self.opened.remove(&n.span.start);
    }

    /// Reports, as not carried over, every key of an opened container that was not read.
    fn leftovers(&mut self, n: &Node, path: &str) {
        match &n.value {
            Value::Map(entries) if self.opened.contains(&n.span.start) => {
                for (k, v) in entries {
                    let p = if path.is_empty() {
                        k.text.clone()
                    } else {
                        format!("{path}.{}", k.text)
                    };
                    if self.used.contains(&k.span.start) {
                        self.leftovers(v, &p);
                    } else {
                        let why = leftover_reason(&k.text);
                        self.note(k.span.start, NoteKind::NotCarried, format!("`{p}`: {why}"));
                    }
                }
            }
            Value::Seq(items) if self.opened.contains(&n.span.start) => {
                for (i, item) in items.iter().enumerate() {
                    self.leftovers(item, &format!("{path}[{i}]"));
                }
            }
            _ => {}
        }
    }
}

/// What aigw does instead, for settings that have no place in the policy.
fn leftover_reason(key: &str) -> &'static str {
    match key {
        "rpm" | "tpm" | "max_parallel_requests" => {
            "aigw has no per-deployment request or token budgets; an upstream 429 is retried (--rate-limit-retries) and then failed over"
        }
        "timeout" | "stream_timeout" => {
            "aigw has one per_request_timeout for every model (and `serve --first-byte-timeout` for the time to first token)"
        }
        "model_info" => "model metadata LiteLLM shows in /model/info; aigw does not need it",
        "api_version" => "Azure's v1 API (the base_url ends in /openai/v1) takes no api-version",
        "temperature" | "max_tokens" | "top_p" | "stop" | "seed" | "num_ctx" | "keep_alive"
        | "extra_body" => {
            "a default request parameter: the policy's `body` would apply it to every model, so it is left to the client"
        }
        "master_key" => {
            "set the inbound token with `aigw serve --auth-token` or AIGW_AUTH_TOKEN (its value is not copied)"
        }
        "environment_variables" => {
            "values are not copied; set them in the environment aigw runs in"
        }
        "drop_params" => {
            "aigw forwards parameters as sent; a model's `unsupported_params` drops named ones"
        }
        "success_callback" | "failure_callback" | "callbacks" | "set_verbose" | "json_logs" => {
            "aigw logs every request on stderr (`serve --log-format json`) and serves /metrics"
        }
        "cache" | "cache_params" => "aigw does not cache responses",
        "redis_host" | "redis_port" | "redis_password" => "aigw keeps routing state in the process",
        _ => "no aigw equivalent",
    }
}

/// Seconds (LiteLLM's unit) as a policy duration.
fn duration(n: &Node) -> Option<String> {
    let secs = match &n.value {
        Value::Int(i) if *i > 0 => *i as f64,
        Value::Float(f) if *f > 0.0 && f.is_finite() => *f,
        Value::Str(s) => s.trim().parse::<f64>().ok().filter(|f| *f > 0.0)?,
        _ => return None,
    };
    // More than a week is a typo or a "never", not a timeout to carry over.
    if secs > 604_800.0 {
        return None;
    }
    if secs.fract() == 0.0 {
        Some(format!("{}s", secs as u64))
    } else {
        Some(format!("{}ms", (secs * 1000.0).round() as u64))
    }
}

fn positive_int(n: &Node) -> Option<u64> {
    match &n.value {
        Value::Int(i) if *i >= 0 => Some(*i as u64),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `http(s)://HOST[:PORT][/PATH]` with nothing a policy's `base_url` would refuse.
fn is_http_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    !host.is_empty()
        && !host.contains('@')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c))
        && !rest.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A host that only exists on the user's network: reachable with aigw, not by ngrok.
fn is_private_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest
        .split(['/', '?'])
        .next()
        .unwrap_or("")
        .rsplit_once(':')
        .map_or(rest.split('/').next().unwrap_or(""), |(h, _)| h);
    !(host.ends_with(".internal") || crate::policy::checks::is_loopback(host))
}

/// Converts a LiteLLM proxy config. `name` is the file name for the header comment.
pub fn convert(name: &str, text: &str) -> Result<Conversion, ConvertError> {
    let root = parse_root(text)?;
    let mut r = Reader {
        text,
        notes: Vec::new(),
        used: HashSet::new(),
        opened: HashSet::new(),
    };
    r.open(&root);
    let deployments = read_model_list(&mut r, &root)?;

    let mut out = OutPolicy::default();
    let mut serve_flags: Vec<String> = Vec::new();
    let mut base_url_flags: Vec<String> = Vec::new();
    read_settings(&mut r, &root, &mut out, &mut serve_flags);
    let wildcard = assemble(&mut r, &deployments, &mut out, &mut base_url_flags);
    out.only_allow_configured_models = !wildcard;
    serve_flags.splice(0..0, base_url_flags);
    model_group_aliases(&mut r, &root, &deployments, &mut out);
    r.leftovers(&root, "");

    r.notes.sort_by_key(|n| n.line);
    let names: Vec<&str> = {
        let mut seen = HashSet::new();
        deployments
            .iter()
            .map(|d| d.name.as_str())
            .filter(|n| seen.insert(*n))
            .collect()
    };
    let not_carried = r
        .notes
        .iter()
        .filter(|n| n.kind == NoteKind::NotCarried)
        .count();
    out.header = header(name, &serve_flags, not_carried);
    let providers = out.providers.len();
    Ok(Conversion {
        policy: super::emit::write(&out),
        notes: r.notes,
        serve_flags,
        deployments: deployments.len(),
        model_names: names.len(),
        providers,
        example_model: names.first().map(|s| s.to_string()),
    })
}

/// The file's top-level mapping, or why it is not a LiteLLM config at all.
fn parse_root(text: &str) -> Result<Node, ConvertError> {
    let root = match node::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return Err(ConvertError {
                line: None,
                message: "the file is empty".into(),
                help: "pass a LiteLLM proxy config.yaml (the file given to `litellm --config`)"
                    .into(),
            });
        }
        Err(e) => {
            return Err(ConvertError {
                line: e.span.map(|s| line_of(text, s.start)),
                message: format!("not YAML: {}", e.message),
                help: e.help.into(),
            });
        }
    };
    if root.as_map().is_none() {
        return Err(ConvertError {
            line: Some(line_of(text, root.span.start)),
            message: format!(
                "expected a mapping with `model_list`, found {}",
                root.value.kind()
            ),
            help: "pass a LiteLLM proxy config.yaml (the file given to `litellm --config`)".into(),
        });
    }
    Ok(root)
}

/// The deployments of `model_list` that can be converted (the others are noted); an error
/// when there is none, since a policy without models routes nothing.
fn read_model_list(r: &mut Reader, root: &Node) -> Result<Vec<Deployment>, ConvertError> {
    let Some((_, list)) = r.take(root, "model_list") else {
        return Err(ConvertError {
            line: None,
            message: "no `model_list`: there is nothing to route".into(),
            help: "a LiteLLM proxy config lists its models under `model_list:`; is this the file given to `litellm --config`?".into(),
        });
    };
    let Some(entries) = list.as_seq() else {
        return Err(ConvertError {
            line: Some(line_of(r.text, list.span.start)),
            message: format!("`model_list` is {}, expected a list", list.value.kind()),
            help: "write `model_list:` followed by `- model_name: …` entries".into(),
        });
    };
    r.open(list);

    let mut deployments = Vec::new();
    for entry in entries {
        if let Some(d) = read_deployment(r, entry) {
            deployments.push(d);
        }
    }
    if deployments.is_empty() {
        return Err(ConvertError {
            line: Some(line_of(r.text, list.span.start)),
            message: "no `model_list` entry could be converted".into(),
            help: "each entry needs `model_name` and `litellm_params.model` with a provider prefix such as `ollama/` or `openai/`".into(),
        });
    }
    Ok(deployments)
}

/// The policy's header comment: where it came from, how keys are read, how to serve it.
fn header(name: &str, serve_flags: &[String], not_carried: usize) -> Vec<String> {
    let mut header = vec![
        format!("Converted from {name} (a LiteLLM proxy config) by `aigw convert`."),
        "API keys are not copied: ${secrets.get('env', 'NAME')} reads the environment variable"
            .into(),
        "NAME (LiteLLM's os.environ/NAME); other references say which AIGW_SECRET_* to export."
            .into(),
    ];
    if serve_flags.is_empty() {
        header.push("Serve it with: aigw serve --policy THIS_FILE".into());
    } else {
        header.push(format!(
            "Serve it with: aigw serve --policy THIS_FILE {}",
            serve_flags.join(" ")
        ));
    }
    if not_carried > 0 {
        header.push(format!(
            "{not_carried} setting{} could not be carried over; `aigw convert` listed {} on stderr.",
            if not_carried == 1 { "" } else { "s" },
            if not_carried == 1 { "it" } else { "them" }
        ));
    }
    header
}

/// One `model_list` entry as a deployment; `None` (noted) when it cannot be carried over.
fn read_deployment(r: &mut Reader, entry: &Node) -> Option<Deployment> {
    let at = entry.span.start;
    if entry.as_map().is_none() {
        r.note(
            at,
            NoteKind::NotCarried,
            format!(
                "a `model_list` entry is {}, not a mapping; skipped",
                entry.value.kind()
            ),
        );
        return None;
    }
    r.open(entry);
    let name = r
        .take(entry, "model_name")
        .and_then(|(_, n)| n.as_str())
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let params = r.take(entry, "litellm_params").map(|(_, n)| n);
    let model = params.and_then(|p| {
        r.open(p);
        r.take(p, "model").and_then(|(_, n)| n.as_str())
    });
    let (Some(name), Some(model)) = (name, model) else {
        r.note(
            at,
            NoteKind::NotCarried,
            "a `model_list` entry without `model_name` and `litellm_params.model`; skipped".into(),
        );
        r.close(entry);
        return None;
    };
    let params = params.expect("model came from params");
    let (kind, upstream) = match classify(model) {
        Ok(k) => k,
        Err(why) => {
            r.note(
                at,
                NoteKind::NotCarried,
                format!("`{name}` ({model}): {why}; skipped"),
            );
            r.close(entry);
            return None;
        }
    };
    let Some((kind, api_base)) = address(r, at, name, model, kind, params) else {
        r.close(entry);
        return None;
    };
    let key = key_of(r, params, &kind);
    Some(Deployment {
        line: line_of(r.text, at),
        name: name.to_string(),
        kind,
        upstream,
        api_base,
        key,
        model_text: model.to_string(),
    })
}

/// Where a deployment is served: its `api_base`, dropped when it is the built-in provider's
/// own address; an `openai/` at another address becomes an OpenAI-compatible provider.
/// `None` (noted) when the address is unusable or missing where one is needed.
fn address(
    r: &mut Reader,
    at: usize,
    name: &str,
    model: &str,
    mut kind: Kind,
    params: &Node,
) -> Option<(Kind, Option<String>)> {
    let mut api_base = r
        .take(params, "api_base")
        .and_then(|(_, n)| n.as_str())
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty());
    if let Some(b) = &api_base
        && !is_http_url(b)
    {
        r.note(
            at,
            NoteKind::NotCarried,
            format!("`{name}`: api_base `{b}` is not an http:// or https:// URL; skipped"),
        );
        return None;
    }
    if let (Kind::Builtin { id, base, .. }, Some(b)) = (&kind, &api_base) {
        if b == base {
            api_base = None;
        } else if *id == "anthropic" {
            r.note(
                at,
                NoteKind::NotCarried,
                format!(
                    "`{name}`: api_base `{b}` for anthropic/ (aigw's anthropic provider talks to {base})"
                ),
            );
            api_base = None;
        } else {
            // openai/ at another address is LiteLLM's way to reach any OpenAI-compatible server.
            kind = Kind::Compatible {
                label: if *id == "openai" {
                    "openai-compatible"
                } else {
                    id
                },
            };
        }
    }
    if matches!(kind, Kind::Azure | Kind::Compatible { .. }) && api_base.is_none() {
        r.note(
            at,
            NoteKind::NotCarried,
            format!(
                "`{name}` ({model}) has no `api_base`, so there is no address to route to; skipped"
            ),
        );
        return None;
    }
    Some((kind, api_base))
}

/// The key a deployment uses: `os.environ/NAME`, a literal (never copied), or the variable
/// LiteLLM reads by default for its provider.
fn key_of(r: &mut Reader, params: &Node, kind: &Kind) -> Option<KeyRef> {
    match r.take(params, "api_key").map(|(_, n)| n) {
        Some(n) => match n.as_str().map(str::trim) {
            Some(s) if s.starts_with("os.environ/") => {
                Some(KeyRef::Env(s["os.environ/".len()..].to_string()))
            }
            Some("") | None => None,
            Some(_) => Some(KeyRef::Literal(format!("{}", n.span.start))),
        },
        None => match kind {
            // LiteLLM reads the provider's usual variable when no key is given.
            Kind::Builtin { env, .. } => Some(KeyRef::Env(env.to_string())),
            Kind::Azure => Some(KeyRef::Env("AZURE_API_KEY".into())),
            _ => None,
        },
    }
}

/// Router and proxy settings: timeouts into the policy, cooldowns into serve flags, the rest
/// reported.
fn read_settings(r: &mut Reader, root: &Node, out: &mut OutPolicy, flags: &mut Vec<String>) {
    let router = r.take(root, "router_settings").map(|(_, n)| n);
    let lset = r.take(root, "litellm_settings").map(|(_, n)| n);
    for s in [router, lset].into_iter().flatten() {
        r.open(s);
    }
    let general = r.take(root, "general_settings").map(|(_, n)| n);
    if let Some(g) = general {
        r.open(g);
    }

    // Timeouts: the router's `timeout`, else litellm_settings.request_timeout, bound each call.
    for (section, key) in [(router, "timeout"), (lset, "request_timeout")] {
        let Some((at, n)) = section.and_then(|s| r.take(s, key)) else {
            continue;
        };
        match (duration(n), &out.per_request_timeout) {
            (Some(d), None) => out.per_request_timeout = Some(d),
            (Some(_), Some(first)) => r.note(
                at,
                NoteKind::NotCarried,
                format!(
                    "`{key}`: per_request_timeout is already {first}, from router_settings.timeout"
                ),
            ),
            (None, _) => r.note(
                at,
                NoteKind::NotCarried,
                format!("`{key}` is not a number of seconds (up to a week)"),
            ),
        }
    }

    for section in [router, lset].into_iter().flatten() {
        if let Some((at, n)) = r.take(section, "routing_strategy") {
            let s = n.as_str().unwrap_or("?");
            r.note(
                at,
                NoteKind::NotCarried,
                format!(
                    "`routing_strategy: {s}`: aigw tries a model name's deployments in file order and fails over to the next; a model the client names keeps the policy's order, so no strategy can {}",
                    match s {
                        "simple-shuffle" => "shuffle them",
                        "latency-based-routing" => "sort them by latency",
                        "cost-based-routing" => "sort them by cost",
                        _ => "balance them",
                    }
                ),
            );
        }
        if let Some((at, n)) = r.take(section, "num_retries") {
            let count = positive_int(n).map_or(String::new(), |c| format!(": {c}"));
            r.note(
                at,
                NoteKind::NotCarried,
                format!(
                    "`num_retries{count}`: aigw never sends a request to the same deployment and key twice (ngrok's rule) except after a 429 (`serve --rate-limit-retries`); it fails over to the next deployment instead"
                ),
            );
        }
        for key in ["fallbacks", "context_window_fallbacks", "default_fallbacks"] {
            if let Some((at, n)) = r.take(section, key) {
                fallbacks(r, at, key, n);
            }
        }
        if let Some((at, n)) = r.take(section, "allowed_fails") {
            if let Some(v) = positive_int(n).filter(|v| *v > 0) {
                flags.push(format!("--breaker-failures {v}"));
                r.note(
                    at,
                    NoteKind::ServeFlag,
                    format!("`allowed_fails: {v}` → `--breaker-failures {v}` (aigw counts consecutive failures of a model, LiteLLM failures per minute)"),
                );
            } else {
                r.note(
                    at,
                    NoteKind::NotCarried,
                    "`allowed_fails` is not a positive number".into(),
                );
            }
        }
        if let Some((at, n)) = r.take(section, "cooldown_time") {
            if let Some(d) = duration(n) {
                flags.push(format!("--breaker-cooldown {d}"));
                r.note(
                    at,
                    NoteKind::ServeFlag,
                    format!("`cooldown_time` → `--breaker-cooldown {d}`"),
                );
            } else {
                r.note(
                    at,
                    NoteKind::NotCarried,
                    "`cooldown_time` is not a number of seconds (up to a week)".into(),
                );
            }
        }
    }
}

/// `fallbacks: [{gpt-4: [gpt-3.5-turbo]}]`: in ngrok's format the client, not the policy,
/// names the next models (`models: […]`), and a strategy can only narrow what it names.
fn fallbacks(r: &mut Reader, at: usize, key: &str, n: &Node) {
    let mut pairs: Vec<(String, Vec<String>)> = Vec::new();
    let items: Vec<&Node> = match &n.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Map(_) => vec![n],
        _ => Vec::new(),
    };
    for item in items {
        for (k, v) in item.as_map().unwrap_or(&[]) {
            let to: Vec<String> = match &v.value {
                Value::Seq(list) => list
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect(),
                Value::Str(s) => vec![s.clone()],
                _ => Vec::new(),
            };
            pairs.push((k.text.clone(), to));
        }
    }
    if key == "default_fallbacks" {
        let to: Vec<String> = n
            .as_seq()
            .unwrap_or(&[])
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect();
        pairs = vec![("any model".into(), to)];
    }
    let when = match key {
        "context_window_fallbacks" => {
            " (aigw already moves on after a context-length 400, to the next model the client listed)"
        }
        _ => "",
    };
    if pairs.is_empty() {
        r.note(
            at,
            NoteKind::NotCarried,
            format!("`{key}`: no `model: [fallbacks]` pairs found"),
        );
        return;
    }
    for (from, to) in pairs {
        let list: Vec<String> = to.iter().map(|t| format!("\"{t}\"")).collect();
        let explain: String = std::iter::once(&from)
            .chain(to.iter())
            .map(|m| format!(" --model {m}"))
            .collect();
        r.note(
            at,
            NoteKind::NotCarried,
            format!(
                "`{key}` {from} → {}: in ngrok's format the client names fallbacks; send `\"models\": [{}]` beside `\"model\": \"{from}\"`{when} (`aigw explain{explain}` shows the order)",
                to.join(", "),
                list.join(", "),
            ),
        );
    }
}

/// A key that identifies one provider: same kind, address and key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Group {
    Builtin(&'static str),
    At(String, String, Option<KeyRef>),
}

/// Builds the providers and models; returns whether some deployment was a wildcard.
fn assemble(
    r: &mut Reader,
    deployments: &[Deployment],
    out: &mut OutPolicy,
    flags: &mut Vec<String>,
) -> bool {
    let mut providers = Providers::new();
    // Where each deployment went: (provider index, model id); `None` for a wildcard.
    let placed: Vec<Option<(usize, String)>> = deployments
        .iter()
        .map(|d| {
            let pi = providers.provider_for(r, d, out, flags);
            providers.sources[pi].record(d);
            place_model(r, d, pi, out)
        })
        .collect();
    providers.describe(r, deployments, out);
    name_models(r, deployments, &placed, out);
    placed.iter().any(Option::is_none)
}

/// What one provider was built from: its model_list lines, model prefixes and distinct keys.
#[derive(Default)]
struct Sources {
    lines: Vec<usize>,
    prefixes: Vec<String>,
    keys: Vec<KeyRef>,
}

impl Sources {
    /// Remembers where a deployment of this provider came from, for the comment and the keys.
    fn record(&mut self, d: &Deployment) {
        self.lines.push(d.line);
        let prefix = d
            .model_text
            .split_once('/')
            .map_or("(no prefix)".to_string(), |(p, _)| format!("{p}/"));
        if !self.prefixes.contains(&prefix) {
            self.prefixes.push(prefix);
        }
        if let Some(k) = &d.key
            && !self.keys.contains(k)
        {
            self.keys.push(k.clone());
        }
    }
}

/// The providers made so far, found by `Group`, with what each was built from.
struct Providers {
    index: HashMap<Group, usize>,
    /// Provider ids in use (the built-in ones first), so a new one gets a unique id.
    taken: HashSet<String>,
    /// Parallel to `out.providers`.
    sources: Vec<Sources>,
}

impl Providers {
    fn new() -> Self {
        Providers {
            index: HashMap::new(),
            taken: BUILTINS.iter().map(|b| b.1.to_string()).collect(),
            sources: Vec::new(),
        }
    }

    /// The index of the provider that serves `d`, made on first use.
    fn provider_for(
        &mut self,
        r: &mut Reader,
        d: &Deployment,
        out: &mut OutPolicy,
        flags: &mut Vec<String>,
    ) -> usize {
        let group = group_of(d);
        if let Some(&i) = self.index.get(&group) {
            return i;
        }
        let (id, base_url) = match &group {
            Group::Builtin(id) => (id.to_string(), None),
            Group::At(label, base, _) => {
                let id = unique_id(label, &mut self.taken);
                let url = if d.kind == Kind::Azure {
                    format!("{base}/openai/v1")
                } else {
                    base.clone()
                };
                let base_url = policy_base_url(r, d, &id, url, flags);
                (id, Some(base_url))
            }
        };
        self.index.insert(group, out.providers.len());
        out.providers.push(OutProvider {
            id,
            base_url,
            ..OutProvider::default()
        });
        self.sources.push(Sources::default());
        out.providers.len() - 1
    }

    /// Gives each provider its comment and keys, with notes on keys that were not carried.
    fn describe(&self, r: &mut Reader, deployments: &[Deployment], out: &mut OutPolicy) {
        for (p, src) in out.providers.iter_mut().zip(&self.sources) {
            let lines: Vec<String> = src.lines.iter().map(usize::to_string).collect();
            p.comment = format!(
                "from model_list line{} {} ({})",
                if lines.len() == 1 { "" } else { "s" },
                lines.join(", "),
                src.prefixes.join(", ")
            );
            provider_keys(r, deployments, p, &src.keys);
            if src.keys.len() > 1 {
                r.note(
                    line_start(r.text, src.lines[0]),
                    NoteKind::Warning,
                    format!("`{}` has {} keys: aigw tries each model with every key in turn, where LiteLLM bound each key to its deployment", p.id, src.keys.len()),
                );
            }
        }
    }
}

/// The provider a deployment belongs to: same kind, address and key.
fn group_of(d: &Deployment) -> Group {
    match &d.kind {
        Kind::Builtin { id, .. } => Group::Builtin(id),
        Kind::Ollama => Group::At(
            "ollama".into(),
            d.api_base
                .clone()
                .unwrap_or_else(|| "http://localhost:11434".into()),
            d.key.clone(),
        ),
        Kind::Azure => Group::At(
            "azure".into(),
            d.api_base.clone().unwrap_or_default(),
            d.key.clone(),
        ),
        Kind::Compatible { label } => Group::At(
            label.to_string(),
            d.api_base.clone().unwrap_or_default(),
            d.key.clone(),
        ),
    }
}

/// The base_url the policy names for provider `id` at `url`.
fn policy_base_url(
    r: &mut Reader,
    d: &Deployment,
    id: &str,
    url: String,
    flags: &mut Vec<String>,
) -> String {
    if !is_private_http(&url) {
        return url;
    }
    // ngrok allows http:// only for .internal names; map it locally.
    flags.push(format!("--base-url {id}={url}"));
    r.note(
        line_start(r.text, d.line),
        NoteKind::ServeFlag,
        format!("`{url}` is plain http on another host: the policy says https://{id}.internal (valid for ngrok too) and `--base-url {id}={url}` points it at the box"),
    );
    format!("https://{id}.internal")
}

/// Lists `d`'s model on provider `pi` (once, whatever its case); `None` for a wildcard.
fn place_model(
    r: &mut Reader,
    d: &Deployment,
    pi: usize,
    out: &mut OutPolicy,
) -> Option<(usize, String)> {
    if d.upstream.contains('*') {
        let pid = &out.providers[pi].id;
        r.note(
            line_start(r.text, d.line),
            NoteKind::Warning,
            format!("`{}` is a wildcard: the policy allows any model of `{pid}`, which clients name as `{pid}:MODEL`", d.model_text),
        );
        return None;
    }
    let p = &mut out.providers[pi];
    // Model names match case-insensitively: `GPT-4O` is the `gpt-4o` already listed.
    let id = match p
        .models
        .iter()
        .find(|m| m.id.eq_ignore_ascii_case(&d.upstream))
    {
        Some(m) => m.id.clone(),
        None => {
            p.models.push(OutModel {
                id: d.upstream.clone(),
                aliases: Vec::new(),
            });
            d.upstream.clone()
        }
    };
    Some((pi, id))
}

/// Writes a provider's keys as secret lookups; a literal key is never copied, only noted.
fn provider_keys(r: &mut Reader, deployments: &[Deployment], p: &mut OutProvider, keys: &[KeyRef]) {
    let mut literal = 0;
    for k in keys {
        match k {
            KeyRef::Env(var) => p.keys.push(format!("${{secrets.get('env', '{var}')}}")),
            KeyRef::Literal(_) => {
                literal += 1;
                let name = if literal == 1 {
                    "api-key".to_string()
                } else {
                    format!("api-key-{literal}")
                };
                let var = crate::policy::secrets::env_name(Some(&p.id), &name);
                p.keys
                    .push(format!("${{secrets.get('{}', '{name}')}}", p.id));
                let at = deployments
                    .iter()
                    .find(|d| d.key.as_ref() == Some(k))
                    .map_or(0, |d| line_start(r.text, d.line));
                r.note(
                    at,
                    NoteKind::Warning,
                    format!("a literal api_key for `{}` was not copied; export {var}=<the key> (or put `{}: {{{name}: …}}` in a --secrets file)", p.id, p.id),
                );
            }
        }
    }
}

/// Names: a model_name that differs from the upstream id becomes an alias. Aliases are unique
/// across models, except that one id on several providers is one model and may share one.
fn name_models(
    r: &mut Reader,
    deployments: &[Deployment],
    placed: &[Option<(usize, String)>],
    out: &mut OutPolicy,
) {
    let ids: HashSet<String> = out
        .providers
        .iter()
        .flat_map(|p| p.models.iter().map(|m| m.id.to_ascii_lowercase()))
        .collect();
    let mut groups: BTreeMap<usize, (&str, Vec<Member>)> = BTreeMap::new();
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    for (i, (d, place)) in deployments.iter().zip(placed).enumerate() {
        let Some(place) = place else { continue };
        let g = *first_of.entry(d.name.as_str()).or_insert(i);
        groups
            .entry(g)
            .or_insert((d.name.as_str(), Vec::new()))
            .1
            .push((i, d, place));
    }
    for (name, members) in groups.values() {
        name_group(r, &ids, name, members, out);
    }
}

/// Gives one model_name to the deployments that bear it: an alias where it can, a note where not.
fn name_group(
    r: &mut Reader,
    ids: &HashSet<String>,
    name: &str,
    members: &[Member],
    out: &mut OutPolicy,
) {
    let lname = name.to_ascii_lowercase();
    let owner: String = if ids.contains(&lname) {
        lname.clone()
    } else {
        members[0].2.1.to_ascii_lowercase()
    };
    if ids.contains(&lname) && !members.iter().any(|m| m.2.1.eq_ignore_ascii_case(name)) {
        r.note(
            line_start(r.text, members[0].1.line),
            NoteKind::Warning,
            format!("`{name}` is also the upstream id of another deployment, so in aigw the name reaches that one; clients can name these deployments as `PROVIDER:MODEL`"),
        );
    }
    for (_, d, (pi, id)) in members {
        if id.eq_ignore_ascii_case(&owner) {
            if !id.eq_ignore_ascii_case(name) {
                let m = model_mut(out, *pi, id);
                if !m.aliases.iter().any(|a| a == name) {
                    m.aliases.push(name.to_string());
                }
            }
        } else {
            let full = format!("{}:{id}", out.providers[*pi].id);
            r.note(
                line_start(r.text, d.line),
                NoteKind::Warning,
                format!("`{name}` → {}: reachable as `{full}`, not as `{name}` (that name already belongs to `{owner}`; an alias names one model); clients can send `\"models\": [\"{name}\", \"{full}\"]`", d.model_text),
            );
        }
    }
    if members.len() > 1 && members.iter().all(|m| m.2.1.eq_ignore_ascii_case(&owner)) {
        r.note(
            line_start(r.text, members[0].1.line),
            NoteKind::Warning,
            format!("`{name}` has {} deployments: aigw tries them in file order and fails over, where LiteLLM spreads requests across them", members.len()),
        );
    }
}

/// A placed deployment of a model name: (its index, it, (provider index, model id)).
type Member<'a> = (usize, &'a Deployment, &'a (usize, String));

fn model_mut<'a>(out: &'a mut OutPolicy, pi: usize, id: &str) -> &'a mut OutModel {
    out.providers[pi]
        .models
        .iter_mut()
        .find(|m| m.id == id)
        .expect("placed models exist")
}

/// `router_settings.model_group_alias: {gpt-4: gpt-4o}`: another name for a model group.
fn model_group_aliases(
    r: &mut Reader,
    root: &Node,
    deployments: &[Deployment],
    out: &mut OutPolicy,
) {
    let Some(router) = root.get("router_settings") else {
        return;
    };
    let Some((_, map)) = r.take(router, "model_group_alias") else {
        return;
    };
    let mut names: HashSet<String> = out
        .providers
        .iter()
        .flat_map(|p| p.models.iter())
        .flat_map(|m| std::iter::once(&m.id).chain(m.aliases.iter()))
        .map(|s| s.to_ascii_lowercase())
        .collect();
    for (k, v) in map.as_map().unwrap_or(&[]) {
        let target = match &v.value {
            Value::Str(s) => Some(s.as_str()),
            // The newer form: {model: NAME, hidden: bool}.
            Value::Map(_) => v.get("model").and_then(Node::as_str),
            _ => None,
        };
        let Some(target) = target else {
            r.note(
                k.span.start,
                NoteKind::NotCarried,
                format!("`model_group_alias.{}`: no target model name", k.text),
            );
            continue;
        };
        let Some(d) = deployments
            .iter()
            .find(|d| d.name == target && !d.upstream.contains('*'))
        else {
            r.note(
                k.span.start,
                NoteKind::NotCarried,
                format!(
                    "`model_group_alias.{}`: `{target}` is not a converted model_name",
                    k.text
                ),
            );
            continue;
        };
        if !names.insert(k.text.to_ascii_lowercase()) {
            r.note(
                k.span.start,
                NoteKind::NotCarried,
                format!(
                    "`model_group_alias.{}`: that name is already a model's id or alias",
                    k.text
                ),
            );
            continue;
        }
        // The alias follows the group's own name: onto every model that carries it.
        let mut added = false;
        for p in &mut out.providers {
            for m in &mut p.models {
                let carries = m.aliases.iter().any(|a| a == target)
                    || (m.id == d.upstream && m.id.eq_ignore_ascii_case(target));
                if carries {
                    m.aliases.push(k.text.clone());
                    added = true;
                }
            }
        }
        if !added {
            r.note(
                k.span.start,
                NoteKind::NotCarried,
                format!(
                    "`model_group_alias.{}`: `{target}` is reachable only as PROVIDER:MODEL",
                    k.text
                ),
            );
        }
    }
}

/// The byte offset where a 1-based line starts (notes carry offsets until sorted).
fn line_start(text: &str, line: usize) -> usize {
    if line <= 1 {
        return 0;
    }
    text.match_indices('\n')
        .nth(line - 2)
        .map_or(text.len(), |(i, _)| i + 1)
}

/// `ollama`, then `ollama-2`…, never a built-in id or one already given.
fn unique_id(label: &str, taken: &mut HashSet<String>) -> String {
    let mut id = label.to_string();
    let mut n = 2;
    while taken.contains(&id) {
        id = format!("{label}-{n}");
        n += 1;
    }
    taken.insert(id.clone());
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_map_to_providers() {
        assert_eq!(
            classify("ollama_chat/llama3.2:1b").unwrap(),
            (Kind::Ollama, "llama3.2:1b".into())
        );
        assert!(matches!(
            classify("gemini/gemini-2.0-flash").unwrap().0,
            Kind::Builtin { id: "google", .. }
        ));
        assert!(matches!(
            classify("claude-3-5-sonnet").unwrap().0,
            Kind::Builtin {
                id: "anthropic",
                ..
            }
        ));
        assert_eq!(classify("openrouter/meta/llama").unwrap().1, "meta/llama");
        assert!(
            classify("bedrock/anthropic.claude")
                .unwrap_err()
                .to_string()
                .contains("`bedrock/`")
        );
        assert!(
            classify("mystery")
                .unwrap_err()
                .to_string()
                .contains("openai/mystery")
        );
    }

    #[test]
    fn seconds_become_durations() {
        let n = |v| Node {
            value: v,
            span: 0..0,
        };
        assert_eq!(duration(&n(Value::Int(30))).as_deref(), Some("30s"));
        assert_eq!(duration(&n(Value::Float(1.5))).as_deref(), Some("1500ms"));
        assert_eq!(duration(&n(Value::Int(0))), None);
        assert_eq!(duration(&n(Value::Float(1e30))), None);
        assert_eq!(duration(&n(Value::Str("x".into()))), None);
    }

    #[test]
    fn private_http_needs_a_mapping() {
        assert!(is_private_http("http://192.168.1.20:11434"));
        assert!(!is_private_http("http://localhost:11434"));
        assert!(!is_private_http("http://127.0.0.1:8000/v1"));
        assert!(!is_private_http("https://box.example.com"));
        assert!(!is_private_http("http://ollama.internal"));
    }

    #[test]
    fn keys_never_reach_the_output() {
        let text = "model_list:\n  - model_name: gpt-4o\n    litellm_params:\n      model: openai/gpt-4o\n      api_key: sk-literal-secret-123456\n";
        let c = convert("c.yaml", text).unwrap();
        assert!(!c.policy.contains("sk-literal"), "{}", c.policy);
        assert!(c.policy.contains("${secrets.get('openai', 'api-key')}"));
        assert!(c.notes.iter().any(|n| n.kind == NoteKind::Warning
            && n.line == 2
            && n.message.contains("AIGW_SECRET_OPENAI_API_KEY")));
        assert!(!c.report("c.yaml").contains("sk-literal"));
    }

    #[test]
    fn unusable_input_says_what_to_pass() {
        assert!(
            convert("x", "")
                .unwrap_err()
                .help
                .contains("litellm --config")
        );
        assert!(convert("x", "a: [").is_err());
        assert!(
            convert("x", "- 1\n")
                .unwrap_err()
                .message
                .contains("expected a mapping")
        );
        assert!(
            convert("x", "general_settings: {}\n")
                .unwrap_err()
                .message
                .contains("model_list")
        );
        let e = convert(
            "x",
            "model_list:\n  - model_name: a\n    litellm_params: {model: bedrock/x}\n",
        )
        .unwrap_err();
        assert!(e.message.contains("no `model_list` entry"));
    }
}
