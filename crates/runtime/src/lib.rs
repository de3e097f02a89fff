//! Server bootstrap shared by every CQRS identity service: configuration, Postgres pool and
//! migrations, error statuses, telemetry, health and the gRPC server stack.

pub mod audit;
pub mod config;
pub mod db;
pub mod errors;
pub mod health;
pub mod paging;
pub mod server;
pub mod telemetry;
