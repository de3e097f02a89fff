//! The suite's pure domain rules, shared by every service: no tonic, sqlx, redis or tokio,
//! and no I/O (time is passed in; [`clock`] is the one place that reads the system clock). A
//! service's own `domain` module builds on these and on plain data crates only;
//! `scripts/check-domain.sh` keeps it that way.
//!
//! - [`backoff`]: the one retry schedule (capped exponential, optionally jittered);
//! - [`clock`]: a service's notion of "now" ([`clock::Clock`]), passed in by callers;
//! - [`email`]: the e-mail normal form, address syntax and the generic-mailbox rule;
//! - [`account`]: realms, account states and people's names;
//! - [`links`]: the mailed-link token scheme (registration, invitation, reset);
//! - [`password`]: the password-policy profiles and the always-on rules;
//! - [`organisation`]: organisation kinds, ODS codes and names, the role valid at each kind;
//! - [`roles`] and [`decision`]: roles, permissions, and the one permission decision;
//! - [`violations`]: per-field validation failures, reported by the edge as `BadRequest`.

pub mod account;
pub mod backoff;
pub mod clock;
pub mod decision;
pub mod email;
pub mod links;
mod names;
pub mod organisation;
pub mod password;
pub mod roles;
pub mod violations;

pub use decision::{
    Decision, GRANTED, NO_GRANT_IN_SCOPE, ROLE_LACKS_PERMISSION, counts_approver_grants, covers,
    decide, decide_any, has_suite_scope,
};
pub use roles::{Permission, Role, UnknownName, role_grants};
pub use violations::FieldViolations;
