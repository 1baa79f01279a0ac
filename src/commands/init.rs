//! `aigw init`: write the built-in default policy out, to start from.

use crate::cli::InitArgs;
use crate::commands::Exit;
use crate::commands::common::DEFAULT_POLICY;

pub fn run(args: InitArgs) -> Exit {
    if args.path.exists() && !args.force {
        eprintln!(
            "error: {} already exists; pass --force to overwrite it",
            args.path.display()
        );
        return Exit::Error;
    }
    match std::fs::write(&args.path, DEFAULT_POLICY) {
        Ok(()) => {
            println!(
                "wrote {} (local Ollama + passthrough to built-in providers)",
                args.path.display()
            );
            println!(
                "next: aigw validate {0} && aigw serve --policy {0}",
                args.path.display()
            );
            Exit::Success
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", args.path.display());
            Exit::Error
        }
    }
}
