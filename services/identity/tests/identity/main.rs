//! The identity service end to end, in-process, against a real Postgres database, a real
//! Redis and — for mail — the real notification service with an SMTP server on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

mod accounts;
mod grants;
mod links;
mod scope;
mod signin;
mod stores;
