//! Turning results into text: diagnostics (miette), tables (comfy-table) and JSON.

pub mod diagnostics;
pub mod explain;
pub mod probe;
