//! `Plan`: the contract between the engine and everything that uses it. `explain` prints it,
//! `serve` executes it, `aigw test` asserts on it.

use serde::Serialize;

use crate::policy::ApiFormat;

/// What the engine needs to know about a request: no HTTP types.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// API path as the client called it, e.g. `/v1/chat/completions`.
    pub path: String,
    /// `model` from the body.
    pub model: Option<String>,
    /// `models` from the body, in client order.
    pub models: Vec<String>,
}

/// Planning inputs that are not part of the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Seeds `random()` and `randomize()`; serve draws a fresh one per request.
    pub seed: u64,
}

/// Which API surface and format a path speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Route {
    pub format: ApiFormat,
    pub surface: &'static str,
}

/// How a client's model string was understood.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRef {
    /// As the client wrote it.
    pub text: String,
    /// The provider prefix, when one was given and recognised.
    pub provider: Option<String>,
    /// The model part (everything after the first `:` when prefixed).
    pub model: String,
}

/// One candidate the plan would try.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attempt {
    /// Canonical provider id.
    pub provider: String,
    /// The model id sent upstream (prefix stripped, alias resolved).
    pub model: String,
    /// Full upstream URL; `None` when the provider has no usable base URL.
    pub url: Option<String>,
    pub key: KeyChoice,
    /// Index into the engine's model universe (for metrics and `--fail` matching).
    #[serde(skip)]
    pub model_index: usize,
}

/// Which credential an attempt uses.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeyChoice {
    /// The client's own `Authorization` / `x-api-key` goes upstream.
    Passthrough,
    /// A configured key: its position in `api_keys` and a redacted label (never the value).
    Configured { index: usize, label: String },
}

impl KeyChoice {
    pub fn label(&self) -> String {
        match self {
            KeyChoice::Passthrough => "client key (passthrough)".into(),
            KeyChoice::Configured { index, label } => format!("key #{} {label}", index + 1),
        }
    }
}

/// What happened to one strategy.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StrategyOutcome {
    /// Evaluated; the counts at each step of ngrok's pipeline.
    Evaluated {
        returned: Vec<String>,
        after_allowed_filter: Vec<String>,
        after_client_filter: Vec<String>,
    },
    Failed {
        error: String,
    },
    NotEvaluated,
}

#[derive(Debug, Clone, Serialize)]
pub struct StrategyStep {
    pub expression: String,
    #[serde(flatten)]
    pub outcome: StrategyOutcome,
    pub chosen: bool,
}

/// A model that is not in the plan, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LeftOut {
    /// `provider:model`.
    pub model: String,
    pub reason: String,
}

/// Why no candidate exists, in ngrok's terms.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanError {
    /// `ERR_NGROK_3805` etc.
    pub code: &'static str,
    pub status: u16,
    pub message: String,
}

/// The result of planning one request.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub route: Option<Route>,
    /// The client's models in preference order; empty when the strategies choose freely.
    pub requested: Vec<ModelRef>,
    pub strategies: Vec<StrategyStep>,
    /// Candidates in the order they are tried: key by key within a model, then model by model.
    pub attempts: Vec<Attempt>,
    /// Attempts beyond the attempt cap, left out of `attempts`.
    pub truncated: usize,
    pub left_out: Vec<LeftOut>,
    pub error: Option<PlanError>,
}

impl Plan {
    pub fn first(&self) -> Option<&Attempt> {
        self.attempts.first()
    }

    /// `provider:model` of each attempt, in order (what `aigw test` compares).
    pub fn order(&self) -> Vec<String> {
        self.attempts
            .iter()
            .map(|a| format!("{}:{}", a.provider, a.model))
            .collect()
    }
}

/// ngrok's error codes for planning and execution failures.
pub mod codes {
    pub const INVALID_BODY: (&str, u16) = ("ERR_NGROK_3801", 400);
    pub const NO_API_KEY: (&str, u16) = ("ERR_NGROK_3802", 400);
    pub const SELECTION_FAILED: (&str, u16) = ("ERR_NGROK_3803", 422);
    pub const NO_MATCHING_MODELS: (&str, u16) = ("ERR_NGROK_3804", 422);
    pub const SELECTION_EMPTY: (&str, u16) = ("ERR_NGROK_3805", 422);
    pub const WRONG_RESULT_TYPE: (&str, u16) = ("ERR_NGROK_3806", 422);
    pub const ALL_FAILED: (&str, u16) = ("ERR_NGROK_3807", 503);
    pub const KEY_SELECTION_FAILED: (&str, u16) = ("ERR_NGROK_3808", 422);
    pub const TOTAL_TIMEOUT: (&str, u16) = ("ERR_NGROK_3810", 504);
    pub const INPUT_TOO_LARGE: (&str, u16) = ("ERR_NGROK_3811", 413);
    pub const TOO_MANY_ATTEMPTS: (&str, u16) = ("ERR_NGROK_3812", 503);
    pub const NO_COMPATIBLE_MODELS: (&str, u16) = ("ERR_NGROK_3813", 422);
    /// A `${…}` of the action's config could not be evaluated (Traffic Policy's code).
    pub const CONFIG_EVAL: (&str, u16) = ("ERR_NGROK_2254", 500);
}
