//! `aigw probe`: check providers before traffic does (reachability, installed models, pre-warm).
//!
//! Exit codes: 0 every check passed; 1 a check failed (an unreachable provider, a model that is
//! not installed, …); 2 probe could not run (bad flags, unreadable policy, or a policy with
//! errors: its diagnostics are printed, and `aigw validate` says the same). A policy with errors
//! is exit 2, not 1, because no provider was checked: a script reading 1 as "a provider is down"
//! must not be told that about a typo in the file.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli::{ColorChoice, ProbeArgs, TableFormat};
use crate::commands::{Exit, common};
use crate::policy::duration;
use crate::probe::{self, ProbeOptions, Silent, targets};
use crate::providers::ollama::KeepAlive;
use crate::render;
use crate::render::probe::{SharedWriter, StderrProgress};
use crate::routing::engine::{Engine, EngineOptions};

/// Pre-warm budget: at least Ollama's own load timeout (OLLAMA_LOAD_TIMEOUT, 5m).
pub const WARM_TIMEOUT: Duration = Duration::from_secs(300);

pub fn run(args: ProbeArgs, color: ColorChoice) -> Exit {
    let err: SharedWriter = Arc::new(Mutex::new(std::io::stderr()));
    let stdout = std::io::stdout();
    let out_style = common::stdout_style(color);
    let err_style = common::style(color, std::io::stderr().is_terminal());
    run_with(
        args,
        &mut stdout.lock(),
        out_style,
        err,
        err_style,
        std::io::stderr().is_terminal(),
    )
}

/// The command with its streams passed in (tests run it in-process). `live` draws spinners on
/// `err` (a terminal); otherwise progress is plain lines, and none at all for JSON.
pub fn run_with(
    args: ProbeArgs,
    out: &mut dyn Write,
    out_style: render::diagnostics::Style,
    err: SharedWriter,
    err_style: render::diagnostics::Style,
    live: bool,
) -> Exit {
    let fail = |msg: String| {
        if let Ok(mut w) = err.lock() {
            let _ = writeln!(
                w,
                "{} {msg}",
                if err_style.color {
                    "\x1b[1;31merror:\x1b[0m"
                } else {
                    "error:"
                }
            );
        }
        Exit::Error
    };
    let timeout = match duration::parse(&args.timeout) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => return fail("--timeout must be more than 0".into()),
        Err(e) => return fail(format!("invalid --timeout `{}`: {e}", args.timeout)),
    };
    let keep_alive = match KeepAlive::parse(&args.keep_alive) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let (loaded, origin) = match common::load_policy(args.policy.policy.as_deref()) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let secrets = match common::secrets(args.policy.secrets.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let engine_opts = EngineOptions {
        overrides: common::overrides(&args.policy),
        secrets: secrets.clone(),
        ..EngineOptions::default()
    };
    let engine = match Engine::build(&loaded, engine_opts) {
        Ok((engine, _warnings)) => engine,
        Err(diags) => {
            if let Ok(mut w) = err.lock() {
                for d in diags.iter().filter(|d| d.is_error()) {
                    let _ = write!(
                        w,
                        "{}",
                        render::diagnostics::human(d, &loaded.source, err_style)
                    );
                }
            }
            return fail(format!(
                "{}: fix the policy first (`aigw validate` checks it); no provider was probed",
                loaded.source.name
            ));
        }
    };
    let targets = match targets::select(&engine, &args.targets, &secrets) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let opts = ProbeOptions {
        timeout,
        warm: !args.no_warm,
        keep_alive,
        warm_timeout: timeout.max(WARM_TIMEOUT),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let report = runtime.block_on(async {
        if args.format == TableFormat::Json && !live {
            probe::run(origin.describe(), &targets, &opts, &Silent).await
        } else {
            let progress = StderrProgress {
                live,
                sink: err.clone(),
            };
            probe::run(origin.describe(), &targets, &opts, &progress).await
        }
    });
    let text = match args.format {
        TableFormat::Json => format!("{}\n", render::probe::json(&report)),
        TableFormat::Table => render::probe::table(&report, out_style),
    };
    // Findings quote upstream error bodies, which may echo a key back: scrub every secret.
    let mut known: Vec<String> = secrets.values().map(String::from).collect();
    for t in &targets {
        if let targets::Keys::Resolved(keys) = &t.keys {
            known.extend(keys.iter().cloned());
        }
    }
    known.retain(|s| s.chars().count() >= 8);
    known.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    known.dedup();
    let text = crate::gateway::observe::redact::scrub(&text, &known);
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        return fail(format!("cannot write the report: {e}"));
    }
    if report.summary.ok {
        Exit::Success
    } else {
        Exit::Failure
    }
}
