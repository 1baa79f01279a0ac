//! Why a command could not run, and the one place where that becomes an exit code and a
//! message.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::Exit;
use super::common::InputError;
use crate::policy::secrets::SecretsError;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Header(#[from] super::explain::HeaderArgError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("{0}\n  help: {CONVERT_HELP}")]
    ConvertRead(#[source] InputError),
    #[error("{0} is not UTF-8 text\n  help: {CONVERT_HELP}")]
    ConvertNotUtf8(String),
    #[error("{file}{}: {}\n  help: {}", error.line.map(|l| format!(":{l}")).unwrap_or_default(), error.message, error.help)]
    Convert {
        file: String,
        error: crate::convert::ConvertError,
    },
    #[error(
        "no test files given and none named *.aigw-test.yaml found under the current directory"
    )]
    NoTests,
    #[error("{} already exists; pass --force to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "{0} is not a loopback address; pass --auth-token TOKEN (or AIGW_AUTH_TOKEN) so the gateway is not an \
         open relay for the policy's API keys"
    )]
    OpenRelay(SocketAddr),
    #[error(
        "--max-in-flight {id}=…: the policy has no provider `{id}` (its providers: {providers})"
    )]
    UnknownLimitedProvider { id: String, providers: String },
    #[error("{0}")]
    Serve(#[source] std::io::Error),
    #[error("cannot encode the JSON output: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing the command's own output failed (a closed pipe is not reported).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

const CONVERT_HELP: &str = "pass LiteLLM's proxy config (the file given to `litellm --config`), e.g. `aigw convert config.yaml -o policy.yaml`";

/// The exit code for a command's result, printing the error (if any) on stderr. Output into a
/// closed pipe (`aigw … | head -1`) ends quietly with success, as `cat` and ripgrep do.
pub fn finish(result: Result<Exit, CommandError>) -> Exit {
    match result {
        Ok(exit) => exit,
        Err(CommandError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Success,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            Exit::Error
        }
    }
}

/// `println!` that returns the write error instead of panicking on a closed pipe.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}
