//! Pure rules of the access service: the three workflows' state machines and the checks on
//! what a client may submit. No I/O; time is passed in.
//!
//! Every transition is a function `(state, event) -> Result<state, Refusal>`; the api applies
//! it to a locked row and stores the result with actor, time and reason.

pub mod access_request;
pub mod invitation;
pub mod registration;
pub mod rules;

pub use access_request::{AccessRequestEvent, AccessRequestState};
pub use invitation::{InvitationEvent, InvitationState};
pub use registration::{RegistrationEvent, RegistrationState};
pub use rules::{Decision, Workflow};

/// A transition the current state does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{event} is not possible from {from}")]
pub struct Refusal {
    /// The state the row is in.
    pub from: &'static str,
    /// The event that was refused.
    pub event: &'static str,
}
