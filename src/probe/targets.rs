//! Which providers `aigw probe` talks to, and what it knows about each before the first request:
//! effective base URL, kind (Ollama or an API format), the policy's models and resolved keys.

use serde::Serialize;

use crate::policy::interpolate::{Part, Template};
use crate::policy::secrets::{SecretStore, env_name};
use crate::policy::{ApiFormat, ProviderConfig, TrafficPolicy};
use crate::routing::catalog::Catalog;
use crate::routing::upstream::{self, BaseUrlOverrides, UrlOrigin};

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
}

/// Providers of every ai-gateway action in the policy, first definition of an id wins.
fn policy_providers(policy: &TrafficPolicy) -> Vec<&ProviderConfig> {
    let mut out: Vec<&ProviderConfig> = Vec::new();
    for (_, g) in policy.ai_gateways() {
        for p in &g.providers {
            if !out
                .iter()
                .any(|q| q.id.value.eq_ignore_ascii_case(&p.id.value))
            {
                out.push(p);
            }
        }
    }
    out
}

/// Decides the targets: every policy provider when `names` is empty; else each name as a policy
/// provider id (or alias), a built-in provider, or an `http(s)://` URL. An unknown name is a
/// usage error (the message lists what exists).
pub fn select(
    policy: Option<&TrafficPolicy>,
    names: &[String],
    overrides: &BaseUrlOverrides,
    secrets: &SecretStore,
) -> Result<Vec<ProbeTarget>, String> {
    let catalog = Catalog::builtin();
    let providers = policy.map(policy_providers).unwrap_or_default();
    if names.is_empty() {
        return Ok(providers
            .iter()
            .map(|p| from_policy(p, catalog, overrides, secrets))
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
            });
            continue;
        }
        let in_policy = providers.iter().find(|p| {
            p.id.value.eq_ignore_ascii_case(name)
                || p.id_aliases
                    .iter()
                    .any(|a| a.value.eq_ignore_ascii_case(name))
        });
        if let Some(p) = in_policy {
            out.push(from_policy(p, catalog, overrides, secrets));
            continue;
        }
        if let Some(b) = catalog.provider(name) {
            let (url, origin) = upstream::resolve(&b.id, b.base_url.as_deref(), overrides);
            let formats: Vec<ApiFormat> = b.formats.iter().copied().map(ApiFormat::from).collect();
            let format = list_format(&formats);
            out.push(ProbeTarget {
                id: b.id.clone(),
                kind: kind_of_format(format),
                in_policy: false,
                configured_url: b.base_url.clone(),
                url,
                origin,
                models: Vec::new(),
                keys: Keys::Passthrough,
            });
            continue;
        }
        let known: Vec<&str> = providers.iter().map(|p| p.id.value.as_str()).collect();
        let mut msg = format!("unknown provider `{name}`");
        let mut all: Vec<&str> = known.clone();
        all.extend(catalog.providers.iter().map(|p| p.id.as_str()));
        if let Some(best) = all
            .iter()
            .filter(|k| strsim::jaro_winkler(k, name) > 0.8)
            .max_by(|a, b| strsim::jaro_winkler(a, name).total_cmp(&strsim::jaro_winkler(b, name)))
        {
            msg.push_str(&format!(" (did you mean `{best}`?)"));
        }
        if known.is_empty() {
            msg.push_str("; the policy lists no providers");
        } else {
            msg.push_str(&format!("; the policy has {}", known.join(", ")));
        }
        msg.push_str(". Give a provider id, a built-in provider (openai, anthropic, …) or a URL such as http://localhost:11434");
        return Err(msg);
    }
    Ok(out)
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

fn kind_of_format(f: ApiFormat) -> Kind {
    match f {
        ApiFormat::OpenAi => Kind::OpenAi,
        ApiFormat::Anthropic => Kind::Anthropic,
    }
}

fn from_policy(
    p: &ProviderConfig,
    catalog: &Catalog,
    overrides: &BaseUrlOverrides,
    secrets: &SecretStore,
) -> ProbeTarget {
    let builtin = catalog.provider(&p.id.value);
    let configured = p
        .base_url
        .as_ref()
        .map(|u| u.value.clone())
        .or_else(|| builtin.and_then(|b| b.base_url.clone()));
    let (url, origin) = upstream::resolve(&p.id.value, configured.as_deref(), overrides);
    let ollama = upstream::looks_like_ollama(&p.id.value, configured.as_deref().unwrap_or(""))
        || url.as_deref().is_some_and(|u| u.contains(":11434"));
    let kind = if ollama {
        Kind::Ollama
    } else if builtin.is_none() && p.supported_api_surfaces.is_empty() {
        // A custom provider that says nothing of its format: ask it (`GET /`).
        Kind::Detect
    } else {
        let mut formats: Vec<ApiFormat> = p
            .supported_api_surfaces
            .iter()
            .map(|s| s.format.value)
            .collect();
        if formats.is_empty() {
            formats = builtin
                .map(|b| b.formats.iter().copied().map(ApiFormat::from).collect())
                .unwrap_or_default();
        }
        kind_of_format(list_format(&formats))
    };
    ProbeTarget {
        id: p.id.value.clone(),
        kind,
        in_policy: true,
        configured_url: configured,
        url,
        origin,
        models: p.models.iter().map(|m| m.id.value.clone()).collect(),
        keys: resolve_keys(p.api_keys.iter().map(|k| &k.value.value), secrets),
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

/// The text of a template whose expressions are each one `secrets.get(…)` call; otherwise what
/// is missing (secret variable names, or the expression that cannot be evaluated offline).
fn resolve_template(t: &Template, secrets: &SecretStore) -> Result<String, Vec<String>> {
    let mut out = String::new();
    let mut missing = Vec::new();
    for part in &t.parts {
        match part {
            Part::Lit(s) => out.push_str(s),
            Part::Expr(e) => {
                let only_a_secret = e.secrets.len() == 1 && {
                    let s = &e.secrets[0];
                    let call = &t.raw[s.range.clone()];
                    e.source.trim() == call.trim()
                };
                if !only_a_secret {
                    missing.push(format!("`${{{}}}` (not evaluated offline)", e.source));
                    continue;
                }
                let s = &e.secrets[0];
                match secrets.get(s) {
                    Some(v) => out.push_str(v),
                    None => missing.push(env_name(s.vault.as_deref(), &s.name)),
                }
            }
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
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
