//! Invitation: `SENT -> ACCEPTED | EXPIRED | CANCELLED`; a resend keeps it SENT with a new
//! link and expiry. A SENT invitation past its expiry counts as EXPIRED at once
//! ([`effective`]), whether or not the sweep has recorded the transition yet.

use chrono::{DateTime, Utc};

use super::Refusal;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InvitationState {
    Sent,
    Accepted,
    Expired,
    Cancelled,
}

impl InvitationState {
    pub const ALL: [InvitationState; 4] = [
        InvitationState::Sent,
        InvitationState::Accepted,
        InvitationState::Expired,
        InvitationState::Cancelled,
    ];

    /// The storage name, also the proto value's name without its prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationState::Sent => "SENT",
            InvitationState::Accepted => "ACCEPTED",
            InvitationState::Expired => "EXPIRED",
            InvitationState::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InvitationEvent {
    /// A new link and expiry (an administrator).
    Resend,
    /// An administrator withdraws it.
    Cancel,
    /// The invitee used the link.
    Accept,
    /// The link's time ran out (the service itself).
    Expire,
}

impl InvitationEvent {
    pub const ALL: [InvitationEvent; 4] = [
        InvitationEvent::Resend,
        InvitationEvent::Cancel,
        InvitationEvent::Accept,
        InvitationEvent::Expire,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InvitationEvent::Resend => "RESEND",
            InvitationEvent::Cancel => "CANCEL",
            InvitationEvent::Accept => "ACCEPT",
            InvitationEvent::Expire => "EXPIRE",
        }
    }
}

/// The state after `event`, or why it cannot happen. Only a SENT invitation moves; every
/// other state is final.
pub fn transition(
    state: InvitationState,
    event: InvitationEvent,
) -> Result<InvitationState, Refusal> {
    use InvitationEvent as E;
    use InvitationState as S;
    match (state, event) {
        (S::Sent, E::Resend) => Ok(S::Sent),
        (S::Sent, E::Cancel) => Ok(S::Cancelled),
        (S::Sent, E::Accept) => Ok(S::Accepted),
        (S::Sent, E::Expire) => Ok(S::Expired),
        (S::Accepted | S::Expired | S::Cancelled, _) => Err(Refusal {
            from: state.as_str(),
            event: event.as_str(),
        }),
    }
}

/// The state to show and to act on at `now`: a SENT invitation whose link has run out is
/// EXPIRED even before that transition is recorded.
pub fn effective(
    state: InvitationState,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> InvitationState {
    if state == InvitationState::Sent && now >= expires_at {
        InvitationState::Expired
    } else {
        state
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use InvitationEvent as E;
    use InvitationState as S;
    use chrono::TimeDelta;

    /// Every state x event, written out: `None` = refused.
    const TABLE: [(S, E, Option<S>); 16] = [
        (S::Sent, E::Resend, Some(S::Sent)),
        (S::Sent, E::Cancel, Some(S::Cancelled)),
        (S::Sent, E::Accept, Some(S::Accepted)),
        (S::Sent, E::Expire, Some(S::Expired)),
        (S::Accepted, E::Resend, None),
        (S::Accepted, E::Cancel, None),
        (S::Accepted, E::Accept, None),
        (S::Accepted, E::Expire, None),
        (S::Expired, E::Resend, None),
        (S::Expired, E::Cancel, None),
        (S::Expired, E::Accept, None),
        (S::Expired, E::Expire, None),
        (S::Cancelled, E::Resend, None),
        (S::Cancelled, E::Cancel, None),
        (S::Cancelled, E::Accept, None),
        (S::Cancelled, E::Expire, None),
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
                    (Err(refusal), None) => {
                        assert_eq!(refusal.from, state.as_str());
                        assert_eq!(refusal.event, event.as_str());
                    }
                    (got, want) => panic!("{state:?} x {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn expiry_is_effective_at_once() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let later = now + TimeDelta::days(7);
        assert_eq!(effective(S::Sent, later, now), S::Sent);
        assert_eq!(effective(S::Sent, now, now), S::Expired);
        assert_eq!(
            effective(S::Sent, now - TimeDelta::seconds(1), now),
            S::Expired
        );
        for state in [S::Accepted, S::Cancelled, S::Expired] {
            assert_eq!(effective(state, now - TimeDelta::days(1), now), state);
        }
    }

    #[test]
    fn names_round_trip() {
        for state in S::ALL {
            assert_eq!(S::parse(state.as_str()), Some(state));
        }
        assert_eq!(S::parse("sent"), None);
    }
}
