//! `aigw validate` (in progress on another branch).

use crate::cli::{ColorChoice, ValidateArgs};
use crate::commands::Exit;

pub fn run(_args: ValidateArgs, _color: ColorChoice) -> Exit {
    eprintln!("aigw validate: not available in this build yet");
    Exit::Error
}
