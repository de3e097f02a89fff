//! Self-registration: `PENDING -> APPROVED | REJECTED`, decided by a reviewer.

use super::Refusal;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegistrationState {
    Pending,
    Approved,
    Rejected,
}

impl RegistrationState {
    pub const ALL: [RegistrationState; 3] = [
        RegistrationState::Pending,
        RegistrationState::Approved,
        RegistrationState::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationState::Pending => "PENDING",
            RegistrationState::Approved => "APPROVED",
            RegistrationState::Rejected => "REJECTED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegistrationEvent {
    Approve,
    Reject,
}

impl RegistrationEvent {
    pub const ALL: [RegistrationEvent; 2] = [RegistrationEvent::Approve, RegistrationEvent::Reject];

    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationEvent::Approve => "APPROVE",
            RegistrationEvent::Reject => "REJECT",
        }
    }
}

/// The state after `event`; only a PENDING registration is decided, once.
pub fn transition(
    state: RegistrationState,
    event: RegistrationEvent,
) -> Result<RegistrationState, Refusal> {
    use RegistrationEvent as E;
    use RegistrationState as S;
    match (state, event) {
        (S::Pending, E::Approve) => Ok(S::Approved),
        (S::Pending, E::Reject) => Ok(S::Rejected),
        (S::Approved | S::Rejected, _) => Err(Refusal {
            from: state.as_str(),
            event: event.as_str(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use RegistrationEvent as E;
    use RegistrationState as S;

    const TABLE: [(S, E, Option<S>); 6] = [
        (S::Pending, E::Approve, Some(S::Approved)),
        (S::Pending, E::Reject, Some(S::Rejected)),
        (S::Approved, E::Approve, None),
        (S::Approved, E::Reject, None),
        (S::Rejected, E::Approve, None),
        (S::Rejected, E::Reject, None),
    ];

    #[test]
    fn every_state_and_event() {
        for state in S::ALL {
            for event in E::ALL {
                let expected = TABLE
                    .iter()
                    .find(|(s, e, _)| *s == state && *e == event)
                    .map(|(_, _, to)| *to)
                    .unwrap_or_else(|| panic!("{state:?} x {event:?} missing from the table"));
                match (transition(state, event), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{state:?} x {event:?}"),
                    (Err(refusal), None) => assert_eq!(refusal.from, state.as_str()),
                    (got, want) => panic!("{state:?} x {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
        for state in S::ALL {
            assert_eq!(S::parse(state.as_str()), Some(state));
        }
    }
}
