//! Test support for the suite: a real Postgres database per test, a private Redis namespace,
//! an SMTP sink, signing keys and in-process gRPC servers.

// This crate only runs inside tests and dev tools: failing loudly with a clear message at the
// point of the problem is the point, so unwrap/expect/panic are allowed here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod db;
pub mod echo;
mod keys;
pub mod loader;
mod redis_deployment;
mod server;
mod smtp;
mod testredis;

pub use db::TestDb;
pub use keys::TestKeys;
pub use redis_deployment::RedisDeployment;
pub use server::{
    RunningServer, assert_reason, field_violations, free_port, health, spawn, status_details,
    status_reason, violated_fields, wait_health, with_token,
};
pub use smtp::{CapturedMail, SmtpSink};
pub use testredis::TestRedis;
