//! Meaning checks on a typed policy: rules the spec states that a schema cannot express.
//! Checks that need CEL (strategies) live in `routing`, where strategies compile.

use std::collections::HashMap;

use super::actions;
use super::diagnostic::{Code, Diagnostic};
use super::model::*;
use super::secrets::{SecretStore, env_name};

/// Facts about built-in providers that the checks need, supplied by the caller (the catalog
/// lives in `routing`, which `policy` must not import).
pub trait BuiltinProviders {
    /// The canonical id of a built-in provider, given its id or an alias (case-insensitive).
    fn builtin_id(&self, name: &str) -> Option<&str>;
}

pub fn check(
    policy: &TrafficPolicy,
    builtins: &dyn BuiltinProviders,
    secrets: Option<&SecretStore>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    unreachable_actions(policy, &mut out);
    multiple_gateways(policy, &mut out);
    for (_, g) in policy.ai_gateways() {
        gateway(g, builtins, secrets, &mut out);
    }
    out
}

/// ERR_NGROK_2207: an action after a terminating action in the same rule can never run.
fn unreachable_actions(policy: &TrafficPolicy, out: &mut Vec<Diagnostic>) {
    for phase in &policy.phases {
        for rule in &phase.rules {
            let mut terminated_by: Option<&str> = None;
            for action in &rule.actions {
                if let Some(t) = terminated_by {
                    out.push(
                        Diagnostic::new(
                            Code::UnreachableAction,
                            action.kind.span.clone(),
                            format!(
                                "`{}` never runs: `{t}` before it ends the request",
                                action.kind.value
                            ),
                        )
                        .label("unreachable")
                        .help(format!("move it before `{t}` or into another rule")),
                    );
                }
                if actions::lookup(&action.kind).is_some_and(|s| s.terminating) {
                    terminated_by.get_or_insert(action.kind.value.as_str());
                }
            }
        }
    }
}

/// ERR_NGROK_2266: two ai-gateway actions are an error only when both can run for one request.
/// A rule with `expressions` may not match; two guarded rules are accepted (the FAQ's layout),
/// as is a guarded rule followed by an unguarded one. Two actions in one rule, or two unguarded
/// rules, always both run.
fn multiple_gateways(policy: &TrafficPolicy, out: &mut Vec<Diagnostic>) {
    let mut first_unguarded: Option<&Action> = None;
    for phase in policy
        .phases
        .iter()
        .filter(|p| p.kind == PhaseKind::OnHttpRequest)
    {
        for rule in &phase.rules {
            let gws: Vec<&Action> = rule
                .actions
                .iter()
                .filter(|a| a.kind.value == "ai-gateway")
                .collect();
            for extra in gws.iter().skip(1) {
                out.push(two_gateways(extra, gws[0]));
            }
            if let Some(first) = gws.first()
                && rule.expressions.is_empty()
            {
                if let Some(prev) = first_unguarded {
                    out.push(two_gateways(first, prev));
                } else {
                    first_unguarded = Some(first);
                }
            }
        }
    }
}

fn two_gateways(second: &Action, first: &Action) -> Diagnostic {
    Diagnostic::new(
        Code::MultipleAiGateways,
        second.kind.span.clone(),
        "a second ai-gateway action runs for the same requests as an earlier one",
    )
    .label("second ai-gateway")
    .also(first.kind.span.clone(), "first ai-gateway")
    .help("keep one ai-gateway action, or guard each with rule `expressions` so that only one matches a request")
}

fn gateway(
    g: &AiGateway,
    builtins: &dyn BuiltinProviders,
    secrets: Option<&SecretStore>,
    out: &mut Vec<Diagnostic>,
) {
    // Provider ids must be unique, and so must aliases. An alias may equal another provider's
    // id: ngrok's regional example (`id: openai-eu`, `id_aliases: [openai]`) uses exactly that
    // to make `openai:` reach both providers.
    let mut ids: HashMap<String, &Sp<String>> = HashMap::new();
    let mut aliases: HashMap<String, &Sp<String>> = HashMap::new();
    for p in &g.providers {
        if p.id.contains(':') || p.id.chars().any(char::is_whitespace) {
            out.push(
                Diagnostic::new(Code::InvalidProviderId, p.id.span.clone(), format!("provider id `{}` cannot contain `:` or spaces", p.id.value))
                    .help("clients write `provider:model`, so the id must not contain `:`; pick a name like `ollama-gpu-1`"),
            );
        }
        let names = std::iter::once((&p.id, true)).chain(p.id_aliases.iter().map(|a| (a, false)));
        let mut seen_here: Vec<String> = Vec::new();
        for (name, is_id) in names {
            let key = name.to_ascii_lowercase();
            if seen_here.contains(&key) {
                continue;
            }
            seen_here.push(key.clone());
            let table = if is_id { &mut ids } else { &mut aliases };
            if let Some(prev) = table.get(&key) {
                out.push(
                    Diagnostic::new(
                        Code::DuplicateProvider,
                        name.span.clone(),
                        format!("provider name `{}` is already used by another provider", name.value),
                    )
                    .label("duplicate")
                    .also(prev.span.clone(), "first used here")
                    .help("provider ids must be unique, and so must aliases (case-insensitive); rename one of them"),
                );
            } else {
                table.insert(key, name);
            }
        }
        provider(g, p, builtins, secrets, out);
    }

    // Model aliases: unique across all models ("You cannot use an alias that is already in use
    // as an ID or alias by another model"). Ids repeat legitimately across providers, and a
    // model with the same id on several providers is one model served by several providers
    // (two Ollama boxes): they may share an alias, which then names all of them.
    let mut model_names: HashMap<String, (&Sp<String>, String)> = HashMap::new();
    for p in &g.providers {
        for m in &p.models {
            let id = m.id.to_ascii_lowercase();
            model_names.entry(id.clone()).or_insert((&m.id, id));
        }
    }
    for p in &g.providers {
        for m in &p.models {
            let own = m.id.to_ascii_lowercase();
            for alias in &m.id_aliases {
                let key = alias.to_ascii_lowercase();
                match model_names.get(&key) {
                    Some((other, owner)) if other.span != m.id.span && *owner != own => out.push(
                        Diagnostic::new(
                            Code::ModelAliasCollision,
                            alias.span.clone(),
                            format!(
                                "model alias `{}` is already the id or alias of another model",
                                alias.value
                            ),
                        )
                        .label("collides")
                        .also(other.span.clone(), "already used here")
                        .help(
                            "aliases must be unique across all models; rename or remove this alias",
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        model_names.insert(key, (alias, own.clone()));
                    }
                }
            }
        }
    }

    if g.only_configured_models() && g.providers.iter().all(|p| p.models.is_empty()) {
        let span = g
            .only_allow_configured_models
            .as_ref()
            .map(|b| b.span.clone());
        out.push(
            Diagnostic::new(
                Code::OnlyConfiguredModelsWithoutModels,
                span,
                "`only_allow_configured_models: true` but no provider lists any models",
            )
            .label("every request will be rejected")
            .help("list the allowed models under `providers[].models`, or set it to false"),
        );
    }
    if g.only_configured_providers() && g.providers.is_empty() {
        let span = g
            .only_allow_configured_providers
            .as_ref()
            .map(|b| b.span.clone());
        out.push(
            Diagnostic::new(
                Code::OnlyConfiguredProvidersWithoutProviders,
                span,
                "`only_allow_configured_providers: true` but no providers are configured",
            )
            .label("every request will be rejected")
            .help("add the allowed providers under `providers`, or set it to false"),
        );
    }
    if !g.providers.is_empty()
        && g.providers.iter().all(|p| p.disabled)
        && g.only_configured_providers()
    {
        out.push(
            Diagnostic::new(
                Code::AllProvidersDisabled,
                g.providers[0].span.clone(),
                "every configured provider is disabled",
            )
            .help("enable at least one provider (remove `disabled: true`)"),
        );
    }
    if let (Some(per), Some(total)) = (&g.per_request_timeout, &g.total_timeout)
        && per.value > total.value
    {
        out.push(
            Diagnostic::new(Code::TimeoutOrder, per.span.clone(), "`per_request_timeout` is longer than `total_timeout`")
                .label("never reached")
                .help("the total budget ends every attempt first; make per_request_timeout shorter than total_timeout"),
        );
    }
    if let Some(sel) = &g.api_key_selection
        && !sel.strategy.is_empty()
        && g.providers
            .iter()
            .any(|p| builtins.builtin_id(&p.id).is_some())
    {
        out.push(
            Diagnostic::new(Code::DeprecatedKeySelection, sel.span.clone(), "`api_key_selection` is deprecated for built-in providers")
                .help("ngrok rejects key selection for standard providers since 2026-03 (ERR_NGROK_2267); aigw still applies it locally. Order `api_keys` instead"),
        );
    }
    let templates = g
        .headers
        .iter()
        .chain(g.query_params.iter())
        .map(|(_, t)| t);
    for t in templates {
        secrets_in(t, secrets, out);
    }
}

fn provider(
    g: &AiGateway,
    p: &ProviderConfig,
    builtins: &dyn BuiltinProviders,
    secrets: Option<&SecretStore>,
    out: &mut Vec<Diagnostic>,
) {
    let _ = g;
    // A custom provider that aliases a built-in id serves that built-in's catalog.
    let builtin = std::iter::once(&p.id)
        .chain(p.id_aliases.iter())
        .any(|n| builtins.builtin_id(n).is_some());
    match &p.base_url {
        None if !builtin => out.push(
            Diagnostic::new(Code::CustomProviderNoBaseUrl, p.id.span.clone(), format!("custom provider `{}` has no `base_url`", p.id.value))
                .label("not a built-in provider")
                .help("add `base_url: \"https://…\"` (or an ngrok `.internal` URL); built-in ids are openai, anthropic, google, deepseek, groq, openrouter, hyperbolic, inceptionlabs, inference-net"),
        ),
        Some(url) => base_url(url, out),
        None => {}
    }
    if !builtin && p.models.is_empty() && p.base_url.is_some() {
        out.push(
            Diagnostic::new(Code::CustomProviderNoModels, p.id.span.clone(), format!("custom provider `{}` lists no models", p.id.value))
                .label("no models")
                .help(format!("only requests that name `{}:MODEL` reach it; list its models under `models:` (or run `aigw probe` to see what it serves)", p.id.value)),
        );
    }
    let mut seen: HashMap<String, &Sp<String>> = HashMap::new();
    for m in &p.models {
        if let Some(prev) = seen.insert(m.id.to_ascii_lowercase(), &m.id) {
            out.push(
                Diagnostic::new(
                    Code::DuplicateModel,
                    m.id.span.clone(),
                    format!(
                        "model `{}` is listed twice under provider `{}`",
                        m.id.value, p.id.value
                    ),
                )
                .label("duplicate")
                .also(prev.span.clone(), "first listed here")
                .help("remove one of the two entries"),
            );
        }
    }
    for k in &p.api_keys {
        secrets_in(&k.value, secrets, out);
    }
}

fn base_url(url: &Sp<String>, out: &mut Vec<Diagnostic>) {
    if url.contains("${") {
        out.push(
            Diagnostic::new(Code::NotInterpolated, url.span.clone(), "aigw does not evaluate `${…}` in `base_url`")
                .help("write the URL literally; map providers to local addresses with `--base-url ID=URL`"),
        );
        return;
    }
    let (scheme, rest) = match url.split_once("://") {
        Some(parts) => parts,
        None => {
            out.push(
                Diagnostic::new(Code::InvalidBaseUrl, url.span.clone(), format!("`{}` is not a URL", url.value))
                    .help("write a full URL such as \"https://api.example.com/v1\" or \"https://ollama.internal\""),
            );
            return;
        }
    };
    let host = host_of(rest);
    if host.is_empty() {
        out.push(
            Diagnostic::new(
                Code::InvalidBaseUrl,
                url.span.clone(),
                format!("`{}` has no host", url.value),
            )
            .help("write a full URL such as \"https://api.example.com/v1\""),
        );
        return;
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => {}
        "http" if host.ends_with(".internal") => {}
        "http" if is_loopback(host) => out.push(
            Diagnostic::new(Code::LoopbackHttp, url.span.clone(), format!("`http://{host}` works with aigw but not on ngrok"))
                .help("ngrok allows http:// only for `.internal` endpoints; for a policy both can run, use https://NAME.internal and map it locally with `--base-url`"),
        ),
        "http" => out.push(
            Diagnostic::new(Code::InsecureBaseUrl, url.span.clone(), format!("`{}` uses http:// on a public host", url.value))
                .label("plain http")
                .help("external URLs must use https://; http:// is allowed only for ngrok `.internal` endpoints (and loopback with aigw)"),
        ),
        other => out.push(
            Diagnostic::new(Code::InvalidBaseUrl, url.span.clone(), format!("unsupported URL scheme `{other}`"))
                .help("use https:// (or http:// for an ngrok `.internal` endpoint)"),
        ),
    }
}

/// The host part of `rest` (what follows `scheme://`).
pub fn host_of(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(stripped) = authority.strip_prefix('[') {
        return stripped.split(']').next().unwrap_or("");
    }
    authority.split(':').next().unwrap_or("")
}

pub fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.starts_with("127.") || host == "::1" || host.ends_with(".localhost")
}

fn secrets_in(
    t: &Sp<super::interpolate::Template>,
    store: Option<&SecretStore>,
    out: &mut Vec<Diagnostic>,
) {
    for s in t.secrets() {
        if s.vault.is_none() {
            out.push(
                Diagnostic::new(
                    Code::SecretsGetOneArgument,
                    t.span.clone(),
                    format!("`secrets.get('{}')` has one argument; ngrok's takes a vault and a name", s.name),
                )
                .help(format!(
                    "aigw reads the one-argument form from {}; write `secrets.get('VAULT', '{}')` for ngrok",
                    env_name(None, &s.name),
                    s.name
                )),
            );
        }
        if let Some(store) = store
            && store.get(s).is_none()
        {
            out.push(
                Diagnostic::new(
                    Code::UnresolvedSecret,
                    t.span.clone(),
                    format!("secret `{}` is not set", display_secret(s)),
                )
                .help(
                    if s
                        .vault
                        .as_deref()
                        .is_some_and(|v| v.eq_ignore_ascii_case(super::secrets::ENV_VAULT))
                    {
                        format!(
                            "export {}=… (the `env` vault reads plain variables) or pass --secrets FILE; until then aigw cannot use this key",
                            s.name
                        )
                    } else {
                        format!(
                            "export {}=… or pass --secrets FILE; until then aigw cannot use this key",
                            env_name(s.vault.as_deref(), &s.name)
                        )
                    },
                ),
            );
        }
    }
}

fn display_secret(s: &super::interpolate::SecretRef) -> String {
    match &s.vault {
        Some(v) => format!("{v}/{}", s.name),
        None => s.name.clone(),
    }
}
