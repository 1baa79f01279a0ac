//! `aigw schema`: the JSON Schema of policy.yaml (kept in `completions/policy.schema.json`).

use std::io::Write;

use crate::commands::{CommandError, Exit};
use crate::policy::schema::policy_schema_text;

pub fn run() -> Result<Exit, CommandError> {
    std::io::stdout()
        .lock()
        .write_all(policy_schema_text().as_bytes())?;
    Ok(Exit::Success)
}
