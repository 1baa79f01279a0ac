//! `aigw explain`: plan one request offline and show why.

use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::cli::{ColorChoice, ExplainArgs, TableFormat};
use crate::commands::{CommandError, Exit, common};
use crate::gateway;
use crate::gateway::attempts::simulate::{Step, Walk};
use crate::outln;
use crate::render::diagnostics as render_diag;
use crate::render::explain::{self, ExplainView};
use crate::routing::engine::{Engine, EngineOptions, ProviderInfo};
use crate::routing::plan::{Plan, PlanOptions, Request};
use crate::routing::upstream::UrlOrigin;

#[derive(Serialize)]
struct JsonExplain<'a> {
    policy: String,
    path: &'a str,
    models: &'a [String],
    seed: u64,
    #[serde(flatten)]
    plan: &'a Plan,
    /// Per attempt: simulated as failing (`--fail`).
    failing: &'a [bool],
    /// The dry run of the attempt loop, when `--fail` marked a candidate.
    #[serde(skip_serializing_if = "Option::is_none")]
    simulated: Option<&'a Walk>,
    answer: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_rules: Option<serde_json::Value>,
}

pub fn run(args: ExplainArgs, color: ColorChoice) -> Result<Exit, CommandError> {
    let (loaded, origin) = common::load_policy(args.policy.policy.as_deref())?;
    let secrets = common::secrets(args.policy.secrets.as_deref())?;
    let mut opts = EngineOptions {
        overrides: common::overrides(&args.policy),
        secrets,
        ..EngineOptions::default()
    };
    // `--live`: one round of serve's health checks, then the engine serve would build from it.
    let fleet = if args.live {
        let Ok((first, _)) = Engine::build(&loaded, opts.clone()) else {
            return Ok(report_errors(&loaded, color, &opts));
        };
        let snap = live_round(&first);
        opts.discovered = snap.installed();
        opts.live = gateway::fleet::live_view(&snap, &gateway::fleet::limit::Limits::default());
        Some(snap)
    } else {
        None
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
    let policy = match engine.traffic() {
        None => None,
        Some(program) => match request_view(&args) {
            Ok(view) => {
                let rate = crate::traffic::InProcess::default();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let ports = crate::traffic::Ports {
                    rate: &rate,
                    keys: &crate::traffic::jwt::LocalKeys,
                    now,
                };
                Some(program.on_request(&std::sync::Arc::new(view), ports))
            }
            Err(e) => return Err(e.into()),
        },
    };
    // A policy answer replaces routing: a refusal (4xx/5xx, a closed connection) exits 1.
    if let Some(out) = &policy
        && let crate::traffic::Stop::Reply(reply) = &out.stop
    {
        match args.format {
            TableFormat::Json => {
                let report = serde_json::json!({
                    "policy": origin.describe(),
                    "path": args.path,
                    "policy_rules": explain::policy_json(out),
                });
                outln!("{}", serde_json::to_string_pretty(&report)?)?;
            }
            TableFormat::Table => {
                outln!("policy    {}", origin.describe())?;
                outln!("request   {} {}", args.method, args.path)?;
                std::io::stdout()
                    .lock()
                    .write_all(explain::policy_text(out).as_bytes())?;
            }
        }
        let refused = match reply {
            crate::traffic::Reply::Respond { status, .. } => *status >= 400,
            crate::traffic::Reply::Close => true,
        };
        return Ok(if refused {
            Exit::Failure
        } else {
            Exit::Success
        });
    }
    let request = Request {
        path: args.path.clone(),
        model: args.model.first().cloned(),
        models: args.model.iter().skip(1).cloned().collect(),
    };
    let mut plan = engine.plan(&request, PlanOptions { seed: args.seed });
    if let Some(snap) = &fleet {
        plan = admitted(plan, request.model.as_deref(), snap);
    }
    let walk = common::simulate(&engine, &plan, &args.fail);
    let answer = if plan.error.is_some() {
        None
    } else {
        walk.answer
    };
    let failing: Vec<bool> = walk
        .steps
        .iter()
        .map(|s| matches!(s, Step::Fails { .. }))
        .collect();

    match args.format {
        TableFormat::Json => {
            let report = JsonExplain {
                policy: origin.describe(),
                path: &args.path,
                models: &args.model,
                seed: args.seed,
                plan: &plan,
                failing: &failing,
                simulated: walk.simulates().then_some(&walk),
                answer,
                policy_rules: policy.as_ref().map(explain::policy_json),
            };
            outln!("{}", serde_json::to_string_pretty(&report)?)?;
        }
        TableFormat::Table => {
            let mut notes = notes(engine.providers(), &plan);
            if let Some(snap) = &fleet {
                notes.extend(box_notes(snap));
            }
            let view = ExplainView {
                policy: &origin.describe(),
                strategies: engine.strategy_count(),
                path: &args.path,
                models: &args.model,
                plan: &plan,
                walk: &walk,
                notes: &notes,
            };
            let mut out = std::io::stdout().lock();
            out.write_all(explain::text(&view).as_bytes())?;
            if let Some(rules) = &policy {
                out.write_all(explain::policy_text(rules).as_bytes())?;
            }
        }
    }
    Ok(if answer.is_some() {
        Exit::Success
    } else {
        Exit::Failure
    })
}

/// Checks every provider of `engine` once, as serve's first round does.
fn live_round(engine: &Engine) -> gateway::fleet::FleetSnapshot {
    use gateway::fleet::{FleetState, check, state::LocalFleetState};
    let state = LocalFleetState::default();
    let targets = check::targets(&gateway::Routing::providers(engine));
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(check::round(
            &state,
            &targets,
            std::time::Duration::from_secs(2),
        )),
        Err(e) => eprintln!("warning: --live: cannot start the async runtime: {e}"),
    }
    (*state.snapshot()).clone()
}

/// The plan serve would run: candidates the fleet cannot serve left out, or its error.
fn admitted(plan: Plan, requested: Option<&str>, snap: &gateway::fleet::FleetSnapshot) -> Plan {
    use gateway::fleet::admit;
    let verdict = if plan.error.is_some() || plan.attempts.is_empty() {
        requested
            .and_then(|m| admit::unplanned(m, snap))
            .map_or(Ok(None), Err)
    } else {
        admit::admit(&plan, snap)
    };
    match verdict {
        Ok(None) => plan,
        Ok(Some(p)) => p,
        Err(e) => {
            let mut p = plan;
            p.left_out
                .extend(p.attempts.drain(..).map(|a| crate::routing::plan::LeftOut {
                    model: format!("{}:{}", a.provider, a.model),
                    reason: "not served now (see the error)".into(),
                }));
            p.error = Some(crate::routing::plan::PlanError {
                code: e.code,
                status: e.status,
                message: e.message,
            });
            p
        }
    }
}

/// One note per checked box: its health and what it has.
fn box_notes(snap: &gateway::fleet::FleetSnapshot) -> Vec<String> {
    snap.boxes
        .iter()
        .map(|b| {
            let what = match (&b.version, &b.installed) {
                (Some(v), Some(i)) => format!(
                    ", Ollama {v}, {} installed{}",
                    i.len(),
                    if b.loaded.is_empty() {
                        String::new()
                    } else {
                        format!(", loaded: {}", b.loaded.join(", "))
                    }
                ),
                _ => String::new(),
            };
            let why = b
                .last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            format!(
                "{} {} {}{why}{what}",
                b.provider,
                b.address,
                b.health.as_str()
            )
        })
        .collect()
}

fn report_errors(loaded: &crate::policy::Loaded, color: ColorChoice, opts: &EngineOptions) -> Exit {
    if let Err(diags) = Engine::build(loaded, opts.clone()) {
        let style = common::style(color, std::io::stderr().is_terminal());
        for d in diags.iter().filter(|d| d.is_error()) {
            eprint!("{}", render_diag::human(d, &loaded.source, style));
        }
        eprintln!("error: the policy has errors; fix them first (`aigw validate` shows them all)");
    }
    Exit::Failure
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

/// The request `--method`, `--path`, `--header` and `--client-ip` describe.
/// A `--header` that is not `Name: value`.
#[derive(Debug, thiserror::Error)]
pub enum HeaderArgError {
    #[error(
        "--header {0:?} has no `:`; write it as 'Name: value', e.g. --header 'Authorization: Bearer t'"
    )]
    NoColon(String),
    #[error("--header {0:?} has no valid header name before the `:`")]
    NoName(String),
}

fn request_view(args: &ExplainArgs) -> Result<crate::traffic::RequestView, HeaderArgError> {
    let client = std::net::SocketAddr::new(args.client_ip, 50000);
    let mut view = crate::traffic::RequestView::new(&args.method, &args.path, client);
    view.host = "127.0.0.1:8080".to_owned();
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            return Err(HeaderArgError::NoColon(h.clone()));
        };
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(HeaderArgError::NoName(h.clone()));
        }
        view = view.header(name, value.trim());
    }
    Ok(view)
}
