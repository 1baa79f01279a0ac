//! Local resolution of `${secrets.get('vault', 'name')}`.
//!
//! ngrok keeps secrets in vaults in its cloud. Locally they come from the environment,
//! `AIGW_SECRET_<VAULT>_<NAME>` (upper-cased, every non-alphanumeric as `_`), or from a
//! `--secrets FILE` (YAML: `vault: {name: value}`); the environment wins. The one-argument form
//! `secrets.get('name')` that some ngrok examples use reads `AIGW_SECRET_<NAME>`, or a top-level
//! `name: value` in the file.
//!
//! The vault `env` is aigw's bridge from configs that name plain environment variables
//! (LiteLLM's `os.environ/NAME`, which `aigw convert` turns into `secrets.get('env', 'NAME')`):
//! after `AIGW_SECRET_ENV_<NAME>` and the file, it reads the variable `NAME` itself, verbatim.

use std::collections::HashMap;
use std::path::Path;

use super::interpolate::SecretRef;

#[derive(Debug, Clone, Default)]
pub struct SecretStore {
    values: HashMap<String, String>,
    /// Every variable given, for the `env` vault. Not in [`SecretStore::values`]: only the
    /// ones a policy references are secrets (the gateway scrubs configured keys itself).
    plain: HashMap<String, String>,
}

/// Why `--secrets FILE` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read secrets file {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("secrets file {} is larger than {} MiB, the most aigw reads; is it the file you meant?", path.display(), limit >> 20)]
    TooLarge {
        path: std::path::PathBuf,
        limit: usize,
    },
    #[error("cannot read secrets file {}: it is not UTF-8 text", .0.display())]
    NotUtf8(std::path::PathBuf),
    #[error("secret {} contains a line break or another control character, which an HTTP header cannot carry; remove it (a trailing newline: `printf %s` instead of `echo`, `|-` instead of `|` in YAML)", names.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "))]
    NotHeaderSafe { names: Vec<String> },
    #[error("secrets file {} is not a YAML mapping: {source}", path.display())]
    NotAMapping {
        path: std::path::PathBuf,
        source: Box<serde_saphyr::Error>,
    },
}

/// The vault whose names are read from plain environment variables.
pub const ENV_VAULT: &str = "env";

impl SecretStore {
    /// Secrets from the process environment only.
    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    /// Secrets from `AIGW_SECRET_*` pairs (the environment, or a test's own list).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let plain: HashMap<String, String> = vars.into_iter().collect();
        let values = plain
            .iter()
            .filter(|(k, _)| k.starts_with("AIGW_SECRET_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        SecretStore { values, plain }
    }

    /// Adds the secrets of a YAML file; values already present (from the environment) win.
    pub fn with_file(mut self, path: &Path) -> Result<Self, SecretsError> {
        let limit = super::MAX_SECRETS_BYTES;
        let bytes = super::read_prefix(path, limit + 1).map_err(|source| SecretsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if bytes.len() > limit {
            return Err(SecretsError::TooLarge {
                path: path.to_path_buf(),
                limit,
            });
        }
        let text =
            String::from_utf8(bytes).map_err(|_| SecretsError::NotUtf8(path.to_path_buf()))?;
        let parsed: HashMap<String, serde_json::Value> =
            serde_saphyr::from_str(&text).map_err(|source| SecretsError::NotAMapping {
                path: path.to_path_buf(),
                source: Box::new(source),
            })?;
        for (vault, entry) in parsed {
            match entry {
                serde_json::Value::Object(names) => {
                    for (name, value) in names {
                        if let Some(v) = scalar(&value) {
                            self.values
                                .entry(env_name(Some(&vault), &name))
                                .or_insert(v);
                        }
                    }
                }
                other => {
                    if let Some(v) = scalar(&other) {
                        self.values.entry(env_name(None, &vault)).or_insert(v);
                    }
                }
            }
        }
        Ok(self)
    }

    /// An error naming every secret whose value cannot go into an HTTP header (a CR, LF or
    /// other control character, typically a trailing newline from `echo` or a YAML block): hyper
    /// refuses such a header value, and the `Authorization` it was for would silently be left out.
    pub fn check_header_safe(&self) -> Result<(), SecretsError> {
        let mut bad: Vec<&str> = self
            .values
            .iter()
            .filter(|(_, v)| v.chars().any(|c| c.is_control() && c != '\t'))
            .map(|(k, _)| k.as_str())
            .collect();
        if bad.is_empty() {
            return Ok(());
        }
        bad.sort_unstable();
        Err(SecretsError::NotHeaderSafe {
            names: bad.into_iter().map(String::from).collect(),
        })
    }

    /// Every secret value (for scrubbing them out of messages).
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.values().map(String::as_str)
    }

    pub fn get(&self, secret: &SecretRef) -> Option<&str> {
        let vault = secret.vault.as_deref();
        self.values
            .get(&env_name(vault, &secret.name))
            .or_else(|| {
                vault
                    .filter(|v| v.eq_ignore_ascii_case(ENV_VAULT))
                    .and_then(|_| self.plain.get(&secret.name))
            })
            .map(String::as_str)
    }
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A name as an environment variable holds it: upper-cased, every other character as `_`
/// (`AIGW_BASE_URL_<ID>`, `AIGW_SECRET_<VAULT>_<NAME>`).
pub fn env_word(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The environment variable that holds a secret: `AIGW_SECRET_OPENAI_API_KEY` for
/// `secrets.get('openai', 'api-key')`.
pub fn env_name(vault: Option<&str>, name: &str) -> String {
    let clean = env_word;
    match vault {
        Some(v) => format!("AIGW_SECRET_{}_{}", clean(v), clean(name)),
        None => format!("AIGW_SECRET_{}", clean(name)),
    }
}

/// `sk-…7890`: enough to recognise a key, never enough to use it.
pub fn redact(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    // Below 12 characters, seven shown characters would give most of the key away.
    if chars.len() < 12 {
        return "…".into();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(vault: Option<&str>, name: &str) -> SecretRef {
        SecretRef {
            vault: vault.map(String::from),
            name: name.into(),
            range: 0..0,
        }
    }

    #[test]
    fn env_names() {
        assert_eq!(
            env_name(Some("openai"), "api-key"),
            "AIGW_SECRET_OPENAI_API_KEY"
        );
        assert_eq!(
            env_name(None, "openai-api-key"),
            "AIGW_SECRET_OPENAI_API_KEY"
        );
    }

    #[test]
    fn lookup_from_vars() {
        let s = SecretStore::from_vars([(
            "AIGW_SECRET_OPENAI_API_KEY".to_string(),
            "sk-1".to_string(),
        )]);
        assert_eq!(s.get(&secret(Some("openai"), "api-key")), Some("sk-1"));
        assert_eq!(s.get(&secret(Some("openai"), "other")), None);
    }

    #[test]
    fn file_values_lose_to_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.yaml");
        std::fs::write(
            &path,
            "openai:\n  api-key: from-file\n  backup: b\nflat: f\n",
        )
        .unwrap();
        let s = SecretStore::from_vars([(
            "AIGW_SECRET_OPENAI_API_KEY".to_string(),
            "from-env".to_string(),
        )])
        .with_file(&path)
        .unwrap();
        assert_eq!(s.get(&secret(Some("openai"), "api-key")), Some("from-env"));
        assert_eq!(s.get(&secret(Some("openai"), "backup")), Some("b"));
        assert_eq!(s.get(&secret(None, "flat")), Some("f"));
    }

    #[test]
    fn env_vault_reads_the_plain_variable_after_aigw_secret() {
        let s = SecretStore::from_vars([
            ("OPENAI_API_KEY".to_string(), "plain".to_string()),
            ("GROQ_API_KEY".to_string(), "plain-groq".to_string()),
            (
                "AIGW_SECRET_ENV_GROQ_API_KEY".to_string(),
                "prefixed".to_string(),
            ),
        ]);
        assert_eq!(s.get(&secret(Some("env"), "OPENAI_API_KEY")), Some("plain"));
        assert_eq!(
            s.get(&secret(Some("env"), "GROQ_API_KEY")),
            Some("prefixed")
        );
        // Only the `env` vault reads plain variables, and only by their exact name.
        assert_eq!(s.get(&secret(Some("other"), "OPENAI_API_KEY")), None);
        assert_eq!(s.get(&secret(Some("env"), "openai_api_key")), None);
        assert_eq!(s.get(&secret(None, "OPENAI_API_KEY")), None);
        assert!(!s.values().any(|v| v == "plain"));
    }

    #[test]
    fn redaction_keeps_prefix_and_last_four() {
        assert_eq!(redact("sk-proj-abcdefghij7890"), "sk-…7890");
        assert_eq!(redact("short"), "…");
        assert_eq!(redact("elevenchars"), "…");
        assert_eq!(redact("twelve-chars"), "twe…hars");
    }

    #[test]
    fn secrets_with_line_breaks_are_refused_by_name() {
        let store = SecretStore::from_vars([
            ("AIGW_SECRET_OK".to_string(), "sk-fine".to_string()),
            ("AIGW_SECRET_V_KEY".to_string(), "sk-abc\n".to_string()),
            ("AIGW_SECRET_CR".to_string(), "a\rb".to_string()),
        ]);
        let e = store.check_header_safe().unwrap_err().to_string();
        assert!(
            e.starts_with("secret `AIGW_SECRET_CR`, `AIGW_SECRET_V_KEY` contains"),
            "{e}"
        );
        assert!(!e.contains("sk-abc"), "the value is never shown: {e}");
        assert!(
            SecretStore::from_vars([("AIGW_SECRET_OK".to_string(), "x".to_string())])
                .check_header_safe()
                .is_ok()
        );
    }
}
