pub mod breaker;
pub mod failure;
pub mod forward;
pub mod template;
