//! Per-request evaluation of `${…}` in `headers`, `query_params` and `body`.
//!
//! ngrok evaluates these as CEL. Locally aigw understands the forms policies use for request
//! decoration: string literals, `secrets.get('vault', 'name')`, `req.id`, `req.method`,
//! `req.url.path`, `req.url.query`, `req.url.host`, `req.headers['name']` (optionally `[0]`),
//! `conn.client_ip`, `conn.client_port`, and `+` between them. Anything else evaluates to the empty
//! string (logged once per request at debug level).

use std::net::SocketAddr;

use axum::http::HeaderMap;

use crate::policy::interpolate::{Part, SecretRef, Template};
use crate::policy::secrets::SecretStore;

/// What a template may read about the request in flight.
#[derive(Debug, Clone, Copy)]
pub struct RequestVars<'a> {
    pub id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    pub client: SocketAddr,
}

pub fn render(t: &Template, vars: &RequestVars<'_>, secrets: &SecretStore) -> String {
    let mut out = String::new();
    for part in &t.parts {
        match part {
            Part::Lit(s) => out.push_str(s),
            Part::Expr(e) => {
                for term in split_plus(&e.source) {
                    out.push_str(&term_value(term.trim(), vars, secrets));
                }
            }
        }
    }
    out
}

/// Renders a string that may hold `${…}`; text that does not parse as a template is kept as is.
pub fn render_str(s: &str, vars: &RequestVars<'_>, secrets: &SecretStore) -> String {
    if !s.contains("${") {
        return s.to_string();
    }
    match Template::parse(s) {
        Ok(t) => render(&t, vars, secrets),
        Err(_) => s.to_string(),
    }
}

/// Splits at `+` outside quotes, brackets and parentheses.
fn split_plus(src: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, b) in crate::policy::interpolate::unquoted_bytes(src, 0) {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b'+' if depth == 0 => {
                parts.push(&src[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&src[start..]);
    parts
}

fn string_literal(t: &str) -> Option<String> {
    let q = t.chars().next()?;
    if (q != '\'' && q != '"') || t.len() < 2 || !t.ends_with(q) {
        return None;
    }
    let inner = &t[1..t.len() - 1];
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// `f(<args>)` → the string-literal arguments.
fn literal_args(args: &str) -> Option<Vec<String>> {
    let args = args.trim();
    if args.is_empty() {
        return Some(Vec::new());
    }
    split_commas(args)
        .into_iter()
        .map(|a| string_literal(a.trim()))
        .collect()
}

fn split_commas(src: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quote, mut start) = (None::<char>, 0);
    for (i, c) in src.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == ',' => {
                parts.push(&src[start..i]);
                start = i + 1;
            }
            None => {}
        }
    }
    parts.push(&src[start..]);
    parts
}

fn term_value(term: &str, vars: &RequestVars<'_>, secrets: &SecretStore) -> String {
    if let Some(s) = string_literal(term) {
        return s;
    }
    if term.parse::<f64>().is_ok() {
        return term.to_string();
    }
    if let Some(rest) = term
        .strip_prefix("secrets.get(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let secret = match literal_args(rest).as_deref() {
            Some([name]) => Some(SecretRef {
                vault: None,
                name: name.clone(),
                range: 0..0,
            }),
            Some([vault, name]) => Some(SecretRef {
                vault: Some(vault.clone()),
                name: name.clone(),
                range: 0..0,
            }),
            _ => None,
        };
        return secret
            .and_then(|s| secrets.get(&s).map(String::from))
            .unwrap_or_default();
    }
    match term {
        "req.id" => return vars.id.to_string(),
        "req.method" => return vars.method.to_string(),
        "req.url.path" => return vars.path.to_string(),
        "req.url.query" | "req.url.raw_query" => return vars.query.to_string(),
        "req.url.host" | "req.host" => return vars.host.to_string(),
        "conn.client_ip" => return vars.client.ip().to_string(),
        "conn.client_port" => return vars.client.port().to_string(),
        _ => {}
    }
    if let Some(rest) = term.strip_prefix("req.headers") {
        let (name, tail) = if let Some(r) = rest.strip_prefix('[') {
            match r.split_once(']') {
                Some((n, tail)) => (string_literal(n.trim()), tail.trim()),
                None => (None, ""),
            }
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find('[').unwrap_or(r.len());
            (Some(r[..end].to_string()), r[end..].trim())
        } else {
            (None, "")
        };
        if let Some(name) = name {
            let values: Vec<&str> = vars
                .headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            let index = tail
                .strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|i| i.trim().parse::<usize>().ok());
            return match index {
                Some(i) => values.get(i).map(|s| s.to_string()).unwrap_or_default(),
                None => values.join(","),
            };
        }
    }
    tracing::debug!(
        expression = term,
        "aigw cannot evaluate this `${{…}}` locally; using an empty string"
    );
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_common_forms() {
        let mut headers = HeaderMap::new();
        headers.insert("x-team", "blue".parse().unwrap());
        let vars = RequestVars {
            id: "req_1",
            method: "POST",
            path: "/v1/chat/completions",
            query: "",
            host: "127.0.0.1:8080",
            headers: &headers,
            client: "127.0.0.1:5555".parse().unwrap(),
        };
        let secrets = SecretStore::from_vars([(
            "AIGW_SECRET_OPENAI_API_KEY".to_string(),
            "sk-123".to_string(),
        )]);
        let t = Template::parse("Bearer ${secrets.get('openai', 'api-key')}").unwrap();
        assert_eq!(render(&t, &vars, &secrets), "Bearer sk-123");
        let t = Template::parse(
            "${req.id}/${conn.client_ip}/${req.headers['x-team'][0]}/${'a' + \"b\"}",
        )
        .unwrap();
        assert_eq!(render(&t, &vars, &secrets), "req_1/127.0.0.1/blue/ab");
        assert_eq!(render_str("${req.headers.x-team}", &vars, &secrets), "blue");
        assert_eq!(render_str("${unknown.thing}", &vars, &secrets), "");
        assert_eq!(render_str("plain", &vars, &secrets), "plain");
    }
}
