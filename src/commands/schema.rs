//! `aigw schema` (in progress).

use crate::commands::Exit;

pub fn run() -> Exit {
    eprintln!("aigw schema: not available in this build yet");
    Exit::Error
}
