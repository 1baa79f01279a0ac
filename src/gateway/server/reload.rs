//! Policy reload: poll the file about once a second (no watcher crate needed); a valid new policy
//! is swapped in atomically (requests in flight keep the engine they started with); an invalid
//! one is reported on stderr with validate's diagnostics and the previous one keeps serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::gateway::Gateway;
use crate::gateway::Routing;

/// Builds an engine from a policy file: `Ok(engine, rendered warnings)` or `Err(rendered
/// diagnostics)`.
pub type Builder = Arc<dyn Fn(&Path) -> Result<(Arc<dyn Routing>, String), String> + Send + Sync>;

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
        let mut last = std::fs::read(&path).ok();
        loop {
            tokio::select! {
                _ = gw.shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let Ok(now) = tokio::fs::read(&path).await else {
                continue;
            };
            if last.as_deref() == Some(now.as_slice()) {
                continue;
            }
            last = Some(now);
            let (p, b) = (path.clone(), build.clone());
            let built = tokio::task::spawn_blocking(move || b(&p)).await;
            match built {
                Ok(Ok((routing, warnings))) => {
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
