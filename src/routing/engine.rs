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
    /// The routing action's `headers`, `query_params` and `body`.
    decorations: crate::traffic::decorate::Decorations,
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
        let mut decorations = Default::default();
        for (i, (_, g)) in gateways.iter().enumerate() {
            let text = &loaded.source.text;
            let (decorated, decoration_diags) =
                crate::traffic::decorate::Decorations::compile(g, text, &opts.secrets);
            diags.extend(decoration_diags);
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
                decorations = decorated;
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
            decorations,
        };
        Ok((engine, diags))
    }

    pub fn gateway(&self) -> &AiGateway {
        &self.config
    }

    /// The routing action's `headers`, `query_params` and `body`, compiled.
    pub fn decorations(&self) -> &crate::traffic::decorate::Decorations {
        &self.decorations
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

    /// A plan, with the strategy trace or without; [`Planner::run`] lists the steps.
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
        let mut draft = Draft {
            plan: &mut plan,
            left_out_seen: LeftOutNames::default(),
        };
        let planner = Planner::new(self, req, opts, trace, route, &mut draft);
        if let Err(error) = planner.run(&mut draft) {
            draft.plan.error = Some(error);
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
    fn allowed(&self, s: &ModelSettings) -> Result<(), Refused<'_>> {
        let p = &self.providers[s.provider];
        if p.disabled {
            return Err(Refused::ProviderDisabled(&p.id));
        }
        if s.disabled {
            return Err(Refused::ModelDisabled);
        }
        if self.config.only_configured_providers() && !p.configured {
            return Err(Refused::ProviderNotConfigured(&p.id));
        }
        if self.config.only_configured_models() && !s.configured {
            return Err(Refused::ModelNotConfigured);
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
    ) -> (ModelRef, Result<Vec<usize>, Unresolved>) {
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
                return (mref, Err(Unresolved::NoModelAfterPrefix));
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
                Some((prefix, _)) if !text.contains('/') || prefix.len() < text.len() => {
                    Unresolved::UnknownProvider {
                        prefix: prefix.to_owned(),
                        text: text.to_owned(),
                    }
                }
                _ => Unresolved::NoProvider {
                    example: self
                        .providers
                        .iter()
                        .find(|p| p.configured)
                        .map_or("openai", |p| p.id.as_str())
                        .to_owned(),
                    text: text.to_owned(),
                },
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

    fn keys_for<'a>(
        &'a self,
        p: &'a ProviderInfo,
        seed: u64,
    ) -> Result<Vec<KeyChoice>, KeySelectionError<'a>> {
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
                    last_error = Some(match e {
                        cel::EvalError::Failed { message } => KeySelectionError::Failed {
                            strategy: source,
                            message,
                        },
                        cel::EvalError::WrongType { got, .. } => KeySelectionError::WrongType {
                            strategy: source,
                            got,
                        },
                    });
                }
            }
        }
        Err(last_error.unwrap_or(KeySelectionError::NoKeys { provider: &p.id }))
    }
}

/// A [`PlanError`] with one of ngrok's `(code, status)` pairs. Cold, so that the compiler lays
/// out the error paths of the (inlined) planning steps away from the request's hot path.
#[cold]
fn plan_error((code, status): (&'static str, u16), message: String) -> PlanError {
    PlanError {
        code,
        status,
        message,
    }
}

/// The plan as the planner fills it in, with the models already in its `left_out`. It borrows
/// the plan, which [`Engine::plan_traced`] returns without copying it.
struct Draft<'p> {
    plan: &'p mut Plan,
    left_out_seen: LeftOutNames,
}

impl Draft<'_> {
    /// Adds `model` to `left_out` unless it is already there.
    fn leave_out(&mut self, model: String, reason: String) {
        let (list, seen) = (&mut self.plan.left_out, &mut self.left_out_seen);
        for l in &list[seen.synced..] {
            seen.names.insert(l.model.clone());
        }
        seen.synced = list.len();
        if seen.names.insert(model.clone()) {
            list.push(LeftOut { model, reason });
            seen.synced = list.len();
        }
    }
}

/// One request being planned: the models the client named, resolved against the engine's
/// universe, and which models this route and the configuration admit. The steps of
/// [`Planner::run`] fill in a [`Draft`]; the planner itself does not change once made.
struct Planner<'a> {
    engine: &'a Engine,
    req: &'a Request,
    opts: PlanOptions,
    /// Whether strategy steps list the models they returned (see [`Engine::plan_untraced`]).
    trace: bool,
    route: Route,
    /// The client's models in preference order: `model`, then `models[]`.
    texts: Vec<&'a String>,
    /// For each of `texts`, the universe indices it names.
    named: Vec<Vec<usize>>,
    /// The engine's universe plus the pass-through models the client named, when it named any.
    /// Boxed to keep the planner (made per request) small; only pass-through requests pay.
    extended: Option<Box<Universe>>,
    /// Settings of the pass-through models, numbered after the engine's own.
    extra_settings: Vec<ModelSettings>,
    /// Per universe model: serves this path's format and surface. Membership is kept as masks
    /// so that planning stays linear in the number of models the client names (a `contains`
    /// per named model was quadratic).
    is_compatible: Vec<bool>,
    any_compatible: bool,
    /// `ai.models` (see [`Candidates::sort`]), and the same as a mask.
    visible: Vec<usize>,
    is_visible: Vec<bool>,
}

impl<'a> Planner<'a> {
    /// Resolves the client's models (leaving out those that name nothing) and sorts the
    /// universe by what this route and the configuration admit.
    fn new(
        engine: &'a Engine,
        req: &'a Request,
        opts: PlanOptions,
        trace: bool,
        route: Route,
        draft: &mut Draft<'_>,
    ) -> Planner<'a> {
        let texts: Vec<&String> = req
            .model
            .iter()
            .chain(req.models.iter())
            .filter(|m| !m.trim().is_empty() && !m.eq_ignore_ascii_case("ngrok/auto"))
            .collect();
        let mut extras: Vec<ModelView> = Vec::new();
        let mut extra_settings: Vec<ModelSettings> = Vec::new();
        let mut named: Vec<Vec<usize>> = Vec::new();
        // Pass-through extras by (provider, lowercased model): a model named twice is one extra,
        // so a long list of repeats does not grow the universe.
        let mut extra_index: HashMap<(usize, String), usize> = HashMap::new();
        for text in &texts {
            let (mref, found) =
                engine.resolve(text, &mut extras, &mut extra_settings, &mut extra_index);
            match found {
                Ok(indices) => named.push(indices),
                Err(reason) => {
                    draft.plan.left_out.push(LeftOut {
                        model: text.to_string(),
                        reason: reason.to_string(),
                    });
                    named.push(Vec::new());
                }
            }
            draft.plan.requested.push(mref);
        }
        let extended = (!extras.is_empty()).then(|| Box::new(engine.universe.with_extra(extras)));
        let len = extended.as_deref().unwrap_or(&engine.universe).len();
        let Candidates {
            is_compatible,
            any_compatible,
            visible,
            is_visible,
        } = Candidates::sort(engine, route, len, &extra_settings);
        Planner {
            engine,
            req,
            opts,
            trace,
            route,
            texts,
            named,
            extended,
            extra_settings,
            is_compatible,
            any_compatible,
            visible,
            is_visible,
        }
    }

    /// The steps of planning, in order; an error ends the plan where it arises.
    fn run(&self, draft: &mut Draft<'_>) -> Result<(), PlanError> {
        self.leave_out_refused_named(draft);
        self.check_compatible(draft)?;
        let chosen = self.choose_models(draft)?;
        self.add_attempts(&chosen, draft)
    }

    /// The named models that serve this route but that the configuration refuses, with why.
    fn leave_out_refused_named(&self, draft: &mut Draft<'_>) {
        for (text, indices) in self.texts.iter().zip(&self.named) {
            for &i in indices {
                if self.is_compatible[i]
                    && let Err(reason) = self.engine.allowed(self.settings(i))
                {
                    let name = self.name(i);
                    let reason = with_request(reason.to_string(), text, &name);
                    draft.leave_out(name, reason);
                }
            }
        }
    }

    /// Fails when no model serves this route, or when every model the client named is served
    /// on other paths only (each is left out with the surface it lacks).
    fn check_compatible(&self, draft: &mut Draft<'_>) -> Result<(), PlanError> {
        let format = self.route.format.name();
        if !self.any_compatible {
            return Err(plan_error(
                codes::NO_COMPATIBLE_MODELS,
                format!(
                    "The gateway did not select any models compatible with the {format} API format"
                ),
            ));
        }
        for (text, indices) in self.texts.iter().zip(&self.named) {
            for &i in indices {
                if !self.is_compatible[i] {
                    draft.plan.left_out.push(LeftOut {
                        model: self.name(i),
                        reason: format!(
                            "does not serve the {} surface ({})",
                            self.route.surface, text
                        ),
                    });
                }
            }
        }
        let mut resolved = self.named.iter().flatten().peekable();
        if resolved.peek().is_some() && resolved.all(|&i| !self.is_compatible[i]) {
            return Err(plan_error(
                codes::NO_COMPATIBLE_MODELS,
                format!(
                    "The gateway did not select any models compatible with the {format} API format: none of the requested models is served on {}",
                    self.req.path
                ),
            ));
        }
        Ok(())
    }

    /// The models to try, in order: what the first strategy that leaves any returns, or
    /// without strategies every allowed model (the client's, in its order, when it named any).
    fn choose_models(&self, draft: &mut Draft<'_>) -> Result<Vec<usize>, PlanError> {
        let no_strategies = self.engine.model_strategies.is_empty();
        let chosen = if no_strategies {
            self.choose_without_strategies(draft)
        } else {
            self.run_strategies(draft)?
        };
        if chosen.is_empty() {
            return Err(self.nothing_chosen(draft));
        }
        let others = self.visible.len().saturating_sub(chosen.len());
        if self.client_named() && others > 0 && no_strategies {
            draft.plan.left_out.push(LeftOut {
                model: format!("{others} other models"),
                reason: "not named by the client".into(),
            });
        }
        Ok(chosen)
    }

    fn choose_without_strategies(&self, draft: &mut Draft<'_>) -> Vec<usize> {
        let base: Vec<usize> = if self.client_named() {
            self.named
                .iter()
                .flatten()
                .copied()
                .filter(|&i| self.is_visible[i])
                .collect()
        } else {
            self.visible.clone()
        };
        for &i in base.iter().filter(|&&i| !self.permits(i)) {
            self.leave_out_refused(i, draft);
        }
        let mut chosen =
            self.client_filter(base.into_iter().filter(|&i| self.permits(i)).collect());
        chosen.dedup();
        chosen
    }

    /// Evaluates the model strategies in order until one leaves a model to try; those after it
    /// (or after one that fails) are listed as not evaluated.
    fn run_strategies(&self, draft: &mut Draft<'_>) -> Result<Vec<usize>, PlanError> {
        let mut chosen: Vec<usize> = Vec::new();
        let mut error = None;
        let mut any_returned = false;
        for (idx, (source, strategy)) in self.engine.model_strategies.iter().enumerate() {
            if !chosen.is_empty() || error.is_some() {
                draft.plan.strategies.push(StrategyStep {
                    expression: source.clone(),
                    outcome: StrategyOutcome::NotEvaluated,
                    chosen: false,
                });
                continue;
            }
            let seed = self.opts.seed.wrapping_add(idx as u64);
            match cel::eval_models(strategy, self.universe(), &self.visible, seed) {
                Ok(returned) => {
                    any_returned |= !returned.is_empty();
                    chosen = self.filter_returned(idx, source, &returned, draft);
                }
                Err(err) => {
                    let failure = strategy_failed(idx, source, &err);
                    draft.plan.strategies.push(StrategyStep {
                        expression: source.clone(),
                        outcome: StrategyOutcome::Failed {
                            error: failure.message.clone(),
                        },
                        chosen: false,
                    });
                    error = Some(failure);
                }
            }
        }
        if let Some(error) = error {
            return Err(error);
        }
        if chosen.is_empty() && !any_returned && !self.client_named() {
            return Err(plan_error(
                codes::SELECTION_EMPTY,
                format!(
                    "Model selection returned no results: all {} strategies returned no models",
                    self.engine.model_strategies.len()
                ),
            ));
        }
        Ok(chosen)
    }

    /// Passes what strategy `idx` returned through the allowed filter, then the client's, and
    /// records the step. When models remain, the strategy wins: the models either filter
    /// dropped are left out, with why.
    fn filter_returned(
        &self,
        idx: usize,
        source: &str,
        returned: &[usize],
        draft: &mut Draft<'_>,
    ) -> Vec<usize> {
        let after_allowed: Vec<usize> = returned
            .iter()
            .copied()
            .filter(|&i| self.permits(i))
            .collect();
        let after_client = self.client_filter(after_allowed.clone());
        let won = !after_client.is_empty();
        if won {
            for &i in returned.iter().filter(|&&i| !self.permits(i)) {
                self.leave_out_refused(i, draft);
            }
        }
        draft.plan.strategies.push(StrategyStep {
            expression: source.to_owned(),
            outcome: StrategyOutcome::Evaluated {
                returned: self.names(returned),
                after_allowed_filter: self.names(&after_allowed),
                after_client_filter: self.names(&after_client),
            },
            chosen: won,
        });
        if won && self.client_named() {
            self.leave_out_not_returned(idx, &after_client, draft);
        }
        after_client
    }

    /// Client models strategy `idx` did not return: they are never tried.
    fn leave_out_not_returned(&self, idx: usize, returned: &[usize], draft: &mut Draft<'_>) {
        let returned_mask = mask(self.universe().len(), returned);
        for (text, indices) in self.texts.iter().zip(&self.named) {
            for &i in indices {
                if !returned_mask[i] && self.is_visible[i] {
                    let name = self.name(i);
                    let reason =
                        with_request(format!("not returned by strategy {}", idx + 1), text, &name);
                    draft.leave_out(name, reason);
                }
            }
        }
    }

    /// The error when no model is left to try, listing why each was left out.
    fn nothing_chosen(&self, draft: &Draft<'_>) -> PlanError {
        let code = if self.client_named() || self.engine.model_strategies.is_empty() {
            codes::NO_MATCHING_MODELS
        } else {
            codes::SELECTION_EMPTY
        };
        let reasons: Vec<String> = draft
            .plan
            .left_out
            .iter()
            .map(|l| format!("{}: {}", l.model, l.reason))
            .collect();
        let detail = if reasons.is_empty() {
            if self.client_named() {
                "the strategies removed every model the client asked for".to_string()
            } else {
                "no model is allowed by the configuration".to_string()
            }
        } else {
            reasons.join("; ")
        };
        plan_error(code, format!("No matching models found: {detail}"))
    }

    /// Attempts: key by key within a model, then model by model, up to the attempt cap.
    fn add_attempts(&self, chosen: &[usize], draft: &mut Draft<'_>) -> Result<(), PlanError> {
        let plan = &mut draft.plan;
        for &i in chosen {
            let m = self.universe().model(i).expect("index from this universe");
            let provider = &self.engine.providers[self.settings(i).provider];
            let url = provider
                .base_url
                .as_ref()
                .map(|b| upstream::join(b, &self.req.path));
            let keys = match self.engine.keys_for(provider, self.opts.seed) {
                Ok(k) => k,
                Err(e) => {
                    plan.attempts.clear();
                    return Err(plan_error(codes::KEY_SELECTION_FAILED, e.to_string()));
                }
            };
            for key in keys {
                if plan.attempts.len() >= self.engine.max_attempts {
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
        Ok(())
    }

    /// Leaves out model `i` with the allowed filter's reason, if it refuses it.
    fn leave_out_refused(&self, i: usize, draft: &mut Draft<'_>) {
        if let Err(reason) = self.engine.allowed(self.settings(i)) {
            draft.leave_out(self.name(i), reason.to_string());
        }
    }

    fn universe(&self) -> &Universe {
        self.extended.as_deref().unwrap_or(&self.engine.universe)
    }

    fn settings(&self, i: usize) -> &ModelSettings {
        settings_of(self.engine, &self.extra_settings, i)
    }

    fn permits(&self, i: usize) -> bool {
        self.engine.permits(self.settings(i))
    }

    /// `provider:model`.
    fn name(&self, i: usize) -> String {
        let m = self.universe().model(i).expect("index from this universe");
        format!("{}:{}", m.provider_id, m.id)
    }

    /// The names of `list`, for the strategy trace; empty when not tracing.
    fn names(&self, list: &[usize]) -> Vec<String> {
        if self.trace {
            list.iter().map(|&i| self.name(i)).collect()
        } else {
            Vec::new()
        }
    }

    fn client_named(&self) -> bool {
        !self.texts.is_empty()
    }

    /// `list` restricted to the models the client named, in the client's order; all of it
    /// when the client named none.
    fn client_filter(&self, list: Vec<usize>) -> Vec<usize> {
        if !self.client_named() {
            return list;
        }
        let mut wanted = mask(self.universe().len(), &list);
        let mut out = Vec::new();
        for indices in &self.named {
            for &i in indices {
                // Cleared once taken: each model once, in the client's order.
                if std::mem::take(&mut wanted[i]) {
                    out.push(i);
                }
            }
        }
        out
    }
}

/// The settings of universe model `i`: the engine's, then the pass-through models'.
fn settings_of<'s>(engine: &'s Engine, extra: &'s [ModelSettings], i: usize) -> &'s ModelSettings {
    engine
        .settings
        .get(i)
        .or_else(|| extra.get(i - engine.settings.len()))
        .expect("index from this universe")
}

/// How a route and the configuration sort the universe (the [`Planner`]'s fields of the same
/// names), computed before the planner is made so that it is built in place.
struct Candidates {
    is_compatible: Vec<bool>,
    any_compatible: bool,
    visible: Vec<usize>,
    is_visible: Vec<bool>,
}

impl Candidates {
    /// ai.models: every candidate that speaks this path's format and surface and that the
    /// configuration allows ("all available models"), so that `ai.models.random()` never
    /// draws a model the allowed filter would then drop (the docs' load-balancing example).
    fn sort(engine: &Engine, route: Route, len: usize, extra: &[ModelSettings]) -> Candidates {
        let settings = |i: usize| settings_of(engine, extra, i);
        let is_compatible: Vec<bool> = (0..len)
            .map(|i| engine.serves(&engine.providers[settings(i).provider], route))
            .collect();
        let compatible: Vec<usize> = (0..len).filter(|&i| is_compatible[i]).collect();
        let visible: Vec<usize> = compatible
            .iter()
            .copied()
            .filter(|&i| engine.permits(settings(i)))
            .collect();
        Candidates {
            is_visible: mask(len, &visible),
            any_compatible: !compatible.is_empty(),
            is_compatible,
            visible,
        }
    }
}

/// The error of a model strategy that fails at runtime or returns something else than models.
fn strategy_failed(idx: usize, source: &str, err: &cel::EvalError) -> PlanError {
    match err {
        cel::EvalError::Failed { message } => plan_error(
            codes::SELECTION_FAILED,
            format!(
                "Model selection failed: strategy {} (`{source}`): {message}",
                idx + 1
            ),
        ),
        cel::EvalError::WrongType { got, .. } => plan_error(
            codes::WRONG_RESULT_TYPE,
            format!("Expression '{source}' must return an AIModel or []AIModel, got {got}"),
        ),
    }
}

/// Why ngrok's "allowed filter" refuses a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Refused<'a> {
    #[error("provider `{0}` is disabled")]
    ProviderDisabled(&'a str),
    #[error("model is disabled")]
    ModelDisabled,
    #[error("provider `{0}` is not configured (only_allow_configured_providers)")]
    ProviderNotConfigured(&'a str),
    #[error("model is not configured (only_allow_configured_models)")]
    ModelNotConfigured,
}

/// Why a model the client named resolves to no model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Unresolved {
    #[error("no model after the provider prefix")]
    NoModelAfterPrefix,
    #[error(
        "unknown model; `{prefix}` is not a configured or built-in provider, and no provider lists `{text}`"
    )]
    UnknownProvider { prefix: String, text: String },
    #[error(
        "unknown model; name its provider, e.g. `{example}:{text}`, or list it under a provider's `models`"
    )]
    NoProvider { example: String, text: String },
}

/// Why no API key was chosen for a provider (ERR_NGROK_3808). When every key strategy fails,
/// the last one's failure is reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum KeySelectionError<'a> {
    #[error("API key selection failed: `{strategy}`: {message}")]
    Failed { strategy: &'a str, message: String },
    #[error(
        "API key selection failed: `{strategy}`: must return a key or a list of keys, got {got}"
    )]
    WrongType { strategy: &'a str, got: String },
    #[error(
        "API key selection failed: every api_key_selection strategy returned no keys for provider `{provider}`"
    )]
    NoKeys { provider: &'a str },
}

/// Adds "(requested as X)" when the client's text differs from the model's full name.
fn with_request(reason: String, text: &str, name: &str) -> String {
    if text.eq_ignore_ascii_case(name) {
        reason
    } else {
        format!("{reason} (requested as {text})")
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed errors print what the `format!`s they replaced did (several of these texts
    /// reach clients and no snapshot shows them).
    #[test]
    fn error_texts_are_unchanged() {
        let cases: Vec<(String, &str)> = vec![
            (
                Refused::ProviderDisabled("openai").to_string(),
                "provider `openai` is disabled",
            ),
            (Refused::ModelDisabled.to_string(), "model is disabled"),
            (
                Refused::ProviderNotConfigured("openai").to_string(),
                "provider `openai` is not configured (only_allow_configured_providers)",
            ),
            (
                Refused::ModelNotConfigured.to_string(),
                "model is not configured (only_allow_configured_models)",
            ),
            (
                Unresolved::NoModelAfterPrefix.to_string(),
                "no model after the provider prefix",
            ),
            (
                Unresolved::UnknownProvider {
                    prefix: "acme".into(),
                    text: "acme:x".into(),
                }
                .to_string(),
                "unknown model; `acme` is not a configured or built-in provider, and no provider lists `acme:x`",
            ),
            (
                Unresolved::NoProvider {
                    example: "ollama".into(),
                    text: "x".into(),
                }
                .to_string(),
                "unknown model; name its provider, e.g. `ollama:x`, or list it under a provider's `models`",
            ),
            (
                KeySelectionError::Failed {
                    strategy: "ai.keys",
                    message: "boom".into(),
                }
                .to_string(),
                "API key selection failed: `ai.keys`: boom",
            ),
            (
                KeySelectionError::WrongType {
                    strategy: "1",
                    got: "int".into(),
                }
                .to_string(),
                "API key selection failed: `1`: must return a key or a list of keys, got int",
            ),
            (
                KeySelectionError::NoKeys { provider: "openai" }.to_string(),
                "API key selection failed: every api_key_selection strategy returned no keys for provider `openai`",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
