//! Transcripts of `aigw validate` runs (`commands/validate/*.toml`): arguments, exit code and
//! exact output. Regenerate with `TRYCMD=overwrite cargo test --test cli_transcripts`.

#[test]
fn validate_transcripts() {
    trycmd::TestCases::new().case("commands/validate/*.toml");
}
