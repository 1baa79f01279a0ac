//! `aigw explain`: plan one request offline and show why.

use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::cli::{ColorChoice, ExplainArgs, TableFormat};
use crate::commands::{CommandError, Exit, common};
use crate::outln;
use crate::render::diagnostics as render_diag;
use crate::render::explain::{self, ExplainView};
use crate::routing::engine::{Engine, EngineOptions, ProviderInfo};
use crate::routing::plan::{Attempt, Plan, PlanOptions, Request};
use crate::routing::upstream::UrlOrigin;

#[derive(Serialize)]
struct JsonExplain<'a> {
    policy: String,
    path: &'a str,
    models: &'a [String],
    seed: u64,
    #[serde(flatten)]
    plan: &'a Plan,
    failing: &'a [bool],
    answer: Option<usize>,
}

pub fn run(args: ExplainArgs, color: ColorChoice) -> Result<Exit, CommandError> {
    let (loaded, origin) = common::load_policy(args.policy.policy.as_deref())?;
    let secrets = common::secrets(args.policy.secrets.as_deref())?;
    let opts = EngineOptions {
        overrides: common::overrides(&args.policy),
        secrets,
        ..EngineOptions::default()
    };
    let engine = match Engine::build(&loaded, opts) {
        Ok((engine, _warnings)) => engine,
        Err(diags) => {
            let style = common::style(color, std::io::stderr().is_terminal());
            for d in diags.iter().filter(|d| d.is_error()) {
                eprint!("{}", render_diag::human(d, &loaded.source, style));
            }
            eprintln!(
                "error: the policy has errors; fix them first (`aigw validate` shows them all)"
            );
            return Ok(Exit::Failure);
        }
    };
    let request = Request {
        path: args.path.clone(),
        model: args.model.first().cloned(),
        models: args.model.iter().skip(1).cloned().collect(),
    };
    let plan = engine.plan(&request, PlanOptions { seed: args.seed });
    let fails: Vec<(String, Option<String>)> = args
        .fail
        .iter()
        .map(|f| match f.split_once(':') {
            Some((p, m)) => (p.to_string(), Some(m.to_string())),
            None => (f.clone(), None),
        })
        .collect();
    let failing: Vec<bool> = plan
        .attempts
        .iter()
        .map(|a| matches_fail(a, &fails, &engine))
        .collect();
    let answer = if plan.error.is_some() {
        None
    } else {
        failing.iter().position(|f| !f)
    };

    match args.format {
        TableFormat::Json => {
            let report = JsonExplain {
                policy: origin.describe(),
                path: &args.path,
                models: &args.model,
                seed: args.seed,
                plan: &plan,
                failing: &failing,
                answer,
            };
            outln!("{}", serde_json::to_string_pretty(&report)?)?;
        }
        TableFormat::Table => {
            let notes = notes(engine.providers(), &plan);
            let view = ExplainView {
                policy: &origin.describe(),
                strategies: engine.strategy_count(),
                path: &args.path,
                models: &args.model,
                plan: &plan,
                failing: &failing,
                notes: &notes,
            };
            std::io::stdout()
                .lock()
                .write_all(explain::text(&view).as_bytes())?;
        }
    }
    Ok(if answer.is_some() {
        Exit::Success
    } else {
        Exit::Failure
    })
}

fn matches_fail(a: &Attempt, fails: &[(String, Option<String>)], engine: &Engine) -> bool {
    fails.iter().any(|(p, m)| {
        let provider_matches = a.provider.eq_ignore_ascii_case(p)
            || engine
                .provider(&a.provider)
                .is_some_and(|info| info.aliases.iter().any(|x| x.eq_ignore_ascii_case(p)));
        provider_matches && m.as_ref().is_none_or(|m| a.model.eq_ignore_ascii_case(m))
    })
}

/// One line per provider in the plan whose URL was mapped, so the upstream column makes sense.
fn notes(providers: &[ProviderInfo], plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for p in providers {
        if !plan.attempts.iter().any(|a| a.provider == p.id) {
            continue;
        }
        match &p.origin {
            UrlOrigin::OllamaDefault { configured } => out.push(format!(
                "{} → {} (from {configured}; map it with --base-url {}=URL)",
                p.id,
                p.base_url.as_deref().unwrap_or("?"),
                p.id
            )),
            UrlOrigin::Override { configured } => out.push(format!(
                "{} → {} (--base-url{})",
                p.id,
                p.base_url.as_deref().unwrap_or("?"),
                configured
                    .as_ref()
                    .map(|c| format!(", instead of {c}"))
                    .unwrap_or_default()
            )),
            UrlOrigin::UnmappedInternal => out.push(format!(
                "{} → {} exists only inside ngrok; map it with --base-url {}=http://HOST:PORT",
                p.id,
                p.base_url.as_deref().unwrap_or("?"),
                p.id
            )),
            UrlOrigin::AsConfigured => {}
        }
    }
    out
}
