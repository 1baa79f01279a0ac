//! `aigw probe` (in progress on another branch).

use crate::cli::{ColorChoice, ProbeArgs};
use crate::commands::Exit;

pub fn run(_args: ProbeArgs, _color: ColorChoice) -> Exit {
    eprintln!("aigw probe: not available in this build yet");
    Exit::Error
}
