pub mod access_log;
pub mod log_writer;
pub mod metrics;
pub mod redact;
pub mod traffic;
pub mod usage;
