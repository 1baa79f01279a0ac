pub mod body;
pub mod hops;
pub mod ollama_api;
pub mod open_files;
pub mod pipeline;
pub mod reload;
pub mod routes;
pub mod workers;
