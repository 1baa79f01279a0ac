//! Guards against expressions nested so deeply that parsing or evaluating them overflows a
//! thread's stack (an abort, not a panic: `aigw serve` would die on reloading such a policy).
//!
//! - [`too_deep`] rejects, before parsing, an expression nested more than [`MAX_NESTING`] levels
//!   (brackets and prefix operators, outside string literals). Real strategies nest 2–5 levels.
//! - [`with_stack`] runs the parser on a thread with a large stack: the ANTLR-generated parser
//!   spends over 100 KiB of stack per nesting level in debug builds, more than tokio's blocking
//!   threads (2 MiB, where reloads build engines) have for even 15 parentheses. The memory is
//!   only reserved; pages are touched as the parser recurses.
//!
//! - [`tree_too_deep`] rejects, after parsing, a tree deeper than [`MAX_DEPTH`]: operator chains
//!   such as `1 + 1 + … + 1` have no brackets but recurse as deep in evaluation.
//!
//! Evaluation recurses once per tree level; [`MAX_DEPTH`] bounds it and `run` gives it
//! [`EVAL_RED_ZONE`] of stack (see there), so whatever compiles also evaluates.

use super::{CelIssue, Severity};
use cel::common::ast::{EntryExpr, Expr, IdedEntryExpr, IdedExpr};

/// Deepest nesting accepted.
pub const MAX_NESTING: usize = 32;

const PARSER_STACK: usize = 256 * 1024 * 1024;

/// The deepest nesting of brackets and prefix operators (`!`, unary `-`) outside string literals;
/// a prefix operator counts until the bracket level it appears in closes (an over-estimate).
pub fn nesting(expr: &str) -> usize {
    let bytes = expr.as_bytes();
    // Per open bracket: the prefix operators seen at that level.
    let mut levels: Vec<usize> = vec![0];
    let mut max = 0;
    let mut quote: Option<u8> = None;
    let mut prev_significant: u8 = b'(';
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == b'\\' {
                i += 2;
                continue;
            }
            if b == q {
                quote = None;
                prev_significant = b'"';
            }
            i += 1;
            continue;
        }
        match b {
            b'\'' | b'"' => quote = Some(b),
            b'(' | b'[' | b'{' => levels.push(0),
            b')' | b']' | b'}' if levels.len() > 1 => {
                levels.pop();
            }
            b'!' if bytes.get(i + 1) != Some(&b'=') => {
                if let Some(l) = levels.last_mut() {
                    *l += 1;
                }
            }
            b'-' if b"([{,!?:=<>&|+-*/%".contains(&prev_significant) => {
                if let Some(l) = levels.last_mut() {
                    *l += 1;
                }
            }
            _ => {}
        }
        if !b.is_ascii_whitespace() {
            prev_significant = b;
        }
        let depth = levels.len() - 1 + levels.iter().sum::<usize>();
        max = max.max(depth);
        i += 1;
    }
    max
}

/// An error when `expr` nests deeper than [`MAX_NESTING`].
pub fn too_deep(expr: &str) -> Option<CelIssue> {
    let n = nesting(expr);
    (n > MAX_NESTING).then(|| CelIssue {
        code: "cel-syntax",
        severity: Severity::Error,
        message: format!(
            "the expression is nested {n} levels deep (parentheses, brackets and `!`/`-`); aigw accepts at most {MAX_NESTING}"
        ),
        help: Some(
            "remove redundant parentheses or split the expression into several strategies".into(),
        ),
        range: 0..expr.len(),
    })
}

/// Deepest parsed expression tree accepted: binary operators (`1 + 1 + … + 1`, `a || b || …`),
/// selections and calls each add a level, which the text's bracket [`nesting`] does not see.
/// Real strategies are under 20 levels deep.
pub const MAX_DEPTH: usize = 100;

/// Stack an evaluation must have left, else it runs on a new segment of [`EVAL_STACK`]: the
/// `cel` interpreter takes up to ~35 KiB per level of arithmetic in a debug build (measured;
/// less in release), so [`MAX_DEPTH`] levels need ~3.5 MiB. Serve's workers run on the main
/// thread (8 MiB) and on threads of 16 MiB: there the check is a comparison, not a switch.
pub const EVAL_RED_ZONE: usize = 4 * 1024 * 1024;
pub const EVAL_STACK: usize = 8 * 1024 * 1024;

/// The depth of the parsed expression tree. Recursive: it runs where the parser just ran, on
/// [`with_stack`]'s thread.
pub fn depth(e: &IdedExpr) -> usize {
    let children: Vec<&IdedExpr> = match &e.expr {
        Expr::Call(c) => c.target.as_deref().into_iter().chain(&c.args).collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => entries(&m.entries),
        Expr::Struct(s) => entries(&s.entries),
        Expr::Select(s) => vec![&s.operand],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    };
    1 + children.into_iter().map(depth).max().unwrap_or(0)
}

fn entries(list: &[IdedEntryExpr]) -> Vec<&IdedExpr> {
    list.iter()
        .flat_map(|entry| match &entry.expr {
            EntryExpr::StructField(f) => vec![&f.value],
            EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
        })
        .collect()
}

/// An error when the parsed tree of `expr` is deeper than [`MAX_DEPTH`].
pub fn tree_too_deep(expr: &str, tree: &IdedExpr) -> Option<CelIssue> {
    let n = depth(tree);
    (n > MAX_DEPTH).then(|| CelIssue {
        code: "cel-syntax",
        severity: Severity::Error,
        message: format!(
            "the expression is {n} levels deep (each operator, call or field selection inside another adds one, e.g. a chain of `+`); aigw accepts at most {MAX_DEPTH} levels"
        ),
        help: Some(
            "shorten the chain, or split the expression into several strategies".into(),
        ),
        range: 0..expr.len(),
    })
}

/// Runs `f` on a thread with a large stack (see the module docs).
pub fn with_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        match std::thread::Builder::new()
            .name("aigw-cel-parse".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(s, f)
        {
            Ok(handle) => match handle.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            },
            // No thread to be had (resource limits): the nesting limit still applies.
            Err(_) => unreachable_fallback(),
        }
    })
}

fn unreachable_fallback<T>() -> T {
    panic!("cannot start a thread to compile a CEL expression (out of threads or memory)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_levels() {
        assert_eq!(nesting("ai.models"), 0);
        assert_eq!(nesting("ai.models.filter(m, m.id == 'a(((')"), 1);
        assert_eq!(nesting("((a))"), 2);
        // A prefix operator counts until its bracket level closes (an over-estimate).
        assert_eq!(nesting("ai.models.filter(m, !(m.a) && m.b != 1)"), 3);
        assert_eq!(nesting("[[1], [2]]"), 2);
        assert_eq!(nesting("a - -1"), 1);
        assert_eq!(nesting("a - 1"), 0);
        assert_eq!(
            nesting(&format!("{}x{}", "(".repeat(40), ")".repeat(40))),
            40
        );
        assert!(too_deep(&"!".repeat(33)).is_some());
        assert!(too_deep("ai.models.filter(m, m.provider_id == 'openai')").is_none());
    }
}
