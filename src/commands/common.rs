//! What every command shares: finding the policy, reading files, colour.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use crate::cli::{ColorChoice, PolicyArgs};
use crate::policy::secrets::{SecretStore, SecretsFileError};
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
}

/// Reads a file, or standard input for `-`.
pub fn read_input(path: &Path) -> Result<Vec<u8>, InputError> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(InputError::Stdin)?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => InputError::NotFound(path.to_path_buf()),
        std::io::ErrorKind::IsADirectory => InputError::IsADirectory(path.to_path_buf()),
        _ => InputError::Read {
            path: path.to_path_buf(),
            source: e,
        },
    })
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
pub fn secrets(file: Option<&Path>) -> Result<SecretStore, SecretsFileError> {
    let store = SecretStore::from_env();
    match file {
        Some(f) => store.with_file(f),
        None => Ok(store),
    }
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
