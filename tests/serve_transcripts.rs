//! Transcripts of `aigw serve` runs that end before serving (`commands/serve/*.toml`): a policy
//! with errors, an off-loopback address without a token. Regenerate with
//! `TRYCMD=overwrite cargo test --test serve_transcripts`.

#[test]
fn serve_transcripts() {
    trycmd::TestCases::new().case("commands/serve/*.toml");
}
