//! The whole traffic policy through `aigw serve`: the docs' guard recipes and each action,
//! with the real engine, a stand-in OpenAI provider on 127.0.0.1 and an HTTP client. Every
//! refused request is checked not to have reached the provider.

#[path = "gateway_support/mod.rs"]
mod support;

use aigw::gateway::GatewayOptions;
use serde_json::{Value, json};
use support::standin::{Fault, Kind, StandIn};
use support::{client, start_policy};

/// `rules` (YAML list items, indented by 2) under `on_http_request`, then `ai-gateway` to the
/// stand-in; `response` under `on_http_response` when not empty.
fn policy(rules: &str, ai_gateway_extra: &str, response: &str) -> String {
    let mut p = format!(
        r#"on_http_request:
{rules}
  - actions:
      - type: ai-gateway
        config:
          only_allow_configured_providers: true
{ai_gateway_extra}
          providers:
            - id: local
              base_url: "https://local.internal"
              models:
                - id: test-chat
"#
    );
    if !response.is_empty() {
        p.push_str("on_http_response:\n");
        p.push_str(response);
    }
    p
}

struct Setup {
    upstream: StandIn,
    gw: support::Started,
}

async fn setup(yaml: &str, secrets: &[(&str, &str)]) -> Setup {
    let upstream = StandIn::start(Kind::OpenAi)
        .await
        .with_models(&["test-chat"]);
    let gw = start_policy(
        yaml,
        &[("local", upstream.url())],
        secrets,
        GatewayOptions {
            upstream_loopback_only: true,
            ..GatewayOptions::default()
        },
    )
    .await;
    Setup { upstream, gw }
}

fn chat() -> Value {
    json!({"model": "test-chat", "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(s: &Setup, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = client()
        .post(s.gw.url("/v1/chat/completions"))
        .json(&chat());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

fn hits(s: &Setup) -> usize {
    s.upstream.hits("/v1/chat/completions")
}

const TOKEN_GUARD: &str = r#"  - actions:
      - type: set-vars
        config:
          vars:
            - keys: ["Bearer ${secrets.get('team', 'a')}", "Bearer ${secrets.get('team', 'b')}"]
  - expressions:
      - "!(getReqHeader('Authorization').exists(h, h in vars.keys))"
    actions:
      - type: custom-response
        config:
          status_code: 401
          body: '{"error": {"message": "unauthorized"}}'"#;

const TEAM: &[(&str, &str)] = &[
    ("AIGW_SECRET_TEAM_A", "tok-a-123"),
    ("AIGW_SECRET_TEAM_B", "tok-b-456"),
];

#[tokio::test]
async fn token_list_guard_refuses_without_a_listed_token() {
    let s = setup(&policy(TOKEN_GUARD, "", ""), TEAM).await;
    let r = post(&s, &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/json");
    let r = post(&s, &[("authorization", "Bearer wrong")]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(hits(&s), 0, "a refused request reached the provider");
    let r = post(&s, &[("authorization", "Bearer tok-b-456")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(hits(&s), 1);
}

#[tokio::test]
async fn probes_answer_for_the_process_outside_the_policy() {
    // A guard on every request must not turn Kubernetes' probes into 401s (restarts, no
    // traffic); everything else, `/metrics` included, stays behind it.
    let s = setup(&policy(TOKEN_GUARD, "", ""), TEAM).await;
    assert_eq!(s.gw.get("/healthz").await.status(), 200);
    assert_ne!(s.gw.get("/readyz").await.status(), 401);
    assert_eq!(s.gw.get("/metrics").await.status(), 401);
    assert_eq!(s.gw.get("/v1/models").await.status(), 401);
}

#[tokio::test]
async fn x_api_key_guard() {
    let rules = r#"  - expressions:
      - "getReqHeader('x-api-key') != [secrets.get('team', 'a')]"
    actions:
      - type: deny
        config:
          status_code: 401"#;
    let s = setup(&policy(rules, "", ""), TEAM).await;
    assert_eq!(post(&s, &[("x-api-key", "nope")]).await.status(), 401);
    assert_eq!(hits(&s), 0);
    assert_eq!(post(&s, &[("X-Api-Key", "tok-a-123")]).await.status(), 200);
}

#[tokio::test]
async fn session_cookie_guard() {
    let rules = r#"  - expressions:
      - "!hasReqCookie('session') || getReqCookie('session').value != secrets.get('team', 'a')"
    actions:
      - type: deny
        config:
          status_code: 401"#;
    let s = setup(&policy(rules, "", ""), TEAM).await;
    assert_eq!(post(&s, &[]).await.status(), 401);
    assert_eq!(post(&s, &[("cookie", "session=nope")]).await.status(), 401);
    // Cookie names are case-sensitive.
    assert_eq!(
        post(&s, &[("cookie", "SESSION=tok-a-123")]).await.status(),
        401
    );
    assert_eq!(hits(&s), 0);
    let r = post(&s, &[("cookie", "theme=dark; session=tok-a-123")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(hits(&s), 1);
}

#[tokio::test]
async fn ip_allow_list() {
    let deny_loopback = r#"  - actions:
      - type: restrict-ips
        config:
          allow: ["10.0.0.0/8", "192.168.0.0/16"]"#;
    let s = setup(&policy(deny_loopback, "", ""), &[]).await;
    let r = post(&s, &[]).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("127.0.0.1"));
    assert_eq!(hits(&s), 0);

    let allow_loopback = r#"  - actions:
      - type: restrict-ips
        config:
          allow: ["127.0.0.0/8"]"#;
    let s = setup(&policy(allow_loopback, "", ""), &[]).await;
    assert_eq!(post(&s, &[]).await.status(), 200);
}

#[tokio::test]
async fn rate_limit_per_key_answers_429_with_retry_after() {
    let rules = r#"  - actions:
      - type: rate-limit
        config:
          name: per-key
          algorithm: sliding_window
          capacity: 1
          rate: 60s
          bucket_key: ["getReqHeader('authorization')"]"#;
    let s = setup(&policy(rules, "", ""), &[]).await;
    assert_eq!(
        post(&s, &[("authorization", "Bearer one")]).await.status(),
        200
    );
    let r = post(&s, &[("authorization", "Bearer one")]).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=120).contains(&retry), "retry-after {retry}");
    // Another key has its own bucket.
    assert_eq!(
        post(&s, &[("authorization", "Bearer two")]).await.status(),
        200
    );
    assert_eq!(hits(&s), 2);
}

#[tokio::test]
async fn basic_auth() {
    let rules = r#"  - actions:
      - type: basic-auth
        config:
          realm: team
          credentials: ["alice:${secrets.get('team', 'a')}"]"#;
    let s = setup(&policy(rules, "", ""), TEAM).await;
    let r = post(&s, &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"team\"");
    // alice:tok-a-123
    let good = "Basic YWxpY2U6dG9rLWEtMTIz";
    assert_eq!(post(&s, &[("authorization", good)]).await.status(), 200);
    assert_eq!(hits(&s), 1);
}

#[tokio::test]
async fn an_expression_that_fails_refuses_the_request() {
    // No `x-team` header: indexing `[0]` fails, and the guard must not be skipped.
    let rules = r#"  - expressions: ["req.headers['x-team'][0] != 'red'"]
    actions:
      - type: custom-response
        config: {status_code: 403, body: "red team only"}"#;
    let s = setup(&policy(rules, "", ""), &[]).await;
    let r = post(&s, &[]).await;
    assert_eq!(r.status(), 500);
    let body = r.text().await.unwrap();
    assert!(body.contains("req.headers['x-team'][0]"), "{body}");
    assert_eq!(hits(&s), 0);
    assert_eq!(post(&s, &[("x-team", "blue")]).await.status(), 403);
    assert_eq!(post(&s, &[("x-team", "red")]).await.status(), 200);
}

#[tokio::test]
async fn ai_gateway_decorations_read_the_policy_vars_and_fail_closed() {
    let rules = r#"  - actions:
      - type: set-vars
        config:
          vars:
            - tier: "${hasReqHeader('x-vip') ? 'gold' : 'standard'}""#;
    let extra = r#"          headers:
            x-tier: "${vars.tier}"
            x-seen-id: "${req.id}"
            x-user: "${req.headers['x-user'][0]}"
          query_params:
            client: "${conn.client_ip}"
          body:
            user: "${vars.tier}-${req.method}"
            tags: ["${vars.tier}", 7]"#;
    let s = setup(&policy(rules, extra, ""), &[]).await;
    let r = post(
        &s,
        &[
            ("x-user", "ann"),
            ("x-vip", "1"),
            ("x-request-id", "client-7"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "client-7");
    let seen = &s.upstream.requests()[0];
    assert_eq!(seen.header("x-tier"), Some("gold"));
    assert_eq!(seen.header("x-seen-id"), Some("client-7"));
    assert_eq!(seen.header("x-user"), Some("ann"));
    assert_eq!(seen.query.as_deref(), Some("client=127.0.0.1"));
    let json = seen.json.as_ref().unwrap();
    assert_eq!(json["user"], "gold-POST");
    assert_eq!(json["tags"], json!(["gold", 7]));

    // aigw's own id, the same in the policy, upstream and the answer.
    let r = post(&s, &[("x-user", "bob")]).await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let seen = &s.upstream.requests()[1];
    assert_eq!(seen.header("x-tier"), Some("standard"));
    assert_eq!(seen.header("x-seen-id"), Some(id.as_str()));

    // A `${…}` that cannot be evaluated refuses the request, naming it.
    let r = post(&s, &[]).await;
    assert_eq!(r.status(), 500);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("ERR_NGROK_2254") && body.contains("req.headers['x-user'][0]"),
        "{body}"
    );
    assert_eq!(hits(&s), 2);
}

#[tokio::test]
async fn url_rewrite_sends_a_prefixed_path_to_its_route() {
    // Clients configured with a `/openai` base URL reach the OpenAI routes; the rules after
    // the rewrite see the new path.
    let rules = r#"  - actions:
      - type: url-rewrite
        config:
          from: "^(https?://[^/]+)/openai/"
          to: "$1/"
  - expressions: ["!req.url.path.startsWith('/v1/')"]
    actions:
      - type: custom-response
        config: {status_code: 404, body: "not rewritten: ${req.url.path}"}"#;
    let s = setup(&policy(rules, "", ""), &[]).await;
    let r = client()
        .post(s.gw.url("/openai/v1/chat/completions"))
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(hits(&s), 1);
    // A URL the regex does not match goes on unchanged.
    assert_eq!(post(&s, &[]).await.status(), 200);
    let r = client().get(s.gw.url("/other")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "not rewritten: /other");
}

#[tokio::test]
async fn redirect_answers_with_the_new_location() {
    let rules = r#"  - actions:
      - type: redirect
        config:
          from: "/old/(.*)$"
          to: "/v1/$1"
          status_code: 301
          headers: {x-moved-by: "${req.method}"}"#;
    let s = setup(&policy(rules, "", ""), &[]).await;
    let no_follow = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_follow.get(s.gw.url("/old/models")).send().await.unwrap();
    assert_eq!(r.status(), 301);
    let location = r.headers()["location"].to_str().unwrap();
    assert_eq!(location, s.gw.url("/v1/models"));
    assert_eq!(r.headers()["x-moved-by"], "GET");
    // Followed, it lands on the model list; an unchanged URL is not redirected.
    let r = client().get(s.gw.url("/old/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(post(&s, &[]).await.status(), 200);
}

#[tokio::test]
async fn on_error_continue_exposes_the_error_to_the_next_action() {
    let extra = "          on_error: continue";
    let yaml = format!(
        "{}      - type: custom-response\n        config:\n          status_code: 503\n          body: \"fallback: ${{actions.ngrok.ai_gateway.error.code}}\"\n",
        policy("", extra, "")
    );
    let s = setup(&yaml, &[]).await;
    s.upstream.set_fault(Some(Fault::status(500)));
    let r = post(&s, &[]).await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.starts_with("fallback: ERR_NGROK_"), "{body}");
    // Healthy again: the upstream's answer, not the fallback.
    s.upstream.set_fault(None);
    assert_eq!(post(&s, &[]).await.status(), 200);
}

#[tokio::test]
async fn response_phase_headers() {
    let response = r#"  - expressions: ["res.status_code == 200"]
    actions:
      - type: add-headers
        config:
          headers:
            x-policy: "served ${req.method} ${res.status_code}"
      - type: remove-headers
        config:
          headers: [x-aigw-attempts]"#;
    let s = setup(&policy("", "", response), &[]).await;
    let r = post(&s, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-policy"], "served POST 200");
    assert!(r.headers().get("x-aigw-attempts").is_none());
}

#[tokio::test]
async fn a_custom_response_still_runs_the_response_phase() {
    let rules = r#"  - expressions: ["req.url.path == '/v1/models'"]
    actions:
      - type: custom-response
        config: {status_code: 418, body: teapot}"#;
    let response = r#"  - actions:
      - type: add-headers
        config:
          headers: {x-seen: "yes"}"#;
    let s = setup(&policy(rules, "", response), &[]).await;
    let r = client().get(s.gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 418);
    assert_eq!(r.headers()["x-seen"], "yes");
    assert_eq!(r.text().await.unwrap(), "teapot");
}

#[tokio::test]
async fn close_connection_drops_the_client() {
    let rules = r#"  - expressions: ["hasReqHeader('x-drop')"]
    actions:
      - type: close-connection"#;
    let s = setup(&policy(rules, "", ""), &[]).await;
    let e = client()
        .post(s.gw.url("/v1/chat/completions"))
        .header("x-drop", "1")
        .json(&chat())
        .send()
        .await;
    assert!(e.is_err(), "expected the connection to close, got {e:?}");
    assert_eq!(hits(&s), 0);
    assert_eq!(post(&s, &[]).await.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// jwt-validation

use support::jwt_keys::{JwksServer, TestKey, jwks, now};

/// The BYOK guide's JWT guard (issuer, audience, `Authorization: Bearer`, RS256, a JWKS URL),
/// then a header naming the token's subject, as ngrok's examples key rate limits by it.
fn jwt_guard(keys_source: &str, algorithms: &str) -> String {
    format!(
        r#"  - actions:
      - type: jwt-validation
        config:
          issuer:
            allow_list:
              - value: https://idp.example/
          audience:
            allow_list:
              - value: your-ai-gateway
          http:
            tokens:
              - type: access_token
                method: header
                name: Authorization
                prefix: "Bearer "
          jws:
            allowed_algorithms: [{algorithms}]
            keys:
              sources:
{keys_source}
      - type: add-headers
        config:
          headers:
            x-user: "${{actions.ngrok.jwt_validation.tokens[0].payload.sub}}""#
    )
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": "https://idp.example/", "aud": "your-ai-gateway", "sub": "team-a",
                       "iat": now(), "exp": now() + 600});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c
}

async fn bearer(s: &Setup, token: &str) -> reqwest::Response {
    post(s, &[("authorization", &format!("Bearer {token}"))]).await
}

#[tokio::test]
async fn jwt_guard_checks_tokens_against_keys_fetched_from_a_url() {
    let key = TestKey::rs256("k1");
    let server = JwksServer::start(jwks(&[&key])).await;
    let source = format!(
        "                additional_jkus:\n                  - {}",
        server.url
    );
    let s = setup(&policy(&jwt_guard(&source, "RS256"), "", ""), &[]).await;
    let r = post(&s, &[]).await;
    assert_eq!(r.status(), 401);
    // Fetched once before the first request was served.
    assert_eq!(server.fetches(), 1);
    assert_eq!(
        support::header(&r, "www-authenticate"),
        "Bearer error=\"invalid_token\""
    );
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("no `Authorization` header")
    );
    for (token, why) in [
        ("not-a-jwt".to_string(), "not a JWT"),
        (key.sign(&claims(json!({"exp": now() - 5}))), "expired"),
        (
            key.sign(&claims(json!({"aud": "someone-else"}))),
            "audience",
        ),
        (
            key.sign(&claims(json!({"iss": "https://idp.example"}))),
            "issuer",
        ),
        (TestKey::rs256("k1").sign(&claims(json!({}))), "signature"),
        (TestKey::es256("k1").sign(&claims(json!({}))), "ES256"),
    ] {
        let r = bearer(&s, &token).await;
        assert_eq!(r.status(), 401, "{why}");
        let body = r.text().await.unwrap();
        assert!(body.contains(why), "{why}: {body}");
    }
    assert_eq!(hits(&s), 0, "a refused token reached the provider");

    let r = bearer(&s, &key.sign(&claims(json!({})))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.upstream.requests()[0].header("x-user"), Some("team-a"));

    // The identity provider rotates its key: a token naming the new kid makes aigw fetch the
    // set again (in the background), and the token passes once it is there.
    let rotated = TestKey::rs256("k2");
    server.set(jwks(&[&rotated]));
    let token = rotated.sign(&claims(json!({"sub": "team-b"})));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = bearer(&s, &token).await;
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 401);
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated key set was never fetched"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(server.fetches(), 2);
    assert_eq!(hits(&s), 2);
}

#[tokio::test]
async fn jwt_keys_can_come_from_a_file_or_inline() {
    let (a, b) = (TestKey::es256("a"), TestKey::es256("b"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&[&a])).unwrap();
    let inline = format!("                jwks: {}", jwks(&[&b]));
    let from_file = format!(
        "                additional_jkus:\n                  - file://{}",
        file.display()
    );
    for (source, key, other) in [(from_file, &a, &b), (inline, &b, &a)] {
        let s = setup(&policy(&jwt_guard(&source, "ES256"), "", ""), &[]).await;
        assert_eq!(
            bearer(&s, &key.sign(&claims(json!({})))).await.status(),
            200
        );
        assert_eq!(
            bearer(&s, &other.sign(&claims(json!({})))).await.status(),
            401
        );
        assert_eq!(hits(&s), 1);
    }
}
