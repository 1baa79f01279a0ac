//! `aigw convert`: another gateway's configuration → an aigw policy. Pure: text in, policy text
//! and a list of notes out; the subcommand reads files and prints.
//!
//! Today it reads LiteLLM proxy `config.yaml` files ([`litellm`]). Every setting it reads is
//! either carried into the policy, turned into a `serve` flag named in the policy's header, or
//! reported as a [`Note`] with its source line: nothing is dropped silently.

mod emit;
pub mod litellm;

use std::fmt::Write as _;

/// What the conversion produced.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The policy, as YAML text with a header comment.
    pub policy: String,
    /// Warnings and settings not carried over, in source order.
    pub notes: Vec<Note>,
    /// `aigw serve` flags that carry settings the policy format cannot say.
    pub serve_flags: Vec<String>,
    /// Counts for the closing summary line.
    pub deployments: usize,
    pub model_names: usize,
    pub providers: usize,
    /// A model name a client can send, for the "next:" hint.
    pub example_model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NoteKind {
    /// Converted, but the user must act (a literal key to export) or behaviour differs.
    Warning,
    /// A setting with no place in the policy; the message says what aigw does instead.
    NotCarried,
    /// Carried as an `aigw serve` flag rather than in the policy.
    ServeFlag,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// 1-based line in the source file.
    pub line: usize,
    pub kind: NoteKind,
    pub message: String,
}

/// Why a file could not be converted at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConvertError {
    pub line: Option<usize>,
    pub message: String,
    /// What to do about it.
    pub help: String,
}

impl Conversion {
    /// The stderr report: one line per note (`FILE:LINE: kind: message`), then a summary.
    pub fn report(&self, source_name: &str) -> String {
        let mut out = String::new();
        for n in &self.notes {
            let kind = match n.kind {
                NoteKind::Warning => "warning",
                NoteKind::NotCarried => "not carried over",
                NoteKind::ServeFlag => "serve flag",
            };
            let _ = writeln!(out, "{source_name}:{}: {kind}: {}", n.line, n.message);
        }
        let count = |k: NoteKind| self.notes.iter().filter(|n| n.kind == k).count();
        let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
        let _ = writeln!(
            out,
            "converted {} ({}) into {}; {}, {} not carried over",
            plural(self.deployments, "deployment"),
            plural(self.model_names, "model name"),
            plural(self.providers, "provider"),
            plural(count(NoteKind::Warning), "warning"),
            plural(count(NoteKind::NotCarried), "setting"),
        );
        out
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
