//! The request CEL environment: rule `expressions`, `${…}` in action configs and rate-limit
//! `bucket_key`s all compile here, once, at load.
//!
//! Built on the same `cel` crate as the strategies, with its own [`Env`]: the standard library,
//! the strings extension, and ngrok's request functions. The functions that read the request
//! (`getReqHeader('x')`, `hasQueryParam('q')`, …) are rewritten at compile time into calls on
//! the variables they read (`@tp_values(req.headers, 'x')`), so an evaluation needs no hidden
//! state, and `secrets.get('vault', 'name')` with literal arguments is resolved from the local
//! secret store at load (the value never appears in a diagnostic).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use cel::common::ast::{CallExpr, EntryExpr, Expr as Ast, IdedExpr, LiteralValue, SelectExpr};
use cel::common::types::{CelBool, CelString, LIST_TYPE, MAP_TYPE, STRING_TYPE};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::objects::{Key, Map, Value, ValueType};
use cel::{Context, DeclarationError, Env, ExecutionError};

use super::native::{Input, Native};
use super::request::RequestView;
use crate::policy::interpolate::SecretRef;
use crate::policy::secrets::SecretStore;

/// The variables a traffic-policy expression may read.
pub const ROOTS: &[&str] = &["req", "res", "conn", "vars", "actions", "time", "endpoint"];

/// Function namespaces (`json.decode`, `strings.quote`), which parse like variables.
const NAMESPACES: &[&str] = &["json", "strings"];

/// Whether `name` is a function namespace (`json.decode`, `hash.sha256`…), not a variable.
fn is_namespace(name: &str) -> bool {
    NAMESPACES.contains(&name) || super::cel_ngrok::NAMESPACES.contains(&name)
}

static ENV: LazyLock<Arc<Env>> =
    LazyLock::new(|| Arc::new(build_env().expect("the traffic-policy CEL environment declares")));

pub(super) const VALUES: &str = "@tp_values";
pub(super) const HAS_VALUES: &str = "@tp_has_values";
const MISSING_SECRET: &str = "@tp_missing_secret";
const HAS_COOKIE: &str = "@tp_has_cookie";
const FIRST_COOKIE: &str = "@tp_first_cookie";
const LONGEST_PATH_COOKIE: &str = "@tp_longest_path_cookie";

fn build_env() -> Result<Env, DeclarationError> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)?;
    super::cel_ngrok::register(&mut env)?;
    env.add_overload(
        VALUES,
        "@tp_values(map,string)",
        vec![MAP_TYPE, STRING_TYPE],
        values,
    )?;
    env.add_overload(
        HAS_VALUES,
        "@tp_has_values(map,string)",
        vec![MAP_TYPE, STRING_TYPE],
        has_values,
    )?;
    for (name, f) in [
        (
            HAS_COOKIE,
            super::cookies::has_cookie as cel::common::functions::Function,
        ),
        (FIRST_COOKIE, super::cookies::first_cookie),
        (LONGEST_PATH_COOKIE, super::cookies::longest_path_cookie),
    ] {
        env.add_overload(
            name,
            &format!("{name}(map,string)"),
            vec![MAP_TYPE, STRING_TYPE],
            f,
        )?;
    }
    env.add_overload(
        MISSING_SECRET,
        "@tp_missing_secret(string)",
        vec![STRING_TYPE],
        missing_secret,
    )?;
    env.add_overload(
        "inCidrRange",
        "inCidrRange(string,string)",
        vec![STRING_TYPE, STRING_TYPE],
        in_cidr_range,
    )?;
    env.add_overload(
        "inCidrRanges",
        "inCidrRanges(string,list)",
        vec![STRING_TYPE, LIST_TYPE],
        in_cidr_ranges,
    )?;
    env.add_member_overload(
        "isPrivateIp",
        "string.isPrivateIp()",
        STRING_TYPE,
        vec![],
        is_private_ip,
    )?;
    env.add_overload(
        "json.encode",
        "json.encode(dyn)",
        vec![cel::common::types::DYN_TYPE],
        json_encode,
    )?;
    env.add_overload(
        "json.decode",
        "json.decode(string)",
        vec![STRING_TYPE],
        json_decode,
    )?;
    Ok(env)
}

pub(super) type Args<'b, 'v> = Vec<CowVal<'b, 'v>>;
pub(super) type Ret<'b, 'v> = Result<CowVal<'b, 'v>, ExecutionError>;

pub(super) fn to_value(v: &dyn Val) -> Result<Value, ExecutionError> {
    v.try_into()
}

pub(super) fn from_value<'b, 'v>(v: Value) -> Ret<'b, 'v> {
    let boxed: Box<dyn Val> = v.try_into()?;
    Ok(CowVal::Owned(boxed))
}

pub(super) fn string_of(function: &str, v: &dyn Val) -> Result<String, ExecutionError> {
    match to_value(v)? {
        Value::String(s) => Ok(s.as_str().to_owned()),
        other => Err(ExecutionError::function_error(
            function,
            format!("expected a string, got {:?}", other.type_of()),
        )),
    }
}

/// `@tp_values(map, name)`: the list under `name`, ASCII case-insensitively, `[]` when absent.
fn values<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let name = string_of("getReqHeader", &*args[1])?;
    match lookup_ci(&*args[0], &name) {
        Some(list) => Ok(CowVal::Owned(list)),
        None => from_value(Value::List(Arc::new(Vec::new()))),
    }
}

fn has_values<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let name = string_of("hasReqHeader", &*args[1])?;
    Ok(CowVal::owned(CelBool::from(
        lookup_ci(&*args[0], &name).is_some(),
    )))
}

/// The value under `name` in a header or query map, read in place: the name as written, then
/// lower-cased (how header names arrive), then any other spelling. Only the list found is
/// copied, never the map.
fn lookup_ci<'v>(map: &(dyn Val + 'v), name: &str) -> Option<Box<dyn Val + 'v>> {
    let index = map.as_indexer()?;
    let get = |key: &str| {
        index
            .get(&CelString::from(key.to_owned()))
            .ok()
            .map(CowVal::into_owned)
    };
    if let Some(v) = get(name) {
        return Some(v);
    }
    let lower = name.to_ascii_lowercase();
    if lower != name
        && let Some(v) = get(&lower)
    {
        return Some(v);
    }
    let mut keys = map.as_iterable()?.iter();
    while let Some(k) = keys.next() {
        if let Some(k) = k.downcast_ref::<CelString>()
            && k.inner() != name
            && k.inner() != lower
            && k.inner().eq_ignore_ascii_case(name)
        {
            return get(k.inner());
        }
    }
    None
}

fn missing_secret<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let name = string_of("secrets.get", &*args[0])?;
    Err(ExecutionError::function_error(
        "secrets.get",
        format!("the secret {name} is not set (set it in the environment or with --secrets FILE)"),
    ))
}

/// Parses `a.b.c.d/n` or a bare address (a /32 or /128).
pub fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

fn ip_of(function: &str, v: &dyn Val) -> Result<Option<IpAddr>, ExecutionError> {
    Ok(string_of(function, v)?.trim().parse::<IpAddr>().ok())
}

fn in_cidr_range<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let ip = ip_of("inCidrRange", &*args[0])?;
    let cidr = string_of("inCidrRange", &*args[1])?;
    let inside = match (ip, parse_cidr(&cidr)) {
        (Some(ip), Some(net)) => net.contains(&ip),
        _ => false,
    };
    Ok(CowVal::owned(CelBool::from(inside)))
}

fn in_cidr_ranges<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let ip = ip_of("inCidrRanges", &*args[0])?;
    let Value::List(list) = to_value(&*args[1])? else {
        return Err(ExecutionError::function_error(
            "inCidrRanges",
            "expected a list of CIDRs",
        ));
    };
    let inside = ip.is_some_and(|ip| {
        list.iter().any(|c| match c {
            Value::String(s) => parse_cidr(s).is_some_and(|n| n.contains(&ip)),
            _ => false,
        })
    });
    Ok(CowVal::owned(CelBool::from(inside)))
}

fn is_private_ip<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let private = match ip_of("isPrivateIp", &*args[0])? {
        Some(IpAddr::V4(v4)) => v4.is_private(),
        Some(IpAddr::V6(v6)) => (v6.segments()[0] & 0xfe00) == 0xfc00,
        None => false,
    };
    Ok(CowVal::owned(CelBool::from(private)))
}

fn json_encode<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let json = to_json(&to_value(&*args[0])?);
    Ok(CowVal::owned(CelString::from(json.to_string())))
}

fn json_decode<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let text = string_of("json.decode", &*args[0])?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ExecutionError::function_error("json.decode", format!("invalid JSON: {e}")))?;
    from_value(from_json(&json))
}

/// A CEL value as JSON (bytes as base64-free lossy text, timestamps as their debug form).
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(s.as_str().to_owned()),
        Value::Bytes(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        Value::List(l) => J::Array(l.iter().map(to_json).collect()),
        Value::Map(m) => {
            let mut entries: Vec<(String, J)> = m
                .map
                .iter()
                .map(|(k, v)| (key_text(k), to_json(v)))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            J::Object(entries.into_iter().collect())
        }
        other => J::String(format!("{other:?}")),
    }
}

fn key_text(k: &Key) -> String {
    match k {
        Key::String(s) => s.as_str().to_owned(),
        Key::Int(i) => i.to_string(),
        Key::Uint(u) => u.to_string(),
        Key::Bool(b) => b.to_string(),
    }
}

/// JSON as a CEL value.
pub fn from_json(j: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match j {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .or_else(|| n.as_u64().map(Value::UInt))
            .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0))),
        J::String(s) => Value::from(s.as_str()),
        J::Array(a) => Value::List(Arc::new(a.iter().map(from_json).collect())),
        J::Object(o) => map(o.iter().map(|(k, v)| (k.as_str(), from_json(v)))),
    }
}

/// A CEL map from string keys.
pub fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    let map: HashMap<Key, Value> = entries
        .into_iter()
        .map(|(k, v)| (Key::String(Arc::new(k.to_owned())), v))
        .collect();
    Value::Map(Map { map: Arc::new(map) })
}

/// A value as text, the way `${…}` substitutes it: strings as they are, JSON for the rest.
pub fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.as_str().to_owned(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => to_json(other).to_string(),
    }
}

/// A compile error inside one expression: a message and a byte range in its text.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileError {
    pub message: String,
    pub help: Option<String>,
    pub range: std::ops::Range<usize>,
}

/// One compiled expression.
#[derive(Debug, Clone)]
pub struct Expr {
    pub source: String,
    ast: IdedExpr,
    /// The roots it reads, so an evaluation binds only those.
    roots: Vec<&'static str>,
    /// The same expression for the direct path, when it has one ([`super::native`]).
    native: Option<Native>,
}

impl Expr {
    /// Compiles `source`; `secrets` resolves literal `secrets.get(…)` calls.
    pub fn compile(source: &str, secrets: &SecretStore) -> Result<Expr, Vec<CompileError>> {
        if let Some(issue) = crate::routing::cel::too_deep(source) {
            return Err(vec![CompileError {
                message: issue.message,
                help: issue.help,
                range: issue.range,
            }]);
        }
        let program = crate::routing::cel::with_stack(|| ENV.compile(source));
        let program = match program {
            Ok(p) => p,
            Err(errors) => {
                return Err(crate::routing::cel::syntax_issues(source, &errors)
                    .into_iter()
                    .map(|i| CompileError {
                        message: i.message,
                        help: i.help,
                        range: i.range,
                    })
                    .collect());
            }
        };
        let mut ast = program.expression().clone();
        let mut errors = Vec::new();
        rewrite(&mut ast, secrets);
        let mut roots = Vec::new();
        let mut bound = Vec::new();
        idents(
            &ast,
            &mut bound,
            &mut |name| match ROOTS.iter().find(|r| **r == name) {
                Some(r) => {
                    if !roots.contains(r) {
                        roots.push(*r)
                    }
                }
                // `int`, `string`, … name types (`type(x) == int`).
                None if ENV.types().find_type(name).is_some() => {}
                None => errors.push(unknown_variable(source, name)),
            },
        );
        calls(&ast, &mut |call| {
            if let Some(name) = unknown_function(call) {
                errors.push(unknown_function_error(source, &name));
            }
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Expr {
            source: source.to_owned(),
            native: super::native::compile(&ast),
            ast,
            roots,
        })
    }

    #[cfg(test)]
    pub(crate) fn ast(&self) -> &IdedExpr {
        &self.ast
    }

    /// The expression's value when it is a literal (a `secrets.get` resolved at load, say).
    pub(crate) fn literal(&self) -> Option<Value> {
        match &self.ast.expr {
            Ast::Literal(l) => to_value(&*l.to_val()).ok(),
            _ => None,
        }
    }

    /// Evaluates against `scope`.
    pub fn eval(&self, scope: &Scope) -> Result<Value, EvalError> {
        if let Some(v) = self.native.as_ref().and_then(|n| n.value(&scope.input())) {
            return Ok(v);
        }
        self.interpret(scope)
    }

    /// Appends the value as `${…}` substitutes it.
    pub(crate) fn write(&self, scope: &Scope, out: &mut String) -> Result<(), EvalError> {
        if let Some(Native::Text(t)) = &self.native
            && let Some(s) = t.eval(&scope.input(), None)
        {
            out.push_str(&s);
            return Ok(());
        }
        out.push_str(&display(&self.interpret(scope)?));
        Ok(())
    }

    /// Evaluates with the interpreter alone.
    pub(crate) fn interpret(&self, scope: &Scope) -> Result<Value, EvalError> {
        let mut ctx = Context::with_env(ENV.clone());
        ctx.set_variable_resolver(scope);
        for root in &self.roots {
            if !matches!(*root, "req" | "conn" | "endpoint" | "time") {
                ctx.add_variable_from_value(*root, scope.get(root));
            }
        }
        let v = Value::resolve_val(&self.ast, &ctx)?;
        Ok(to_value(&*v)?)
    }

    /// Evaluates a rule expression, which must be a bool.
    pub fn eval_bool(&self, scope: &Scope) -> Result<bool, EvalError> {
        if let Some(Native::Bool(p)) = &self.native
            && let Some(b) = p.eval(&scope.input(), None)
        {
            return Ok(b);
        }
        match self.interpret(scope)? {
            Value::Bool(b) => Ok(b),
            other => Err(EvalError::NotBool(other.type_of())),
        }
    }
}

/// Why an expression, a `${…}` or a `bucket_key` could not be evaluated. The evaluator fails
/// closed on every one (see [`super::eval`]); the text is what the 500 and the trace say.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// CEL's own error: a missing key, a type mismatch, a function's error. Boxed: it holds
    /// values, and these `Result`s are on the request path.
    #[error(transparent)]
    Cel(Box<ExecutionError>),
    #[error("the expression must be true or false, got {0:?}")]
    NotBool(ValueType),
    #[error("`${{{expr}}}` failed: {error}")]
    Template { expr: String, error: Box<EvalError> },
    #[error("`from` is not a regular expression once interpolated (ERR_NGROK_3901): {0}")]
    Regex(String),
    #[error("the bucket_key `{expr}` could not be evaluated: {error}")]
    BucketKey { expr: String, error: Box<EvalError> },
}

impl From<ExecutionError> for EvalError {
    fn from(e: ExecutionError) -> EvalError {
        EvalError::Cel(Box::new(e))
    }
}

fn unknown_variable(source: &str, name: &str) -> CompileError {
    let at = find_word(source, name).unwrap_or(0);
    let mut help = format!("a traffic-policy expression reads {}", ROOTS.join(", "));
    if let Some(s) = crate::policy::diagnostic::did_you_mean(name, ROOTS.iter().copied()) {
        help = format!("did you mean `{s}`? {help}");
    }
    CompileError {
        message: format!("unknown variable `{name}`"),
        help: Some(help),
        range: at..at + name.len(),
    }
}

/// Function names a misspelling is likely to be meant as.
const SUGGESTED_FUNCTIONS: &[&str] = &[
    "getReqHeader",
    "hasReqHeader",
    "getQueryParam",
    "hasQueryParam",
    "getResHeader",
    "hasResHeader",
    "getReqCookie",
    "hasReqCookie",
    "getResCookie",
    "hasResCookie",
    "inCidrRange",
    "inCidrRanges",
    "isPrivateIp",
    "startsWith",
    "endsWith",
    "contains",
    "matches",
    "size",
    "lowerAscii",
    "upperAscii",
    "exists",
    "filter",
];

/// The name of the function `call` names when the environment has no function of that name
/// (found by resolving it with no arguments: an unknown name is an undeclared reference, a
/// known one with other arguments is "no such overload"). Operators and aigw's own rewrites
/// are skipped.
fn unknown_function(call: &CallExpr) -> Option<String> {
    let name = &call.func_name;
    if name.starts_with(['_', '@', '!', '-']) {
        return None;
    }
    let ctx = Context::with_env(ENV.clone());
    let probe = |target: Option<Box<IdedExpr>>| {
        let e = IdedExpr {
            id: 0,
            expr: Ast::Call(CallExpr {
                func_name: name.clone(),
                target,
                args: Vec::new(),
            }),
        };
        match Value::resolve_val(&e, &ctx) {
            Err(ExecutionError::UndeclaredReference(r)) => Some(r.to_string()),
            _ => None,
        }
    };
    let null = || {
        Some(Box::new(IdedExpr {
            id: 0,
            expr: Ast::Literal(LiteralValue::Null),
        }))
    };
    match call.target.as_deref() {
        None => probe(None).map(|_| name.clone()),
        // `json.decode(…)` names a function in a namespace; `h.startsWith(…)` is a method.
        Some(
            t @ IdedExpr {
                expr: Ast::Ident(ns),
                ..
            },
        ) => match probe(Some(Box::new(t.clone()))) {
            Some(r) if &r == ns && !is_namespace(ns) => probe(null()).map(|_| name.clone()),
            Some(_) => Some(format!("{ns}.{name}")),
            None => None,
        },
        Some(_) => probe(null()).map(|_| name.clone()),
    }
}

fn unknown_function_error(source: &str, name: &str) -> CompileError {
    let short = name.rsplit('.').next().unwrap_or(name);
    // The call's name: followed by `(`, not the tail of a longer name (a `.` may precede it).
    let bytes = source.as_bytes();
    let at = source
        .match_indices(&format!("{short}("))
        .map(|(i, _)| i)
        .find(|&i| {
            !i.checked_sub(1)
                .is_some_and(|j| bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_')
        })
        .unwrap_or(0);
    let mut help = "see the README's list of CEL functions".to_owned();
    if let Some(s) =
        crate::policy::diagnostic::did_you_mean(short, SUGGESTED_FUNCTIONS.iter().copied())
    {
        help = format!("did you mean `{s}`? {help}");
    }
    CompileError {
        message: format!("unknown function `{name}`: the expression would fail on every request"),
        help: Some(help),
        range: at..at + short.len(),
    }
}

/// Calls `f` on every call in `e`.
fn calls(e: &IdedExpr, f: &mut dyn FnMut(&CallExpr)) {
    crate::routing::cel::visit(e, &mut |node| {
        if let Ast::Call(c) = &node.expr {
            f(c)
        }
    });
}

fn find_word(source: &str, word: &str) -> Option<usize> {
    let bytes = source.as_bytes();
    source.match_indices(word).map(|(i, _)| i).find(|&i| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + word.len()).copied();
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.';
        !before.is_some_and(ident) && !after.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// Calls every free identifier of `e` (not bound by a comprehension).
fn idents(e: &IdedExpr, bound: &mut Vec<String>, f: &mut dyn FnMut(&str)) {
    match &e.expr {
        Ast::Ident(name) => {
            if !bound.iter().any(|b| b == name) {
                f(name)
            }
        }
        Ast::Select(s) => idents(&s.operand, bound, f),
        Ast::Call(c) => {
            // `json.decode(…)` parses as a call on `json`: a namespace, not a variable.
            let namespace = c
                .target
                .as_deref()
                .is_some_and(|t| matches!(&t.expr, Ast::Ident(n) if is_namespace(n)));
            if let Some(t) = &c.target
                && !namespace
            {
                idents(t, bound, f);
            }
            for a in &c.args {
                idents(a, bound, f);
            }
        }
        Ast::List(l) => l.elements.iter().for_each(|x| idents(x, bound, f)),
        Ast::Map(m) => {
            for entry in &m.entries {
                if let EntryExpr::MapEntry(me) = &entry.expr {
                    idents(&me.key, bound, f);
                    idents(&me.value, bound, f);
                }
            }
        }
        Ast::Struct(s) => {
            for entry in &s.entries {
                if let EntryExpr::StructField(sf) = &entry.expr {
                    idents(&sf.value, bound, f);
                }
            }
        }
        Ast::Comprehension(c) => {
            idents(&c.iter_range, bound, f);
            idents(&c.accu_init, bound, f);
            let n = bound.len();
            bound.push(c.iter_var.clone());
            if let Some(v2) = &c.iter_var2 {
                bound.push(v2.clone());
            }
            bound.push(c.accu_var.clone());
            idents(&c.loop_cond, bound, f);
            idents(&c.loop_step, bound, f);
            idents(&c.result, bound, f);
            bound.truncate(n);
        }
        Ast::Literal(_) | Ast::Unspecified => {}
    }
}

fn ident(id: u64, name: &str) -> IdedExpr {
    IdedExpr {
        id,
        expr: Ast::Ident(name.to_owned()),
    }
}

fn select(id: u64, operand: IdedExpr, field: &str) -> IdedExpr {
    IdedExpr {
        id,
        expr: Ast::Select(SelectExpr {
            operand: Box::new(operand),
            field: field.to_owned(),
            test: false,
        }),
    }
}

fn string_lit(id: u64, s: &str) -> IdedExpr {
    IdedExpr {
        id,
        expr: Ast::Literal(LiteralValue::String(CelString::from(s.to_owned()))),
    }
}

fn literal_string(e: &IdedExpr) -> Option<String> {
    match &e.expr {
        Ast::Literal(LiteralValue::String(s)) => Some(s.inner().to_owned()),
        _ => None,
    }
}

/// The map a request function reads, as an expression, and the function that reads it.
fn source_map(func: &str, id: u64) -> Option<(IdedExpr, &'static str)> {
    let (root, path, reader): (&str, &[&str], &str) = match func {
        "getReqHeader" => ("req", &["headers"], VALUES),
        "hasReqHeader" => ("req", &["headers"], HAS_VALUES),
        "getQueryParam" => ("req", &["url", "query_params"], VALUES),
        "hasQueryParam" => ("req", &["url", "query_params"], HAS_VALUES),
        "getResHeader" => ("res", &["headers"], VALUES),
        "hasResHeader" => ("res", &["headers"], HAS_VALUES),
        "getReqCookie" => ("req", &["cookies"], FIRST_COOKIE),
        "hasReqCookie" => ("req", &["cookies"], HAS_COOKIE),
        "getResCookie" => ("res", &["cookies"], LONGEST_PATH_COOKIE),
        "hasResCookie" => ("res", &["cookies"], HAS_COOKIE),
        _ => return None,
    };
    let mut e = ident(id, root);
    for field in path {
        e = select(id, e, field);
    }
    Some((e, reader))
}

/// Rewrites ngrok's request functions and literal `secrets.get` (see the module docs).
fn rewrite(e: &mut IdedExpr, secrets: &SecretStore) {
    let id = e.id;
    if let Ast::Call(call) = &mut e.expr {
        let is_secrets_get = (call.func_name == "get"
            && call
                .target
                .as_deref()
                .is_some_and(|t| matches!(&t.expr, Ast::Ident(n) if n == "secrets")))
            || (call.func_name == "secrets.get" && call.target.is_none());
        if is_secrets_get {
            let lits: Vec<Option<String>> = call.args.iter().map(literal_string).collect();
            let (vault, name) = match lits.as_slice() {
                [Some(v), Some(n)] => (Some(v.clone()), n.clone()),
                [Some(n)] => (None, n.clone()),
                _ => (None, String::new()),
            };
            if !name.is_empty() {
                let r = SecretRef {
                    vault: vault.clone(),
                    name: name.clone(),
                    range: 0..0,
                };
                *e = match secrets.get(&r) {
                    Some(value) => string_lit(id, value),
                    None => IdedExpr {
                        id,
                        expr: Ast::Call(CallExpr {
                            func_name: MISSING_SECRET.to_owned(),
                            target: None,
                            args: vec![string_lit(
                                id,
                                &crate::policy::secrets::env_name(vault.as_deref(), &name),
                            )],
                        }),
                    },
                };
                return;
            }
        }
        if call.target.is_none()
            && call.args.len() == 1
            && let Some((map, reader)) = source_map(&call.func_name, id)
        {
            call.func_name = reader.to_owned();
            call.args.insert(0, map);
        }
    }
    match &mut e.expr {
        Ast::Call(call) => {
            if let Some(t) = &mut call.target {
                rewrite(t, secrets);
            }
            call.args.iter_mut().for_each(|a| rewrite(a, secrets));
        }
        Ast::Comprehension(c) => {
            for part in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                rewrite(part, secrets);
            }
        }
        Ast::List(l) => l.elements.iter_mut().for_each(|x| rewrite(x, secrets)),
        Ast::Map(m) => {
            for entry in &mut m.entries {
                if let EntryExpr::MapEntry(me) = &mut entry.expr {
                    rewrite(&mut me.key, secrets);
                    rewrite(&mut me.value, secrets);
                }
            }
        }
        Ast::Select(s) => rewrite(&mut s.operand, secrets),
        _ => {}
    }
}

/// The roots of one evaluation. `req`, `conn`, `endpoint` and `time` come from the request
/// and the clock, built for the interpreter only when an expression needs them; `vars` and
/// `actions` change as actions run.
#[derive(Debug, Clone)]
pub struct Scope {
    /// `req`, `conn`, `endpoint` and `time` as the interpreter holds them, converted on first
    /// use and shared by every expression of the request (they never change during it).
    pub(crate) fixed: Fixed,
    pub request: Arc<RequestView>,
    /// `res` (`null` in the request phase).
    pub res: Value,
    /// Time since the Unix epoch, for `time.now`.
    pub now: Duration,
    pub vars: HashMap<String, Value>,
    /// `actions.ngrok.<action>` results, by action name with `-` as `_`.
    pub actions: HashMap<&'static str, Value>,
}

/// The request's unchanging roots, converted once for the interpreter.
#[derive(Default)]
pub(crate) struct Fixed {
    req: OnceLock<Option<Box<dyn Val>>>,
    conn: OnceLock<Option<Box<dyn Val>>>,
    endpoint: OnceLock<Option<Box<dyn Val>>>,
    time: OnceLock<Option<Box<dyn Val>>>,
}

impl Clone for Fixed {
    /// A copy converts again on first use: the conversion is a cache, not state.
    fn clone(&self) -> Fixed {
        Fixed::default()
    }
}

impl std::fmt::Debug for Fixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fixed")
    }
}

impl VariableResolver for Scope {
    fn resolve<'b>(&'b self, root: &str) -> Option<CowVal<'b, 'b>> {
        let r = &self.request;
        let (cell, build): (_, &dyn Fn() -> Value) = match root {
            "req" => (&self.fixed.req, &|| r.to_value()),
            "conn" => (&self.fixed.conn, &|| r.conn_value()),
            "endpoint" => (&self.fixed.endpoint, &|| r.endpoint_value()),
            "time" => (&self.fixed.time, &|| {
                map([("now", Value::from(rfc3339(self.now)))])
            }),
            _ => return None,
        };
        cell.get_or_init(|| build().try_into().ok())
            .as_deref()
            .map(CowVal::Borrowed)
    }
}

impl Scope {
    /// The scope of a request at `now` (time since the Unix epoch), before any action ran.
    pub fn new(request: Arc<RequestView>, now: Duration) -> Scope {
        Scope {
            fixed: Fixed::default(),
            request,
            res: Value::Null,
            now,
            vars: HashMap::new(),
            actions: HashMap::new(),
        }
    }

    pub(crate) fn input(&self) -> Input<'_> {
        Input {
            req: &self.request,
            res: &self.res,
            vars: &self.vars,
        }
    }

    /// A root the interpreter is given as a value (the others it resolves from [`Fixed`]).
    fn get(&self, root: &str) -> Value {
        match root {
            "res" => self.res.clone(),
            "vars" => map(self.vars.iter().map(|(k, v)| (k.as_str(), v.clone()))),
            "actions" => map([(
                "ngrok",
                map(self.actions.iter().map(|(k, v)| (*k, v.clone()))),
            )]),
            _ => Value::Null,
        }
    }
}

/// `time.now`'s text.
fn rfc3339(since_epoch: Duration) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs());
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        let req = RequestView::new(
            "POST",
            "/v1/chat/completions?q=1",
            "10.1.2.3:1000".parse().unwrap(),
        )
        .header("authorization", "Bearer t1")
        .header("x-api-key", "k");
        let mut s = Scope::new(Arc::new(req), Duration::ZERO);
        s.vars
            .insert("keys".to_owned(), Value::from(vec!["Bearer t1"]));
        s
    }

    fn eval(src: &str) -> Result<Value, EvalError> {
        let secrets = SecretStore::from_vars([("AIGW_SECRET_V_NAME".to_owned(), "s3".to_owned())]);
        Expr::compile(src, &secrets)
            .unwrap_or_else(|e| panic!("{src}: {e:?}"))
            .eval(&scope())
    }

    #[test]
    fn cookies_from_the_request_and_the_response() {
        let req = crate::traffic::RequestView::new("GET", "/", "127.0.0.1:1".parse().unwrap())
            .header("Cookie", "session=abc; theme=dark");
        let res = crate::traffic::ResponseView {
            status: 200,
            headers: vec![
                ("set-cookie".into(), "id=1; Path=/".into()),
                ("set-cookie".into(), "id=2; Path=/app/v1; HttpOnly".into()),
            ],
        };
        let mut s = scope();
        s.request = Arc::new(req);
        s.res = res.to_value();
        let secrets = SecretStore::from_vars(Vec::<(String, String)>::new());
        let ev = |src: &str| Expr::compile(src, &secrets).unwrap().eval(&s);
        for yes in [
            "hasReqCookie('session') && getReqCookie('session').value == 'abc'",
            "!hasReqCookie('Session')",
            "req.cookies['theme'][0].value == 'dark'",
            "getResCookie('id').value == '2' && getResCookie('id').http_only",
            "hasResCookie('id') && !hasResCookie('nope')",
            "res.cookies['id'].size() == 2",
        ] {
            assert!(
                matches!(ev(yes), Ok(Value::Bool(true))),
                "{yes}: {:?}",
                ev(yes)
            );
        }
        let e = ev("getReqCookie('nope').value == 'x'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hasReqCookie('nope')"), "{e}");
    }

    #[test]
    fn ngrok_request_functions() {
        let t = |s| eval(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert!(matches!(
            t("getReqHeader('Authorization')[0] == 'Bearer t1'"),
            Value::Bool(true)
        ));
        assert!(matches!(t("getReqHeader('nope') == []"), Value::Bool(true)));
        assert!(matches!(t("hasReqHeader('X-API-KEY')"), Value::Bool(true)));
        assert!(matches!(
            t("getQueryParam('q') == ['1']"),
            Value::Bool(true)
        ));
        assert!(matches!(
            t("getReqHeader('authorization').exists(h, h in vars.keys)"),
            Value::Bool(true)
        ));
        assert!(matches!(
            t("inCidrRange(conn.client_ip, '10.0.0.0/8')"),
            Value::Bool(true)
        ));
        assert!(matches!(
            t("inCidrRanges(conn.client_ip, ['192.168.0.0/16', 'bad'])"),
            Value::Bool(false)
        ));
        assert!(matches!(
            t("conn.client_ip.isPrivateIp()"),
            Value::Bool(true)
        ));
        assert!(matches!(
            t("json.decode('{\"a\": [1]}').a[0] == 1"),
            Value::Bool(true)
        ));
        // ngrok's encoder and hash functions, beside the request's own values.
        assert!(matches!(
            t(
                "hash.sha256(conn.client_ip).size() == 64 && basic_auth.encode('a', 'b') == 'Basic YTpi'"
            ),
            Value::Bool(true)
        ));
        assert!(matches!(
            t("req.url.path.startsWith('/v1/')"),
            Value::Bool(true)
        ));
        // Type names and the strings extension's namespace.
        assert!(matches!(
            t("type(req.method) == string && type(vars.keys) == list && type(1) != string"),
            Value::Bool(true)
        ));
        assert!(matches!(
            t("strings.quote(req.method) == '\"POST\"'"),
            Value::Bool(true)
        ));
    }

    #[test]
    fn secrets_are_resolved_at_load_and_missing_ones_fail_at_run() {
        assert!(matches!(
            eval("secrets.get('v', 'name') == 's3'"),
            Ok(Value::Bool(true))
        ));
        let e = eval("secrets.get('v', 'other') == 's3'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("AIGW_SECRET_V_OTHER"), "{e}");
    }

    #[test]
    fn unknown_variables_and_syntax_errors_fail_compilation() {
        let e = Expr::compile(
            "size(x) > 0 && reqs.method == 'GET'",
            &SecretStore::default(),
        )
        .unwrap_err();
        assert_eq!(e[0].message, "unknown variable `x`");
        assert_eq!(e[1].message, "unknown variable `reqs`");
        assert_eq!(e[1].range, 15..19);
        assert!(
            e[1].help
                .as_deref()
                .unwrap()
                .contains("did you mean `req`?")
        );
        assert!(Expr::compile("req.method ==", &SecretStore::default()).is_err());
        // Comprehension variables are not roots.
        assert!(Expr::compile("[1].all(x, x > 0)", &SecretStore::default()).is_ok());
    }

    #[test]
    fn unknown_functions_fail_compilation_and_known_ones_pass() {
        let err = |src: &str| {
            Expr::compile(src, &SecretStore::default())
                .err()
                .unwrap_or_else(|| panic!("{src} compiled"))
        };
        let e = err("getReqHeaders('x') == []");
        assert!(
            e[0].message.starts_with("unknown function `getReqHeaders`"),
            "{e:?}"
        );
        assert_eq!(e[0].range, 0..13);
        assert!(
            e[0].help
                .as_deref()
                .unwrap()
                .contains("did you mean `getReqHeader`?")
        );
        assert!(
            err("hash.sha265('a') != ''")[0]
                .message
                .contains("`hash.sha265`")
        );
        let e = err("req.url.path.startswith('/v1')");
        assert!(
            e[0].help.as_deref().unwrap().contains("`startsWith`"),
            "{e:?}"
        );
        assert!(
            err("getReqHeader('x').exists(h, h.nope())")[0]
                .message
                .contains("`nope`")
        );
        for ok in [
            "getReqHeader('x').exists(h, h.startsWith('a'))",
            "'a'.lowerAscii() == 'a' && size([1]) == 1 && int('1') == 1 && string(1) == '1'",
            "json.decode('[]') == [] && hash.sha256('a') != '' && url.escape('a') == 'a'",
            "math.greatest(1, 2) == 2 && lists.range(2).size() == 2 && rand.int(0, 2) >= 0",
            "timestamp(time.now) > timestamp('2020-01-01T00:00:00Z') && duration('1s') > duration('0s')",
            "base64.encode(b'a') != '' && 'a,b'.split(',').size() == 2 && matches('a', 'a')",
            "hasReqCookie('s') || getReqCookie('s').value == '' || inCidrRange(conn.client_ip, '10.0.0.0/8')",
            "type(req.method) == string && type(1) == int && strings.quote(req.method) != ''",
        ] {
            if let Err(e) = Expr::compile(ok, &SecretStore::default()) {
                panic!("{ok}: {e:?}");
            }
        }
    }

    #[test]
    fn a_missing_header_indexed_fails() {
        assert!(eval("req.headers['x-missing'][0] == 'a'").is_err());
    }
}
