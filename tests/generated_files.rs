//! Files generated from the code are kept in the repository and must stay current:
//! shell completions and the policy JSON Schema (`completions/`), and `--help` (snapshots).
//! Regenerate with `AIGW_REGENERATE=1 cargo test --test generated_files`.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use aigw::cli::Cli;
use aigw::commands::completions::script;
use aigw::policy::schema::policy_schema_text;

fn check(path: &str, expected: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os("AIGW_REGENERATE").is_some() {
        std::fs::write(&path, expected).unwrap();
        return;
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "{} is out of date; run `AIGW_REGENERATE=1 cargo test --test generated_files`",
        path.display()
    );
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
