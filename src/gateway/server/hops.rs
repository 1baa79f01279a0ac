//! Routing-loop detection.
//!
//! Every request aigw sends upstream carries `x-aigw-via`: the hops it already went through
//! (as it arrived) plus one entry for this hop, `<instance>/<provider>`, where `<instance>` is a
//! random id drawn once per process. An inbound request whose `x-aigw-via` already names this
//! process came back to it through a provider whose `base_url` points at aigw itself: it is
//! refused with 508 Loop Detected, naming that provider. A chain of more than [`MAX_HOPS`]
//! distinct gateways is refused the same way (two aigw instances pointing at each other).
//!
//! At start-up, [`self_pointing`] finds providers whose `base_url` resolves to aigw's own listen
//! address, so `aigw serve` can warn before the first request loops.

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderValue};

use crate::gateway::ProviderView;
use crate::gateway::errors::GatewayError;

/// The header carrying the hops (inbound `x-aigw-*` headers are never forwarded as they are).
pub const VIA: &str = "x-aigw-via";
/// Most aigw hops a request may have gone through before this one.
pub const MAX_HOPS: usize = 8;
/// 508 Loop Detected (RFC 5842).
pub const LOOP_DETECTED: (&str, u16) = ("AIGW_LOOP_DETECTED", 508);

/// A fresh per-process instance id (16 hex digits).
pub fn new_instance_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The hops an inbound request went through: `(instance, provider)` pairs, oldest first.
pub fn hops(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(crate::gateway::names::X_AIGW_VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| match e.split_once('/') {
            Some((i, p)) => (i.to_string(), p.to_string()),
            None => (e.to_string(), String::new()),
        })
        .collect()
}

/// `Some(error)` when the request already went through this instance, or through too many.
pub fn check(headers: &HeaderMap, instance: &str) -> Option<GatewayError> {
    let hops = hops(headers);
    if let Some((_, provider)) = hops.iter().find(|(i, _)| i == instance) {
        let provider = if provider.is_empty() { "?" } else { provider };
        return Some(GatewayError::new(
            LOOP_DETECTED,
            format!(
                "Loop detected: this request already went through this aigw (instance {instance}) and came back \
                 through provider `{provider}`, whose base_url points at aigw itself; point provider `{provider}`'s \
                 base_url (or its --base-url mapping) at the real upstream"
            ),
        ));
    }
    if hops.len() >= MAX_HOPS {
        let path: Vec<&str> = hops.iter().map(|(_, p)| p.as_str()).collect();
        return Some(GatewayError::new(
            LOOP_DETECTED,
            format!(
                "Loop detected: this request already went through {} aigw gateways (most {MAX_HOPS}), through \
                 providers {}; check that these providers' base_url values do not point at each other's gateways",
                hops.len(),
                path.join(" → ")
            ),
        ));
    }
    None
}

/// Adds this hop to the outbound headers: the inbound hops, then `<instance>/<provider>`.
pub fn stamp(out: &mut HeaderMap, inbound: &HeaderMap, instance: &str, provider: &str) {
    let mut value = String::with_capacity(instance.len() + provider.len() + 1);
    for (i, p) in hops(inbound) {
        value.push_str(&i);
        if !p.is_empty() {
            value.push('/');
            value.push_str(&p);
        }
        value.push_str(", ");
    }
    value.push_str(instance);
    value.push('/');
    value.extend(provider.chars().map(|c| {
        if c.is_ascii_graphic() && c != ',' {
            c
        } else {
            '_'
        }
    }));
    if let Ok(v) = HeaderValue::try_from(value) {
        out.insert(crate::gateway::names::X_AIGW_VIA, v);
    }
}

/// Providers whose `base_url` resolves to `local` (aigw's own listen address): `(id, base_url)`.
pub async fn self_pointing(providers: &[ProviderView], local: SocketAddr) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in providers {
        let Some(url) = p.base_url.as_deref() else {
            continue;
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            continue;
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let default_port = if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        };
        let target = if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:{default_port}")
        } else {
            authority.to_string()
        };
        let Ok(Ok(addrs)) = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::net::lookup_host(target),
        )
        .await
        else {
            continue;
        };
        let hit = addrs.into_iter().any(|a| {
            a.port() == local.port()
                && (a.ip() == local.ip()
                    || local.ip().is_unspecified()
                    || (a.ip().is_loopback() && local.ip().is_loopback()))
        });
        if hit {
            out.push((p.id.clone(), url.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_then_check() {
        let mut inbound = HeaderMap::new();
        let mut out = HeaderMap::new();
        stamp(&mut out, &inbound, "aaaa", "local,proxy");
        assert_eq!(out[VIA], "aaaa/local_proxy");
        assert!(check(&out, "bbbb").is_none());
        let e = check(&out, "aaaa").unwrap();
        assert_eq!(e.status, 508);
        assert!(
            e.message.contains("provider `local_proxy`"),
            "{}",
            e.message
        );
        inbound.insert(VIA, HeaderValue::from_static("x1/p1, x2/p2"));
        stamp(&mut out, &inbound, "aaaa", "p3");
        assert_eq!(out[VIA], "x1/p1, x2/p2, aaaa/p3");
        let many: Vec<String> = (0..MAX_HOPS).map(|i| format!("i{i}/p{i}")).collect();
        inbound.insert(VIA, HeaderValue::from_str(&many.join(",")).unwrap());
        assert!(check(&inbound, "zzzz").unwrap().message.contains("8 aigw"));
    }
}
