//! The whole CQRS Identity Suite in one process, wired as production wires it, for end-to-end
//! tests (the journeys in `tests/journeys/`) and for other crates' tests (the cqrsctl CLI
//! tests drive it through [`Suite::url`] / [`Suite::channel`]).
//!
//! [`Suite::start`] runs the four services, each over its own fresh Postgres database
//! ([`cqrs_testkit::TestDb`]), all sharing one Redis namespace ([`cqrs_testkit::TestRedis`])
//! and one SMTP sink ([`cqrs_testkit::SmtpSink`], field [`Suite::smtp`]). Each service is
//! configured from environment-style settings and assembled from the same library calls its
//! `run` makes:
//!
//! - identity holds the one signing key; every other service trusts its public key
//!   (`CQRS_TOKEN_VERIFY_KEYS`) and checks user sessions in the shared Redis namespace;
//! - the directory and access authenticate their own calls with client secrets exchanged at
//!   identity's `IssueServiceToken` (`CQRS_SERVICE_CLIENTS`), as a real deployment does; the
//!   suite itself has such a client too ([`Suite::GATEWAY_CLIENT_ID`], see
//!   [`Suite::service_token`]);
//! - identity's and access's outbox relays and the notification SMTP worker run with short
//!   poll intervals, so mail arrives in the sink within tens of milliseconds;
//! - identity bootstraps the service desk (`CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL` =
//!   [`Suite::DESK_EMAIL`]) and the suite runs the bootstrap grant pass until the account has
//!   its SERVICE_DESK grant;
//! - identity, the directory and access share one [`OffsetClock`](cqrs_runtime::clock::OffsetClock) ([`Suite::clock`]), so a
//!   test can move "now" (minimum password age, link and invitation expiry) without sleeping.
//!   Redis TTLs (sessions, lock-out counters) still follow real time;
//! - access's periodic invitation-expiry sweep is not started: drive it with
//!   [`Suite::expire_invitations`].
//!
//! Everything stops when the [`Suite`] is dropped; its databases and Redis keys are removed.
//!
//! Test support: it fails loudly (panics with a message saying what was expected) rather than
//! returning errors, so `unwrap`/`expect`/`panic` are allowed in this crate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
pub mod oidc;
mod start;
mod suite;
pub mod world;

pub use audit::{AuditQuery, AuditRecord};
pub use cqrs_testkit::{
    CapturedMail, SmtpSink, assert_reason, field_violations, status_reason, violated_fields,
    with_token,
};
pub use start::SuiteBuilder;
pub use suite::{Service, SignedIn, Suite, subject, wait_until_listening};
pub use world::{NEW_PASSWORD, Org, PASSWORD, Person, Tree, World, people};
