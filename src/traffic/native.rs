//! A direct path for the common shapes of traffic-policy expressions.
//!
//! For the interpreter, `req` is a CEL map of every header, URL part and cookie, built and then
//! converted once per request, and each evaluation allocates its context and its values: a
//! 10-rule guard spent most of its time there. So an expression made only of the shapes below
//! is also compiled at load into a [`Native`] tree that reads the [`RequestView`] and `vars`
//! in place:
//!
//! - text: string literals, `req.id`, `req.method`, `req.url.{path,raw_path,query,scheme,host}`,
//!   `req.host`, `req.version`, `req.user_agent`, `req.content_type`, `conn.client_ip`,
//!   `req.headers['name'][i]`, a comprehension's variable, and `+` of those;
//! - lists of text: `getReqHeader`, `getQueryParam`, `vars.name`, list literals;
//! - tests: `==` `!=` `!` `&&` `||`, `startsWith` `endsWith` `contains`, `in`,
//!   `hasReqHeader`, `hasQueryParam`, `inCidrRange(s)` with literal ranges, `isPrivateIp`,
//!   `exists` / `all` over a list, `res.status_code` against an integer.
//!
//! It answers only when it is sure to answer as the interpreter would. Whenever a value is not
//! what it expects (a missing header indexed with `[0]`, a `vars` entry that is not a list of
//! strings, `res` outside the response phase) it returns `None` and the interpreter evaluates
//! the whole expression, errors included. `native_agrees_with_the_interpreter` checks this on
//! every shape.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use cel::common::ast::{CallExpr, Expr as Ast, IdedExpr, LiteralValue, operators};
use cel::objects::{Key, Value};

use super::request::{RequestView, query_pairs};

/// What a native expression reads.
pub(crate) struct Input<'a> {
    pub req: &'a RequestView,
    /// `res` as a CEL value (`Null` in the request phase).
    pub res: &'a Value,
    pub vars: &'a HashMap<String, Value>,
}

/// A compiled expression, by the type it yields.
#[derive(Debug, Clone)]
pub(crate) enum Native {
    Bool(Pred),
    Text(Text),
    List(List),
}

#[derive(Debug, Clone)]
pub(crate) enum Pred {
    Lit(bool),
    Not(Box<Pred>),
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    /// `a == b`, or `a != b` when `negated`.
    Eq {
        a: Text,
        b: Text,
        negated: bool,
    },
    Str(StrFn, Text, Text),
    In(Text, List),
    HasHeader(Box<str>),
    HasQuery(Box<str>),
    /// `inCidrRange(ip, 'net')` / `inCidrRanges(ip, [...])`; a range that does not parse is
    /// `None` and never contains anything, as at run time.
    InCidrs(Text, Box<[Option<ipnet::IpNet>]>),
    IsPrivate(Text),
    /// `list.exists(x, p)` (`all: false`) or `list.all(x, p)`.
    Each {
        list: List,
        test: Box<Pred>,
        all: bool,
    },
    /// `res.status_code <op> n` (or `n <op> res.status_code`, flipped at compile).
    Status(Cmp, i64),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum StrFn {
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
pub(crate) enum Text {
    Lit(Box<str>),
    Id,
    Method,
    Path,
    Query,
    Scheme,
    Host,
    Version,
    UserAgent,
    ContentType,
    ClientIp,
    /// `req.headers['name'][i]`: the header as stored (lower-cased names, exact key).
    Header(Box<str>, usize),
    /// The variable of the enclosing `exists` / `all`.
    Elem,
    Concat(Box<Text>, Box<Text>),
}

#[derive(Debug, Clone)]
pub(crate) enum List {
    /// `getReqHeader('name')`.
    Header(Box<str>),
    /// `getQueryParam('name')`.
    Query(Box<str>),
    /// `vars.name`.
    Var(Box<str>),
    Lits(Box<[Box<str>]>),
}

// ---- compile ------------------------------------------------------------------------------

/// The native form of `e` (already rewritten by `cel::rewrite`), when it has one.
pub(crate) fn compile(e: &IdedExpr) -> Option<Native> {
    let cx = Cx { elem: None };
    if let Some(p) = cx.pred(e) {
        return Some(Native::Bool(p));
    }
    if let Some(t) = cx.text(e) {
        return Some(Native::Text(t));
    }
    cx.list(e).map(Native::List)
}

/// Compile-time context: the name of the enclosing comprehension's variable.
#[derive(Clone, Copy)]
struct Cx<'e> {
    elem: Option<&'e str>,
}

fn call(e: &IdedExpr) -> Option<&CallExpr> {
    match &e.expr {
        Ast::Call(c) => Some(c),
        _ => None,
    }
}

fn string_lit(e: &IdedExpr) -> Option<&str> {
    match &e.expr {
        Ast::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

fn int_lit(e: &IdedExpr) -> Option<i64> {
    match &e.expr {
        Ast::Literal(LiteralValue::Int(i)) => Some(*i.inner()),
        _ => None,
    }
}

/// `a.b.c` as `["a", "b", "c"]`.
fn path(e: &IdedExpr) -> Option<Vec<&str>> {
    match &e.expr {
        Ast::Ident(n) => Some(vec![n.as_str()]),
        Ast::Select(s) if !s.test => {
            let mut p = path(&s.operand)?;
            p.push(s.field.as_str());
            Some(p)
        }
        _ => None,
    }
}

impl<'e> Cx<'e> {
    fn pred(self, e: &'e IdedExpr) -> Option<Pred> {
        match &e.expr {
            Ast::Literal(LiteralValue::Boolean(b)) => Some(Pred::Lit(*b.inner())),
            Ast::Comprehension(c) => self.each(c),
            Ast::Call(c) => self.pred_call(c),
            _ => None,
        }
    }

    fn pred_call(self, c: &'e CallExpr) -> Option<Pred> {
        let args = c.args.as_slice();
        let boxed = |e| self.pred(e).map(Box::new);
        match (c.func_name.as_str(), c.target.as_deref(), args) {
            (operators::LOGICAL_NOT, None, [a]) => Some(Pred::Not(boxed(a)?)),
            (operators::LOGICAL_AND, None, [a, b]) => Some(Pred::And(boxed(a)?, boxed(b)?)),
            (operators::LOGICAL_OR, None, [a, b]) => Some(Pred::Or(boxed(a)?, boxed(b)?)),
            (op @ (operators::EQUALS | operators::NOT_EQUALS), None, [a, b]) => {
                if let Some(p) = self.status(op, a, b) {
                    return Some(p);
                }
                Some(Pred::Eq {
                    a: self.text(a)?,
                    b: self.text(b)?,
                    negated: op == operators::NOT_EQUALS,
                })
            }
            (
                op @ (operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS),
                None,
                [a, b],
            ) => self.status(op, a, b),
            (operators::IN, None, [a, b]) => Some(Pred::In(self.text(a)?, self.list(b)?)),
            (f @ ("startsWith" | "endsWith" | "contains"), Some(t), [a]) => {
                let f = match f {
                    "startsWith" => StrFn::StartsWith,
                    "endsWith" => StrFn::EndsWith,
                    _ => StrFn::Contains,
                };
                Some(Pred::Str(f, self.text(t)?, self.text(a)?))
            }
            (super::cel::HAS_VALUES, None, [map, name]) => {
                let name = string_lit(name)?.into();
                match path(map)?.as_slice() {
                    ["req", "headers"] => Some(Pred::HasHeader(name)),
                    ["req", "url", "query_params"] => Some(Pred::HasQuery(name)),
                    _ => None,
                }
            }
            ("inCidrRange", None, [ip, net]) => Some(Pred::InCidrs(
                self.text(ip)?,
                Box::new([super::cel::parse_cidr(string_lit(net)?)]),
            )),
            ("inCidrRanges", None, [ip, nets]) => {
                let Ast::List(l) = &nets.expr else {
                    return None;
                };
                let nets = l
                    .elements
                    .iter()
                    .map(|n| string_lit(n).map(super::cel::parse_cidr))
                    .collect::<Option<Box<[_]>>>()?;
                Some(Pred::InCidrs(self.text(ip)?, nets))
            }
            ("isPrivateIp", Some(t), []) => Some(Pred::IsPrivate(self.text(t)?)),
            _ => None,
        }
    }

    /// `res.status_code <op> n`.
    fn status(self, op: &str, a: &IdedExpr, b: &IdedExpr) -> Option<Pred> {
        let is_status = |e: &IdedExpr| path(e).is_some_and(|p| p == ["res", "status_code"]);
        let (n, flipped) = if is_status(a) {
            (int_lit(b)?, false)
        } else if is_status(b) {
            (int_lit(a)?, true)
        } else {
            return None;
        };
        let cmp = match (op, flipped) {
            (operators::EQUALS, _) => Cmp::Eq,
            (operators::NOT_EQUALS, _) => Cmp::Ne,
            (operators::LESS, false) | (operators::GREATER, true) => Cmp::Lt,
            (operators::LESS_EQUALS, false) | (operators::GREATER_EQUALS, true) => Cmp::Le,
            (operators::GREATER, false) | (operators::LESS, true) => Cmp::Gt,
            (operators::GREATER_EQUALS, false) | (operators::LESS_EQUALS, true) => Cmp::Ge,
            _ => return None,
        };
        Some(Pred::Status(cmp, n))
    }

    /// `list.exists(x, p)` / `list.all(x, p)` as the parser expands them.
    fn each(self, c: &'e cel::common::ast::ComprehensionExpr) -> Option<Pred> {
        const RESULT: &str = "@result";
        if self.elem.is_some()
            || c.iter_var2.is_some()
            || c.accu_var != RESULT
            || super::cel::ROOTS.contains(&c.iter_var.as_str())
            || !matches!(&c.result.expr, Ast::Ident(r) if r == RESULT)
        {
            return None;
        }
        let all = match &c.accu_init.expr {
            Ast::Literal(LiteralValue::Boolean(b)) => *b.inner(),
            _ => return None,
        };
        let step = call(&c.loop_step)?;
        let op = if all {
            operators::LOGICAL_AND
        } else {
            operators::LOGICAL_OR
        };
        let [acc, body] = step.args.as_slice() else {
            return None;
        };
        if step.func_name != op || !matches!(&acc.expr, Ast::Ident(r) if r == RESULT) {
            return None;
        }
        let inner = Cx {
            elem: Some(&c.iter_var),
        };
        Some(Pred::Each {
            list: self.list(&c.iter_range)?,
            test: Box::new(inner.pred(body)?),
            all,
        })
    }

    fn text(self, e: &'e IdedExpr) -> Option<Text> {
        if let Some(s) = string_lit(e) {
            return Some(Text::Lit(s.into()));
        }
        if let Some(c) = call(e) {
            return match (c.func_name.as_str(), c.target.as_deref(), c.args.as_slice()) {
                (operators::ADD, None, [a, b]) => match (self.text(a)?, self.text(b)?) {
                    (Text::Lit(a), Text::Lit(b)) => Some(Text::Lit(format!("{a}{b}").into())),
                    (a, b) => Some(Text::Concat(Box::new(a), Box::new(b))),
                },
                (operators::INDEX, None, [map, i]) => {
                    let i = usize::try_from(int_lit(i)?).ok()?;
                    let named = call(map).filter(|m| m.func_name == operators::INDEX)?;
                    let [headers, name] = named.args.as_slice() else {
                        return None;
                    };
                    if path(headers)? != ["req", "headers"] || named.target.is_some() {
                        return None;
                    }
                    Some(Text::Header(string_lit(name)?.into(), i))
                }
                _ => None,
            };
        }
        let p = path(e)?;
        if self.elem.is_some_and(|v| p == [v]) {
            return Some(Text::Elem);
        }
        Some(match p.as_slice() {
            ["req", "id"] => Text::Id,
            ["req", "method"] => Text::Method,
            ["req", "url", "path" | "raw_path"] => Text::Path,
            ["req", "url", "query"] => Text::Query,
            ["req", "url", "scheme"] => Text::Scheme,
            ["req", "host"] | ["req", "url", "host"] => Text::Host,
            ["req", "version"] => Text::Version,
            ["req", "user_agent"] => Text::UserAgent,
            ["req", "content_type"] => Text::ContentType,
            ["conn", "client_ip"] => Text::ClientIp,
            _ => return None,
        })
    }

    fn list(self, e: &'e IdedExpr) -> Option<List> {
        if let Ast::List(l) = &e.expr {
            return l
                .elements
                .iter()
                .map(|x| string_lit(x).map(Box::from))
                .collect::<Option<Box<[_]>>>()
                .map(List::Lits);
        }
        if let Some(c) = call(e) {
            let [map, name] = c.args.as_slice() else {
                return None;
            };
            if c.func_name != super::cel::VALUES || c.target.is_some() {
                return None;
            }
            let name = string_lit(name)?.into();
            return match path(map)?.as_slice() {
                ["req", "headers"] => Some(List::Header(name)),
                ["req", "url", "query_params"] => Some(List::Query(name)),
                _ => None,
            };
        }
        match path(e)?.as_slice() {
            ["vars", name] => Some(List::Var((*name).into())),
            _ => None,
        }
    }
}

// ---- evaluate -----------------------------------------------------------------------------

impl Native {
    /// The value, or `None` when the interpreter must answer.
    pub(crate) fn value(&self, input: &Input<'_>) -> Option<Value> {
        match self {
            Native::Bool(p) => p.eval(input, None).map(Value::Bool),
            Native::Text(t) => t.eval(input, None).map(|s| Value::from(s.into_owned())),
            Native::List(l) => {
                let mut items = Vec::new();
                l.each(input, &mut |s| {
                    items.push(Value::from(s.to_owned()));
                    Some(false)
                })?;
                Some(Value::from(items))
            }
        }
    }
}

impl Pred {
    pub(crate) fn eval(&self, input: &Input<'_>, elem: Option<&str>) -> Option<bool> {
        Some(match self {
            Pred::Lit(b) => *b,
            Pred::Not(p) => !p.eval(input, elem)?,
            Pred::And(a, b) => a.eval(input, elem)? && b.eval(input, elem)?,
            Pred::Or(a, b) => a.eval(input, elem)? || b.eval(input, elem)?,
            Pred::Eq { a, b, negated } => {
                (a.eval(input, elem)? == b.eval(input, elem)?) != *negated
            }
            Pred::Str(f, s, arg) => {
                let (s, arg) = (s.eval(input, elem)?, arg.eval(input, elem)?);
                match f {
                    StrFn::StartsWith => s.starts_with(&*arg),
                    StrFn::EndsWith => s.ends_with(&*arg),
                    StrFn::Contains => s.contains(&*arg),
                }
            }
            Pred::In(t, list) => {
                let t = t.eval(input, elem)?;
                list.each(input, &mut |s| Some(s == t))?
            }
            Pred::HasHeader(name) => input.req.header_values(name).next().is_some(),
            Pred::HasQuery(name) => each_query(input.req, name, &mut |_| Some(true))?,
            Pred::InCidrs(ip, nets) => match ip.eval(input, elem)?.trim().parse::<IpAddr>() {
                Ok(ip) => nets.iter().flatten().any(|n| n.contains(&ip)),
                Err(_) => false,
            },
            Pred::IsPrivate(ip) => match ip.eval(input, elem)?.trim().parse::<IpAddr>() {
                Ok(IpAddr::V4(v4)) => v4.is_private(),
                Ok(IpAddr::V6(v6)) => (v6.segments()[0] & 0xfe00) == 0xfc00,
                Err(_) => false,
            },
            Pred::Each { list, test, all } => {
                // `all` holds when no element fails the test.
                let found = list.each(input, &mut |s| Some(test.eval(input, Some(s))? != *all))?;
                found != *all
            }
            Pred::Status(cmp, n) => {
                let Value::Map(m) = input.res else {
                    return None;
                };
                let Some(Value::Int(status)) = m.map.get(&Key::from("status_code")) else {
                    return None;
                };
                let (s, n) = (*status, *n);
                match cmp {
                    Cmp::Eq => s == n,
                    Cmp::Ne => s != n,
                    Cmp::Lt => s < n,
                    Cmp::Le => s <= n,
                    Cmp::Gt => s > n,
                    Cmp::Ge => s >= n,
                }
            }
        })
    }
}

impl Text {
    pub(crate) fn eval<'a>(
        &'a self,
        input: &Input<'a>,
        elem: Option<&'a str>,
    ) -> Option<Cow<'a, str>> {
        let req = input.req;
        Some(match self {
            Text::Lit(s) => Cow::Borrowed(&**s),
            Text::Id => Cow::Borrowed(&req.id),
            Text::Method => Cow::Borrowed(&req.method),
            Text::Path => Cow::Borrowed(&req.path),
            Text::Query => Cow::Borrowed(&req.query),
            Text::Scheme => Cow::Borrowed(&req.scheme),
            Text::Host => req.host_only(),
            Text::Version => Cow::Borrowed(&req.version),
            Text::UserAgent => Cow::Borrowed(req.header_values("user-agent").next().unwrap_or("")),
            Text::ContentType => {
                Cow::Borrowed(req.header_values("content-type").next().unwrap_or(""))
            }
            Text::ClientIp => Cow::Owned(req.client.ip().to_string()),
            Text::Header(name, i) => Cow::Borrowed(
                req.headers
                    .iter()
                    .filter(|(n, _)| **n == **name)
                    .nth(*i)?
                    .1
                    .as_str(),
            ),
            Text::Elem => Cow::Borrowed(elem?),
            Text::Concat(a, b) => {
                Cow::Owned(format!("{}{}", a.eval(input, elem)?, b.eval(input, elem)?))
            }
        })
    }
}

impl List {
    /// Calls `f` on each element until it returns `Some(true)`; whether one did. `None` when
    /// `f` or the list itself needs the interpreter.
    fn each(&self, input: &Input<'_>, f: &mut dyn FnMut(&str) -> Option<bool>) -> Option<bool> {
        match self {
            List::Header(name) => {
                for v in input.req.header_values(name) {
                    if f(v)? {
                        return Some(true);
                    }
                }
            }
            List::Query(name) => return each_query(input.req, name, f),
            List::Var(name) => {
                let Some(Value::List(items)) = input.vars.get(&**name) else {
                    return None;
                };
                // Only a list of strings: other element types compare by the interpreter's rules.
                if !items.iter().all(|v| matches!(v, Value::String(_))) {
                    return None;
                }
                for v in items.iter() {
                    if let Value::String(s) = v
                        && f(s)?
                    {
                        return Some(true);
                    }
                }
            }
            List::Lits(items) => {
                for s in items.iter() {
                    if f(s)? {
                        return Some(true);
                    }
                }
            }
        }
        Some(false)
    }
}

/// `getQueryParam(name)`'s values, as [`List::each`] walks them.
fn each_query(
    req: &RequestView,
    name: &str,
    f: &mut dyn FnMut(&str) -> Option<bool>,
) -> Option<bool> {
    let pairs = query_pairs(&req.query);
    // The interpreter tries the name as written, then lower-cased, then any other spelling in
    // map order (which is not fixed); only the first two are answered here.
    let lower = name.to_ascii_lowercase();
    let Some(key) = [name, lower.as_str()]
        .into_iter()
        .find(|k| pairs.iter().any(|(n, _)| n == k))
    else {
        return if pairs.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            None
        } else {
            Some(false)
        };
    };
    for (_, v) in pairs.iter().filter(|(n, _)| n == key) {
        if f(v)? {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::cel::{Expr, Scope};
    use super::*;
    use crate::policy::secrets::SecretStore;

    /// Expressions the direct path must take, and each must answer as the interpreter does.
    const NATIVE: &[&str] = &[
        "req.method != 'POST'",
        "'GET' == req.method",
        "!req.url.path.startsWith('/v1/')",
        "req.url.path.endsWith('/completions') && req.url.query.contains('q=')",
        "req.url.scheme == 'http' || req.version == 'HTTP/2'",
        "req.host == 'api.local' && req.url.host == req.host",
        "!inCidrRanges(conn.client_ip, ['127.0.0.0/8', '10.0.0.0/8', 'bad'])",
        "inCidrRange(conn.client_ip, '10.1.0.0/16')",
        "conn.client_ip.isPrivateIp()",
        "hasReqHeader('X-Debug') || hasQueryParam('q')",
        "hasQueryParam('Q')",
        "!req.content_type.startsWith('application/json')",
        "req.user_agent.contains('curl')",
        "!(getReqHeader('authorization').exists(h, h in vars.keys))",
        "getReqHeader('authorization').all(h, h.startsWith('Bearer '))",
        "getQueryParam('q').exists(v, v == '1')",
        "getQueryParam('Q').exists(v, v == '1')",
        "!(req.headers['authorization'][0] in vars.valid)",
        "req.headers['authorization'][0] != 'Bearer ' + 'tok-a'",
        "req.headers['x-priority'][0] == 'high'",
        "req.headers['x-priority'][1] == 'low'",
        "req.headers['Authorization'][0] == 'x'",
        "'Bearer ' + req.headers['x-key'][0] in vars.keys",
        "vars.keys.exists(k, k == req.headers['authorization'][0])",
        "vars.mixed.exists(k, k == 'a')",
        "vars.missing.exists(k, k == 'a')",
        "vars.text.exists(k, k == 'a')",
        "req.method in ['GET', 'HEAD']",
        "res.status_code >= 500",
        "500 <= res.status_code && res.status_code != 503",
        "true && !false",
        "req.method",
        "req.id + '/' + conn.client_ip",
        "req.host + req.url.path",
        "getReqHeader('authorization')",
        "vars.keys",
    ];

    /// Shapes that stay with the interpreter.
    const INTERPRETED: &[&str] = &[
        "size(getReqHeader('a')) > 0",
        "req.headers.exists(k, k == 'a')",
        "[1, 2].exists(x, x > 1)",
        "getReqHeader('a').exists(req, req == 'a')",
        "res.status_code >= 500.0",
        "vars.keys[0] == 'a'",
    ];

    fn requests() -> Vec<RequestView> {
        let base = |m: &str, p: &str, ip: &str| RequestView::new(m, p, ip.parse().unwrap());
        vec![
            base("POST", "/v1/chat/completions?q=1&Q=2", "10.1.2.3:5000")
                .header("authorization", "Bearer tok-a")
                .header("content-type", "application/json")
                .header("user-agent", "curl/8")
                .header("x-priority", "high")
                .header("x-priority", "low")
                .header("host", "api.local"),
            base("GET", "/health?q=2", "192.168.1.9:1")
                .header("Authorization", "Basic x")
                .header("x-key", "tok-b"),
            base("PUT", "/", "[fd00::1]:1").header("x-debug", "1"),
            base("POST", "/v1/x?q", "8.8.8.8:1"),
        ]
        .into_iter()
        .map(|mut r| {
            let host = r.header_values("host").next().map(str::to_owned);
            r.host = host.unwrap_or_default();
            r
        })
        .collect()
    }

    fn scopes() -> Vec<Scope> {
        let mut out = Vec::new();
        for req in requests() {
            for (res, vars) in [(false, false), (true, true)] {
                let mut s = Scope::new(Arc::new(req.clone()), Duration::from_secs(1));
                if res {
                    s.res = crate::traffic::ResponseView {
                        status: 502,
                        headers: vec![],
                    }
                    .to_value();
                }
                if vars {
                    let list = |v: Vec<Value>| Value::List(Arc::new(v));
                    s.vars.extend([
                        (
                            "keys".to_owned(),
                            Value::from(vec!["Bearer tok-a", "Bearer tok-b"]),
                        ),
                        ("valid".to_owned(), Value::from(vec!["Bearer tok-a"])),
                        (
                            "mixed".to_owned(),
                            list(vec![Value::Int(1), Value::from("a")]),
                        ),
                        ("text".to_owned(), Value::from("a")),
                    ]);
                }
                out.push(s);
            }
        }
        out
    }

    #[test]
    fn native_agrees_with_the_interpreter() {
        let secrets = SecretStore::default();
        let mut answered = 0;
        for src in NATIVE {
            let e = Expr::compile(src, &secrets).unwrap_or_else(|e| panic!("{src}: {e:?}"));
            let native = compile(e.ast()).unwrap_or_else(|| panic!("{src} is not native"));
            for s in scopes() {
                let input = s.input();
                let Some(fast) = native.value(&input) else {
                    continue;
                };
                answered += 1;
                match e.interpret(&s) {
                    Ok(slow) => assert_eq!(fast, slow, "{src} on {:?}", s.request),
                    Err(err) => panic!("{src}: native {fast:?}, interpreter failed: {err}"),
                }
                // The public paths take the direct answer.
                assert_eq!(e.eval(&s).unwrap(), fast, "{src}");
            }
        }
        assert!(answered > 150, "only {answered} direct answers");
        for src in INTERPRETED {
            let e = Expr::compile(src, &secrets).unwrap_or_else(|e| panic!("{src}: {e:?}"));
            assert!(compile(e.ast()).is_none(), "{src} should be interpreted");
        }
    }

    #[test]
    fn what_the_interpreter_refuses_the_direct_path_leaves_to_it() {
        let secrets = SecretStore::default();
        let s = &scopes()[0];
        for src in [
            "req.headers['x-missing'][0] == 'a'",
            "req.headers['Authorization'][0] == 'x'",
            "vars.missing.exists(k, k == 'a')",
            "res.status_code >= 500",
        ] {
            let e = Expr::compile(src, &secrets).unwrap();
            assert!(
                compile(e.ast()).unwrap().value(&s.input()).is_none(),
                "{src}"
            );
            assert!(e.eval(s).is_err(), "{src} must fail closed");
        }
    }
}
