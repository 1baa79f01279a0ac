pub mod breaker;
pub mod failure;
pub mod forward;
mod run;
pub mod template;
