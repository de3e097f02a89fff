//! Server bootstrap shared by every CQRS identity service: configuration, Postgres pool and
//! migrations, error statuses, telemetry, health and the gRPC server stack.

pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod db;
pub mod errors;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod paging;
pub mod server;
pub mod telemetry;
