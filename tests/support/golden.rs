//! Golden files that are files in their own right (shell completions, the JSON Schema, probe
//! transcripts): the test fails when one differs from what the code produces now, or is
//! missing; `TRYCMD=overwrite` rewrites them, the same switch as trycmd's `commands/*.toml`
//! transcripts. (Output that is only a test expectation is an insta snapshot instead.)
//!
//! Include with `#[path = "support/golden.rs"] mod golden;`.
#![allow(dead_code)]

use std::path::Path;

use snapbox::data::DataFormat;
use snapbox::{Assert, Data};

/// Asserts that `path` (relative to the crate root) holds exactly `actual`.
#[track_caller]
pub fn assert_file(path: &str, actual: &str) {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    // `raw`: compared to the byte (line endings aside), no `[..]` wildcards in expected text.
    let expected = Data::read_from(&full, Some(DataFormat::Text)).raw();
    Assert::new()
        .action_env("TRYCMD")
        .eq(Data::text(actual.to_string()), expected);
}
