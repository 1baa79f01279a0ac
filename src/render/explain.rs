//! `aigw explain` as text: the request, each strategy, the ordered candidates, what was left out.

use comfy_table::{Cell, ContentArrangement, Table, presets};

use crate::gateway::attempts::simulate::{Step, Walk};
use crate::routing::plan::{Plan, StrategyOutcome};

/// Inputs the renderer needs besides the plan.
pub struct ExplainView<'a> {
    pub policy: &'a str,
    pub strategies: usize,
    pub path: &'a str,
    pub models: &'a [String],
    pub plan: &'a Plan,
    /// The attempt loop's dry run (`--fail`).
    pub walk: &'a Walk,
    /// Notes to print first (provider mappings).
    pub notes: &'a [String],
}

pub fn text(v: &ExplainView) -> String {
    let mut out = String::new();
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    let strategies = match v.strategies {
        0 => "no strategies".to_string(),
        1 => "1 strategy".to_string(),
        n => format!("{n} strategies"),
    };
    out += &format!("policy    {} ({strategies})\n", v.policy);
    let model = if v.models.is_empty() {
        "(none: strategies choose)".to_string()
    } else {
        v.models
            .iter()
            .map(|m| format!("model={m}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    out += &format!("request   POST {}  {model}\n", v.path);
    for r in &v.plan.requested {
        if let Some(p) = &r.provider {
            out += &format!(
                "          {} → provider `{p}`, model `{}`\n",
                r.text, r.model
            );
        }
    }
    for n in v.notes {
        out += &format!("note      {n}\n");
    }

    if !v.plan.strategies.is_empty() {
        out += "\nstrategies\n";
        let mut t = table();
        for (i, s) in v.plan.strategies.iter().enumerate() {
            let (count, mark) = match &s.outcome {
                StrategyOutcome::Evaluated {
                    returned,
                    after_client_filter,
                    ..
                } => {
                    let count = if returned.len() == after_client_filter.len() {
                        plural(returned.len(), "model")
                    } else {
                        format!(
                            "{} → {} after filters",
                            plural(returned.len(), "model"),
                            after_client_filter.len()
                        )
                    };
                    (count, if s.chosen { "← used" } else { "" })
                }
                StrategyOutcome::Failed { .. } => ("error".to_string(), "✗"),
                StrategyOutcome::NotEvaluated => ("not evaluated".to_string(), ""),
            };
            t.add_row(vec![
                Cell::new(format!("{}", i + 1)),
                Cell::new(&s.expression),
                Cell::new(count),
                Cell::new(mark),
            ]);
        }
        out += &indent(&t.to_string());
        for s in &v.plan.strategies {
            if let StrategyOutcome::Failed { error } = &s.outcome {
                out += &format!("  error: {error}\n");
            }
        }
    }

    if !v.plan.attempts.is_empty() {
        out += "\ncandidates (tried in this order)\n";
        let mut t = table();
        let simulate = v.walk.simulates();
        let mut header = vec!["#", "provider", "model", "upstream", "key"];
        if simulate {
            header.push("simulated");
        }
        t.set_header(header);
        for (i, a) in v.plan.attempts.iter().enumerate() {
            let mut row = vec![
                Cell::new(i + 1),
                Cell::new(&a.provider),
                Cell::new(&a.model),
                Cell::new(a.url.as_deref().unwrap_or("(no base_url)")),
                Cell::new(a.key.label()),
            ];
            if simulate {
                row.push(Cell::new(v.walk.steps.get(i).map_or(String::new(), step)));
            }
            t.add_row(row);
        }
        out += &indent(&t.to_string());
        if v.plan.truncated > 0 {
            out += &format!("  … and {} more beyond the attempt cap\n", v.plan.truncated);
        }
    }

    if !v.plan.left_out.is_empty() {
        out += "\nleft out\n";
        let mut t = table();
        for l in &v.plan.left_out {
            t.add_row(vec![Cell::new(&l.model), Cell::new(&l.reason)]);
        }
        out += &indent(&t.to_string());
    }

    out += "\n";
    out += &verdict(v);
    out += "\n";
    out
}

/// The last line: where the request goes, or the error a client would get.
pub fn verdict(v: &ExplainView) -> String {
    if let Some(e) = &v.plan.error {
        return format!(
            "no candidate: {} (HTTP {}): {}",
            e.code, e.status, e.message
        );
    }
    if let Some(f) = v.walk.final_at {
        let (a, status) = (&v.plan.attempts[f.index], f.status);
        return format!(
            "final: {}:{} refused the request; a client would get its HTTP {status}, and no other candidate is tried",
            a.provider, a.model
        );
    }
    let failed = v
        .walk
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Fails { .. }))
        .count();
    match v.walk.answer {
        Some(i) => {
            let a = &v.plan.attempts[i];
            if failed == 0 {
                format!("→ {}:{}", a.provider, a.model)
            } else {
                format!(
                    "→ {}:{} after {} simulated failure{}",
                    a.provider,
                    a.model,
                    failed,
                    if failed == 1 { "" } else { "s" }
                )
            }
        }
        None => format!(
            "all {} failed: ERR_NGROK_3807 (a client would get HTTP 503)",
            plural_candidates(v.plan.attempts.len())
        ),
    }
}

/// One candidate's cell in the `simulated` column: the failure, how often it was sent, and
/// its class (what serve does next).
fn step(s: &Step) -> String {
    match s {
        Step::Answers => "← answers".into(),
        Step::Fails {
            error,
            class,
            sends,
        } => {
            let sent = match sends {
                1 => String::new(),
                2 => ", sent twice".into(),
                n => format!(", sent {n} times"),
            };
            format!("{error}{sent} → {class}")
        }
        Step::Skipped => "skipped: this model refused or was silent".into(),
        Step::NotTried => String::new(),
    }
}

fn plural_candidates(n: usize) -> String {
    if n == 1 {
        "1 candidate".into()
    } else {
        format!("{n} candidates")
    }
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    t
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {}\n", l.trim_end())).collect()
}

/// The policy's `on_http_request` rules for `explain`: each rule, whether it matched, what its
/// actions did, and where the phase stopped.
pub fn policy_text(out: &crate::traffic::Outcome) -> String {
    use crate::traffic::{Reply, Stop};
    use std::fmt::Write as _;
    let mut s = String::from("\npolicy rules (on_http_request)\n");
    for t in &out.trace {
        let name = t
            .name
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        let state = match (&t.error, t.matched) {
            (Some(e), _) => format!("error: {e}"),
            (None, true) => "matched".to_owned(),
            (None, false) => "no match".to_owned(),
        };
        let _ = writeln!(s, "  {:>2}{name}  {state}", t.index);
        for a in &t.actions {
            let _ = writeln!(s, "        {}: {}", a.kind, a.outcome);
        }
    }
    let result = match &out.stop {
        Stop::Reply(Reply::Respond {
            status, headers, ..
        }) => {
            let hs: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            if hs.is_empty() {
                format!("→ the policy answers {status}")
            } else {
                format!("→ the policy answers {status} ({})", hs.join(", "))
            }
        }
        Stop::Reply(Reply::Close) => "→ the policy closes the connection".to_owned(),
        Stop::AiGateway { .. } => "→ ai-gateway routes the request".to_owned(),
        Stop::End => "→ no rule answered: aigw routes the request".to_owned(),
    };
    let _ = writeln!(s, "  {result}");
    for e in &out.edits {
        let _ = match e {
            crate::traffic::HeaderEdit::Add(k, v) => writeln!(s, "    adds header {k}: {v}"),
            crate::traffic::HeaderEdit::Remove(k) => writeln!(s, "    removes header {k}"),
        };
    }
    s
}

/// The same, as JSON.
pub fn policy_json(out: &crate::traffic::Outcome) -> serde_json::Value {
    use crate::traffic::{HeaderEdit, Reply, Stop};
    let result = match &out.stop {
        Stop::Reply(Reply::Respond {
            status,
            headers,
            body,
        }) => serde_json::json!({"answer": "policy", "status": status,
            "headers": headers.iter().map(|(k, v)| serde_json::json!([k, v])).collect::<Vec<_>>(), "body": body}),
        Stop::Reply(Reply::Close) => serde_json::json!({"answer": "close-connection"}),
        Stop::AiGateway { .. } => serde_json::json!({"answer": "ai-gateway"}),
        Stop::End => serde_json::json!({"answer": "routing"}),
    };
    let edits: Vec<serde_json::Value> = out
        .edits
        .iter()
        .map(|e| match e {
            HeaderEdit::Add(k, v) => serde_json::json!({"add": k, "value": v}),
            HeaderEdit::Remove(k) => serde_json::json!({"remove": k}),
        })
        .collect();
    serde_json::json!({"rules": out.trace, "result": result, "header_edits": edits})
}
