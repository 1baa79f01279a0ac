//! Runs one stand-in provider in the foreground, for manual tries and benchmarks.
//!
//! ```text
//! cargo run --example standin -- --kind ollama|openai|anthropic [--port N] [--label NAME]
//!     [--models a,b,c] [--key KEY] [--chunk-delay-ms MS]
//! ```
//! Prints `standin KIND listening on http://127.0.0.1:PORT` once it accepts connections, then
//! serves until Ctrl-C. `--port 0` (the default) picks a free port.

#[path = "../tests/support/standin/mod.rs"]
mod standin;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use standin::{Kind, StandIn};

const USAGE: &str = "usage: standin --kind ollama|openai|anthropic [--port N] [--label NAME] \
                     [--models a,b,c] [--key KEY] [--chunk-delay-ms MS]";

struct Args {
    kind: Kind,
    port: u16,
    label: Option<String>,
    models: Option<Vec<String>>,
    key: Option<String>,
    chunk_delay: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut kind = None;
    let mut port = 0u16;
    let mut label = None;
    let mut models = None;
    let mut key = None;
    let mut chunk_delay = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_string());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--kind" => kind = Some(Kind::parse(&value).ok_or(format!("unknown kind {value:?}"))?),
            "--port" => port = value.parse().map_err(|_| format!("bad port {value:?}"))?,
            "--label" => label = Some(value),
            "--models" => models = Some(value.split(',').map(str::to_string).collect()),
            "--key" => key = Some(value),
            "--chunk-delay-ms" => {
                let ms = value.parse().map_err(|_| format!("bad delay {value:?}"))?;
                chunk_delay = Duration::from_millis(ms);
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    let kind = kind.ok_or_else(|| format!("--kind is required\n{USAGE}"))?;
    Ok(Args {
        kind,
        port,
        label,
        models,
        key,
        chunk_delay,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let mut s = match StandIn::start_on(args.kind, addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("standin: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(label) = &args.label {
        s = s.with_label(label);
    }
    if let Some(models) = &args.models {
        let ids: Vec<&str> = models.iter().map(String::as_str).collect();
        s = s.with_models(&ids);
    }
    if let Some(key) = &args.key {
        s.require_key(key);
    }
    s = s.with_chunk_delay(args.chunk_delay);
    println!("standin {} listening on {}", args.kind.name(), s.url());
    let _ = tokio::signal::ctrl_c().await;
    s.stop().await;
    ExitCode::SUCCESS
}
