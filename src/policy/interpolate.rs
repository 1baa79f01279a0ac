//! `${…}` templates in config strings: parsing, and the references they make.
//!
//! ngrok evaluates the text between `${` and `}` as CEL at request time. Here we split a string
//! into literal and expression parts and recognise the references that matter offline:
//! `secrets.get('vault', 'name')` (resolved locally), `vars.x`, `req.*` and `conn.*`.

use std::ops::Range;

/// A config string that may hold `${…}` expressions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    pub raw: String,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Lit(String),
    Expr(Expr),
}

/// One `${…}` expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// The CEL text between `${` and `}`.
    pub source: String,
    /// Byte range of `source` inside the template's raw text.
    pub range: Range<usize>,
    /// Secrets the expression reads.
    pub secrets: Vec<SecretRef>,
    /// Root variables it reads (`req`, `conn`, `vars`, `secrets`, `time`, …), in order of appearance.
    pub roots: Vec<String>,
}

/// `secrets.get('vault', 'name')`, or the one-argument form some ngrok examples use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    pub vault: Option<String>,
    pub name: String,
    /// Byte range of the whole call inside the template's raw text.
    pub range: Range<usize>,
}

/// A problem in a template, located inside its raw text.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    pub range: Range<usize>,
    pub kind: TemplateErrorKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TemplateErrorKind {
    Unterminated,
    Empty,
    SecretsArity(usize),
    SecretsNotLiteral,
}

/// Variables a `${…}` may read in a traffic policy.
pub const ROOTS: &[&str] = &[
    "req", "conn", "vars", "secrets", "time", "actions", "endpoint", "ai",
];

impl Template {
    /// A template with no `${…}` in it.
    pub fn literal(text: impl Into<String>) -> Self {
        let raw = text.into();
        Template {
            parts: vec![Part::Lit(raw.clone())],
            raw,
        }
    }

    /// Parses `raw`; errors are reported with byte ranges inside `raw`.
    pub fn parse(raw: &str) -> Result<Template, Vec<TemplateError>> {
        let mut parts = Vec::new();
        let mut errors = Vec::new();
        let bytes = raw.as_bytes();
        let mut lit_start = 0;
        let mut i = 0;
        while i + 1 < bytes.len() {
            if bytes[i] == b'$' && bytes[i + 1] == b'{' {
                let start = i + 2;
                match find_close(raw, start) {
                    Some(end) => {
                        if lit_start < i {
                            parts.push(Part::Lit(raw[lit_start..i].to_string()));
                        }
                        let source = &raw[start..end];
                        if source.trim().is_empty() {
                            errors.push(TemplateError {
                                range: i..end + 1,
                                kind: TemplateErrorKind::Empty,
                            });
                        } else {
                            let (secrets, mut errs) = find_secrets(source, start);
                            errors.append(&mut errs);
                            parts.push(Part::Expr(Expr {
                                source: source.to_string(),
                                range: start..end,
                                roots: roots(source),
                                secrets,
                            }));
                        }
                        i = end + 1;
                        lit_start = i;
                        continue;
                    }
                    None => {
                        errors.push(TemplateError {
                            range: i..raw.len(),
                            kind: TemplateErrorKind::Unterminated,
                        });
                        lit_start = raw.len();
                        break;
                    }
                }
            }
            i += 1;
        }
        if lit_start < raw.len() {
            parts.push(Part::Lit(raw[lit_start..].to_string()));
        }
        if errors.is_empty() {
            Ok(Template {
                raw: raw.to_string(),
                parts,
            })
        } else {
            Err(errors)
        }
    }

    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    pub fn exprs(&self) -> impl Iterator<Item = &Expr> {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr(e) => Some(e),
            Part::Lit(_) => None,
        })
    }

    pub fn secrets(&self) -> impl Iterator<Item = &SecretRef> {
        self.exprs().flat_map(|e| e.secrets.iter())
    }
}

/// The bytes of `s` from `start` on that are outside CEL string literals, with their offsets.
/// Every scanner of `${…}` text (closing braces, `secrets.get(…)` arguments, `+` splits) reads
/// through this one, so quotes and escapes are handled the same way everywhere.
pub fn unquoted_bytes(s: &str, start: usize) -> impl Iterator<Item = (usize, u8)> + '_ {
    let bytes = s.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = start;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            let (at, b) = (i, bytes[i]);
            i += 1;
            match quote {
                Some(_) if b == b'\\' => i += 1,
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None if b == b'\'' || b == b'"' => quote = Some(b),
                None => return Some((at, b)),
            }
        }
        None
    })
}

/// The offset of the `close` that ends a group whose contents start at `start`, skipping
/// nested `open`/`close` pairs and string literals.
fn find_closing(s: &str, start: usize, open: u8, close: u8) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in unquoted_bytes(s, start) {
        if b == open {
            depth += 1;
        } else if b == close {
            if depth == 0 {
                return Some(i);
            }
            depth -= 1;
        }
    }
    None
}

/// Finds the `}` that closes a `${` whose expression starts at `start` (CEL map literals nest).
fn find_close(raw: &str, start: usize) -> Option<usize> {
    find_closing(raw, start, b'{', b'}')
}

/// Identifiers that start a member chain (`req` in `req.headers`), outside string literals.
fn roots(source: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let bytes = source.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == b'\\' {
                i += 1;
            } else if b == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if b == b'\'' || b == b'"' {
            quote = Some(b);
            i += 1;
            continue;
        }
        if b.is_ascii_alphabetic() || b == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let preceded_by_dot = source[..start].trim_end().ends_with('.');
            let followed_by_dot = source[i..].trim_start().starts_with('.');
            let word = &source[start..i];
            if !preceded_by_dot && followed_by_dot && !out.iter().any(|w| w == word) {
                out.push(word.to_string());
            }
            continue;
        }
        i += 1;
    }
    out
}

/// Finds `secrets.get(...)` calls; `offset` is where `source` starts in the template.
fn find_secrets(source: &str, offset: usize) -> (Vec<SecretRef>, Vec<TemplateError>) {
    let mut secrets = Vec::new();
    let mut errors = Vec::new();
    let mut search = 0;
    while let Some(pos) = source[search..].find("secrets.get") {
        let call_start = search + pos;
        let after = call_start + "secrets.get".len();
        let rest = source[after..].trim_start();
        if !rest.starts_with('(') {
            search = after;
            continue;
        }
        let open = source.len() - rest.len();
        let Some(close) = find_paren_close(source, open + 1) else {
            errors.push(TemplateError {
                range: offset + call_start..offset + source.len(),
                kind: TemplateErrorKind::Unterminated,
            });
            break;
        };
        let range = offset + call_start..offset + close + 1;
        match string_args(&source[open + 1..close]) {
            Some(args) => match args.as_slice() {
                [name] => secrets.push(SecretRef {
                    vault: None,
                    name: name.clone(),
                    range,
                }),
                [vault, name] => secrets.push(SecretRef {
                    vault: Some(vault.clone()),
                    name: name.clone(),
                    range,
                }),
                other => errors.push(TemplateError {
                    range,
                    kind: TemplateErrorKind::SecretsArity(other.len()),
                }),
            },
            None => errors.push(TemplateError {
                range,
                kind: TemplateErrorKind::SecretsNotLiteral,
            }),
        }
        search = close + 1;
    }
    (secrets, errors)
}

fn find_paren_close(source: &str, start: usize) -> Option<usize> {
    find_closing(source, start, b'(', b')')
}

/// Parses `'a', "b"` into string values; `None` if any argument is not a plain string literal.
fn string_args(args: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = args.trim();
    if rest.is_empty() {
        return Some(out);
    }
    loop {
        let q = rest.chars().next()?;
        if q != '\'' && q != '"' {
            return None;
        }
        let end = rest[1..].find(q)? + 1;
        out.push(rest[1..end].to_string());
        rest = rest[end + 1..].trim_start();
        if rest.is_empty() {
            return Some(out);
        }
        rest = rest.strip_prefix(',')?.trim_start();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_literal() {
        let t = Template::parse("gpt-4o").unwrap();
        assert!(t.is_literal());
        assert_eq!(t.parts, vec![Part::Lit("gpt-4o".into())]);
    }

    #[test]
    fn two_argument_secret() {
        let t = Template::parse("${secrets.get('openai', 'api-key')}").unwrap();
        let s: Vec<_> = t.secrets().collect();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].vault.as_deref(), Some("openai"));
        assert_eq!(s[0].name, "api-key");
        assert_eq!(
            &t.raw[s[0].range.clone()],
            "secrets.get('openai', 'api-key')"
        );
    }

    #[test]
    fn one_argument_secret_and_concatenation() {
        let t = Template::parse("Bearer ${'x' + secrets.get(\"token\")}!").unwrap();
        let s: Vec<_> = t.secrets().collect();
        assert_eq!(s[0].vault, None);
        assert_eq!(s[0].name, "token");
        assert_eq!(t.parts.len(), 3);
    }

    #[test]
    fn roots_are_found_outside_strings() {
        let t = Template::parse("${req.headers['x-id'][0] + 'conn.x' + conn.client_ip}").unwrap();
        assert_eq!(t.exprs().next().unwrap().roots, vec!["req", "conn"]);
    }

    #[test]
    fn nested_braces_and_quotes() {
        let t = Template::parse("${{'a': '}'}['a']}").unwrap();
        assert_eq!(t.exprs().next().unwrap().source, "{'a': '}'}['a']");
    }

    #[test]
    fn errors_are_located() {
        let e = Template::parse("x ${secrets.get('a'").unwrap_err();
        assert_eq!(e[0].kind, TemplateErrorKind::Unterminated);
        assert_eq!(e[0].range.start, 2);
        let e = Template::parse("${secrets.get('a','b','c')}").unwrap_err();
        assert_eq!(e[0].kind, TemplateErrorKind::SecretsArity(3));
        let e = Template::parse("${secrets.get(vars.x)}").unwrap_err();
        assert_eq!(e[0].kind, TemplateErrorKind::SecretsNotLiteral);
        let e = Template::parse("${ }").unwrap_err();
        assert_eq!(e[0].kind, TemplateErrorKind::Empty);
    }
}
