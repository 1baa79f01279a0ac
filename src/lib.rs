//! aigw: write, test and locally serve AI-gateway routing policies.
//!
//! Dependencies point one way: `commands` → `gateway`/`render` → `routing` → `policy`.
//! The routing engine knows nothing of HTTP or the terminal.

pub mod cli;
pub mod commands;
pub mod convert;
pub mod gateway;
pub mod policy;
pub mod probe;
pub mod providers;
pub mod render;
pub mod routing;
