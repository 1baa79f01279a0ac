//! Connection timings: DNS, TCP connect and time to first byte, measured separately.
//!
//! DNS goes through `tokio::net::lookup_host` and TCP through `TcpStream::connect` on a
//! connection of its own, closed at once. The first byte is measured on the HTTP request that
//! follows (reqwest, a fresh connection): for `https` it therefore includes the TLS handshake,
//! which is not timed on its own (that would need a second TLS stack beside reqwest's).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::ProbeError;

/// Where a base URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// The host is an IP literal: no DNS lookup.
    pub is_ip: bool,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, ProbeError> {
        let bad = |reason: &str| ProbeError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let u = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let scheme = u.scheme().to_string();
        if scheme != "http" && scheme != "https" {
            return Err(bad("only http:// and https:// can be probed"));
        }
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        let port = u.port_or_known_default().ok_or_else(|| bad("no port"))?;
        Ok(Target {
            scheme,
            host,
            port,
            is_ip,
        })
    }

    pub fn is_tls(&self) -> bool {
        self.scheme == "https"
    }
}

/// Timings of one provider's checks, in milliseconds. `None`: the step did not run (or, for DNS,
/// the host is an IP address).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    pub dns_ms: Option<f64>,
    pub connect_ms: Option<f64>,
    /// Time to the response headers of the first request, on a fresh connection.
    pub first_byte_ms: Option<f64>,
    /// `first_byte_ms` includes the TLS handshake (https).
    pub first_byte_includes_tls: bool,
}

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Resolves `host:port`, timed.
pub async fn dns(
    target: &Target,
    timeout: Duration,
) -> Result<(Vec<SocketAddr>, Duration), ProbeError> {
    let start = Instant::now();
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(timeout, lookup).await {
        Err(_) => {
            return Err(ProbeError::Dns {
                host: target.host.clone(),
                reason: format!(
                    "no answer within {}",
                    crate::policy::duration::format(timeout)
                ),
            });
        }
        Ok(Err(e)) => {
            return Err(ProbeError::Dns {
                host: target.host.clone(),
                reason: e.to_string(),
            });
        }
        Ok(Ok(a)) => a.collect(),
    };
    if addrs.is_empty() {
        return Err(ProbeError::Dns {
            host: target.host.clone(),
            reason: "no addresses".into(),
        });
    }
    Ok((addrs, start.elapsed()))
}

/// Opens (and closes) a TCP connection to the first address that accepts, timed.
pub async fn connect(
    target: &Target,
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<(SocketAddr, Duration), ProbeError> {
    let mut last = None;
    for addr in addrs {
        let start = Instant::now();
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let took = start.elapsed();
                drop(stream);
                return Ok((*addr, took));
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Some(ProbeError::Refused {
                    addr: display_addr(target, addr),
                });
            }
            Ok(Err(e)) => {
                last = Some(ProbeError::Connect {
                    addr: display_addr(target, addr),
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                last = Some(ProbeError::Timeout {
                    url: format!("{}://{}", target.scheme, display_addr(target, addr)),
                    after: crate::policy::duration::format(timeout),
                })
            }
        }
    }
    Err(last.unwrap_or(ProbeError::Connect {
        addr: format!("{}:{}", target.host, target.port),
        reason: "no address".into(),
    }))
}

/// The address tried, as `127.0.0.1:11434` (the URL beside it in messages names the host).
fn display_addr(_target: &Target, addr: &SocketAddr) -> String {
    addr.to_string()
}

/// DNS then TCP for a base URL, filling `timings`.
pub async fn dns_and_connect(
    target: &Target,
    timeout: Duration,
    timings: &mut Timings,
) -> Result<SocketAddr, ProbeError> {
    let (addrs, took) = dns(target, timeout).await?;
    if !target.is_ip {
        timings.dns_ms = Some(ms(took));
    }
    let (addr, took) = connect(target, &addrs, timeout).await?;
    timings.connect_ms = Some(ms(took));
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("http://localhost:11434").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.is_ip),
            ("localhost", 11434, false)
        );
        let t = Target::parse("https://api.openai.com/v1").unwrap();
        assert_eq!((t.port, t.is_tls()), (443, true));
        let t = Target::parse("http://127.0.0.1:9/x").unwrap();
        assert!(t.is_ip);
        assert_eq!(Target::parse("ftp://x").unwrap_err().kind(), "bad_url");
    }

    #[tokio::test]
    async fn refused_port_is_reported_as_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let t = Target::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let mut timings = Timings::default();
        let e = dns_and_connect(&t, Duration::from_secs(2), &mut timings)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "refused", "{e}");
        assert_eq!(timings.dns_ms, None);
    }
}
