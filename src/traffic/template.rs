//! `${…}` in action configs, each expression compiled with the traffic-policy CEL.

use cel::objects::Value;

use super::cel::{CompileError, EvalError, Expr, Scope};
use crate::policy::interpolate::{self, Part};
use crate::policy::secrets::SecretStore;

/// A config string, its `${…}` parts compiled.
#[derive(Debug, Clone)]
pub struct Template {
    pub raw: String,
    parts: Vec<Piece>,
    /// Written without `${…}` (a folded secret is not: its value is checked at run time).
    written_literal: bool,
}

#[derive(Debug, Clone)]
enum Piece {
    Lit(String),
    Expr(Box<Expr>),
}

impl Template {
    /// Compiles `raw`; errors carry byte ranges inside `raw`.
    pub fn compile(raw: &str, secrets: &SecretStore) -> Result<Template, Vec<CompileError>> {
        let parsed = interpolate::Template::parse(raw).map_err(|errors| {
            errors
                .into_iter()
                .map(|e| CompileError {
                    message: match e.kind {
                        interpolate::TemplateErrorKind::Unterminated => {
                            "`${` is never closed".to_owned()
                        }
                        interpolate::TemplateErrorKind::Empty => "empty `${}`".to_owned(),
                        interpolate::TemplateErrorKind::SecretsArity(n) => {
                            format!("secrets.get takes 2 arguments (vault, name), not {n}")
                        }
                        interpolate::TemplateErrorKind::SecretsNotLiteral => {
                            "secrets.get needs quoted names".to_owned()
                        }
                    },
                    help: Some("write `${<CEL expression>}`".to_owned()),
                    range: e.range,
                })
                .collect::<Vec<_>>()
        })?;
        let mut parts = Vec::new();
        let mut errors = Vec::new();
        let written_literal = parsed.parts.iter().all(|p| matches!(p, Part::Lit(_)));
        for part in parsed.parts {
            match part {
                Part::Lit(s) => parts.push(Piece::Lit(s)),
                Part::Expr(e) => match Expr::compile(&e.source, secrets) {
                    // A literal (a resolved secret, say) is text from the start.
                    // A string literal (a resolved secret, say) is text from the start; other
                    // literals keep their type for `value`.
                    Ok(x) => parts.push(match x.literal() {
                        Some(Value::String(s)) => Piece::Lit(s.to_string()),
                        _ => Piece::Expr(Box::new(x)),
                    }),
                    Err(errs) => errors.extend(errs.into_iter().map(|mut c| {
                        c.range = c.range.start + e.range.start..c.range.end + e.range.start;
                        c
                    })),
                },
            }
        }
        if errors.is_empty() {
            Ok(Template {
                raw: raw.to_owned(),
                parts,
                written_literal,
            })
        } else {
            Err(errors)
        }
    }

    /// The text, when it has no `${…}` left to evaluate.
    pub fn literal_text(&self) -> Option<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Expr(_) => return None,
            }
        }
        Some(out)
    }

    /// Whether the text was written without `${…}`.
    pub fn is_literal(&self) -> bool {
        self.written_literal
    }

    /// The text with every `${…}` substituted.
    pub fn render(&self, scope: &Scope) -> Result<String, EvalError> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Expr(e) => {
                    e.write(scope, &mut out)
                        .map_err(|error| EvalError::Template {
                            expr: e.source.clone(),
                            error: Box::new(error),
                        })?
                }
            }
        }
        Ok(out)
    }

    /// The value: exactly `"${expr}"` keeps the expression's type (set-vars), else a string.
    pub fn value(&self, scope: &Scope) -> Result<Value, EvalError> {
        match self.parts.as_slice() {
            [Piece::Expr(e)] if self.raw.trim() == format!("${{{}}}", e.source) => eval(e, scope),
            _ => self.render(scope).map(Value::from),
        }
    }
}

/// One `${…}`, its error naming it.
fn eval(e: &Expr, scope: &Scope) -> Result<Value, EvalError> {
    e.eval(scope).map_err(|error| EvalError::Template {
        expr: e.source.clone(),
        error: Box::new(error),
    })
}
