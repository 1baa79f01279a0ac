//! Continuing a stream that failed midway on another candidate, so that the client gets one
//! answer with no gap and no repetition.
//!
//! The relay keeps what it sent (refcounted clones of the relayed chunks, nothing parsed) and
//! only when the stream fails reads the answer's text back from them ([`so_far`]), in the
//! client's dialect: OpenAI chat chunks (`choices[0].delta.content`), Anthropic
//! `content_block_delta` (`delta.text`), Ollama NDJSON (`message.content` for `/api/chat`,
//! `response` for `/api/generate`). The rest of the plan ([`Resume`], run by the attempt loop)
//! then finds a candidate that answers, sent either the text so far as an assistant prefill
//! (it answers only the rest) or the original request (its answer repeats the text so far,
//! which is dropped). [`Splice`] fits the new candidate's events onto the client's stream:
//! preamble events that would repeat are left out (OpenAI's role-only chunk, Anthropic's
//! `message_start` and `content_block_start`), the repeated text is dropped (an answer that
//! says something else than the text so far has *diverged* and cannot continue it), OpenAI
//! chunks take the first stream's `id`, and the usage the client is told is the sum.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::events::{Framing, each_event};
use crate::gateway::observe::usage::Usage;

/// The chat streams a continuation understands (other surfaces end with an error event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `/v1/chat/completions`, SSE chunks.
    OpenAiChat,
    /// `/v1/messages`, SSE events.
    Anthropic,
    /// Ollama `/api/chat`, NDJSON.
    OllamaChat,
    /// Ollama `/api/generate`, NDJSON.
    OllamaGenerate,
}

impl Shape {
    /// The shape of a stream on the path the client called, if it can be continued.
    pub fn of_path(path: &str) -> Option<Shape> {
        match path {
            "/v1/chat/completions" => Some(Shape::OpenAiChat),
            "/v1/messages" => Some(Shape::Anthropic),
            "/api/chat" => Some(Shape::OllamaChat),
            "/api/generate" => Some(Shape::OllamaGenerate),
            _ => None,
        }
    }

    pub fn framing(self) -> Framing {
        match self {
            Shape::OpenAiChat | Shape::Anthropic => Framing::Sse,
            Shape::OllamaChat | Shape::OllamaGenerate => Framing::Ndjson,
        }
    }

    /// Whether the request has `messages` to append an assistant prefill to (`/api/generate`
    /// has only a prompt: it is always restarted).
    pub fn takes_prefill(self) -> bool {
        self != Shape::OllamaGenerate
    }
}

/// A candidate that took the stream over.
pub struct Taken {
    /// Its first chunk and the rest of its body.
    pub first: Bytes,
    pub upstream: super::client::DataStream,
    pub provider: String,
    pub model: String,
    /// How many bytes of the text so far it was sent as an assistant prefill (it answers only
    /// the rest); `None`: it was sent the original request, and its answer must repeat the
    /// text so far, which is dropped.
    pub prefilled: Option<usize>,
    /// Held while its stream runs (its `--max-in-flight` slot).
    pub hold: Box<dyn std::any::Any + Send>,
    /// Attempts in all so far, this one and those before the stream included.
    pub tried: usize,
}

/// The rest of the plan, as the relay sees it: built by the attempt loop when it returns a
/// stream, asked only when that stream fails midway.
pub trait Resume: Send {
    /// The next candidate (after those already asked) that answers with a stream, sent the
    /// answer's text so far; or every reason why none did.
    fn next<'a>(
        &'a mut self,
        prefix: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Taken, NoContinuation>> + Send + 'a>>;
}

/// Why no candidate took a failed stream over: each one asked and its reason, in order.
#[derive(Debug, Default, thiserror::Error)]
#[error("{}", .reasons.join("; "))]
pub struct NoContinuation {
    pub reasons: Vec<String>,
    /// Attempts in all, those before the stream included.
    pub tried: usize,
}

/// What the client was sent, read back from the relayed events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SoFar {
    pub text: String,
    /// Events that carried answer text (about one token each: the partial output's tokens
    /// when the provider did not say).
    pub deltas: u64,
    /// What the client's stream has already opened.
    pub opened: Opened,
    /// Why the answer cannot be continued (a tool call under way, several choices…).
    pub blocked: Option<&'static str>,
}

/// What the client's stream has opened, which a continuation must not open again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Opened {
    /// OpenAI: the first chunk's `id`, which the continuation's chunks take on.
    pub id: Option<String>,
    /// Anthropic: `message_start` was sent.
    pub message: bool,
    /// Anthropic: `content_block_start` of block 0 was sent.
    pub block: bool,
}

/// Reads the answer so far out of the events relayed to the client (whole events, as
/// [`super::events::Events`] passed them on).
pub fn so_far(shape: Shape, sent: &[Bytes]) -> SoFar {
    let mut s = SoFar::default();
    for chunk in sent {
        each_event(shape.framing(), chunk, |_, payload| {
            if let Some(v) = payload.and_then(|p| serde_json::from_slice::<Value>(p).ok()) {
                s.read(shape, &v);
            }
        });
    }
    s
}

fn present(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

impl SoFar {
    fn block(&mut self, why: &'static str) {
        self.blocked.get_or_insert(why);
    }

    fn add(&mut self, text: Option<&str>) {
        if let Some(t) = text.filter(|t| !t.is_empty()) {
            self.text.push_str(t);
            self.deltas += 1;
        }
    }

    fn read(&mut self, shape: Shape, v: &Value) {
        match shape {
            Shape::OpenAiChat => {
                if self.opened.id.is_none() {
                    self.opened.id = str_at(v, "/id").map(str::to_string);
                }
                for c in v
                    .get("choices")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if c.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                        self.block("several choices");
                        continue;
                    }
                    let Some(d) = c.get("delta") else { continue };
                    if present(d.get("tool_calls")) || present(d.get("function_call")) {
                        self.block("a tool call");
                    }
                    self.add(d.get("content").and_then(Value::as_str));
                }
            }
            Shape::Anthropic => match str_at(v, "/type") {
                Some("message_start") => self.opened.message = true,
                Some("content_block_start") => {
                    self.opened.block |= v.get("index").and_then(Value::as_u64) == Some(0);
                    if v.get("index").and_then(Value::as_u64) != Some(0) {
                        self.block("several content blocks");
                    } else if str_at(v, "/content_block/type") != Some("text") {
                        self.block("a content block that is not text");
                    }
                }
                Some("content_block_delta") => match str_at(v, "/delta/type") {
                    Some("text_delta") => self.add(str_at(v, "/delta/text")),
                    _ => self.block("a content block that is not text"),
                },
                Some("content_block_stop") => self.block("a closed content block"),
                _ => {}
            },
            Shape::OllamaChat => {
                if present(v.pointer("/message/tool_calls")) {
                    self.block("a tool call");
                }
                self.add(str_at(v, "/message/content"));
            }
            Shape::OllamaGenerate => self.add(str_at(v, "/response")),
        }
    }
}

/// Why a candidate's answer cannot continue the text so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diverged(pub &'static str);

/// What becomes of one event of the continuation.
enum Edit {
    Keep,
    Drop,
    Replace(Value),
}

/// Fits a continuation's events onto the client's stream (see the module docs).
#[derive(Debug)]
pub struct Splice {
    shape: Shape,
    /// Text the new answer repeats before it says anything new: dropped.
    repeat: String,
    /// A difference from `repeat` means the answers diverged (a restart); else (the trailing
    /// whitespace an Anthropic prefill may not end with) whatever differs is new text.
    strict: bool,
    /// What the client's stream has opened already.
    opened: Opened,
    /// Tokens of the candidates that failed, added to the usage the continuation reports.
    carried: Usage,
    /// Anthropic: the continuation's input tokens, from its `message_start` (left out).
    input: Option<u64>,
    /// Events of this candidate that carried text (relayed or dropped).
    pub deltas: u64,
}

impl Splice {
    /// `repeat`: the text the new candidate's answer starts with and the client already has
    /// (`strict`: it must, else it diverged); `opened`: what the client's stream has opened.
    pub fn new(
        shape: Shape,
        repeat: String,
        strict: bool,
        opened: Opened,
        carried: Usage,
    ) -> Splice {
        Splice {
            shape,
            repeat,
            strict,
            opened,
            carried,
            input: None,
            deltas: 0,
        }
    }

    /// The whole events of `chunk` as the client must see them, or why this candidate cannot
    /// continue the answer.
    pub fn pass(&mut self, chunk: Bytes) -> Result<Bytes, Diverged> {
        let framing = self.shape.framing();
        let mut out = BytesMut::with_capacity(chunk.len());
        let mut diverged = None;
        each_event(framing, &chunk, |event, payload| {
            if diverged.is_some() {
                return;
            }
            match self.edit(payload) {
                Ok(Edit::Keep) => out.extend_from_slice(event),
                Ok(Edit::Drop) => {}
                Ok(Edit::Replace(v)) => render(framing, event, &v, &mut out),
                Err(d) => diverged = Some(d),
            }
        });
        match diverged {
            Some(d) => Err(d),
            None => Ok(out.freeze()),
        }
    }

    /// Whether the new answer has yet to repeat text the client already has (a restart's end
    /// before that is a divergence).
    fn owes_repeat(&self) -> bool {
        self.strict && !self.repeat.is_empty()
    }

    /// Of one piece of the new answer's text, the part to pass on (`None`: all of it repeats
    /// the text so far).
    fn consume<'t>(&mut self, text: &'t str) -> Result<Option<&'t str>, Diverged> {
        if self.repeat.is_empty() || text.is_empty() {
            return Ok(Some(text));
        }
        if self.repeat.starts_with(text) {
            self.repeat.drain(..text.len());
            return Ok(None);
        }
        if let Some(rest) = text.strip_prefix(self.repeat.as_str()) {
            self.repeat.clear();
            return Ok(Some(rest));
        }
        if self.strict {
            return Err(Diverged("its answer differs from the text already sent"));
        }
        let common = self
            .repeat
            .char_indices()
            .zip(text.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, a), _)| i + a.len_utf8());
        self.repeat.clear();
        Ok(Some(&text[common..]))
    }

    /// The piece of text at `pointer` in `v`, counted and consumed: `(all of it was dropped,
    /// `v` was changed)`.
    fn text_at(&mut self, v: &mut Value, pointer: &str) -> Result<(bool, bool), Diverged> {
        let Some(text) = v.pointer(pointer).and_then(Value::as_str) else {
            return Ok((false, false));
        };
        if text.is_empty() {
            return Ok((false, false));
        }
        self.deltas += 1;
        let text = text.to_string();
        match self.consume(&text)? {
            None => {
                if let Some(t) = v.pointer_mut(pointer) {
                    *t = Value::String(String::new());
                }
                Ok((true, true))
            }
            Some(rest) if rest.len() == text.len() => Ok((false, false)),
            Some(rest) => {
                let rest = rest.to_string();
                if let Some(t) = v.pointer_mut(pointer) {
                    *t = Value::String(rest);
                }
                Ok((false, true))
            }
        }
    }

    fn edit(&mut self, payload: Option<&[u8]>) -> Result<Edit, Diverged> {
        let Some(payload) = payload else {
            return Ok(Edit::Keep);
        };
        if payload.trim_ascii() == b"[DONE]" {
            if self.owes_repeat() {
                return Err(Diverged(
                    "its answer ended before it repeated the text already sent",
                ));
            }
            return Ok(Edit::Keep);
        }
        let Ok(mut v) = serde_json::from_slice::<Value>(payload) else {
            return Ok(Edit::Keep);
        };
        match self.shape {
            Shape::OpenAiChat => self.openai(v),
            Shape::Anthropic => self.anthropic(v),
            Shape::OllamaChat | Shape::OllamaGenerate => {
                let pointer = match self.shape {
                    Shape::OllamaChat => "/message/content",
                    _ => "/response",
                };
                let (all_dropped, changed) = self.text_at(&mut v, pointer)?;
                if v.get("done").and_then(Value::as_bool) == Some(true) {
                    if self.owes_repeat() {
                        return Err(Diverged(
                            "its answer ended before it repeated the text already sent",
                        ));
                    }
                    self.add_counts(&mut v, "prompt_eval_count", "eval_count");
                    return Ok(Edit::Replace(v));
                }
                Ok(match (all_dropped, changed) {
                    (true, _) => Edit::Drop,
                    (false, true) => Edit::Replace(v),
                    (false, false) => Edit::Keep,
                })
            }
        }
    }

    fn openai(&mut self, mut v: Value) -> Result<Edit, Diverged> {
        let mut changed = false;
        if let (Some(id), Some(cur)) = (&self.opened.id, v.get("id").and_then(Value::as_str))
            && cur != id
        {
            v["id"] = Value::String(id.clone());
            changed = true;
        }
        let has_usage = present(v.get("usage"));
        if has_usage && let Some(u) = v.get_mut("usage") {
            self.sum_openai_usage(u);
            changed = true;
        }
        if v.pointer("/choices/0").is_none() {
            return Ok(if changed {
                Edit::Replace(v)
            } else {
                Edit::Keep
            });
        }
        let (all_dropped, text_changed) = self.text_at(&mut v, "/choices/0/delta/content")?;
        let finished = present(v.pointer("/choices/0/finish_reason"));
        if finished && self.owes_repeat() {
            return Err(Diverged(
                "its answer ended before it repeated the text already sent",
            ));
        }
        let content = v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty());
        let tools = present(v.pointer("/choices/0/delta/tool_calls"))
            || present(v.pointer("/choices/0/delta/function_call"));
        let several = v
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(|c| c.len() > 1);
        // A chunk with nothing to say (the role-only preamble, or text already sent) is left out.
        if (all_dropped || !content) && !finished && !tools && !has_usage && !several {
            return Ok(Edit::Drop);
        }
        Ok(if changed || text_changed {
            Edit::Replace(v)
        } else {
            Edit::Keep
        })
    }

    fn anthropic(&mut self, mut v: Value) -> Result<Edit, Diverged> {
        let index = v.get("index").and_then(Value::as_u64);
        match str_at(&v, "/type") {
            Some("message_start") => {
                self.input = v
                    .pointer("/message/usage/input_tokens")
                    .and_then(Value::as_u64);
                Ok(if self.opened.message {
                    Edit::Drop
                } else {
                    Edit::Keep
                })
            }
            Some("content_block_start") if index == Some(0) && self.opened.block => Ok(Edit::Drop),
            Some("content_block_delta") if index == Some(0) => {
                match self.text_at(&mut v, "/delta/text")? {
                    (true, _) => Ok(Edit::Drop),
                    (false, true) => Ok(Edit::Replace(v)),
                    (false, false) => Ok(Edit::Keep),
                }
            }
            Some("content_block_stop") if index == Some(0) && self.owes_repeat() => Err(Diverged(
                "its answer ended before it repeated the text already sent",
            )),
            Some("message_delta") => {
                if self.owes_repeat() {
                    return Err(Diverged(
                        "its answer ended before it repeated the text already sent",
                    ));
                }
                if let Some(u) = v.get_mut("usage").filter(|u| u.is_object()) {
                    add(u, "output_tokens", self.carried.output);
                    if u.get("input_tokens").is_some() {
                        add(u, "input_tokens", self.carried.input);
                    } else if let (Some(a), Some(b)) = (self.carried.input, self.input) {
                        u["input_tokens"] = Value::from(a + b);
                    }
                    return Ok(Edit::Replace(v));
                }
                Ok(Edit::Keep)
            }
            _ => Ok(Edit::Keep),
        }
    }

    /// OpenAI usage: the carried tokens added, the total made their sum again.
    fn sum_openai_usage(&self, u: &mut Value) {
        if !u.is_object() {
            return;
        }
        add(u, "completion_tokens", self.carried.output);
        add(u, "prompt_tokens", self.carried.input);
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        if u.get("total_tokens").is_some()
            && let (Some(p), Some(c)) = (n("prompt_tokens"), n("completion_tokens"))
        {
            u["total_tokens"] = Value::from(p + c);
        }
    }

    /// Ollama: the carried tokens added to the final line's counts.
    fn add_counts(&self, v: &mut Value, input: &str, output: &str) {
        add(v, output, self.carried.output);
        add(v, input, self.carried.input);
    }
}

/// `v[key] += n` when both are numbers.
fn add(v: &mut Value, key: &str, n: Option<u64>) {
    if let (Some(n), Some(cur)) = (n, v.get(key).and_then(Value::as_u64)) {
        v[key] = Value::from(cur + n);
    }
}

/// A rewritten event in its framing: an SSE event keeps its other fields (`event:`, `id:`).
fn render(framing: Framing, event: &[u8], v: &Value, out: &mut BytesMut) {
    let json = v.to_string();
    match framing {
        Framing::Ndjson => {
            out.extend_from_slice(json.as_bytes());
            out.extend_from_slice(b"\n");
        }
        Framing::Sse => {
            for line in event.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() || line.starts_with(b"data:") {
                    continue;
                }
                out.extend_from_slice(line);
                out.extend_from_slice(b"\n");
            }
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(json.as_bytes());
            out.extend_from_slice(b"\n\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai_chunk(id: &str, delta: &str, finish: Option<&str>) -> String {
        let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
        format!(
            "data: {{\"id\":\"{id}\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        )
    }

    fn text_of(shape: Shape, out: &[u8]) -> String {
        so_far(shape, &[Bytes::copy_from_slice(out)]).text
    }

    #[test]
    fn the_text_so_far_in_each_dialect() {
        let sent = [
            Bytes::from(openai_chunk(
                "a",
                r#"{"role":"assistant","content":""}"#,
                None,
            )),
            Bytes::from(
                openai_chunk("a", r#"{"content":"Hel"}"#, None)
                    + &openai_chunk("a", r#"{"content":"lo"}"#, None),
            ),
        ];
        let s = so_far(Shape::OpenAiChat, &sent);
        assert_eq!(
            (s.text.as_str(), s.deltas, s.opened.id.as_deref()),
            ("Hello", 2, Some("a"))
        );
        assert_eq!(s.blocked, None);
        let tool = Bytes::from(openai_chunk(
            "a",
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}"#,
            None,
        ));
        assert_eq!(
            so_far(Shape::OpenAiChat, &[tool]).blocked,
            Some("a tool call")
        );

        let anthropic = Bytes::from_static(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi \"}}\n\n",
        );
        let s = so_far(Shape::Anthropic, &[anthropic]);
        assert_eq!((s.text.as_str(), s.deltas, s.blocked), ("Hi ", 1, None));
        assert!(s.opened.message && s.opened.block);

        let ollama = Bytes::from_static(
            b"{\"message\":{\"role\":\"assistant\",\"content\":\"a\"},\"done\":false}\n{\"message\":{\"role\":\"assistant\",\"content\":\" b\"},\"done\":false}\n",
        );
        assert_eq!(text_of(Shape::OllamaChat, &ollama), "a b");
        let generate = Bytes::from_static(b"{\"response\":\"x\",\"done\":false}\n");
        assert_eq!(text_of(Shape::OllamaGenerate, &generate), "x");
    }

    #[test]
    fn a_prefilled_continuation_loses_its_preamble_and_takes_the_first_id() {
        let mut s = Splice::new(
            Shape::OpenAiChat,
            String::new(),
            false,
            Opened {
                id: Some("first".into()),
                ..Opened::default()
            },
            Usage {
                input: None,
                output: Some(2),
            },
        );
        let out = s
            .pass(Bytes::from(
                openai_chunk("second", r#"{"role":"assistant","content":""}"#, None)
                    + &openai_chunk("second", r#"{"content":" world"}"#, None)
                    + &openai_chunk("second", "{}", Some("stop"))
                    + "data: {\"id\":\"second\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\ndata: [DONE]\n\n",
            ))
            .unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(!text.contains("role"), "{text}");
        assert!(!text.contains("second"), "{text}");
        assert_eq!(text_of(Shape::OpenAiChat, &out), " world");
        assert!(
            text.contains("\"completion_tokens\":5") && text.contains("\"total_tokens\":12"),
            "{text}"
        );
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn a_restart_drops_the_repeated_text_or_diverges() {
        let strict = || {
            Splice::new(
                Shape::OpenAiChat,
                "Hello wor".into(),
                true,
                Opened::default(),
                Usage::default(),
            )
        };
        let mut s = strict();
        let mut out = Vec::new();
        for piece in ["Hel", "lo", " world", "!"] {
            let chunk = openai_chunk("x", &format!("{{\"content\":\"{piece}\"}}"), None);
            out.extend_from_slice(&s.pass(Bytes::from(chunk)).unwrap());
        }
        assert_eq!(text_of(Shape::OpenAiChat, &out), "ld!");
        assert_eq!(s.deltas, 4);
        let mut s = strict();
        let chunk = openai_chunk("x", r#"{"content":"Howdy"}"#, None);
        assert!(s.pass(Bytes::from(chunk)).is_err());
        // An answer that ends before it has repeated the text so far cannot continue it.
        let mut s = strict();
        let chunk = openai_chunk("x", r#"{"content":"Hel"}"#, Some("stop"));
        assert!(s.pass(Bytes::from(chunk)).is_err());
    }

    #[test]
    fn anthropic_continuation_keeps_one_message_and_sums_usage() {
        let mut s = Splice::new(
            Shape::Anthropic,
            " ".into(),
            false,
            Opened {
                id: None,
                message: true,
                block: true,
            },
            Usage {
                input: Some(10),
                output: Some(4),
            },
        );
        let out = s
            .pass(Bytes::from_static(
                b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" there\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n",
            ))
            .unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(!text.contains("message_start") && !text.contains("content_block_start"));
        assert!(
            text.contains("\"text\":\"there\""),
            "the trimmed space is not sent twice: {text}"
        );
        assert!(text.contains("event: message_delta\ndata: "), "{text}");
        assert!(text.contains("\"output_tokens\":7") && text.contains("\"input_tokens\":22"));
    }

    /// A stream cut before its text block opened gets the continuation's block start.
    #[test]
    fn anthropic_opens_only_what_is_not_open() {
        let mut s = Splice::new(
            Shape::Anthropic,
            String::new(),
            true,
            Opened {
                id: None,
                message: true,
                block: false,
            },
            Usage::default(),
        );
        let out = s
            .pass(Bytes::from_static(
                b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            ))
            .unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("event: content_block_start\n"), "{text}");
        assert!(!text.contains("message_start"), "{text}");
    }

    #[test]
    fn ollama_final_line_sums_the_counts() {
        let mut s = Splice::new(
            Shape::OllamaChat,
            String::new(),
            true,
            Opened::default(),
            Usage {
                input: None,
                output: Some(3),
            },
        );
        let out = s
            .pass(Bytes::from_static(
                b"{\"message\":{\"content\":\"c\"},\"done\":false}\n{\"message\":{\"content\":\"\"},\"done\":true,\"prompt_eval_count\":5,\"eval_count\":2}\n",
            ))
            .unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("{\"message\":{\"content\":\"c\"},\"done\":false}\n"));
        assert!(text.contains("\"eval_count\":5") && text.contains("\"prompt_eval_count\":5"));
    }
}
