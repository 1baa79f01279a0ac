//! Command-line definitions (clap). Completions and `--help` snapshots come from here.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::gateway::GatewayOptions;
use crate::gateway::attempts::breaker::BreakerOptions;
use crate::gateway::attempts::failure::RetryOptions;
use crate::gateway::fleet::check::CheckOptions;
use crate::gateway::fleet::limit::LimitOptions;
use crate::gateway::shared::url::{StateUrl, StateUrlError};
use crate::policy::duration::{self, DurationError};

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
    Serve(Box<ServeArgs>),
    /// Check providers: reachability, installed models, pre-warm Ollama models.
    #[command(
        after_help = "Exit status: 0 every check passed, 1 a check failed, 2 probe could not run \
(bad flags, an unreadable policy, or a policy with errors)."
    )]
    Probe(ProbeArgs),
    /// Turn a LiteLLM proxy config.yaml into a policy; report what cannot carry over.
    #[command(
        after_help = "The policy goes to standard output (or -o FILE); the report of warnings and \
settings not carried over, each with its line, goes to standard error. Keys are never copied: \
`os.environ/NAME` becomes ${secrets.get('env', 'NAME')}, read from the variable NAME.\n\n\
Exit status: 0 converted, 1 the converted policy did not validate (a bug in convert), 2 the \
file could not be read or has no convertible model_list."
    )]
    Convert(ConvertArgs),
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
    /// Policy files to check (`-` reads standard input). Default: ./policy.yaml.
    #[arg(value_name = "FILES")]
    pub files: Vec<PathBuf>,
    /// A policy file to check, as every other command takes it (same as a FILES argument).
    #[arg(long, short = 'p', value_name = "FILE")]
    pub policy: Vec<PathBuf>,
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
    /// HTTP method of the request, for the policy's rules.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// A request header, for the policy's rules; repeat for more.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The client's IP address, for the policy's rules (`conn.client_ip`, `restrict-ips`).
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub client_ip: std::net::IpAddr,
    /// Mark a provider (or provider:model) as failing to see where traffic would go next;
    /// `=ERROR` says how, and the table shows the failure's class and what serve does next:
    /// down (the default), timeout, reset, a status such as 503 or 429, content_filter,
    /// context_length, unknown_model.
    #[arg(long, value_name = "PROVIDER[:MODEL][=ERROR]")]
    pub fail: Vec<crate::gateway::attempts::simulate::FailSpec>,
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
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Token clients must send as `Authorization: Bearer TOKEN` (or AIGW_AUTH_TOKEN).
    #[arg(
        long,
        env = "AIGW_AUTH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub auth_token: Option<String>,
    /// Most attempts per request across keys and models.
    #[arg(long, default_value_t = GatewayOptions::default().max_attempts)]
    pub max_attempts: usize,
    /// Fail over when an attempt's first byte takes longer than this, streaming or not (a
    /// non-streaming answer's first byte is the whole answer). Without it, a stream that has
    /// another model to go to gets 30s, and anything else only the policy's timeouts.
    #[arg(long, value_name = "DURATION")]
    pub first_byte_timeout: Option<DurationArg>,
    /// First-byte budget of an Ollama model that was not loaded at the last health check
    /// (loading it comes first); raises a shorter first-byte limit.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(GatewayOptions::default().cold_start_timeout))]
    pub cold_start_timeout: DurationArg,
    /// End a stream that sends nothing for this long.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(GatewayOptions::default().stream_idle_timeout))]
    pub stream_idle_timeout: DurationArg,
    /// Do not continue a chat stream that fails midway (cut, stalled, closed unfinished) on the
    /// plan's next candidate: end it with an error event instead.
    #[arg(long)]
    pub no_stream_continuation: bool,
    /// After a 429 on a model's last key: times to send it again (honouring Retry-After, else
    /// backing off with jitter) before failing over; 0 fails over at once.
    #[arg(long, default_value_t = RetryOptions::default().rate_limit_retries, value_name = "N")]
    pub rate_limit_retries: u32,
    /// Times the same (key, model) is sent again after a transient failure (a 5xx, a reset)
    /// before the next candidate; 0 restores ngrok's "never the same pair twice".
    #[arg(long, default_value_t = RetryOptions::default().same_pair_retries, value_name = "N")]
    pub same_pair_retries: u32,
    /// Longest wait accepted before a retry; a longer Retry-After fails over instead.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(RetryOptions::default().max_wait))]
    pub max_retry_wait: DurationArg,
    /// Consecutive failures (5xx, timeouts, connection errors) that open a model's circuit;
    /// 0 turns circuit breaking off.
    #[arg(long, default_value_t = BreakerOptions::default().failures, value_name = "N")]
    pub breaker_failures: u32,
    /// How long an open circuit skips its model before one request probes it again; each failed
    /// probe doubles the wait (up to 60s).
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(BreakerOptions::default().cooldown))]
    pub breaker_cooldown: DurationArg,
    /// Largest request body accepted (bytes); larger ones get 413.
    #[arg(long, default_value_t = GatewayOptions::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Close connections that do not send a full request head (line and headers) within this
    /// time (slow clients, slow-loris).
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(GatewayOptions::default().header_read_timeout))]
    pub header_read_timeout: DurationArg,
    /// A request body must arrive within this time once the gateway starts reading it, else
    /// 408 and the connection is closed (stalled or trickled bodies).
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(GatewayOptions::default().body_read_timeout))]
    pub body_read_timeout: DurationArg,
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
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(CheckOptions::default().interval))]
    pub health_interval: DurationArg,
    /// Most requests in flight to provider ID at once (repeatable: `--max-in-flight gpu-a=1`);
    /// more wait in a first-in-first-out queue. For an Ollama box, its OLLAMA_NUM_PARALLEL.
    #[arg(long, value_name = "ID=N", value_parser = parse_limit)]
    pub max_in_flight: Vec<(String, usize)>,
    /// Most requests waiting per limited provider; past it, 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = LimitOptions::default().queue_depth)]
    pub queue_depth: usize,
    /// Longest a request waits in the queue before 429 with Retry-After.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(LimitOptions::default().queue_timeout))]
    pub queue_timeout: DurationArg,
    /// Keep the policy's models loaded on each Ollama box that has them: a load-only request
    /// with this `keep_alive` every half of it, never while a real request runs on the model.
    #[arg(long, value_name = "DURATION")]
    pub keep_warm: Option<DurationArg>,
    /// On SIGTERM (or Ctrl-C): `/readyz` answers 503, new connections are refused, and requests
    /// and streams in flight get this long to finish; then what is still open ends with an
    /// error event and the process exits 0. Keep it below Kubernetes'
    /// terminationGracePeriodSeconds.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(GatewayOptions::default().drain_timeout))]
    pub drain_timeout: DurationArg,
    /// Share circuit breakers, box health, rate-limit windows and `m.metrics` figures with
    /// other replicas through Redis: `redis://[:PASSWORD@]HOST:PORT[/DB]` or `rediss://…`
    /// (a password can come from AIGW_STATE_PASSWORD instead). Off: each process learns alone.
    #[arg(long, value_name = "URL", env = "AIGW_STATE", value_parser = parse_state)]
    pub state: Option<StateUrl>,
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
pub struct ConvertArgs {
    /// LiteLLM proxy config (the file given to `litellm --config`); `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Write the policy to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "OUT")]
    pub output: Option<PathBuf>,
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

/// A duration flag, written like the policy's durations (`500ms`, `20s`, `2m`); its default is
/// taken from the option it sets, so each default is stated once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

/// A `--max-in-flight` value that is not `ID=N` with N above 0.
#[derive(Debug, thiserror::Error)]
#[error("expected ID=N with N a whole number above 0 (e.g. gpu-a=1), found `{0}`")]
pub struct LimitArgError(String);

fn parse_limit(s: &str) -> Result<(String, usize), LimitArgError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok((k.to_string(), n)),
            _ => Err(LimitArgError(s.to_string())),
        },
        _ => Err(LimitArgError(s.to_string())),
    }
}

/// A duration flag that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0} (write a duration such as 500ms, 20s or 2m)")]
pub struct DurationArgError(#[from] DurationError);

impl FromStr for DurationArg {
    type Err = DurationArgError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DurationArg(duration::parse(s)?))
    }
}

impl fmt::Display for DurationArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&duration::format(self.0))
    }
}

/// A `--base-url` value without `=`, or with an empty side.
#[derive(Debug, thiserror::Error)]
#[error("expected ID=URL, found `{0}`")]
pub struct KeyValueError(String);

fn parse_key_value(s: &str) -> Result<(String, String), KeyValueError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(KeyValueError(s.to_string())),
    }
}

/// A `--listen` value that is not an address.
#[derive(Debug, thiserror::Error)]
#[error("expected an address such as 127.0.0.1:8080, :8080 or localhost:8080")]
pub struct ListenError;

/// `127.0.0.1:8080`, `localhost:8080`, `:8080` or `8080`.
/// `--state`: a Redis URL; the password may come from `AIGW_STATE_PASSWORD` instead.
pub fn parse_state(text: &str) -> Result<StateUrl, StateUrlError> {
    StateUrl::parse(text, std::env::var("AIGW_STATE_PASSWORD").ok().as_deref())
}

pub fn parse_listen(text: &str) -> Result<SocketAddr, ListenError> {
    let t = text.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    let port = t
        .strip_prefix(':')
        .or_else(|| t.strip_prefix("localhost:"))
        .unwrap_or(t);
    match port.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => Err(ListenError),
    }
}
