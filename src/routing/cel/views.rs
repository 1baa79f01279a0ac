//! What a strategy sees: plain data the engine fills in from the policy, the catalog and the
//! gateway's metrics, with the field names ngrok documents for `m`, `k` and the metric scopes.
//!
//! These types know nothing of CEL; [`Universe::new`](super::Universe::new) converts them once.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// A model as `m` in `ai.models.filter(m, …)` sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelView {
    /// Model identifier, e.g. `gpt-4o` or `llama3.2:1b`.
    pub id: String,
    /// Alternative model identifiers.
    pub id_aliases: Vec<String>,
    /// Provider identifier, e.g. `openai`.
    pub provider_id: String,
    /// Alternative provider identifiers.
    pub provider_id_aliases: Vec<String>,
    /// Author identifier, e.g. `meta` for a Llama served by Ollama.
    pub author_id: String,
    /// Alternative author identifiers.
    pub author_id_aliases: Vec<String>,
    /// Human-readable name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// Whether the model is in the catalog (false for an unknown pass-through model).
    pub known: bool,
    /// Whether the model is configured under `providers[].models[]`.
    pub custom: bool,
    /// Free-form metadata: the provider's metadata with the model's merged over it (model wins).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Input modalities: `text`, `image`, `audio`, `video`, `file`.
    pub input_modalities: Vec<String>,
    /// Output modalities: `text`, `image`, `audio`.
    pub output_modalities: Vec<String>,
    /// Features such as `tool-calling`, `coding`, `vision`.
    pub supported_features: Vec<String>,
    /// Maximum context window in tokens, when known (`null` in CEL otherwise).
    pub max_context_window: Option<u64>,
    /// Maximum output tokens, when known.
    pub max_output_tokens: Option<u64>,
    /// Parameter count, when known.
    pub parameter_count: Option<u64>,
    /// Quantization method, e.g. `Q4_K_M`, when known.
    pub quantization: Option<String>,
    /// Training-data policy, when known.
    pub data_training_policy: Option<String>,
    /// Data retention in days, when known.
    pub data_retention_days: Option<u64>,
    /// Data retention policy, when known.
    pub data_retention_policy: Option<String>,
    /// Prices by price type (`text.input`, …); see [`Pricing`].
    pub pricing: Pricing,
    /// Where the model is served.
    pub datacenters: Vec<Datacenter>,
    /// Runtime metrics; all zero until the gateway has seen traffic.
    pub metrics: ModelMetrics,
    /// What `aigw serve` knows live about the model's box (`m.aigw`, aigw's own field).
    pub aigw: LiveView,
}

/// `m.aigw`: the box's health from serve's checks and traffic, whether it has the model
/// installed, and its requests in flight and queued (as of the last refresh, at most one
/// health-check interval old). Offline (`explain`, `test`) every box reads as healthy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LiveView {
    /// `healthy`, `degraded`, `down` or `unknown` (not checked).
    pub health: String,
    /// False only when the box's installed models are known and this is not among them.
    pub installed: bool,
    pub in_flight: u64,
    pub queued: u64,
}

impl Default for LiveView {
    fn default() -> Self {
        LiveView {
            health: "healthy".into(),
            installed: true,
            in_flight: 0,
            queued: 0,
        }
    }
}

/// Prices keyed by the dotted price types of `underCost` (`text.input`, `text.output`,
/// `tools.web_search.per_search_call`, …), per million tokens for the `text.*` types.
///
/// In CEL, `m.pricing` is the nested form of these keys (`m.pricing.text.input`) plus two
/// shorthands, `m.pricing.input` and `m.pricing.output` for `text.input` and `text.output`, as in
/// ngrok's `sortBy(m, m.pricing.input)`. A price that is not set reads as `null`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pricing(pub IndexMap<String, f64>);

/// A datacenter a model is served from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Datacenter {
    /// ISO 3166 alpha-2 country code, e.g. `US`.
    pub country_code: String,
    /// Region code, e.g. `us-east-1`.
    pub region: String,
}

/// `m.metrics`: one [`MetricsScope`] per aggregation scope, plus the per-key map.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelMetrics {
    /// Aggregated across all accounts (locally: the same as `account`).
    pub global: MetricsScope,
    /// Aggregated for the region handling the request.
    pub region: MetricsScope,
    /// This account's usage.
    pub account: MetricsScope,
    /// This endpoint's usage.
    pub endpoint: MetricsScope,
    /// Per API key, keyed by the key's hashed id (`k.id`); sparse: a key appears after its first
    /// request, so guard with `'id' in m.metrics.api_keys`.
    pub api_keys: IndexMap<String, KeyMetrics>,
}

/// Metrics for one scope; every figure is zero when there is no data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsScope {
    /// Provider the figures are for.
    pub provider: String,
    /// Model the figures are for.
    pub model: String,
    /// Requests in the window.
    pub request_count: u64,
    /// Window start, Unix seconds.
    pub start_time: u64,
    /// Window end, Unix seconds.
    pub end_time: u64,
    /// Latency figures in milliseconds.
    pub latency: Latency,
    /// Error fractions from 0 to 1.
    pub error_rate: ErrorRate,
    /// Token counts.
    pub token: TokenUsage,
}

/// `….latency`: milliseconds, as integers (ngrok documents them as uint32).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latency {
    /// Request received → upstream sent, average.
    pub gateway_ms_avg: u64,
    /// Request received → upstream sent, 95th percentile.
    pub gateway_ms_p95: u64,
    /// Time to receive the full response, average.
    pub upstream_ms_avg: u64,
    /// Time to receive the full response, 95th percentile.
    pub upstream_ms_p95: u64,
    /// Time to first token (streaming), average.
    pub time_to_first_token_ms_avg: u64,
    /// Time to first token (streaming), 95th percentile.
    pub time_to_first_token_ms_p95: u64,
    /// Time per output token (streaming), average.
    pub time_per_output_token_ms_avg: u64,
    /// Time per output token (streaming), 95th percentile.
    pub time_per_output_token_ms_p95: u64,
}

/// `….error_rate` and `k.error_rate`: fractions from 0 to 1.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorRate {
    /// Any non-2xx/3xx response.
    pub total: f64,
    /// No response within the timeout.
    pub timeout: f64,
    /// HTTP 429.
    pub rate_limit: f64,
    /// 4xx other than 429.
    pub client: f64,
    /// 5xx.
    pub server: f64,
}

/// `….token`: token counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenUsage {
    /// Input tokens as reported by the provider.
    pub provider_input: u64,
    /// Output tokens as reported by the provider.
    pub provider_output: u64,
    /// Input tokens as estimated by the gateway.
    pub estimated_input: u64,
    /// Output tokens as estimated by the gateway.
    pub estimated_output: u64,
}

/// `m.metrics.api_keys["id"]`: a [`MetricsScope`] plus the key's quota.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyMetrics {
    /// The scope's figures.
    #[serde(flatten)]
    pub scope: MetricsScope,
    /// Remaining and limit figures, when the provider reported them.
    pub quota: Quota,
}

/// `k.quota` and `m.metrics.api_keys[…].quota`: `null` in CEL when unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Quota {
    /// Requests left in the provider's window.
    pub remaining_requests: Option<i64>,
    /// Tokens left in the provider's window.
    pub remaining_tokens: Option<i64>,
    /// Request limit of the window.
    pub limit_requests: Option<i64>,
    /// Token limit of the window.
    pub limit_tokens: Option<i64>,
}

/// A provider as an element of `ai.providers` sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProviderView {
    /// Provider identifier.
    pub id: String,
    /// Alternative identifiers.
    pub id_aliases: Vec<String>,
    /// Human-readable name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// Website URL.
    pub website: String,
    /// Free-form metadata from the configuration.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// A model author as an element of `ai.authors` sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthorView {
    /// Author identifier.
    pub id: String,
    /// Alternative identifiers.
    pub id_aliases: Vec<String>,
    /// Human-readable name.
    pub display_name: String,
}

/// An API key as `k` in `ai.keys.filter(k, …)` sees it.
///
/// `Debug` and `Serialize` redact `value`; only CEL sees the real key.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyView {
    /// Hashed key identifier, safe to log.
    pub id: String,
    /// The key itself.
    #[serde(serialize_with = "serialize_redacted")]
    pub value: String,
    /// Quota figures, when the provider reported them.
    pub quota: Quota,
    /// Per-key error fractions.
    pub error_rate: ErrorRate,
}

impl std::fmt::Debug for KeyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyView")
            .field("id", &self.id)
            .field("value", &redact(&self.value))
            .field("quota", &self.quota)
            .field("error_rate", &self.error_rate)
            .finish()
    }
}

pub use crate::policy::secrets::redact;

fn serialize_redacted<S: serde::Serializer>(value: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact(value))
}
