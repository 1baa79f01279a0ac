//! `aigw probe` output: a header, a model table and findings per provider; or one JSON document.

use comfy_table::{ContentArrangement, Table, presets};

use crate::probe::{Finding, Kind, ModelRow, ProviderReport, Report, Severity, Warm, human_ms};
use crate::render::diagnostics::Style;
use crate::routing::upstream::UrlOrigin;

/// The stable JSON document (`format: "aigw-probe/1"`).
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("the report serializes")
}

fn paint(style: Style, code: &str, text: &str) -> String {
    if style.color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// The human report.
pub fn table(report: &Report, style: Style) -> String {
    let mut out = String::new();
    if report.providers.is_empty() {
        out.push_str("no providers to probe: the policy lists none (name one, e.g. `aigw probe openai`, or a URL)\n");
    }
    for (i, p) in report.providers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        provider(&mut out, p, style);
    }
    out.push('\n');
    out.push_str(&summary_line(report, style));
    out.push('\n');
    out
}

fn provider(out: &mut String, p: &ProviderReport, style: Style) {
    let mut head = paint(style, "1", &p.id);
    if let Some(url) = &p.url
        && *url != p.id
    {
        head.push_str(&format!("  {url}"));
    }
    match &p.origin {
        UrlOrigin::OllamaDefault { configured } => {
            head.push_str(&format!("  (mapped from {configured})"))
        }
        UrlOrigin::Override {
            configured: Some(c),
        } if p.in_policy => head.push_str(&format!("  (--base-url; policy says {c})")),
        UrlOrigin::Override {
            configured: Some(c),
        } => head.push_str(&format!("  (--base-url; built-in {c})")),
        UrlOrigin::Override { configured: None } => head.push_str("  (--base-url)"),
        _ => {}
    }
    if !p.in_policy && !p.id.contains("://") {
        head.push_str("  (not in the policy)");
    }
    if let Some(s) = &p.server {
        match &s.version {
            Some(v) => head.push_str(&format!("  {} {v}", s.product)),
            None if p.kind != Kind::Ollama => head.push_str(&format!("  {}", s.product)),
            None => {}
        }
    }
    out.push_str(&head);
    out.push('\n');
    let t = &p.timings;
    let mut parts = Vec::new();
    if let Some(a) = &p.address {
        parts.push(format!("address {a}"));
    }
    match t.dns_ms {
        Some(v) => parts.push(format!("dns {}", human_ms(v))),
        None if p.address.is_some() => parts.push("dns — (IP address)".to_string()),
        None => {}
    }
    if let Some(v) = t.connect_ms {
        parts.push(format!("connect {}", human_ms(v)));
    }
    if let Some(v) = t.first_byte_ms {
        let tls = if t.first_byte_includes_tls {
            " (incl. TLS)"
        } else {
            ""
        };
        parts.push(format!("first byte {}{tls}", human_ms(v)));
    }
    if let Some(tls) = p.tls {
        parts.push(format!("TLS {}", if tls { "ok" } else { "failed" }));
    }
    if let Some(n) = p.listed_models {
        parts.push(format!("{n} models listed"));
    }
    if !parts.is_empty() {
        out.push_str("  ");
        out.push_str(&parts.join("  "));
        out.push('\n');
    }
    if !p.models.is_empty() {
        out.push('\n');
        out.push_str(&models_table(p));
    }
    if !p.findings.is_empty() {
        out.push('\n');
        for f in &p.findings {
            out.push_str(&finding_line(f, style));
            out.push('\n');
        }
    }
}

fn models_table(p: &ProviderReport) -> String {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .force_no_tty();
    let ollama = p.kind == Kind::Ollama;
    if ollama {
        table.set_header([
            "model",
            "in policy",
            "installed",
            "params",
            "quant",
            "size",
            "loaded",
            "warm-up",
        ]);
    } else {
        table.set_header(["model", "in policy", "listed"]);
    }
    for m in &p.models {
        if ollama {
            table.add_row(ollama_row(m));
        } else {
            let listed = match (&m.installed, p.listed_models) {
                (Some(_), _) => "yes",
                (None, Some(_)) => "no",
                (None, None) => "not checked",
            };
            table.add_row(vec![
                m.id.clone(),
                yes_no(m.in_policy).to_string(),
                listed.to_string(),
            ]);
        }
    }
    let mut out = String::new();
    for line in table.to_string().lines() {
        // comfy-table pads each cell with one space; keep a two-space indent overall.
        out.push(' ');
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "—".to_string())
}

fn ollama_row(m: &ModelRow) -> Vec<String> {
    let loaded = match (&m.installed, &m.loaded) {
        (None, _) => "—".to_string(),
        (Some(_), None) => "no".to_string(),
        (Some(_), Some(l)) => {
            let place = if l.size == 0 || l.size_vram >= l.size {
                "GPU".to_string()
            } else if l.size_vram == 0 {
                "CPU".to_string()
            } else {
                format!("{}% GPU", l.size_vram * 100 / l.size)
            };
            match l.expires_at.as_deref().and_then(clock_time) {
                Some(t) => format!("yes ({place}, until {t})"),
                None => format!("yes ({place})"),
            }
        }
    };
    let warm = match &m.warm {
        Warm::NotApplicable => "—".to_string(),
        Warm::Skipped => "skipped".to_string(),
        Warm::Disabled => "off".to_string(),
        Warm::Done { ms, .. } => human_ms(*ms),
        Warm::Failed { .. } => "failed".to_string(),
    };
    vec![
        m.id.clone(),
        yes_no(m.in_policy).to_string(),
        dash(m.installed.clone()),
        dash(m.parameter_size.clone()),
        dash(m.quantization.clone()),
        dash(m.size_bytes.map(bytes)),
        loaded,
        warm,
    ]
}

/// `HH:MM` of an RFC 3339 time, in the server's own offset (`2025-01-01T17:05:00Z` → `17:05`).
/// Ollama far-future expiries (keep_alive -1) are shown as `forever`.
fn clock_time(rfc3339: &str) -> Option<String> {
    let b = rfc3339.as_bytes();
    if b.len() < 16 || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if rfc3339
        .get(..4)
        .and_then(|y| y.parse::<u32>().ok())
        .is_some_and(|y| y >= 2200)
    {
        return Some("forever".into());
    }
    Some(rfc3339[11..16].to_string())
}

/// Sizes as `ollama list` shows them (decimal units).
pub fn bytes(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.1} GB", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.0} MB", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.0} KB", f / 1e3)
    } else {
        format!("{n} B")
    }
}

fn finding_line(f: &Finding, style: Style) -> String {
    let (mark, code) = match f.severity {
        Severity::Error => ("✗", "1;31"),
        Severity::Warning => ("!", "1;33"),
        Severity::Note => ("·", "2"),
    };
    let mut line = format!("{} {}", paint(style, code, mark), f.message);
    if let Some(fix) = &f.fix {
        line.push_str(&format!("\n    → {fix}"));
    }
    line
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn summary_line(r: &Report, style: Style) -> String {
    let s = &r.summary;
    let mut parts = Vec::new();
    if s.errors > 0 {
        parts.push(paint(
            style,
            "1;31",
            &plural(s.errors, "problem", "problems"),
        ));
    }
    if s.warnings > 0 {
        parts.push(paint(
            style,
            "1;33",
            &plural(s.warnings, "warning", "warnings"),
        ));
    }
    if s.notes > 0 {
        parts.push(plural(s.notes, "note", "notes"));
    }
    let providers = plural(s.providers, "provider", "providers");
    if s.errors == 0 {
        let ok = paint(style, "1;32", "all checks passed");
        if parts.is_empty() {
            format!("{providers}: {ok}")
        } else {
            format!("{providers}: {ok} ({})", parts.join(", "))
        }
    } else {
        format!("{providers}: {}", parts.join(", "))
    }
}

/// A writer shared between the report and the progress display (standard error, or a buffer in
/// tests).
pub type SharedWriter = std::sync::Arc<std::sync::Mutex<dyn std::io::Write + Send>>;

/// Progress on standard error: a live spinner with elapsed time on a terminal, plain lines
/// otherwise. Must be used inside a tokio runtime (the spinner ticks on a task).
pub struct StderrProgress {
    pub live: bool,
    pub sink: SharedWriter,
}

impl crate::probe::Progress for StderrProgress {
    fn start(&self, label: &str) -> Box<dyn crate::probe::ProgressItem> {
        let label = label.to_string();
        if !self.live {
            if let Ok(mut w) = self.sink.lock() {
                let _ = writeln!(w, "{label} …");
            }
            return Box::new(PlainItem {
                sink: self.sink.clone(),
            });
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let sink = self.sink.clone();
        let start = std::time::Instant::now();
        let task = tokio::spawn(async move {
            const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
            let mut i = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let secs = start.elapsed().as_secs_f64();
                if let Ok(mut w) = sink.lock() {
                    let _ = write!(
                        w,
                        "\r\x1b[2K{} {label} {secs:.1} s",
                        FRAMES[i % FRAMES.len()]
                    );
                    let _ = w.flush();
                }
                i += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        Box::new(SpinnerItem {
            stop,
            task,
            sink: self.sink.clone(),
        })
    }
}

struct PlainItem {
    sink: SharedWriter,
}

impl crate::probe::ProgressItem for PlainItem {
    fn finish(self: Box<Self>, ok: bool, message: &str) {
        if let Ok(mut w) = self.sink.lock() {
            let _ = writeln!(w, "{} {message}", if ok { "✓" } else { "✗" });
        }
    }
}

struct SpinnerItem {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    sink: SharedWriter,
}

impl crate::probe::ProgressItem for SpinnerItem {
    fn finish(self: Box<Self>, ok: bool, message: &str) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.abort();
        if let Ok(mut w) = self.sink.lock() {
            let _ = writeln!(w, "\r\x1b[2K{} {message}", if ok { "✓" } else { "✗" });
            let _ = w.flush();
        }
    }
}
