//! Diagnostics for people (miette snippets), for CI (JSON) and for GitHub workflow annotations.

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource};
use serde::Serialize;

use crate::policy::{Diagnostic, Severity, Source};

/// How to draw human output.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
    pub width: usize,
}

/// Renders one diagnostic as a miette snippet, with the aigw code (and ngrok's, if any).
pub fn human(d: &Diagnostic, source: &Source, style: Style) -> String {
    let code = match d.code.ngrok() {
        Some(ngrok) => format!("{} ({ngrok})", d.code.id()),
        None => d.code.id().to_string(),
    };
    let mut diag = MietteDiagnostic::new(d.message.clone())
        .with_code(code.clone())
        .with_severity(match d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        });
    if let Some(help) = &d.help {
        diag = diag.with_help(help.clone());
    }
    if let Some(span) = &d.span {
        let span = clamp(span.clone(), &source.text);
        diag = diag.with_label(LabeledSpan::new_with_span(d.label.clone(), span));
    }
    for (span, label) in &d.related {
        let span = clamp(span.clone(), &source.text);
        diag = diag.with_label(LabeledSpan::new_with_span(Some(label.clone()), span));
    }
    let report = miette::Report::new(diag).with_source_code(
        NamedSource::new(source.name.clone(), source.text.clone()).with_language("yaml"),
    );
    let theme = if style.color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(style.width)
        .with_links(false)
        .with_context_lines(1);
    let mut rendered = String::new();
    let _ = handler.render_report(&mut rendered, report.as_ref());
    // miette puts the code on a line of its own and the message after a `×`; we print the
    // rustc-style header users know (`error[AIGW-E005]: …`) and keep miette's snippet and help.
    let body: Vec<&str> = rendered.lines().collect();
    let start = body
        .iter()
        .position(|l| l.contains("╭─[") || l.trim_start().starts_with("help:"))
        .unwrap_or(body.len());
    let word = severity_word(d.severity);
    let word = match (style.color, d.severity) {
        (false, _) => word.to_string(),
        (true, Severity::Error) => format!("\x1b[1;31m{word}\x1b[0m"),
        (true, Severity::Warning) => format!("\x1b[1;33m{word}\x1b[0m"),
    };
    let mut out = format!("{word}[{code}]: {}\n", d.message);
    for line in &body[start..] {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn clamp(span: std::ops::Range<usize>, text: &str) -> std::ops::Range<usize> {
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    start..end
}

pub fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// 1-based line and column of a byte offset (column counted in characters).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One diagnostic in `--format json`.
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic {
    pub severity: Severity,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ngrok_code: Option<&'static str>,
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub end_line: Option<usize>,
    pub end_column: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub help: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<JsonRelated>,
}

/// A secondary location of a diagnostic.
#[derive(Debug, Serialize)]
pub struct JsonRelated {
    pub line: usize,
    pub column: usize,
    pub label: String,
}

impl JsonDiagnostic {
    pub fn new(d: &Diagnostic, source: &Source) -> Self {
        let start = d.span.as_ref().map(|s| line_col(&source.text, s.start));
        let end = d.span.as_ref().map(|s| line_col(&source.text, s.end));
        JsonDiagnostic {
            severity: d.severity,
            code: d.code.id(),
            ngrok_code: d.code.ngrok(),
            message: d.message.clone(),
            line: start.map(|p| p.0),
            column: start.map(|p| p.1),
            end_line: end.map(|p| p.0),
            end_column: end.map(|p| p.1),
            label: d.label.clone(),
            help: d.help.clone(),
            related: d
                .related
                .iter()
                .map(|(span, label)| {
                    let (line, column) = line_col(&source.text, span.start);
                    JsonRelated {
                        line,
                        column,
                        label: label.clone(),
                    }
                })
                .collect(),
        }
    }
}

/// A GitHub Actions workflow command (`::error file=…,line=…::message`).
pub fn github(d: &Diagnostic, source: &Source) -> String {
    let level = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let mut props = vec![format!("file={}", escape_property(&source.name))];
    if let Some(span) = &d.span {
        let (line, col) = line_col(&source.text, span.start);
        let (end_line, end_col) = line_col(&source.text, span.end);
        props.push(format!("line={line}"));
        props.push(format!("col={col}"));
        if end_line == line {
            props.push(format!("endColumn={end_col}"));
        } else {
            props.push(format!("endLine={end_line}"));
        }
    }
    props.push(format!("title={}", escape_property(d.code.id())));
    let mut message = d.message.clone();
    if let Some(help) = &d.help {
        message.push_str("\nhelp: ");
        message.push_str(help);
    }
    format!("::{level} {}::{}", props.join(","), escape_data(&message))
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a: 1\nbé: 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 5), (2, 1));
        assert_eq!(line_col(text, 9), (2, 4));
    }

    #[test]
    fn github_escapes() {
        assert_eq!(escape_data("a%b\nc"), "a%25b%0Ac");
        assert_eq!(escape_property("x:y,z"), "x%3Ay%2Cz");
    }
}
