//! `--keep-warm DURATION`: the seed guide's "periodic requests" that keep models loaded. Every
//! half of DURATION, each policy model on each healthy Ollama box that has it installed gets a
//! load-only `POST /api/generate` with `keep_alive` = DURATION — skipped while a real request
//! is in flight or queued on that model (it keeps the model loaded by itself, and a warm-up must
//! never compete with it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Health;
use crate::gateway::Gateway;
use crate::providers::ollama::{KeepAlive, OllamaClient};

/// Keep-warm requests sent, by provider.
#[derive(Debug, Default)]
pub struct Warmed(Mutex<BTreeMap<String, u64>>);

impl Warmed {
    fn add(&self, provider: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(provider.to_string()).or_default() += 1;
    }

    pub fn count(&self, provider: &str) -> u64 {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(provider).copied().unwrap_or(0)
    }

    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.is_empty() {
            return;
        }
        out.push_str("# HELP aigw_keep_warm_total Load-only requests sent by --keep-warm.\n# TYPE aigw_keep_warm_total counter\n");
        for (p, n) in m.iter() {
            let _ = writeln!(
                out,
                "aigw_keep_warm_total{{provider=\"{}\"}} {n}",
                crate::gateway::observe::metrics::escape_label(p)
            );
        }
    }
}

/// One round: returns the `(provider, model)` pairs warmed.
pub async fn round(gw: &Gateway, keep: Duration) -> Vec<(String, String)> {
    let snap = gw.fleet.state.snapshot();
    let models = gw.current().policy_models();
    let keep_alive = KeepAlive::Seconds(keep.as_secs().max(1) as i64);
    let mut warmed = Vec::new();
    for (provider, model) in models {
        let Some(b) = snap.get(&provider) else {
            continue;
        };
        if !b.ollama || b.health == Health::Down || b.has_model(&model) != Some(true) {
            continue;
        }
        let limits = &gw.fleet.limits;
        if limits.in_flight_model(&provider, &model) > 0 || limits.queued(&provider) > 0 {
            continue;
        }
        let timeout = Duration::from_secs(300);
        match OllamaClient::new(&b.address, timeout)
            .load(&model, &keep_alive, timeout)
            .await
        {
            Ok(_) => {
                gw.fleet.warmed.add(&provider);
                warmed.push((provider, model));
            }
            Err(e) => tracing::warn!(target: "aigw::fleet", "keep-warm {provider}:{model}: {e}"),
        }
    }
    warmed
}

/// Warms every `keep / 2` until shutdown.
pub fn spawn(gw: Arc<Gateway>, keep: Duration) -> tokio::task::JoinHandle<()> {
    let every = (keep / 2).max(Duration::from_secs(1));
    tokio::spawn(async move {
        loop {
            round(&gw, keep).await;
            tokio::select! {
                _ = gw.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    })
}
