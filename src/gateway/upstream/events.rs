//! Cutting an upstream stream into whole events and checking each before it reaches the client.
//!
//! Upstream chunks do not respect event boundaries, and a provider can send an event that is not
//! what its framing promises (a `data:` line that is not JSON, a line that is not an SSE field).
//! [`Events`] passes on only complete, well-formed events, as soon as each is complete: a
//! partial event waits for its end, a malformed one is dropped (and counted) rather than passed
//! on garbled. Along the way it notes what the client's stream needs at its end: whether the
//! terminal event (`[DONE]`, `message_stop`, `"done":true`…) came, whether the answer itself
//! finished (`finish_reason` / `stop_reason`), and the token usage reported. All three are read
//! from the event's parsed JSON, in the same pass that checks it is JSON.
//!
//! When a chunk holds only whole, well-formed events (the common case) it is passed on as is,
//! without a copy.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde::de::{IgnoredAny, SeqAccess, Visitor};

use crate::gateway::observe::usage::Usage;

/// How the end of a well-formed stream looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent events: OpenAI `data: [DONE]`, Responses `response.completed`, Anthropic
    /// `message_stop`.
    Sse,
    /// Ollama's NDJSON: a `"done":true` line.
    Ndjson,
}

/// What one event says about the end of the stream, read from its parsed JSON (never from byte
/// patterns: `"finish_reason": "stop"` with a space is as finished as without). Only these
/// fields are kept; everything else is stepped over without allocating.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Said<'a> {
    /// OpenAI chat: a choice with a non-null `finish_reason`.
    choices: AnyFinished,
    /// Anthropic and the Responses API name each event: `message_stop`, `response.completed`…
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    /// Anthropic `message_delta`: `delta.stop_reason`.
    delta: Option<StopReason>,
    /// Ollama: `"done": true` ends the answer and the stream.
    done: Option<bool>,
    error: Option<IgnoredAny>,
    // The keys that carry usage (see `usage.rs`): only then is the event read for it.
    usage: Option<IgnoredAny>,
    message: Option<IgnoredAny>,
    response: Option<IgnoredAny>,
    prompt_eval_count: Option<IgnoredAny>,
    eval_count: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StopReason {
    stop_reason: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Choice {
    finish_reason: Option<IgnoredAny>,
}

/// Whether any element of `choices` has finished, read without collecting the choices.
#[derive(Default)]
struct AnyFinished(bool);

impl<'de> Deserialize<'de> for AnyFinished {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyFinished;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyFinished, A::Error> {
                let mut any = false;
                while let Some(c) = seq.next_element::<Choice>()? {
                    any |= c.finish_reason.is_some();
                }
                Ok(AnyFinished(any))
            }
            fn visit_unit<E>(self) -> Result<AnyFinished, E> {
                Ok(AnyFinished(false))
            }
        }
        d.deserialize_any(V)
    }
}

/// What an event means for the stream's end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Meaning {
    terminal: bool,
    finished: bool,
    has_usage: bool,
    /// The provider's own error event (Anthropic `event: error`, `{"error": …}`).
    error: bool,
}

impl Said<'_> {
    fn meaning(&self) -> Meaning {
        let kind = self.kind.as_deref().unwrap_or("");
        let terminal_kind = matches!(
            kind,
            "message_stop"
                | "response.completed"
                | "response.incomplete"
                | "response.failed"
                | "error"
        );
        let done = self.done == Some(true);
        Meaning {
            error: kind == "error" || self.error.is_some(),
            terminal: terminal_kind || done || self.error.is_some(),
            finished: self.choices.0
                || self.delta.as_ref().is_some_and(|d| d.stop_reason.is_some())
                || done
                || kind == "response.completed",
            has_usage: self.usage.is_some()
                || self.message.is_some()
                || self.response.is_some()
                || self.prompt_eval_count.is_some()
                || self.eval_count.is_some(),
        }
    }
}

/// Reads one JSON payload: `None` when it is not JSON. A payload that is JSON but not an object
/// of the expected shapes (a bare number, `"done": "yes"`) passes and says nothing.
fn read(payload: &[u8]) -> Option<Meaning> {
    match serde_json::from_slice::<Said>(payload) {
        Ok(said) => Some(said.meaning()),
        Err(_) => serde_json::from_slice::<IgnoredAny>(payload)
            .ok()
            .map(|_| Meaning::default()),
    }
}

#[derive(Debug)]
pub struct Events {
    framing: Framing,
    /// The start of an event whose end has not arrived yet.
    pending: BytesMut,
    /// The terminal event has been seen.
    pub terminal: bool,
    /// The answer finished (`finish_reason` / `stop_reason` set).
    pub finished: bool,
    /// Malformed events dropped so far.
    pub dropped: usize,
    pub usage: Usage,
    /// Scrubs the excerpt of a dropped event before it is logged.
    pub redact: Option<std::sync::Arc<crate::gateway::observe::redact::Redactor>>,
    /// Keep the provider's own error events from the client (the stream may be continued on
    /// another candidate instead); the first one's reason goes to [`Events::error`].
    pub withhold_errors: bool,
    /// A withheld error event's reason (`code: message`), until the relay takes it.
    pub error: Option<String>,
}

/// What becomes of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    /// Not what its framing promises: dropped and counted.
    Malformed,
    /// The provider's error event, kept from the client ([`Events::withhold_errors`]).
    Withheld,
}

impl Events {
    pub fn new(framing: Framing) -> Self {
        Events {
            framing,
            pending: BytesMut::new(),
            terminal: false,
            finished: false,
            dropped: 0,
            usage: Usage::default(),
            redact: None,
            withhold_errors: false,
            error: None,
        }
    }

    /// The whole, well-formed events completed by `chunk`, in order.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.pending.is_empty() {
            let (end, all_good) = self.scan(&chunk);
            if all_good && end == chunk.len() {
                return chunk;
            }
            self.pending.extend_from_slice(&chunk);
        } else {
            self.pending.extend_from_slice(&chunk);
        }
        let buf = std::mem::take(&mut self.pending);
        let mut out = BytesMut::new();
        let end = self.scan_into(&buf, &mut out);
        self.pending = BytesMut::from(&buf[end..]);
        out.freeze()
    }

    /// At the end of the stream: the last event if it is whole but lacks its final blank line
    /// (or newline), else nothing (an incomplete event is dropped).
    pub fn finish(&mut self) -> Bytes {
        let rest = std::mem::take(&mut self.pending);
        if rest.iter().all(u8::is_ascii_whitespace) {
            return Bytes::new();
        }
        let verdict = self.check(&rest);
        if verdict == Verdict::Pass {
            let mut out = BytesMut::from(&rest[..]);
            out.extend_from_slice(match self.framing {
                Framing::Sse => b"\n\n",
                Framing::Ndjson => b"\n",
            });
            return out.freeze();
        }
        if verdict == Verdict::Malformed {
            self.dropped += 1;
        }
        Bytes::new()
    }

    /// Checks the whole events at the start of `buf`: (end of the last whole event, whether all
    /// of them are well-formed). Only used on the fast path: nothing is copied.
    fn scan(&mut self, buf: &[u8]) -> (usize, bool) {
        let mut end = 0;
        let mut all_good = true;
        for (start, stop) in Self::boundaries(self.framing, buf) {
            all_good &= self.check(&buf[start..stop]) == Verdict::Pass;
            end = stop;
        }
        (end, all_good)
    }

    /// Copies the well-formed whole events of `buf` into `out`; returns where the rest starts.
    fn scan_into(&mut self, buf: &[u8], out: &mut BytesMut) -> usize {
        let mut end = 0;
        for (start, stop) in Self::boundaries(self.framing, buf) {
            let verdict = self.check(&buf[start..stop]);
            if verdict == Verdict::Pass {
                out.extend_from_slice(&buf[start..stop]);
            } else if verdict == Verdict::Malformed {
                self.dropped += 1;
                // Scrubbed whole, then cut: a key must not survive as a cut-off prefix.
                let text = String::from_utf8_lossy(&buf[start..stop]);
                let text = match &self.redact {
                    Some(r) => r.text(&text).into_owned(),
                    None => text.into_owned(),
                };
                tracing::warn!(
                    "dropped a malformed stream event: {:?}",
                    crate::gateway::limits::cut_to(&text, 120)
                );
            }
            end = stop;
        }
        end
    }

    /// `(start, end)` of every whole event in `buf` (an SSE event ends with a blank line, an
    /// NDJSON one with a newline); `end` includes the delimiter.
    fn boundaries(framing: Framing, buf: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut start = 0;
        let mut line_start = 0;
        memchr::memchr_iter(b'\n', buf).filter_map(move |i| {
            let line = &buf[line_start..i];
            let blank = line.strip_suffix(b"\r").unwrap_or(line).is_empty();
            line_start = i + 1;
            (framing == Framing::Ndjson || blank).then(|| {
                let event = (start, i + 1);
                start = i + 1;
                event
            })
        })
    }

    /// Whether one event (with or without its delimiter) passes; notes what it says.
    fn check(&mut self, event: &[u8]) -> Verdict {
        match self.framing {
            Framing::Ndjson => {
                let line = event.trim_ascii();
                if line.is_empty() {
                    return Verdict::Pass;
                }
                let Some(meaning) = read(line) else {
                    return Verdict::Malformed;
                };
                self.note(line, meaning)
            }
            Framing::Sse => {
                // An event nearly always has one `data:` line: a Vec only for more.
                let mut first: Option<&[u8]> = None;
                let mut data: Vec<&[u8]> = Vec::new();
                for line in event.split(|b| *b == b'\n') {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.is_empty() || line.starts_with(b":") {
                        continue;
                    }
                    if let Some(d) = line.strip_prefix(b"data:") {
                        let d = d.strip_prefix(b" ").unwrap_or(d);
                        match first {
                            None => first = Some(d),
                            Some(f) => {
                                if data.is_empty() {
                                    data.push(f);
                                }
                                data.push(d);
                            }
                        }
                    } else if !(line.starts_with(b"event:")
                        || line.starts_with(b"id:")
                        || line.starts_with(b"retry:"))
                    {
                        return Verdict::Malformed;
                    }
                }
                let joined;
                let payload: &[u8] = match (first, data.as_slice()) {
                    (None, _) => return Verdict::Pass,
                    (Some(one), []) => one,
                    (_, many) => {
                        joined = many.join(&b'\n');
                        &joined
                    }
                };
                let meaning = if payload.trim_ascii() == b"[DONE]" {
                    Meaning {
                        terminal: true,
                        ..Meaning::default()
                    }
                } else {
                    match read(payload) {
                        Some(m) => m,
                        None => return Verdict::Malformed,
                    }
                };
                self.note(payload, meaning)
            }
        }
    }

    fn note(&mut self, payload: &[u8], m: Meaning) -> Verdict {
        if m.error && self.withhold_errors {
            if self.error.is_none() {
                let (detail, code) = crate::gateway::attempts::failure::parse_error_body(payload);
                let reason = match code {
                    Some(code) if !detail.contains(&code) => format!("{code}: {detail}"),
                    _ => detail,
                };
                self.error = Some(match &self.redact {
                    Some(r) => r.text(&reason).into_owned(),
                    None => reason,
                });
            }
            return Verdict::Withheld;
        }
        self.terminal |= m.terminal;
        self.finished |= m.finished;
        if m.has_usage
            && let Some(u) = Usage::from_json(payload)
        {
            self.usage.update(u);
        }
        Verdict::Pass
    }
}

/// Every whole event of `buf` (as [`Events`] passes them on), with its JSON payload: the
/// `data:` lines joined for SSE (`None` for an event without data, `[DONE]` as it is), the
/// trimmed line for NDJSON. For reading back what was relayed (a continuation), not for the
/// per-chunk path.
pub fn each_event(framing: Framing, buf: &[u8], mut f: impl FnMut(&[u8], Option<&[u8]>)) {
    for (start, stop) in Events::boundaries(framing, buf) {
        let event = &buf[start..stop];
        match framing {
            Framing::Ndjson => {
                let line = event.trim_ascii();
                f(event, (!line.is_empty()).then_some(line));
            }
            Framing::Sse => {
                let mut data: Vec<&[u8]> = Vec::new();
                for line in event.split(|b| *b == b'\n') {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if let Some(d) = line.strip_prefix(b"data:") {
                        data.push(d.strip_prefix(b" ").unwrap_or(d));
                    }
                }
                match data.as_slice() {
                    [] => f(event, None),
                    [one] => f(event, Some(one)),
                    many => f(event, Some(&many.join(&b'\n'))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse() -> Events {
        Events::new(Framing::Sse)
    }

    #[test]
    fn whole_events_pass_without_a_copy() {
        let mut e = sse();
        let chunk = Bytes::from_static(b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\n");
        let out = e.push(chunk.clone());
        assert_eq!(out.as_ptr(), chunk.as_ptr());
        assert!(!e.terminal);
    }

    #[test]
    fn a_providers_error_event_is_withheld_when_asked_and_passes_otherwise() {
        let anthropic = Bytes::from_static(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\"}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        );
        let mut e = sse();
        e.withhold_errors = true;
        let out = e.push(anthropic.clone());
        assert_eq!(
            &out,
            &b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\"}\n\n"[..]
        );
        assert_eq!(e.error.as_deref(), Some("overloaded_error: Overloaded"));
        assert_eq!((e.terminal, e.dropped), (false, 0));

        let mut e = sse();
        assert_eq!(e.push(anthropic.clone()), anthropic);
        assert!(e.terminal && e.error.is_none());

        // Ollama's line, and one that arrives without its newline at the end.
        let mut e = Events::new(Framing::Ndjson);
        e.withhold_errors = true;
        assert_eq!(
            &e.push(Bytes::from_static(b"{\"error\":\"boom\"}")),
            &b""[..]
        );
        assert_eq!(&e.finish(), &b""[..]);
        assert_eq!((e.error.as_deref(), e.dropped), (Some("boom"), 0));
    }

    #[test]
    fn events_split_across_chunks_wait_for_their_end() {
        let mut e = sse();
        assert_eq!(&e.push(Bytes::from_static(b"data: {\"a\"")), &b""[..]);
        assert_eq!(
            &e.push(Bytes::from_static(b":1}\n\ndata: [DO")),
            &b"data: {\"a\":1}\n\n"[..]
        );
        assert_eq!(
            &e.push(Bytes::from_static(b"NE]\n\n")),
            &b"data: [DONE]\n\n"[..]
        );
        assert!(e.terminal);
    }

    #[test]
    fn malformed_events_are_dropped_not_garbled() {
        let mut e = sse();
        let out = e.push(Bytes::from_static(
            b"data: {\"a\":1}\n\ndata: {not json\n\ngarbage line\n\nevent: x\ndata: {\"c\":3}\n\n",
        ));
        assert_eq!(
            &out,
            &b"data: {\"a\":1}\n\nevent: x\ndata: {\"c\":3}\n\n"[..]
        );
        assert_eq!(e.dropped, 2);
        let mut n = Events::new(Framing::Ndjson);
        let out = n.push(Bytes::from_static(b"{\"a\":1}\n{oops\n{\"done\":true}\n"));
        assert_eq!(&out, &b"{\"a\":1}\n{\"done\":true}\n"[..]);
        assert!(n.terminal);
        assert_eq!(n.dropped, 1);
    }

    #[test]
    fn notes_finish_usage_and_a_last_event_without_its_blank_line() {
        let mut e = sse();
        e.push(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        ));
        assert!(e.finished && !e.terminal);
        e.push(Bytes::from_static(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":6}}",
        ));
        assert_eq!(e.usage, Usage::default());
        let rest = e.finish();
        assert!(rest.ends_with(b"\n\n"));
        assert_eq!(e.usage.output, Some(6));
        let mut e = sse();
        e.push(Bytes::from_static(
            b"data: {\"choices\":[{\"finish_reason\":null}]}\n\n",
        ));
        assert!(!e.finished);
        e.push(Bytes::from_static(b"data: {\"trunc"));
        assert!(e.finish().is_empty());
        assert_eq!(e.dropped, 1);
    }

    /// Finished and terminal come from the parsed event: spacing does not matter, and text that
    /// merely mentions the markers does not count.
    #[test]
    fn completion_is_read_from_the_parsed_event() {
        let mut e = sse();
        e.push(Bytes::from_static(
            b"data: {\"choices\": [{\"delta\": {}, \"finish_reason\": \"stop\"}]}\n\n",
        ));
        assert!(e.finished && !e.terminal);
        let mut e = sse();
        e.push(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"say \\\"finish_reason\\\":\\\"stop\\\" and [DONE] or \\\"error\\\"\"},\"finish_reason\":null}]}\n\n",
        ));
        assert_eq!(e.dropped, 0);
        assert!(!e.finished && !e.terminal);
        let mut a = sse();
        a.push(Bytes::from_static(
            b"event: message_delta\ndata: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\"}, \"usage\": {\"output_tokens\": 9}}\n\n",
        ));
        assert!(a.finished && !a.terminal);
        assert_eq!(a.usage.output, Some(9));
        a.push(Bytes::from_static(
            b"event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n",
        ));
        assert!(a.terminal);
        let mut n = Events::new(Framing::Ndjson);
        n.push(Bytes::from_static(
            b"{\"message\": {\"content\": \"\\\"done\\\":true\"}, \"done\": false}\n",
        ));
        assert!(!n.terminal && !n.finished);
        n.push(Bytes::from_static(b"{\"done\": true, \"eval_count\": 4}\n"));
        assert!(n.terminal && n.finished);
        assert_eq!(n.usage.output, Some(4));
        // JSON of an unexpected shape passes and says nothing.
        let mut n = Events::new(Framing::Ndjson);
        assert_eq!(
            n.push(Bytes::from_static(b"{\"done\": \"yes\"}\n")).len(),
            16
        );
        assert!(!n.terminal && n.dropped == 0);
    }

    proptest::proptest! {
        /// However the upstream cuts its bytes, the client gets the same well-formed events.
        #[test]
        fn chunking_does_not_change_what_passes(cuts in proptest::collection::vec(0usize..400, 0..12), bad in 0usize..6) {
            let mut stream = String::new();
            let mut expected = String::new();
            for i in 0..6 {
                let event = if i == bad {
                    "data: {not json\n\n".to_string()
                } else {
                    format!("data: {{\"i\":{i},\"s\":\"a\\nb\"}}\n\n")
                };
                if i != bad {
                    expected.push_str(&event);
                }
                stream.push_str(&event);
            }
            stream.push_str("data: [DONE]\n\n");
            expected.push_str("data: [DONE]\n\n");
            let bytes = stream.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % bytes.len()).collect();
            cuts.sort();
            cuts.dedup();
            let mut e = Events::new(Framing::Sse);
            let mut out = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                out.extend_from_slice(&e.push(Bytes::copy_from_slice(&bytes[at..c])));
                at = c;
            }
            out.extend_from_slice(&e.finish());
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
            proptest::prop_assert!(e.terminal);
            proptest::prop_assert_eq!(e.dropped, 1);
        }
    }

    #[test]
    fn crlf_framing() {
        let mut e = sse();
        let chunk = Bytes::from_static(b"event: ping\r\ndata: {}\r\n\r\n");
        assert_eq!(e.push(chunk.clone()), chunk);
        assert_eq!(e.dropped, 0);
    }

    #[test]
    fn data_split_over_lines_is_one_payload() {
        let mut e = sse();
        let chunk = Bytes::from_static(
            b"data: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":2,\ndata: \"completion_tokens\":3}}\n\n",
        );
        assert_eq!(e.push(chunk.clone()), chunk);
        assert_eq!(e.dropped, 0);
        assert_eq!(e.usage.output, Some(3));
        // Each line alone is not JSON: joined they are, and only joined they count.
        e.push(Bytes::from_static(b"data: {\"a\":\ndata: }\n\n"));
        assert_eq!(e.dropped, 1);
    }
}
