//! `aigw completions SHELL`: completion scripts generated from the clap definitions.

use clap::CommandFactory;

use crate::cli::Cli;
use std::io::Write;

use crate::commands::{CommandError, Exit};

/// Generated into memory first: clap_complete panics when its writer fails (a closed pipe).
pub fn run(shell: clap_complete::Shell) -> Result<Exit, CommandError> {
    std::io::stdout()
        .lock()
        .write_all(script(shell).as_bytes())?;
    Ok(Exit::Success)
}

/// The script for `shell`, as `completions/` keeps it.
pub fn script(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "aigw", &mut out);
    String::from_utf8(out).unwrap_or_default()
}
