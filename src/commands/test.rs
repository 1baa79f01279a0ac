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
//!     expect: {first: openai:gpt-4o}
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::{ColorChoice, TableFormat, TestArgs};
use crate::commands::common::InputError;
use crate::commands::{CommandError, Exit, common};
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    pub model: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default)]
    pub seed: u64,
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

/// Plans a case and compares it with its expectations.
pub fn check_case(engine: &Engine, case: &Case) -> Vec<String> {
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
    let failing: Vec<bool> = plan
        .attempts
        .iter()
        .map(|a| {
            case.fail.iter().any(|f| match f.split_once(':') {
                Some((p, m)) => {
                    a.provider.eq_ignore_ascii_case(p) && a.model.eq_ignore_ascii_case(m)
                }
                None => a.provider.eq_ignore_ascii_case(f),
            })
        })
        .collect();
    let answering = if plan.error.is_some() {
        None
    } else {
        failing.iter().position(|f| !f)
    };
    let error = match (&plan.error, answering) {
        (Some(e), _) => Some(e.code.to_string()),
        (None, None) => Some("ERR_NGROK_3807".to_string()),
        (None, Some(_)) => None,
    };
    let mut problems = Vec::new();
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
    if case.expect.first.is_none() && case.expect.order.is_none() && case.expect.error.is_none() {
        problems.push("expect names nothing to check: give `first`, `order` or `error`".into());
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
