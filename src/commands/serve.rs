//! `aigw serve`: parse flags, load the policy, build the engine, print the banner, run the gateway.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{ColorChoice, LogFormat, ServeArgs};
use crate::commands::common::{self, PolicyOrigin};
use crate::commands::{CommandError, Exit};
use crate::gateway::server::reload::Rejected;
use crate::gateway::{self, Gateway, GatewayOptions, ProviderView, Routing};
use crate::outln;
use crate::policy::{self, Loaded};
use crate::render::diagnostics::{Style, human};
use crate::routing::engine::{Engine, EngineOptions};
use crate::routing::upstream::UrlOrigin;

pub fn run(args: ServeArgs, color: ColorChoice) -> Result<Exit, CommandError> {
    let (log_guard, access_log) = init_logging(args.log_format, color);
    let style = common::style(color, std::io::stderr().is_terminal());
    check_bind(&args.listen, args.auth_token.as_deref())?;
    let secrets = common::secrets(args.policy.secrets.as_deref())?;
    let (loaded, origin) = common::load_policy(args.policy.policy.as_deref())?;
    let factory = Arc::new(EngineFactory::new(
        common::overrides(&args.policy),
        secrets.clone(),
        args.max_attempts,
        style,
    ));
    // Worker 0 (see gateway::server::workers): the accept loop, reloads and signals run here too.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CommandError::Runtime)?;
    let started = Started {
        factory,
        loaded,
        origin,
        secrets,
    };
    let exit = runtime.block_on(serve(args, started, access_log));
    // The last request lines first, then the last word.
    drop(log_guard);
    if matches!(exit, Ok(Exit::Success)) {
        eprintln!("aigw: stopped");
    }
    exit
}

/// What `run` prepared before the runtime starts.
struct Started {
    factory: Arc<EngineFactory>,
    loaded: Loaded,
    origin: PolicyOrigin,
    secrets: crate::policy::secrets::SecretStore,
}

/// Builds the engine (asking Ollama providers what they hold), binds, prints the banner and
/// serves until a shutdown signal.
async fn serve(
    args: ServeArgs,
    started: Started,
    access_log: Option<gateway::observe::access_log::AccessLog>,
) -> Result<Exit, CommandError> {
    let Started {
        factory,
        loaded,
        origin,
        secrets,
    } = started;
    let (routing, warnings) = match factory.build(&loaded, Default::default()) {
        Ok(r) => r,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            eprintln!("aigw: {} has errors; not serving", origin.describe());
            return Ok(Exit::Error);
        }
    };
    eprint!("{warnings}");
    let ids: Vec<String> = routing.providers().into_iter().map(|p| p.id).collect();
    if let Some((id, _)) = args.max_in_flight.iter().find(|(id, _)| !ids.contains(id)) {
        return Err(CommandError::UnknownLimitedProvider {
            id: id.clone(),
            providers: ids.join(", "),
        });
    }
    let opts = gateway_options(&args, access_log);
    let addr = args.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CommandError::Listen { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    let builtins_allowed = !routing.gateway().only_configured_providers();
    let gw = Gateway::new(routing, secrets, opts);
    // The first round of health checks: installed models become routable before the first
    // request, and what is down or missing is said now.
    let checks = gateway::fleet::check::CheckOptions {
        interval: args.health_interval.0,
        ..Default::default()
    };
    factory.set_fleet(gw.fleet.state.clone(), args.health_interval.0);
    let _checker = gateway::fleet::start(
        gw.clone(),
        checks,
        Some(factory.clone().rediscoverer(gw.clone())),
    )
    .await;
    if let Some(keep) = args.keep_warm {
        gateway::fleet::warm::spawn(gw.clone(), keep.0);
    }
    let providers = gw.current().providers();
    // A closed stdout must not stop the gateway: the banner is only information.
    let _ = outln!("{}", banner(local, &origin, &providers, builtins_allowed));
    for line in factory.fleet_lines(gw.current().as_ref()) {
        eprintln!("{line}");
    }
    for (id, url) in gateway::server::hops::self_pointing(&providers, local).await {
        eprintln!(
            "warning: provider `{id}` has base_url {url}, which is this aigw's own address ({local}): requests \
             routed to it would loop back here and are refused with 508 Loop Detected; point it (or its \
             --base-url mapping) at the real upstream"
        );
    }
    if let PolicyOrigin::File(path) = &origin
        && !args.no_reload
        && path != Path::new("-")
    {
        let build = factory.clone().reload_builder();
        gateway::server::reload::spawn(
            gw.clone(),
            PathBuf::from(path),
            Duration::from_secs(1),
            build,
        );
    }
    gateway::server::reload::spawn_metrics(
        gw.clone(),
        Duration::from_secs(5),
        factory.clone().metrics_rebuilder(),
    );
    gateway::serve(listener, gw, shutdown_signal())
        .await
        .map_err(CommandError::Serve)?;
    Ok(Exit::Success)
}

/// The gateway's options from the flags, with the connection cap decided from the open-file
/// limit (raised to the hard limit first).
fn gateway_options(
    args: &ServeArgs,
    access_log: Option<gateway::observe::access_log::AccessLog>,
) -> GatewayOptions {
    let open_files = gateway::server::open_files::raise()
        .inspect_err(|e| tracing::debug!("open-file limit not raised: {e}"))
        .ok();
    let max_connections = match (args.max_connections, open_files) {
        (0, Some(limit)) => gateway::server::open_files::connection_cap(limit),
        (n, _) => n,
    };
    if let Some(w) =
        open_files.and_then(|l| gateway::server::open_files::warning(l, max_connections))
    {
        eprintln!("{w}");
    }
    GatewayOptions {
        auth_token: args.auth_token.clone().filter(|t| !t.is_empty()),
        max_attempts: args.max_attempts,
        first_byte_timeout: args.first_byte_timeout.map(|d| d.0),
        cold_start_timeout: args.cold_start_timeout.0,
        stream_idle_timeout: args.stream_idle_timeout.0,
        stream_continuation: !args.no_stream_continuation,
        max_body_bytes: args.max_body_bytes,
        header_read_timeout: args.header_read_timeout.0,
        body_read_timeout: args.body_read_timeout.0,
        retry: gateway::attempts::failure::RetryOptions {
            rate_limit_retries: args.rate_limit_retries,
            max_wait: args.max_retry_wait.0,
            same_pair_retries: args.same_pair_retries,
            ..Default::default()
        },
        breaker: gateway::attempts::breaker::BreakerOptions {
            failures: args.breaker_failures,
            cooldown: args.breaker_cooldown.0,
        },
        access_log,
        limits: gateway::fleet::limit::LimitOptions {
            max_in_flight: args.max_in_flight.iter().cloned().collect(),
            queue_depth: args.queue_depth,
            queue_timeout: args.queue_timeout.0,
        },
        max_connections,
        drain_timeout: args.drain_timeout.0,
        state: args.state.clone(),
        workers: match args.workers {
            0 => gateway::server::workers::auto(),
            n => n,
        },
        ..GatewayOptions::default()
    }
}

/// Ctrl-C (or SIGTERM) once: graceful shutdown; a second one exits at once.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    eprintln!(
        "aigw: draining: /readyz says 503, new connections are refused, requests in flight are finishing (Ctrl-C again to exit now)"
    );
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}

/// A non-loopback address needs an inbound token: a policy holding API keys would otherwise be
/// an open relay.
pub fn check_bind(addr: &SocketAddr, token: Option<&str>) -> Result<(), CommandError> {
    if gateway::is_loopback(addr) || token.is_some_and(|t| !t.is_empty()) {
        return Ok(());
    }
    Err(CommandError::OpenRelay(*addr))
}

/// The start-up banner (UX.md): where the gateway listens, which policy, and how each provider is
/// reached.
pub fn banner(
    addr: SocketAddr,
    origin: &PolicyOrigin,
    providers: &[ProviderView],
    builtins_allowed: bool,
) -> String {
    let mut out = format!(
        "aigw {} serving on http://{addr}  (policy: {})\n",
        env!("CARGO_PKG_VERSION"),
        origin.describe()
    );
    let shown: Vec<&ProviderView> = providers
        .iter()
        .filter(|p| p.configured || p.ollama)
        .collect();
    let width = shown.iter().map(|p| p.id.len()).max().unwrap_or(0);
    for p in &shown {
        let url = p.base_url.as_deref().unwrap_or("(no base URL)");
        let from = match &p.origin {
            UrlOrigin::AsConfigured => String::new(),
            UrlOrigin::Override {
                configured: Some(c),
            } => format!(" (from {c}, mapped by --base-url)"),
            UrlOrigin::Override { configured: None } => " (set by --base-url)".to_string(),
            UrlOrigin::OllamaDefault { configured } => format!(" (from {configured})"),
            UrlOrigin::UnmappedInternal => {
                " (ngrok-internal: unreachable here; map it with --base-url ID=URL)".to_string()
            }
        };
        let keys = match p.keys {
            0 => "client key passthrough".to_string(),
            1 => "1 key".to_string(),
            n => format!("{n} keys"),
        };
        let models = match p.models {
            0 => String::new(),
            1 => "   1 model".to_string(),
            n => format!("   {n} models"),
        };
        out.push_str(&format!(
            "  {:width$} → {url}{from}   {keys}{models}\n",
            p.id
        ));
    }
    let builtins: Vec<&str> = providers
        .iter()
        .filter(|p| !p.configured && !p.ollama)
        .map(|p| p.id.as_str())
        .collect();
    if builtins_allowed && !builtins.is_empty() {
        out.push_str(&format!(
            "  built-in providers ({}) → their public APIs, client key passthrough\n",
            builtins.join(", ")
        ));
    }
    out.push_str(&format!(
        "  OpenAI API  http://{addr}/v1     Ollama API  http://{addr}/api     status  http://{addr}/ui"
    ));
    out
}

/// Logs go to stderr through [`gateway::observe::log_writer`]: a line is a copy into a buffer that a
/// background thread writes out (no system call or wake-up per request). In text form request
/// lines skip `tracing`'s formatter (see [`gateway::observe::access_log`]) but share the writer, so every
/// line keeps its order. The returned guard writes what is left when serve ends.
fn init_logging(
    format: LogFormat,
    color: ColorChoice,
) -> (
    Option<gateway::observe::log_writer::FlushGuard>,
    Option<gateway::observe::access_log::AccessLog>,
) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = EnvFilter::try_from_env("AIGW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = common::style(color, std::io::stderr().is_terminal()).color;
    let spawned = gateway::observe::log_writer::LogWriter::spawn(std::io::stderr())
        .map_err(|e| eprintln!("warning: logging without a writer thread ({e})"))
        .ok();
    // Without the writer thread, lines go to stderr one by one.
    let writer = match &spawned {
        Some((w, _)) => BoxMakeWriter::new(w.clone()),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let access_log = match format {
        LogFormat::Text => {
            let _ = builder
                .with_ansi(ansi)
                .with_target(false)
                .compact()
                .try_init();
            spawned.as_ref().map(|(w, _)| {
                let lines = w.clone();
                let sink: gateway::observe::access_log::Sink =
                    Arc::new(move |line: &[u8]| lines.append(line));
                gateway::observe::access_log::AccessLog::new(sink, ansi)
            })
        }
        LogFormat::Json => {
            let _ = builder.json().flatten_event(true).try_init();
            None
        }
    };
    (spawned.map(|(_, guard)| guard), access_log)
}

/// Builds engines the same way at start-up and on reload.
pub struct EngineFactory {
    overrides: crate::routing::upstream::BaseUrlOverrides,
    secrets: crate::policy::secrets::SecretStore,
    max_attempts: usize,
    style: Style,
    /// Models found on Ollama providers at start-up; reloads keep routing to them.
    discovered: std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>,
    /// The policy being served, for rebuilding with fresh `m.metrics`, installed models or
    /// `m.aigw` figures.
    current: std::sync::Mutex<Option<Loaded>>,
    /// Whether its strategies read `m.metrics` (else a metrics refresh changes nothing).
    reads_metrics: std::sync::atomic::AtomicBool,
    /// Whether its strategies read `m.aigw` (else a health round rebuilds only for new models).
    reads_live: std::sync::atomic::AtomicBool,
    /// `m.aigw` figures of each box, as of the last health-check round.
    live: std::sync::Mutex<std::collections::HashMap<String, crate::routing::engine::LiveProvider>>,
    /// The gateway's fleet state and check interval (set once serving).
    fleet: std::sync::OnceLock<(Arc<dyn gateway::fleet::FleetState>, Duration)>,
}

impl EngineFactory {
    pub fn new(
        overrides: crate::routing::upstream::BaseUrlOverrides,
        secrets: crate::policy::secrets::SecretStore,
        max_attempts: usize,
        style: Style,
    ) -> Self {
        EngineFactory {
            overrides,
            secrets,
            max_attempts,
            style,
            discovered: Default::default(),
            current: Default::default(),
            reads_metrics: Default::default(),
            reads_live: Default::default(),
            fleet: Default::default(),
            live: Default::default(),
        }
    }

    /// What the reload watcher calls: build from the bytes it read, render diagnostics.
    pub fn reload_builder(self: Arc<Self>) -> gateway::server::reload::Builder {
        Arc::new(move |p: &Path, bytes: &[u8]| {
            let loaded = policy::load_bytes(&p.display().to_string(), bytes);
            let discovered = self
                .discovered
                .lock()
                .map(|d| d.clone())
                .unwrap_or_default();
            let (routing, mut warnings) = self.build(&loaded, discovered)?;
            for line in self.fleet_lines(routing.as_ref()) {
                warnings.push_str(&line);
                warnings.push('\n');
            }
            Ok((routing, warnings))
        })
    }

    /// What the metrics refresher calls: the current policy rebuilt with fresh `m.metrics`, or
    /// `None` when no strategy reads metrics (nothing would change).
    pub fn metrics_rebuilder(self: Arc<Self>) -> gateway::server::reload::MetricsRebuilder {
        Arc::new(move |metrics| {
            if !self
                .reads_metrics
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                return None;
            }
            let loaded = self.current.lock().ok()?.clone()?;
            let discovered = self
                .discovered
                .lock()
                .map(|d| d.clone())
                .unwrap_or_default();
            let (engine, _) = self.engine_with(&loaded, discovered, metrics).ok()?;
            // A reload that landed meanwhile wins: never swap an older policy back in.
            let still_current = self
                .current
                .lock()
                .ok()?
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(&c.source, &loaded.source));
            still_current.then(|| Arc::new(engine) as Arc<dyn Routing>)
        })
    }

    fn render(&self, loaded: &Loaded, diags: &[policy::Diagnostic]) -> String {
        if diags.is_empty() {
            return String::new();
        }
        let mut out = String::new();
        for d in diags {
            out.push_str(&human(d, &loaded.source, self.style));
            out.push('\n');
        }
        let errors = diags.iter().filter(|d| d.is_error()).count();
        let summary =
            crate::commands::validate::summary(&loaded.source.name, errors, diags.len() - errors);
        out.push_str(&summary);
        out.push('\n');
        out
    }

    pub fn build(
        &self,
        loaded: &Loaded,
        discovered: std::collections::HashMap<String, Vec<String>>,
    ) -> Result<(Arc<dyn Routing>, String), Rejected> {
        match self.engine(loaded, discovered) {
            Ok((engine, warnings)) => Ok((
                Arc::new(engine) as Arc<dyn Routing>,
                self.render(loaded, &warnings),
            )),
            Err(diags) => Err(Rejected {
                rendered: self.render(loaded, &diags),
            }),
        }
    }

    fn engine(
        &self,
        loaded: &Loaded,
        discovered: std::collections::HashMap<String, Vec<String>>,
    ) -> Result<(Engine, Vec<policy::Diagnostic>), Vec<policy::Diagnostic>> {
        let built = self.engine_with(loaded, discovered, Default::default());
        if let Ok((engine, _)) = &built
            && let Ok(mut current) = self.current.lock()
        {
            *current = Some(loaded.clone());
            let relaxed = std::sync::atomic::Ordering::Relaxed;
            self.reads_metrics.store(engine.reads_metrics(), relaxed);
            self.reads_live.store(engine.reads_live(), relaxed);
        }
        built
    }

    fn engine_with(
        &self,
        loaded: &Loaded,
        discovered: std::collections::HashMap<String, Vec<String>>,
        metrics: std::collections::HashMap<(String, String), crate::routing::cel::ModelMetrics>,
    ) -> Result<(Engine, Vec<policy::Diagnostic>), Vec<policy::Diagnostic>> {
        let opts = EngineOptions {
            overrides: self.overrides.clone(),
            secrets: self.secrets.clone(),
            max_attempts: self.max_attempts,
            discovered,
            metrics,
            live: self.live.lock().map(|l| l.clone()).unwrap_or_default(),
        };
        Engine::build(loaded, opts)
    }

    /// Shares the gateway's fleet state, so reloads can warn about models installed nowhere.
    pub fn set_fleet(&self, state: Arc<dyn gateway::fleet::FleetState>, interval: Duration) {
        let _ = self.fleet.set((state, interval));
    }

    /// The start-up (and reload) lines about the fleet: boxes down, models installed nowhere.
    pub fn fleet_lines(&self, routing: &dyn Routing) -> Vec<String> {
        let Some((state, interval)) = self.fleet.get() else {
            return Vec::new();
        };
        let snap = state.snapshot();
        let ollama: Vec<String> = routing
            .providers()
            .into_iter()
            .filter(|p| p.ollama || snap.get(&p.id).is_some_and(|b| b.ollama))
            .map(|p| p.id)
            .collect();
        gateway::fleet::startup_lines(&snap, &routing.policy_models(), &ollama, *interval)
    }

    /// What the health checker calls after each round: the boxes' installed models (so
    /// installed-but-unlisted models are routable by name) and, for a policy that reads
    /// `m.aigw`, their health and load; the engine is rebuilt and swapped in when either changed.
    pub fn rediscoverer(
        self: Arc<Self>,
        gw: Arc<Gateway>,
    ) -> gateway::fleet::check::InstalledChanged {
        Arc::new(move |snap| {
            let installed = snap.installed();
            let live = gateway::fleet::live_view(snap, &gw.fleet.limits);
            let installed_changed = self
                .discovered
                .lock()
                .map(|mut d| {
                    let changed = *d != installed;
                    *d = installed.clone();
                    changed
                })
                .unwrap_or(false);
            let Some(loaded) = self.current.lock().ok().and_then(|c| c.clone()) else {
                return;
            };
            let reads_live = self.reads_live.load(std::sync::atomic::Ordering::Relaxed);
            let live_changed = self
                .live
                .lock()
                .map(|mut l| {
                    let changed = *l != live;
                    *l = live;
                    changed
                })
                .unwrap_or(false);
            if !(installed_changed || reads_live && live_changed) {
                return;
            }
            match self.engine_with(&loaded, installed, Default::default()) {
                Ok((engine, _)) => {
                    gw.swap(Arc::new(engine));
                    tracing::debug!(target: "aigw::fleet", "engine rebuilt with the boxes' installed models and health");
                }
                Err(_) => {
                    tracing::warn!(target: "aigw::fleet", "could not rebuild the policy with installed models")
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_listen;
    use crate::policy::ApiFormat;

    fn provider(
        id: &str,
        url: &str,
        origin: UrlOrigin,
        configured: bool,
        keys: usize,
        models: usize,
    ) -> ProviderView {
        ProviderView {
            id: id.into(),
            base_url: Some(url.into()),
            origin,
            ollama: id == "ollama",
            builtin: !configured,
            configured,
            formats: vec![ApiFormat::OpenAi],
            keys,
            models,
        }
    }

    #[test]
    fn banner_says_how_each_provider_is_reached() {
        let providers = [
            provider(
                "ollama",
                "http://localhost:11434",
                UrlOrigin::OllamaDefault {
                    configured: "https://ollama.internal".into(),
                },
                true,
                0,
                4,
            ),
            provider(
                "vllm",
                "https://vllm.internal",
                UrlOrigin::UnmappedInternal,
                true,
                1,
                1,
            ),
            provider(
                "openai",
                "https://api.openai.com/v1",
                UrlOrigin::AsConfigured,
                false,
                0,
                0,
            ),
        ];
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let text = banner(addr, &PolicyOrigin::BuiltIn, &providers, true);
        assert_eq!(
            text,
            "aigw 0.1.0 serving on http://127.0.0.1:8080  (policy: built-in default; `aigw init` writes it out)\n\
             \x20 ollama → http://localhost:11434 (from https://ollama.internal)   client key passthrough   4 models\n\
             \x20 vllm   → https://vllm.internal (ngrok-internal: unreachable here; map it with --base-url ID=URL)   1 key   1 model\n\
             \x20 built-in providers (openai) → their public APIs, client key passthrough\n\
             \x20 OpenAI API  http://127.0.0.1:8080/v1     Ollama API  http://127.0.0.1:8080/api     status  http://127.0.0.1:8080/ui"
        );
        let text = banner(
            addr,
            &PolicyOrigin::File("policy.yaml".into()),
            &providers,
            false,
        );
        assert!(text.contains("(policy: policy.yaml)"));
        assert!(!text.contains("built-in providers"));
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            parse_listen("localhost:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert!(parse_listen("nonsense").is_err());
        assert!(check_bind(&"[::1]:80".parse().unwrap(), None).is_ok());
        assert!(check_bind(&"10.0.0.1:80".parse().unwrap(), None).is_err());
    }
}
