//! `aigw serve` raises its soft open-file limit to the hard one, and warns (naming the fix) when
//! the hard limit itself leaves room for few connections. Linux: read from /proc/PID/limits.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const POLICY: &str = "on_http_request:\n  - type: ai-gateway\n    config:\n      only_allow_configured_providers: true\n      providers:\n        - id: local\n          base_url: \"http://127.0.0.1:9/v1\"\n          models:\n            - id: made-up-chat\n";

/// (soft, hard) open-file limits of process `pid`.
fn open_files(pid: &str) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut f = line["Max open files".len()..].split_whitespace();
    (f.next().unwrap().into(), f.next().unwrap().into())
}

struct Serve {
    child: Child,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts serve under `ulimit` (a bash command) and waits until it listens.
fn serve_under(ulimit: &str) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{ulimit} && exec \"$0\" serve --no-reload --listen 127.0.0.1:0 --policy \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_aigw"))
        .arg(&policy)
        .env_remove("AIGW_AUTH_TOKEN")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let serve = Serve {
        child,
        stderr: err,
        _dir: dir,
    };
    wait_for(&out, "serving on http://", &serve.stderr);
    serve
}

fn wait_for(file: &Path, text: &str, stderr: &Path) {
    for _ in 0..1200 {
        if std::fs::read_to_string(file)
            .unwrap_or_default()
            .contains(text)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "aigw serve did not start; stderr:\n{}",
        std::fs::read_to_string(stderr).unwrap_or_default()
    );
}

#[test]
fn serve_raises_its_soft_limit_to_the_hard_one() {
    let (_, hard) = open_files("self");
    let s = serve_under("ulimit -Sn 128");
    let (soft_now, hard_now) = open_files(&s.child.id().to_string());
    assert_eq!(hard_now, hard);
    assert_eq!(
        soft_now, hard,
        "serve kept a soft limit below its hard limit"
    );
}

#[test]
fn a_low_hard_limit_is_reported_with_the_fix() {
    let s = serve_under("ulimit -n 512");
    let err = std::fs::read_to_string(&s.stderr).unwrap();
    assert!(
        err.contains("warning: the open-file limit is 512")
            && err.contains("at most 224 connections"),
        "{err}"
    );
    assert!(err.contains("LimitNOFILE=65536"), "{err}");
}
