//! Strategies as `validate` reports them: compiled with their CEL issues turned into located
//! diagnostics, and the coverage warnings over the whole list (W003, W010).

use crate::policy::{self, Code, Diagnostic, Sp, inner_span};

use super::cel::{self, Strategy, StrategyKind};

pub fn compile_all(
    strategies: &[Sp<String>],
    kind: StrategyKind,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(String, Strategy)> {
    let mut out = Vec::new();
    for s in strategies {
        match cel::compile(&s.value, kind) {
            Ok((strategy, warnings)) => {
                diags.extend(warnings.into_iter().map(|i| cel_diagnostic(i, s, text)));
                out.push((s.value.clone(), strategy));
            }
            Err(issues) => {
                // A strategy over the wrong root (`ai.keys` in model_selection) also has the
                // wrong result type; the root is the one thing to fix, so say only that.
                let wrong_root = issues.iter().any(|i| i.code == "cel-wrong-root");
                diags.extend(
                    issues
                        .into_iter()
                        .filter(|i| !(wrong_root && i.code == "cel-result-type"))
                        .map(|i| cel_diagnostic(i, s, text)),
                );
            }
        }
    }
    out
}

fn cel_diagnostic(issue: cel::CelIssue, s: &Sp<String>, text: &str) -> Diagnostic {
    let code = match issue.code {
        "cel-syntax" => Code::CelSyntax,
        "cel-unknown-variable" => Code::CelUnknownVariable,
        "cel-unknown-field" => Code::CelUnknownField,
        "cel-unknown-function" => Code::CelUnknownFunction,
        "cel-arity" => Code::CelArity,
        "cel-price-type" => Code::CelPriceType,
        "cel-result-type" => Code::CelResultType,
        "cel-wrong-root" => Code::CelWrongRoot,
        "cel-unguarded-key" => Code::CelUnguardedKey,
        _ => Code::CelSyntax,
    };
    // An error at the very end of the expression has an empty range; underline its last
    // character so the caret has something to point at.
    let mut range = issue.range.clone();
    if range.is_empty() {
        let end = range.start.min(s.value.len());
        let start = s.value[..end]
            .char_indices()
            .next_back()
            .map_or(0, |(i, _)| i);
        range = start..end.max(start + 1).min(s.value.len().max(start));
    }
    let span = inner_span(text, &s.span, &s.value, range);
    let syntax = code == Code::CelSyntax && issue.help.is_none();
    let mut d = Diagnostic::new(code, span, issue.message);
    if code == Code::CelArity && issue.help.is_none() {
        d = d.help(
            "check the arguments against the documented signatures, e.g. underCost('text.input', 1.0), sortBy('price') or sortBy(m, m.pricing.input), ai.models.get('openai', 'gpt-4o')",
        );
    }
    if syntax {
        d = d.help(
            "a strategy is one CEL expression, e.g. \"ai.models.filter(m, m.provider_id == 'ollama')\"; check parentheses and quotes",
        );
    }
    d.severity = match issue.severity {
        cel::Severity::Error => policy::Severity::Error,
        cel::Severity::Warning => policy::Severity::Warning,
    };
    if let Some(h) = issue.help {
        d = d.help(h);
    }
    d
}

/// W003 (no catch-all last) and W010 (strategies after a catch-all never run), from the compiled
/// strategies. When one did not compile its error is the thing to fix: no coverage warning is
/// added on top of it.
pub fn coverage(
    written: &[Sp<String>],
    compiled: &[(String, Strategy)],
    diags: &mut Vec<Diagnostic>,
) {
    if written.is_empty() || compiled.len() < written.len() {
        return;
    }
    if let Some(pos) = compiled.iter().position(|(_, s)| s.is_catch_all()) {
        for later in &written[pos + 1..] {
            diags.push(
                Diagnostic::new(Code::UnreachableStrategy, later.span.clone(), "this strategy never runs")
                    .label("after a catch-all")
                    .help("an earlier strategy returns every model, so later ones are never evaluated; remove it or move it up"),
            );
        }
    } else {
        let last = written.last().expect("non-empty");
        diags.push(
            Diagnostic::new(Code::NoCatchAllStrategy, last.span.clone(), "no strategy matches every request")
                .help("add a last strategy such as \"ai.models\" so a request never ends with no candidate"),
        );
    }
}
