//! Secrets never leak: the real `aigw` binary serves a policy whose API keys and header values
//! come from `AIGW_SECRET_*` variables, with debug logging, while stand-in upstreams misbehave
//! (auth failures that echo the key back, 500s that echo it, resets, hangs, cut streams).
//! Every byte aigw writes (stdout, stderr, each response's headers and body, `/metrics`) and the
//! outputs of `explain`, `validate` and `probe` on the same policy are searched for the secrets.

#[path = "support/standin/mod.rs"]
mod standin;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use standin::{Fault, Kind, StandIn};

const KEY1: &str = "sk-LEAKCHECK-key-one-5e1f0c9a7d3b";
const KEY2: &str = "sk-LEAKCHECK-key-two-8b2d4e6f1a0c";
const HEADER_SECRET: &str = "hdr-LEAKCHECK-8c1d2e3f4a5b6c7d";
const CLIENT_KEY: &str = "sk-LEAKCHECK-client-3a9e7b5c1d0f";
const TOKEN: &str = "tok-LEAKCHECK-inbound-6d4c2b0a9e8f";

/// Every secret, and a distinctive middle part of each (a truncated echo must not leak most of
/// a key either).
fn needles() -> Vec<String> {
    let mut out = Vec::new();
    for s in [KEY1, KEY2, HEADER_SECRET, CLIENT_KEY, TOKEN] {
        out.push(s.to_string());
        out.push(s[6..s.len() - 4].to_string());
    }
    out
}

fn assert_clean(what: &str, text: &str) {
    for n in needles() {
        assert!(
            !text.contains(&n),
            "{what} leaks a secret ({n}):\n{}",
            &text[text.find(&n).unwrap().saturating_sub(300)..]
                .chars()
                .take(800)
                .collect::<String>()
        );
    }
}

const POLICY: &str = r#"on_http_request:
  - type: ai-gateway
    config:
      only_allow_configured_providers: true
      headers:
        X-Custom-Auth: ${secrets.get('vault', 'header')}
      providers:
        - id: keyed
          base_url: "https://keyed.internal"
          api_keys:
            - value: ${secrets.get('vault', 'key1')}
            - value: ${secrets.get('vault', 'key2')}
          models:
            - id: made-up-chat
        - id: passthru
          base_url: "https://passthru.internal"
          models:
            - id: made-up-chat
"#;

fn envs(cmd: &mut Command) -> &mut Command {
    cmd.env("AIGW_SECRET_VAULT_KEY1", KEY1)
        .env("AIGW_SECRET_VAULT_KEY2", KEY2)
        .env("AIGW_SECRET_VAULT_HEADER", HEADER_SECRET)
        .env("AIGW_LOG", "debug")
        .env("NO_COLOR", "1")
        .env_remove("AIGW_AUTH_TOKEN")
}

/// An upstream error whose message echoes `secret` (optionally after `pad` characters, so that a
/// 200-character truncation would cut through it).
fn echo(code: u16, secret: &str, pad: usize) -> Fault {
    let msg = format!(
        "{}Incorrect API key provided: {secret}. Header was {HEADER_SECRET}",
        "x".repeat(pad)
    );
    Fault::Status {
        code,
        body: Some(json!({"error": {"message": msg, "type": "invalid_request_error"}}).to_string()),
        retry_after: None,
    }
}

async fn run(cmd: Command) -> String {
    let mut cmd = cmd;
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aigw"))
}

fn wait_for_addr(stdout: &Path) -> String {
    for _ in 0..600 {
        let text = std::fs::read_to_string(stdout).unwrap_or_default();
        if let Some(rest) = text.split("serving on http://").nth(1) {
            return rest.split_whitespace().next().unwrap().to_string();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("aigw serve did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_responses_metrics_or_other_commands() {
    let keyed = StandIn::start(Kind::OpenAi)
        .await
        .with_label("keyed")
        .with_models(&["made-up-chat"]);
    let passthru = StandIn::start(Kind::OpenAi)
        .await
        .with_label("passthru")
        .with_models(&["made-up-chat"]);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = bin();
    envs(&mut cmd)
        .args([
            "serve",
            "--no-reload",
            "--listen",
            "127.0.0.1:0",
            "--first-byte-timeout",
            "2s",
        ])
        .arg("--policy")
        .arg(&policy)
        .arg("--base-url")
        .arg(format!("keyed={}", keyed.url()))
        .arg("--base-url")
        .arg(format!("passthru={}", passthru.url()))
        .env("AIGW_AUTH_TOKEN", TOKEN)
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()));
    let mut child = cmd.spawn().unwrap();
    let addr = {
        let p = out_path.clone();
        tokio::task::spawn_blocking(move || wait_for_addr(&p))
            .await
            .unwrap()
    };
    let url = |p: &str| format!("http://{addr}{p}");
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut captured = String::new();
    let chat = |stream: bool| json!({"model": "made-up-chat", "stream": stream, "messages": [{"role": "user", "content": "leak check"}]});
    // Each scenario: faults to queue on (keyed, passthru), then a request.
    let scenarios: Vec<(&str, Vec<Fault>, Vec<Fault>, bool)> = vec![
        (
            "401s echoing keys",
            vec![echo(401, KEY1, 0), echo(401, KEY2, 0)],
            vec![echo(401, CLIENT_KEY, 0)],
            false,
        ),
        (
            "echo cut by truncation",
            vec![echo(500, KEY1, 170), echo(403, KEY2, 185)],
            vec![echo(500, CLIENT_KEY, 180)],
            false,
        ),
        (
            "429 echo",
            vec![echo(429, KEY1, 0), echo(429, KEY2, 0)],
            vec![echo(429, CLIENT_KEY, 0)],
            true,
        ),
        (
            "resets and a hang",
            vec![Fault::ResetBeforeHeaders, Fault::ResetBeforeHeaders],
            vec![Fault::Hang],
            false,
        ),
        ("stream cut", vec![Fault::StreamCutAfter(2)], vec![], true),
        (
            "key2 echoed by key1's attempt",
            vec![echo(401, KEY2, 0), Fault::status(500)],
            vec![echo(502, KEY1, 0)],
            true,
        ),
        ("ok", vec![], vec![], false),
    ];
    for (name, kf, pf, stream) in scenarios {
        // A fault a scenario left unused (a transient one sent to the same pair again consumes
        // the next) must not leak into the next scenario.
        keyed.clear_faults();
        passthru.clear_faults();
        keyed.set_fault(None);
        for f in kf {
            keyed.push_fault(f);
        }
        for f in pf {
            passthru.push_fault(f);
        }
        let r = c
            .post(url("/v1/chat/completions"))
            .header("x-aigw-token", TOKEN)
            .bearer_auth(CLIENT_KEY)
            .json(&chat(stream))
            .send()
            .await
            .unwrap();
        captured.push_str(&format!("=== {name}: {}\n{:?}\n", r.status(), r.headers()));
        captured.push_str(
            &r.text()
                .await
                .unwrap_or_else(|e| format!("(body error: {e})")),
        );
        captured.push('\n');
    }
    // Other dialects, and the wrong token (which must not echo the right one).
    for path in ["/v1/messages", "/api/chat"] {
        keyed.push_fault(echo(401, KEY1, 0));
        keyed.push_fault(echo(401, KEY2, 0));
        passthru.push_fault(echo(401, CLIENT_KEY, 0));
        let r = c
            .post(url(path))
            .header("x-aigw-token", TOKEN)
            .header("x-api-key", CLIENT_KEY)
            .json(&chat(false))
            .send()
            .await
            .unwrap();
        let head = format!("=== {path}: {} {:?}\n", r.status(), r.headers());
        captured.push_str(&head);
        captured.push_str(&r.text().await.unwrap());
        captured.push('\n');
    }
    for (path, token) in [
        ("/v1/chat/completions", "tok-wrong"),
        ("/metrics", TOKEN),
        ("/v1/models", TOKEN),
        ("/healthz", TOKEN),
    ] {
        let r = c.get(url(path)).bearer_auth(token).send().await.unwrap();
        let head = format!("=== GET {path}: {} {:?}\n", r.status(), r.headers());
        captured.push_str(&head);
        captured.push_str(&r.text().await.unwrap());
        captured.push('\n');
    }
    // The upstreams did get the keys (the test would prove nothing otherwise).
    let seen: Vec<String> = keyed
        .requests()
        .iter()
        .chain(passthru.requests().iter())
        .map(|r| format!("{:?}", r.headers))
        .collect();
    let seen = seen.join("\n");
    for s in [KEY1, KEY2, HEADER_SECRET, CLIENT_KEY] {
        assert!(seen.contains(s), "the upstreams never received {s}");
    }
    // Graceful stop, so shutdown logging is captured too.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "aigw serve exited with {status}");
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(stderr.contains("DEBUG"), "debug logging was on:\n{stderr}");
    assert!(
        captured.contains("Incorrect API key provided"),
        "the echoes reached the client:\n{captured}"
    );
    assert_clean("serve stdout", &stdout);
    assert_clean("serve stderr", &stderr);
    assert_clean("responses and /metrics", &captured);

    keyed.clear_faults();
    passthru.clear_faults();
    // explain, validate and probe on the same policy, with the same secrets.
    keyed.set_fault(Some(echo(401, KEY1, 0)));
    passthru.set_fault(Some(echo(401, CLIENT_KEY, 0)));
    let base = |cmd: &mut Command| {
        cmd.arg("--policy")
            .arg(&policy)
            .arg("--base-url")
            .arg(format!("keyed={}", keyed.url()))
            .arg("--base-url")
            .arg(format!("passthru={}", passthru.url()));
    };
    let mut outputs = Vec::new();
    for args in [
        vec!["explain", "-m", "made-up-chat"],
        vec!["explain", "-m", "made-up-chat", "--format", "json"],
        vec!["probe"],
        vec!["probe", "--format", "json"],
    ] {
        let mut cmd = bin();
        envs(&mut cmd).args(&args);
        base(&mut cmd);
        outputs.push((args.join(" "), run(cmd).await));
    }
    for args in [vec!["validate"], vec!["validate", "--format", "json"]] {
        let mut cmd = bin();
        envs(&mut cmd).args(&args).arg(&policy);
        outputs.push((args.join(" "), run(cmd).await));
    }
    for (what, text) in &outputs {
        assert_clean(what, text);
    }
    let probe = &outputs[2].1;
    assert!(
        probe.contains("keyed"),
        "probe ran against the stand-ins:\n{probe}"
    );
    eprintln!(
        "leak check: {} bytes of serve output, {} bytes of responses, {} command outputs searched for {} needles",
        stdout.len() + stderr.len(),
        captured.len(),
        outputs.len(),
        needles().len()
    );
}
