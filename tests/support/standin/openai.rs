//! The OpenAI wire format, served by the OpenAI stand-in and (with Ollama's quirks) by the
//! Ollama stand-in's `/v1/*`.

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{Value, json};

use super::fault::{api_error, bad_request};
use super::text::{
    Answer, CREATED, CREATED_AT_UNIX, EMBED_DIMS, base64, content_text, count_tokens, embedding,
    last_user_text, messages_tokens, sse_data, sse_done, sse_event, u64_field,
};
use super::{Ctx, Reply, Surface};

pub fn route(ctx: &Ctx) -> Reply {
    let result = match (ctx.method.as_str(), ctx.path.as_str()) {
        ("POST", "/v1/chat/completions") => chat(ctx),
        ("POST", "/v1/completions") => completions(ctx),
        ("POST", "/v1/embeddings") => embeddings(ctx),
        ("POST", "/v1/responses") if ctx.surface == Surface::OpenAi => responses(ctx),
        ("GET", "/v1/models") => Ok(models(ctx)),
        ("GET", p) if p.starts_with("/v1/models/") => model(ctx, &p["/v1/models/".len()..]),
        (m, p) => Err(api_error(
            ctx,
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({m} {p})"),
            Some("invalid_request_error"),
            None,
            None,
        )),
    };
    result.unwrap_or_else(|e| e)
}

/// The JSON object body, or the dialect's 400.
fn body(ctx: &Ctx) -> Result<&Value, Reply> {
    match &ctx.json {
        Some(v @ Value::Object(_)) => Ok(v),
        _ if ctx.surface == Surface::OllamaV1 => Err(bad_request(
            ctx,
            if ctx.body.is_empty() {
                "EOF"
            } else {
                "invalid character looking for beginning of value"
            },
        )),
        _ => Err(bad_request(
            ctx,
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but \
             what was sent was not valid JSON.)",
        )),
    }
}

/// The requested model string (echoed in replies), checked against the known models.
fn model_of(ctx: &Ctx, body: &Value) -> Result<String, Reply> {
    let requested = body.get("model").and_then(Value::as_str).unwrap_or("");
    if requested.is_empty() {
        return Err(match ctx.surface {
            Surface::OllamaV1 => bad_request(ctx, "model is required"),
            _ => bad_request(ctx, "you must provide a model parameter"),
        });
    }
    match ctx.find_model(requested) {
        Some(display) => {
            if ctx.surface == Surface::OllamaV1 {
                ctx.load(&display);
            }
            Ok(requested.to_string())
        }
        None if ctx.surface == Surface::OllamaV1 => Err(api_error(
            ctx,
            StatusCode::NOT_FOUND,
            &format!("model '{requested}' not found"),
            None,
            None,
            None,
        )),
        None => Err(api_error(
            ctx,
            StatusCode::NOT_FOUND,
            &format!("The model `{requested}` does not exist or you do not have access to it."),
            Some("invalid_request_error"),
            None,
            Some("model_not_found"),
        )),
    }
}

fn missing(ctx: &Ctx, param: &str) -> Reply {
    api_error(
        ctx,
        StatusCode::BAD_REQUEST,
        &format!("Missing required parameter: '{param}'."),
        Some("invalid_request_error"),
        Some(param),
        Some("missing_required_parameter"),
    )
}

fn stream_flags(body: &Value) -> (bool, bool) {
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    (stream, include_usage)
}

fn usage(ctx: &Ctx, prompt: u64, completion: u64) -> Value {
    if ctx.surface == Surface::OllamaV1 {
        return json!({
            "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        });
    }
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
        },
    })
}

fn fingerprint(ctx: &Ctx) -> &'static str {
    match ctx.surface {
        Surface::OllamaV1 => "fp_ollama",
        _ => "fp_standin",
    }
}

/// Common envelope of a completion object or chunk.
fn envelope(ctx: &Ctx, id: &str, object: &str, model: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), json!(id));
    m.insert("object".into(), json!(object));
    m.insert("created".into(), json!(CREATED));
    m.insert("model".into(), json!(model));
    if ctx.surface == Surface::OpenAi {
        m.insert("service_tier".into(), json!("default"));
    }
    m.insert("system_fingerprint".into(), json!(fingerprint(ctx)));
    m
}

// ---------------------------------------------------------------------------------------------
// /v1/chat/completions

fn chat(ctx: &Ctx) -> Result<Reply, Reply> {
    let body = body(ctx)?;
    let model = model_of(ctx, body)?;
    let messages = body.get("messages");
    match messages.and_then(Value::as_array) {
        None => return Err(missing(ctx, "messages")),
        Some(ms) if ms.is_empty() => {
            return Err(match ctx.surface {
                Surface::OllamaV1 => bad_request(ctx, "[] is too short - 'messages'"),
                _ => api_error(
                    ctx,
                    StatusCode::BAD_REQUEST,
                    "Invalid 'messages': empty array. Expected an array with minimum length 1, \
                     but got an empty array instead.",
                    Some("invalid_request_error"),
                    Some("messages"),
                    Some("empty_array"),
                ),
            });
        }
        Some(_) => {}
    }
    let max = u64_field(body.get("max_completion_tokens")).or(u64_field(body.get("max_tokens")));
    let answer = ctx.chat_answer(messages, max);
    let usage = usage(ctx, messages_tokens(messages), answer.tokens());
    let finish = if answer.truncated { "length" } else { "stop" };
    let id = format!("chatcmpl-standin-{}", ctx.seq);
    let (stream, include_usage) = stream_flags(body);

    if !stream {
        let mut message = json!({ "role": "assistant", "content": answer.text() });
        if ctx.surface == Surface::OpenAi {
            message["refusal"] = Value::Null;
            message["annotations"] = json!([]);
        }
        let mut o = envelope(ctx, &id, "chat.completion", &model);
        o.insert(
            "choices".into(),
            json!([{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish }]),
        );
        o.insert("usage".into(), usage);
        return Ok(Reply::ok(Value::Object(o)));
    }

    let chunk = |delta: Value, finish: Option<&str>| {
        let mut o = envelope(ctx, &id, "chat.completion.chunk", &model);
        o.insert(
            "choices".into(),
            json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]),
        );
        if include_usage && ctx.surface == Surface::OpenAi {
            o.insert("usage".into(), Value::Null);
        }
        sse_data(&Value::Object(o))
    };
    let mut chunks: Vec<Bytes> = Vec::new();
    if ctx.surface == Surface::OllamaV1 {
        // Ollama 0.12: every delta carries the role; finish_reason rides on the last chunk.
        for piece in &answer.pieces {
            chunks.push(chunk(
                json!({ "role": "assistant", "content": piece }),
                None,
            ));
        }
        chunks.push(chunk(
            json!({ "role": "assistant", "content": "" }),
            Some(finish),
        ));
    } else {
        chunks.push(chunk(
            json!({ "role": "assistant", "content": "", "refusal": null }),
            None,
        ));
        for piece in &answer.pieces {
            chunks.push(chunk(json!({ "content": piece }), None));
        }
        chunks.push(chunk(json!({}), Some(finish)));
    }
    if include_usage {
        let mut o = envelope(ctx, &id, "chat.completion.chunk", &model);
        o.insert("choices".into(), json!([]));
        o.insert("usage".into(), usage);
        chunks.push(sse_data(&Value::Object(o)));
    }
    Ok(Reply::Stream {
        chunks,
        end: vec![sse_done()],
    })
}

// ---------------------------------------------------------------------------------------------
// /v1/completions

fn completions(ctx: &Ctx) -> Result<Reply, Reply> {
    let body = body(ctx)?;
    let model = model_of(ctx, body)?;
    let prompt = body.get("prompt").map(content_text).unwrap_or_default();
    let answer = Answer::new(&ctx.label, &prompt, u64_field(body.get("max_tokens")));
    let prompt_tokens = count_tokens(&prompt);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": answer.tokens(),
        "total_tokens": prompt_tokens + answer.tokens(),
    });
    let finish = if answer.truncated { "length" } else { "stop" };
    let id = format!("cmpl-standin-{}", ctx.seq);
    let (stream, include_usage) = stream_flags(body);
    let choice = |text: &str, finish: Option<&str>| json!([{ "text": text, "index": 0, "logprobs": null, "finish_reason": finish }]);

    if !stream {
        let mut o = envelope(ctx, &id, "text_completion", &model);
        o.insert("choices".into(), choice(&answer.text(), Some(finish)));
        o.insert("usage".into(), usage);
        return Ok(Reply::ok(Value::Object(o)));
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    for piece in &answer.pieces {
        let mut o = envelope(ctx, &id, "text_completion", &model);
        o.insert("choices".into(), choice(piece, None));
        chunks.push(sse_data(&Value::Object(o)));
    }
    let mut o = envelope(ctx, &id, "text_completion", &model);
    o.insert("choices".into(), choice("", Some(finish)));
    chunks.push(sse_data(&Value::Object(o)));
    if include_usage {
        let mut o = envelope(ctx, &id, "text_completion", &model);
        o.insert("choices".into(), json!([]));
        o.insert("usage".into(), usage);
        chunks.push(sse_data(&Value::Object(o)));
    }
    Ok(Reply::Stream {
        chunks,
        end: vec![sse_done()],
    })
}

// ---------------------------------------------------------------------------------------------
// /v1/embeddings

fn embeddings(ctx: &Ctx) -> Result<Reply, Reply> {
    let body = body(ctx)?;
    let model = model_of(ctx, body)?;
    let inputs: Vec<String> = match body.get("input") {
        None | Some(Value::Null) => return Err(missing(ctx, "input")),
        Some(Value::String(s)) => vec![s.clone()],
        // Strings, or token arrays (embedded by their JSON text).
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect(),
        Some(other) => vec![other.to_string()],
    };
    let base64_out = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(bad_request(
                ctx,
                &format!(
                    "Invalid value for 'encoding_format': '{other}'. Supported values are: 'float' and 'base64'."
                ),
            ));
        }
    };
    let dims = u64_field(body.get("dimensions")).map_or(EMBED_DIMS, |d| d as usize);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let v = embedding(text, dims);
            let embedding = if base64_out {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64(&bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|s| count_tokens(s)).sum();
    Ok(Reply::ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    })))
}

// ---------------------------------------------------------------------------------------------
// /v1/models

fn model_object(ctx: &Ctx, id: &str) -> Value {
    match ctx.surface {
        Surface::OllamaV1 => {
            let owner = id
                .rsplit_once('/')
                .map_or("library", |(ns, _)| ns.rsplit('/').next().unwrap_or(ns));
            json!({ "id": id, "object": "model", "created": CREATED_AT_UNIX, "owned_by": owner })
        }
        _ => json!({ "id": id, "object": "model", "created": CREATED, "owned_by": "system" }),
    }
}

fn models(ctx: &Ctx) -> Reply {
    let data: Vec<Value> = ctx.models.iter().map(|m| model_object(ctx, m)).collect();
    // Ollama reports `null` rather than `[]` when nothing is installed.
    let data = if data.is_empty() && ctx.surface == Surface::OllamaV1 {
        Value::Null
    } else {
        json!(data)
    };
    Reply::ok(json!({ "object": "list", "data": data }))
}

fn model(ctx: &Ctx, id: &str) -> Result<Reply, Reply> {
    if ctx.find_model(id).is_some() {
        return Ok(Reply::ok(model_object(ctx, id)));
    }
    Err(match ctx.surface {
        Surface::OllamaV1 => api_error(
            ctx,
            StatusCode::NOT_FOUND,
            &format!("model '{id}' not found"),
            None,
            None,
            None,
        ),
        _ => api_error(
            ctx,
            StatusCode::NOT_FOUND,
            &format!("The model '{id}' does not exist"),
            Some("invalid_request_error"),
            Some("model"),
            Some("model_not_found"),
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// /v1/responses (OpenAI only; Ollama 0.12 has no Responses API)

fn responses(ctx: &Ctx) -> Result<Reply, Reply> {
    let body = body(ctx)?;
    let model = model_of(ctx, body)?;
    let input = body.get("input");
    let (said, mut input_tokens) = match input {
        Some(Value::String(s)) => (s.clone(), count_tokens(s)),
        other => (last_user_text(other), messages_tokens(other)),
    };
    let instructions = body.get("instructions").cloned().unwrap_or(Value::Null);
    input_tokens += instructions.as_str().map_or(0, count_tokens);
    let max = u64_field(body.get("max_output_tokens"));
    let answer = Answer::new(&ctx.label, &said, max);
    let resp_id = format!("resp_standin_{}", ctx.seq);
    let msg_id = format!("msg_standin_{}", ctx.seq);
    let text = answer.text();
    let status = if answer.truncated {
        "incomplete"
    } else {
        "completed"
    };
    let output_text =
        json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] });
    let message = json!({
        "id": msg_id, "type": "message", "status": "completed", "role": "assistant",
        "content": [output_text],
    });
    let response = |status: &str, output: Value, usage: Value| {
        json!({
            "id": resp_id,
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": if status == "incomplete" { json!({ "reason": "max_output_tokens" }) } else { Value::Null },
            "instructions": instructions,
            "max_output_tokens": max,
            "model": model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": { "effort": null, "summary": null },
            "store": true,
            "temperature": 1.0,
            "text": { "format": { "type": "text" } },
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": null,
            "metadata": {},
        })
    };
    let usage = json!({
        "input_tokens": input_tokens,
        "input_tokens_details": { "cached_tokens": 0 },
        "output_tokens": answer.tokens(),
        "output_tokens_details": { "reasoning_tokens": 0 },
        "total_tokens": input_tokens + answer.tokens(),
    });
    let done = response(status, json!([message]), usage);
    if !body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        return Ok(Reply::ok(done));
    }

    let mut seq = 0u64;
    let mut event = |name: &str, mut v: Value| {
        v["type"] = json!(name);
        v["sequence_number"] = json!(seq);
        seq += 1;
        sse_event(name, &v)
    };
    let pending = response("in_progress", json!([]), Value::Null);
    let at = |v: Value| {
        let mut v = v;
        v["item_id"] = json!(msg_id);
        v["output_index"] = json!(0);
        v
    };
    let mut chunks = vec![
        event("response.created", json!({ "response": pending })),
        event("response.in_progress", json!({ "response": pending })),
        event(
            "response.output_item.added",
            json!({ "output_index": 0, "item": {
                "id": msg_id, "type": "message", "status": "in_progress", "role": "assistant", "content": [],
            }}),
        ),
        event(
            "response.content_part.added",
            at(
                json!({ "content_index": 0, "part": { "type": "output_text", "text": "", "annotations": [], "logprobs": [] } }),
            ),
        ),
    ];
    for piece in &answer.pieces {
        chunks.push(event(
            "response.output_text.delta",
            at(json!({ "content_index": 0, "delta": piece, "logprobs": [] })),
        ));
    }
    chunks.push(event(
        "response.output_text.done",
        at(json!({ "content_index": 0, "text": text, "logprobs": [] })),
    ));
    chunks.push(event(
        "response.content_part.done",
        at(json!({ "content_index": 0, "part": output_text })),
    ));
    chunks.push(event(
        "response.output_item.done",
        json!({ "output_index": 0, "item": message }),
    ));
    let end_name = if answer.truncated {
        "response.incomplete"
    } else {
        "response.completed"
    };
    let end = vec![event(end_name, json!({ "response": done }))];
    Ok(Reply::Stream { chunks, end })
}
