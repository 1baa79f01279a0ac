//! Cookies as ngrok's CEL sees them: `req.cookies` from the `Cookie` headers (name → list of
//! `{name, value}`), `res.cookies` from `Set-Cookie` (each with its attributes), and the
//! functions that read one (`getReqCookie`, `hasReqCookie`, `getResCookie`, `hasResCookie`).
//! Cookie names are case-sensitive (RFC 6265), unlike header names.

use std::sync::Arc;

use cel::common::types::CelBool;
use cel::objects::{Key, Value};

use super::cel::{Args, Ret, from_value, map, string_of, to_value};

/// `Cookie` header values as `req.cookies`: `a=1; b="2"` gives `{a: [{name, value}], …}`, in
/// order; a quoted value loses its quotes, a pair without a name is skipped.
pub fn request_cookies<'a>(headers: impl Iterator<Item = &'a str>) -> Value {
    let mut grouped: Vec<(String, Vec<Value>)> = Vec::new();
    for pair in headers.flat_map(|h| h.split(';')) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        let value = unquote(value.trim());
        let cookie = map([("name", Value::from(name)), ("value", Value::from(value))]);
        push(&mut grouped, name, cookie);
    }
    group_map(grouped)
}

/// `Set-Cookie` header values as `res.cookies`, each cookie with `name`, `value`, `domain`,
/// `path`, `expires` (as sent), `max_age`, `secure`, `http_only`, `same_site` and
/// `unparsed_attributes` (the attributes it does not know, as sent).
pub fn response_cookies<'a>(headers: impl Iterator<Item = &'a str>) -> Value {
    let mut grouped: Vec<(String, Vec<Value>)> = Vec::new();
    for line in headers {
        if let Some((name, cookie)) = set_cookie(line) {
            push(&mut grouped, &name, cookie);
        }
    }
    group_map(grouped)
}

fn set_cookie(line: &str) -> Option<(String, Value)> {
    let mut parts = line.split(';');
    let (name, value) = parts.next()?.split_once('=')?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let (mut domain, mut path, mut expires, mut same_site) = ("", "", "", "");
    let (mut max_age, mut secure, mut http_only) = (0i64, false, false);
    let mut unparsed = Vec::new();
    for attr in parts.map(str::trim).filter(|a| !a.is_empty()) {
        let (key, val) = attr.split_once('=').unwrap_or((attr, ""));
        let val = val.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "domain" => domain = val.trim_start_matches('.'),
            "path" => path = val,
            "expires" => expires = val,
            // Go's net/http: a non-positive Max-Age means "delete now" (-1).
            "max-age" => match val.parse::<i64>() {
                Ok(n) if n > 0 => max_age = n,
                Ok(_) => max_age = -1,
                Err(_) => unparsed.push(Value::from(attr)),
            },
            "secure" => secure = true,
            "httponly" => http_only = true,
            "samesite" => same_site = val,
            _ => unparsed.push(Value::from(attr)),
        }
    }
    let cookie = map([
        ("name", Value::from(name)),
        ("value", Value::from(unquote(value.trim()))),
        ("domain", Value::from(domain)),
        ("path", Value::from(path)),
        ("expires", Value::from(expires)),
        ("max_age", Value::Int(max_age)),
        ("secure", Value::Bool(secure)),
        ("http_only", Value::Bool(http_only)),
        ("same_site", Value::from(same_site)),
        ("unparsed_attributes", Value::List(Arc::new(unparsed))),
    ]);
    Some((name.to_owned(), cookie))
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

fn push(grouped: &mut Vec<(String, Vec<Value>)>, name: &str, cookie: Value) {
    match grouped.iter_mut().find(|(n, _)| n == name) {
        Some((_, list)) => list.push(cookie),
        None => grouped.push((name.to_owned(), vec![cookie])),
    }
}

fn group_map(grouped: Vec<(String, Vec<Value>)>) -> Value {
    map(grouped
        .iter()
        .map(|(k, v)| (k.as_str(), Value::List(Arc::new(v.clone())))))
}

/// The cookies named `name` in a cookies map, exactly (cookie names are case-sensitive).
fn named(function: &str, args: &Args<'_, '_>) -> Result<(String, Vec<Value>), cel::ExecutionError> {
    let name = string_of(function, &*args[1])?;
    let list = match to_value(&*args[0])? {
        Value::Map(m) => match m.map.get(&Key::String(Arc::new(name.clone()))) {
            Some(Value::List(l)) => l.as_ref().clone(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    Ok((name, list))
}

/// `@tp_has_cookie(cookies, name)`.
pub fn has_cookie<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let (_, list) = named("hasReqCookie", &args)?;
    Ok(cel::common::value::CowVal::owned(CelBool::from(
        !list.is_empty(),
    )))
}

/// `@tp_first_cookie(req.cookies, name)`: `getReqCookie`, the first cookie of that name.
pub fn first_cookie<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let (name, list) = named("getReqCookie", &args)?;
    match list.into_iter().next() {
        Some(c) => from_value(c),
        None => Err(absent("getReqCookie", "hasReqCookie", &name, "request")),
    }
}

/// `@tp_longest_path_cookie(res.cookies, name)`: `getResCookie`, of the cookies of that name
/// the one with the longest `path` (the first of those).
pub fn longest_path_cookie<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let (name, list) = named("getResCookie", &args)?;
    let path_len = |c: &Value| match c {
        Value::Map(m) => match m.map.get(&Key::String(Arc::new("path".to_owned()))) {
            Some(Value::String(p)) => p.len(),
            _ => 0,
        },
        _ => 0,
    };
    let mut best: Option<Value> = None;
    for c in list {
        if best.as_ref().is_none_or(|b| path_len(&c) > path_len(b)) {
            best = Some(c);
        }
    }
    match best {
        Some(c) => from_value(c),
        None => Err(absent("getResCookie", "hasResCookie", &name, "response")),
    }
}

fn absent(function: &str, has: &str, name: &str, what: &str) -> cel::ExecutionError {
    cel::ExecutionError::function_error(
        function,
        format!("the {what} has no cookie named `{name}`; check first with {has}('{name}')"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
        match v {
            Value::Map(m) => m.map.get(&Key::String(Arc::new(key.to_owned()))).unwrap(),
            other => panic!("not a map: {other:?}"),
        }
    }

    fn first(v: &Value, name: &str) -> Value {
        match get(v, name) {
            Value::List(l) => l[0].clone(),
            other => panic!("not a list: {other:?}"),
        }
    }

    #[test]
    fn request_cookies_by_name_in_order() {
        let v = request_cookies(["a=1; b=\"two\"", "a=3;;=x; Session=s"].into_iter());
        assert_eq!(get(&first(&v, "b"), "value"), &Value::from("two"));
        let Value::List(a) = get(&v, "a") else {
            panic!()
        };
        assert_eq!(a.len(), 2);
        assert_eq!(get(&a[1], "value"), &Value::from("3"));
        assert_eq!(get(&first(&v, "Session"), "value"), &Value::from("s"));
        let Value::Map(m) = &v else { panic!() };
        assert!(!m.map.contains_key(&Key::String(Arc::new("session".into()))));
    }

    #[test]
    fn set_cookie_attributes() {
        let v = response_cookies(
            [
                "id=abc; Domain=.example.com; Path=/app; Max-Age=60; Secure; HttpOnly; SameSite=Lax; Priority=High",
                "gone=; Max-Age=0",
                "no-equals-sign",
            ]
            .into_iter(),
        );
        let id = first(&v, "id");
        assert_eq!(get(&id, "domain"), &Value::from("example.com"));
        assert_eq!(get(&id, "path"), &Value::from("/app"));
        assert_eq!(get(&id, "max_age"), &Value::Int(60));
        assert_eq!(get(&id, "secure"), &Value::Bool(true));
        assert_eq!(get(&id, "http_only"), &Value::Bool(true));
        assert_eq!(get(&id, "same_site"), &Value::from("Lax"));
        assert_eq!(
            get(&id, "unparsed_attributes"),
            &Value::List(Arc::new(vec![Value::from("Priority=High")]))
        );
        assert_eq!(get(&first(&v, "gone"), "max_age"), &Value::Int(-1));
        let Value::Map(m) = &v else { panic!() };
        assert_eq!(m.map.len(), 2);
    }
}
