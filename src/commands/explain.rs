//! `aigw explain` (in progress on another branch).

use crate::cli::{ColorChoice, ExplainArgs};
use crate::commands::Exit;

pub fn run(_args: ExplainArgs, _color: ColorChoice) -> Exit {
    eprintln!("aigw explain: not available in this build yet");
    Exit::Error
}
