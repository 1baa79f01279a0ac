//! What every command shares: finding the policy, reading files, colour.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use crate::cli::{ColorChoice, PolicyArgs};
use crate::policy::secrets::{SecretStore, SecretsError};
use crate::policy::{self, Loaded};
use crate::render::diagnostics::Style;
use crate::routing::upstream::BaseUrlOverrides;

/// The policy aigw uses when none is given and ./policy.yaml does not exist.
pub const DEFAULT_POLICY: &str = include_str!("../default_policy.yaml");
pub const DEFAULT_POLICY_NAME: &str = "built-in default policy";

/// Where a command's policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOrigin {
    File(PathBuf),
    BuiltIn,
}

impl PolicyOrigin {
    pub fn describe(&self) -> String {
        match self {
            PolicyOrigin::File(p) => p.display().to_string(),
            PolicyOrigin::BuiltIn => "built-in default; `aigw init` writes it out".to_string(),
        }
    }
}

/// Why an input file (a policy, a test file) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read standard input: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("{}: no such file", .0.display())]
    NotFound(PathBuf),
    #[error("{}: is a directory, not a policy file", .0.display())]
    IsADirectory(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{name} is larger than {} MiB, the most aigw reads as a policy; is it the file you meant?", limit >> 20)]
    TooLarge { name: String, limit: usize },
}

/// Reads a policy file, or standard input for `-`, up to [`policy::MAX_POLICY_BYTES`] (never
/// more is held: `/dev/zero` is refused, not read until memory runs out).
pub fn read_input(path: &Path) -> Result<Vec<u8>, InputError> {
    let limit = policy::MAX_POLICY_BYTES;
    let (bytes, name) = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(limit as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(InputError::Stdin)?;
        (buf, "standard input".to_string())
    } else {
        let bytes = policy::read_prefix(path, limit + 1).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => InputError::NotFound(path.to_path_buf()),
            std::io::ErrorKind::IsADirectory => InputError::IsADirectory(path.to_path_buf()),
            _ => InputError::Read {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        (bytes, path.display().to_string())
    };
    if bytes.len() > limit {
        return Err(InputError::TooLarge { name, limit });
    }
    Ok(bytes)
}

/// Loads the policy a command runs with: `--policy FILE`, else ./policy.yaml, else the built-in.
pub fn load_policy(path: Option<&Path>) -> Result<(Loaded, PolicyOrigin), InputError> {
    let chosen = match path {
        Some(p) => Some(p.to_path_buf()),
        None if Path::new("policy.yaml").is_file() => Some(PathBuf::from("policy.yaml")),
        None => None,
    };
    match chosen {
        Some(p) => {
            let bytes = read_input(&p)?;
            let name = if p == Path::new("-") {
                "<stdin>".to_string()
            } else {
                p.display().to_string()
            };
            Ok((policy::load_bytes(&name, &bytes), PolicyOrigin::File(p)))
        }
        None => Ok((
            policy::load_str(DEFAULT_POLICY_NAME, DEFAULT_POLICY),
            PolicyOrigin::BuiltIn,
        )),
    }
}

/// Secrets from the environment plus `--secrets FILE`.
pub fn secrets(file: Option<&Path>) -> Result<SecretStore, SecretsError> {
    let store = SecretStore::from_env();
    let store = match file {
        Some(f) => store.with_file(f)?,
        None => store,
    };
    // Refused before serving: the store is fixed for the process, so no reload can bring one.
    store.check_header_safe()?;
    Ok(store)
}

pub fn overrides(args: &PolicyArgs) -> BaseUrlOverrides {
    BaseUrlOverrides::new(&args.base_urls, std::env::vars())
}

/// Colour and width for human output on standard output / error.
pub fn style(choice: ColorChoice, stream_is_terminal: bool) -> Style {
    let color = match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            stream_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    Style { color, width: 100 }
}

pub fn stdout_style(choice: ColorChoice) -> Style {
    style(choice, std::io::stdout().is_terminal())
}

/// The attempt loop's dry run over `plan` with the `--fail` / `fail:` specs: the first spec
/// that names a candidate (by provider id or alias, and model) gives its error.
pub fn simulate(
    engine: &crate::routing::engine::Engine,
    plan: &crate::routing::plan::Plan,
    specs: &[crate::gateway::attempts::simulate::FailSpec],
) -> crate::gateway::attempts::simulate::Walk {
    use crate::gateway::attempts::{failure::RetryOptions, simulate};
    let fails: Vec<_> = plan
        .attempts
        .iter()
        .map(|a| {
            let aliases = engine
                .provider(&a.provider)
                .map_or(&[][..], |p| p.aliases.as_slice());
            specs
                .iter()
                .find(|s| s.matches(a, aliases))
                .map(|s| s.error)
        })
        .collect();
    simulate::walk(&plan.attempts, &fails, &RetryOptions::default())
}
