//! `aigw validate`: load + compile each policy exactly as serve would, and report.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::{ColorChoice, ReportFormat, ValidateArgs};
use crate::commands::{CommandError, Exit, common};
use crate::policy::secrets::SecretStore;
use crate::policy::{self, Diagnostic, Severity, Source};
use crate::render::diagnostics::{self as render, JsonDiagnostic, Style};
use crate::routing::engine::{Engine, EngineOptions};

/// Diagnostics for one policy text: structure, meaning and strategies, sorted by position.
pub fn check_text(
    name: &str,
    bytes: &[u8],
    secrets: &SecretStore,
) -> (std::sync::Arc<Source>, Vec<Diagnostic>) {
    let loaded = policy::load_bytes(name, bytes);
    let opts = EngineOptions {
        secrets: secrets.clone(),
        ..EngineOptions::default()
    };
    let diags = match Engine::build(&loaded, opts) {
        Ok((_, warnings)) => warnings,
        Err(all) => all,
    };
    (loaded.source, diags)
}

#[derive(Serialize)]
struct JsonReport<'a> {
    path: &'a str,
    valid: bool,
    errors: usize,
    warnings: usize,
    diagnostics: Vec<JsonDiagnostic>,
}

pub fn run(args: ValidateArgs, color: ColorChoice) -> Result<Exit, CommandError> {
    let secrets = common::secrets(args.secrets.as_deref())?;
    let style = common::style(color, std::io::stderr().is_terminal());
    let mut exit = Exit::Success;
    let mut stdout = std::io::stdout().lock();
    let mut files: Vec<PathBuf> = args.files.iter().chain(&args.policy).cloned().collect();
    if files.is_empty() {
        files.push(PathBuf::from("policy.yaml"));
    }
    for (i, path) in files.iter().enumerate() {
        if i > 0 && args.format == ReportFormat::Human {
            eprintln!();
        }
        let bytes = match common::read_input(path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                if path == Path::new("policy.yaml") && files.len() == 1 {
                    eprintln!(
                        "  help: pass the policy to check, e.g. `aigw validate my-policy.yaml`, or create one with `aigw init`"
                    );
                }
                exit = Exit::Error;
                continue;
            }
        };
        let name = if path == Path::new("-") {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        let (source, diags) = check_text(&name, &bytes, &secrets);
        let errors = diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        let warnings = diags.len() - errors;
        let failed = errors > 0 || (args.deny_warnings && warnings > 0);
        if failed && exit == Exit::Success {
            exit = Exit::Failure;
        }
        let written = match args.format {
            ReportFormat::Human => write_human(
                &mut std::io::stderr().lock(),
                &source,
                &diags,
                style,
                errors,
                warnings,
                args.deny_warnings,
            ),
            ReportFormat::Json => {
                let report = JsonReport {
                    path: &name,
                    valid: !failed,
                    errors,
                    warnings,
                    diagnostics: diags
                        .iter()
                        .map(|d| JsonDiagnostic::new(d, &source))
                        .collect(),
                };
                writeln!(stdout, "{}", serde_json::to_string(&report)?)
            }
            ReportFormat::Github => diags
                .iter()
                .try_for_each(|d| writeln!(stdout, "{}", render::github(d, &source))),
        };
        written?;
    }
    Ok(exit)
}

fn write_human(
    out: &mut impl Write,
    source: &Source,
    diags: &[Diagnostic],
    style: Style,
    errors: usize,
    warnings: usize,
    deny_warnings: bool,
) -> std::io::Result<()> {
    write!(out, "{}", render::human_all(diags, source, style))?;
    let mut line = summary(&source.name, errors, warnings);
    if deny_warnings && errors == 0 && warnings > 0 {
        line = line.replacen(": valid, ", ": invalid (--deny-warnings), ", 1);
    }
    writeln!(out, "{line}")
}

/// `policy.yaml: 1 error, 1 warning` or `policy.yaml: valid`.
pub fn summary(name: &str, errors: usize, warnings: usize) -> String {
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    match (errors, warnings) {
        (0, 0) => format!("{name}: valid"),
        (0, w) => format!("{name}: valid, {}", plural(w, "warning")),
        (e, 0) => format!("{name}: {}", plural(e, "error")),
        (e, w) => format!("{name}: {}, {}", plural(e, "error"), plural(w, "warning")),
    }
}
