//! `aigw test` (in progress on another branch).

use crate::cli::{ColorChoice, TestArgs};
use crate::commands::Exit;

pub fn run(_args: TestArgs, _color: ColorChoice) -> Exit {
    eprintln!("aigw test: not available in this build yet");
    Exit::Error
}
