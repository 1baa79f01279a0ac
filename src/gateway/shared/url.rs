//! `--state URL`: where replicas share what they learn (Redis).

use std::fmt;

use crate::routing::upstream::percent_encode;

/// A parsed `--state` value: `redis://[:PASSWORD@]HOST:PORT[/DB]` or `rediss://…` (TLS).
#[derive(Clone, PartialEq, Eq)]
pub struct StateUrl {
    /// The URL as given, password included: what the Redis client connects with.
    url: String,
    tls: bool,
    host: String,
    port: u16,
    db: i64,
}

/// Why a `--state` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateUrlError {
    #[error("`{0}` is not a Redis URL: use redis://HOST:PORT[/DB] or rediss://HOST:PORT[/DB]")]
    Scheme(String),
    #[error("`{0}` names no host: use redis://HOST:PORT[/DB]")]
    Host(String),
    #[error("`{0}`: the port must be a number from 1 to 65535")]
    Port(String),
    #[error("`{0}`: the database must be a number (redis://HOST:PORT/0)")]
    Db(String),
}

impl StateUrl {
    /// Parses `text`; a password from `AIGW_STATE_PASSWORD` (`password`) is used when the URL
    /// carries none, so the URL itself can sit in a manifest.
    pub fn parse(text: &str, password: Option<&str>) -> Result<StateUrl, StateUrlError> {
        let shown = redact(text);
        let (tls, rest) = if let Some(r) = text.strip_prefix("rediss://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("redis://") {
            (false, r)
        } else {
            return Err(StateUrlError::Scheme(shown));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (auth, hostport) = match authority.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            // An IPv6 literal without a port: `[::1]`.
            Some((h, p)) if !p.ends_with(']') => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| StateUrlError::Port(shown.clone()))?,
            ),
            _ => (hostport, 6379),
        };
        if host.is_empty() {
            return Err(StateUrlError::Host(shown));
        }
        let db = match path.trim_end_matches('/') {
            "" => 0,
            d => d.parse().map_err(|_| StateUrlError::Db(shown.clone()))?,
        };
        let url = match (auth, password.filter(|p| !p.is_empty())) {
            (None, Some(p)) => {
                let scheme = if tls { "rediss" } else { "redis" };
                format!("{scheme}://:{}@{hostport}/{db}", percent_encode(p))
            }
            _ => text.to_string(),
        };
        Ok(StateUrl {
            url,
            tls,
            host: host.to_string(),
            port,
            db,
        })
    }

    /// What the client connects with (may hold the password: never print it).
    pub fn connect_url(&self) -> &str {
        &self.url
    }

    pub fn tls(&self) -> bool {
        self.tls
    }
}

/// Printed without the password: `redis://127.0.0.1:6379/0`.
impl fmt::Display for StateUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        write!(f, "{scheme}://{}:{}/{}", self.host, self.port, self.db)
    }
}

impl fmt::Debug for StateUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `text` with any `user:password@` replaced, for error messages.
fn redact(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}***@{}", &text[..s + 3], &text[a + 1..]),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_databases_and_tls() {
        let u = StateUrl::parse("redis://127.0.0.1:6380/2", None).unwrap();
        assert_eq!(u.to_string(), "redis://127.0.0.1:6380/2");
        assert!(!u.tls());
        let u = StateUrl::parse("rediss://cache.internal", None).unwrap();
        assert_eq!(u.to_string(), "rediss://cache.internal:6379/0");
        assert!(u.tls());
    }

    #[test]
    fn passwords_are_used_but_never_shown() {
        let u = StateUrl::parse("redis://:s3cret@h:1/0", None).unwrap();
        assert_eq!(u.connect_url(), "redis://:s3cret@h:1/0");
        assert!(!format!("{u} {u:?}").contains("s3cret"));
        let u = StateUrl::parse("redis://h:1", Some("p@ss word")).unwrap();
        assert_eq!(u.connect_url(), "redis://:p%40ss%20word@h:1/0");
        // A password in the URL wins over the environment's.
        let u = StateUrl::parse("redis://:a@h:1", Some("b")).unwrap();
        assert_eq!(u.connect_url(), "redis://:a@h:1");
    }

    #[test]
    fn bad_values_say_what_to_write() {
        let e = StateUrl::parse("http://h:1", None).unwrap_err();
        assert!(e.to_string().contains("redis://HOST:PORT"), "{e}");
        let e = StateUrl::parse("redis://:pw@h:99999", None).unwrap_err();
        assert_eq!(e, StateUrlError::Port("redis://***@h:99999".into()));
        assert!(StateUrl::parse("redis://h:1/x", None).is_err());
        assert!(StateUrl::parse("redis://:1", None).is_err());
    }
}
