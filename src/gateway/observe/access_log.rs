//! The one text line each request writes (`--log-format text`).
//!
//! Written straight to the log's writer in the same shape as the other log lines
//! (`2026-12-02T19:06:40.020964Z  INFO …`) instead of through `tracing`'s formatter, which
//! escapes a message character by character: that was a tenth of serve's CPU per request.
//! Whatever came from the client (the model name) is escaped here, so a request cannot write
//! control characters or line breaks into the log. `--log-format json` keeps the structured
//! `tracing` event.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

/// Where finished lines go (serve: the non-blocking log writer, so lines keep their order
/// with the other log lines).
pub type Sink = Arc<dyn Fn(&[u8]) + Send + Sync>;

#[derive(Clone)]
pub struct AccessLog {
    sink: Sink,
    ansi: bool,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("ansi", &self.ansi)
            .finish_non_exhaustive()
    }
}

/// One request's facts, as the log line shows them.
pub struct Line<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub model: &'a str,
    pub chosen: &'a str,
    pub status: u16,
    pub attempts: usize,
    pub streaming: bool,
    pub upstream_ms: f64,
    pub total_ms: f64,
    pub error: &'a str,
    pub request_id: &'a str,
}

impl AccessLog {
    pub fn new(sink: Sink, ansi: bool) -> AccessLog {
        AccessLog { sink, ansi }
    }

    pub fn write(&self, line: &Line<'_>) {
        let text = self.format(line, SystemTime::now());
        (self.sink)(text.as_bytes());
    }

    fn format(&self, l: &Line<'_>, now: SystemTime) -> String {
        let mut out = String::with_capacity(256);
        // The layout of tracing-subscriber's compact format: dimmed time, green level.
        if self.ansi {
            out.push_str("\x1b[2m");
            push_timestamp(&mut out, now);
            out.push_str("\x1b[0m \x1b[32m INFO\x1b[0m ");
        } else {
            push_timestamp(&mut out, now);
            out.push_str("  INFO ");
        }
        out.push_str(l.method);
        out.push(' ');
        push_clean(&mut out, l.path);
        out.push(' ');
        push_clean(&mut out, l.model);
        out.push_str(" → ");
        push_clean(&mut out, l.chosen);
        // Numbers through itoa and milliseconds with one decimal as two integers: `write!`
        // and float formatting were most of this line's cost.
        let mut n = itoa::Buffer::new();
        out.push(' ');
        out.push_str(n.format(l.status));
        out.push_str(" attempts=");
        out.push_str(n.format(l.attempts));
        out.push_str(if l.streaming {
            " stream=true"
        } else {
            " stream=false"
        });
        for (name, ms) in [(" upstream_ms=", l.upstream_ms), (" total_ms=", l.total_ms)] {
            let t = tenths(ms);
            out.push_str(name);
            out.push_str(n.format(t / 10));
            out.push('.');
            out.push_str(n.format(t % 10));
        }
        out.push_str(" error=");
        out.push_str(l.error);
        out.push_str(" request_id=");
        push_clean(&mut out, l.request_id);
        out.push('\n');
        out
    }
}

/// RFC 3339 with microseconds, UTC. The date and time of day are formatted once per second
/// per thread (the civil-date arithmetic costs more than the rest of the line).
fn push_timestamp(out: &mut String, now: SystemTime) {
    use std::cell::RefCell;
    use std::time::UNIX_EPOCH;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(at, text)| {
        if *at != secs {
            text.clear();
            let whole = UNIX_EPOCH + std::time::Duration::from_secs(secs);
            // `2026-12-02T19:06:40Z` without its `Z`.
            let _ = write!(text, "{}", humantime::format_rfc3339_seconds(whole));
            text.pop();
            *at = secs;
        }
        out.push_str(text);
    });
    let micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut m = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    out.push('.');
    out.push_str(std::str::from_utf8(&digits).unwrap_or("000000"));
    out.push('Z');
}

fn tenths(ms: f64) -> u64 {
    (ms * 10.0).round().max(0.0) as u64
}

/// `s` as is when it is printable ASCII (the usual case), else with control characters escaped.
fn push_clean(out: &mut String, s: &str) {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) || !s.chars().any(char::is_control) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::{Duration, UNIX_EPOCH};

    fn line<'a>(model: &'a str) -> Line<'a> {
        Line {
            method: "POST",
            path: "/v1/chat/completions",
            model,
            chosen: "ollama:llama3.2",
            status: 200,
            attempts: 1,
            streaming: true,
            upstream_ms: 0.5,
            total_ms: 0.6,
            error: "-",
            request_id: "req_0123456789abcdef",
        }
    }

    #[test]
    fn the_line_has_every_fact() {
        let log = AccessLog::new(Arc::new(|_| {}), false);
        let at = UNIX_EPOCH + Duration::from_micros(1_764_704_800_020_964);
        assert_eq!(
            log.format(&line("llama3.2"), at),
            "2025-12-02T19:46:40.020964Z  INFO POST /v1/chat/completions llama3.2 → ollama:llama3.2 200 \
             attempts=1 stream=true upstream_ms=0.5 total_ms=0.6 error=- request_id=req_0123456789abcdef\n"
        );
    }

    #[test]
    fn timestamps_follow_the_clock_within_and_across_seconds() {
        let log = AccessLog::new(Arc::new(|_| {}), false);
        let at = |micros: u64| {
            let text = log.format(&line("m"), UNIX_EPOCH + Duration::from_micros(micros));
            text[..text.find(' ').unwrap()].to_string()
        };
        assert_eq!(at(1_764_704_800_000_007), "2025-12-02T19:46:40.000007Z");
        assert_eq!(at(1_764_704_800_999_999), "2025-12-02T19:46:40.999999Z");
        assert_eq!(at(1_764_704_801_000_000), "2025-12-02T19:46:41.000000Z");
        assert_eq!(at(1_764_704_799_500_000), "2025-12-02T19:46:39.500000Z");
    }

    #[test]
    fn non_ascii_text_is_kept_and_c1_controls_escaped() {
        let log = AccessLog::new(Arc::new(|_| {}), false);
        let text = log.format(&line("modèle-日本\u{85}"), UNIX_EPOCH);
        assert!(text.contains(r" modèle-日本\u{85} → "), "{text}");
    }

    #[test]
    fn milliseconds_have_one_decimal() {
        let log = AccessLog::new(Arc::new(|_| {}), false);
        let mut l = line("m");
        l.upstream_ms = 12.0;
        l.total_ms = 1234.56;
        let text = log.format(&l, UNIX_EPOCH);
        assert!(
            text.contains(" upstream_ms=12.0 total_ms=1234.6 "),
            "{text}"
        );
    }

    #[test]
    fn a_client_cannot_write_control_characters_into_the_log() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let log = AccessLog::new(
            Arc::new(move |b| sink.lock().unwrap().extend_from_slice(b)),
            false,
        );
        log.write(&line("x\n2026-01-01T00:00:00Z  INFO forged\x1b[31m"));
        let text = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(!text.contains('\x1b'), "{text}");
        assert!(
            text.contains(r"x\n2026-01-01T00:00:00Z  INFO forged\u{1b}[31m"),
            "{text}"
        );
    }

    #[test]
    fn ansi_colours_time_and_level() {
        let log = AccessLog::new(Arc::new(|_| {}), true);
        let text = log.format(&line("m"), UNIX_EPOCH);
        assert!(
            text.starts_with("\x1b[2m1970-01-01T00:00:00.000000Z\x1b[0m \x1b[32m INFO\x1b[0m POST")
        );
    }
}
