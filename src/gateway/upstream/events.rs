//! Cutting an upstream stream into whole events and checking each before it reaches the client.
//!
//! Upstream chunks do not respect event boundaries, and a provider can send an event that is not
//! what its framing promises (a `data:` line that is not JSON, a line that is not an SSE field).
//! [`Events`] passes on only complete, well-formed events, as soon as each is complete: a
//! partial event waits for its end, a malformed one is dropped (and counted) rather than passed
//! on garbled. Along the way it notes what the client's stream needs at its end: whether the
//! terminal event (`[DONE]`, `message_stop`, `"done":true`…) came, whether the answer itself
//! finished (`finish_reason` / `stop_reason`), and the token usage reported.
//!
//! When a chunk holds only whole, well-formed events (the common case) it is passed on as is,
//! without a copy.

use bytes::{Bytes, BytesMut};
use serde::de::IgnoredAny;

use std::sync::LazyLock;

use memchr::memmem::Finder;

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

/// Bytes that end a well-formed stream.
const SSE_TERMINALS: &[&[u8]] = &[
    b"[DONE]",
    b"message_stop",
    b"response.completed",
    b"response.incomplete",
    b"response.failed",
    b"\"error\"",
];
const NDJSON_TERMINALS: &[&[u8]] = &[b"\"done\":true", b"\"done\": true", b"\"error\""];
/// Bytes that say the answer is complete even if the terminal event never comes.
const FINISHED: &[&[u8]] = &[b"\"finish_reason\":\"", b"\"stop_reason\":\""];
/// Bytes that say an event may carry token usage (then it is parsed for it).
const USAGE: &[&[u8]] = &[b"\"usage\"", b"\"eval_count\""];

/// Any of a few byte strings. The searchers are built once: building a `memmem` searcher per
/// search, ten per event, was most of the cost of relaying an event. (One Aho-Corasick automaton
/// for all of them measured slower on events this short.)
struct AnyOf(Vec<Finder<'static>>);

impl AnyOf {
    fn new(needles: &[&'static [u8]]) -> AnyOf {
        AnyOf(needles.iter().map(|&n| Finder::new(n)).collect())
    }

    fn is_in(&self, hay: &[u8]) -> bool {
        self.0.iter().any(|f| f.find(hay).is_some())
    }
}

/// What an event can say: it ends the stream, the answer finished, it may carry usage.
struct Marks {
    terminal: AnyOf,
    finished: AnyOf,
    usage: AnyOf,
}

impl Marks {
    fn new(terminals: &[&'static [u8]]) -> Marks {
        Marks {
            terminal: AnyOf::new(terminals),
            finished: AnyOf::new(FINISHED),
            usage: AnyOf::new(USAGE),
        }
    }
}

static SSE_MARKS: LazyLock<Marks> = LazyLock::new(|| Marks::new(SSE_TERMINALS));
static NDJSON_MARKS: LazyLock<Marks> = LazyLock::new(|| Marks::new(NDJSON_TERMINALS));

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
        if self.check(&rest) {
            let mut out = BytesMut::from(&rest[..]);
            out.extend_from_slice(match self.framing {
                Framing::Sse => b"\n\n",
                Framing::Ndjson => b"\n",
            });
            return out.freeze();
        }
        self.dropped += 1;
        Bytes::new()
    }

    /// Checks the whole events at the start of `buf`: (end of the last whole event, whether all
    /// of them are well-formed). Only used on the fast path: nothing is copied.
    fn scan(&mut self, buf: &[u8]) -> (usize, bool) {
        let mut end = 0;
        let mut all_good = true;
        for (start, stop) in Self::boundaries(self.framing, buf) {
            all_good &= self.check(&buf[start..stop]);
            end = stop;
        }
        (end, all_good)
    }

    /// Copies the well-formed whole events of `buf` into `out`; returns where the rest starts.
    fn scan_into(&mut self, buf: &[u8], out: &mut BytesMut) -> usize {
        let mut end = 0;
        for (start, stop) in Self::boundaries(self.framing, buf) {
            if self.check(&buf[start..stop]) {
                out.extend_from_slice(&buf[start..stop]);
            } else {
                self.dropped += 1;
                tracing::warn!(
                    "dropped a malformed stream event: {:?}",
                    String::from_utf8_lossy(&buf[start..stop.min(start + 120)])
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

    /// Whether one event (with or without its delimiter) is well-formed; notes what it says.
    fn check(&mut self, event: &[u8]) -> bool {
        match self.framing {
            Framing::Ndjson => {
                let line = event.trim_ascii();
                if line.is_empty() {
                    return true;
                }
                if serde_json::from_slice::<IgnoredAny>(line).is_err() {
                    return false;
                }
                self.note(line, line, &NDJSON_MARKS);
                true
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
                        return false;
                    }
                }
                let joined;
                let payload: &[u8] = match (first, data.as_slice()) {
                    (None, _) => return true,
                    (Some(one), []) => one,
                    (_, many) => {
                        joined = many.join(&b'\n');
                        &joined
                    }
                };
                if payload.trim_ascii() != b"[DONE]"
                    && serde_json::from_slice::<IgnoredAny>(payload).is_err()
                {
                    return false;
                }
                self.note(event, payload, &SSE_MARKS);
                true
            }
        }
    }

    fn note(&mut self, event: &[u8], payload: &[u8], marks: &Marks) {
        if !self.terminal && marks.terminal.is_in(event) {
            self.terminal = true;
        }
        if !self.finished && marks.finished.is_in(payload) {
            self.finished = true;
        }
        if marks.usage.is_in(payload)
            && let Some(u) = Usage::from_json(payload)
        {
            self.usage.update(u);
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
