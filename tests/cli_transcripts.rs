//! Transcripts of aigw runs (`commands/<subcommand>/*.toml`): arguments, exit code and exact
//! output. Regenerate with `TRYCMD=overwrite cargo test --test cli_transcripts` and review the
//! diff as code. (`commands/probe/*.md` are written by `tests/probe.rs`, which needs stand-ins.)

#[test]
fn validate_transcripts() {
    trycmd::TestCases::new().case("commands/validate/*.toml");
}

#[test]
fn explain_transcripts() {
    trycmd::TestCases::new().case("commands/explain/*.toml");
}

#[test]
fn test_transcripts() {
    trycmd::TestCases::new().case("commands/test/*.toml");
}

#[test]
fn convert_transcripts() {
    trycmd::TestCases::new().case("commands/convert/*.toml");
}
