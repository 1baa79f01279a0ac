//! Anthropic's Messages API: `/v1/messages` (JSON and SSE) and `/v1/models`.

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{Value, json};

use super::fault::{api_error, bad_request};
use super::text::{CREATED_AT, content_text, count_tokens, messages_tokens, sse_event, u64_field};
use super::{Ctx, Reply};

pub fn route(ctx: &Ctx) -> Reply {
    let result = match (ctx.method.as_str(), ctx.path.as_str()) {
        ("POST", "/v1/messages") => messages(ctx),
        ("GET", "/v1/models") => Ok(models(ctx)),
        ("GET", p) if p.starts_with("/v1/models/") => model(ctx, &p["/v1/models/".len()..]),
        _ => Err(api_error(
            ctx,
            StatusCode::NOT_FOUND,
            "Not Found",
            None,
            None,
            None,
        )),
    };
    result.unwrap_or_else(|e| e)
}

fn not_found_model(ctx: &Ctx, model: &str) -> Reply {
    api_error(
        ctx,
        StatusCode::NOT_FOUND,
        &format!("model: {model}"),
        None,
        None,
        None,
    )
}

fn messages(ctx: &Ctx) -> Result<Reply, Reply> {
    let Some(body @ Value::Object(_)) = &ctx.json else {
        return Err(bad_request(
            ctx,
            "There was an error parsing the body of your request: invalid JSON",
        ));
    };
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    if model.is_empty() {
        return Err(bad_request(ctx, "model: Field required"));
    }
    let messages = body.get("messages");
    match messages.and_then(Value::as_array) {
        None => return Err(bad_request(ctx, "messages: Field required")),
        Some(ms) if ms.is_empty() => {
            return Err(bad_request(
                ctx,
                "messages: at least one message is required",
            ));
        }
        Some(_) => {}
    }
    let Some(max_tokens) = u64_field(body.get("max_tokens")) else {
        return Err(bad_request(ctx, "max_tokens: Field required"));
    };
    if ctx.find_model(model).is_none() {
        return Err(not_found_model(ctx, model));
    }
    let system_tokens = body
        .get("system")
        .map_or(0, |s| count_tokens(&content_text(s)));
    let input_tokens = messages_tokens(messages) + system_tokens;
    let answer = ctx.chat_answer(messages, Some(max_tokens));
    let stop_reason = if answer.truncated {
        "max_tokens"
    } else {
        "end_turn"
    };
    let id = format!("msg_standin_{}", ctx.seq);
    let usage = |output_tokens: u64| {
        json!({
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        })
    };
    let message = |content: Value, stop: Option<&str>, output_tokens: u64| {
        json!({
            "id": id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": null, "usage": usage(output_tokens),
        })
    };
    if !body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let content = json!([{ "type": "text", "text": answer.text() }]);
        return Ok(Reply::ok(message(
            content,
            Some(stop_reason),
            answer.tokens(),
        )));
    }

    let mut chunks: Vec<Bytes> = vec![
        sse_event(
            "message_start",
            &json!({ "type": "message_start", "message": message(json!([]), None, 1) }),
        ),
        sse_event(
            "content_block_start",
            &json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
        ),
        sse_event("ping", &json!({ "type": "ping" })),
    ];
    for piece in &answer.pieces {
        chunks.push(sse_event(
            "content_block_delta",
            &json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": piece } }),
        ));
    }
    chunks.push(sse_event(
        "content_block_stop",
        &json!({ "type": "content_block_stop", "index": 0 }),
    ));
    chunks.push(sse_event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": { "stop_reason": stop_reason, "stop_sequence": null },
            "usage": { "output_tokens": answer.tokens() },
        }),
    ));
    let end = vec![sse_event(
        "message_stop",
        &json!({ "type": "message_stop" }),
    )];
    Ok(Reply::Stream { chunks, end })
}

fn model_object(id: &str) -> Value {
    json!({ "type": "model", "id": id, "display_name": id, "created_at": CREATED_AT })
}

fn models(ctx: &Ctx) -> Reply {
    let data: Vec<Value> = ctx.models.iter().map(|m| model_object(m)).collect();
    Reply::ok(json!({
        "data": data,
        "has_more": false,
        "first_id": ctx.models.first(),
        "last_id": ctx.models.last(),
    }))
}

fn model(ctx: &Ctx, id: &str) -> Result<Reply, Reply> {
    match ctx.find_model(id) {
        Some(_) => Ok(Reply::ok(model_object(id))),
        None => Err(not_found_model(ctx, id)),
    }
}
