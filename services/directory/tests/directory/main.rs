//! The directory service end to end, in-process, against a real Postgres database, a real
//! Redis (sessions) and — for revocations — the real identity service: `cqrs_suite::Suite`
//! with the directory alone or with identity (see `calls`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod calls;

mod cache;
mod grants;
mod matrix;
mod organisations;
mod permissions;
mod revocation;
