//! Pure rules of the identity service. No I/O; the clock is passed in.
//!
//! The rules other services share (e-mail, accounts and names, link tokens, password
//! profiles) live in `cqrs_rules` and are re-exported here under their usual paths; what is
//! identity's alone (User IDs, the lock-out policy) is defined here.

pub mod lockout;
pub mod second_factor;
pub mod user_id;

pub use cqrs_rules::{account, email, links, password};
