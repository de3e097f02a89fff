//! Access request: `PENDING -> APPROVED | REJECTED` (a reviewer) `| WITHDRAWN` (the
//! requester). Whichever of a decision and a withdrawal is applied first wins; the other is
//! then refused, because every state but PENDING is final.

use super::Refusal;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessRequestState {
    Pending,
    Approved,
    Rejected,
    Withdrawn,
}

impl AccessRequestState {
    pub const ALL: [AccessRequestState; 4] = [
        AccessRequestState::Pending,
        AccessRequestState::Approved,
        AccessRequestState::Rejected,
        AccessRequestState::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccessRequestState::Pending => "PENDING",
            AccessRequestState::Approved => "APPROVED",
            AccessRequestState::Rejected => "REJECTED",
            AccessRequestState::Withdrawn => "WITHDRAWN",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessRequestEvent {
    Approve,
    Reject,
    Withdraw,
}

impl AccessRequestEvent {
    pub const ALL: [AccessRequestEvent; 3] = [
        AccessRequestEvent::Approve,
        AccessRequestEvent::Reject,
        AccessRequestEvent::Withdraw,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccessRequestEvent::Approve => "APPROVE",
            AccessRequestEvent::Reject => "REJECT",
            AccessRequestEvent::Withdraw => "WITHDRAW",
        }
    }
}

/// The state after `event`; only a PENDING request moves, once.
pub fn transition(
    state: AccessRequestState,
    event: AccessRequestEvent,
) -> Result<AccessRequestState, Refusal> {
    use AccessRequestEvent as E;
    use AccessRequestState as S;
    match (state, event) {
        (S::Pending, E::Approve) => Ok(S::Approved),
        (S::Pending, E::Reject) => Ok(S::Rejected),
        (S::Pending, E::Withdraw) => Ok(S::Withdrawn),
        (S::Approved | S::Rejected | S::Withdrawn, _) => Err(Refusal {
            from: state.as_str(),
            event: event.as_str(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use AccessRequestEvent as E;
    use AccessRequestState as S;

    const TABLE: [(S, E, Option<S>); 12] = [
        (S::Pending, E::Approve, Some(S::Approved)),
        (S::Pending, E::Reject, Some(S::Rejected)),
        (S::Pending, E::Withdraw, Some(S::Withdrawn)),
        (S::Approved, E::Approve, None),
        (S::Approved, E::Reject, None),
        (S::Approved, E::Withdraw, None),
        (S::Rejected, E::Approve, None),
        (S::Rejected, E::Reject, None),
        (S::Rejected, E::Withdraw, None),
        (S::Withdrawn, E::Approve, None),
        (S::Withdrawn, E::Reject, None),
        (S::Withdrawn, E::Withdraw, None),
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

    #[test]
    fn a_decision_and_a_withdrawal_end_in_one_state() {
        // Whichever is applied first, the second is refused: one final state.
        for first in [E::Approve, E::Reject] {
            let decided = transition(S::Pending, first).unwrap();
            assert!(transition(decided, E::Withdraw).is_err());
        }
        let withdrawn = transition(S::Pending, E::Withdraw).unwrap();
        assert!(transition(withdrawn, E::Approve).is_err());
        assert!(transition(withdrawn, E::Reject).is_err());
    }
}
