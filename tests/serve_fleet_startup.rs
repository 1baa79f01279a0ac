//! `aigw serve` (the real binary) with no Ollama running: the start-up lines, and the error each
//! client family sees — OpenAI and Ollama shapes over raw HTTP, as curl shows them — naming the
//! address tried and `aigw probe`, with the same words in the log.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Serve {
    child: Child,
    stdout: std::path::PathBuf,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn wait_for(serve: &Serve, file: &Path, text: &str) {
    for _ in 0..1200 {
        if read(file).contains(text) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "aigw serve never wrote {text:?}; stdout:\n{}\nstderr:\n{}",
        read(&serve.stdout),
        read(&serve.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The built-in policy (no policy.yaml in the working directory) with its Ollama mapped to a
/// port nothing listens on.
fn serve_without_ollama(ollama_port: u16) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let child = Command::new(env!("CARGO_BIN_EXE_aigw"))
        .args([
            "serve",
            "--no-reload",
            "--listen",
            "127.0.0.1:0",
            "--color",
            "never",
        ])
        .arg("--base-url")
        .arg(format!("ollama=http://127.0.0.1:{ollama_port}"))
        .current_dir(dir.path())
        .env_remove("AIGW_AUTH_TOKEN")
        .env_remove("AIGW_LOG")
        .env("NO_COLOR", "1")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Serve {
        child,
        stdout: out,
        stderr: err,
        _dir: dir,
    }
}

/// A raw HTTP/1.1 exchange, as `curl -i` would show it (status line, chosen headers, body).
fn raw(addr: &str, method: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let mut shown = vec![lines.next().unwrap().to_string()];
    for l in lines {
        let name = l.split(':').next().unwrap().to_ascii_lowercase();
        if ["content-type", "ngrok-error-code"].contains(&name.as_str()) {
            shown.push(l.to_string());
        }
    }
    format!("{}\n\n{body}", shown.join("\n"))
}

#[test]
fn no_ollama_running_is_said_at_start_up_and_in_every_error() {
    let port = free_port();
    let serve = serve_without_ollama(port);
    wait_for(&serve, &serve.stdout, "serving on http://");
    wait_for(&serve, &serve.stderr, "no Ollama box answers");
    let stdout = read(&serve.stdout);
    let addr = stdout
        .split("serving on http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let redact = |s: &str| {
        s.replace(&addr, "127.0.0.1:LISTEN")
            .replace(&format!("127.0.0.1:{port}"), "127.0.0.1:OLLAMA")
    };
    let startup = format!(
        "$ aigw serve (stdout)\n{}\n$ (stderr)\n{}",
        stdout,
        read(&serve.stderr)
    );
    insta::with_settings!({snapshot_path => "../snapshots/serve", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("startup-no-ollama", redact(&startup));
    });

    let chat = r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}"#;
    let ollama_chat =
        r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":false}"#;
    let exchanges = [
        ("POST", "/v1/chat/completions", chat),
        ("POST", "/api/chat", ollama_chat),
        ("GET", "/api/tags", ""),
        ("GET", "/readyz", ""),
    ];
    let mut transcript = String::new();
    for (method, path, body) in exchanges {
        transcript.push_str(&format!(
            "$ curl -i -X {method} http://127.0.0.1:LISTEN{path}\n{}\n\n",
            redact(&raw(&addr, method, path, body))
        ));
    }
    insta::with_settings!({snapshot_path => "../snapshots/serve", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("errors-no-ollama-raw-http", transcript);
    });
    // The log line says the same.
    for _ in 0..200 {
        if read(&serve.stderr).contains("Run `aigw probe`") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = read(&serve.stderr);
    assert!(
        log.contains(&format!(
            "tried ollama at http://127.0.0.1:{port} (cannot connect to http://127.0.0.1:{port} (connection refused))"
        )),
        "{log}"
    );
}
