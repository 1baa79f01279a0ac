//! The whole traffic policy: `on_http_request` and `on_http_response` rules around the
//! `ai-gateway` action, evaluated the way ngrok does.
//!
//! - [`program`]: the rules compiled at load (expressions, `${…}`, action configs), with
//!   `validate`'s diagnostics.
//! - [`eval`]: the pure evaluator; `serve` applies its decisions, `explain` prints them.
//! - [`cel`]: the request CEL environment (`req`, `res`, `conn`, `vars`, `actions`, `time`,
//!   `endpoint`, ngrok's functions).
//! - [`decorate`]: `ai-gateway`'s `headers`, `query_params` and `body` with their `${…}`.
//! - [`cookies`]: `req.cookies`, `res.cookies` and the cookie functions.
//! - [`native`]: the direct path for the common shapes of expressions.
//! - [`rate`]: rate-limit counters behind the [`rate::RateState`] port.
//!
//! Nothing here knows HTTP libraries or the terminal.

pub mod cel;
pub mod cel_ngrok;
pub mod cookies;
pub mod decorate;
pub mod eval;
pub mod jwt;
mod native;
pub mod program;
pub mod rate;
pub mod request;
pub mod template;

pub use eval::{HeaderEdit, Outcome, Ports, Reply, Resume, RuleTrace, Stop};
pub use program::{Program, compile};
pub use rate::{InProcess, RateState};
pub use request::{RequestView, ResponseView};
