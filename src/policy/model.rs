//! The typed policy: what a user wrote, every value with the span it came from.

use std::time::Duration;

use super::interpolate::Template;
use super::node::{Node, Span};

/// A value with the byte span it was written at.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sp<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Sp<T> {
    pub fn new(value: T, span: Span) -> Self {
        Sp { value, span }
    }
}

impl<T> std::ops::Deref for Sp<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// A whole traffic policy.
#[derive(Debug, Clone, Default)]
pub struct TrafficPolicy {
    pub phases: Vec<Phase>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseKind {
    OnTcpConnect,
    OnHttpRequest,
    OnHttpResponse,
    OnEventStreamMessage,
}

impl PhaseKind {
    pub const ALL: [(&'static str, PhaseKind); 4] = [
        ("on_tcp_connect", PhaseKind::OnTcpConnect),
        ("on_http_request", PhaseKind::OnHttpRequest),
        ("on_http_response", PhaseKind::OnHttpResponse),
        ("on_event_stream_message", PhaseKind::OnEventStreamMessage),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

#[derive(Debug, Clone)]
pub struct Phase {
    pub kind: PhaseKind,
    pub key_span: Span,
    pub rules: Vec<Rule>,
}

/// A rule; an action written directly under a phase becomes a rule with one action.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: Option<Sp<String>>,
    pub expressions: Vec<Sp<String>>,
    pub actions: Vec<Action>,
    /// True when the action was written as a bare list item (`- type: …`).
    pub shorthand: bool,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Action {
    pub kind: Sp<String>,
    /// The raw `config` mapping, kept for actions aigw does not model in depth.
    pub config: Option<Node>,
    /// The typed config when this is an `ai-gateway` action that could be read.
    pub ai_gateway: Option<Box<AiGateway>>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Halt,
    Continue,
}

/// The `ai-gateway` action's `config`.
#[derive(Debug, Clone, Default)]
pub struct AiGateway {
    pub span: Span,
    pub max_input_tokens: Option<Sp<u64>>,
    pub max_output_tokens: Option<Sp<u64>>,
    pub headers: Vec<(Sp<String>, Sp<Template>)>,
    pub query_params: Vec<(Sp<String>, Sp<Template>)>,
    /// Merged into the request body; strings inside may hold `${…}` templates.
    pub body: Vec<(Sp<String>, Node)>,
    pub on_error: Option<Sp<OnError>>,
    pub total_timeout: Option<Sp<Duration>>,
    pub per_request_timeout: Option<Sp<Duration>>,
    pub providers: Vec<ProviderConfig>,
    pub only_allow_configured_providers: Option<Sp<bool>>,
    pub only_allow_configured_models: Option<Sp<bool>>,
    pub model_selection: Option<Selection>,
    pub api_key_selection: Option<Selection>,
}

impl AiGateway {
    pub fn only_configured_providers(&self) -> bool {
        self.only_allow_configured_providers
            .as_ref()
            .is_some_and(|b| b.value)
    }
    pub fn only_configured_models(&self) -> bool {
        self.only_allow_configured_models
            .as_ref()
            .is_some_and(|b| b.value)
    }
    pub fn model_strategies(&self) -> &[Sp<String>] {
        self.model_selection
            .as_ref()
            .map(|s| s.strategy.as_slice())
            .unwrap_or(&[])
    }
    pub fn key_strategies(&self) -> &[Sp<String>] {
        self.api_key_selection
            .as_ref()
            .map(|s| s.strategy.as_slice())
            .unwrap_or(&[])
    }
}

#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub span: Span,
    pub strategy: Vec<Sp<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct ProviderConfig {
    pub span: Span,
    pub id: Sp<String>,
    pub id_aliases: Vec<Sp<String>>,
    pub base_url: Option<Sp<String>>,
    pub display_name: Option<Sp<String>>,
    pub description: Option<Sp<String>>,
    pub website: Option<Sp<String>>,
    pub disabled: bool,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub api_keys: Vec<ApiKeyConfig>,
    pub models: Vec<ModelConfig>,
    pub supported_api_surfaces: Vec<ApiSurface>,
}

#[derive(Debug, Clone)]
pub struct ApiKeyConfig {
    pub span: Span,
    pub value: Sp<Template>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiFormat {
    OpenAi,
    Anthropic,
}

impl ApiFormat {
    pub fn name(self) -> &'static str {
        match self {
            ApiFormat::OpenAi => "openai",
            ApiFormat::Anthropic => "anthropic",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiSurface {
    pub span: Span,
    pub format: Sp<ApiFormat>,
    pub surface: Option<Sp<String>>,
    pub supported_params: Vec<Sp<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct ModelConfig {
    pub span: Span,
    pub id: Sp<String>,
    pub id_aliases: Vec<Sp<String>>,
    pub author_id: Option<Sp<String>>,
    pub display_name: Option<Sp<String>>,
    pub description: Option<Sp<String>>,
    pub disabled: bool,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub input_modalities: Vec<String>,
    pub output_modalities: Vec<String>,
    pub max_context_window: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub supported_features: Vec<String>,
    pub unsupported_params: Vec<Sp<String>>,
}

impl TrafficPolicy {
    /// Every `ai-gateway` action with the rule that holds it, in file order.
    pub fn ai_gateways(&self) -> impl Iterator<Item = (&Rule, &AiGateway)> {
        self.phases
            .iter()
            .filter(|p| p.kind == PhaseKind::OnHttpRequest)
            .flat_map(|p| p.rules.iter())
            .flat_map(|r| {
                r.actions
                    .iter()
                    .filter_map(move |a| a.ai_gateway.as_deref().map(|g| (r, g)))
            })
    }
}
