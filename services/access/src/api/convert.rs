//! Rows to protobuf messages, and proto enums to domain values.

use cqrs_auth::RoleProto;

use chrono::{DateTime, Utc};
use cqrs_auth::Role;
use cqrs_proto::access::v1 as pb;

use crate::domain::{AccessRequestState, Decision, InvitationState, RegistrationState, invitation};
use crate::store::{AccessRequestRow, InvitationRow, RegistrationRow};

pub use cqrs_edge::request::{UnknownValue, role_from_proto};

pub use cqrs_edge::timestamp;

fn role_to_proto(role: &str) -> i32 {
    Role::parse(role).map_or(cqrs_proto::common::v1::Role::Unspecified, Role::to_proto) as i32
}

pub fn decision_from_proto(value: i32) -> Result<Option<Decision>, UnknownValue> {
    Ok(
        match pb::Decision::try_from(value).map_err(|_| UnknownValue)? {
            pb::Decision::Unspecified => None,
            pb::Decision::Approve => Some(Decision::Approve),
            pb::Decision::Reject => Some(Decision::Reject),
        },
    )
}

pub fn invitation_state_from_proto(value: i32) -> Result<Option<InvitationState>, UnknownValue> {
    Ok(
        match pb::InvitationState::try_from(value).map_err(|_| UnknownValue)? {
            pb::InvitationState::Unspecified => None,
            pb::InvitationState::Sent => Some(InvitationState::Sent),
            pb::InvitationState::Accepted => Some(InvitationState::Accepted),
            pb::InvitationState::Expired => Some(InvitationState::Expired),
            pb::InvitationState::Cancelled => Some(InvitationState::Cancelled),
        },
    )
}

fn invitation_state_to_proto(state: Option<InvitationState>) -> pb::InvitationState {
    match state {
        Some(InvitationState::Sent) => pb::InvitationState::Sent,
        Some(InvitationState::Accepted) => pb::InvitationState::Accepted,
        Some(InvitationState::Expired) => pb::InvitationState::Expired,
        Some(InvitationState::Cancelled) => pb::InvitationState::Cancelled,
        None => pb::InvitationState::Unspecified,
    }
}

pub fn registration_state_from_proto(
    value: i32,
) -> Result<Option<RegistrationState>, UnknownValue> {
    Ok(
        match pb::RegistrationState::try_from(value).map_err(|_| UnknownValue)? {
            pb::RegistrationState::Unspecified => None,
            pb::RegistrationState::Pending => Some(RegistrationState::Pending),
            pb::RegistrationState::Approved => Some(RegistrationState::Approved),
            pb::RegistrationState::Rejected => Some(RegistrationState::Rejected),
        },
    )
}

fn registration_state_to_proto(state: Option<RegistrationState>) -> pb::RegistrationState {
    match state {
        Some(RegistrationState::Pending) => pb::RegistrationState::Pending,
        Some(RegistrationState::Approved) => pb::RegistrationState::Approved,
        Some(RegistrationState::Rejected) => pb::RegistrationState::Rejected,
        None => pb::RegistrationState::Unspecified,
    }
}

pub fn access_request_state_from_proto(
    value: i32,
) -> Result<Option<AccessRequestState>, UnknownValue> {
    Ok(
        match pb::AccessRequestState::try_from(value).map_err(|_| UnknownValue)? {
            pb::AccessRequestState::Unspecified => None,
            pb::AccessRequestState::Pending => Some(AccessRequestState::Pending),
            pb::AccessRequestState::Approved => Some(AccessRequestState::Approved),
            pb::AccessRequestState::Rejected => Some(AccessRequestState::Rejected),
            pb::AccessRequestState::Withdrawn => Some(AccessRequestState::Withdrawn),
        },
    )
}

fn access_request_state_to_proto(state: Option<AccessRequestState>) -> pb::AccessRequestState {
    match state {
        Some(AccessRequestState::Pending) => pb::AccessRequestState::Pending,
        Some(AccessRequestState::Approved) => pb::AccessRequestState::Approved,
        Some(AccessRequestState::Rejected) => pb::AccessRequestState::Rejected,
        Some(AccessRequestState::Withdrawn) => pb::AccessRequestState::Withdrawn,
        None => pb::AccessRequestState::Unspecified,
    }
}

/// An invitation as shown at `now`: a SENT one whose link ran out shows as EXPIRED. Never
/// carries the link token (the row has none to give).
pub fn invitation(row: &InvitationRow, now: DateTime<Utc>) -> pb::Invitation {
    let state = row
        .stored_state()
        .map(|state| invitation::effective(state, row.expires_at, now));
    pb::Invitation {
        id: row.id.to_string(),
        email: row.email.clone(),
        first_name: row.first_name.clone(),
        last_name: row.last_name.clone(),
        organisation_id: row.organisation_id.to_string(),
        organisation_name: row.organisation_name.clone(),
        role: role_to_proto(&row.role),
        state: invitation_state_to_proto(state) as i32,
        // A service that invited has no account to name.
        inviter_id: if row.inviter_kind == "user" {
            row.inviter_id.clone()
        } else {
            String::new()
        },
        account_id: row.account_id.map(|a| a.to_string()).unwrap_or_default(),
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
        expire_time: Some(timestamp(row.expires_at)),
        send_time: Some(timestamp(row.sent_at)),
    }
}

pub fn registration(row: &RegistrationRow) -> pb::Registration {
    pb::Registration {
        id: row.id.to_string(),
        email: row.email.clone(),
        first_name: row.first_name.clone(),
        last_name: row.last_name.clone(),
        organisation_id: row.organisation_id.to_string(),
        organisation_name: row.organisation_name.clone(),
        ods_code: row.ods_code.clone(),
        role: role_to_proto(&row.role),
        state: registration_state_to_proto(row.state()) as i32,
        reviewer_id: row.reviewer_id.clone().unwrap_or_default(),
        decision_reason: row.decision_reason.clone(),
        review_time: row.reviewed_at.map(timestamp),
        account_id: row.account_id.map(|a| a.to_string()).unwrap_or_default(),
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
    }
}

pub fn access_request(row: &AccessRequestRow) -> pb::AccessRequest {
    // A withdrawal is no review: its time is the update time, and there is no reviewer.
    let reviewed = matches!(
        row.state(),
        Some(AccessRequestState::Approved | AccessRequestState::Rejected)
    );
    pb::AccessRequest {
        id: row.id.to_string(),
        account_id: row.account_id.to_string(),
        organisation_id: row.organisation_id.to_string(),
        organisation_name: row.organisation_name.clone(),
        role: role_to_proto(&row.role),
        reason: row.reason.clone(),
        state: access_request_state_to_proto(row.state()) as i32,
        reviewer_id: if reviewed {
            row.reviewer_id.clone().unwrap_or_default()
        } else {
            String::new()
        },
        decision_reason: row.decision_reason.clone(),
        review_time: if reviewed {
            row.reviewed_at.map(timestamp)
        } else {
            None
        },
        grant_id: row.grant_id.map(|g| g.to_string()).unwrap_or_default(),
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use uuid::Uuid;

    /// A fixed "now": these tests need no clock.
    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn row(state: &str, expires_in: TimeDelta) -> InvitationRow {
        let now = t0();
        InvitationRow {
            id: Uuid::new_v4(),
            email: "ann@x.org".into(),
            first_name: "Ann".into(),
            last_name: "Lee".into(),
            organisation_id: Uuid::new_v4(),
            organisation_name: "Practice".into(),
            organisation_path: vec![],
            role: "PRACTICE_USER".into(),
            state: state.into(),
            inviter_kind: "service".into(),
            inviter_id: "gateway".into(),
            account_id: None,
            changed_by_kind: "service".into(),
            changed_by_id: "gateway".into(),
            change_reason: String::new(),
            created_at: now,
            updated_at: now,
            expires_at: now + expires_in,
            sent_at: now,
        }
    }

    #[test]
    fn a_run_out_invitation_shows_as_expired() {
        let now = t0();
        let live = invitation(&row("SENT", TimeDelta::days(1)), now);
        assert_eq!(live.state, pb::InvitationState::Sent as i32);
        assert_eq!(live.inviter_id, "");
        let lapsed = invitation(&row("SENT", TimeDelta::seconds(-1)), now);
        assert_eq!(lapsed.state, pb::InvitationState::Expired as i32);
        assert_eq!(
            invitation(&row("CANCELLED", TimeDelta::seconds(-1)), now).state,
            pb::InvitationState::Cancelled as i32
        );
    }

    #[test]
    fn enums_round_trip() {
        for state in InvitationState::ALL {
            let proto = invitation_state_to_proto(Some(state)) as i32;
            assert_eq!(invitation_state_from_proto(proto), Ok(Some(state)));
        }
        for state in RegistrationState::ALL {
            let proto = registration_state_to_proto(Some(state)) as i32;
            assert_eq!(registration_state_from_proto(proto), Ok(Some(state)));
        }
        for state in AccessRequestState::ALL {
            let proto = access_request_state_to_proto(Some(state)) as i32;
            assert_eq!(access_request_state_from_proto(proto), Ok(Some(state)));
        }
        assert_eq!(decision_from_proto(0), Ok(None));
        assert_eq!(decision_from_proto(2), Ok(Some(Decision::Reject)));
        assert_eq!(decision_from_proto(9), Err(UnknownValue));
        assert_eq!(invitation_state_from_proto(42), Err(UnknownValue));
    }
}
