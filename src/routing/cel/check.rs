//! Static checks of a strategy: the `cel` crate has no type checker, so this walks the AST
//! (parsed without macro expansion, so `filter(m, …)` is still the call the user wrote) and
//! infers just enough types to catch unknown variables, fields and functions, wrong arities,
//! unknown price types and impossible result types. Where a type can't be inferred it is `dyn`,
//! and `dyn` raises nothing.

use super::schema::{FieldTy, ObjKind, PRICE_TYPES, price_index};
use super::{CelIssue, Severity, StrategyKind};
use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue, SourceInfo, operators};
use cel::{Env, ParseErrors};
use std::ops::Range;

/// An inferred type.
#[derive(Clone, Debug, PartialEq)]
enum Ty {
    Dyn,
    Null,
    Bool,
    Int,
    UInt,
    Double,
    Str,
    Bytes,
    Type,
    List(Box<Ty>),
    /// A map literal or a value of unknown map shape.
    Map,
    /// A free-form map (metadata, pricing): any key.
    Free,
    /// `m.metrics.api_keys`: key id → object.
    ObjMap(ObjKind),
    Obj(ObjKind),
}

impl Ty {
    fn field(ty: FieldTy) -> Ty {
        match ty {
            FieldTy::Str | FieldTy::NullStr => Ty::Str,
            FieldTy::Bool => Ty::Bool,
            FieldTy::Int | FieldTy::NullInt => Ty::Int,
            FieldTy::Double => Ty::Double,
            FieldTy::StrList => Ty::List(Box::new(Ty::Str)),
            FieldTy::Obj(k) => Ty::Obj(k),
            FieldTy::ObjList(k) => Ty::List(Box::new(Ty::Obj(k))),
            FieldTy::Free => Ty::Free,
            FieldTy::ObjMap(k) => Ty::ObjMap(k),
        }
    }

    /// The CEL name, as runtime errors show it: `string`, `list(model)`.
    fn name(&self) -> String {
        match self {
            Ty::Dyn => "dyn".into(),
            Ty::Null => "null_type".into(),
            Ty::Bool => "bool".into(),
            Ty::Int => "int".into(),
            Ty::UInt => "uint".into(),
            Ty::Double => "double".into(),
            Ty::Str => "string".into(),
            Ty::Bytes => "bytes".into(),
            Ty::Type => "type".into(),
            Ty::List(e) => format!("list({})", e.name()),
            Ty::Map | Ty::Free | Ty::ObjMap(_) => "map".into(),
            Ty::Obj(k) => k.name().into(),
        }
    }

    /// How messages describe a value of this type: "a list of models", "a string".
    fn describe(&self) -> String {
        match self {
            Ty::List(e) => match &**e {
                Ty::Obj(k) => format!("a list of {}s", k.name()),
                Ty::Str => "a list of strings".into(),
                Ty::Dyn => "a list".into(),
                other => format!("a {}", Ty::List(Box::new(other.clone())).name()),
            },
            Ty::Obj(k) => k.article().into(),
            Ty::Int | Ty::UInt | Ty::Double => format!("a number ({})", self.name()),
            other => format!("a {}", other.name()),
        }
    }

    /// The type of the elements a macro iterates over: list elements, map keys.
    fn element(&self) -> Option<Ty> {
        match self {
            Ty::List(e) => Some((**e).clone()),
            Ty::Map | Ty::Free | Ty::ObjMap(_) => Some(Ty::Str),
            Ty::Dyn => Some(Ty::Dyn),
            _ => None,
        }
    }

    fn elem_is(&self, kinds: &[ObjKind]) -> bool {
        match self {
            Ty::Dyn => true,
            Ty::List(e) => match &**e {
                Ty::Dyn => true,
                Ty::Obj(k) => kinds.contains(k),
                _ => false,
            },
            _ => false,
        }
    }
}

/// What can be compared with what: numbers with numbers, strings with strings, …; `None` for
/// types the checker cannot be sure of.
fn category(t: &Ty) -> Option<u8> {
    match t {
        Ty::Int | Ty::UInt | Ty::Double => Some(0),
        Ty::Str => Some(1),
        Ty::Bool => Some(2),
        Ty::Bytes => Some(3),
        _ => None,
    }
}

/// The type of `a ? b : c` and of list elements: one type when they agree, `dyn` otherwise.
fn join(a: Ty, b: Ty) -> Ty {
    match (a, b) {
        (a, b) if a == b => a,
        (Ty::Null, t) | (t, Ty::Null) => t,
        (Ty::List(a), Ty::List(b)) => Ty::List(Box::new(join(*a, *b))),
        _ => Ty::Dyn,
    }
}

/// Turns `cel` parse errors into issues with byte ranges.
pub(crate) fn syntax_issues(src: &str, errors: &ParseErrors) -> Vec<CelIssue> {
    // The parser's own recursion limit (a long `?:` chain) cascades into internal errors;
    // one issue in the words of the tree-depth limit says what to change.
    if errors
        .errors
        .iter()
        .any(|e| e.msg.contains("Recursion limit"))
    {
        return vec![CelIssue {
            code: "cel-syntax",
            severity: Severity::Error,
            message: format!(
                "the expression is nested too deeply for the CEL parser (a chain of `?:` or of operators); aigw accepts at most {} levels",
                super::guard::MAX_DEPTH
            ),
            help: Some(
                "shorten the chain: test a list with `in` (m.id in ['a', 'b']), or split the expression into several strategies".into(),
            ),
            range: 0..src.len(),
        }];
    }
    let mut issues: Vec<CelIssue> = Vec::new();
    for e in &errors.errors {
        // The lexer and parser count columns in characters; macro expansion errors, positioned
        // from the AST's byte offsets, in bytes.
        let in_bytes = !e.msg.starts_with("Syntax error") && !e.msg.contains("reserved");
        let at = position_to_offset(src, e.pos, in_bytes);
        let msg = e.msg.strip_prefix("Syntax error: ").unwrap_or(&e.msg);
        let (message, help) = match msg.split_once(" expecting ") {
            Some((head, expecting)) => (head.to_owned(), Some(format!("expecting {expecting}"))),
            None => (msg.to_owned(), None),
        };
        let issue = CelIssue {
            code: "cel-syntax",
            severity: Severity::Error,
            message: format!("syntax error: {message}"),
            help,
            range: token_at(src, at),
        };
        if !issues
            .iter()
            .any(|i| i.range == issue.range && i.message == issue.message)
        {
            issues.push(issue);
        }
    }
    if issues.is_empty() {
        issues.push(CelIssue {
            code: "cel-syntax",
            severity: Severity::Error,
            message: "syntax error".to_owned(),
            help: None,
            range: 0..src.len(),
        });
    }
    issues
}

/// Compiled size allowed for a `matches` pattern. The `cel` crate compiles the pattern on every
/// call, once per model per uncached plan: `(?:\w{50}){50}` (Unicode `\w`, 2,500 times) took
/// ~3 s each time. Ordinary patterns compile to a few KiB.
const MAX_REGEX_BYTES: usize = 256 * 1024;

/// Why a literal `matches` pattern is refused: it compiles to more than [`MAX_REGEX_BYTES`].
/// (An invalid pattern is left to the evaluation error it already gets.) The size limit stops
/// the compiler as soon as it is passed, so checking costs little.
fn costly_regex(pattern: &str) -> Option<String> {
    match regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_BYTES)
        .build()
    {
        Err(regex::Error::CompiledTooBig(_)) => Some(format!(
            "the pattern compiles to more than {} KiB, too costly to run for every model of every request; aigw accepts at most {} KiB",
            MAX_REGEX_BYTES / 1024,
            MAX_REGEX_BYTES / 1024
        )),
        _ => None,
    }
}

/// The byte offset of a 1-based (line, column) position.
fn position_to_offset(src: &str, (line, col): (isize, isize), col_in_bytes: bool) -> usize {
    if line < 1 {
        return 0;
    }
    let mut start = 0;
    for (i, l) in src.split_inclusive('\n').enumerate() {
        if i + 1 == line as usize {
            let col = (col.max(1) - 1) as usize;
            let within = if col_in_bytes {
                col.min(l.len())
            } else {
                l.char_indices().nth(col).map_or(l.len(), |(b, _)| b)
            };
            let mut at = start + within;
            while !src.is_char_boundary(at) {
                at -= 1;
            }
            return at;
        }
        start += l.len();
    }
    src.len()
}

/// The token starting at `at`: an identifier or number, else one character; empty at the end.
fn token_at(src: &str, at: usize) -> Range<usize> {
    let rest = &src[at.min(src.len())..];
    let Some(first) = rest.chars().next() else {
        return src.len()..src.len();
    };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let len = if ident(first) {
        rest.find(|c: char| !ident(c)).unwrap_or(rest.len())
    } else {
        first.len_utf8()
    };
    at..at + len
}

/// Checks `src`, which compiles, as a strategy of `kind`.
pub(super) fn check(src: &str, kind: StrategyKind) -> Vec<CelIssue> {
    let Ok((ast, si)) = Env::default().parser().parse_with_source_info(src) else {
        return Vec::new();
    };
    let mut checker = Checker {
        src,
        si,
        kind,
        issues: Vec::new(),
        scope: Vec::new(),
        guarded: Vec::new(),
    };
    let ty = checker.expr(&ast);
    checker.result(&ast, &ty);
    checker.issues
}

/// The functions of the environment besides the operators, for "did you mean".
const AIGW_FUNCTIONS: &[&str] = &[
    "only",
    "ignore",
    "onlyProviders",
    "ignoreProviders",
    "onlyAuthors",
    "ignoreAuthors",
    "inRegion",
    "inCountryCode",
    "underCost",
    "sortBy",
    "random",
    "randomize",
    "get",
    "getModel",
    "getMetadata",
];
const MACROS: &[&str] = &[
    "filter",
    "map",
    "all",
    "exists",
    "exists_one",
    "existsOne",
    "has",
];
const STANDARD_FUNCTIONS: &[&str] = &[
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "bytes",
    "dyn",
    "type",
    "charAt",
    "indexOf",
    "lastIndexOf",
    "lowerAscii",
    "upperAscii",
    "trim",
    "replace",
    "split",
    "substring",
    "join",
    "format",
    "reverse",
    "hasValue",
    "value",
    "or",
    "orValue",
];
/// Functions named `namespace.name(..)`, parsed as a call on the identifier `namespace`.
const QUALIFIED_FUNCTIONS: &[(&str, &str)] = &[
    ("optional", "of"),
    ("optional", "none"),
    ("optional", "ofNonZeroValue"),
    ("strings", "quote"),
];
const TYPE_NAMES: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "type",
    "uint",
];

/// `name`'s closest candidate, if close enough to be a likely typo.
fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = if c.eq_ignore_ascii_case(name) {
            1.0
        } else {
            strsim::jaro_winkler(name, c)
        };
        if score >= 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map_or_else(String::new, |s| format!("; did you mean `{s}`?"))
}

struct Checker<'s> {
    src: &'s str,
    si: SourceInfo,
    kind: StrategyKind,
    issues: Vec<CelIssue>,
    scope: Vec<(String, Ty)>,
    /// Keys known to be in `m.metrics.api_keys` here: tested by `'k' in …` on the left of an
    /// enclosing `&&`, or in the condition of an enclosing `?:`.
    guarded: Vec<String>,
}

/// The literal keys `e` tests with `'k' in x` in its `&&` conjuncts.
fn tested_keys(e: &IdedExpr, out: &mut Vec<String>) {
    if let Expr::Call(c) = &e.expr {
        match (c.func_name.as_str(), c.args.as_slice()) {
            (operators::LOGICAL_AND, [a, b]) => {
                tested_keys(a, out);
                tested_keys(b, out);
            }
            (operators::IN, [key, _]) => {
                if let Expr::Literal(LiteralValue::String(k)) = &key.expr {
                    out.push(k.inner().to_owned());
                }
            }
            _ => {}
        }
    }
}

impl Checker<'_> {
    fn issue(
        &mut self,
        code: &'static str,
        range: Range<usize>,
        message: String,
        help: Option<String>,
    ) {
        self.issues.push(CelIssue {
            code,
            severity: Severity::Error,
            message,
            help,
            range,
        });
    }

    // -- ranges ----------------------------------------------------------------------------

    /// The token a node is anchored at.
    fn tok(&self, id: u64) -> Range<usize> {
        let Some((start, stop)) = self.si.offset_for(id) else {
            return 0..self.src.len();
        };
        let start = (start as usize).min(self.src.len());
        let mut end = (stop as usize + 1).clamp(start, self.src.len());
        while !self.src.is_char_boundary(end) {
            end += 1;
        }
        start..end
    }

    /// The field name of a select anchored at its `.`.
    fn field_range(&self, id: u64, field: &str) -> Range<usize> {
        let dot = self.tok(id);
        let after = &self.src[dot.end..];
        let skipped = after.len() - after.trim_start().len();
        let start = dot.end + skipped;
        let rest = &self.src[start..];
        if rest.starts_with(field) {
            start..start + field.len()
        } else if let Some(quoted) = rest.strip_prefix('`') {
            let close = quoted.find('`').map_or(rest.len(), |i| i + 2);
            start..start + close
        } else {
            dot
        }
    }

    /// The name of a call anchored at its `(`.
    fn name_range(&self, id: u64, name: &str) -> Range<usize> {
        let paren = self.tok(id);
        let before = self.src[..paren.start].trim_end();
        if before.ends_with(name) {
            before.len() - name.len()..before.len()
        } else {
            paren
        }
    }

    /// The closing bracket matching the one at `open`, skipping string literals.
    fn closing(&self, open: usize) -> Option<usize> {
        let bytes = self.src.as_bytes();
        let mut depth = 0usize;
        let mut i = open;
        while i < bytes.len() {
            match bytes[i] {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                q @ (b'\'' | b'"') => {
                    let triple = bytes.get(i..i + 3) == Some(&[q, q, q][..]);
                    i += if triple { 3 } else { 1 };
                    while i < bytes.len() {
                        if bytes[i] == b'\\' {
                            i += 2;
                            continue;
                        }
                        if bytes[i] == q && (!triple || bytes.get(i..i + 3) == Some(&[q, q, q][..]))
                        {
                            i += if triple { 2 } else { 0 };
                            break;
                        }
                        i += 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        None
    }

    /// The whole text of a node: every token of its subtree, closing brackets included.
    fn span(&self, e: &IdedExpr) -> Range<usize> {
        let mut r = self.tok(e.id);
        let widen = |r: &mut Range<usize>, o: Range<usize>| {
            r.start = r.start.min(o.start);
            r.end = r.end.max(o.end);
        };
        let close = |r: &Range<usize>| self.closing(r.start).map(|c| c..c + 1);
        match &e.expr {
            Expr::Call(c) => {
                let is_operator = c.func_name.starts_with('_')
                    || c.func_name.starts_with('@')
                    || c.func_name.starts_with('!')
                    || c.func_name == operators::NEGATE;
                if c.func_name == operators::INDEX || c.func_name == operators::OPT_INDEX {
                    if let Some(end) = close(&r) {
                        widen(&mut r, end);
                    }
                } else if !is_operator {
                    if let Some(end) = close(&r) {
                        widen(&mut r, end);
                    }
                    widen(&mut r, self.name_range(e.id, &c.func_name));
                }
                if let Some(t) = &c.target {
                    widen(&mut r, self.span(t));
                }
                for a in &c.args {
                    widen(&mut r, self.span(a));
                }
            }
            Expr::Select(s) => {
                widen(&mut r, self.field_range(e.id, &s.field));
                widen(&mut r, self.span(&s.operand));
            }
            Expr::List(l) => {
                if let Some(end) = close(&r) {
                    widen(&mut r, end);
                }
                for a in &l.elements {
                    widen(&mut r, self.span(a));
                }
            }
            Expr::Map(m) => {
                if let Some(end) = close(&r) {
                    widen(&mut r, end);
                }
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        widen(&mut r, self.span(&me.key));
                        widen(&mut r, self.span(&me.value));
                    }
                }
            }
            _ => {}
        }
        r
    }

    // -- scope -----------------------------------------------------------------------------

    fn lookup(&self, name: &str) -> Option<Ty> {
        self.scope
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
    }

    fn roots(&self) -> &'static [&'static str] {
        match self.kind {
            StrategyKind::Models => &["models", "providers", "authors"],
            StrategyKind::Keys => &["keys"],
        }
    }

    fn roots_text(&self) -> &'static str {
        match self.kind {
            StrategyKind::Models => "ai.models, ai.providers and ai.authors",
            StrategyKind::Keys => "ai.keys",
        }
    }

    // -- the walk --------------------------------------------------------------------------

    fn expr(&mut self, e: &IdedExpr) -> Ty {
        match &e.expr {
            Expr::Literal(l) => match l {
                LiteralValue::Boolean(_) => Ty::Bool,
                LiteralValue::Bytes(_) => Ty::Bytes,
                LiteralValue::Double(_) => Ty::Double,
                LiteralValue::Int(_) => Ty::Int,
                LiteralValue::Null => Ty::Null,
                LiteralValue::String(_) => Ty::Str,
                LiteralValue::UInt(_) => Ty::UInt,
            },
            Expr::Ident(name) => self.ident(e, name),
            Expr::Select(s) => {
                if let Expr::Ident(root) = &s.operand.expr
                    && root == "ai"
                    && self.lookup("ai").is_none()
                {
                    return self.root(e, &s.field);
                }
                let operand = self.expr(&s.operand);
                let range = self.field_range(e.id, &s.field);
                let ty = self.select(&operand, &s.field, range);
                if s.test { Ty::Bool } else { ty }
            }
            Expr::Call(c) => self.call(e, c),
            Expr::List(l) => {
                let mut ty = None;
                for item in &l.elements {
                    let t = self.expr(item);
                    ty = Some(match ty {
                        None => t,
                        Some(prev) => join(prev, t),
                    });
                }
                Ty::List(Box::new(ty.unwrap_or(Ty::Dyn)))
            }
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        self.expr(&me.key);
                        self.expr(&me.value);
                    }
                }
                Ty::Map
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        self.expr(&f.value);
                    }
                }
                Ty::Dyn
            }
            Expr::Comprehension(_) | Expr::Unspecified => Ty::Dyn,
        }
    }

    fn ident(&mut self, e: &IdedExpr, name: &str) -> Ty {
        if let Some(ty) = self.lookup(name) {
            return ty;
        }
        if TYPE_NAMES.contains(&name) {
            return Ty::Type;
        }
        let range = self.tok(e.id);
        if name == "ai" {
            let message = format!("`ai` is not a value by itself; use {}", self.roots_text());
            self.issue("cel-unknown-variable", range, message, None);
            return Ty::Dyn;
        }
        let message = if self.roots().contains(&name) {
            format!("unknown variable `{name}`; did you mean `ai.{name}`?")
        } else if ["models", "providers", "authors", "keys"].contains(&name) {
            format!("unknown variable `{name}`")
        } else {
            let vars: Vec<String> = self.scope.iter().map(|(n, _)| n.clone()).collect();
            let suggestion = suggest(name, vars.iter().map(String::as_str).chain(["ai"]));
            format!("unknown variable `{name}`{}", did_you_mean(suggestion))
        };
        let help = Some(format!(
            "the only root variable is `ai`: {}{}",
            self.roots_text(),
            if self.scope.is_empty() {
                ""
            } else {
                ", plus the variables of the enclosing macros"
            }
        ));
        self.issue("cel-unknown-variable", range, message, help);
        Ty::Dyn
    }

    /// `ai.<field>`.
    fn root(&mut self, e: &IdedExpr, field: &str) -> Ty {
        let ty = match field {
            "models" => Ty::List(Box::new(Ty::Obj(ObjKind::Model))),
            "providers" => Ty::List(Box::new(Ty::Obj(ObjKind::Provider))),
            "authors" => Ty::List(Box::new(Ty::Obj(ObjKind::Author))),
            "keys" => Ty::List(Box::new(Ty::Obj(ObjKind::Key))),
            _ => {
                let range = self.field_range(e.id, field);
                let suggestion =
                    suggest(field, self.roots().iter().copied()).map(|s| format!("ai.{s}"));
                let message = format!(
                    "unknown variable `ai.{field}`{}",
                    did_you_mean(suggestion.as_deref())
                );
                let help = Some(format!("this strategy can use {}", self.roots_text()));
                self.issue("cel-unknown-variable", range, message, help);
                return Ty::Dyn;
            }
        };
        if !self.roots().contains(&field) {
            let range = self.span(e);
            let (message, help) = match self.kind {
                StrategyKind::Models => (
                    "`ai.keys` is only available in api_key_selection strategies".to_owned(),
                    "model_selection strategies use ai.models, ai.providers and ai.authors",
                ),
                StrategyKind::Keys => (
                    format!("`ai.{field}` is only available in model_selection strategies"),
                    "api_key_selection strategies use ai.keys",
                ),
            };
            self.issue("cel-wrong-root", range, message, Some(help.to_owned()));
        }
        ty
    }

    /// `operand.field` (or `operand['field']`), the field's name at `range`.
    fn select(&mut self, operand: &Ty, field: &str, range: Range<usize>) -> Ty {
        match operand {
            Ty::Obj(k) => match k.field_index(field) {
                Some(i) => Ty::field(k.fields()[i].1),
                None => {
                    let names = k.fields().iter().map(|(n, _)| *n);
                    let suggestion = suggest(field, names.clone());
                    let message = format!(
                        "unknown field `{field}` on {}{}",
                        k.article(),
                        did_you_mean(suggestion)
                    );
                    let help = Some(format!(
                        "{} has: {}",
                        capitalized(k.article()),
                        names.collect::<Vec<_>>().join(", ")
                    ));
                    self.issue("cel-unknown-field", range, message, help);
                    Ty::Dyn
                }
            },
            Ty::ObjMap(k) => Ty::Obj(*k),
            Ty::List(e) => {
                let example = match &**e {
                    Ty::Obj(ObjKind::Key) => "k",
                    _ => "m",
                };
                let message = format!("{} has no field `{field}`", operand.describe());
                let help = Some(format!(
                    "pick an element first, e.g. `[0].{field}`, or map the list: `.map({example}, {example}.{field})`"
                ));
                self.issue("cel-unknown-field", range, message, help);
                Ty::Dyn
            }
            Ty::Bool | Ty::Int | Ty::UInt | Ty::Double | Ty::Str | Ty::Bytes | Ty::Type => {
                let message = format!("{} has no field `{field}`", operand.describe());
                self.issue("cel-unknown-field", range, message, None);
                Ty::Dyn
            }
            Ty::Dyn | Ty::Null | Ty::Map | Ty::Free => Ty::Dyn,
        }
    }

    fn call(&mut self, e: &IdedExpr, c: &cel::common::ast::CallExpr) -> Ty {
        match c.func_name.as_str() {
            operators::LOGICAL_AND => self.logical_and(c),
            operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS => self.comparison(e, c),
            operators::LOGICAL_OR
            | operators::LOGICAL_NOT
            | operators::NOT_STRICTLY_FALSE
            | operators::IN => self.args_then(c, Ty::Bool),
            operators::ADD
            | operators::SUBSTRACT
            | operators::MULTIPLY
            | operators::DIVIDE
            | operators::MODULO => self.arithmetic(c),
            operators::NEGATE => self.negate(c),
            operators::CONDITIONAL => self.conditional(c),
            operators::INDEX => self.index(e, c),
            operators::OPT_INDEX | operators::OPT_SELECT => self.args_then(c, Ty::Dyn),
            _ => self.function(e, c),
        }
    }

    /// Checks the arguments; the call's type is `ty` whatever they are.
    fn args_then(&mut self, c: &cel::common::ast::CallExpr, ty: Ty) -> Ty {
        self.args(c);
        ty
    }

    /// `a && b`: `b` is checked knowing the keys `a` tests for.
    fn logical_and(&mut self, c: &cel::common::ast::CallExpr) -> Ty {
        self.expr(&c.args[0]);
        let before = self.guarded.len();
        tested_keys(&c.args[0], &mut self.guarded);
        self.expr(&c.args[1]);
        self.guarded.truncate(before);
        Ty::Bool
    }

    /// `==`, `<`, …: operands of types that never compare (a number with a string).
    fn comparison(&mut self, e: &IdedExpr, c: &cel::common::ast::CallExpr) -> Ty {
        let tys = self.args(c);
        if let [a, b] = tys.as_slice()
            && let (Some(x), Some(y)) = (category(a), category(b))
            && x != y
        {
            let text = |e: &IdedExpr| {
                let r = self.span(e);
                self.src.get(r).unwrap_or("?").to_owned()
            };
            let (l, r) = (text(&c.args[0]), text(&c.args[1]));
            let name = c.func_name.as_str();
            let outcome = if name == operators::EQUALS || name == operators::NOT_EQUALS {
                "so the comparison has the same answer for every model"
            } else {
                "so the comparison fails on every request"
            };
            let range = self.span(e);
            self.issue(
                "cel-comparison-type",
                range,
                format!(
                    "`{l}` is {} and `{r}` is {}, {outcome}",
                    a.describe(),
                    b.describe()
                ),
                Some(format!("compare `{l}` with {}", a.describe())),
            );
        }
        Ty::Bool
    }

    /// `+`, `-`, `*`, `/`, `%`.
    fn arithmetic(&mut self, c: &cel::common::ast::CallExpr) -> Ty {
        let is_add = c.func_name == operators::ADD;
        let tys = self.args(c);
        let (a, b) = (tys[0].clone(), tys[1].clone());
        match (a, b) {
            (Ty::List(a), Ty::List(b)) if is_add => Ty::List(Box::new(join(*a, *b))),
            (Ty::Str, Ty::Str) | (Ty::Bytes, Ty::Bytes) if is_add => tys[0].clone(),
            (a @ (Ty::Int | Ty::UInt | Ty::Double), b) if a == b => a,
            _ => Ty::Dyn,
        }
    }

    /// `-x`.
    fn negate(&mut self, c: &cel::common::ast::CallExpr) -> Ty {
        let t = self.args(c).remove(0);
        if matches!(t, Ty::Int | Ty::Double) {
            t
        } else {
            Ty::Dyn
        }
    }

    /// `c ? yes : no`: `yes` is checked knowing the keys `c` tests for.
    fn conditional(&mut self, c: &cel::common::ast::CallExpr) -> Ty {
        self.expr(&c.args[0]);
        let before = self.guarded.len();
        tested_keys(&c.args[0], &mut self.guarded);
        let yes = self.expr(&c.args[1]);
        self.guarded.truncate(before);
        let no = self.expr(&c.args[2]);
        join(yes, no)
    }

    /// `x[i]`: a field by name, a list element, or an `api_keys` entry (which wants a guard).
    fn index(&mut self, e: &IdedExpr, c: &cel::common::ast::CallExpr) -> Ty {
        let container = self.expr(&c.args[0]);
        self.expr(&c.args[1]);
        match (&container, &c.args[1].expr) {
            (Ty::Obj(_), Expr::Literal(LiteralValue::String(field))) => {
                let range = self.tok(c.args[1].id);
                self.select(&container, field.inner(), range)
            }
            (Ty::List(e), _) => (**e).clone(),
            (Ty::ObjMap(k), key) => {
                if let Expr::Literal(LiteralValue::String(key)) = key
                    && !self.guarded.iter().any(|g| g == key.inner())
                {
                    let key = key.inner().to_owned();
                    self.unguarded(e, &key);
                }
                Ty::Obj(*k)
            }
            _ => Ty::Dyn,
        }
    }

    /// A call by name: a namespaced global, a macro, `has`, one of ngrok's collection
    /// functions, a standard function, or an unknown one.
    fn function(&mut self, e: &IdedExpr, c: &cel::common::ast::CallExpr) -> Ty {
        let name = c.func_name.as_str();
        // `optional.of(..)`, `strings.quote(..)`: a namespaced global function.
        if let Some(target) = &c.target
            && let Expr::Ident(ns) = &target.expr
            && self.lookup(ns).is_none()
            && QUALIFIED_FUNCTIONS.contains(&(ns.as_str(), name))
        {
            return self.args_then(c, if name == "quote" { Ty::Str } else { Ty::Dyn });
        }
        if matches!(
            name,
            "filter" | "map" | "all" | "exists" | "exists_one" | "existsOne"
        ) || (name == "sortBy" && c.args.len() == 2)
        {
            return self.comprehension(e, c);
        }
        if name == "has" && c.target.is_none() {
            return self.args_then(c, Ty::Bool);
        }
        let receiver = c.target.as_ref().map(|t| self.expr(t));
        if AIGW_FUNCTIONS.contains(&name) {
            let args = self.args(c);
            return self.aigw_function(e, c, receiver, &args);
        }
        if STANDARD_FUNCTIONS.contains(&name) {
            self.args(c);
            if name == "matches" {
                self.costly_pattern(c);
            }
            return standard_result(name, receiver.as_ref());
        }
        let element = receiver.as_ref().and_then(Ty::element).unwrap_or(Ty::Dyn);
        self.unknown_function(e, c, element)
    }

    /// A literal `matches` pattern too costly to compile for every model (see [`costly_regex`]).
    fn costly_pattern(&mut self, c: &cel::common::ast::CallExpr) {
        if let Some(pattern) = c.args.last()
            && let Expr::Literal(LiteralValue::String(text)) = &pattern.expr
            && let Some(message) = costly_regex(text.inner())
        {
            let range = self.span(pattern);
            self.issue(
                "cel-syntax",
                range,
                message,
                Some("use a simpler pattern (fewer and smaller counted repetitions such as `{50}`), or `startsWith` / `contains`".into()),
            );
        }
    }

    /// An unknown function; its arguments are still checked, the first bound as a macro
    /// variable when it looks like one (`ai.models.fitler(m, m.known)`).
    fn unknown_function(
        &mut self,
        e: &IdedExpr,
        c: &cel::common::ast::CallExpr,
        element: Ty,
    ) -> Ty {
        let name = c.func_name.as_str();
        self.args_binding_first(c, element);
        let range = self.name_range(e.id, name);
        let all = AIGW_FUNCTIONS
            .iter()
            .chain(MACROS)
            .chain(STANDARD_FUNCTIONS)
            .copied();
        let message = format!(
            "unknown function `{name}`{}",
            did_you_mean(suggest(name, all))
        );
        let help = Some(
            "strategies can use filter, only, ignore, onlyProviders, ignoreProviders, onlyAuthors, ignoreAuthors, \
             inRegion, inCountryCode, underCost, sortBy, random, randomize, get, getModel, getMetadata and standard CEL"
                .to_owned(),
        );
        self.issue("cel-unknown-function", range, message, help);
        Ty::Dyn
    }

    /// `m.metrics.api_keys['key']` with no `'key' in m.metrics.api_keys` guard.
    fn unguarded(&mut self, e: &IdedExpr, key: &str) {
        let range = self.span(e);
        self.issues.push(CelIssue {
            code: "cel-unguarded-key",
            severity: Severity::Warning,
            message: format!("`api_keys['{key}']` fails while the key has no metrics yet"),
            help: Some(format!(
                "test for it first: `'{key}' in m.metrics.api_keys && …`"
            )),
            range,
        });
    }

    fn args(&mut self, c: &cel::common::ast::CallExpr) -> Vec<Ty> {
        c.args.iter().map(|a| self.expr(a)).collect()
    }

    /// Checks the arguments of a call that may be a misspelt macro: with two or more, a first
    /// one that is a bare name is the macro's variable, of type `element`, in the others.
    fn args_binding_first(&mut self, c: &cel::common::ast::CallExpr, element: Ty) {
        match (c.args.first().map(|a| &a.expr), c.args.len()) {
            (Some(Expr::Ident(var)), n) if n >= 2 || self.lookup(var).is_none() => {
                self.scope.push((var.clone(), element));
                for a in &c.args[1..] {
                    self.expr(a);
                }
                self.scope.pop();
            }
            _ => {
                self.args(c);
            }
        }
    }

    /// `filter`, `map`, `all`, `exists`, `exists_one`, `sortBy(m, key)`.
    fn comprehension(&mut self, e: &IdedExpr, c: &cel::common::ast::CallExpr) -> Ty {
        let name = c.func_name.as_str();
        let Some(target) = &c.target else {
            let range = self.name_range(e.id, name);
            let message = format!("`{name}` is called on a list, e.g. `ai.models.{name}(m, …)`");
            self.issue("cel-unknown-function", range, message, None);
            self.args(c);
            return Ty::Dyn;
        };
        let receiver = self.expr(target);
        let arity_ok = match name {
            "map" => matches!(c.args.len(), 2 | 3),
            _ => c.args.len() == 2,
        };
        let var = match c.args.first().map(|a| &a.expr) {
            Some(Expr::Ident(var)) if arity_ok => var.clone(),
            _ => {
                let range = self.name_range(e.id, name);
                let form = if name == "map" {
                    "(m, expr) or (m, filter, expr)"
                } else {
                    "(m, predicate)"
                };
                let message =
                    format!("`{name}` takes a variable and an expression: `{name}{form}`");
                self.issue("cel-arity", range, message, None);
                self.args_binding_first(c, Ty::Dyn);
                return Ty::Dyn;
            }
        };
        let element = match receiver.element() {
            Some(t) => t,
            None => {
                let range = self.name_range(e.id, name);
                let message = format!(
                    "`{name}` applies to a list or a map, not {}",
                    receiver.describe()
                );
                self.issue("cel-unknown-function", range, message, None);
                Ty::Dyn
            }
        };
        self.scope.push((var, element.clone()));
        let body: Vec<Ty> = c.args[1..].iter().map(|a| self.expr(a)).collect();
        self.scope.pop();
        match name {
            "filter" | "sortBy" => match receiver {
                Ty::List(_) => receiver,
                Ty::Dyn => Ty::Dyn,
                _ => Ty::List(Box::new(element)),
            },
            "map" => Ty::List(Box::new(body.last().cloned().unwrap_or(Ty::Dyn))),
            _ => Ty::Bool,
        }
    }

    /// ngrok's collection functions.
    fn aigw_function(
        &mut self,
        e: &IdedExpr,
        c: &cel::common::ast::CallExpr,
        receiver: Option<Ty>,
        args: &[Ty],
    ) -> Ty {
        let name = c.func_name.as_str();
        let range = self.name_range(e.id, name);
        let Some(receiver) = receiver else {
            let message =
                format!("`{name}` is a method: call it on a list, e.g. `ai.models.{name}(…)`");
            self.issue("cel-unknown-function", range, message, None);
            return Ty::Dyn;
        };
        let (arities, signature, applies, result) = aigw_signature(name, &receiver);
        if !applies {
            let on = aigw_receivers(name);
            let message = format!("`{name}` applies to {on}, not {}", receiver.describe());
            self.issue("cel-unknown-function", range, message, None);
            return Ty::Dyn;
        }
        if !arities.contains(&c.args.len()) {
            let message = format!(
                "`{name}` takes {}: `{name}{signature}`, got {}",
                arity_text(arities),
                c.args.len()
            );
            self.issue("cel-arity", range, message, None);
            return result;
        }
        match name {
            "underCost" => self.under_cost_args(c, args),
            "sortBy" => self.sort_by_field(c),
            _ => {}
        }
        result
    }

    /// `underCost(priceType, max)`: a known price type, a number.
    fn under_cost_args(&mut self, c: &cel::common::ast::CallExpr, args: &[Ty]) {
        if let Some(price_type) = string_literal(c, 0)
            && price_index(&price_type).is_none()
        {
            let range = self.tok(c.args[0].id);
            let suggestion = suggest(&price_type, PRICE_TYPES);
            let message = format!(
                "unknown price type `{price_type}`{}",
                did_you_mean(suggestion)
            );
            let help = Some(format!("price types: {}", PRICE_TYPES.join(", ")));
            self.issue("cel-price-type", range, message, help);
        }
        if !matches!(args.get(1), Some(Ty::Int | Ty::UInt | Ty::Double | Ty::Dyn)) {
            let range = self.span(&c.args[1]);
            let message = format!(
                "`underCost` takes a number as its maximum, not {}",
                args[1].describe()
            );
            self.issue("cel-arity", range, message, None);
        }
    }

    /// `sortBy('field')`: only `price`.
    fn sort_by_field(&mut self, c: &cel::common::ast::CallExpr) {
        if let Some(field) = string_literal(c, 0)
            && field != "price"
        {
            let range = self.tok(c.args[0].id);
            let message = format!("`sortBy('{field}')` is not supported: only `sortBy('price')`");
            let help = Some("to sort by anything else, use a key expression: `sortBy(m, m.metrics.global.latency.upstream_ms_avg)`".to_owned());
            self.issue("cel-price-type", range, message, help);
        }
    }

    /// The check of the whole expression's type.
    fn result(&mut self, root: &IdedExpr, ty: &Ty) {
        let want = match self.kind {
            StrategyKind::Models => ObjKind::Model,
            StrategyKind::Keys => ObjKind::Key,
        };
        let fine = |t: &Ty| matches!(t, Ty::Dyn | Ty::Null) || *t == Ty::Obj(want);
        let ok = match ty {
            Ty::List(e) => fine(e),
            t => fine(t),
        };
        // Other errors usually explain a strange result type already.
        if ok || self.issues.iter().any(|i| i.severity == Severity::Error) {
            return;
        }
        let (expected, example) = match self.kind {
            StrategyKind::Models => ("a model or a list of models", "ai.models.filter(m, …)"),
            StrategyKind::Keys => ("an API key or a list of keys", "ai.keys.filter(k, …)"),
        };
        let range = self.span(root);
        let message = format!(
            "a strategy must return {expected}, but this returns {}",
            ty.name()
        );
        let help = Some(format!("return the selection itself, e.g. `{example}`"));
        self.issue("cel-result-type", range, message, help);
    }
}

/// The type a standard function returns.
fn standard_result(name: &str, receiver: Option<&Ty>) -> Ty {
    match name {
        "size" | "indexOf" | "lastIndexOf" | "int" => Ty::Int,
        "contains" | "startsWith" | "endsWith" | "matches" | "bool" | "hasValue" => Ty::Bool,
        "uint" => Ty::UInt,
        "double" => Ty::Double,
        "bytes" => Ty::Bytes,
        "type" => Ty::Type,
        "split" => Ty::List(Box::new(Ty::Str)),
        "string" | "charAt" | "lowerAscii" | "upperAscii" | "trim" | "replace" | "substring"
        | "join" | "format" => Ty::Str,
        "reverse" if receiver == Some(&Ty::Str) => Ty::Str,
        _ => Ty::Dyn,
    }
}

/// How one of ngrok's collection functions is called on `receiver`: the argument counts it
/// takes, its signature (after the name) for messages, whether it applies to the receiver, and
/// its result type.
fn aigw_signature(name: &str, receiver: &Ty) -> (&'static [usize], &'static str, bool, Ty) {
    let models = Ty::List(Box::new(Ty::Obj(ObjKind::Model)));
    match name {
        "only" | "ignore" => (
            &[1],
            "(ids)",
            receiver.elem_is(&[
                ObjKind::Model,
                ObjKind::Provider,
                ObjKind::Author,
                ObjKind::Key,
            ]),
            receiver.clone(),
        ),
        "onlyProviders" | "ignoreProviders" | "onlyAuthors" | "ignoreAuthors" => {
            (&[1], "(ids)", receiver.elem_is(&[ObjKind::Model]), models)
        }
        "inRegion" => (
            &[1],
            "(region)",
            receiver.elem_is(&[ObjKind::Model]),
            models,
        ),
        "inCountryCode" => (
            &[1],
            "(countryCode)",
            receiver.elem_is(&[ObjKind::Model]),
            models,
        ),
        "underCost" => (
            &[2],
            "(priceType, max)",
            receiver.elem_is(&[ObjKind::Model]),
            models,
        ),
        "sortBy" => (
            &[1, 2],
            "('price') or sortBy(m, key)",
            receiver.elem_is(&[ObjKind::Model]),
            models,
        ),
        "random" => (
            &[0],
            "()",
            receiver.element().is_some() && !matches!(receiver, Ty::Map | Ty::Free | Ty::ObjMap(_)),
            receiver.element().unwrap_or(Ty::Dyn),
        ),
        "randomize" => (
            &[0],
            "()",
            matches!(receiver, Ty::List(_) | Ty::Dyn),
            receiver.clone(),
        ),
        "get" => match receiver {
            Ty::List(e) if **e == Ty::Obj(ObjKind::Model) => {
                (&[2], "(providerId, modelId)", true, Ty::Obj(ObjKind::Model))
            }
            Ty::List(e) if matches!(**e, Ty::Obj(ObjKind::Provider | ObjKind::Author)) => {
                (&[1], "(id)", true, (**e).clone())
            }
            _ => (
                &[1, 2],
                "(id) or get(providerId, modelId)",
                receiver.elem_is(&[]),
                Ty::Dyn,
            ),
        },
        "getModel" => (
            &[1],
            "(id)",
            matches!(receiver, Ty::Obj(ObjKind::Provider) | Ty::Dyn | Ty::Null),
            Ty::Obj(ObjKind::Model),
        ),
        "getMetadata" => (
            &[1],
            "(key)",
            matches!(
                receiver,
                Ty::Obj(ObjKind::Model | ObjKind::Provider) | Ty::Dyn
            ),
            Ty::Dyn,
        ),
        _ => unreachable!("every aigw function is handled"),
    }
}

/// What a collection function applies to, for "`name` applies to …, not …".
fn aigw_receivers(name: &str) -> &'static str {
    match name {
        "only" | "ignore" => "a list of models, providers or authors",
        "random" | "randomize" => "a list",
        "get" => "ai.models, ai.providers or ai.authors",
        "getModel" => "a provider",
        "getMetadata" => "a model or a provider",
        _ => "a list of models",
    }
}

/// "takes …" for a function's argument counts.
fn arity_text(arities: &[usize]) -> String {
    match arities {
        [0] => "no arguments".to_owned(),
        [1] => "1 argument".to_owned(),
        [n] => format!("{n} arguments"),
        _ => "1 or 2 arguments".to_owned(),
    }
}

/// Argument `i` of a call, when it is a string literal.
fn string_literal(c: &cel::common::ast::CallExpr, i: usize) -> Option<String> {
    match c.args.get(i).map(|a| &a.expr) {
        Some(Expr::Literal(LiteralValue::String(s))) => Some(s.inner().to_owned()),
        _ => None,
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}
