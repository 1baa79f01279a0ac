//! Ollama's native API (`/api/*`, NDJSON streams) and the routing of its `/v1/*`.

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::fault::{api_error, bad_request};
use super::text::{
    Answer, CREATED_AT, EMBED_DIMS, EXPIRES_AT, count_tokens, embed_inputs, embedding, fnv1a,
    messages_tokens, ndjson, raw_vector,
};
use super::{Ctx, Reply, openai};

/// What `/api/version` reports.
pub const VERSION: &str = "0.12.6";
/// `context_length` reported by `/api/ps`.
const CONTEXT_LENGTH: u64 = 4096;

const NATIVE: &[&str] = &[
    "/",
    "/api/version",
    "/api/tags",
    "/api/ps",
    "/api/show",
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/api/embeddings",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
];

pub fn route(ctx: &Ctx) -> Reply {
    let path = ctx.path.as_str();
    let result = match (ctx.method.as_str(), path) {
        ("GET" | "HEAD", "/") => Ok(Reply::Text(StatusCode::OK, "Ollama is running".into())),
        ("GET" | "HEAD", "/api/version") => Ok(Reply::ok(json!({ "version": VERSION }))),
        ("GET" | "HEAD", "/api/tags") => Ok(tags(ctx)),
        ("GET", "/api/ps") => Ok(ps(ctx)),
        ("POST", "/api/show") => show(ctx),
        ("POST", "/api/generate") => generate(ctx),
        ("POST", "/api/chat") => chat(ctx),
        ("POST", "/api/embed") => embed(ctx),
        ("POST", "/api/embeddings") => embeddings_legacy(ctx),
        ("POST", "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings")
        | ("GET", "/v1/models") => Ok(openai::route(ctx)),
        ("GET", p) if p.starts_with("/v1/models/") && !p["/v1/models/".len()..].contains('/') => {
            Ok(openai::route(ctx))
        }
        // Gin's plain-text defaults.
        (_, p) if NATIVE.contains(&p) => Ok(Reply::Text(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 method not allowed".into(),
        )),
        _ => Ok(Reply::Text(
            StatusCode::NOT_FOUND,
            "404 page not found".into(),
        )),
    };
    result.unwrap_or_else(|e| e)
}

/// The JSON object body, or Ollama's 400.
fn body(ctx: &Ctx) -> Result<&Value, Reply> {
    match &ctx.json {
        Some(v @ Value::Object(_)) => Ok(v),
        _ if ctx.body.is_empty() => Err(bad_request(ctx, "missing request body")),
        Some(_) => Err(bad_request(
            ctx,
            "json: cannot unmarshal value into Go value of type api.Request",
        )),
        None => Err(bad_request(
            ctx,
            "invalid character looking for beginning of value",
        )),
    }
}

/// How "model not found" is worded (it differs by endpoint).
enum NotFound {
    /// generate, chat, show: `model 'NAME' not found`
    Quoted,
    /// embed, embeddings: `model "NAME" not found, try pulling it first`
    TryPulling,
}

/// `(requested, display)`: the name as sent (echoed back) and the installed model's name.
fn model_of(ctx: &Ctx, body: &Value, wording: NotFound) -> Result<(String, String), Reply> {
    let requested = body
        .get("model")
        .or_else(|| body.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if requested.is_empty() {
        return Err(bad_request(ctx, "model is required"));
    }
    match ctx.find_model(requested) {
        Some(display) => Ok((requested.to_string(), display)),
        None => {
            let message = match wording {
                NotFound::Quoted => format!("model '{requested}' not found"),
                NotFound::TryPulling => {
                    format!("model \"{requested}\" not found, try pulling it first")
                }
            };
            Err(api_error(
                ctx,
                StatusCode::NOT_FOUND,
                &message,
                None,
                None,
                None,
            ))
        }
    }
}

/// Whether `keep_alive` means "unload now" (0, 0.0, "0", "0s", "0m" ...). A unitless
/// non-zero string is Go's duration error.
fn unload_requested(ctx: &Ctx, keep_alive: Option<&Value>) -> Result<bool, Reply> {
    match keep_alive {
        Some(Value::Number(n)) => Ok(n.as_f64() == Some(0.0)),
        Some(Value::String(s)) if !s.is_empty() => {
            let numeric: String = s
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-' || *c == '+')
                .collect();
            let value: f64 = numeric.parse().unwrap_or(f64::NAN);
            if numeric.len() == s.len() && value != 0.0 {
                return Err(bad_request(
                    ctx,
                    &format!("time: missing unit in duration \"{s}\""),
                ));
            }
            Ok(value == 0.0)
        }
        _ => Ok(false),
    }
}

fn stream_requested(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(true)
}

/// `options.num_predict` when non-negative.
fn num_predict(body: &Value) -> Option<u64> {
    body.pointer("/options/num_predict").and_then(Value::as_u64)
}

/// The final-chunk metrics (omitempty: zeros are left out). 1 ms per prompt token, 10 ms per
/// generated token, 1 ms load.
fn metrics(prompt_tokens: u64, eval_count: u64) -> Map<String, Value> {
    let load = 1_000_000u64;
    let prompt_ns = prompt_tokens * 1_000_000;
    let eval_ns = eval_count * 10_000_000;
    let mut m = Map::new();
    for (k, v) in [
        ("total_duration", load + prompt_ns + eval_ns),
        ("load_duration", load),
        ("prompt_eval_count", prompt_tokens),
        ("prompt_eval_duration", prompt_ns),
        ("eval_count", eval_count),
        ("eval_duration", eval_ns),
    ] {
        if v != 0 {
            m.insert(k.into(), json!(v));
        }
    }
    m
}

fn object(pairs: Value, extra: Map<String, Value>) -> Value {
    let mut o = match pairs {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    o.extend(extra);
    Value::Object(o)
}

// ---------------------------------------------------------------------------------------------
// Inference

fn generate(ctx: &Ctx) -> Result<Reply, Reply> {
    let body = body(ctx)?;
    let (model, display) = model_of(ctx, body, NotFound::Quoted)?;
    let unload = unload_requested(ctx, body.get("keep_alive"))?;
    let prompt = body.get("prompt").and_then(Value::as_str).unwrap_or("");
    if prompt.is_empty() {
        // Load or unload only: one object, even when streaming.
        let reason = if unload { "unload" } else { "load" };
        if unload {
            ctx.unload(&display);
        } else {
            ctx.load(&display);
        }
        return Ok(Reply::ok(json!({
            "model": model, "created_at": CREATED_AT, "response": "", "done": true, "done_reason": reason,
        })));
    }
    if unload {
        ctx.unload(&display);
    } else {
        ctx.load(&display);
    }
    let answer = Answer::new(&ctx.label, prompt, num_predict(body));
    let prompt_tokens = count_tokens(prompt);
    let reason = if answer.truncated { "length" } else { "stop" };
    let context: Vec<u64> = (1..=prompt_tokens + answer.tokens()).collect();
    let last = |response: &str| {
        object(
            json!({
                "model": model, "created_at": CREATED_AT, "response": response, "done": true,
                "done_reason": reason, "context": context,
            }),
            metrics(prompt_tokens, answer.tokens()),
        )
    };
    if !stream_requested(body) {
        return Ok(Reply::ok(last(&answer.text())));
    }
    let chunks: Vec<Bytes> = answer
        .pieces
        .iter()
        .map(|p| {
            ndjson(
                &json!({ "model": model, "created_at": CREATED_AT, "response": p, "done": false }),
            )
        })
        .collect();
    Ok(Reply::Stream {
        chunks,
        end: vec![ndjson(&last(""))],
    })
}

fn chat(ctx: &Ctx) -> Result<Reply, Reply> {
    let body = body(ctx)?;
    let (model, display) = model_of(ctx, body, NotFound::Quoted)?;
    let unload = unload_requested(ctx, body.get("keep_alive"))?;
    let messages = body.get("messages");
    if unload {
        ctx.unload(&display);
    } else {
        ctx.load(&display);
    }
    let message = |content: &str| json!({ "role": "assistant", "content": content });
    if messages.and_then(Value::as_array).is_none_or(Vec::is_empty) {
        let reason = if unload { "unload" } else { "load" };
        return Ok(Reply::ok(json!({
            "model": model, "created_at": CREATED_AT, "message": message(""), "done": true, "done_reason": reason,
        })));
    }
    let answer = ctx.chat_answer(messages, num_predict(body));
    let prompt_tokens = messages_tokens(messages);
    let reason = if answer.truncated { "length" } else { "stop" };
    let last = |content: &str| {
        object(
            json!({
                "model": model, "created_at": CREATED_AT, "message": message(content), "done": true,
                "done_reason": reason,
            }),
            metrics(prompt_tokens, answer.tokens()),
        )
    };
    if !stream_requested(body) {
        return Ok(Reply::ok(last(&answer.text())));
    }
    let chunks: Vec<Bytes> = answer
        .pieces
        .iter()
        .map(|p| {
            ndjson(&json!({ "model": model, "created_at": CREATED_AT, "message": message(p), "done": false }))
        })
        .collect();
    Ok(Reply::Stream {
        chunks,
        end: vec![ndjson(&last(""))],
    })
}

fn embed(ctx: &Ctx) -> Result<Reply, Reply> {
    let body = body(ctx)?;
    let (model, display) = model_of(ctx, body, NotFound::TryPulling)?;
    let unload = unload_requested(ctx, body.get("keep_alive"))?;
    let inputs =
        embed_inputs(body.get("input")).map_err(|()| bad_request(ctx, "invalid input type"))?;
    if unload {
        ctx.unload(&display);
    } else {
        ctx.load(&display);
    }
    let dims = body
        .get("dimensions")
        .and_then(Value::as_u64)
        .map_or(EMBED_DIMS, |d| d as usize);
    let embeddings: Vec<Vec<f32>> = inputs.iter().map(|s| embedding(s, dims)).collect();
    let tokens: u64 = inputs.iter().map(|s| count_tokens(s)).sum();
    let mut m = metrics(tokens, 0);
    m.remove("prompt_eval_duration");
    Ok(Reply::ok(object(
        json!({ "model": model, "embeddings": embeddings }),
        m,
    )))
}

/// `/api/embeddings`: one prompt, not normalised, `[]` for an empty prompt.
fn embeddings_legacy(ctx: &Ctx) -> Result<Reply, Reply> {
    let body = body(ctx)?;
    let (_, display) = model_of(ctx, body, NotFound::TryPulling)?;
    ctx.load(&display);
    let prompt = body.get("prompt").and_then(Value::as_str).unwrap_or("");
    let v: Vec<f64> = if prompt.is_empty() {
        Vec::new()
    } else {
        raw_vector(prompt, EMBED_DIMS)
            .into_iter()
            .map(|x| f64::from(x) * 3.0)
            .collect()
    };
    Ok(Reply::ok(json!({ "embedding": v })))
}

// ---------------------------------------------------------------------------------------------
// Model listings

/// Deterministic facts about an installed model.
struct Facts {
    size: u64,
    digest: String,
    family: String,
    details: Value,
}

fn facts(name: &str) -> Facts {
    let size = 1_000_000_000 + fnv1a(name) % 4_000_000_000;
    let digest: String = (0..4u8)
        .map(|i| format!("{:016x}", fnv1a(&format!("{i}{name}"))))
        .collect();
    let base = name.rsplit('/').next().unwrap_or(name);
    let family: String = base
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    let family = if family.is_empty() {
        "llama".to_string()
    } else {
        family.to_ascii_lowercase()
    };
    let details = json!({
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    });
    Facts {
        size,
        digest,
        family,
        details,
    }
}

fn tags(ctx: &Ctx) -> Reply {
    let models: Vec<Value> = ctx
        .models
        .iter()
        .map(|name| {
            let f = facts(name);
            json!({
                "name": name, "model": name, "modified_at": CREATED_AT, "size": f.size,
                "digest": f.digest, "details": f.details,
            })
        })
        .collect();
    Reply::ok(json!({ "models": models }))
}

fn ps(ctx: &Ctx) -> Reply {
    let models: Vec<Value> = ctx
        .loaded()
        .iter()
        .map(|name| {
            let f = facts(name);
            json!({
                "name": name, "model": name, "size": f.size, "digest": f.digest, "details": f.details,
                "expires_at": EXPIRES_AT, "size_vram": f.size, "context_length": CONTEXT_LENGTH,
            })
        })
        .collect();
    Reply::ok(json!({ "models": models }))
}

fn show(ctx: &Ctx) -> Result<Reply, Reply> {
    let body = body(ctx)?;
    let requested = body
        .get("model")
        .or_else(|| body.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if requested.is_empty() {
        return Err(bad_request(ctx, "model is required"));
    }
    let Some(display) = ctx.find_model(requested) else {
        let display = super::text::model_display(ctx.kind, requested);
        return Err(api_error(
            ctx,
            StatusCode::NOT_FOUND,
            &format!("model '{display}' not found"),
            None,
            None,
            None,
        ));
    };
    let f = facts(&display);
    let mut capabilities = vec!["completion"];
    if display.contains("embed") {
        capabilities = vec!["embedding"];
    }
    let mut info = Map::new();
    info.insert("general.architecture".into(), json!(f.family));
    info.insert("general.parameter_count".into(), json!(3_212_749_888u64));
    info.insert(format!("{}.context_length", f.family), json!(131_072));
    info.insert(format!("{}.embedding_length", f.family), json!(EMBED_DIMS));
    Ok(Reply::ok(json!({
        "modelfile": format!("# Modelfile generated by the aigw stand-in\nFROM {display}\n"),
        "parameters": "temperature 0.8",
        "template": "{{ .Prompt }}",
        "details": f.details,
        "model_info": info,
        "capabilities": capabilities,
        "modified_at": CREATED_AT,
    })))
}
