//! What users write: types, span-aware loading, `${…}` interpolation, structural checks.
//!
//! This module imports nothing above it. Checks that need CEL or the provider catalog happen
//! in `routing`, which calls [`checks::check`] and compiles the strategies.

pub mod actions;
mod build;
pub mod checks;
pub mod diagnostic;
pub mod duration;
pub mod interpolate;
pub mod model;
pub mod node;
pub mod schema;
pub mod secrets;

use std::sync::Arc;

pub use build::{MAX_TOKEN_LIMIT, SURFACES, inner_span};
pub use diagnostic::{Code, Diagnostic, Severity};
pub use model::*;

/// Larger inputs are refused before parsing: no real policy comes near this.
pub const MAX_POLICY_BYTES: usize = 16 * 1024 * 1024;

/// Largest secrets file read (`--secrets`): a few keys take a few hundred bytes.
pub const MAX_SECRETS_BYTES: usize = 1024 * 1024;

/// The first `limit` bytes of a file (all of it when shorter), read without ever holding more:
/// `aigw validate /dev/zero` read whole ran out of memory before any size check.
pub fn read_prefix(path: &std::path::Path, limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(limit as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// A policy file's name and text, shared by every diagnostic that points into it.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// The result of reading a policy: the typed policy when its shape could be read, and every
/// diagnostic found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub source: Arc<Source>,
    pub policy: Option<TrafficPolicy>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Reads policy bytes (YAML or JSON). Never panics: bad input becomes diagnostics.
pub fn load_bytes(name: &str, bytes: &[u8]) -> Loaded {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.to_string(),
        Err(e) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let at = e.valid_up_to();
            let d = Diagnostic::new(
                Code::YamlSyntax,
                None,
                format!("the file is not UTF-8 text (invalid byte at offset {at})"),
            )
            .help("save the policy as UTF-8 YAML or JSON");
            return Loaded {
                source: Arc::new(Source {
                    name: name.into(),
                    text,
                }),
                policy: None,
                diagnostics: vec![d],
            };
        }
    };
    load_str(name, text)
}

/// Reads policy text (YAML or JSON, which is YAML).
pub fn load_str(name: &str, text: impl Into<String>) -> Loaded {
    let text = text.into();
    let source = Arc::new(Source {
        name: name.into(),
        text,
    });
    let text = source.text.as_str();
    if text.len() > MAX_POLICY_BYTES {
        let d = Diagnostic::new(
            Code::YamlSyntax,
            None,
            format!(
                "the file is {} MiB; aigw reads policies up to {} MiB",
                text.len() >> 20,
                MAX_POLICY_BYTES >> 20
            ),
        )
        .help("a policy this large is almost certainly not the file you meant");
        return Loaded {
            source,
            policy: None,
            diagnostics: vec![d],
        };
    }
    let root = match node::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            let d = Diagnostic::new(Code::NotAPolicy, None, "the policy is empty")
                .help("start with `on_http_request:` and an `ai-gateway` action; `aigw init` writes a starting point");
            return Loaded {
                source,
                policy: None,
                diagnostics: vec![d],
            };
        }
        Err(e) => {
            let d = Diagnostic::new(
                Code::YamlSyntax,
                e.span,
                format!("invalid YAML: {}", e.message),
            )
            .help("fix the YAML syntax first (indentation, quotes, a `:` after each key)");
            return Loaded {
                source,
                policy: None,
                diagnostics: vec![d],
            };
        }
    };
    let mut builder = build::Builder::new(text);
    let policy = builder.traffic_policy(&root);
    let diagnostics = builder.diags;
    Loaded {
        source,
        policy: Some(policy),
        diagnostics,
    }
}
