//! The identity service end to end, in-process, against a real Postgres database, a real
//! Redis and — for mail — the real notification service with an SMTP server on loopback;
//! and its Redis stores (lock-out counter, sessions) on their own against a real Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod calls;
mod federated;
mod redis_failover;
mod redis_fixtures;

mod accounts;
mod grants;
mod links;
mod metrics;
mod postgres_failover;
mod rate_limits;
mod redis_lockout;
mod redis_sessions;
mod scope;
mod second_factor;
mod signin;
mod stores;
