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
        let ts = humantime::format_rfc3339_micros(now);
        // The layout of tracing-subscriber's compact format: dimmed time, green level.
        if self.ansi {
            let _ = write!(out, "\x1b[2m{ts}\x1b[0m \x1b[32m INFO\x1b[0m ");
        } else {
            let _ = write!(out, "{ts}  INFO ");
        }
        out.push_str(l.method);
        out.push(' ');
        push_clean(&mut out, l.path);
        out.push(' ');
        push_clean(&mut out, l.model);
        out.push_str(" → ");
        push_clean(&mut out, l.chosen);
        // Milliseconds with one decimal as two integers (float formatting costs more).
        let (up, total) = (tenths(l.upstream_ms), tenths(l.total_ms));
        let _ = write!(
            out,
            " {} attempts={} stream={} upstream_ms={}.{} total_ms={}.{} error={} request_id=",
            l.status,
            l.attempts,
            l.streaming,
            up / 10,
            up % 10,
            total / 10,
            total % 10,
            l.error
        );
        push_clean(&mut out, l.request_id);
        out.push('\n');
        out
    }
}

fn tenths(ms: f64) -> u64 {
    (ms * 10.0).round().max(0.0) as u64
}

/// `s` as is when it has no control characters (the usual case), else with them escaped.
fn push_clean(out: &mut String, s: &str) {
    if !s.chars().any(char::is_control) {
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
