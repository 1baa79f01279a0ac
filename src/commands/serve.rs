//! `aigw serve` (in progress on another branch).

use crate::cli::{ColorChoice, ServeArgs};
use crate::commands::Exit;

pub fn run(_args: ServeArgs, _color: ColorChoice) -> Exit {
    eprintln!("aigw serve: not available in this build yet");
    Exit::Error
}
