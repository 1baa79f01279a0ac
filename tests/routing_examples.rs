//! Every routing example from the seed guide and the ngrok docs snapshot, as `aigw test` files in
//! `testdata/routing/*.aigw-test.yaml` (one file per policy block; fragments the docs show without a
//! full policy are wrapped verbatim in `testdata/routing/fragments/`). Each case quotes or paraphrases
//! a doc statement and carries a `# source: FILE:LINE` comment.
//!
//! Run one file by hand with `aigw test testdata/routing/<file>.aigw-test.yaml`.

use std::path::{Path, PathBuf};

use aigw::commands::test::run_file;

/// Floors, so that a silently emptied directory (or a lost file) fails. Raise them when adding files.
const MIN_FILES: usize = 155;
const MIN_CASES: usize = 426;

fn routing_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/routing")
}

fn test_files() -> Vec<PathBuf> {
    let dir = routing_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".aigw-test.yaml"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_routing_example_passes() {
    let files = test_files();
    let mut cases = 0;
    let mut failures = Vec::new();
    for file in &files {
        match run_file(file) {
            Ok(results) => {
                cases += results.len();
                if results.is_empty() {
                    failures.push(format!("{}: no cases", file.display()));
                }
                for r in results.iter().filter(|r| !r.passed) {
                    failures.push(format!(
                        "{} :: {}\n      {}",
                        r.file,
                        r.name,
                        r.problems.join("\n      ")
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: cannot run: {e}", file.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} routing example(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        files.len() >= MIN_FILES,
        "expected at least {MIN_FILES} routing test files in {}, found {}",
        routing_dir().display(),
        files.len()
    );
    assert!(
        cases >= MIN_CASES,
        "expected at least {MIN_CASES} routing cases, found {cases}"
    );
}

/// Each case names its source: a `# source: FILE:LINE` comment right above its `- name:`.
#[test]
fn every_case_cites_its_source() {
    let mut missing = Vec::new();
    for file in test_files() {
        let text = std::fs::read_to_string(&file).expect("readable test file");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.trim_start().starts_with("- name:") {
                continue;
            }
            let cited = lines[..i]
                .iter()
                .rev()
                .take_while(|l| l.trim_start().starts_with('#'))
                .any(|l| {
                    l.trim_start()
                        .strip_prefix("# source: ")
                        .and_then(|s| s.rsplit_once(':'))
                        .is_some_and(|(_, n)| {
                            !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())
                        })
                });
            if !cited {
                missing.push(format!("{}:{}", file.display(), i + 1));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "cases without a `# source: FILE:LINE` comment:\n{}",
        missing.join("\n")
    );
}
