//! Security properties of `aigw serve` (in-process; stand-ins on 127.0.0.1 only):
//! - the inbound token (`--auth-token`): required when set, in every accepted header form,
//!   never forwarded; an off-loopback address refuses to start without one;
//! - no SSRF: nothing a client sends (model strings, headers, body fields, query, path) can make
//!   aigw contact anything but the policy's providers: a second stand-in plays the attacker's
//!   target and must see zero requests;
//! - routing loops back to aigw itself are refused with 508 naming the provider.

#[path = "gateway_support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aigw::gateway::server::hops;
use aigw::gateway::{Gateway, GatewayOptions, ProviderView};
use aigw::policy::secrets::SecretStore;
use aigw::routing::upstream::UrlOrigin;
use serde_json::{Value, json};
use support::{client, start_policy};

fn policy(ids: &[&str]) -> String {
    let mut s = String::from(
        "on_http_request:\n  - type: ai-gateway\n    config:\n      only_allow_configured_providers: true\n      providers:\n",
    );
    for id in ids {
        s.push_str(&format!(
            "        - id: {id}\n          base_url: \"https://{id}.internal\"\n          models:\n            - id: made-up-chat\n"
        ));
    }
    s
}

fn opts() -> GatewayOptions {
    GatewayOptions {
        upstream_loopback_only: true,
        ..GatewayOptions::default()
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

// ---------------------------------------------------------------------------------------------
// Inbound token

#[tokio::test]
async fn the_inbound_token_is_required_in_every_dialect_and_never_forwarded() {
    let up = support::openai_standin("good", &["made-up-chat"]).await;
    let token = "tok-inbound-7f3a9c1e5b";
    let gw = start_policy(
        &policy(&["good"]),
        &[("good", up.url())],
        &[],
        GatewayOptions {
            auth_token: Some(token.into()),
            ..opts()
        },
    )
    .await;
    let c = client();
    // Missing, wrong (same length), prefix, longer, empty: 401 in the route's dialect.
    let wrong = [
        None,
        Some("tok-inbound-7f3a9c1e5c".to_string()),
        Some("tok-inbound".to_string()),
        Some(format!("{token}x")),
        Some(String::new()),
    ];
    for path in [
        "/v1/chat/completions",
        "/v1/messages",
        "/api/chat",
        "/v1/models",
        "/metrics",
        "/nope",
    ] {
        for w in &wrong {
            let mut rb = if path.starts_with("/v1/models") || path == "/metrics" || path == "/nope"
            {
                c.get(gw.url(path))
            } else {
                c.post(gw.url(path)).json(&chat("made-up-chat"))
            };
            if let Some(w) = w {
                rb = rb.bearer_auth(w).header("x-api-key", w.as_str());
            }
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} {w:?}");
            assert_eq!(r.headers()["ngrok-error-code"], "ERR_NGROK_27007");
            let v: Value = r.json().await.unwrap();
            let text = v.to_string();
            assert!(text.contains("--auth-token"), "{path}: {text}");
            assert!(!text.contains(token), "the token is never echoed");
        }
    }
    // `/healthz` stays open (load balancers).
    assert_eq!(
        c.get(gw.url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert!(
        up.requests().is_empty(),
        "no unauthenticated request went upstream"
    );
    // Right token in each accepted form; the client's own key still passes through.
    let forms: Vec<(&str, String)> = vec![
        ("authorization", format!("Bearer {token}")),
        ("authorization", format!("bearer {token}")),
        ("x-api-key", token.to_string()),
        ("x-aigw-token", token.to_string()),
    ];
    for (name, value) in &forms {
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .header(*name, value)
            .json(&chat("made-up-chat"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
    }
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-aigw-token", token)
        .bearer_auth("sk-client-own-key")
        .json(&chat("made-up-chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.requests();
    assert_eq!(seen.len(), forms.len() + 1);
    for req in &seen {
        for (name, value) in req.headers.iter() {
            let v = String::from_utf8_lossy(value.as_bytes());
            assert!(
                !v.contains(token),
                "the inbound token was forwarded in {name}: {v}"
            );
        }
    }
    assert_eq!(
        seen.last().unwrap().header("authorization"),
        Some("Bearer sk-client-own-key")
    );
}

#[test]
fn off_loopback_needs_a_token_and_loopback_does_not() {
    use aigw::commands::serve::check_bind;
    for addr in ["127.0.0.1:8080", "127.9.9.9:1", "[::1]:8080"] {
        assert!(check_bind(&addr.parse().unwrap(), None).is_ok(), "{addr}");
    }
    for addr in ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:8080"] {
        let e = check_bind(&addr.parse().unwrap(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--auth-token"), "{e}");
        assert!(
            check_bind(&addr.parse().unwrap(), Some("")).is_err(),
            "{addr}: empty token"
        );
        assert!(
            check_bind(&addr.parse().unwrap(), Some("t")).is_ok(),
            "{addr}"
        );
    }
    // The real binary refuses to start (exit 2) before binding.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aigw"))
        .args(["serve", "--listen", "0.0.0.0:0", "--no-reload"])
        .env_remove("AIGW_AUTH_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--auth-token"),
        "{err}"
    );
}

#[test]
fn token_comparison_is_exact() {
    use aigw::gateway::token::ct_eq;
    assert!(ct_eq(b"", b""));
    assert!(ct_eq(b"same-token", b"same-token"));
    assert!(!ct_eq(b"same-token", b"same-tokeN"));
    assert!(!ct_eq(b"Same-token", b"same-token"));
    assert!(!ct_eq(b"same-token", b"same-token "));
    assert!(!ct_eq(b"same", b"same-token"));
    assert!(!ct_eq(b"", b"x"));
}

// ---------------------------------------------------------------------------------------------
// SSRF

#[tokio::test]
async fn client_data_never_chooses_the_upstream() {
    let good = support::openai_standin("good", &["made-up-chat"]).await;
    let evil = support::openai_standin("evil", &["made-up-chat"]).await;
    let e = evil.url(); // http://127.0.0.1:PORT
    let eh = e.trim_start_matches("http://").to_string();
    let gw = start_policy(&policy(&["good"]), &[("good", good.url())], &[], opts()).await;
    let c = client();
    let models: Vec<String> = vec![
        e.clone(),
        format!("{e}/v1/chat/completions"),
        format!("good:{e}"),
        format!("good:made-up-chat@{eh}"),
        format!("a:b@{eh}"),
        format!("user:pass@{eh}/x"),
        eh.clone(),
        format!("//{eh}/x"),
        "good:../../../x".into(),
        "good:made-up-chat/../../admin".into(),
        "good%2F..%2F..".into(),
        "good:made-up-chat%2F..%2F..".into(),
        format!("made-up-chat\r\nHost: {eh}"),
        format!("good:made-up-chat\r\n\r\nGET http://{eh}/ HTTP/1.1"),
        "openai:gpt-4o".into(),
        "ollama:made-up-chat".into(),
        format!("{eh}:made-up-chat"),
        format!("http://{eh}:made-up-chat"),
        "evil:made-up-chat".into(),
        "made-up-chat".into(),
    ];
    let mut statuses = HashMap::new();
    for m in &models {
        for body in [
            chat(m),
            json!({"models": [m], "messages": [{"role": "user", "content": "hi"}]}),
            json!({"model": "made-up-chat", "models": [m, "made-up-chat"], "messages": []}),
        ] {
            let r = c
                .post(gw.url("/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            *statuses.entry(status).or_insert(0) += 1;
            if status != 200 {
                let v: Value = r.json().await.unwrap();
                assert!(v["error"]["message"].is_string(), "{m}: {v}");
            }
        }
    }
    // Headers and body fields that some proxies honour.
    let headers: &[(&str, String)] = &[
        ("host", eh.clone()),
        ("x-forwarded-host", eh.clone()),
        ("x-forwarded-proto", "http".into()),
        ("x-forwarded-for", "127.0.0.1".into()),
        ("forwarded", format!("for=127.0.0.1;host={eh};proto=http")),
        ("x-original-url", e.clone()),
        ("x-rewrite-url", e.clone()),
        ("x-aigw-base-url", e.clone()),
        ("x-aigw-provider", "evil".into()),
        ("x-aigw-upstream", e.clone()),
        ("x-aigw-via", format!("0000000000000000/{eh}")),
    ];
    for (name, value) in headers {
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .header(*name, value)
            .json(&chat("made-up-chat"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
    }
    for extra in [
        json!({"base_url": e}),
        json!({"api_base": e}),
        json!({"provider": {"base_url": e}}),
        json!({"url": e, "endpoint": e}),
    ] {
        let mut body = chat("made-up-chat");
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Query strings and paths: the query follows the provider URL; odd paths are 404s.
    for path in [
        format!("/v1/chat/completions?base_url={e}"),
        format!("/v1/chat/completions?x=1&url=http%3A%2F%2F{eh}%2F"),
        "/v1/chat/completions/../../x".into(),
        "/v1/chat/completions%2F..%2F..%2Fx".into(),
        format!("/v1/models/{e}"),
        format!("/{e}"),
    ] {
        let r = c
            .post(gw.url(&path))
            .json(&chat("made-up-chat"))
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 200 || r.status() == 404 || r.status() == 405,
            "{path}: {}",
            r.status()
        );
    }
    // An absolute-form request target (as sent to a forward proxy).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let body = chat("made-up-chat").to_string();
        let req = format!(
            "POST {e}/v1/chat/completions HTTP/1.1\r\nHost: {eh}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 "), "{text}");
    }
    assert!(
        evil.requests().is_empty(),
        "the attacker's target was contacted: {:?}",
        evil.requests()
            .iter()
            .map(|r| (&r.path, r.model()))
            .collect::<Vec<_>>()
    );
    // Whatever reached the real upstream went to its configured path (an unknown model string
    // may pass through to a configured provider as an opaque model id: that is not a URL).
    let seen = good.requests();
    assert!(!seen.is_empty());
    for r in &seen {
        assert!(r.path == "/v1/chat/completions", "{}", r.path);
    }
    eprintln!(
        "SSRF probes: statuses {statuses:?}; good upstream {} hits, attacker 0",
        seen.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Routing loops

/// Starts a gateway on an already bound listener (so its own URL can be in its policy).
async fn start_on(
    listener: tokio::net::TcpListener,
    yaml: &str,
    base_urls: &[(&str, String)],
) -> Arc<Gateway> {
    let loaded = aigw::policy::load_str("policy.yaml", yaml);
    let (routing, _) = support::factory(base_urls, &[])
        .build(&loaded, HashMap::new())
        .unwrap();
    let gw = Gateway::new(routing, SecretStore::default(), opts());
    tokio::spawn(aigw::gateway::serve(
        listener,
        gw.clone(),
        std::future::pending(),
    ));
    gw
}

#[tokio::test]
async fn a_provider_pointing_back_at_aigw_is_a_508_naming_it() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let me = format!("http://{addr}");
    let gw = start_on(listener, &policy(&["myself"]), &[("myself", me.clone())]).await;
    let r = client()
        .post(format!("{me}/v1/chat/completions"))
        .json(&chat("made-up-chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("HTTP 508"), "{msg}");
    assert!(msg.contains("Loop detected"), "{msg}");
    assert!(msg.contains("provider `myself`"), "{msg}");
    // The looped request itself was counted as a 508.
    assert!(gw.metrics.render().contains("status=\"508\""));
    // The start-up check finds it.
    let providers = vec![
        view("myself", &format!("{me}/v1")),
        view("by-name", &format!("http://localhost:{}", addr.port())),
        view("elsewhere", "http://127.0.0.1:9/v1"),
    ];
    let found: Vec<String> = hops::self_pointing(&providers, addr)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(found, ["myself", "by-name"]);
}

fn view(id: &str, url: &str) -> ProviderView {
    ProviderView {
        id: id.into(),
        base_url: Some(url.into()),
        origin: UrlOrigin::AsConfigured,
        ollama: false,
        builtin: false,
        configured: true,
        formats: vec![],
        keys: 0,
        models: 0,
    }
}

#[tokio::test]
async fn two_gateways_pointing_at_each_other_stop_after_one_round() {
    let la = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (ua, ub) = (
        format!("http://{}", la.local_addr().unwrap()),
        format!("http://{}", lb.local_addr().unwrap()),
    );
    let a = start_on(la, &policy(&["to-b"]), &[("to-b", ub.clone())]).await;
    let b = start_on(lb, &policy(&["to-a"]), &[("to-a", ua.clone())]).await;
    let r = client()
        .post(format!("{ua}/v1/chat/completions"))
        .json(&chat("made-up-chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(text.contains("Loop detected"), "{text}");
    // A refused the request B sent back (A's own id, through A's provider `to-b`).
    assert!(a.metrics.render().contains("status=\"508\""));
    assert!(!b.metrics.render().contains("status=\"508\""));
}

#[tokio::test]
async fn inbound_hops_naming_this_instance_or_too_many_are_508_in_each_dialect() {
    let up = support::openai_standin("good", &["made-up-chat"]).await;
    let gw = start_policy(&policy(&["good"]), &[("good", up.url())], &[], opts()).await;
    let id = gw.gw.instance_id.clone();
    let many: Vec<String> = (0..hops::MAX_HOPS)
        .map(|i| format!("{i:016x}/p{i}"))
        .collect();
    for via in [format!("1111111111111111/x, {id}/loopy"), many.join(", ")] {
        for path in ["/v1/chat/completions", "/v1/messages", "/api/chat"] {
            let r = client()
                .post(gw.url(path))
                .header(hops::VIA, &via)
                .json(&chat("made-up-chat"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 508, "{path}");
            let v: Value = r.json().await.unwrap();
            let text = v.to_string();
            assert!(text.contains("Loop detected"), "{text}");
            if via.contains(&id) {
                assert!(text.contains("provider `loopy`"), "{text}");
            }
        }
    }
    // Fewer hops from other instances pass, and the upstream sees them plus this hop.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header(hops::VIA, "1111111111111111/x")
        .json(&chat("made-up-chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header(hops::VIA),
        Some(format!("1111111111111111/x, {id}/good").as_str())
    );
}

#[test]
fn serve_warns_when_a_provider_points_at_its_own_address() {
    use std::io::{BufRead, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, policy(&["myself"])).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aigw"))
        .args(["serve", "--no-reload", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--policy")
        .arg(&path)
        .arg("--base-url")
        .arg(format!("myself=http://127.0.0.1:{port}/v1"))
        .env_remove("AIGW_AUTH_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        // (The start-up health check's line about `myself` may come first.)
        let done = line.contains("508 Loop Detected");
        lines.push(line);
        if done || lines.len() > 50 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(text.contains("warning: provider `myself`"), "{text}");
    assert!(text.contains("508 Loop Detected"), "{text}");
}

#[tokio::test]
async fn ollama_listings_through_a_provider_pointing_back_are_cut_short() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let me = format!("http://{addr}");
    let yaml = "on_http_request:\n  - type: ai-gateway\n    config:\n      only_allow_configured_providers: true\n      providers:\n        - id: ollama\n          base_url: \"https://ollama.internal\"\n          models:\n            - id: made-up-chat\n";
    let gw = start_on(listener, yaml, &[("ollama", me.clone())]).await;
    assert!(gw.current().providers().iter().any(|p| p.ollama));
    for path in ["/api/tags", "/api/ps", "/api/version"] {
        let r = client().get(format!("{me}{path}")).send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        if path == "/api/version" {
            assert!(v["version"].is_string(), "{path}: {v}");
        } else {
            // No box answered (the only one is aigw itself): an error, not an empty list.
            assert!(
                v["error"]
                    .as_str()
                    .unwrap()
                    .contains("no Ollama box answers"),
                "{path}: {v}"
            );
        }
    }
    // Each listing called itself exactly once and that call was refused.
    let m = gw.metrics.render();
    let refused: u64 = m
        .lines()
        .filter(|l| l.starts_with("aigw_requests_total") && l.contains("status=\"508\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(refused, 3, "{m}");
}
