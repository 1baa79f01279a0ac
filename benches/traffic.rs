//! Per-request cost of the traffic policy's rules: `cargo bench --bench traffic`.
//!
//! A 10-rule `on_http_request` guard (token list, header checks, IP ranges, a rate limit,
//! header edits) evaluated for a typical request that passes every guard and reaches
//! `ai-gateway`; the target is ≤ 3 µs per request.

use std::net::SocketAddr;
use std::time::Duration;

use aigw::policy::secrets::SecretStore;
use aigw::traffic::{InProcess, Ports, RequestView, Stop, compile};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

const POLICY: &str = r#"
on_http_request:
  - name: keys
    actions:
      - type: set-vars
        config:
          vars:
            - keys: ["Bearer ${secrets.get('team', 'a')}", "Bearer ${secrets.get('team', 'b')}"]
  - name: token
    expressions: ["!(getReqHeader('authorization').exists(h, h in vars.keys))"]
    actions:
      - type: custom-response
        config: {status_code: 401, body: unauthorized}
  - name: methods
    expressions: ["req.method != 'POST'"]
    actions:
      - type: deny
        config: {status_code: 405}
  - name: paths
    expressions: ["!req.url.path.startsWith('/v1/')"]
    actions:
      - type: deny
        config: {status_code: 404}
  - name: private-only
    expressions: ["!inCidrRanges(conn.client_ip, ['127.0.0.0/8', '10.0.0.0/8'])"]
    actions:
      - type: deny
  - name: no-debug
    expressions: ["hasReqHeader('x-debug')"]
    actions:
      - type: custom-response
        config: {status_code: 400, body: "no debug"}
  - name: json-only
    expressions: ["!req.content_type.startsWith('application/json')"]
    actions:
      - type: custom-response
        config: {status_code: 415, body: "json only"}
  - name: agent
    expressions: ["req.user_agent.contains('curl')"]
    actions:
      - type: deny
  - name: limit
    actions:
      - type: rate-limit
        config:
          name: per-key
          algorithm: sliding_window
          capacity: 2000000000
          rate: 60s
          bucket_key: ["getReqHeader('authorization')"]
  - name: route
    actions:
      - type: add-headers
        config:
          headers: {x-team: "${req.method}"}
      - type: ai-gateway
"#;

fn bench(c: &mut Criterion) {
    let loaded = aigw::policy::load_str("bench.yaml", POLICY);
    let secrets = SecretStore::from_vars([
        ("AIGW_SECRET_TEAM_A".to_owned(), "tok-a".to_owned()),
        ("AIGW_SECRET_TEAM_B".to_owned(), "tok-b".to_owned()),
    ]);
    let (program, diags) = compile(loaded.policy.as_ref().unwrap(), POLICY, &secrets);
    assert!(diags.is_empty(), "{diags:?}");
    let client: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let req = RequestView::new("POST", "/v1/chat/completions", client)
        .header("host", "127.0.0.1:8080")
        .header("authorization", "Bearer tok-b")
        .header("content-type", "application/json")
        .header("user-agent", "OpenAI/Python 1.60.0")
        .header("accept", "application/json");
    let rate = InProcess::default();
    let ports = Ports {
        rate: &rate,
        keys: &aigw::traffic::jwt::LocalKeys,
        now: Duration::from_secs(1_800_000_000),
    };
    let req = std::sync::Arc::new(req);
    let out = program.on_request(&req, ports);
    assert!(matches!(out.stop, Stop::AiGateway { .. }), "{:?}", out.stop);
    c.bench_function("traffic/10-rule guard, request passes", |b| {
        b.iter(|| black_box(program.on_request(black_box(&req), ports)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
