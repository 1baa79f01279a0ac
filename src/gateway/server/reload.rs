//! Policy reload: poll the file about once a second (no watcher crate needed); a valid new policy
//! is swapped in atomically (requests in flight keep the engine they started with); an invalid
//! one is reported on stderr with validate's diagnostics and the previous one keeps serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::gateway::Gateway;
use crate::gateway::Routing;

/// Builds an engine from a policy file's path and the bytes read from it: `Ok(engine, rendered
/// warnings)` or why it was rejected.
pub type Builder =
    Arc<dyn Fn(&Path, &[u8]) -> Result<(Arc<dyn Routing>, String), Rejected> + Send + Sync>;

/// A policy that cannot serve: validate's diagnostics, rendered for stderr, or why the file
/// could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{rendered}")]
pub struct Rejected {
    pub rendered: String,
}

/// Rebuilds the engine with a traffic snapshot (`None`: nothing to change).
pub type MetricsRebuilder = Arc<
    dyn Fn(HashMap<(String, String), crate::routing::cel::ModelMetrics>) -> Option<Arc<dyn Routing>>
        + Send
        + Sync,
>;

/// Every `interval`, when attempts were recorded since the last time, rebuilds the engine with
/// fresh `m.metrics` figures and swaps it in (the rebuilder declines for policies that never
/// read metrics).
pub fn spawn_metrics(
    gw: Arc<Gateway>,
    interval: Duration,
    rebuild: MetricsRebuilder,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = gw.traffic.version();
        loop {
            tokio::select! {
                _ = gw.shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let now = gw.traffic.version();
            if now == last {
                continue;
            }
            last = now;
            let snapshot = gw.traffic.snapshot();
            let r = rebuild.clone();
            if let Ok(Some(routing)) = tokio::task::spawn_blocking(move || r(snapshot)).await {
                gw.swap(routing);
                tracing::debug!(target: "aigw::metrics", "engine refreshed with live metrics");
            }
        }
    })
}

/// Watches `path` until the gateway shuts down.
pub fn spawn(
    gw: Arc<Gateway>,
    path: PathBuf,
    interval: Duration,
    build: Builder,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // At most one byte past the policy limit is read: enough to see a change, and the
        // builder refuses the oversized file with its own message.
        let limit = crate::policy::MAX_POLICY_BYTES + 1;
        let mut last = crate::policy::read_prefix(&path, limit).ok();
        loop {
            tokio::select! {
                _ = gw.shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let p = path.clone();
            let Ok(Ok(now)) =
                tokio::task::spawn_blocking(move || crate::policy::read_prefix(&p, limit)).await
            else {
                continue;
            };
            if last.as_deref() == Some(now.as_slice()) {
                continue;
            }
            // Built from the very bytes compared: a second read could catch a write half-way.
            last = Some(now.clone());
            let (p, b) = (path.clone(), build.clone());
            let built = tokio::task::spawn_blocking(move || b(&p, &now)).await;
            match built {
                Ok(Ok((routing, warnings))) => {
                    gw.fetch_keys(routing.as_ref()).await;
                    gw.swap(routing);
                    gw.metrics.reload("ok");
                    if !warnings.is_empty() {
                        eprint!("{warnings}");
                    }
                    eprintln!("aigw: reloaded {}", path.display());
                    tracing::info!(target: "aigw::reload", path = %path.display(), "policy reloaded");
                }
                Ok(Err(diagnostics)) => {
                    gw.metrics.reload("error");
                    eprint!("{diagnostics}");
                    eprintln!(
                        "aigw: {} has errors; still serving the previous policy",
                        path.display()
                    );
                    tracing::warn!(target: "aigw::reload", path = %path.display(), "policy has errors; kept the previous one");
                }
                Err(e) => tracing::error!(target: "aigw::reload", "reload task failed: {e}"),
            }
        }
    })
}
