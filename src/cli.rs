//! Command-line definitions (clap). Completions and `--help` snapshots come from here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "aigw",
    version,
    about = "Write, test and locally serve AI-gateway routing policies",
    long_about = "aigw reads policies in the format of ngrok's `ai-gateway` traffic-policy action: \
validate them, explain where a request would go, probe your providers, and serve an \
OpenAI-compatible gateway with failover on your machine.",
    after_help = "With no --policy and no ./policy.yaml, every command uses a built-in policy: local Ollama \
plus passthrough to the built-in providers (`aigw init` writes it out)."
)]
pub struct Cli {
    /// When to use colour: auto (terminal, unless NO_COLOR is set), always or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check policy files: schema, meaning and CEL strategies, with located diagnostics.
    Validate(ValidateArgs),
    /// Dry-run routing: which strategy matches and the ordered candidates a request would try.
    Explain(ExplainArgs),
    /// Run routing test files (request → expected candidates) against their policies.
    Test(TestArgs),
    /// Serve an OpenAI-compatible (and Ollama-compatible) gateway locally, with failover.
    Serve(ServeArgs),
    /// Check providers: reachability, installed models, pre-warm Ollama models.
    #[command(
        after_help = "Exit status: 0 every check passed, 1 a check failed, 2 probe could not run \
(bad flags, an unreadable policy, or a policy with errors)."
    )]
    Probe(ProbeArgs),
    /// Write the built-in default policy to a file to start from.
    Init(InitArgs),
    /// Print the JSON Schema of policy.yaml (for editors and yaml-language-server).
    Schema,
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Flags shared by every command that reads a policy.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy.
    #[arg(long, short = 'p', value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Map a provider to a local address, e.g. `--base-url ollama=http://localhost:11434`
    /// (also AIGW_BASE_URL_<ID>).
    #[arg(long = "base-url", value_name = "ID=URL", value_parser = parse_key_value)]
    pub base_urls: Vec<(String, String)>,
    /// YAML file of secrets (`vault: {name: value}`) for `${secrets.get('vault', 'name')}`;
    /// AIGW_SECRET_<VAULT>_<NAME> variables win over it.
    #[arg(long, value_name = "FILE")]
    pub secrets: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Diagnostics with source snippets.
    Human,
    /// One JSON object per file.
    Json,
    /// GitHub Actions workflow annotations.
    Github,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    /// Text for people.
    Table,
    /// JSON for scripts.
    Json,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Policy files to check (`-` reads standard input).
    #[arg(value_name = "FILES", default_value = "policy.yaml")]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Human)]
    pub format: ReportFormat,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Secrets file, to check that every `secrets.get` resolves.
    #[arg(long, value_name = "FILE")]
    pub secrets: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Requested model (`provider:model` or a bare name); repeat for a `models` list.
    /// Omit (or `ngrok/auto`) to let the strategies choose.
    #[arg(long, short = 'm', value_name = "MODEL")]
    pub model: Vec<String>,
    /// API path of the request.
    #[arg(long, default_value = "/v1/chat/completions")]
    pub path: String,
    /// Mark a provider (or provider:model) as failing to see where traffic would go next.
    #[arg(long, value_name = "PROVIDER[:MODEL]")]
    pub fail: Vec<String>,
    /// Seed for `random()` / `randomize()`, for a reproducible answer.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Check every provider now (as serve does) and plan with what they answer: down boxes and
    /// boxes without the model are left out, installed models are routable, `m.aigw` is live.
    #[arg(long)]
    pub live: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Test files (YAML). Default: every `*.aigw-test.yaml` under the current directory.
    #[arg(value_name = "FILES")]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Address to listen on. A non-loopback address requires --auth-token.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    /// Token clients must send as `Authorization: Bearer TOKEN` (or AIGW_AUTH_TOKEN).
    #[arg(
        long,
        env = "AIGW_AUTH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub auth_token: Option<String>,
    /// Most attempts per request across keys and models.
    #[arg(long, default_value_t = 10)]
    pub max_attempts: usize,
    /// Fail over when the first byte takes longer than this (time-to-first-token limit).
    #[arg(long, value_name = "DURATION")]
    pub first_byte_timeout: Option<String>,
    /// End a stream that sends nothing for this long.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub stream_idle_timeout: String,
    /// After a 429 on a model's last key: times to send it again (honouring Retry-After, else
    /// backing off with jitter) before failing over; 0 fails over at once.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub rate_limit_retries: u32,
    /// Longest wait accepted before a retry; a longer Retry-After fails over instead.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub max_retry_wait: Duration,
    /// Consecutive failures (5xx, timeouts, connection errors) that open a model's circuit;
    /// 0 turns circuit breaking off.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub breaker_failures: u32,
    /// How long an open circuit skips its model before one request probes it again.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub breaker_cooldown: Duration,
    /// Largest request body accepted (bytes); larger ones get 413.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Close connections that do not send a full request head (line and headers) within this
    /// time (slow clients, slow-loris).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Threads serving connections; 0 means one per core. A connection and the upstream
    /// connections its requests use stay on one thread.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub workers: usize,
    /// Most client connections served at once; more wait in the listen backlog until one
    /// closes. 0: half the open-file limit (each proxied request also holds an upstream socket).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_connections: usize,
    /// How often each provider is health-checked (`/api/version`, `/api/tags`, `/api/ps`); a
    /// box that does not answer is checked again after a backoff doubling up to 60s.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub health_interval: Duration,
    /// Most requests in flight to provider ID at once (repeatable: `--max-in-flight gpu-a=1`);
    /// more wait in a first-in-first-out queue. For an Ollama box, its OLLAMA_NUM_PARALLEL.
    #[arg(long, value_name = "ID=N", value_parser = parse_limit)]
    pub max_in_flight: Vec<(String, usize)>,
    /// Most requests waiting per limited provider; past it, 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub queue_depth: usize,
    /// Longest a request waits in the queue before 429 with Retry-After.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub queue_timeout: Duration,
    /// Keep the policy's models loaded on each Ollama box that has them: a load-only request
    /// with this `keep_alive` every half of it, never while a real request runs on the model.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_warm: Option<Duration>,
    /// Do not watch the policy file for changes.
    #[arg(long)]
    pub no_reload: bool,
    /// Log format for request logs.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Providers to probe (ids from the policy) or URLs; default: every provider in the policy.
    #[arg(value_name = "PROVIDER|URL")]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Pre-warm each policy model on Ollama providers (default).
    #[arg(long, overrides_with = "no_warm")]
    pub warm: bool,
    /// Skip pre-warming.
    #[arg(long)]
    pub no_warm: bool,
    /// keep_alive sent with the pre-warm request (`-1` keeps the model loaded).
    #[arg(
        long,
        default_value = "5m",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    pub keep_alive: String,
    /// Timeout for each check (a pre-warm waits at least 5m, Ollama's own load limit).
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub timeout: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the policy.
    #[arg(default_value = "policy.yaml")]
    pub path: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::policy::duration::parse(s)
        .map_err(|e| format!("{e} (write a duration such as 500ms, 20s or 2m)"))
}

fn parse_limit(s: &str) -> Result<(String, usize), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok((k.to_string(), n)),
            _ => Err(format!(
                "expected ID=N with N a whole number above 0 (e.g. gpu-a=1), found `{s}`"
            )),
        },
        _ => Err(format!("expected ID=N (e.g. gpu-a=1), found `{s}`")),
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected ID=URL, found `{s}`")),
    }
}
