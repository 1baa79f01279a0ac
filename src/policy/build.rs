//! The schema walk: node tree → typed policy, reporting every shape problem at its span.

use std::time::Duration;

use super::actions;
use super::diagnostic::{Code, Diagnostic, did_you_mean};
use super::duration;
use super::interpolate::{Template, TemplateError, TemplateErrorKind};
use super::model::*;
use super::node::{Key, Node, Span, Value};

/// Token limits ngrok accepts for `max_input_tokens` / `max_output_tokens`.
pub const MAX_TOKEN_LIMIT: u64 = 500_000;

pub(crate) const GATEWAY_FIELDS: &[&str] = &[
    "max_input_tokens",
    "max_output_tokens",
    "headers",
    "query_params",
    "body",
    "on_error",
    "total_timeout",
    "per_request_timeout",
    "providers",
    "only_allow_configured_providers",
    "only_allow_configured_models",
    "model_selection",
    "api_key_selection",
];
pub(crate) const PROVIDER_FIELDS: &[&str] = &[
    "id",
    "id_aliases",
    "base_url",
    "display_name",
    "description",
    "website",
    "disabled",
    "metadata",
    "api_keys",
    "models",
    "supported_api_surfaces",
];
pub(crate) const MODEL_FIELDS: &[&str] = &[
    "id",
    "id_aliases",
    "author_id",
    "display_name",
    "description",
    "disabled",
    "metadata",
    "input_modalities",
    "output_modalities",
    "max_context_window",
    "max_output_tokens",
    "supported_features",
    "unsupported_params",
];
pub(crate) const RULE_FIELDS: &[&str] = &["name", "expressions", "actions"];
pub(crate) const ACTION_FIELDS: &[&str] = &["type", "config"];
pub(crate) const SURFACE_FIELDS: &[&str] = &["format", "surface", "supported_params"];
/// Surfaces ngrok names for `supported_api_surfaces[].surface`.
pub const SURFACES: &[&str] = &[
    "chat-completions",
    "completions",
    "embeddings",
    "responses",
    "messages",
];

pub(crate) struct Builder<'t> {
    text: &'t str,
    pub diags: Vec<Diagnostic>,
}

impl<'t> Builder<'t> {
    pub fn new(text: &'t str) -> Self {
        Builder {
            text,
            diags: Vec::new(),
        }
    }

    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    // --- the traffic policy ---------------------------------------------------------------

    pub fn traffic_policy(&mut self, root: &Node) -> TrafficPolicy {
        let mut policy = TrafficPolicy::default();
        let Some(entries) = root.as_map() else {
            self.push(
                Diagnostic::new(
                    Code::NotAPolicy,
                    root.span.clone(),
                    format!(
                        "a traffic policy is a mapping of phases, found {}",
                        root.value.kind()
                    ),
                )
                .help(
                    "start the file with `on_http_request:` followed by a list of rules or actions",
                ),
            );
            return policy;
        };
        for (key, value) in entries {
            let kind = PhaseKind::ALL
                .iter()
                .find(|(n, _)| *n == key.text)
                .map(|(_, k)| *k);
            let kind = match (kind, key.text.as_str()) {
                (Some(k), _) => k,
                (None, legacy @ ("inbound" | "outbound")) => {
                    let (k, new) = if legacy == "inbound" {
                        (PhaseKind::OnHttpRequest, "on_http_request")
                    } else {
                        (PhaseKind::OnHttpResponse, "on_http_response")
                    };
                    self.push(
                        Diagnostic::new(
                            Code::LegacyPhase,
                            key.span.clone(),
                            format!("`{legacy}` is the pre-2024 name of `{new}`"),
                        )
                        .label("legacy phase name")
                        .help(format!("rename it to `{new}`; aigw reads it as `{new}`")),
                    );
                    k
                }
                (None, other) => {
                    let names = PhaseKind::ALL.iter().map(|(n, _)| *n);
                    let mut d = Diagnostic::new(
                        Code::UnknownPhase,
                        key.span.clone(),
                        format!("unknown phase `{other}`"),
                    );
                    d = match did_you_mean(other, names) {
                        Some(s) => d.label(format!("did you mean `{s}`?")),
                        None => d.label("not a traffic-policy phase"),
                    };
                    self.push(d.help("phases are on_http_request, on_http_response, on_tcp_connect and on_event_stream_message"));
                    continue;
                }
            };
            let rules = self.rules(value, kind);
            policy.phases.push(Phase {
                kind,
                key_span: key.span.clone(),
                rules,
            });
        }
        policy
    }

    fn rules(&mut self, node: &Node, phase: PhaseKind) -> Vec<Rule> {
        let items = match &node.value {
            Value::Seq(items) => items,
            Value::Null => return Vec::new(),
            other => {
                self.push(
                    Diagnostic::new(
                        Code::WrongType,
                        node.span.clone(),
                        format!(
                            "`{}` must be a list of rules, found {}",
                            phase.name(),
                            other.kind()
                        ),
                    )
                    .help("write each rule or action as a list item starting with `- `"),
                );
                return Vec::new();
            }
        };
        items
            .iter()
            .filter_map(|item| self.rule(item, phase))
            .collect()
    }

    fn rule(&mut self, node: &Node, phase: PhaseKind) -> Option<Rule> {
        let Some(entries) = node.as_map() else {
            self.push(
                Diagnostic::new(
                    Code::RuleShape,
                    node.span.clone(),
                    format!("a rule must be a mapping, found {}", node.value.kind()),
                )
                .help("write `- actions: [...]` for a rule, or `- type: ai-gateway` for a single action"),
            );
            return None;
        };
        let has = |k: &str| entries.iter().any(|(key, _)| key.text == k);
        if has("type") && has("actions") {
            self.push(
                Diagnostic::new(
                    Code::RuleShape,
                    node.span.clone(),
                    "this item has both `type` (an action) and `actions` (a rule)",
                )
                .help("move the `type`/`config` action into the `actions` list"),
            );
            return None;
        }
        if has("type") || (has("config") && !has("actions")) {
            let action = self.action(node, phase)?;
            return Some(Rule {
                name: None,
                expressions: Vec::new(),
                actions: vec![action],
                shorthand: true,
                span: node.span.clone(),
            });
        }
        let fields = self.fields(node, "a rule", RULE_FIELDS)?;
        let name = fields
            .get("name")
            .and_then(|n| self.string(n, "a rule's `name`"));
        let expressions = fields
            .get("expressions")
            .map(|n| self.string_list(n, "`expressions`"))
            .unwrap_or_default();
        let actions = match fields.get("actions") {
            Some(list) => match &list.value {
                Value::Seq(items) if !items.is_empty() => {
                    items.iter().filter_map(|a| self.action(a, phase)).collect()
                }
                Value::Seq(_) | Value::Null => {
                    self.push(
                        Diagnostic::new(
                            Code::RuleWithoutActions,
                            list.span.clone(),
                            "this rule has no actions",
                        )
                        .help("add at least one action, e.g. `- type: ai-gateway`"),
                    );
                    Vec::new()
                }
                other => {
                    self.push(
                        Diagnostic::new(
                            Code::WrongType,
                            list.span.clone(),
                            format!("`actions` must be a list, found {}", other.kind()),
                        )
                        .help("write each action as a list item: `- type: ai-gateway`"),
                    );
                    Vec::new()
                }
            },
            None => {
                self.push(
                    Diagnostic::new(
                        Code::RuleWithoutActions,
                        node.span.clone(),
                        "this rule has no `actions`",
                    )
                    .help("add `actions:` with at least one action, e.g. `- type: ai-gateway`"),
                );
                Vec::new()
            }
        };
        Some(Rule {
            name,
            expressions,
            actions,
            shorthand: false,
            span: node.span.clone(),
        })
    }

    fn action(&mut self, node: &Node, phase: PhaseKind) -> Option<Action> {
        let fields = self.fields(node, "an action", ACTION_FIELDS)?;
        let Some(type_node) = fields.get("type") else {
            self.push(
                Diagnostic::new(
                    Code::MissingField,
                    node.span.clone(),
                    "this action has no `type`",
                )
                .help("name the action, e.g. `type: ai-gateway`"),
            );
            return None;
        };
        let kind = self.string(type_node, "an action's `type`")?;
        let config = fields.get("config").cloned();
        match actions::lookup(&kind) {
            None => {
                let mut d = Diagnostic::new(
                    Code::UnknownAction,
                    kind.span.clone(),
                    format!("unknown action type `{}`", kind.value),
                );
                d = match did_you_mean(&kind, actions::names()) {
                    Some(s) => d.label(format!("did you mean `{s}`?")),
                    None => d.label("not a traffic-policy action"),
                };
                self.push(d.help("see `aigw schema` or the README for the list of actions"));
            }
            Some(spec) if !spec.phases.contains(&phase) => {
                let allowed: Vec<_> = spec
                    .phases
                    .iter()
                    .map(|p| format!("`{}`", p.name()))
                    .collect();
                self.push(
                    Diagnostic::new(
                        Code::ActionWrongPhase,
                        kind.span.clone(),
                        format!("`{}` cannot run in `{}`", kind.value, phase.name()),
                    )
                    .label("wrong phase")
                    .help(format!("move it under {}", allowed.join(" or "))),
                );
            }
            Some(_) => {}
        }
        let ai_gateway = if kind.value == "ai-gateway" {
            let cfg = match &config {
                Some(c) if !matches!(c.value, Value::Null) => self.ai_gateway(c),
                _ => Some(AiGateway {
                    span: node.span.clone(),
                    ..AiGateway::default()
                }),
            };
            cfg.map(Box::new)
        } else {
            None
        };
        Some(Action {
            kind,
            config,
            ai_gateway,
            span: node.span.clone(),
        })
    }

    // --- the ai-gateway config -------------------------------------------------------------

    fn ai_gateway(&mut self, node: &Node) -> Option<AiGateway> {
        let f = self.fields(node, "the ai-gateway config", GATEWAY_FIELDS)?;
        let mut g = AiGateway {
            span: node.span.clone(),
            ..AiGateway::default()
        };
        g.max_input_tokens = f
            .get("max_input_tokens")
            .and_then(|n| self.token_limit(n, "max_input_tokens"));
        g.max_output_tokens = f
            .get("max_output_tokens")
            .and_then(|n| self.token_limit(n, "max_output_tokens"));
        g.headers = f
            .get("headers")
            .map(|n| self.template_map(n, "headers"))
            .unwrap_or_default();
        g.query_params = f
            .get("query_params")
            .map(|n| self.template_map(n, "query_params"))
            .unwrap_or_default();
        if let Some(body) = f.get("body") {
            g.body = self.body(body);
        }
        if let Some(n) = f.get("on_error") {
            g.on_error = self.on_error(n);
        }
        g.total_timeout = f
            .get("total_timeout")
            .and_then(|n| self.duration(n, "total_timeout"));
        g.per_request_timeout = f
            .get("per_request_timeout")
            .and_then(|n| self.duration(n, "per_request_timeout"));
        if let Some(list) = f
            .get("providers")
            .and_then(|n| self.list(n, "`providers`", "provider"))
        {
            g.providers = list.iter().filter_map(|p| self.provider(p)).collect();
        }
        g.only_allow_configured_providers = f
            .get("only_allow_configured_providers")
            .and_then(|n| self.boolean(n, "only_allow_configured_providers"));
        g.only_allow_configured_models = f
            .get("only_allow_configured_models")
            .and_then(|n| self.boolean(n, "only_allow_configured_models"));
        g.model_selection = f
            .get("model_selection")
            .and_then(|n| self.selection(n, "model_selection"));
        g.api_key_selection = f
            .get("api_key_selection")
            .and_then(|n| self.selection(n, "api_key_selection"));
        Some(g)
    }

    fn provider(&mut self, node: &Node) -> Option<ProviderConfig> {
        let f = self.fields(node, "a provider", PROVIDER_FIELDS)?;
        let id = self.required_string(&f, node, "id", "a provider", "id: \"ollama\"")?;
        let mut p = ProviderConfig {
            span: node.span.clone(),
            id,
            ..ProviderConfig::default()
        };
        p.id_aliases = f
            .get("id_aliases")
            .map(|n| self.string_list(n, "`id_aliases`"))
            .unwrap_or_default();
        p.base_url = f.get("base_url").and_then(|n| self.string(n, "`base_url`"));
        p.display_name = f
            .get("display_name")
            .and_then(|n| self.string(n, "`display_name`"));
        p.description = f
            .get("description")
            .and_then(|n| self.string(n, "`description`"));
        p.website = f.get("website").and_then(|n| self.string(n, "`website`"));
        p.disabled = f
            .get("disabled")
            .and_then(|n| self.boolean(n, "disabled"))
            .is_some_and(|b| b.value);
        p.metadata = f
            .get("metadata")
            .map(|n| self.metadata(n))
            .unwrap_or_default();
        if let Some(keys) = f
            .get("api_keys")
            .and_then(|n| self.list(n, "`api_keys`", "API key"))
        {
            p.api_keys = keys.iter().filter_map(|k| self.api_key(k)).collect();
        }
        if let Some(models) = f
            .get("models")
            .and_then(|n| self.list(n, "`models`", "model"))
        {
            p.models = models.iter().filter_map(|m| self.model(m)).collect();
        }
        if let Some(surfaces) = f
            .get("supported_api_surfaces")
            .and_then(|n| self.list(n, "`supported_api_surfaces`", "API surface"))
        {
            p.supported_api_surfaces = surfaces.iter().filter_map(|s| self.surface(s)).collect();
        }
        Some(p)
    }

    fn api_key(&mut self, node: &Node) -> Option<ApiKeyConfig> {
        if let Value::Str(_) = node.value {
            self.push(
                Diagnostic::new(
                    Code::WrongType,
                    node.span.clone(),
                    "an API key must be a mapping with `value`",
                )
                .help("write `- value: ${secrets.get('vault', 'name')}`"),
            );
            return None;
        }
        let f = self.fields(node, "an API key", &["value"])?;
        let value = self.required_string(
            &f,
            node,
            "value",
            "an API key",
            "value: ${secrets.get('openai', 'api-key')}",
        )?;
        if value.trim().is_empty() {
            self.push(
                Diagnostic::new(
                    Code::EmptyValue,
                    value.span.clone(),
                    "this API key is empty",
                )
                .help("put the key in a secret and write `value: ${secrets.get('vault', 'name')}`"),
            );
            return None;
        }
        let template = self.template(&value)?;
        Some(ApiKeyConfig {
            span: node.span.clone(),
            value: Sp::new(template, value.span),
        })
    }

    fn model(&mut self, node: &Node) -> Option<ModelConfig> {
        if let Value::Str(s) = &node.value {
            self.push(
                Diagnostic::new(
                    Code::WrongType,
                    node.span.clone(),
                    "a model must be a mapping with `id`, found a string",
                )
                .help(format!("write `- id: \"{s}\"`")),
            );
            return None;
        }
        let f = self.fields(node, "a model", MODEL_FIELDS)?;
        let id = self.required_string(&f, node, "id", "a model", "id: \"llama3.2\"")?;
        let mut m = ModelConfig {
            span: node.span.clone(),
            id,
            ..ModelConfig::default()
        };
        m.id_aliases = f
            .get("id_aliases")
            .map(|n| self.string_list(n, "`id_aliases`"))
            .unwrap_or_default();
        m.author_id = f
            .get("author_id")
            .and_then(|n| self.string(n, "`author_id`"));
        m.display_name = f
            .get("display_name")
            .and_then(|n| self.string(n, "`display_name`"));
        m.description = f
            .get("description")
            .and_then(|n| self.string(n, "`description`"));
        m.disabled = f
            .get("disabled")
            .and_then(|n| self.boolean(n, "disabled"))
            .is_some_and(|b| b.value);
        m.metadata = f
            .get("metadata")
            .map(|n| self.metadata(n))
            .unwrap_or_default();
        let plain = |b: &mut Self, k: &str| -> Vec<String> {
            f.get(k)
                .map(|n| b.string_list(n, &format!("`{k}`")))
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.value)
                .collect()
        };
        m.input_modalities = plain(self, "input_modalities");
        m.output_modalities = plain(self, "output_modalities");
        m.supported_features = plain(self, "supported_features");
        m.max_context_window = f
            .get("max_context_window")
            .and_then(|n| self.uint(n, "max_context_window"))
            .map(|v| v.value);
        m.max_output_tokens = f
            .get("max_output_tokens")
            .and_then(|n| self.uint(n, "max_output_tokens"))
            .map(|v| v.value);
        m.unsupported_params = f
            .get("unsupported_params")
            .map(|n| self.param_list(n, "unsupported_params"))
            .unwrap_or_default();
        Some(m)
    }

    fn surface(&mut self, node: &Node) -> Option<ApiSurface> {
        let f = self.fields(node, "an API surface", SURFACE_FIELDS)?;
        let format =
            self.required_string(&f, node, "format", "an API surface", "format: openai")?;
        let parsed = match format.value.to_ascii_lowercase().as_str() {
            "openai" => ApiFormat::OpenAi,
            "anthropic" => ApiFormat::Anthropic,
            other => {
                let mut d = Diagnostic::new(
                    Code::ApiFormat,
                    format.span.clone(),
                    format!("unknown API format `{other}`"),
                );
                if let Some(s) = did_you_mean(other, ["openai", "anthropic"]) {
                    d = d.label(format!("did you mean `{s}`?"));
                }
                self.push(d.help("the formats are `openai` and `anthropic`"));
                return None;
            }
        };
        let surface = f.get("surface").and_then(|n| self.string(n, "`surface`"));
        if let Some(s) = &surface
            && !SURFACES.contains(&s.value.as_str())
        {
            let mut d = Diagnostic::new(
                Code::UnknownSurface,
                s.span.clone(),
                format!("unknown API surface `{}`", s.value),
            );
            if let Some(m) = did_you_mean(&s.value, SURFACES.iter().copied()) {
                d = d.label(format!("did you mean `{m}`?"));
            }
            self.push(d.help(format!("surfaces are {}", SURFACES.join(", "))));
        }
        let supported_params = f
            .get("supported_params")
            .map(|n| self.param_list(n, "supported_params"))
            .unwrap_or_default();
        if !supported_params.is_empty() && surface.is_none() {
            let span = f
                .key("supported_params")
                .map(|k| k.span.clone())
                .unwrap_or(node.span.clone());
            self.push(
                Diagnostic::new(
                    Code::SupportedParamsWithoutSurface,
                    span,
                    "`supported_params` needs a `surface`",
                )
                .label("ignored without a surface")
                .help("add `surface: chat-completions` (or responses, messages, …) to this entry"),
            );
        }
        Some(ApiSurface {
            span: node.span.clone(),
            format: Sp::new(parsed, format.span),
            surface,
            supported_params,
        })
    }

    fn selection(&mut self, node: &Node, field: &str) -> Option<Selection> {
        let f = self.fields(node, &format!("`{field}`"), &["strategy"])?;
        let strategy_node = f.get("strategy")?;
        let strategy = match &strategy_node.value {
            Value::Seq(_) => self.string_list(strategy_node, "`strategy`"),
            Value::Null => Vec::new(),
            Value::Str(s) => {
                let help = if s.contains('\n') {
                    "write one CEL expression per list item: `strategy:` then `- \"ai.models.filter(...)\"` lines"
                        .to_string()
                } else {
                    format!(
                        "write it as a list: `strategy: [\"{}\"]`",
                        s.replace('"', "\\\"")
                    )
                };
                self.push(
                    Diagnostic::new(
                        Code::StrategyNotAList,
                        strategy_node.span.clone(),
                        "`strategy` must be a list of CEL expressions, found a string",
                    )
                    .label("not a list")
                    .help(help),
                );
                Vec::new()
            }
            other => {
                self.push(
                    Diagnostic::new(
                        Code::StrategyNotAList,
                        strategy_node.span.clone(),
                        format!(
                            "`strategy` must be a list of CEL expressions, found {}",
                            other.kind()
                        ),
                    )
                    .help("write `strategy:` followed by `- \"ai.models\"`-style items"),
                );
                Vec::new()
            }
        };
        Some(Selection {
            span: node.span.clone(),
            strategy,
        })
    }

    // --- leaf readers ------------------------------------------------------------------------

    fn token_limit(&mut self, node: &Node, field: &str) -> Option<Sp<u64>> {
        let v = self.uint(node, field)?;
        if v.value == 0 || v.value > MAX_TOKEN_LIMIT {
            self.push(
                Diagnostic::new(
                    Code::TokenLimit,
                    node.span.clone(),
                    format!("`{field}` must be between 1 and 500,000, found {}", v.value),
                )
                .label("out of range")
                .help("ngrok caps token limits at 500000; remove the field for no limit"),
            );
            return None;
        }
        Some(v)
    }

    fn on_error(&mut self, node: &Node) -> Option<Sp<OnError>> {
        let s = self.string(node, "`on_error`")?;
        match s.value.as_str() {
            "halt" => Some(Sp::new(OnError::Halt, s.span)),
            "continue" => Some(Sp::new(OnError::Continue, s.span)),
            other => {
                let mut d = Diagnostic::new(
                    Code::OnErrorValue,
                    s.span.clone(),
                    format!("`on_error` must be `halt` or `continue`, found `{other}`"),
                );
                if let Some(m) = did_you_mean(other, ["halt", "continue"]) {
                    d = d.label(format!("did you mean `{m}`?"));
                }
                self.push(d.help(
                    "`halt` returns the error to the client; `continue` runs the next action",
                ));
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, field: &str) -> Option<Sp<Duration>> {
        let text = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => {
                self.push(
                    Diagnostic::new(
                        Code::BadDuration,
                        node.span.clone(),
                        format!("`{field}` needs a unit"),
                    )
                    .label("a bare number")
                    .help(format!(
                        "write a duration string such as \"{i}s\" or \"{}m\"",
                        (i / 60).max(1)
                    )),
                );
                return None;
            }
            other => {
                self.push(
                    Diagnostic::new(
                        Code::BadDuration,
                        node.span.clone(),
                        format!(
                            "`{field}` must be a duration string, found {}",
                            other.kind()
                        ),
                    )
                    .help("write a duration such as \"90s\", \"2m\" or \"1h30m\""),
                );
                return None;
            }
        };
        match duration::parse(&text) {
            Ok(d) if d.is_zero() => {
                self.push(
                    Diagnostic::new(Code::BadDuration, node.span.clone(), format!("`{field}` must be longer than zero"))
                        .help("remove the field to use the default, or give a positive duration such as \"30s\""),
                );
                None
            }
            Ok(d) => Some(Sp::new(d, node.span.clone())),
            Err(why) => {
                self.push(
                    Diagnostic::new(Code::BadDuration, node.span.clone(), format!("`{text}` is not a duration: {why}"))
                        .label("bad duration")
                        .help("use Go duration syntax: a number and a unit (ms, s, m, h), e.g. \"90s\" or \"1h30m\""),
                );
                None
            }
        }
    }

    fn metadata(&mut self, node: &Node) -> serde_json::Map<String, serde_json::Value> {
        match node.to_json() {
            serde_json::Value::Object(m) => m,
            serde_json::Value::Null => serde_json::Map::new(),
            _ => {
                self.push(
                    Diagnostic::new(
                        Code::WrongType,
                        node.span.clone(),
                        format!("`metadata` must be a mapping, found {}", node.value.kind()),
                    )
                    .help("write key/value pairs, e.g. `metadata: {tier: premium}`"),
                );
                serde_json::Map::new()
            }
        }
    }

    fn template_map(&mut self, node: &Node, field: &str) -> Vec<(Sp<String>, Sp<Template>)> {
        let Some(entries) = node.as_map() else {
            if !matches!(node.value, Value::Null) {
                self.push(
                    Diagnostic::new(
                        Code::WrongType,
                        node.span.clone(),
                        format!("`{field}` must be a mapping, found {}", node.value.kind()),
                    )
                    .help(format!("write `{field}:` followed by `name: value` lines")),
                );
            }
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            let text = match &v.value {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    self.push(
                        Diagnostic::new(
                            Code::WrongType,
                            v.span.clone(),
                            format!(
                                "`{field}.{}` must be a string, found {}",
                                k.text,
                                other.kind()
                            ),
                        )
                        .help("quote the value"),
                    );
                    continue;
                }
            };
            let value = Sp::new(text, v.span.clone());
            if let Some(t) = self.template(&value) {
                out.push((
                    Sp::new(k.text.clone(), k.span.clone()),
                    Sp::new(t, v.span.clone()),
                ));
            }
        }
        out
    }

    /// `body` stays a node tree; its strings are checked as templates.
    fn body(&mut self, node: &Node) -> Vec<(Sp<String>, Node)> {
        let Some(entries) = node.as_map() else {
            if !matches!(node.value, Value::Null) {
                self.push(
                    Diagnostic::new(
                        Code::WrongType,
                        node.span.clone(),
                        format!("`body` must be a mapping, found {}", node.value.kind()),
                    )
                    .help("write the JSON fields to merge, e.g. `body: {temperature: 0.2}`"),
                );
            }
            return Vec::new();
        };
        for (_, v) in entries {
            self.check_templates_in(v);
        }
        entries
            .iter()
            .map(|(k, v)| (Sp::new(k.text.clone(), k.span.clone()), v.clone()))
            .collect()
    }

    fn check_templates_in(&mut self, node: &Node) {
        match &node.value {
            Value::Str(s) => {
                let _ = self.template(&Sp::new(s.clone(), node.span.clone()));
            }
            Value::Seq(items) => items.iter().for_each(|i| self.check_templates_in(i)),
            Value::Map(entries) => entries.iter().for_each(|(_, v)| self.check_templates_in(v)),
            _ => {}
        }
    }

    pub fn template(&mut self, value: &Sp<String>) -> Option<Template> {
        match Template::parse(&value.value) {
            Ok(t) => Some(t),
            Err(errors) => {
                for e in errors {
                    let span = inner_span(self.text, &value.span, &value.value, e.range.clone());
                    self.push(template_error(e, span));
                }
                None
            }
        }
    }

    fn param_list(&mut self, node: &Node, field: &str) -> Vec<Sp<String>> {
        let Some(items) = self.list(node, &format!("`{field}`"), "parameter") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            match &item.value {
                Value::Str(s) => out.push(Sp::new(s.clone(), item.span.clone())),
                Value::Map(_) => {
                    if let Some(f) = self.fields(item, "a parameter", &["name"])
                        && let Some(name) = self.required_string(
                            &f,
                            item,
                            "name",
                            "a parameter",
                            "name: temperature",
                        )
                    {
                        out.push(name);
                    }
                }
                other => self.push(
                    Diagnostic::new(
                        Code::WrongType,
                        item.span.clone(),
                        format!("a parameter must be `name: PARAM`, found {}", other.kind()),
                    )
                    .help("write `- name: temperature`"),
                ),
            }
        }
        out
    }

    fn required_string(
        &mut self,
        f: &Fields,
        node: &Node,
        key: &str,
        what: &str,
        example: &str,
    ) -> Option<Sp<String>> {
        match f.get(key) {
            Some(n) => {
                let s = self.string(n, &format!("`{key}`"))?;
                if s.value.trim().is_empty() {
                    self.push(
                        Diagnostic::new(
                            Code::EmptyValue,
                            n.span.clone(),
                            format!("`{key}` of {what} is empty"),
                        )
                        .help(format!("write e.g. `{example}`")),
                    );
                    return None;
                }
                Some(s)
            }
            None => {
                self.push(
                    Diagnostic::new(
                        Code::MissingField,
                        node.span.clone(),
                        format!("{what} needs `{key}`"),
                    )
                    .label(format!("`{key}` missing"))
                    .help(format!("add `{example}`")),
                );
                None
            }
        }
    }

    fn fields<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str]) -> Option<Fields<'n>> {
        let entries = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => return Some(Fields { entries: &[] }),
            other => {
                self.push(
                    Diagnostic::new(
                        Code::WrongType,
                        node.span.clone(),
                        format!("{what} must be a mapping, found {}", other.kind()),
                    )
                    .help(format!("{what} takes {}", allowed.join(", "))),
                );
                return None;
            }
        };
        for (key, _) in entries {
            if !allowed.contains(&key.text.as_str()) {
                let mut d = Diagnostic::new(
                    Code::UnknownField,
                    key.span.clone(),
                    format!("unknown field `{}` in {what}", key.text),
                );
                d = match did_you_mean(&key.text, allowed.iter().copied()) {
                    Some(s) => d.label(format!("did you mean `{s}`?")),
                    None => d.label("unknown field"),
                };
                self.push(d.help(format!("{what} takes {}", allowed.join(", "))));
            }
        }
        Some(Fields { entries })
    }

    fn list<'n>(&mut self, node: &'n Node, what: &str, item: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            Value::Null => None,
            other => {
                self.push(
                    Diagnostic::new(
                        Code::WrongType,
                        node.span.clone(),
                        format!("{what} must be a list, found {}", other.kind()),
                    )
                    .help(format!(
                        "write each {item} as a list item starting with `- `"
                    )),
                );
                None
            }
        }
    }

    pub fn string(&mut self, node: &Node, what: &str) -> Option<Sp<String>> {
        match &node.value {
            Value::Str(s) => Some(Sp::new(s.clone(), node.span.clone())),
            // A model or provider id like `3` or `1.5` is text to the user; take it as written.
            Value::Int(_) | Value::Float(_) => Some(Sp::new(
                self.text[node.span.clone()].trim().to_string(),
                node.span.clone(),
            )),
            other => {
                self.push(
                    Diagnostic::new(
                        Code::WrongType,
                        node.span.clone(),
                        format!("{what} must be a string, found {}", other.kind()),
                    )
                    .help("write a quoted string"),
                );
                None
            }
        }
    }

    fn string_list(&mut self, node: &Node, what: &str) -> Vec<Sp<String>> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .filter_map(|i| self.string(i, &format!("each item of {what}")))
                .collect(),
            Value::Null => Vec::new(),
            Value::Str(s) => {
                self.push(
                    Diagnostic::new(
                        Code::WrongType,
                        node.span.clone(),
                        format!("{what} must be a list, found a string"),
                    )
                    .help(format!("write it as a list: [\"{s}\"]")),
                );
                Vec::new()
            }
            other => {
                self.push(
                    Diagnostic::new(
                        Code::WrongType,
                        node.span.clone(),
                        format!("{what} must be a list of strings, found {}", other.kind()),
                    )
                    .help("write each item on its own line starting with `- `"),
                );
                Vec::new()
            }
        }
    }

    fn boolean(&mut self, node: &Node, field: &str) -> Option<Sp<bool>> {
        match &node.value {
            Value::Bool(b) => Some(Sp::new(*b, node.span.clone())),
            Value::Str(s) if s == "true" || s == "false" => {
                self.push(
                    Diagnostic::new(
                        Code::WrongType,
                        node.span.clone(),
                        format!("`{field}` must be a boolean, found the string \"{s}\""),
                    )
                    .help(format!("remove the quotes: `{field}: {s}`")),
                );
                None
            }
            other => {
                self.push(
                    Diagnostic::new(
                        Code::WrongType,
                        node.span.clone(),
                        format!("`{field}` must be true or false, found {}", other.kind()),
                    )
                    .help(format!("write `{field}: true` or `{field}: false`")),
                );
                None
            }
        }
    }

    fn uint(&mut self, node: &Node, field: &str) -> Option<Sp<u64>> {
        match &node.value {
            Value::Int(i) if *i >= 0 => Some(Sp::new(*i as u64, node.span.clone())),
            Value::Str(s) if s.parse::<u64>().is_ok() => {
                self.push(
                    Diagnostic::new(
                        Code::WrongType,
                        node.span.clone(),
                        format!("`{field}` must be a number, found the string \"{s}\""),
                    )
                    .help(format!("remove the quotes: `{field}: {s}`")),
                );
                None
            }
            other => {
                self.push(
                    Diagnostic::new(
                        Code::WrongType,
                        node.span.clone(),
                        format!("`{field}` must be a whole number, found {}", other.kind()),
                    )
                    .help(format!("write e.g. `{field}: 4096`")),
                );
                None
            }
        }
    }
}

/// A mapping's entries, looked up by name.
pub(crate) struct Fields<'n> {
    entries: &'n [(Key, Node)],
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.text == key)
            .map(|(_, v)| v)
    }
    pub fn key(&self, key: &str) -> Option<&'n Key> {
        self.entries
            .iter()
            .find(|(k, _)| k.text == key)
            .map(|(k, _)| k)
    }
}

fn template_error(e: TemplateError, span: Span) -> Diagnostic {
    match e.kind {
        TemplateErrorKind::Unterminated => {
            Diagnostic::new(Code::InterpolationSyntax, span, "`${` is never closed")
                .label("unterminated")
                .help("close the expression with `}`, e.g. `${secrets.get('vault', 'name')}`")
        }
        TemplateErrorKind::Empty => {
            Diagnostic::new(Code::InterpolationSyntax, span, "empty `${}` expression")
                .help("put a CEL expression inside, or remove the `${}`")
        }
        TemplateErrorKind::SecretsArity(n) => Diagnostic::new(
            Code::SecretsGetArity,
            span,
            format!("`secrets.get` takes a vault and a name, found {n} arguments"),
        )
        .help("write `secrets.get('vault', 'name')`"),
        TemplateErrorKind::SecretsNotLiteral => Diagnostic::new(
            Code::SecretsGetArity,
            span,
            "`secrets.get` arguments must be quoted strings",
        )
        .help("write `secrets.get('vault', 'name')` with literal names"),
    }
}

/// Maps a byte range inside a scalar's *value* to a span in the file. Exact for plain scalars
/// and quoted scalars without escapes; otherwise the whole scalar is underlined.
pub fn inner_span(text: &str, node: &Span, value: &str, range: std::ops::Range<usize>) -> Span {
    let Some(slice) = text.get(node.clone()) else {
        return node.clone();
    };
    let base = if slice == value {
        Some(node.start)
    } else if slice.len() >= 2
        && (slice.starts_with('"') || slice.starts_with('\''))
        && &slice[1..slice.len() - 1] == value
    {
        Some(node.start + 1)
    } else {
        None
    };
    match base {
        Some(b) if range.end <= value.len() => b + range.start..b + range.end.max(range.start),
        _ => node.clone(),
    }
}
