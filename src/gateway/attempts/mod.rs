pub mod breaker;
pub mod failure;
pub mod forward;
pub mod resume;
mod run;
pub mod template;
