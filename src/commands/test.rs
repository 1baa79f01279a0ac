//! `aigw test`: routing test files — a policy and a table of request → expected candidates.
//!
//! ```yaml
//! policy: policy.yaml            # relative to this file
//! cases:
//!   - name: local model stays local
//!     request: {model: llama3.2}          # or models: [...], path:, seed:
//!     expect: {first: ollama:llama3.2}    # or order: [...], or error: ERR_NGROK_3804
//!   - name: failover when ollama is down
//!     request: {models: [ollama:llama3.2, openai:gpt-4o]}
//!     fail: [ollama]                      # simulated failures, as `explain --fail`
//!   - name: a content filter's refusal is final
//!     request: {models: [openai:gpt-4o, ollama:llama3.2]}
//!     fail: [openai=content_filter]       # PROVIDER[:MODEL][=ERROR], `down` by default
//!     expect: {status: 400, error: HTTP 400 (final)}
//!     expect: {first: openai:gpt-4o}
//!   - name: the guard refuses a request without a token
//!     request: {headers: {x-api-key: wrong}, client_ip: 10.1.2.3, method: POST}
//!     expect: {status: 401, rule: require-token, headers: {content-type: application/json}}
//! ```
//!
//! A case that expects a `status`, a `rule` or `headers` runs the policy's `on_http_request`
//! rules first (with a fresh rate-limit state; other cases test routing alone):
//! `status` is the policy's answer when it answers, else 200 when a candidate answers or the
//! routing error's status; `rule` names a rule (by `name` or 1-based index) that matched;
//! `headers` are the policy answer's headers, or the headers it adds to the routed request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::{ColorChoice, TableFormat, TestArgs};
use crate::commands::common::InputError;
use crate::commands::{CommandError, Exit, common};
use crate::gateway::attempts::simulate::FailSpec;
use crate::outln;
use crate::policy;
use crate::routing::engine::{Engine, EngineOptions};
use crate::routing::plan::{PlanOptions, Request};
use crate::routing::upstream::BaseUrlOverrides;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    pub policy: PathBuf,
    #[serde(default)]
    pub base_urls: HashMap<String, String>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub request: CaseRequest,
    #[serde(default)]
    pub fail: Vec<String>,
    pub expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    pub model: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers the policy's rules see.
    #[serde(default)]
    pub headers: indexmap::IndexMap<String, String>,
    #[serde(default = "default_client_ip")]
    pub client_ip: std::net::IpAddr,
}

impl Default for CaseRequest {
    fn default() -> Self {
        CaseRequest {
            model: None,
            models: Vec::new(),
            path: default_path(),
            seed: 0,
            method: default_method(),
            headers: indexmap::IndexMap::new(),
            client_ip: default_client_ip(),
        }
    }
}

fn default_method() -> String {
    "POST".into()
}

fn default_client_ip() -> std::net::IpAddr {
    std::net::IpAddr::from([127, 0, 0, 1])
}

fn default_path() -> String {
    "/v1/chat/completions".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `provider:model` of the candidate that answers.
    pub first: Option<String>,
    /// Every candidate in order.
    pub order: Option<Vec<String>>,
    /// The ngrok error code a client gets.
    pub error: Option<String>,
    /// The HTTP status the client gets (the policy's answer, 200, or the routing error's).
    pub status: Option<u16>,
    /// A policy rule (its `name`, or its 1-based index) that matched.
    pub rule: Option<String>,
    /// Headers of the policy's answer, or added by it to the routed request.
    #[serde(default)]
    pub headers: indexmap::IndexMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct CaseResult {
    pub file: String,
    pub name: String,
    pub passed: bool,
    /// What differed, one line each.
    pub problems: Vec<String>,
}

/// Why a test file could not run.
#[derive(Debug, thiserror::Error)]
pub enum TestFileError {
    #[error(transparent)]
    Read(#[from] InputError),
    #[error("{}: not UTF-8 text", .0.display())]
    NotUtf8(PathBuf),
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: the policy has errors (first: {first}); run `aigw validate {}`", path.display(), policy.display())]
    InvalidPolicy {
        path: PathBuf,
        policy: PathBuf,
        first: String,
    },
}

/// Runs one test file.
pub fn run_file(path: &Path) -> Result<Vec<CaseResult>, TestFileError> {
    let bytes = common::read_input(path)?;
    let text = String::from_utf8(bytes).map_err(|_| TestFileError::NotUtf8(path.to_path_buf()))?;
    let file: TestFile = serde_saphyr::from_str(&text).map_err(|e| TestFileError::Parse {
        path: path.to_path_buf(),
        message: first_line(&e.to_string()),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let policy_path = dir.join(&file.policy);
    let policy_bytes = common::read_input(&policy_path)?;
    let loaded = policy::load_bytes(&policy_path.display().to_string(), &policy_bytes);
    let flags: Vec<(String, String)> = file.base_urls.into_iter().collect();
    let opts = EngineOptions {
        overrides: BaseUrlOverrides::new(&flags, std::iter::empty()),
        ..EngineOptions::default()
    };
    let engine = match Engine::build(&loaded, opts) {
        Ok((e, _)) => e,
        Err(diags) => {
            let first = diags
                .iter()
                .find(|d| d.is_error())
                .map(|d| d.message.clone())
                .unwrap_or_default();
            return Err(TestFileError::InvalidPolicy {
                path: path.to_path_buf(),
                policy: policy_path,
                first,
            });
        }
    };
    let file_name = path.display().to_string();
    Ok(file
        .cases
        .iter()
        .map(|case| {
            let problems = check_case(&engine, case);
            CaseResult {
                file: file_name.clone(),
                name: case.name.clone(),
                passed: problems.is_empty(),
                problems,
            }
        })
        .collect())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// Runs the policy's request rules for a case: its problems, and whether the policy answered
/// (then routing is not checked).
fn check_policy(engine: &Engine, case: &Case) -> (Vec<String>, bool) {
    use crate::traffic::{HeaderEdit, Reply, Stop};
    let mut problems = Vec::new();
    let r = &case.request;
    // Routing-only cases (the docs' examples among them) keep testing routing alone.
    let wants_policy = case.expect.status.is_some()
        || case.expect.rule.is_some()
        || !case.expect.headers.is_empty();
    if !wants_policy {
        return (problems, false);
    }
    let Some(program) = engine.traffic() else {
        if case.expect.rule.is_some() || !case.expect.headers.is_empty() {
            problems.push("the policy has no rules besides ai-gateway".to_owned());
        }
        return (problems, false);
    };
    let client = std::net::SocketAddr::new(r.client_ip, 50000);
    let mut view = crate::traffic::RequestView::new(&r.method, &r.path, client);
    view.host = "127.0.0.1:8080".to_owned();
    for (k, v) in &r.headers {
        view = view.header(k, v);
    }
    let rate = crate::traffic::InProcess::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let out = program.on_request(
        &std::sync::Arc::new(view),
        crate::traffic::Ports {
            rate: &rate,
            keys: &crate::traffic::jwt::LocalKeys,
            now,
        },
    );
    if let Some(want) = &case.expect.rule {
        let fired = out.trace.iter().any(|t| {
            t.matched && (t.name.as_deref() == Some(want.as_str()) || t.index.to_string() == *want)
        });
        if !fired {
            let matched: Vec<String> = out
                .trace
                .iter()
                .filter(|t| t.matched)
                .map(|t| {
                    t.name
                        .as_deref()
                        .map_or_else(|| format!("#{}", t.index), str::to_owned)
                })
                .collect();
            problems.push(format!(
                "rule: expected `{want}` to match; matched: [{}]",
                matched.join(", ")
            ));
        }
    }
    let (answered, headers): (Option<String>, Vec<(String, String)>) = match &out.stop {
        Stop::Reply(Reply::Respond {
            status, headers, ..
        }) => (Some(status.to_string()), headers.clone()),
        Stop::Reply(Reply::Close) => (Some("a closed connection".to_owned()), Vec::new()),
        _ => (
            None,
            out.edits
                .iter()
                .filter_map(|e| match e {
                    HeaderEdit::Add(k, v) => Some((k.clone(), v.clone())),
                    HeaderEdit::Remove(_) => None,
                })
                .collect(),
        ),
    };
    for (k, want) in &case.expect.headers {
        let got = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str());
        if got != Some(want.as_str()) {
            problems.push(format!(
                "header {k}: expected {want:?}, got {}",
                got.map_or("none".to_owned(), |g| format!("{g:?}"))
            ));
        }
    }
    if let Some(got) = &answered {
        if let Some(want) = case.expect.status
            && want.to_string() != *got
        {
            problems.push(format!(
                "status: expected {want}, got {got} from the policy"
            ));
        }
        for what in [
            case.expect.first.as_ref().map(|_| "first"),
            case.expect.order.as_ref().map(|_| "order"),
            case.expect.error.as_ref().map(|_| "error"),
        ]
        .into_iter()
        .flatten()
        {
            problems.push(format!(
                "{what}: the policy answered {got}; the request is not routed"
            ));
        }
    }
    (problems, answered.is_some())
}

/// Runs the policy's rules and plans a case, and compares both with its expectations.
pub fn check_case(engine: &Engine, case: &Case) -> Vec<String> {
    let (mut problems, answered) = check_policy(engine, case);
    let nothing = case.expect.first.is_none()
        && case.expect.order.is_none()
        && case.expect.error.is_none()
        && case.expect.status.is_none()
        && case.expect.rule.is_none()
        && case.expect.headers.is_empty();
    if nothing {
        problems.push(
            "expect names nothing to check: give `first`, `order`, `error`, `status`, `rule` or `headers`"
                .into(),
        );
    }
    if answered {
        return problems;
    }
    problems.extend(check_route(engine, case));
    problems
}

/// Plans a case and compares it with its routing expectations.
fn check_route(engine: &Engine, case: &Case) -> Vec<String> {
    let req = Request {
        path: case.request.path.clone(),
        model: case.request.model.clone(),
        models: case.request.models.clone(),
    };
    let plan = engine.plan(
        &req,
        PlanOptions {
            seed: case.request.seed,
        },
    );
    let order = plan.order();
    let mut problems = Vec::new();
    let specs: Vec<FailSpec> = case
        .fail
        .iter()
        .filter_map(|f| match f.parse() {
            Ok(spec) => Some(spec),
            Err(e) => {
                problems.push(format!("fail: {e}"));
                None
            }
        })
        .collect();
    let walk = common::simulate(engine, &plan, &specs);
    let answering = if plan.error.is_some() {
        None
    } else {
        walk.answer
    };
    let error = match (&plan.error, answering, walk.final_at) {
        (Some(e), _, _) => Some(e.code.to_string()),
        (None, Some(_), _) => None,
        (None, None, Some(f)) => Some(format!("HTTP {} (final)", f.status)),
        (None, None, None) => Some("ERR_NGROK_3807".to_string()),
    };
    let got_error = || error.clone().unwrap_or_else(|| "no error".into());
    if let Some(want) = &case.expect.error
        && error.as_deref() != Some(want.as_str())
    {
        problems.push(format!("error: expected {want}, got {}", got_error()));
    }
    if let Some(want) = &case.expect.first {
        let got = answering.map(|i| order[i].clone());
        if got.as_deref() != Some(want.as_str()) {
            let got = got.unwrap_or_else(|| format!("no candidate ({})", got_error()));
            problems.push(format!("first: expected {want}, got {got}"));
        }
    }
    if let Some(want) = &case.expect.order
        && want != &order
    {
        problems.push(format!(
            "order: expected [{}], got [{}]",
            want.join(", "),
            order.join(", ")
        ));
    }
    if let Some(want) = case.expect.status {
        let routed = match (answering, walk.final_at) {
            (Some(_), _) => 200,
            (None, Some(f)) => f.status,
            (None, None) => 503,
        };
        let got = plan.error.as_ref().map_or(routed, |e| e.status);
        if got != want {
            problems.push(format!("status: expected {want}, got {got}"));
        }
    }
    problems
}

#[derive(Serialize)]
struct JsonSummary<'a> {
    passed: usize,
    failed: usize,
    errors: &'a [String],
    cases: &'a [CaseResult],
}

pub fn run(args: TestArgs, _color: ColorChoice) -> Result<Exit, CommandError> {
    let files = if args.files.is_empty() {
        discover(Path::new("."))
    } else {
        args.files.clone()
    };
    if files.is_empty() {
        return Err(CommandError::NoTests);
    }
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for f in &files {
        match run_file(f) {
            Ok(mut r) => results.append(&mut r),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let passed = results.iter().filter(|r| r.passed).count();
    let failed = results.len() - passed;
    match args.format {
        TableFormat::Json => {
            let s = JsonSummary {
                passed,
                failed,
                errors: &errors,
                cases: &results,
            };
            outln!("{}", serde_json::to_string_pretty(&s)?)?;
        }
        TableFormat::Table => {
            for r in &results {
                if r.passed {
                    outln!("ok    {} :: {}", r.file, r.name)?;
                } else {
                    outln!("FAIL  {} :: {}", r.file, r.name)?;
                    for p in &r.problems {
                        outln!("      {p}")?;
                    }
                }
            }
            for e in &errors {
                eprintln!("error: {e}");
            }
            outln!("{passed} passed, {failed} failed")?;
        }
    }
    Ok(if !errors.is_empty() {
        Exit::Error
    } else if failed > 0 {
        Exit::Failure
    } else {
        Exit::Success
    })
}

/// Every `*.aigw-test.yaml` below `dir` (skipping `target` and hidden folders), sorted.
fn discover(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if p.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    stack.push(p);
                }
            } else if name.ends_with(".aigw-test.yaml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "on_http_request:\n  - type: ai-gateway\n    config:\n      providers:\n        - id: openai\n          api_keys: [{value: sk-test}]\n";

    fn problems(case: &str) -> Vec<String> {
        let loaded = policy::load_str("p.yaml", POLICY);
        let (engine, _) = Engine::build(&loaded, EngineOptions::default()).unwrap();
        let case: Case = serde_saphyr::from_str(case).unwrap();
        check_case(&engine, &case)
    }

    #[test]
    fn fail_runs_the_failover_table() {
        let moderated = "name: m\nrequest: {models: [openai:gpt-4o, openai:gpt-4o-mini]}\nfail: [openai:gpt-4o=content_filter]\n";
        assert!(
            problems(&format!(
                "{moderated}expect: {{status: 400, error: HTTP 400 (final)}}"
            ))
            .is_empty()
        );
        assert_eq!(
            problems(&format!("{moderated}expect: {{first: openai:gpt-4o-mini}}")),
            ["first: expected openai:gpt-4o-mini, got no candidate (HTTP 400 (final))"]
        );
        let transient = "name: t\nrequest: {models: [openai:gpt-4o, openai:gpt-4o-mini]}\nfail: [openai:gpt-4o=503]\nexpect: {first: openai:gpt-4o-mini, status: 200}\n";
        assert!(problems(transient).is_empty());
    }

    #[test]
    fn an_unknown_error_in_fail_is_named() {
        let p = problems(
            "name: b\nrequest: {model: gpt-4o}\nfail: [openai=bogus]\nexpect: {first: openai:gpt-4o}\n",
        );
        assert_eq!(
            p,
            [
                "fail: unknown error `bogus`; use one of: down, timeout, reset, a status (400…599), content_filter, context_length, unknown_model"
            ]
        );
    }
}
