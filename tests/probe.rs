//! `aigw probe` against stand-in providers on 127.0.0.1 (never anything else): the documented
//! shapes, the failure modes (refused, slow, 404, non-JSON), pre-warm requests, table and JSON
//! snapshots, and the transcripts in `commands/probe/`.
//!
//! The command runs in-process (`commands::probe::run_with`) with its output captured: the
//! binary in a shared target directory may be rebuilt by another checkout at any moment, and
//! in-process runs are faster.

#[path = "support/golden.rs"]
mod golden;
#[path = "support/standin/mod.rs"]
mod standin;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use serde_json::json;

use aigw::cli::{Cli, Command};
use aigw::commands::Exit;
use aigw::render::diagnostics::Style;
use standin::{Fault, Kind, StandIn};

/// A runtime that keeps stand-ins serving while the command runs on the test thread.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn start(rt: &tokio::runtime::Runtime, kind: Kind, models: &[&str]) -> StandIn {
    rt.block_on(async { StandIn::start(kind).await.with_models(models) })
}

/// A port nothing listens on: bind, read the port, drop the listener.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

#[derive(Clone)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Run {
    args: Vec<String>,
    stdout: String,
    stderr: String,
    exit: Exit,
}

/// Runs `aigw probe ARGS` in-process, without colour, with plain progress lines.
fn probe(args: &[&str]) -> Run {
    let argv: Vec<String> = ["aigw", "probe"]
        .iter()
        .map(|s| s.to_string())
        .chain(args.iter().map(|s| s.to_string()))
        .collect();
    let cli = Cli::try_parse_from(&argv).expect("arguments parse");
    let Command::Probe(probe_args) = cli.command else {
        panic!("not a probe command")
    };
    let mut out = Vec::new();
    let err_buf = Buf(Arc::new(Mutex::new(Vec::new())));
    let err: aigw::render::probe::SharedWriter = Arc::new(Mutex::new(err_buf.clone()));
    let style = Style {
        color: false,
        width: 100,
    };
    let exit = aigw::commands::probe::run_with(probe_args, &mut out, style, err, style, false);
    let stderr = String::from_utf8(err_buf.0.lock().unwrap().clone()).unwrap();
    Run {
        args: argv[1..].to_vec(),
        stdout: String::from_utf8(out).unwrap(),
        stderr,
        exit,
    }
}

/// Ports, times and temporary paths vary from run to run. The same rules serve the insta
/// snapshots (as filters) and the transcripts.
const SCRUB: &[(&str, &str)] = &[
    (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
    (r"\b\d+(\.\d+)? (ms|s)\b", "[TIME]"),
    (
        r#""(dns_ms|connect_ms|first_byte_ms|ms|load_ms)": [\d.]+"#,
        r#""$1": "[ms]""#,
    ),
    (r"/tmp/\.tmp[A-Za-z0-9]+", "[TMP]"),
];

fn scrub(text: &str) -> String {
    let mut s = text.to_string();
    for (pattern, with) in SCRUB {
        s = regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&s, *with)
            .into_owned();
    }
    s
}

fn policy(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("policy.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

const OLLAMA_POLICY: &str = r#"on_http_request:
  - type: ai-gateway
    config:
      providers:
        - id: "ollama"
          base_url: "https://ollama.internal"
          models:
            - id: "llama3.2"
            - id: "llama3.2:1b"
"#;

/// Probes [`OLLAMA_POLICY`] (written to a temporary directory) with these arguments.
fn probe_ollama_policy(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), OLLAMA_POLICY);
    let mut all = vec!["--policy", p.to_str().unwrap()];
    all.extend_from_slice(args);
    probe(&all)
}

/// Snapshots with the scrub rules as insta filters.
fn snapshot(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    for (pattern, with) in SCRUB {
        settings.add_filter(pattern, *with);
    }
    settings.set_prepend_module_to_snapshot(false);
    settings.set_snapshot_path("../snapshots/probe");
    settings.bind(|| insta::assert_snapshot!(name, text));
}

fn generate_requests(s: &StandIn) -> Vec<serde_json::Value> {
    s.requests()
        .into_iter()
        .filter(|r| r.path == "/api/generate")
        .map(|r| r.json.unwrap())
        .collect()
}

/// The seed guide's setup with one model pulled, one not, and one extra installed.
#[test]
fn ollama_diff_and_prewarm() {
    let rt = runtime();
    let ollama = start(&rt, Kind::Ollama, &["llama3.2:latest", "mistral:latest"]);
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), OLLAMA_POLICY);
    let base = format!("ollama={}", ollama.url());
    let run = probe(&["--policy", p.to_str().unwrap(), "--base-url", &base]);
    assert_eq!(run.exit, Exit::Failure, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("llama3.2:1b is in the policy but not installed"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("→ ollama pull llama3.2:1b, or use the installed one: `- id: \"llama3.2\"`"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("mistral:latest is installed but not in the policy")
    );
    assert!(run.stdout.contains("Ollama 0.12.6"));
    // One pre-warm, for the installed policy model only: model, keep_alive, no prompt.
    let warm = generate_requests(&ollama);
    assert_eq!(warm, vec![json!({"model": "llama3.2", "keep_alive": "5m"})]);
    assert!(
        run.stderr.contains("ollama: warming llama3.2 …"),
        "{}",
        run.stderr
    );
    snapshot("ollama_diff_and_prewarm", &run.stdout);
}

#[test]
fn all_checks_pass_with_custom_keep_alive() {
    let rt = runtime();
    let ollama = start(&rt, Kind::Ollama, &["llama3.2:latest", "qwen3:8b"]);
    let dir = tempfile::tempdir().unwrap();
    let p = policy(
        dir.path(),
        &format!(
            "on_http_request:\n  - type: ai-gateway\n    config:\n      providers:\n        - id: local\n          base_url: {}\n          models:\n            - id: Llama3.2\n            - id: qwen3:8b\n",
            ollama.url()
        ),
    );
    let run = probe(&[
        "--policy",
        p.to_str().unwrap(),
        "--keep-alive",
        "-1",
        "local",
    ]);
    assert_eq!(run.exit, Exit::Success, "{}", run.stdout);
    assert_eq!(
        generate_requests(&ollama),
        vec![
            json!({"model": "Llama3.2", "keep_alive": -1}),
            json!({"model": "qwen3:8b", "keep_alive": -1})
        ]
    );
    assert!(run.stdout.contains("all checks passed"), "{}", run.stdout);
    // After the warm-up both are loaded on the stand-in.
    let loaded = rt
        .block_on(
            aigw::providers::ollama::OllamaClient::new(&ollama.url(), Duration::from_secs(5)).ps(),
        )
        .unwrap();
    assert_eq!(loaded.len(), 2);
}

#[test]
fn no_warm_sends_no_generate() {
    let rt = runtime();
    let ollama = start(&rt, Kind::Ollama, &["llama3.2:latest"]);
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), OLLAMA_POLICY);
    let base = format!("ollama={}", ollama.url());
    let run = probe(&[
        "--policy",
        p.to_str().unwrap(),
        "--base-url",
        &base,
        "--no-warm",
    ]);
    assert_eq!(ollama.hits("/api/generate"), 0);
    assert_eq!(ollama.hits("/api/tags"), 1);
    assert_eq!(ollama.hits("/api/ps"), 1);
    assert_eq!(ollama.hits("/api/version"), 1);
    assert!(run.stdout.contains(" off"), "{}", run.stdout);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn json_document_is_stable() {
    let rt = runtime();
    let ollama = start(&rt, Kind::Ollama, &["llama3.2:latest", "mistral:latest"]);
    // Loaded before the probe: /api/ps reports it.
    rt.block_on(
        aigw::providers::ollama::OllamaClient::new(&ollama.url(), Duration::from_secs(5)).load(
            "mistral",
            &aigw::providers::ollama::KeepAlive::Duration("5m".into()),
            Duration::from_secs(5),
        ),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), OLLAMA_POLICY);
    let base = format!("ollama={}", ollama.url());
    let run = probe(&[
        "--policy",
        p.to_str().unwrap(),
        "--base-url",
        &base,
        "--format",
        "json",
    ]);
    assert_eq!(run.exit, Exit::Failure);
    assert!(
        run.stderr.is_empty(),
        "JSON to a pipe has no progress lines: {}",
        run.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["format"], "aigw-probe/1");
    assert_eq!(v["summary"]["errors"], 1);
    assert_eq!(
        v["providers"][0]["models"][2]["loaded"]["context_length"],
        4096
    );
    let scrubbed = scrub(&run.stdout).replace(&dir.path().display().to_string(), "[TMP]");
    snapshot("json_document", &scrubbed);
}

#[test]
fn refused_says_start_ollama() {
    let port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), OLLAMA_POLICY);
    let base = format!("ollama=http://127.0.0.1:{port}");
    let run = probe(&["--policy", p.to_str().unwrap(), "--base-url", &base]);
    assert_eq!(run.exit, Exit::Failure);
    assert!(
        run.stdout.contains(&format!(
            "cannot connect to http://127.0.0.1:{port} (127.0.0.1:{port}: connection refused)"
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(
        "is `ollama serve` running? Or map the provider: --base-url ollama=http://HOST:11434"
    ));
    snapshot("refused", &run.stdout);
}

#[test]
fn slow_tags_time_out() {
    let rt = runtime();
    let ollama = start(&rt, Kind::Ollama, &["llama3.2:latest"]);
    ollama.push_fault_on("/api/tags", Fault::DelayHeaders(Duration::from_secs(3)));
    let base = format!("ollama={}", ollama.url());
    let run = probe_ollama_policy(&["--base-url", &base, "--timeout", "300ms"]);
    assert_eq!(run.exit, Exit::Failure);
    assert!(
        run.stdout
            .contains("/api/tags accepted the connection but sent no answer within 300ms"),
        "{}",
        run.stdout
    );
    assert_eq!(ollama.hits("/api/generate"), 0);
}

#[test]
fn warm_404_is_model_not_found() {
    let rt = runtime();
    let ollama = start(&rt, Kind::Ollama, &["llama3.2:latest"]);
    ollama.push_fault_on("/api/generate", Fault::status(404));
    let base = format!("ollama={}", ollama.url());
    let run = probe_ollama_policy(&["--base-url", &base]);
    assert_eq!(run.exit, Exit::Failure);
    assert!(
        run.stdout
            .contains("Ollama could not find llama3.2 when loading it"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("✗ ollama: llama3.2 failed to load"),
        "{}",
        run.stderr
    );
}

#[test]
fn garbage_is_not_json() {
    let rt = runtime();
    let ollama = start(&rt, Kind::Ollama, &["llama3.2:latest"]);
    ollama.push_fault_on(
        "/api/tags",
        Fault::Status {
            code: 200,
            body: Some("<html><body>Sign in to the Wi-Fi</body></html>".into()),
            retry_after: None,
        },
    );
    let base = format!("ollama={}", ollama.url());
    let run = probe_ollama_policy(&["--base-url", &base]);
    assert_eq!(run.exit, Exit::Failure);
    assert!(
        run.stdout.contains(
            "answered something that is not JSON: «<html><body>Sign in to the Wi-Fi</body></html>»"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn forbidden_host_is_explained() {
    let rt = runtime();
    let ollama = start(&rt, Kind::Ollama, &["llama3.2:latest"]);
    ollama.set_fault(Some(Fault::Status {
        code: 403,
        body: Some(String::new()),
        retry_after: None,
    }));
    let base = format!("ollama={}", ollama.url());
    let run = probe_ollama_policy(&["--base-url", &base]);
    assert_eq!(run.exit, Exit::Failure);
    assert!(
        run.stdout.contains(
            "answered 403 with an empty body: Ollama refuses requests whose Host is not local"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(ollama.requests().len(), 1, "nothing more after the 403");
}

#[test]
fn wrong_base_url_404() {
    let rt = runtime();
    let ollama = start(&rt, Kind::Ollama, &["llama3.2:latest"]);
    let base = format!("ollama={}/api", ollama.url());
    let run = probe_ollama_policy(&["--base-url", &base]);
    assert_eq!(run.exit, Exit::Failure);
    assert!(
        run.stdout
            .contains("answered 404 (404 page not found): no such API at this address"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("without /api or /v1"));
}

#[test]
fn unmapped_internal_is_explained_without_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(
        dir.path(),
        "on_http_request:\n  - type: ai-gateway\n    config:\n      providers:\n        - id: vllm\n          base_url: https://vllm.internal\n          models:\n            - id: qwen\n",
    );
    let run = probe(&["--policy", p.to_str().unwrap()]);
    assert_eq!(run.exit, Exit::Failure);
    assert!(
        run.stdout
            .contains("https://vllm.internal is an ngrok internal endpoint"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("--base-url vllm=http://HOST:PORT (or AIGW_BASE_URL_VLLM)")
    );
}

#[test]
fn policy_errors_exit_2_with_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(
        dir.path(),
        "on_http_request:\n  - type: ai-gateway\n    config:\n      providers:\n        - id: ollama\n          modles: []\n",
    );
    let run = probe(&["--policy", p.to_str().unwrap()]);
    assert_eq!(run.exit, Exit::Error);
    assert!(run.stderr.contains("modles"), "{}", run.stderr);
    assert!(run.stderr.contains("no provider was probed"));
    assert!(run.stdout.is_empty());
}

#[test]
fn tool_errors_exit_2() {
    let run = probe(&["--timeout", "soon"]);
    assert_eq!(run.exit, Exit::Error);
    assert!(
        run.stderr.contains("invalid --timeout `soon`"),
        "{}",
        run.stderr
    );
    let run = probe(&["--keep-alive", "3600x"]);
    assert_eq!(run.exit, Exit::Error);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let run = probe(&["--policy", missing.to_str().unwrap()]);
    assert_eq!(run.exit, Exit::Error);
    assert!(run.stderr.contains("no such file"), "{}", run.stderr);
    let p = policy(dir.path(), OLLAMA_POLICY);
    let run = probe(&["--policy", p.to_str().unwrap(), "olama"]);
    assert_eq!(run.exit, Exit::Error);
    assert!(
        run.stderr
            .contains("unknown provider `olama` (did you mean `ollama`?)"),
        "{}",
        run.stderr
    );
}

const KEY: &str = "sk-standin-0123456789abcdef";

fn api_policy(dir: &Path, id: &str, url: &str, models: &[&str]) -> PathBuf {
    let secrets = dir.join("secrets.yaml");
    std::fs::write(&secrets, format!("{id}:\n  key: {KEY}\n")).unwrap();
    let mut text = format!(
        "on_http_request:\n  - type: ai-gateway\n    config:\n      providers:\n        - id: {id}\n          base_url: {url}\n          api_keys:\n            - value: ${{secrets.get('{id}', 'key')}}\n          models:\n"
    );
    for m in models {
        text.push_str(&format!("            - id: {m}\n"));
    }
    policy(dir, &text)
}

/// Writes [`api_policy`] into `dir` and probes it with `--policy`, `--secrets` and `extra`.
fn probe_api(dir: &Path, id: &str, url: &str, models: &[&str], extra: &[&str]) -> (PathBuf, Run) {
    let p = api_policy(dir, id, url, models);
    let secrets = dir.join("secrets.yaml");
    let mut args = vec![
        "--policy",
        p.to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let run = probe(&args);
    (p, run)
}

#[test]
fn openai_format_lists_models_with_the_key() {
    let rt = runtime();
    let openai = start(&rt, Kind::OpenAi, &["gpt-4o", "gpt-4o-mini"]);
    openai.require_key(KEY);
    let dir = tempfile::tempdir().unwrap();
    let (_, run) = probe_api(
        dir.path(),
        "openai",
        &openai.url(),
        &["gpt-4o", "gpt-4o-mni"],
        &[],
    );
    assert_eq!(run.exit, Exit::Failure, "{}", run.stdout);
    let req = openai
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/models")
        .unwrap();
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(
        run.stdout
            .contains("gpt-4o-mni is in the policy but openai does not list it"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("did you mean `gpt-4o-mini`?"));
    assert!(
        !run.stdout.contains(KEY) && !run.stderr.contains(KEY),
        "the key never appears"
    );
    snapshot("openai_models", &run.stdout);
}

#[test]
fn rejected_key_is_redacted() {
    let rt = runtime();
    let openai = start(&rt, Kind::OpenAi, &["gpt-4o"]);
    openai.require_key("sk-the-right-one-000000");
    let dir = tempfile::tempdir().unwrap();
    let (_, run) = probe_api(
        dir.path(),
        "openai",
        &openai.url(),
        &["gpt-4o"],
        &["--format", "json"],
    );
    assert_eq!(run.exit, Exit::Failure);
    assert!(
        run.stdout
            .contains("the key sk-…cdef was rejected: HTTP 401"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains(KEY));
}

#[test]
fn anthropic_format_uses_x_api_key() {
    let rt = runtime();
    let anthropic = start(&rt, Kind::Anthropic, &["claude-sonnet-4-5"]);
    anthropic.require_key(KEY);
    let dir = tempfile::tempdir().unwrap();
    let (_, run) = probe_api(
        dir.path(),
        "anthropic",
        &anthropic.url(),
        &["claude-sonnet-4-5"],
        &[],
    );
    assert_eq!(run.exit, Exit::Success, "{}", run.stdout);
    let req = anthropic
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/models")
        .unwrap();
    assert_eq!(
        req.header("x-api-key"),
        Some(KEY),
        "{req:?}\n{}",
        run.stdout
    );
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
}

#[test]
fn missing_secret_is_a_finding() {
    let rt = runtime();
    let openai = start(&rt, Kind::OpenAi, &["gpt-4o"]);
    let dir = tempfile::tempdir().unwrap();
    let p = api_policy(dir.path(), "openai-x", &openai.url(), &["gpt-4o"]);
    let run = probe(&["--policy", p.to_str().unwrap()]);
    assert_eq!(run.exit, Exit::Failure);
    assert!(
        run.stdout
            .contains("an API key of openai-x does not resolve: AIGW_SECRET_OPENAI_X_KEY"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_bare_url_is_detected_as_ollama() {
    let rt = runtime();
    let ollama = start(&rt, Kind::Ollama, &["llama3.2:latest"]);
    let run = probe(&[&ollama.url(), "--no-warm"]);
    assert_eq!(run.exit, Exit::Success, "{}", run.stdout);
    assert!(run.stdout.contains("Ollama 0.12.6"), "{}", run.stdout);
    assert!(run.stdout.contains("llama3.2:latest"), "{}", run.stdout);
    // Nothing listening: the fix does not suggest --base-url (a URL has no provider id).
    let port = closed_port();
    let run = probe(&[&format!("http://127.0.0.1:{port}")]);
    assert_eq!(run.exit, Exit::Failure);
    assert!(
        run.stdout
            .contains("Or probe another address: aigw probe http://HOST:PORT"),
        "{}",
        run.stdout
    );
}

#[test]
fn installed_models_function() {
    let rt = runtime();
    let ollama = start(&rt, Kind::Ollama, &["llama3.2:latest", "qwen3:8b"]);
    let names = rt
        .block_on(aigw::providers::ollama::ollama_installed_models(
            &ollama.url(),
            Duration::from_secs(5),
        ))
        .unwrap();
    assert_eq!(names, vec!["llama3.2:latest", "qwen3:8b"]);
    let port = closed_port();
    let err = rt
        .block_on(aigw::providers::ollama::ollama_installed_models(
            &format!("http://127.0.0.1:{port}"),
            Duration::from_secs(5),
        ))
        .unwrap_err();
    assert_eq!(err.kind(), "refused", "{err}");
}

// ---------------------------------------------------------------------------------------------
// Transcripts: `commands/probe/*.md`, one per case, regenerated from real runs so they stay true.
// A changed or missing transcript fails the test; `TRYCMD=overwrite` rewrites them.

struct Case {
    file: &'static str,
    title: &'static str,
    policy: Option<String>,
    run: Run,
    dir: PathBuf,
}

fn transcript(case: &Case) -> String {
    let dir = format!("{}/", case.dir.display());
    let clean = |s: &str| scrub(&s.replace(&dir, ""));
    let mut md = format!("# {}\n\n", case.title);
    if let Some(policy) = &case.policy {
        md.push_str(&format!(
            "`policy.yaml`:\n\n```yaml\n{}```\n\n",
            clean(policy)
        ));
    }
    let args: Vec<String> = case
        .run
        .args
        .iter()
        .map(|a| {
            let a = clean(a);
            if a.contains(' ') { format!("'{a}'") } else { a }
        })
        .collect();
    md.push_str(&format!("```console\n$ aigw {}\n", args.join(" ")));
    md.push_str(&clean(&case.run.stdout));
    if !case.run.stderr.is_empty() {
        md.push_str("\n# standard error:\n");
        md.push_str(&clean(&case.run.stderr));
    }
    md.push_str(&format!("\n# exit code: {}\n```\n", case.run.exit as u8));
    md
}

fn case_with_policy(
    file: &'static str,
    title: &'static str,
    policy_text: &str,
    args: &[&str],
) -> Case {
    let dir = tempfile::tempdir().unwrap().keep();
    let p = policy(&dir, policy_text);
    let mut full = vec!["--policy", p.to_str().unwrap()];
    full.extend_from_slice(args);
    let run = probe(&full);
    Case {
        file,
        title,
        policy: Some(policy_text.to_string()),
        run,
        dir,
    }
}

#[test]
fn transcripts() {
    let rt = runtime();
    let mut cases = Vec::new();

    let ollama = start(&rt, Kind::Ollama, &["llama3.2:latest", "mistral:latest"]);
    let base = format!("ollama={}", ollama.url());
    cases.push(case_with_policy(
        "ollama-missing-and-extra.md",
        "Ollama: a policy model not pulled, another installed but not in the policy",
        OLLAMA_POLICY,
        &["--base-url", &base],
    ));

    let ok = start(&rt, Kind::Ollama, &["llama3.2:latest", "llama3.2:1b"]);
    let base_ok = format!("ollama={}", ok.url());
    cases.push(case_with_policy(
        "ollama-all-good.md",
        "Ollama: every policy model installed and pre-warmed (keep_alive 30m)",
        OLLAMA_POLICY,
        &["--base-url", &base_ok, "--keep-alive", "30m"],
    ));
    cases.push(case_with_policy(
        "ollama-no-warm.md",
        "Ollama with --no-warm: no /api/generate is sent",
        OLLAMA_POLICY,
        &["--base-url", &base_ok, "--no-warm"],
    ));

    let port = closed_port();
    let refused = format!("ollama=http://127.0.0.1:{port}");
    cases.push(case_with_policy(
        "ollama-refused.md",
        "Ollama is not running (connection refused)",
        OLLAMA_POLICY,
        &["--base-url", &refused],
    ));

    let slow = start(&rt, Kind::Ollama, &["llama3.2:latest"]);
    slow.push_fault_on("/api/tags", Fault::DelayHeaders(Duration::from_secs(3)));
    let base_slow = format!("ollama={}", slow.url());
    cases.push(case_with_policy(
        "ollama-slow.md",
        "Ollama accepts the connection but /api/tags does not answer in time",
        OLLAMA_POLICY,
        &["--base-url", &base_slow, "--timeout", "300ms"],
    ));

    let garbage = start(&rt, Kind::Ollama, &["llama3.2:latest"]);
    garbage.push_fault_on(
        "/api/tags",
        Fault::Status {
            code: 200,
            body: Some("<html><body>Sign in to the Wi-Fi</body></html>".into()),
            retry_after: None,
        },
    );
    let base_garbage = format!("ollama={}", garbage.url());
    cases.push(case_with_policy(
        "ollama-not-json.md",
        "Something that is not Ollama answers (HTML instead of JSON)",
        OLLAMA_POLICY,
        &["--base-url", &base_garbage],
    ));

    let gone = start(&rt, Kind::Ollama, &["llama3.2:latest"]);
    gone.push_fault_on("/api/generate", Fault::status(404));
    let base_gone = format!("ollama={}", gone.url());
    cases.push(case_with_policy(
        "ollama-warm-404.md",
        "Ollama lists the model but answers 404 model not found when loading it",
        OLLAMA_POLICY,
        &["--base-url", &base_gone],
    ));

    cases.push(case_with_policy(
        "internal-unmapped.md",
        "An ngrok internal endpoint that is not Ollama and not mapped",
        "on_http_request:\n  - type: ai-gateway\n    config:\n      providers:\n        - id: vllm\n          base_url: https://vllm.internal\n          models:\n            - id: qwen\n",
        &[],
    ));

    cases.push(case_with_policy(
        "policy-error.md",
        "A policy with errors: diagnostics, nothing probed, exit 2",
        "on_http_request:\n  - type: ai-gateway\n    config:\n      providers:\n        - id: ollama\n          modles: []\n",
        &[],
    ));

    let openai = start(&rt, Kind::OpenAi, &["gpt-4o", "gpt-4o-mini"]);
    openai.require_key(KEY);
    let dir = tempfile::tempdir().unwrap().keep();
    let (p, run) = probe_api(
        &dir,
        "openai",
        &openai.url(),
        &["gpt-4o", "gpt-4o-mni"],
        &[],
    );
    cases.push(Case {
        file: "openai-models.md",
        title: "OpenAI format: the key from --secrets lists the models; one policy id is misspelt",
        policy: Some(std::fs::read_to_string(&p).unwrap()),
        run,
        dir,
    });

    let json_ollama = start(&rt, Kind::Ollama, &["llama3.2:latest"]);
    let base_json = format!("ollama={}", json_ollama.url());
    cases.push(case_with_policy(
        "json.md",
        "--format json: the stable document",
        OLLAMA_POLICY,
        &["--base-url", &base_json, "--format", "json"],
    ));

    let forbidden = start(&rt, Kind::Ollama, &["llama3.2:latest"]);
    forbidden.set_fault(Some(Fault::Status {
        code: 403,
        body: Some(String::new()),
        retry_after: None,
    }));
    let base_forbidden = format!("ollama={}", forbidden.url());
    cases.push(case_with_policy(
        "ollama-403.md",
        "Ollama bound to loopback refuses a non-local Host (403, empty body)",
        OLLAMA_POLICY,
        &["--base-url", &base_forbidden],
    ));

    let bare = start(&rt, Kind::Ollama, &["llama3.2:latest", "qwen3:8b"]);
    let dir = tempfile::tempdir().unwrap().keep();
    let run = probe(&[&bare.url(), "--no-warm"]);
    cases.push(Case {
        file: "bare-url.md",
        title: "A bare URL: recognised as Ollama by `GET /`",
        policy: None,
        run,
        dir,
    });

    let plain = start(&rt, Kind::OpenAi, &["gpt-4o"]);
    let tls_url = plain.url().replace("http://", "https://");
    let dir = tempfile::tempdir().unwrap().keep();
    let (p, run) = probe_api(&dir, "openai", &tls_url, &["gpt-4o"], &[]);
    cases.push(Case {
        file: "tls-failure.md",
        title: "https:// to a server that speaks plain HTTP: TCP works, TLS fails",
        policy: Some(std::fs::read_to_string(&p).unwrap()),
        run,
        dir,
    });

    let passthrough = start(&rt, Kind::OpenAi, &["gpt-4o"]);
    passthrough.require_key("sk-client-key-0000000000");
    let oa = format!("openai={}", passthrough.url());
    cases.push(case_with_policy(
        "builtin-named-no-key.md",
        "A built-in provider named on the command line: not in the policy, no key (clients' keys pass through)",
        OLLAMA_POLICY,
        &["openai", "--base-url", &oa],
    ));

    let transcripts: Vec<(String, String)> = cases
        .iter()
        .map(|c| (format!("commands/probe/{}", c.file), transcript(c)))
        .collect();
    for c in &cases {
        let _ = std::fs::remove_dir_all(&c.dir);
    }
    for (path, text) in &transcripts {
        golden::assert_file(path, text);
    }
}

#[test]
fn tls_to_a_plain_http_server_fails_as_tls() {
    let rt = runtime();
    let openai = start(&rt, Kind::OpenAi, &["gpt-4o"]);
    let dir = tempfile::tempdir().unwrap();
    let url = openai.url().replace("http://", "https://");
    let (_, run) = probe_api(
        dir.path(),
        "openai",
        &url,
        &["gpt-4o"],
        &["--format", "json"],
    );
    assert_eq!(run.exit, Exit::Failure);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let p0 = &v["providers"][0];
    assert_eq!(p0["findings"][0]["code"], "tls", "{}", run.stdout);
    assert_eq!(p0["tls"], false);
    assert_eq!(p0["timings"]["first_byte_includes_tls"], true);
    assert!(p0["timings"]["connect_ms"].is_number());
}

#[test]
fn builtin_providers_are_probed_only_when_named() {
    let rt = runtime();
    let ollama = start(&rt, Kind::Ollama, &["llama3.2:latest", "llama3.2:1b"]);
    let openai = start(&rt, Kind::OpenAi, &["gpt-4o"]);
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), OLLAMA_POLICY);
    let ob = format!("ollama={}", ollama.url());
    let oa = format!("openai={}", openai.url());
    // No argument: the policy's providers only, though openai is reachable by passthrough.
    let run = probe(&[
        "--policy",
        p.to_str().unwrap(),
        "--base-url",
        &ob,
        "--base-url",
        &oa,
        "--no-warm",
    ]);
    assert_eq!(run.exit, Exit::Success, "{}", run.stdout);
    assert_eq!(openai.requests().len(), 0);
    assert!(run.stdout.starts_with("ollama "), "{}", run.stdout);
    ollama.clear_requests();
    // Named: probed, and said to be outside the policy; no key, so clients' keys pass through.
    let run = probe(&["--policy", p.to_str().unwrap(), "--base-url", &oa, "openai"]);
    assert_eq!(run.exit, Exit::Success, "{}", run.stdout);
    assert!(
        run.stdout.contains("openai  http://127.0.0.1:"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("(not in the policy)"), "{}", run.stdout);
    assert_eq!(openai.hits("/v1/models"), 1);
    assert_eq!(
        ollama.requests().len(),
        0,
        "only the named provider is probed"
    );
}

#[test]
fn discover_feeds_the_engine() {
    use aigw::routing::engine::{Engine, EngineOptions};
    use aigw::routing::upstream::BaseUrlOverrides;
    let rt = runtime();
    let ollama = start(&rt, Kind::Ollama, &["llama3.2:latest", "qwen3:8b"]);
    let loaded = aigw::policy::load_str("policy.yaml", OLLAMA_POLICY);
    let overrides = BaseUrlOverrides::new(&[("ollama".into(), ollama.url())], std::iter::empty());
    let (engine, _) = Engine::build(
        &loaded,
        EngineOptions {
            overrides,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let (found, errors) = rt.block_on(aigw::probe::discover_ollama(
        &engine,
        Duration::from_secs(5),
    ));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(found["ollama"], vec!["llama3.2:latest", "qwen3:8b"]);
}

#[test]
fn colour_only_when_asked() {
    let port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), OLLAMA_POLICY);
    let base = format!("ollama=http://127.0.0.1:{port}");
    let cli = Cli::try_parse_from([
        "aigw",
        "probe",
        "--policy",
        p.to_str().unwrap(),
        "--base-url",
        &base,
    ])
    .unwrap();
    let Command::Probe(args) = cli.command else {
        unreachable!()
    };
    let mut out = Vec::new();
    let err: aigw::render::probe::SharedWriter = Arc::new(Mutex::new(Vec::<u8>::new()));
    let on = Style {
        color: true,
        width: 100,
    };
    let exit = aigw::commands::probe::run_with(args, &mut out, on, err, on, false);
    assert_eq!(exit, Exit::Failure);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("\x1b[1;31m✗\x1b[0m cannot connect"),
        "{text:?}"
    );
    // The plain runs of every other test carry no escape codes.
    assert!(
        !probe(&["--policy", p.to_str().unwrap(), "--base-url", &base])
            .stdout
            .contains('\x1b')
    );
}
