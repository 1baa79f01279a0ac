//! The engine: a loaded policy compiled once (providers resolved, strategies compiled, the CEL
//! universe built) and then asked, per request, for a [`Plan`].

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::policy::checks;
use crate::policy::interpolate::{Part, Template};
use crate::policy::secrets::{SecretStore, redact};
use crate::policy::{AiGateway, ApiFormat, Code, Diagnostic, Loaded};

use super::catalog::{BuiltinProvider, Catalog, CatalogModel};
use super::cel::{
    self, AuthorView, KeyView, ModelView, ProviderView, Strategy, StrategyKind, Universe,
};
use super::plan::*;
use super::plan_cache::PlanCache;
use super::strategy_checks;
use super::upstream::{self, BaseUrlOverrides, UrlOrigin};

/// Inputs to [`Engine::build`] beyond the policy.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub overrides: BaseUrlOverrides,
    pub secrets: SecretStore,
    /// Most attempts a plan lists (ngrok's ERR_NGROK_3812 cap).
    pub max_attempts: usize,
    /// Live model lists by provider id (from `probe`), added to configured models.
    pub discovered: HashMap<String, Vec<String>>,
    /// `m.metrics` by (provider id, model id), lower-cased: serve's own traffic figures.
    pub metrics: HashMap<(String, String), cel::ModelMetrics>,
    /// `m.aigw` by provider id: what serve knows live about each box.
    pub live: HashMap<String, LiveProvider>,
}

/// One box as serve knows it, for `m.aigw`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveProvider {
    /// `healthy`, `degraded`, `down` or `unknown`.
    pub health: String,
    /// Lower-cased names the box answers to (`mistral` and `mistral:latest`); `None`: unknown.
    pub installed: Option<std::collections::HashSet<String>>,
    pub in_flight: u64,
    pub queued: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            overrides: BaseUrlOverrides::default(),
            secrets: SecretStore::default(),
            max_attempts: 10,
            discovered: HashMap::new(),
            metrics: HashMap::new(),
            live: HashMap::new(),
        }
    }
}

/// A provider as the engine routes to it: configured, built-in, or both merged.
#[derive(Debug, Clone)]
pub struct ProviderInfo {
    pub id: String,
    pub aliases: Vec<String>,
    pub builtin: bool,
    /// Listed under `providers` in the policy.
    pub configured: bool,
    pub disabled: bool,
    /// Effective base URL (after `--base-url` and `.internal` mapping).
    pub base_url: Option<String>,
    pub origin: UrlOrigin,
    pub configured_base_url: Option<String>,
    pub formats: Vec<ApiFormat>,
    /// Surfaces served, when restricted (Google: chat-completions only).
    pub surfaces: Option<Vec<String>>,
    pub ollama: bool,
    pub keys: Vec<KeySlot>,
    /// `supported_api_surfaces[].supported_params` by surface.
    pub supported_params: Vec<(String, Vec<String>)>,
}

/// A configured API key: its template and a label safe to print.
#[derive(Debug, Clone)]
pub struct KeySlot {
    pub template: Template,
    pub label: String,
}

/// Per-model facts serve needs when forwarding.
#[derive(Debug, Clone, Default)]
pub struct ModelSettings {
    pub provider: usize,
    pub configured: bool,
    pub disabled: bool,
    pub unsupported_params: Vec<String>,
    pub max_output_tokens: Option<u64>,
}

pub struct Engine {
    config: AiGateway,
    providers: Vec<ProviderInfo>,
    /// Parallel to `universe.models()`.
    settings: Vec<ModelSettings>,
    universe: Universe,
    model_strategies: Vec<(String, Strategy)>,
    key_strategies: Vec<(String, Strategy)>,
    max_attempts: usize,
    secrets: SecretStore,
    /// Other ai-gateway actions the policy has (guarded by rule expressions); the engine routes
    /// with the first unguarded one.
    pub other_gateways: usize,
    /// Plans already made, when no strategy draws random numbers (see [`PlanCache`]).
    plan_cache: Option<PlanCache>,
    /// The policy's rules around `ai-gateway`; `None` when there is nothing to evaluate.
    traffic: Option<Arc<crate::traffic::Program>>,
}

/// The API format and surface a path speaks.
pub fn route_for(path: &str) -> Option<Route> {
    let path = path.split('?').next().unwrap_or(path).trim_end_matches('/');
    let (format, surface) = match path {
        "/v1/chat/completions" => (ApiFormat::OpenAi, "chat-completions"),
        "/v1/completions" => (ApiFormat::OpenAi, "completions"),
        "/v1/embeddings" => (ApiFormat::OpenAi, "embeddings"),
        "/v1/responses" => (ApiFormat::OpenAi, "responses"),
        "/v1/messages" => (ApiFormat::Anthropic, "messages"),
        _ => return None,
    };
    Some(Route { format, surface })
}

impl Engine {
    /// Compiles a loaded policy. Errors come back with every diagnostic (warnings included);
    /// on success the warnings come alongside the engine.
    pub fn build(
        loaded: &Loaded,
        opts: EngineOptions,
    ) -> Result<(Engine, Vec<Diagnostic>), Vec<Diagnostic>> {
        let mut diags = loaded.diagnostics.clone();
        let Some(policy) = &loaded.policy else {
            return Err(diags);
        };
        let catalog = Catalog::builtin();
        diags.extend(checks::check(policy, catalog, Some(&opts.secrets)));

        let gateways: Vec<_> = policy.ai_gateways().collect();
        if gateways.is_empty() && !loaded.has_errors() {
            diags.push(
                Diagnostic::new(Code::NoAiGateway, None, "this policy has no `ai-gateway` action")
                    .help("requests its rules let through are routed with aigw's defaults (ngrok's built-in providers, the client's key); add `- type: ai-gateway` to configure routing"),
            );
        }
        let (traffic, traffic_diags) =
            crate::traffic::compile(policy, &loaded.source.text, &opts.secrets);
        diags.extend(traffic_diags);
        // Every action's strategies are checked; the engine routes with the first unguarded
        // action (or the first one), and with that action's own strategies.
        let route_with = gateways
            .iter()
            .position(|(rule, _)| rule.expressions.is_empty())
            .unwrap_or(0);
        let mut strategies = (Vec::new(), Vec::new());
        for (i, (_, g)) in gateways.iter().enumerate() {
            let text = &loaded.source.text;
            let models = strategy_checks::compile_all(
                g.model_strategies(),
                StrategyKind::Models,
                text,
                &mut diags,
            );
            let keys = strategy_checks::compile_all(
                g.key_strategies(),
                StrategyKind::Keys,
                text,
                &mut diags,
            );
            strategy_checks::coverage(g.model_strategies(), &models, &mut diags);
            if i == route_with {
                strategies = (models, keys);
            }
        }
        sort(&mut diags);
        if diags.iter().any(Diagnostic::is_error) {
            return Err(diags);
        }
        let chosen = gateways
            .get(route_with)
            .map(|(_, g)| (*g).clone())
            .unwrap_or_default();
        let (providers, settings, mut views) = assemble(&chosen, catalog, &opts);
        if !opts.metrics.is_empty() {
            for v in &mut views {
                let key = (
                    v.provider_id.to_ascii_lowercase(),
                    v.id.to_ascii_lowercase(),
                );
                if let Some(m) = opts.metrics.get(&key) {
                    v.metrics = m.clone();
                }
            }
        }
        for v in &mut views {
            if let Some(l) = opts.live.get(&v.provider_id) {
                v.aigw = cel::LiveView {
                    health: l.health.clone(),
                    installed: l
                        .installed
                        .as_ref()
                        .is_none_or(|i| i.contains(&v.id.to_ascii_lowercase())),
                    in_flight: l.in_flight,
                    queued: l.queued,
                };
            }
        }
        let provider_views = providers.iter().map(provider_view).collect();
        let authors = catalog
            .authors
            .iter()
            .map(|a| AuthorView {
                id: a.id.clone(),
                id_aliases: a.id_aliases.clone(),
                display_name: a.display_name.clone().unwrap_or_default(),
            })
            .collect();
        // `random()` / `randomize()` are the only inputs a plan has besides the request and what
        // the engine was built with: without them, one request always plans the same way.
        let draws_random = strategies
            .0
            .iter()
            .chain(&strategies.1)
            .any(|(_, strategy)| strategy.draws_random());
        let engine = Engine {
            config: chosen,
            providers,
            settings,
            universe: Universe::new(views, provider_views, authors),
            model_strategies: strategies.0,
            key_strategies: strategies.1,
            max_attempts: opts.max_attempts.max(1),
            secrets: opts.secrets,
            other_gateways: gateways.len().saturating_sub(1),
            plan_cache: (!draws_random).then(PlanCache::default),
            traffic: (!traffic.is_trivial()).then(|| Arc::new(traffic)),
        };
        Ok((engine, diags))
    }

    pub fn gateway(&self) -> &AiGateway {
        &self.config
    }

    /// The compiled rules around `ai-gateway`, when there are any to evaluate.
    pub fn traffic(&self) -> Option<&Arc<crate::traffic::Program>> {
        self.traffic.as_ref()
    }

    pub fn providers(&self) -> &[ProviderInfo] {
        &self.providers
    }

    pub fn provider(&self, id: &str) -> Option<&ProviderInfo> {
        self.providers.iter().find(|p| p.id == id)
    }

    pub fn model_settings(&self, model_index: usize) -> Option<&ModelSettings> {
        self.settings.get(model_index)
    }

    /// `(provider id, model id)` of the models the policy lists (not catalog or discovered ones).
    pub fn configured_models(&self) -> Vec<(String, String)> {
        self.universe
            .models()
            .iter()
            .zip(&self.settings)
            .filter(|(_, s)| s.configured)
            .map(|(m, _)| (m.provider_id.clone(), m.id.clone()))
            .collect()
    }

    pub fn models(&self) -> &[ModelView] {
        self.universe.models()
    }

    pub fn strategy_count(&self) -> usize {
        self.model_strategies.len()
    }

    /// The value of a configured key, secrets resolved (for serve only; never print it).
    pub fn key_value(&self, provider_id: &str, index: usize) -> Option<String> {
        let slot = self.provider(provider_id)?.keys.get(index)?;
        resolve_template(&slot.template, &self.secrets)
    }

    /// Plans one request.
    pub fn plan(&self, req: &Request, opts: PlanOptions) -> Plan {
        self.plan_traced(req, opts, true)
    }

    /// The same plan (route, attempts, error, left-out reasons) without the strategy trace:
    /// each [`StrategyStep`] keeps its expression and outcome kind but not the lists of model
    /// names it returned, which cost one `format!` per returned model (hundreds of µs at 1,000
    /// models). `serve` executes plans and never prints the trace; `explain` and `test` do.
    pub fn plan_untraced(&self, req: &Request, opts: PlanOptions) -> Plan {
        self.plan_traced(req, opts, false)
    }

    /// What `serve` runs per request: the untraced plan, shared, and made once per distinct
    /// request when no strategy draws random numbers.
    pub fn plan_shared(&self, req: &Request, opts: PlanOptions) -> Arc<Plan> {
        match &self.plan_cache {
            Some(cache) => cache.get_or_plan(req, || self.plan_untraced(req, opts)),
            None => Arc::new(self.plan_untraced(req, opts)),
        }
    }

    /// Whether [`Engine::plan_shared`] remembers plans (no strategy draws a random number).
    pub fn caches_plans(&self) -> bool {
        self.plan_cache.is_some()
    }

    /// Whether a strategy reads `m.aigw`, so the boxes' health and load can change plans.
    pub fn reads_live(&self) -> bool {
        self.model_strategies
            .iter()
            .chain(&self.key_strategies)
            .any(|(_, s)| s.reads_live())
    }

    /// Whether a strategy reads `m.metrics`, so live traffic figures can change plans.
    pub fn reads_metrics(&self) -> bool {
        self.model_strategies
            .iter()
            .chain(&self.key_strategies)
            .any(|(_, s)| s.reads_metrics())
    }

    fn plan_traced(&self, req: &Request, opts: PlanOptions, trace: bool) -> Plan {
        let mut plan = Plan {
            route: route_for(&req.path),
            requested: Vec::new(),
            strategies: Vec::new(),
            attempts: Vec::new(),
            truncated: 0,
            left_out: Vec::new(),
            error: None,
        };
        let Some(route) = plan.route else {
            plan.error = Some(PlanError {
                code: "AIGW_UNSUPPORTED_PATH",
                status: 404,
                message: format!(
                    "`{}` is not an AI Gateway path; use /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses or /v1/messages",
                    req.path
                ),
            });
            return plan;
        };

        // Client's models, in preference order: `model`, then `models[]`.
        let texts: Vec<&String> = req
            .model
            .iter()
            .chain(req.models.iter())
            .filter(|m| !m.trim().is_empty() && !m.eq_ignore_ascii_case("ngrok/auto"))
            .collect();
        let mut extras: Vec<ModelView> = Vec::new();
        let mut extra_settings: Vec<ModelSettings> = Vec::new();
        // For each requested model, the universe indices it names.
        let mut named: Vec<Vec<usize>> = Vec::new();
        // Pass-through extras by (provider, lowercased model): a model named twice is one extra,
        // so a long list of repeats does not grow the universe.
        let mut extra_index: HashMap<(usize, String), usize> = HashMap::new();
        let mut left_out_seen = LeftOutNames::default();
        for text in &texts {
            let (mref, found) =
                self.resolve(text, &mut extras, &mut extra_settings, &mut extra_index);
            match found {
                Ok(indices) => named.push(indices),
                Err(reason) => {
                    plan.left_out.push(LeftOut {
                        model: text.to_string(),
                        reason,
                    });
                    named.push(Vec::new());
                }
            }
            plan.requested.push(mref);
        }
        let client_named = !texts.is_empty();
        let universe_owned;
        let universe = if extras.is_empty() {
            &self.universe
        } else {
            universe_owned = self.universe.with_extra(extras);
            &universe_owned
        };
        let settings = |i: usize| -> &ModelSettings {
            self.settings
                .get(i)
                .or_else(|| extra_settings.get(i - self.settings.len()))
                .expect("index from this universe")
        };

        // ai.models: every candidate that speaks this path's format and surface and that the
        // configuration allows ("all available models"), so that `ai.models.random()` never
        // draws a model the allowed filter would then drop (the docs' load-balancing example).
        // Membership as masks over the universe, so that planning stays linear in the number
        // of models the client names (a `contains` per named model was quadratic).
        let is_compatible: Vec<bool> = (0..universe.len())
            .map(|i| self.serves(&self.providers[settings(i).provider], route))
            .collect();
        let compatible: Vec<usize> = (0..universe.len()).filter(|&i| is_compatible[i]).collect();
        let visible: Vec<usize> = compatible
            .iter()
            .copied()
            .filter(|&i| self.permits(settings(i)))
            .collect();
        let is_visible = mask(universe.len(), &visible);
        for (text, indices) in texts.iter().zip(&named) {
            for &i in indices {
                if is_compatible[i]
                    && let Err(reason) = self.allowed(i, settings(i))
                {
                    push_left_out(
                        &mut plan.left_out,
                        &mut left_out_seen,
                        name_of(universe.model(i)),
                        with_request(reason, text, &name_of(universe.model(i))),
                    );
                }
            }
        }
        if compatible.is_empty() {
            let (code, status) = codes::NO_COMPATIBLE_MODELS;
            plan.error = Some(PlanError {
                code,
                status,
                message: format!(
                    "The gateway did not select any models compatible with the {} API format",
                    route.format.name()
                ),
            });
            return plan;
        }
        let name = |i: usize| {
            let m = universe.model(i).expect("index from this universe");
            format!("{}:{}", m.provider_id, m.id)
        };
        for (text, indices) in texts.iter().zip(&named) {
            for &i in indices {
                if !is_compatible[i] {
                    plan.left_out.push(LeftOut {
                        model: name(i),
                        reason: format!("does not serve the {} surface ({})", route.surface, text),
                    });
                }
            }
        }

        let resolved: Vec<usize> = named.iter().flatten().copied().collect();
        if !resolved.is_empty() && resolved.iter().all(|&i| !is_compatible[i]) {
            let (code, status) = codes::NO_COMPATIBLE_MODELS;
            plan.error = Some(PlanError {
                code,
                status,
                message: format!(
                    "The gateway did not select any models compatible with the {} API format: none of the requested models is served on {}",
                    route.format.name(),
                    req.path
                ),
            });
            return plan;
        }

        let names = |list: &[usize]| -> Vec<String> {
            if trace {
                list.iter().map(|&i| name(i)).collect()
            } else {
                Vec::new()
            }
        };
        let allowed = |i: usize| self.allowed(i, settings(i));
        let permits = |i: usize| self.permits(settings(i));
        let client_filter = |list: Vec<usize>| -> Vec<usize> {
            if !client_named {
                return list;
            }
            let mut wanted = mask(universe.len(), &list);
            let mut out = Vec::new();
            for indices in &named {
                for &i in indices {
                    // Cleared once taken: each model once, in the client's order.
                    if std::mem::take(&mut wanted[i]) {
                        out.push(i);
                    }
                }
            }
            out
        };

        let mut chosen: Vec<usize> = Vec::new();
        if self.model_strategies.is_empty() {
            let base: Vec<usize> = if client_named {
                named
                    .iter()
                    .flatten()
                    .copied()
                    .filter(|&i| is_visible[i])
                    .collect()
            } else {
                visible.clone()
            };
            for &i in base.iter().filter(|&&i| !permits(i)) {
                if let Err(reason) = allowed(i) {
                    push_left_out(&mut plan.left_out, &mut left_out_seen, name(i), reason);
                }
            }
            chosen = client_filter(base.into_iter().filter(|&i| permits(i)).collect());
            chosen.dedup();
        } else {
            let mut any_returned = false;
            for (idx, (source, strategy)) in self.model_strategies.iter().enumerate() {
                if !chosen.is_empty() || plan.error.is_some() {
                    plan.strategies.push(StrategyStep {
                        expression: source.clone(),
                        outcome: StrategyOutcome::NotEvaluated,
                        chosen: false,
                    });
                    continue;
                }
                let seed = opts.seed.wrapping_add(idx as u64);
                match cel::eval_models(strategy, universe, &visible, seed) {
                    Ok(returned) => {
                        any_returned |= !returned.is_empty();
                        let after_allowed: Vec<usize> =
                            returned.iter().copied().filter(|&i| permits(i)).collect();
                        let after_client = client_filter(after_allowed.clone());
                        let won = !after_client.is_empty();
                        if won {
                            for &i in returned.iter().filter(|&&i| !permits(i)) {
                                if let Err(reason) = allowed(i) {
                                    push_left_out(
                                        &mut plan.left_out,
                                        &mut left_out_seen,
                                        name(i),
                                        reason,
                                    );
                                }
                            }
                        }
                        plan.strategies.push(StrategyStep {
                            expression: source.clone(),
                            outcome: StrategyOutcome::Evaluated {
                                returned: names(&returned),
                                after_allowed_filter: names(&after_allowed),
                                after_client_filter: names(&after_client),
                            },
                            chosen: won,
                        });
                        if won && client_named {
                            // Client models this strategy did not return are never tried.
                            let returned_mask = mask(universe.len(), &after_client);
                            for (text, indices) in texts.iter().zip(&named) {
                                for &i in indices {
                                    if !returned_mask[i] && is_visible[i] {
                                        push_left_out(
                                            &mut plan.left_out,
                                            &mut left_out_seen,
                                            name(i),
                                            with_request(
                                                format!("not returned by strategy {}", idx + 1),
                                                text,
                                                &name(i),
                                            ),
                                        );
                                    }
                                }
                            }
                        }
                        chosen = after_client;
                    }
                    Err(err) => {
                        let (message, (code, status)) = match &err {
                            cel::EvalError::Failed { message } => (
                                format!(
                                    "Model selection failed: strategy {} (`{source}`): {message}",
                                    idx + 1
                                ),
                                codes::SELECTION_FAILED,
                            ),
                            cel::EvalError::WrongType { got, .. } => (
                                format!(
                                    "Expression '{source}' must return an AIModel or []AIModel, got {got}"
                                ),
                                codes::WRONG_RESULT_TYPE,
                            ),
                        };
                        plan.strategies.push(StrategyStep {
                            expression: source.clone(),
                            outcome: StrategyOutcome::Failed {
                                error: message.clone(),
                            },
                            chosen: false,
                        });
                        plan.error = Some(PlanError {
                            code,
                            status,
                            message,
                        });
                    }
                }
            }
            if chosen.is_empty() && plan.error.is_none() && !any_returned && !client_named {
                let (code, status) = codes::SELECTION_EMPTY;
                plan.error = Some(PlanError {
                    code,
                    status,
                    message: format!(
                        "Model selection returned no results: all {} strategies returned no models",
                        self.model_strategies.len()
                    ),
                });
            }
        }
        if plan.error.is_some() {
            return plan;
        }
        if chosen.is_empty() {
            let (code, status) = if client_named || self.model_strategies.is_empty() {
                codes::NO_MATCHING_MODELS
            } else {
                codes::SELECTION_EMPTY
            };
            let reasons: Vec<String> = plan
                .left_out
                .iter()
                .map(|l| format!("{}: {}", l.model, l.reason))
                .collect();
            let detail = if reasons.is_empty() {
                if client_named {
                    "the strategies removed every model the client asked for".to_string()
                } else {
                    "no model is allowed by the configuration".to_string()
                }
            } else {
                reasons.join("; ")
            };
            plan.error = Some(PlanError {
                code,
                status,
                message: format!("No matching models found: {detail}"),
            });
            return plan;
        }
        if client_named {
            let others = visible.len().saturating_sub(chosen.len());
            if others > 0 && self.model_strategies.is_empty() {
                plan.left_out.push(LeftOut {
                    model: format!("{others} other models"),
                    reason: "not named by the client".into(),
                });
            }
        }

        // Attempts: key by key within a model, then model by model.
        for &i in &chosen {
            let m = universe.model(i).expect("index from this universe");
            let provider = &self.providers[settings(i).provider];
            let url = provider
                .base_url
                .as_ref()
                .map(|b| upstream::join(b, &req.path));
            let keys = match self.keys_for(provider, opts.seed) {
                Ok(k) => k,
                Err(message) => {
                    let (code, status) = codes::KEY_SELECTION_FAILED;
                    plan.error = Some(PlanError {
                        code,
                        status,
                        message,
                    });
                    plan.attempts.clear();
                    return plan;
                }
            };
            for key in keys {
                if plan.attempts.len() >= self.max_attempts {
                    plan.truncated += 1;
                    continue;
                }
                plan.attempts.push(Attempt {
                    provider: provider.id.clone(),
                    model: m.id.clone(),
                    url: url.clone(),
                    key,
                    model_index: i,
                });
            }
        }
        plan
    }

    fn serves(&self, p: &ProviderInfo, route: Route) -> bool {
        p.formats.contains(&route.format)
            && p.surfaces
                .as_ref()
                .is_none_or(|s| s.iter().any(|x| x == route.surface))
    }

    /// ngrok's "allowed filter" as a yes/no, without building the reason: it runs for every
    /// candidate of every request, and most candidates of a restrictive policy are refused.
    fn permits(&self, s: &ModelSettings) -> bool {
        let p = &self.providers[s.provider];
        !p.disabled
            && !s.disabled
            && (p.configured || !self.config.only_configured_providers())
            && (s.configured || !self.config.only_configured_models())
    }

    /// ngrok's "allowed filter": disabled and `only_allow_configured_*`, with the reason.
    fn allowed(&self, _i: usize, s: &ModelSettings) -> Result<(), String> {
        let p = &self.providers[s.provider];
        if p.disabled {
            return Err(format!("provider `{}` is disabled", p.id));
        }
        if s.disabled {
            return Err("model is disabled".into());
        }
        if self.config.only_configured_providers() && !p.configured {
            return Err(format!(
                "provider `{}` is not configured (only_allow_configured_providers)",
                p.id
            ));
        }
        if self.config.only_configured_models() && !s.configured {
            return Err("model is not configured (only_allow_configured_models)".into());
        }
        Ok(())
    }

    /// Resolves one model string to universe indices; unknown models with a known provider prefix
    /// become pass-through extras.
    fn resolve(
        &self,
        text: &str,
        extras: &mut Vec<ModelView>,
        extra_settings: &mut Vec<ModelSettings>,
        extra_index: &mut HashMap<(usize, String), usize>,
    ) -> (ModelRef, Result<Vec<usize>, String>) {
        let models = self.universe.models();
        if let Some((prefix, rest)) = text.split_once(':')
            && let Some(&pi) = self.provider_indices(prefix).first()
        {
            let pis = self.provider_indices(prefix);
            let mref = ModelRef {
                text: text.into(),
                provider: Some(self.providers[pi].id.clone()),
                model: rest.into(),
            };
            let hits: Vec<usize> = (0..models.len())
                .filter(|&i| {
                    pis.contains(&self.settings[i].provider) && names_match(&models[i], rest)
                })
                .collect();
            if !hits.is_empty() {
                return (mref, Ok(hits));
            }
            if rest.trim().is_empty() {
                return (mref, Err("no model after the provider prefix".into()));
            }
            // Pass-through: a known provider, an unknown model.
            let key = (pi, rest.to_ascii_lowercase());
            if let Some(&index) = extra_index.get(&key) {
                return (mref, Ok(vec![index]));
            }
            let index = models.len() + extras.len();
            extra_index.insert(key, index);
            let p = &self.providers[pi];
            extras.push(ModelView {
                id: rest.to_string(),
                provider_id: p.id.clone(),
                provider_id_aliases: p.aliases.clone(),
                known: false,
                custom: false,
                ..ModelView::default()
            });
            extra_settings.push(ModelSettings {
                provider: pi,
                ..ModelSettings::default()
            });
            return (mref, Ok(vec![index]));
        }
        let mref = ModelRef {
            text: text.into(),
            provider: None,
            model: text.into(),
        };
        let hits: Vec<usize> = (0..models.len())
            .filter(|&i| names_match(&models[i], text))
            .collect();
        if hits.is_empty() {
            let reason = match text.split_once(':') {
                Some((prefix, _)) if !text.contains('/') || prefix.len() < text.len() => format!(
                    "unknown model; `{prefix}` is not a configured or built-in provider, and no provider lists `{text}`"
                ),
                _ => {
                    let example = self
                        .providers
                        .iter()
                        .find(|p| p.configured)
                        .map_or("openai", |p| p.id.as_str());
                    format!(
                        "unknown model; name its provider, e.g. `{example}:{text}`, or list it under a provider's `models`"
                    )
                }
            };
            return (mref, Err(reason));
        }
        (mref, Ok(hits))
    }

    /// Every provider a prefix names: its id, or an alias (ngrok's regional pattern gives two
    /// providers the name `openai`). Configured providers come first.
    fn provider_indices(&self, name: &str) -> Vec<usize> {
        (0..self.providers.len())
            .filter(|&i| {
                let p = &self.providers[i];
                p.id.eq_ignore_ascii_case(name)
                    || p.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
            })
            .collect()
    }

    fn keys_for(&self, p: &ProviderInfo, seed: u64) -> Result<Vec<KeyChoice>, String> {
        if p.keys.is_empty() {
            return Ok(vec![KeyChoice::Passthrough]);
        }
        let configured = |i: usize| KeyChoice::Configured {
            index: i,
            label: p.keys[i].label.clone(),
        };
        if self.key_strategies.is_empty() {
            return Ok((0..p.keys.len()).map(configured).collect());
        }
        let views: Vec<KeyView> = p
            .keys
            .iter()
            .map(|k| {
                let value = resolve_template(&k.template, &self.secrets).unwrap_or_default();
                KeyView {
                    id: key_id(&value, &k.label),
                    value,
                    ..KeyView::default()
                }
            })
            .collect();
        // Unlike model strategies, a key strategy that fails (typically a comparison with a
        // quota the provider never reported, which is null) falls through to the next one: the
        // docs' complete example relies on it. The last error is reported if none succeeds.
        let mut last_error = None;
        for (source, strategy) in &self.key_strategies {
            match cel::eval_keys(strategy, &views, seed) {
                Ok(order) if !order.is_empty() => {
                    return Ok(order.into_iter().map(configured).collect());
                }
                Ok(_) => continue,
                Err(e) => {
                    let why = match e {
                        cel::EvalError::Failed { message } => message,
                        cel::EvalError::WrongType { got, .. } => {
                            format!("must return a key or a list of keys, got {got}")
                        }
                    };
                    last_error = Some(format!("API key selection failed: `{source}`: {why}"));
                }
            }
        }
        if let Some(e) = last_error {
            return Err(e);
        }
        Err(format!(
            "API key selection failed: every api_key_selection strategy returned no keys for provider `{}`",
            p.id
        ))
    }
}

/// Adds "(requested as X)" when the client's text differs from the model's full name.
fn with_request(reason: String, text: &str, name: &str) -> String {
    if text.eq_ignore_ascii_case(name) {
        reason
    } else {
        format!("{reason} (requested as {text})")
    }
}

fn name_of(m: Option<&ModelView>) -> String {
    m.map(|m| format!("{}:{}", m.provider_id, m.id))
        .unwrap_or_default()
}

/// `true` at each index of `list`, over a universe of `len` models.
fn mask(len: usize, list: &[usize]) -> Vec<bool> {
    let mut m = vec![false; len];
    for &i in list {
        m[i] = true;
    }
    m
}

/// The models already in a plan's `left_out`, so that adding one is not a scan of the list
/// (which grows with the client's `models`). Entries pushed directly are caught up lazily.
#[derive(Default)]
struct LeftOutNames {
    names: std::collections::HashSet<String>,
    synced: usize,
}

/// Adds `model` to `list` unless it is already there.
fn push_left_out(list: &mut Vec<LeftOut>, seen: &mut LeftOutNames, model: String, reason: String) {
    for l in &list[seen.synced..] {
        seen.names.insert(l.model.clone());
    }
    seen.synced = list.len();
    if seen.names.insert(model.clone()) {
        list.push(LeftOut { model, reason });
        seen.synced = list.len();
    }
}

fn names_match(m: &ModelView, name: &str) -> bool {
    m.id.eq_ignore_ascii_case(name) || m.id_aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// `k.id`: a short hash of the key, stable within a run and safe to log.
fn key_id(value: &str, label: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    label.hash(&mut h);
    format!("key_{:08x}", h.finish() as u32)
}

/// A template's value when it needs only secrets; `None` if a secret is missing or the template
/// reads request data.
pub fn resolve_template(t: &Template, secrets: &SecretStore) -> Option<String> {
    let mut out = String::new();
    for part in &t.parts {
        match part {
            Part::Lit(s) => out.push_str(s),
            Part::Expr(e) => {
                let [secret] = e.secrets.as_slice() else {
                    return None;
                };
                // Only a bare `secrets.get(...)` call is resolved here.
                let call = &t.raw[secret.range.clone()];
                if e.source.trim() != call.trim() {
                    return None;
                }
                out.push_str(secrets.get(secret)?);
            }
        }
    }
    Some(out)
}

fn key_label(t: &Template, secrets: &SecretStore) -> String {
    if let Some(s) = t.secrets().next() {
        return match &s.vault {
            Some(v) => format!("(secret {v}/{})", s.name),
            None => format!("(secret {})", s.name),
        };
    }
    match resolve_template(t, secrets) {
        Some(v) => format!("({})", redact(&v)),
        None => "(templated)".into(),
    }
}

fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|d| (d.span.as_ref().map(|s| s.start).unwrap_or(0), d.severity));
}

/// Providers in routing order (configured first, in file order; then the rest of the catalog),
/// with the model universe they contribute.
fn assemble(
    g: &AiGateway,
    catalog: &Catalog,
    opts: &EngineOptions,
) -> (Vec<ProviderInfo>, Vec<ModelSettings>, Vec<ModelView>) {
    let mut a = Assembly::default();
    let mut used_builtins: Vec<&str> = Vec::new();
    for p in &g.providers {
        // A custom provider that aliases a built-in id (a regional endpoint) serves its catalog.
        let builtin = catalog
            .provider(&p.id)
            .or_else(|| p.id_aliases.iter().find_map(|a| catalog.provider(a)));
        if let Some(b) = builtin {
            used_builtins.push(&b.id);
        }
        let info = configured_info(p, builtin, opts);
        let pi = a.providers.len();
        for m in &p.models {
            a.add_configured_model(p, m, builtin, catalog, &info, pi);
        }
        a.add_discovered(p, &info, pi, opts);
        if let Some(b) = builtin {
            a.add_catalog_rest(p, b, catalog, &info, pi);
        }
        a.providers.push(info);
    }
    a.add_unconfigured_builtins(catalog, opts, &used_builtins);
    (a.providers, a.settings, a.views)
}

/// The provider list and the model universe as `assemble` builds them; `settings` and `views`
/// are parallel, one entry per model.
#[derive(Default)]
struct Assembly {
    providers: Vec<ProviderInfo>,
    settings: Vec<ModelSettings>,
    views: Vec<ModelView>,
}

impl Assembly {
    /// Adds a model the policy lists, over what the catalog knows of it.
    fn add_configured_model(
        &mut self,
        p: &crate::policy::ProviderConfig,
        m: &crate::policy::ModelConfig,
        builtin: Option<&BuiltinProvider>,
        catalog: &Catalog,
        info: &ProviderInfo,
        pi: usize,
    ) {
        let from_catalog = builtin.and_then(|b| {
            catalog.models_of(&b.id).find(|c| {
                c.id.eq_ignore_ascii_case(&m.id)
                    || c.id_aliases.iter().any(|a| a.eq_ignore_ascii_case(&m.id))
            })
        });
        self.views.push(configured_view(p, m, from_catalog, info));
        self.settings.push(ModelSettings {
            provider: pi,
            configured: true,
            disabled: m.disabled,
            unsupported_params: m
                .unsupported_params
                .iter()
                .map(|x| x.value.clone())
                .collect(),
            max_output_tokens: m.max_output_tokens,
        });
    }

    /// Adds the models the provider reported live (probe), when the policy does not list them.
    fn add_discovered(
        &mut self,
        p: &crate::policy::ProviderConfig,
        info: &ProviderInfo,
        pi: usize,
        opts: &EngineOptions,
    ) {
        for id in opts.discovered.get(&info.id).into_iter().flatten() {
            if self
                .views
                .iter()
                .zip(&self.settings)
                .any(|(v, s)| s.provider == pi && v.id.eq_ignore_ascii_case(id))
            {
                continue;
            }
            // Ollama lists `mistral:latest`; clients say `mistral` (both name it).
            let (id, id_aliases) = match id.strip_suffix(":latest") {
                Some(plain) => (plain.to_string(), vec![id.clone()]),
                _ => (id.clone(), Vec::new()),
            };
            if self
                .views
                .iter()
                .zip(&self.settings)
                .any(|(v, s)| s.provider == pi && v.id.eq_ignore_ascii_case(&id))
            {
                continue;
            }
            self.views.push(ModelView {
                id,
                id_aliases,
                provider_id: info.id.clone(),
                provider_id_aliases: info.aliases.clone(),
                known: true,
                custom: true,
                metadata: p.metadata.clone(),
                ..ModelView::default()
            });
            self.settings.push(ModelSettings {
                provider: pi,
                ..ModelSettings::default()
            });
        }
    }

    /// Adds the catalog's other models for a configured built-in provider.
    fn add_catalog_rest(
        &mut self,
        p: &crate::policy::ProviderConfig,
        b: &BuiltinProvider,
        catalog: &Catalog,
        info: &ProviderInfo,
        pi: usize,
    ) {
        for c in catalog.models_of(&b.id) {
            // A configured model shadows the catalog entry it names by id or alias.
            let shadowed = p.models.iter().any(|m| {
                std::iter::once(&m.id).chain(m.id_aliases.iter()).any(|n| {
                    c.id.eq_ignore_ascii_case(n)
                        || c.id_aliases.iter().any(|a| a.eq_ignore_ascii_case(n))
                })
            });
            if shadowed {
                continue;
            }
            let mut view = catalog_view(c, info);
            view.metadata = p.metadata.clone();
            self.views.push(view);
            self.settings.push(ModelSettings {
                provider: pi,
                ..ModelSettings::default()
            });
        }
    }

    /// Adds the catalog providers the policy did not configure, with all their models.
    fn add_unconfigured_builtins(
        &mut self,
        catalog: &Catalog,
        opts: &EngineOptions,
        used_builtins: &[&str],
    ) {
        for b in &catalog.providers {
            if used_builtins.contains(&b.id.as_str())
                || self
                    .providers
                    .iter()
                    .any(|p: &ProviderInfo| p.id.eq_ignore_ascii_case(&b.id))
            {
                continue;
            }
            let info = builtin_info(b, opts);
            let pi = self.providers.len();
            for c in catalog.models_of(&b.id) {
                self.views.push(catalog_view(c, &info));
                self.settings.push(ModelSettings {
                    provider: pi,
                    ..ModelSettings::default()
                });
            }
            self.providers.push(info);
        }
    }
}

/// A configured provider as routing sees it: the policy's fields, falling back to the
/// built-in provider it names (its URL, formats, surfaces and aliases).
fn configured_info(
    p: &crate::policy::ProviderConfig,
    builtin: Option<&BuiltinProvider>,
    opts: &EngineOptions,
) -> ProviderInfo {
    let configured_url = p
        .base_url
        .as_ref()
        .map(|u| u.value.clone())
        .or_else(|| builtin.and_then(|b| b.base_url.clone()));
    let (base_url, origin) = upstream::resolve(&p.id, configured_url.as_deref(), &opts.overrides);
    let mut formats: Vec<ApiFormat> = p
        .supported_api_surfaces
        .iter()
        .map(|s| s.format.value)
        .collect();
    formats.dedup();
    if formats.is_empty() {
        formats = builtin
            .map(|b| b.formats.iter().map(|f| (*f).into()).collect())
            .unwrap_or(vec![ApiFormat::OpenAi]);
    }
    let mut aliases: Vec<String> = p.id_aliases.iter().map(|a| a.value.clone()).collect();
    if let Some(b) = builtin {
        if !b.id.eq_ignore_ascii_case(&p.id) {
            aliases.push(b.id.clone());
        }
        aliases.extend(b.id_aliases.iter().cloned());
    }
    ProviderInfo {
        id: p.id.value.clone(),
        aliases,
        builtin: builtin.is_some(),
        configured: true,
        disabled: p.disabled,
        ollama: upstream::looks_like_ollama(&p.id, configured_url.as_deref().unwrap_or("")),
        base_url,
        origin,
        configured_base_url: configured_url,
        formats,
        surfaces: if p.supported_api_surfaces.iter().any(|s| s.surface.is_some()) {
            Some(
                p.supported_api_surfaces
                    .iter()
                    .filter_map(|s| s.surface.as_ref().map(|x| x.value.clone()))
                    .collect(),
            )
        } else {
            builtin.and_then(|b| b.surfaces.clone())
        },
        keys: p
            .api_keys
            .iter()
            .map(|k| KeySlot {
                template: k.value.value.clone(),
                label: key_label(&k.value, &opts.secrets),
            })
            .collect(),
        supported_params: p
            .supported_api_surfaces
            .iter()
            .filter_map(|s| {
                Some((
                    s.surface.as_ref()?.value.clone(),
                    s.supported_params.iter().map(|x| x.value.clone()).collect(),
                ))
            })
            .collect(),
    }
}

/// A configured model's view: the catalog entry it names (if any), overridden field by field
/// by what the policy says; metadata is the provider's, extended by the model's.
fn configured_view(
    p: &crate::policy::ProviderConfig,
    m: &crate::policy::ModelConfig,
    from_catalog: Option<&CatalogModel>,
    info: &ProviderInfo,
) -> ModelView {
    let mut view = from_catalog
        .map(|c| catalog_view(c, info))
        .unwrap_or_default();
    view.id = m.id.value.clone();
    view.provider_id = info.id.clone();
    view.provider_id_aliases = info.aliases.clone();
    view.id_aliases
        .extend(m.id_aliases.iter().map(|a| a.value.clone()));
    view.known = true;
    view.custom = from_catalog.is_none();
    if let Some(a) = &m.author_id {
        view.author_id = a.value.clone();
    }
    if let Some(d) = &m.display_name {
        view.display_name = d.value.clone();
    }
    if let Some(d) = &m.description {
        view.description = d.value.clone();
    }
    let mut meta = p.metadata.clone();
    meta.extend(m.metadata.clone());
    view.metadata = meta;
    if !m.input_modalities.is_empty() {
        view.input_modalities = m.input_modalities.clone();
    }
    if !m.output_modalities.is_empty() {
        view.output_modalities = m.output_modalities.clone();
    }
    if !m.supported_features.is_empty() {
        view.supported_features = m.supported_features.clone();
    }
    view.max_context_window = m.max_context_window.or(view.max_context_window);
    view.max_output_tokens = m.max_output_tokens.or(view.max_output_tokens);
    view
}

fn builtin_info(b: &BuiltinProvider, opts: &EngineOptions) -> ProviderInfo {
    let (base_url, origin) = upstream::resolve(&b.id, b.base_url.as_deref(), &opts.overrides);
    ProviderInfo {
        id: b.id.clone(),
        aliases: b.id_aliases.clone(),
        builtin: true,
        configured: false,
        disabled: false,
        base_url,
        origin,
        configured_base_url: b.base_url.clone(),
        formats: b.formats.iter().map(|f| (*f).into()).collect(),
        surfaces: b.surfaces.clone(),
        ollama: false,
        keys: Vec::new(),
        supported_params: Vec::new(),
    }
}

fn catalog_view(c: &CatalogModel, p: &ProviderInfo) -> ModelView {
    ModelView {
        id: c.id.clone(),
        id_aliases: c.id_aliases.clone(),
        provider_id: p.id.clone(),
        provider_id_aliases: p.aliases.clone(),
        author_id: c.author_id.clone().unwrap_or_default(),
        display_name: c.display_name.clone().unwrap_or_default(),
        description: c.description.clone().unwrap_or_default(),
        known: true,
        custom: false,
        input_modalities: c.input_modalities.clone().unwrap_or_default(),
        output_modalities: c.output_modalities.clone().unwrap_or_default(),
        supported_features: c.supported_features.clone().unwrap_or_default(),
        max_context_window: c.max_context_window,
        max_output_tokens: c.max_output_tokens,
        pricing: cel::Pricing(
            c.pricing
                .iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect(),
        ),
        ..ModelView::default()
    }
}

fn provider_view(p: &ProviderInfo) -> ProviderView {
    ProviderView {
        id: p.id.clone(),
        id_aliases: p.aliases.clone(),
        ..ProviderView::default()
    }
}
