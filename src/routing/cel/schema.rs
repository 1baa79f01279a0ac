//! The shape of every object a strategy can reach: one list of fields per kind, shared by the
//! values (which store their fields in this order) and the static checker (which knows their
//! types from it).

use cel::common::types::Type;

/// The kinds of structured values in the environment; each is a CEL type of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ObjKind {
    Model,
    Provider,
    Author,
    Key,
    Datacenter,
    Metrics,
    Scope,
    KeyScope,
    Latency,
    ErrorRate,
    Token,
    Quota,
    Live,
}

/// The static type of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldTy {
    Str,
    /// A string, or `null` when unknown.
    NullStr,
    Bool,
    Int,
    /// An int, or `null` when unknown.
    NullInt,
    Double,
    StrList,
    Obj(ObjKind),
    ObjList(ObjKind),
    /// Free-form map: any key, missing ones read as `null` (metadata, pricing).
    Free,
    /// Map from key id to an object; a missing key is an error (`m.metrics.api_keys`).
    ObjMap(ObjKind),
}

use FieldTy::*;

const MODEL_FIELDS: &[(&str, FieldTy)] = &[
    ("id", Str),
    ("id_aliases", StrList),
    ("provider_id", Str),
    ("provider_id_aliases", StrList),
    ("author_id", Str),
    ("author_id_aliases", StrList),
    ("display_name", Str),
    ("description", Str),
    ("known", Bool),
    ("custom", Bool),
    ("metadata", Free),
    ("input_modalities", StrList),
    ("output_modalities", StrList),
    ("supported_features", StrList),
    ("max_context_window", NullInt),
    ("max_output_tokens", NullInt),
    ("parameter_count", NullInt),
    ("quantization", NullStr),
    ("data_training_policy", NullStr),
    ("data_retention_days", NullInt),
    ("data_retention_policy", NullStr),
    ("pricing", Free),
    ("datacenters", ObjList(ObjKind::Datacenter)),
    ("metrics", Obj(ObjKind::Metrics)),
    ("aigw", Obj(ObjKind::Live)),
];

/// `m.aigw`: what serve knows live about the model's provider box (aigw's own field).
const LIVE_FIELDS: &[(&str, FieldTy)] = &[
    ("health", Str),
    ("installed", Bool),
    ("in_flight", Int),
    ("queued", Int),
];

const PROVIDER_FIELDS: &[(&str, FieldTy)] = &[
    ("id", Str),
    ("id_aliases", StrList),
    ("display_name", Str),
    ("description", Str),
    ("website", Str),
    ("metadata", Free),
];

const AUTHOR_FIELDS: &[(&str, FieldTy)] =
    &[("id", Str), ("id_aliases", StrList), ("display_name", Str)];

const KEY_FIELDS: &[(&str, FieldTy)] = &[
    ("id", Str),
    ("value", Str),
    ("quota", Obj(ObjKind::Quota)),
    ("error_rate", Obj(ObjKind::ErrorRate)),
];

const DATACENTER_FIELDS: &[(&str, FieldTy)] = &[("country_code", Str), ("region", Str)];

const METRICS_FIELDS: &[(&str, FieldTy)] = &[
    ("global", Obj(ObjKind::Scope)),
    ("region", Obj(ObjKind::Scope)),
    ("account", Obj(ObjKind::Scope)),
    ("endpoint", Obj(ObjKind::Scope)),
    ("api_keys", ObjMap(ObjKind::KeyScope)),
];

const SCOPE_FIELDS: &[(&str, FieldTy)] = &[
    ("provider", Str),
    ("model", Str),
    ("request_count", Int),
    ("start_time", Int),
    ("end_time", Int),
    ("latency", Obj(ObjKind::Latency)),
    ("error_rate", Obj(ObjKind::ErrorRate)),
    ("token", Obj(ObjKind::Token)),
];

const KEY_SCOPE_FIELDS: &[(&str, FieldTy)] = &[
    ("provider", Str),
    ("model", Str),
    ("request_count", Int),
    ("start_time", Int),
    ("end_time", Int),
    ("latency", Obj(ObjKind::Latency)),
    ("error_rate", Obj(ObjKind::ErrorRate)),
    ("token", Obj(ObjKind::Token)),
    ("quota", Obj(ObjKind::Quota)),
];

const LATENCY_FIELDS: &[(&str, FieldTy)] = &[
    ("gateway_ms_avg", Int),
    ("gateway_ms_p95", Int),
    ("upstream_ms_avg", Int),
    ("upstream_ms_p95", Int),
    ("time_to_first_token_ms_avg", Int),
    ("time_to_first_token_ms_p95", Int),
    ("time_per_output_token_ms_avg", Int),
    ("time_per_output_token_ms_p95", Int),
];

const ERROR_RATE_FIELDS: &[(&str, FieldTy)] = &[
    ("total", Double),
    ("timeout", Double),
    ("rate_limit", Double),
    ("client", Double),
    ("server", Double),
];

const TOKEN_FIELDS: &[(&str, FieldTy)] = &[
    ("provider_input", Int),
    ("provider_output", Int),
    ("estimated_input", Int),
    ("estimated_output", Int),
];

const QUOTA_FIELDS: &[(&str, FieldTy)] = &[
    ("remaining_requests", NullInt),
    ("remaining_tokens", NullInt),
    ("limit_requests", NullInt),
    ("limit_tokens", NullInt),
];

static MODEL_TYPE: Type = Type::new_unspecified_type("model");
static PROVIDER_TYPE: Type = Type::new_unspecified_type("provider");
static AUTHOR_TYPE: Type = Type::new_unspecified_type("author");
static KEY_TYPE: Type = Type::new_unspecified_type("key");
static DATACENTER_TYPE: Type = Type::new_unspecified_type("datacenter");
static METRICS_TYPE: Type = Type::new_unspecified_type("metrics");
static SCOPE_TYPE: Type = Type::new_unspecified_type("metrics_scope");
static KEY_SCOPE_TYPE: Type = Type::new_unspecified_type("key_metrics_scope");
static LATENCY_TYPE: Type = Type::new_unspecified_type("latency");
static ERROR_RATE_TYPE: Type = Type::new_unspecified_type("error_rate");
static TOKEN_TYPE: Type = Type::new_unspecified_type("token");
static QUOTA_TYPE: Type = Type::new_unspecified_type("quota");
static LIVE_TYPE: Type = Type::new_unspecified_type("aigw_live");

impl ObjKind {
    /// Every kind, for tests.
    #[cfg(test)]
    pub(crate) const ALL: [ObjKind; KINDS] = ALL_KINDS;
}

/// How many kinds there are.
pub(crate) const KINDS: usize = 13;

const ALL_KINDS: [ObjKind; KINDS] = [
    ObjKind::Model,
    ObjKind::Provider,
    ObjKind::Author,
    ObjKind::Key,
    ObjKind::Datacenter,
    ObjKind::Metrics,
    ObjKind::Scope,
    ObjKind::KeyScope,
    ObjKind::Latency,
    ObjKind::ErrorRate,
    ObjKind::Token,
    ObjKind::Quota,
    ObjKind::Live,
];

impl ObjKind {
    /// The fields, in storage order.
    pub(crate) fn fields(self) -> &'static [(&'static str, FieldTy)] {
        match self {
            ObjKind::Model => MODEL_FIELDS,
            ObjKind::Provider => PROVIDER_FIELDS,
            ObjKind::Author => AUTHOR_FIELDS,
            ObjKind::Key => KEY_FIELDS,
            ObjKind::Datacenter => DATACENTER_FIELDS,
            ObjKind::Metrics => METRICS_FIELDS,
            ObjKind::Scope => SCOPE_FIELDS,
            ObjKind::KeyScope => KEY_SCOPE_FIELDS,
            ObjKind::Latency => LATENCY_FIELDS,
            ObjKind::ErrorRate => ERROR_RATE_FIELDS,
            ObjKind::Token => TOKEN_FIELDS,
            ObjKind::Quota => QUOTA_FIELDS,
            ObjKind::Live => LIVE_FIELDS,
        }
    }

    /// A dense number for tables indexed by kind.
    pub(crate) fn ordinal(self) -> usize {
        self as usize
    }

    /// For every kind, the position of `name` among its fields (`u8::MAX`: none).
    pub(crate) fn slots(name: &str) -> [u8; KINDS] {
        let mut slots = [u8::MAX; KINDS];
        for kind in ALL_KINDS {
            if let Some(i) = kind.field_index(name) {
                slots[kind.ordinal()] = i as u8;
            }
        }
        slots
    }

    /// Position of `name` among the fields.
    pub(crate) fn field_index(self, name: &str) -> Option<usize> {
        self.fields().iter().position(|(f, _)| *f == name)
    }

    /// The CEL type of values of this kind; its name is what `type(x)` and errors show.
    pub(crate) fn cel_type(self) -> &'static Type {
        match self {
            ObjKind::Model => &MODEL_TYPE,
            ObjKind::Provider => &PROVIDER_TYPE,
            ObjKind::Author => &AUTHOR_TYPE,
            ObjKind::Key => &KEY_TYPE,
            ObjKind::Datacenter => &DATACENTER_TYPE,
            ObjKind::Metrics => &METRICS_TYPE,
            ObjKind::Scope => &SCOPE_TYPE,
            ObjKind::KeyScope => &KEY_SCOPE_TYPE,
            ObjKind::Latency => &LATENCY_TYPE,
            ObjKind::ErrorRate => &ERROR_RATE_TYPE,
            ObjKind::Token => &TOKEN_TYPE,
            ObjKind::Quota => &QUOTA_TYPE,
            ObjKind::Live => &LIVE_TYPE,
        }
    }

    /// The type name, as in `list(model)`.
    pub(crate) fn name(self) -> &'static str {
        self.cel_type().name()
    }

    /// How messages refer to a value of this kind: "a model", "a metrics scope".
    pub(crate) fn article(self) -> &'static str {
        match self {
            ObjKind::Model => "a model",
            ObjKind::Provider => "a provider",
            ObjKind::Author => "an author",
            ObjKind::Key => "an API key",
            ObjKind::Datacenter => "a datacenter",
            ObjKind::Metrics => "`metrics`",
            ObjKind::Scope => "a metrics scope",
            ObjKind::KeyScope => "an API-key metrics scope",
            ObjKind::Latency => "`latency`",
            ObjKind::ErrorRate => "`error_rate`",
            ObjKind::Token => "`token`",
            ObjKind::Quota => "`quota`",
            ObjKind::Live => "`aigw`",
        }
    }
}

/// The price types `underCost` accepts (ngrok's table, verbatim).
pub(crate) const PRICE_TYPES: [&str; 10] = [
    "text.input",
    "text.output",
    "text.input_cache_write",
    "text.input_cache_read",
    "text.input_batch",
    "text.output_batch",
    "tools.web_search.per_search_call",
    "tools.code_interpreter.per_execution_call",
    "tools.file_search.per_storage_gb",
    "tools.image_generation.per_image_generation",
];

/// Position of a price type in [`PRICE_TYPES`].
pub(crate) fn price_index(price_type: &str) -> Option<usize> {
    PRICE_TYPES.iter().position(|p| *p == price_type)
}
