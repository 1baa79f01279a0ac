//! `aigw init`: write the built-in default policy out, to start from.

use crate::cli::InitArgs;
use crate::commands::common::DEFAULT_POLICY;
use crate::commands::{CommandError, Exit};
use crate::outln;

pub fn run(args: InitArgs) -> Result<Exit, CommandError> {
    if args.path.exists() && !args.force {
        return Err(CommandError::Exists(args.path));
    }
    std::fs::write(&args.path, DEFAULT_POLICY).map_err(|source| CommandError::Write {
        path: args.path.clone(),
        source,
    })?;
    outln!(
        "wrote {} (local Ollama + passthrough to built-in providers)",
        args.path.display()
    )?;
    outln!(
        "next: aigw validate {0} && aigw serve --policy {0}",
        args.path.display()
    )?;
    Ok(Exit::Success)
}
