//! Files generated from the code are kept in the repository and must stay current:
//! shell completions and the policy JSON Schema (`completions/`), and `--help` (snapshots).
//! Regenerate with `TRYCMD=overwrite cargo test --test generated_files` and review the diff.

#[path = "support/golden.rs"]
mod golden;

use clap::CommandFactory;
use clap_complete::Shell;

use aigw::cli::Cli;
use aigw::commands::completions::script;
use aigw::policy::schema::policy_schema_text;

fn check(path: &str, expected: &str) {
    golden::assert_file(path, expected);
}

#[test]
fn completions_are_current() {
    for (shell, file) in [
        (Shell::Bash, "completions/aigw.bash"),
        (Shell::Zsh, "completions/_aigw"),
        (Shell::Fish, "completions/aigw.fish"),
        (Shell::PowerShell, "completions/_aigw.ps1"),
        (Shell::Elvish, "completions/aigw.elv"),
    ] {
        let s = script(shell);
        assert!(
            s.contains("validate") && s.contains("explain"),
            "{file} misses subcommands"
        );
        check(file, &s);
    }
}

#[test]
fn schema_is_current() {
    check("completions/policy.schema.json", &policy_schema_text());
}

#[test]
fn help_snapshots() {
    let mut cmd = Cli::command().term_width(100);
    cmd.build();
    let mut pages = vec![("aigw".to_string(), cmd.render_long_help().to_string())];
    for sub in cmd.get_subcommands_mut() {
        let name = format!("aigw-{}", sub.get_name());
        pages.push((name, sub.render_long_help().to_string()));
    }
    for (name, text) in pages {
        insta::with_settings!({snapshot_path => "../snapshots/help", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(name, text);
        });
    }
}
