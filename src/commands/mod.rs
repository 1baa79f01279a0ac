//! One thin file per subcommand: gather inputs, call the engine, render.

pub mod common;
pub mod error;

pub use error::{CommandError, finish};

/// How a command ended, as scripts see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything checked out.
    Success = 0,
    /// The command ran and found a problem (invalid policy, no candidate, failed test).
    Failure = 1,
    /// The command could not run (missing file, bad flag, I/O error).
    Error = 2,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
pub mod completions;
pub mod convert;
pub mod explain;
pub mod init;
pub mod probe;
pub mod schema;
pub mod serve;
pub mod test;
pub mod validate;
