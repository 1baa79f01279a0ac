//! Deterministic content shared by all dialects: reply texts, token counts, embeddings,
//! model names and stream framing.

use bytes::Bytes;
use serde_json::Value;

use super::Kind;

/// `created` (Unix seconds) in OpenAI-style bodies.
pub const CREATED: u64 = 1_700_000_000;
/// Ollama `created_at`/`modified_at` and Anthropic `created_at`.
pub const CREATED_AT: &str = "2025-01-01T00:00:00Z";
/// Ollama `/api/ps` `expires_at` (keep_alive 5m after [`CREATED_AT`]).
pub const EXPIRES_AT: &str = "2025-01-01T00:05:00Z";
/// [`CREATED_AT`] as Unix seconds (Ollama `/v1/models` `created`).
pub const CREATED_AT_UNIX: u64 = 1_735_689_600;
/// Embedding width when the request does not ask for `dimensions`.
pub const EMBED_DIMS: usize = 16;

/// A deterministic assistant reply, one piece per streamed chunk.
pub struct Answer {
    pub pieces: Vec<String>,
    /// True when `max_tokens` (or its equivalent) cut the reply short.
    pub truncated: bool,
}

impl Answer {
    /// `"[LABEL] you said: SAID"`, split into words (each after the first keeps its leading
    /// space), cut to `max_tokens` pieces when given.
    pub fn new(label: &str, said: &str, max_tokens: Option<u64>) -> Answer {
        let full = format!("[{label}] you said: {said}");
        let mut pieces: Vec<String> = Vec::new();
        for (i, word) in full.split(' ').enumerate() {
            pieces.push(if i == 0 {
                word.to_string()
            } else {
                format!(" {word}")
            });
        }
        let mut truncated = false;
        if let Some(max) = max_tokens.map(|m| m as usize)
            && pieces.len() > max
        {
            pieces.truncate(max);
            truncated = true;
        }
        Answer { pieces, truncated }
    }

    /// The reply to a request whose last message is the assistant's partial answer `prefill`
    /// (an assistant prefill), from a stand-in that `continues` one: only what follows it.
    /// When the stand-in's own answer starts with `prefill` (compared without the leading
    /// `[LABEL]`, so that another stand-in's partial answer is continued too), the rest of it;
    /// otherwise ` (continued by [LABEL])`. A stand-in that does not continue a prefill, or no
    /// prefill, gives [`Answer::new`].
    pub fn after(
        label: &str,
        said: &str,
        max_tokens: Option<u64>,
        prefill: Option<&str>,
        continues: bool,
    ) -> Answer {
        let (Some(prefill), true) = (prefill, continues) else {
            return Answer::new(label, said, max_tokens);
        };
        let full = format!("[{label}] you said: {said}");
        let unlabelled = |s: &str| -> String {
            match s.strip_prefix('[').and_then(|r| r.split_once(']')) {
                Some((_, rest)) => rest.to_string(),
                None => s.to_string(),
            }
        };
        let rest = match full.strip_prefix(prefill) {
            Some(rest) => rest.to_string(),
            None => {
                let (mine, theirs) = (unlabelled(&full), unlabelled(prefill));
                match mine.strip_prefix(theirs.as_str()) {
                    Some(rest) if prefill.starts_with('[') => rest.to_string(),
                    _ => format!(" (continued by [{label}])"),
                }
            }
        };
        let mut pieces: Vec<String> = Vec::new();
        for (i, word) in rest.split(' ').enumerate() {
            match i {
                0 if word.is_empty() => {}
                0 => pieces.push(word.to_string()),
                _ => pieces.push(format!(" {word}")),
            }
        }
        let mut truncated = false;
        if let Some(max) = max_tokens.map(|m| m as usize)
            && pieces.len() > max
        {
            pieces.truncate(max);
            truncated = true;
        }
        Answer { pieces, truncated }
    }

    pub fn text(&self) -> String {
        self.pieces.concat()
    }

    /// Completion tokens: one per piece.
    pub fn tokens(&self) -> u64 {
        self.pieces.len() as u64
    }
}

/// Prompt tokens: whitespace-separated words.
pub fn count_tokens(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Text of a message `content`: a string, or the `text` of every part (OpenAI `text` /
/// `input_text` / `output_text`, Anthropic `text` blocks) joined with a space.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                _ => p.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The text of the last `role: "user"` message of a `messages`/`input` array.
pub fn last_user_text(messages: Option<&Value>) -> String {
    messages
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default()
}

/// The text of a last `role: "assistant"` message (an assistant prefill), if the array ends
/// with one.
pub fn prefill(messages: Option<&Value>) -> Option<String> {
    let last = messages.and_then(Value::as_array)?.last()?;
    (last.get("role").and_then(Value::as_str) == Some("assistant"))
        .then(|| last.get("content").map(content_text).unwrap_or_default())
}

/// Prompt tokens of a whole `messages` array.
pub fn messages_tokens(messages: Option<&Value>) -> u64 {
    messages
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m.get("content"))
                .map(|c| count_tokens(&content_text(c)))
                .sum()
        })
        .unwrap_or(0)
}

/// A non-negative integer field, if present.
pub fn u64_field(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

// ---------------------------------------------------------------------------------------------
// Embeddings

pub fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A deterministic vector in [-1, 1) derived from the text (not normalised).
pub fn raw_vector(text: &str, dims: usize) -> Vec<f32> {
    let mut x = fnv1a(text) | 1;
    (0..dims)
        .map(|_| {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40; // 24 bits
            (r as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

/// A deterministic L2-normalised embedding of the text.
pub fn embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut v = raw_vector(text, dims);
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Standard base64 (with padding), as OpenAI uses for `encoding_format: "base64"`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Embedding `input` as a list of strings: a string, or an array of strings.
/// `Err(())` when an element is not a string.
pub fn embed_inputs(input: Option<&Value>) -> Result<Vec<String>, ()> {
    match input {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or(()))
            .collect(),
        Some(_) => Err(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Model names

/// The name a stand-in lists: Ollama's display form (`llama3.2` → `llama3.2:latest`,
/// `library/` and the default registry dropped); other kinds verbatim.
pub fn model_display(kind: Kind, name: &str) -> String {
    if kind != Kind::Ollama {
        return name.to_string();
    }
    let name = name.strip_prefix("registry.ollama.ai/").unwrap_or(name);
    let name = name.strip_prefix("library/").unwrap_or(name);
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// The key two names are compared by: Ollama folds case after normalising.
pub fn model_key(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Ollama => model_display(kind, name).to_ascii_lowercase(),
        _ => name.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Framing

/// One NDJSON line.
pub fn ndjson(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// One SSE event with only a data line.
pub fn sse_data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// One named SSE event.
pub fn sse_event(name: &str, v: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

/// OpenAI's stream terminator.
pub fn sse_done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}
