pub mod breaker;
pub mod failure;
pub mod first_byte;
pub mod forward;
pub mod resume;
mod run;
pub mod simulate;
