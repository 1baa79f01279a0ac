use std::process::ExitCode;

use clap::Parser;

use aigw::cli::{Cli, Command};
use aigw::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let exit = match cli.command {
        Command::Validate(args) => commands::validate::run(args, cli.color),
        Command::Explain(args) => commands::explain::run(args, cli.color),
        Command::Test(args) => commands::test::run(args, cli.color),
        Command::Serve(args) => commands::serve::run(args, cli.color),
        Command::Probe(args) => commands::probe::run(args, cli.color),
        Command::Init(args) => commands::init::run(args),
        Command::Schema => commands::schema::run(),
        Command::Completions { shell } => commands::completions::run(shell),
    };
    ExitCode::from(exit)
}
