//! The routing engine: model references, catalog, CEL environment, strategies → Plan.
//! Pure: no HTTP, no terminal, no clock; randomness comes in as a seed.

pub mod catalog;
pub mod cel;
pub mod engine;
pub mod plan;
pub mod plan_cache;
pub mod strategy_checks;
pub mod upstream;
