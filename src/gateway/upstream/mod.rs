pub mod client;
pub mod continuation;
pub mod events;
pub mod failed;
pub mod pool;
pub mod stream;
