//! Which providers `aigw probe` talks to, and what it knows about each before the first request:
//! effective base URL, kind (Ollama or an API format), the policy's models and resolved keys.

use serde::Serialize;

use crate::policy::ApiFormat;
use crate::policy::interpolate::Template;
use crate::policy::secrets::{SecretStore, env_name};
use crate::routing::engine::{self, Engine, ProviderInfo};
use crate::routing::upstream::{self, UrlOrigin};

/// How aigw talks to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Ollama's native API (`/api/*`).
    Ollama,
    /// OpenAI format (`/v1/models`, bearer key).
    OpenAi,
    /// Anthropic format (`/v1/models`, `x-api-key`).
    Anthropic,
    /// A bare URL: Ollama if `GET /` says so, else OpenAI format.
    Detect,
}

/// The API keys a provider would use, as serve would resolve them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    /// No `api_keys`: the client's key passes through.
    Passthrough,
    /// Resolved values (secret; never print them, see `policy::secrets::redact`).
    Resolved(Vec<String>),
    /// Some key does not resolve offline: which secret variables are missing, or which template
    /// reads request data.
    Unresolved(Vec<String>),
}

/// One provider to probe.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// Provider id, or the URL when probing a bare URL.
    pub id: String,
    pub kind: Kind,
    /// Listed in the policy (a built-in provider named on the command line may not be).
    pub in_policy: bool,
    /// `base_url` as written (or the catalog's).
    pub configured_url: Option<String>,
    /// Where requests actually go.
    pub url: Option<String>,
    pub origin: UrlOrigin,
    /// Model ids the policy lists for this provider, in order.
    pub models: Vec<String>,
    pub keys: Keys,
    /// `disabled: true` in the policy.
    pub disabled: bool,
    /// Clients may name models the policy does not list (`only_allow_configured_models` off).
    pub unlisted_models_allowed: bool,
}

/// Decides the targets from the engine (the providers exactly as serve routes to them): every
/// provider the policy lists when `names` is empty; else each name as a provider id or alias
/// (built-in providers included, though only reachable by passthrough), or an `http(s)://` URL.
/// An unknown name is a usage error (the message lists what exists).
/// A probe target that is neither a provider of the policy, a built-in one, nor a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownProvider {
    pub name: String,
    /// The closest provider id, when one is close.
    pub suggestion: Option<String>,
    /// The providers the policy lists.
    pub configured: Vec<String>,
}

impl std::error::Error for UnknownProvider {}

impl std::fmt::Display for UnknownProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown provider `{}`", self.name)?;
        if let Some(best) = &self.suggestion {
            write!(f, " (did you mean `{best}`?)")?;
        }
        if self.configured.is_empty() {
            write!(f, "; the policy lists no providers")?;
        } else {
            write!(f, "; the policy has {}", self.configured.join(", "))?;
        }
        write!(
            f,
            ". Give a provider id, a built-in provider (openai, anthropic, …) or a URL such as http://localhost:11434"
        )
    }
}

pub fn select(
    engine: &Engine,
    names: &[String],
    secrets: &SecretStore,
) -> Result<Vec<ProbeTarget>, UnknownProvider> {
    let providers = engine.providers();
    if names.is_empty() {
        return Ok(providers
            .iter()
            .filter(|p| p.configured)
            .map(|p| from_engine(engine, p, secrets))
            .collect());
    }
    let mut out = Vec::new();
    for name in names {
        if name.starts_with("http://") || name.starts_with("https://") {
            out.push(ProbeTarget {
                id: name.clone(),
                kind: if upstream::looks_like_ollama("", name) {
                    Kind::Ollama
                } else {
                    Kind::Detect
                },
                in_policy: false,
                configured_url: Some(name.clone()),
                url: Some(name.clone()),
                origin: UrlOrigin::AsConfigured,
                models: Vec::new(),
                keys: Keys::Passthrough,
                disabled: false,
                unlisted_models_allowed: true,
            });
            continue;
        }
        let found = providers
            .iter()
            .find(|p| p.id.eq_ignore_ascii_case(name))
            .or_else(|| {
                providers
                    .iter()
                    .find(|p| p.aliases.iter().any(|a| a.eq_ignore_ascii_case(name)))
            });
        if let Some(p) = found {
            out.push(from_engine(engine, p, secrets));
            continue;
        }
        let configured = providers
            .iter()
            .filter(|p| p.configured)
            .map(|p| p.id.clone())
            .collect();
        let suggestion = providers
            .iter()
            .map(|p| p.id.as_str())
            .filter(|k| strsim::jaro_winkler(k, name) > 0.8)
            .max_by(|a, b| strsim::jaro_winkler(a, name).total_cmp(&strsim::jaro_winkler(b, name)))
            .map(String::from);
        return Err(UnknownProvider {
            name: name.clone(),
            suggestion,
            configured,
        });
    }
    Ok(out)
}

fn kind_of_format(f: ApiFormat) -> Kind {
    match f {
        ApiFormat::OpenAi => Kind::OpenAi,
        ApiFormat::Anthropic => Kind::Anthropic,
    }
}

/// The format to list models in: a provider that speaks Anthropic's format natively (ngrok's
/// `anthropic` serves both) lists them with `x-api-key`; everyone else the OpenAI way.
fn list_format(formats: &[ApiFormat]) -> ApiFormat {
    if formats.contains(&ApiFormat::Anthropic) {
        ApiFormat::Anthropic
    } else {
        ApiFormat::OpenAi
    }
}

fn from_engine(engine: &Engine, p: &ProviderInfo, secrets: &SecretStore) -> ProbeTarget {
    let ollama = p.ollama || p.base_url.as_deref().is_some_and(|u| u.contains(":11434"));
    let kind = if ollama {
        Kind::Ollama
    } else if !p.builtin && p.surfaces.is_none() && p.formats == [ApiFormat::OpenAi] {
        // A custom provider that says nothing of its format: ask it (`GET /`).
        Kind::Detect
    } else {
        kind_of_format(list_format(&p.formats))
    };
    // The policy's own models for this provider (not the built-in catalog's).
    let models = engine
        .models()
        .iter()
        .enumerate()
        .filter(|(i, m)| {
            m.provider_id == p.id && engine.model_settings(*i).is_some_and(|s| s.configured)
        })
        .map(|(_, m)| m.id.clone())
        .collect();
    ProbeTarget {
        id: p.id.clone(),
        kind,
        in_policy: p.configured,
        configured_url: p.configured_base_url.clone(),
        url: p.base_url.clone(),
        origin: p.origin.clone(),
        models,
        keys: resolve_keys(p.keys.iter().map(|k| &k.template), secrets),
        disabled: p.disabled,
        unlisted_models_allowed: !engine.gateway().only_configured_models(),
    }
}

/// Resolves `api_keys` as serve would offline: literal text and `${secrets.get(…)}` only.
pub fn resolve_keys<'a>(
    templates: impl IntoIterator<Item = &'a Template>,
    secrets: &SecretStore,
) -> Keys {
    let mut values = Vec::new();
    let mut missing = Vec::new();
    let mut any = false;
    for t in templates {
        any = true;
        match resolve_template(t, secrets) {
            Ok(v) => values.push(v),
            Err(m) => missing.extend(m),
        }
    }
    if !any {
        Keys::Passthrough
    } else if missing.is_empty() {
        Keys::Resolved(values)
    } else {
        missing.dedup();
        Keys::Unresolved(missing)
    }
}

/// What a template that does not resolve is missing: secret variables, or expressions that read
/// request data (not evaluated offline).
fn resolve_template(t: &Template, secrets: &SecretStore) -> Result<String, Vec<String>> {
    if let Some(v) = engine::resolve_template(t, secrets) {
        return Ok(v);
    }
    let mut missing = Vec::new();
    for e in t.exprs() {
        let only_a_secret =
            matches!(e.secrets.as_slice(), [s] if e.source.trim() == t.raw[s.range.clone()].trim());
        if !only_a_secret {
            missing.push(format!("`${{{}}}` (not evaluated offline)", e.source));
        } else if secrets.get(&e.secrets[0]).is_none() {
            missing.push(env_name(e.secrets[0].vault.as_deref(), &e.secrets[0].name));
        }
    }
    Err(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_resolve_from_secrets() {
        let store = SecretStore::from_vars([(
            "AIGW_SECRET_OPENAI_KEY".to_string(),
            "sk-test-1234567890".to_string(),
        )]);
        let t = Template::parse("${secrets.get('openai', 'key')}").unwrap();
        assert_eq!(
            resolve_keys([&t], &store),
            Keys::Resolved(vec!["sk-test-1234567890".into()])
        );
        let t = Template::parse("${secrets.get('openai', 'other')}").unwrap();
        assert_eq!(
            resolve_keys([&t], &store),
            Keys::Unresolved(vec!["AIGW_SECRET_OPENAI_OTHER".into()])
        );
        let t = Template::literal("sk-literal-0000");
        assert_eq!(
            resolve_keys([&t], &store),
            Keys::Resolved(vec!["sk-literal-0000".into()])
        );
        assert_eq!(resolve_keys([], &store), Keys::Passthrough);
    }
}
