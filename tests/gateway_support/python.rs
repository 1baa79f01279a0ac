//! Running the Python scripts of `tests/e2e/` (the official `openai` / `ollama` clients,
//! Playwright) against a gateway on 127.0.0.1, with no proxy in the way.

use std::time::Duration;

/// Whether `import {modules}` works; the error says how to install them.
pub fn modules_present(modules: &str) -> Result<(), String> {
    let out = std::process::Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "run `pip install -r tests/e2e/requirements.txt` ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `tests/e2e/<script> args…` with `envs`, without proxies, within `limit`.
pub async fn run(
    script: &str,
    args: &[&str],
    envs: &[(&str, String)],
    limit: Duration,
) -> std::process::Output {
    let script = format!("{}/tests/e2e/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(&script)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .env_remove("OLLAMA_HOST")
        .env_remove("OPENAI_BASE_URL")
        .kill_on_drop(true);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {limit:?}"))
        .expect("cannot run python3")
}
