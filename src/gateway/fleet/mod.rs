//! Many Ollamas: what aigw knows about each provider box, and what it does with it.
//!
//! - [`state`]: per-box health (healthy / degraded / down), installed and loaded models, behind
//!   the [`FleetState`] trait (in-process by default).
//! - [`check`]: active checks on an interval with backoff; real traffic reports through
//!   [`Fleet::traffic`].
//! - [`admit`]: drops the candidates the fleet cannot serve before the attempt loop, and words
//!   the 404 (`ollama pull`) and 503 (`aigw probe`) when none is left.
//! - [`readiness`]: the `/readyz` decision.
//!
//! Until checks run (`Fleet::start_checking`), nothing here changes routing: in-process tests and
//! a gateway without checks route exactly as before.

pub mod admit;
pub mod check;
pub mod limit;
pub mod readiness;
pub mod state;
pub mod warm;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::gateway::shared::{Event, Outbox};

pub use state::{BoxStatus, CheckResult, FleetSnapshot, FleetState, Health, Passive};

/// The gateway's view of its boxes.
pub struct Fleet {
    pub state: Arc<dyn FleetState>,
    /// `--max-in-flight` slots and queues, and in-flight counts.
    pub limits: limit::Limits,
    /// Keep-warm requests sent (`--keep-warm`).
    pub warmed: warm::Warmed,
    checking: AtomicBool,
    /// Where boxes going down or coming back (as real traffic found) go for the other
    /// replicas (`--state`).
    outbox: Outbox,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new(
            Arc::new(state::LocalFleetState::default()),
            limit::LimitOptions::default(),
        )
    }
}

impl Fleet {
    pub fn new(state: Arc<dyn FleetState>, limits: limit::LimitOptions) -> Fleet {
        Fleet {
            state,
            limits: limit::Limits::new(limits),
            warmed: warm::Warmed::default(),
            checking: AtomicBool::new(false),
            outbox: Outbox::default(),
        }
    }

    /// Shares what real traffic finds about boxes through `outbox`.
    pub fn with_outbox(mut self, outbox: Outbox) -> Self {
        self.outbox = outbox;
        self
    }

    /// Applies what another replica's traffic found: a box it could not reach is down here
    /// too until this replica's own check or request says otherwise; one it reached again is
    /// healthy. Only for the same address (replicas may map a provider differently).
    pub fn apply(&self, event: &Event) {
        let snap = self.state.snapshot();
        match event {
            Event::BoxDown {
                provider,
                address,
                reason,
            } if snap
                .get(provider)
                .is_some_and(|b| &b.address == address && b.health != Health::Down) =>
            {
                self.state.record_check(
                    provider,
                    CheckResult::Unreachable(format!("{reason} (through another replica)")),
                );
            }
            Event::BoxUp { provider, address }
                if snap.get(provider).is_some_and(|b| {
                    &b.address == address && matches!(b.health, Health::Down | Health::Degraded)
                }) =>
            {
                self.state.record_traffic(provider, Passive::Answered);
            }
            _ => {}
        }
    }

    /// Active checks run from now on: health and installed models decide routing.
    pub fn start_checking(&self) {
        self.checking.store(true, Ordering::Release);
    }

    pub fn checking(&self) -> bool {
        self.checking.load(Ordering::Acquire)
    }

    /// The current state, when it decides routing (`None` before checks run).
    pub fn live(&self) -> Option<Arc<FleetSnapshot>> {
        self.checking().then(|| self.state.snapshot())
    }

    /// A real request's outcome (a no-op before checks run).
    pub fn traffic(&self, provider: &str, outcome: Passive) {
        if !self.checking() {
            return;
        }
        if !self.outbox.is_on() {
            self.state.record_traffic(provider, outcome);
            return;
        }
        let before = self.state.snapshot().get(provider).map(|b| b.health);
        self.state.record_traffic(provider, outcome);
        let snap = self.state.snapshot();
        let (Some(before), Some(b)) = (before, snap.get(provider)) else {
            return;
        };
        let went_down = before != Health::Down && b.health == Health::Down;
        let came_back =
            matches!(before, Health::Down | Health::Degraded) && b.health == Health::Healthy;
        if went_down {
            self.outbox.send(Event::BoxDown {
                provider: provider.to_string(),
                address: b.address.clone(),
                reason: b
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "real requests could not reach it".into()),
            });
        } else if came_back {
            self.outbox.send(Event::BoxUp {
                provider: provider.to_string(),
                address: b.address.clone(),
            });
        }
    }

    /// The engine's providers, with every box that answered Ollama's API marked as Ollama
    /// whatever its id (the engine only guesses from ids and host names).
    pub fn providers(
        &self,
        routing: &dyn crate::gateway::Routing,
    ) -> Vec<crate::gateway::ProviderView> {
        let mut providers = routing.providers();
        if self.checking() {
            let snap = self.state.snapshot();
            for p in providers.iter_mut().filter(|p| !p.ollama) {
                p.ollama = snap.get(&p.id).is_some_and(|b| b.ollama);
            }
        }
        providers
    }

    /// Prometheus lines: one `aigw_provider_health{provider,state}` gauge per box and state.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        let snap = self.state.snapshot();
        let mut out = String::new();
        self.limits.render_metrics(&mut out);
        self.warmed.render(&mut out);
        if snap.boxes.is_empty() {
            return out;
        }
        out.push_str(
            "# HELP aigw_provider_health 1 for the provider's current health state (active checks and real traffic)\n\
             # TYPE aigw_provider_health gauge\n",
        );
        for b in &snap.boxes {
            for h in Health::ALL {
                let _ = writeln!(
                    out,
                    "aigw_provider_health{{provider=\"{}\",state=\"{}\"}} {}",
                    crate::gateway::metrics::escape_label(&b.provider),
                    h.as_str(),
                    u8::from(b.health == h)
                );
            }
        }
        out
    }
}

/// What [`execute`](crate::gateway::forward::execute) runs before the attempt loop: the plan
/// with the candidates the fleet cannot serve dropped (reasons in `left_out`), or the error
/// that says what to do. Without checks running the plan passes unchanged.
pub fn admit_plan(
    fleet: &Fleet,
    plan: Arc<crate::routing::plan::Plan>,
    requested: Option<&str>,
) -> Result<Arc<crate::routing::plan::Plan>, crate::gateway::errors::GatewayError> {
    let Some(snap) = fleet.live() else {
        return Ok(plan);
    };
    let verdict = if plan.error.is_some() || plan.attempts.is_empty() {
        match requested.and_then(|m| admit::unplanned(m, &snap)) {
            Some(e) => Err(e),
            None => Ok(None),
        }
    } else {
        admit::admit(&plan, &snap)
    };
    match verdict {
        Ok(None) => Ok(plan),
        Ok(Some(p)) => Ok(Arc::new(p)),
        Err(e) => Err(crate::gateway::errors::GatewayError::new(
            (e.code, e.status),
            e.message,
        )),
    }
}

/// Checks every box once now (start-up), then keeps checking on their schedule until shutdown.
/// `on_installed` runs after a round that changed some box's installed models.
pub async fn start(
    gw: Arc<crate::gateway::Gateway>,
    opts: check::CheckOptions,
    on_installed: Option<check::InstalledChanged>,
) -> tokio::task::JoinHandle<()> {
    let targets = check::targets(&gw.current().providers());
    check::round(gw.fleet.state.as_ref(), &targets, opts.timeout).await;
    gw.fleet.start_checking();
    if let Some(hook) = &on_installed {
        hook(&gw.fleet.state.snapshot());
    }
    let state = gw.fleet.state.clone();
    let stop = gw.shutdown.clone();
    let source = gw.clone();
    tokio::spawn(check::run(
        move || source.current().providers(),
        state,
        opts,
        on_installed,
        stop,
    ))
}

/// What serve prints after the start-up round (and after a reload): boxes that do not answer,
/// with the next step, and policy models installed on no box, with the `ollama pull` line.
pub fn startup_lines(
    snap: &FleetSnapshot,
    policy_models: &[(String, String)],
    ollama_ids: &[String],
    interval: std::time::Duration,
) -> Vec<String> {
    let mut lines = Vec::new();
    let every = crate::policy::duration::format(interval);
    for b in snap.boxes.iter().filter(|b| b.health == Health::Down) {
        let why = b.last_error.as_deref().unwrap_or("it does not answer");
        let hint = if ollama_ids.contains(&b.provider) {
            " → is `ollama serve` running there?"
        } else {
            ""
        };
        lines.push(format!(
            "warning: provider `{}` at {} does not answer: {why}{hint} (aigw checks again every {every}, \
             backing off; `aigw probe` checks each box)",
            b.provider, b.address
        ));
    }
    let ollama_boxes: Vec<&BoxStatus> = snap
        .boxes
        .iter()
        .filter(|b| ollama_ids.contains(&b.provider) || b.ollama)
        .collect();
    if !ollama_boxes.is_empty() && ollama_boxes.iter().all(|b| b.health == Health::Down) {
        lines.push(
            "warning: no Ollama box answers: requests for Ollama models get 503 naming each address until one \
             does; /readyz says 503 meanwhile"
                .to_string(),
        );
    }
    let r = readiness::readiness(readiness::Inputs {
        fleet: snap,
        policy_models,
        draining: false,
    });
    for m in r.models_missing {
        lines.push(format!(
            "warning: model `{}` is in the policy ({}) but installed on no Ollama box → {}",
            m.model,
            m.providers.join(", "),
            m.fix
        ));
    }
    lines
}

/// `m.aigw` figures for the engine: each box's health, the names its installed models answer
/// to, and its requests in flight and queued now.
pub fn live_view(
    snap: &FleetSnapshot,
    limits: &limit::Limits,
) -> std::collections::HashMap<String, crate::routing::engine::LiveProvider> {
    snap.boxes
        .iter()
        .map(|b| {
            let installed = b.installed.as_ref().map(|names| {
                let mut all = std::collections::HashSet::new();
                for n in names {
                    let n = n.to_ascii_lowercase();
                    if let Some(plain) = n.strip_suffix(":latest") {
                        all.insert(plain.to_string());
                    }
                    all.insert(n);
                }
                all
            });
            (
                b.provider.clone(),
                crate::routing::engine::LiveProvider {
                    health: b.health.as_str().to_string(),
                    installed,
                    in_flight: limits.in_flight(&b.provider) as u64,
                    queued: limits.queued(&b.provider) as u64,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::engine::{Engine, EngineOptions};
    use crate::routing::plan::{PlanOptions, Request};

    const POLICY: &str = "on_http_request:\n  - type: ai-gateway\n    config:\n      only_allow_configured_providers: true\n      providers:\n        - id: a\n          base_url: http://127.0.0.1:1\n          models: [{id: llama3.2}]\n        - id: b\n          base_url: http://127.0.0.1:2\n          models: [{id: llama3.2}]\n      model_selection:\n        strategy:\n          - \"ai.models.filter(m, m.aigw.health != 'down' && m.aigw.installed).sortBy(m, m.aigw.in_flight + m.aigw.queued)\"\n";

    fn order(
        live: std::collections::HashMap<String, crate::routing::engine::LiveProvider>,
    ) -> Vec<String> {
        let loaded = crate::policy::load_str("p.yaml", POLICY);
        let (engine, diags) = Engine::build(
            &loaded,
            EngineOptions {
                live,
                ..EngineOptions::default()
            },
        )
        .unwrap_or_else(|d| panic!("{d:?}"));
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        let req = Request {
            path: "/v1/chat/completions".into(),
            model: None,
            models: Vec::new(),
        };
        engine.plan(&req, PlanOptions::default()).order()
    }

    #[test]
    fn strategies_read_health_installed_and_load_from_m_aigw() {
        // Offline every box reads as healthy and idle: config order.
        assert_eq!(order(Default::default()), ["a:llama3.2", "b:llama3.2"]);
        let s = state::LocalFleetState::default();
        s.track("a", "http://127.0.0.1:1");
        s.track("b", "http://127.0.0.1:2");
        let limits = limit::Limits::new(limit::LimitOptions::default());
        let ollama = |m: &[&str]| CheckResult::Ollama {
            version: "1".into(),
            installed: m.iter().map(|s| s.to_string()).collect(),
            loaded: Vec::new(),
        };
        s.record_check("a", ollama(&["llama3.2:latest"]));
        s.record_check("b", ollama(&["llama3.2:latest"]));
        // Least busy first: a has a request in flight.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (_slot, _) = rt
            .block_on(limits.acquire("a", "llama3.2", std::time::Duration::ZERO))
            .unwrap();
        assert_eq!(
            order(live_view(&s.snapshot(), &limits)),
            ["b:llama3.2", "a:llama3.2"]
        );
        // Down or without the model: filtered out by the strategy.
        s.record_check("b", CheckResult::Unreachable("refused".into()));
        assert_eq!(order(live_view(&s.snapshot(), &limits)), ["a:llama3.2"]);
        s.record_check("b", ollama(&["qwen2.5:latest"]));
        assert_eq!(order(live_view(&s.snapshot(), &limits)), ["a:llama3.2"]);
    }
}
