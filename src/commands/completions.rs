//! `aigw completions SHELL`: completion scripts generated from the clap definitions.

use clap::CommandFactory;

use crate::cli::Cli;
use crate::commands::Exit;

pub fn run(shell: clap_complete::Shell) -> Exit {
    clap_complete::generate(shell, &mut Cli::command(), "aigw", &mut std::io::stdout());
    Exit::Success
}

/// The script for `shell`, as `completions/` keeps it.
pub fn script(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "aigw", &mut out);
    String::from_utf8(out).unwrap_or_default()
}
