//! What the evaluator sees of a request and a response: plain strings, no HTTP types, so that
//! `serve`, `explain` and `aigw test` can all build one.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use cel::objects::Value;

use super::cel::map;

/// A request as the policy sees it.
#[derive(Debug, Clone)]
pub struct RequestView {
    /// aigw's request id (`req.id`; the `X-Request-Id` of the answer).
    pub id: String,
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The `Host` header (or `:authority`), with its port if any.
    pub host: String,
    /// With the leading `/`.
    pub path: String,
    /// Without the `?`.
    pub query: String,
    /// Names lower-cased, in arrival order; a repeated header appears once per value.
    pub headers: Vec<(String, String)>,
    pub client: SocketAddr,
    /// The address the request came in on (`endpoint.*`, `conn.server_*`).
    pub server: Option<SocketAddr>,
    /// e.g. `HTTP/1.1`.
    pub version: String,
}

impl RequestView {
    /// A request with the given method and path from `client`, no headers.
    pub fn new(method: &str, path_and_query: &str, client: SocketAddr) -> RequestView {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        RequestView {
            id: String::new(),
            method: method.to_owned(),
            scheme: "http".to_owned(),
            host: String::new(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers: Vec::new(),
            client,
            server: None,
            version: "HTTP/1.1".to_owned(),
        }
    }

    /// Adds a header (the name is lower-cased).
    pub fn header(mut self, name: &str, value: &str) -> RequestView {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// The values of a header, ASCII case-insensitively.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Host` header, or the address the request came in on.
    fn authority(&self) -> Cow<'_, str> {
        if self.host.is_empty() {
            Cow::Owned(self.server.map(|s| s.to_string()).unwrap_or_default())
        } else {
            Cow::Borrowed(&self.host)
        }
    }

    /// The path and the query (`req.url.uri`).
    pub(crate) fn uri(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    /// The whole URL (`req.url.raw`): scheme, authority, path and query.
    pub(crate) fn raw_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority(), self.uri())
    }

    /// Points the request at `url` (a whole URL, or a path with its query); the authority
    /// stays. Returns the new path and query.
    pub(crate) fn set_url(&mut self, url: &str) -> String {
        let rest = match url.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => url,
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        self.path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        self.query = query.to_owned();
        self.uri()
    }

    /// `req.host`: the authority without its port.
    pub(crate) fn host_only(&self) -> Cow<'_, str> {
        match self.authority() {
            Cow::Borrowed(a) => Cow::Borrowed(without_port(a)),
            Cow::Owned(a) => Cow::Owned(without_port(&a).to_owned()),
        }
    }

    /// `req` as a CEL value.
    pub fn to_value(&self) -> Value {
        let authority = self.authority();
        let host_only = self.host_only();
        let uri = self.uri();
        let raw = self.raw_url();
        let (authority, host_only) = (&*authority, &*host_only);
        let url = map([
            ("scheme", Value::from(self.scheme.as_str())),
            ("host", Value::from(host_only)),
            ("authority", Value::from(authority)),
            ("path", Value::from(self.path.as_str())),
            ("raw_path", Value::from(self.path.as_str())),
            ("query", Value::from(self.query.as_str())),
            ("uri", Value::from(uri.as_str())),
            ("raw", Value::from(raw.as_str())),
            ("query_params", query_params(&self.query)),
        ]);
        let user_agent = self.header_values("user-agent").next().unwrap_or("");
        let content_type = self.header_values("content-type").next().unwrap_or("");
        let mut entries = vec![
            ("id", Value::from(self.id.as_str())),
            ("method", Value::from(self.method.as_str())),
            ("version", Value::from(self.version.as_str())),
            ("host", Value::from(host_only)),
            ("url", url),
            ("headers", multimap(&self.headers)),
            (
                "cookies",
                super::cookies::request_cookies(self.header_values("cookie")),
            ),
            ("user_agent", Value::from(user_agent)),
            ("content_type", Value::from(content_type)),
        ];
        if let Some(n) = self
            .header_values("content-length")
            .next()
            .and_then(|v| v.trim().parse::<i64>().ok())
        {
            entries.push(("content_length", Value::Int(n)));
        }
        map(entries)
    }

    /// `conn` as a CEL value.
    pub fn conn_value(&self) -> Value {
        let mut entries = vec![
            ("client_ip", Value::from(self.client.ip().to_string())),
            ("client_port", Value::Int(self.client.port().into())),
        ];
        if let Some(s) = self.server {
            entries.push(("server_ip", Value::from(s.ip().to_string())));
            entries.push(("server_port", Value::Int(s.port().into())));
        }
        map(entries)
    }

    /// `endpoint` as a CEL value: the local listener.
    pub fn endpoint_value(&self) -> Value {
        let Some(s) = self.server else {
            return map([("protocol", Value::from(self.scheme.as_str()))]);
        };
        let url = format!("{}://{}", self.scheme, s);
        map([
            ("url", Value::from(url.as_str())),
            ("addr", Value::from(s.to_string())),
            ("host", Value::from(s.ip().to_string())),
            ("port", Value::Int(s.port().into())),
            ("protocol", Value::from(self.scheme.as_str())),
        ])
    }
}

fn without_port(authority: &str) -> &str {
    authority
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map_or(authority, |(h, _)| h)
}

/// A response as the `on_http_response` phase sees it.
#[derive(Debug, Clone, Default)]
pub struct ResponseView {
    pub status: u16,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl ResponseView {
    /// `res` as a CEL value.
    pub fn to_value(&self) -> Value {
        let first = |n: &str| {
            self.headers
                .iter()
                .find(|(k, _)| k == n)
                .map_or("", |(_, v)| v.as_str())
        };
        let mut entries = vec![
            ("status_code", Value::Int(self.status.into())),
            ("headers", multimap(&self.headers)),
            (
                "cookies",
                super::cookies::response_cookies(
                    self.headers
                        .iter()
                        .filter(|(k, _)| k == "set-cookie")
                        .map(|(_, v)| v.as_str()),
                ),
            ),
            ("content_type", Value::from(first("content-type"))),
            ("location", Value::from(first("location"))),
        ];
        if let Ok(n) = first("content-length").trim().parse::<i64>() {
            entries.push(("content_length", Value::Int(n)));
        }
        map(entries)
    }
}

/// Name → list of values, names as given (already lower-cased).
fn multimap(pairs: &[(String, String)]) -> Value {
    let mut grouped: Vec<(&str, Vec<Value>)> = Vec::new();
    for (k, v) in pairs {
        match grouped.iter_mut().find(|(n, _)| n == k) {
            Some((_, vs)) => vs.push(Value::from(v.as_str())),
            None => grouped.push((k, vec![Value::from(v.as_str())])),
        }
    }
    map(grouped
        .into_iter()
        .map(|(k, vs)| (k, Value::List(Arc::new(vs)))))
}

fn query_params(query: &str) -> Value {
    multimap(&query_pairs(query))
}

/// `a=1&b=2&a=3` as decoded pairs, in order.
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

/// Percent-decoding with `+` as a space, lossy on invalid UTF-8.
pub(crate) fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        assert_eq!(unescape("a%20b+c%zz%4"), "a b c%zz%4");
    }
}
