//! The JSON Schema of policy.yaml, for editors (yaml-language-server) and `aigw schema`.
//! Field lists come from the same constants the loader checks against, so the two cannot drift.

use serde_json::{Value, json};

use super::actions;
use super::build::{
    ACTION_FIELDS, GATEWAY_FIELDS, MAX_TOKEN_LIMIT, MODEL_FIELDS, PROVIDER_FIELDS, RULE_FIELDS,
    SURFACE_FIELDS, SURFACES,
};

const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$|^0$";

fn describe(field: &str) -> &'static str {
    match field {
        "max_input_tokens" => {
            "Most prompt tokens a request may carry (≤ 500,000); larger requests get 413 ERR_NGROK_3811."
        }
        "max_output_tokens" => {
            "Most completion tokens; aigw clamps max_tokens / max_completion_tokens to it."
        }
        "headers" => "Headers added to every upstream request; values may use ${…}.",
        "query_params" => "Query parameters added to every upstream request; values may use ${…}.",
        "body" => "JSON fields merged into every request body, overriding the client's.",
        "on_error" => {
            "halt (return the error) or continue (run the next action) when every attempt failed."
        }
        "total_timeout" => {
            "Budget for all attempts of a request, e.g. \"6m\" (default); 504 ERR_NGROK_3810 when exceeded."
        }
        "per_request_timeout" => {
            "Budget for one upstream attempt, e.g. \"3m\" (default); then the next candidate is tried."
        }
        "providers" => {
            "Providers: built-in ids (openai, anthropic, google, …) or your own with base_url."
        }
        "only_allow_configured_providers" => {
            "Reject requests for providers not listed under providers."
        }
        "only_allow_configured_models" => {
            "Reject requests for models not listed under providers[].models."
        }
        "model_selection" => "CEL strategies over ai.models; the first that returns models wins.",
        "api_key_selection" => "CEL strategies over ai.keys (deprecated for built-in providers).",
        "id" => {
            "Identifier (providers: used as the `provider:` prefix; models: as the provider knows it)."
        }
        "id_aliases" => "Other names clients may use (case-insensitive).",
        "base_url" => {
            "Endpoint URL: https://, or http:// only for ngrok .internal endpoints (and loopback with aigw)."
        }
        "display_name" => "Human-readable name.",
        "description" => "Description.",
        "website" => "Provider website.",
        "disabled" => "Keep the configuration but route nothing here.",
        "metadata" => {
            "Free-form data visible to strategies (m.metadata, m.getMetadata('a.b')); never sent upstream."
        }
        "api_keys" => "Keys tried in order; with none, the client's key passes through.",
        "models" => "Models this provider serves.",
        "supported_api_surfaces" => {
            "API formats and surfaces the provider speaks (default: openai)."
        }
        "author_id" => "Model author (e.g. meta for a Llama).",
        "input_modalities" => "text, image, audio, video, file.",
        "output_modalities" => "text, image, audio.",
        "max_context_window" => "Context window in tokens.",
        "supported_features" => "e.g. tool-calling, coding, vision.",
        "unsupported_params" => "Top-level body fields removed before forwarding to this model.",
        "format" => "openai or anthropic.",
        "surface" => "chat-completions, completions, embeddings, responses or messages.",
        "supported_params" => {
            "Allow-list of top-level body fields for this surface (needs surface)."
        }
        "name" => "A label for the rule.",
        "expressions" => "CEL conditions, all of which must be true for the rule to run.",
        "actions" => "Actions run in order when the rule matches.",
        "type" => "The action: ai-gateway, or another traffic-policy action.",
        "config" => "The action's configuration.",
        "strategy" => "CEL expressions, tried in order.",
        _ => "",
    }
}

fn object(fields: &[&str], props: Vec<(&str, Value)>, required: &[&str]) -> Value {
    let mut map = serde_json::Map::new();
    for f in fields {
        let mut schema = props
            .iter()
            .find(|(k, _)| k == f)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| json!({}));
        if let Value::Object(o) = &mut schema {
            let d = describe(f);
            if !d.is_empty() && !o.contains_key("description") {
                o.insert("description".into(), d.into());
            }
        }
        map.insert((*f).to_string(), schema);
    }
    json!({"type": "object", "additionalProperties": false, "required": required, "properties": map})
}

fn strings() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}

fn params() -> Value {
    json!({"type": "array", "items": {"anyOf": [
        {"type": "string"},
        {"type": "object", "additionalProperties": false, "required": ["name"], "properties": {"name": {"type": "string"}}}
    ]}})
}

fn selection() -> Value {
    json!({"type": "object", "additionalProperties": false, "properties": {
        "strategy": {"type": "array", "items": {"type": "string"}, "description": describe("strategy")}
    }})
}

/// The whole schema (JSON Schema draft-07, which yaml-language-server reads).
pub fn policy_schema() -> Value {
    let phase = phase_schema();
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "https://github.com/aigw/aigw/policy.schema.json",
        "title": "aigw / ngrok traffic policy with an ai-gateway action",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "on_http_request": phase.clone(),
            "on_http_response": phase.clone(),
            "on_tcp_connect": phase.clone(),
            "on_event_stream_message": phase
        },
        "definitions": {
            "rule": rule_schema(),
            "action": action_schema(),
            "ai_gateway": gateway_schema(),
            "provider": provider_schema(),
            "model": model_schema(),
            "surface": surface_schema()
        }
    })
}

/// `providers[].models[]`.
fn model_schema() -> Value {
    object(
        MODEL_FIELDS,
        vec![
            ("id", json!({"type": "string"})),
            ("id_aliases", strings()),
            ("author_id", json!({"type": "string"})),
            ("display_name", json!({"type": "string"})),
            ("description", json!({"type": "string"})),
            ("disabled", json!({"type": "boolean"})),
            ("metadata", json!({"type": "object"})),
            ("input_modalities", strings()),
            ("output_modalities", strings()),
            (
                "max_context_window",
                json!({"type": "integer", "minimum": 0}),
            ),
            (
                "max_output_tokens",
                json!({"type": "integer", "minimum": 0}),
            ),
            ("supported_features", strings()),
            ("unsupported_params", params()),
        ],
        &["id"],
    )
}

/// `providers[].supported_api_surfaces[]`.
fn surface_schema() -> Value {
    object(
        SURFACE_FIELDS,
        vec![
            ("format", json!({"enum": ["openai", "anthropic"]})),
            ("surface", json!({"enum": SURFACES})),
            ("supported_params", params()),
        ],
        &["format"],
    )
}

/// `providers[]`: its models and surfaces are `$ref`s to their definitions.
fn provider_schema() -> Value {
    object(
        PROVIDER_FIELDS,
        vec![
            ("id", json!({"type": "string", "pattern": "^[^:\\s]+$"})),
            ("id_aliases", strings()),
            (
                "base_url",
                json!({"type": "string", "pattern": "^https?://"}),
            ),
            ("display_name", json!({"type": "string"})),
            ("description", json!({"type": "string"})),
            ("website", json!({"type": "string"})),
            ("disabled", json!({"type": "boolean"})),
            ("metadata", json!({"type": "object"})),
            (
                "api_keys",
                json!({"type": "array", "items": {"type": "object", "additionalProperties": false, "required": ["value"],
                    "properties": {"value": {"type": "string", "description": "The key; use ${secrets.get('vault', 'name')}."}}}}),
            ),
            (
                "models",
                json!({"type": "array", "items": {"$ref": "#/definitions/model"}}),
            ),
            (
                "supported_api_surfaces",
                json!({"type": "array", "items": {"$ref": "#/definitions/surface"}}),
            ),
        ],
        &["id"],
    )
}

/// The ai-gateway action's `config`.
fn gateway_schema() -> Value {
    let token_limit = json!({"type": "integer", "minimum": 1, "maximum": MAX_TOKEN_LIMIT});
    let duration = json!({"type": "string", "pattern": DURATION_PATTERN});
    let string_map = json!({"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}});
    object(
        GATEWAY_FIELDS,
        vec![
            ("max_input_tokens", token_limit.clone()),
            ("max_output_tokens", token_limit),
            ("headers", string_map.clone()),
            ("query_params", string_map),
            ("body", json!({"type": "object"})),
            ("on_error", json!({"enum": ["halt", "continue"]})),
            ("total_timeout", duration.clone()),
            ("per_request_timeout", duration),
            (
                "providers",
                json!({"type": "array", "items": {"$ref": "#/definitions/provider"}}),
            ),
            (
                "only_allow_configured_providers",
                json!({"type": "boolean"}),
            ),
            ("only_allow_configured_models", json!({"type": "boolean"})),
            ("model_selection", selection()),
            ("api_key_selection", selection()),
        ],
        &[],
    )
}

/// An action: any ngrok action type; only an ai-gateway's `config` is checked further.
fn action_schema() -> Value {
    let action_names: Vec<&str> = actions::names().collect();
    debug_assert_eq!(ACTION_FIELDS, ["type", "config"]);
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["type"],
        "properties": {
            "type": {"enum": action_names, "description": describe("type")},
            "config": {"description": describe("config")}
        },
        "if": {"properties": {"type": {"const": "ai-gateway"}}},
        "then": {"properties": {"config": {"anyOf": [{"$ref": "#/definitions/ai_gateway"}, {"type": "null"}]}}}
    })
}

/// A rule: a name, CEL expressions, and the actions they guard.
fn rule_schema() -> Value {
    object(
        RULE_FIELDS,
        vec![
            ("name", json!({"type": "string"})),
            ("expressions", strings()),
            (
                "actions",
                json!({"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/action"}}),
            ),
        ],
        &["actions"],
    )
}

/// A phase (`on_http_request`…): a list of rules or bare actions.
fn phase_schema() -> Value {
    json!({"type": ["array", "null"], "items": {"anyOf": [
        {"$ref": "#/definitions/rule"},
        {"$ref": "#/definitions/action"}
    ]}})
}

/// The schema as the repository keeps it (`completions/policy.schema.json`).
pub fn policy_schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&policy_schema()).unwrap_or_default();
    s.push('\n');
    s
}
