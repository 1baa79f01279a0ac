//! Every policy from the ngrok docs and the Ollama guide (`testdata/policies/`, see MANIFEST.md)
//! must validate without errors, except the deliberate exceptions in
//! `testdata/policies/EXCEPTIONS.md`, which must be rejected with the code listed there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aigw::commands::validate::check_text;
use aigw::policy::Diagnostic;
use aigw::policy::secrets::SecretStore;
use aigw::render::diagnostics::{Style, human};

/// Files per directory (MANIFEST.md: 6 guide, 104 docs). A directory that silently lost files
/// (or was not found) fails here rather than passing with nothing checked.
const EXPECTED: &[(&str, usize)] = &[("guide", 6), ("docs", 104)];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/policies")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// One row of EXCEPTIONS.md: the file (relative to testdata/policies) and the codes aigw reports.
struct Exception {
    codes: Vec<String>,
}

/// Reads the markdown table: `| file | error | why |`, file and codes in backticks.
fn exceptions() -> BTreeMap<String, Exception> {
    let text = std::fs::read_to_string(root().join("EXCEPTIONS.md")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 3 || cells[0].eq_ignore_ascii_case("file") || cells[0].starts_with("---") {
            continue;
        }
        let file = cells[0].trim_matches('`').to_string();
        let codes: Vec<String> = cells[1]
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| w.starts_with("AIGW-E"))
            .map(str::to_string)
            .collect();
        assert!(
            !codes.is_empty(),
            "EXCEPTIONS.md row for {file} names no AIGW-E code"
        );
        assert!(
            !cells[2].is_empty(),
            "EXCEPTIONS.md row for {file} does not say why"
        );
        assert!(
            out.insert(file.clone(), Exception { codes }).is_none(),
            "{file} is listed twice in EXCEPTIONS.md"
        );
    }
    out
}

fn report(name: &str, text: &str, diags: &[Diagnostic]) -> String {
    let source = aigw::policy::Source {
        name: name.to_string(),
        text: text.to_string(),
    };
    let style = Style {
        color: false,
        width: 100,
    };
    diags.iter().map(|d| human(d, &source, style)).collect()
}

#[test]
fn documented_policies_validate() {
    let exceptions = exceptions();
    let secrets = SecretStore::from_vars(std::iter::empty());
    let mut seen = Vec::new();
    let mut failures = Vec::new();
    for (dir, count) in EXPECTED {
        let files = yaml_files(&root().join(dir));
        assert_eq!(
            files.len(),
            *count,
            "testdata/policies/{dir} should hold {count} policies (MANIFEST.md)"
        );
        for path in files {
            let rel = format!("{dir}/{}", path.file_name().unwrap().to_string_lossy());
            let bytes = std::fs::read(&path).unwrap();
            let (source, diags) = check_text(&rel, &bytes, &secrets);
            let errors: Vec<&Diagnostic> = diags.iter().filter(|d| d.is_error()).collect();
            match exceptions.get(&rel) {
                None if !errors.is_empty() => failures.push(format!(
                    "{rel} should validate but has errors:\n{}",
                    report(&rel, &source.text, &diags)
                )),
                None => {}
                Some(ex) => {
                    if errors.is_empty() {
                        failures.push(format!(
                            "{rel} is listed in EXCEPTIONS.md but now validates: remove it from the table"
                        ));
                    }
                    for code in &ex.codes {
                        if !errors.iter().any(|d| d.code.id() == code) {
                            failures.push(format!(
                                "{rel}: EXCEPTIONS.md says {code}, aigw reports:\n{}",
                                report(&rel, &source.text, &diags)
                            ));
                        }
                    }
                }
            }
            seen.push(rel);
        }
    }
    for file in exceptions.keys() {
        if !seen.contains(file) {
            failures.push(format!(
                "EXCEPTIONS.md lists {file}, which is not in the corpus"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}
