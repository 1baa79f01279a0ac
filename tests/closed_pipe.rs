//! Output into a closed pipe (`aigw … | head -1` after head has exited) ends the program quietly
//! with success, as ripgrep does, never with a panic: every subcommand that writes to standard
//! output is run with its stdout connected to a pipe whose read end is already closed.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GUIDE: &str = "testdata/policies/guide/03-failover-to-openai.yaml";

/// Runs aigw with stdout into a pipe nobody reads; returns (exit code, stderr).
fn into_closed_pipe(args: &[&str], dir: &std::path::Path) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_aigw"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("aigw runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_printing_subcommand_ends_quietly_on_a_closed_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let guide = root().join(GUIDE);
    let guide = guide.to_str().unwrap();
    let routing_test = root().join("testdata/routing/concepts-custom-providers.01.aigw-test.yaml");
    let init_target = tmp.path().join("new-policy.yaml");
    let litellm = root().join("testdata/litellm/two-ollama-boxes.yaml");
    // A port with nothing listening: probe has a report to write without any network.
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let probe_url = format!("http://127.0.0.1:{closed_port}");
    let cases: Vec<Vec<&str>> = vec![
        vec!["completions", "bash"],
        vec!["completions", "zsh"],
        vec!["schema"],
        vec!["--help"],
        vec!["explain", "-p", guide, "--model", "gpt-4o"],
        vec![
            "explain", "-p", guide, "--model", "gpt-4o", "--format", "json",
        ],
        vec!["validate", guide, "--format", "json"],
        vec!["validate", guide, "--format", "github"],
        vec!["test", routing_test.to_str().unwrap()],
        vec!["test", routing_test.to_str().unwrap(), "--format", "json"],
        vec!["init", init_target.to_str().unwrap()],
        vec!["convert", litellm.to_str().unwrap()],
        vec![
            "probe",
            &probe_url,
            "--no-warm",
            "--timeout",
            "2s",
            "--format",
            "json",
        ],
        vec!["probe", &probe_url, "--no-warm", "--timeout", "2s"],
    ];
    for args in cases {
        let (code, stderr) = into_closed_pipe(&args, tmp.path());
        assert!(
            !stderr.contains("panicked"),
            "aigw {}: panicked on a closed pipe:\n{stderr}",
            args.join(" ")
        );
        assert_eq!(
            code,
            Some(0),
            "aigw {}: exit code on a closed pipe (stderr: {stderr})",
            args.join(" ")
        );
    }
}

/// serve's banner goes to stdout: a closed stdout must not stop the gateway from serving.
#[test]
fn serve_keeps_serving_with_a_closed_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(env!("CARGO_BIN_EXE_aigw"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--no-reload",
        ])
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answered = false;
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Write;
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            if text.starts_with("HTTP/1.1 200") {
                answered = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(answered, "serve did not answer /healthz; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
