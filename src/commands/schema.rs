//! `aigw schema`: the JSON Schema of policy.yaml (kept in `completions/policy.schema.json`).

use std::io::Write;

use crate::commands::Exit;
use crate::policy::schema::policy_schema_text;

pub fn run() -> Exit {
    let _ = std::io::stdout().write_all(policy_schema_text().as_bytes());
    Exit::Success
}
