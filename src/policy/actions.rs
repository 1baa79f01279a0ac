//! The traffic-policy actions aigw knows by name, with the phases each may run in.
//! Only `ai-gateway` is modelled in depth; the others are validated by name and phase.

use super::model::PhaseKind::{self, *};

pub struct ActionSpec {
    pub name: &'static str,
    pub phases: &'static [PhaseKind],
    /// Ends traffic-policy processing (ngrok's terminating actions).
    pub terminating: bool,
}

const REQ: &[PhaseKind] = &[OnHttpRequest];
const RES: &[PhaseKind] = &[OnHttpResponse];
const REQ_RES: &[PhaseKind] = &[OnHttpRequest, OnHttpResponse];
const TCP_REQ: &[PhaseKind] = &[OnTcpConnect, OnHttpRequest];
const ALL_BUT_SSE: &[PhaseKind] = &[OnTcpConnect, OnHttpRequest, OnHttpResponse];

const fn spec(name: &'static str, phases: &'static [PhaseKind], terminating: bool) -> ActionSpec {
    ActionSpec {
        name,
        phases,
        terminating,
    }
}

pub const ACTIONS: &[ActionSpec] = &[
    spec("add-headers", REQ_RES, false),
    spec("remove-headers", REQ_RES, false),
    spec("set-vars", ALL_BUT_SSE, false),
    spec("custom-response", REQ_RES, true),
    spec("deny", TCP_REQ, true),
    spec("close-connection", TCP_REQ, true),
    spec("redirect", REQ, false),
    spec("url-rewrite", REQ, false),
    spec("rate-limit", REQ, false),
    spec("restrict-ips", ALL_BUT_SSE, false),
    spec("basic-auth", REQ, false),
    spec("jwt-validation", REQ, false),
    spec("oauth", REQ, false),
    spec("openid-connect", REQ, false),
    spec("oidc", REQ, false),
    spec("saml", REQ, false),
    spec("verify-webhook", REQ, false),
    spec("compress-response", REQ_RES, false),
    spec("log", ALL_BUT_SSE, false),
    spec("forward-internal", TCP_REQ, true),
    spec("http-request", REQ_RES, false),
    spec("circuit-breaker", REQ, false),
    spec("request-body-find-replace", REQ, false),
    spec("response-body-find-replace", RES, false),
    spec("sse-find-replace", &[OnEventStreamMessage], false),
    spec("owasp-crs-request", REQ, false),
    spec("owasp-crs-response", RES, false),
    spec("terminate-tls", &[OnTcpConnect], false),
    spec("ai-gateway", REQ, false),
];

pub fn lookup(name: &str) -> Option<&'static ActionSpec> {
    ACTIONS.iter().find(|a| a.name == name)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    ACTIONS.iter().map(|a| a.name)
}
