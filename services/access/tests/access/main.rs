//! The access service end to end, in-process, with the real identity, directory and
//! notification services beside it, against real Postgres, Redis and an SMTP sink.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod calls;

mod access_requests;
mod invitations;
mod matrix;
mod readiness;
mod reads;
mod registrations;
