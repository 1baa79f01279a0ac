//! The README's examples stay true: every `console` block of README.md runs as a trycmd
//! transcript from the crate root (blocks marked `console,ignore` need a live server or Ollama;
//! `aigw serve` and `aigw probe` runs are covered by `commands/serve/` and `commands/probe/`),
//! and a `yaml` block whose first line names a repository file (`# testdata/…`) is that file.
//! Update the console output with `TRYCMD=overwrite cargo test --test readme_examples`.

use std::path::Path;

#[test]
fn readme_console_examples() {
    trycmd::TestCases::new()
        .env("NO_COLOR", "1")
        .case("README.md");
}

#[test]
fn readme_yaml_examples_are_the_files_they_name() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut checked = 0;
    for block in readme.split("```yaml\n").skip(1) {
        let block = &block[..block.find("```").expect("a closed yaml block")];
        let (first, rest) = block.split_once('\n').unwrap_or((block, ""));
        let Some(named) = first
            .strip_prefix("# ")
            .filter(|n| n.starts_with("testdata/"))
        else {
            continue;
        };
        let file = std::fs::read_to_string(root.join(named))
            .unwrap_or_else(|e| panic!("README names `{named}`, which cannot be read: {e}"));
        assert_eq!(
            rest, file,
            "README's copy of `{named}` differs from the file"
        );
        checked += 1;
    }
    assert!(checked > 0, "no README yaml block names its file");
}
