//! Rows and records to protobuf messages, and proto enums to domain values.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_auth::{Role, RoleProto, VerifyingKey};
use cqrs_proto::common::v1 as common;
use cqrs_proto::identity::v1 as pb;

use crate::domain::account::{AccountState, Realm};
use crate::store::AccountRow;
use crate::store::sessions::SessionRecord;

pub use cqrs_edge::request::{UnknownValue, role_from_proto};

pub use cqrs_edge::timestamp;

/// A proto timestamp as a time; `None` if out of range.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

pub fn realm_to_proto(realm: Option<Realm>) -> pb::Realm {
    match realm {
        Some(Realm::National) => pb::Realm::National,
        Some(Realm::Local) => pb::Realm::Local,
        None => pb::Realm::Unspecified,
    }
}

/// `Ok(None)` for UNSPECIFIED, `Err` for a number that is no Realm.
pub fn realm_from_proto(value: i32) -> Result<Option<Realm>, UnknownValue> {
    match pb::Realm::try_from(value).map_err(|_| UnknownValue)? {
        pb::Realm::Unspecified => Ok(None),
        pb::Realm::National => Ok(Some(Realm::National)),
        pb::Realm::Local => Ok(Some(Realm::Local)),
    }
}

pub fn state_to_proto(state: Option<AccountState>) -> pb::AccountState {
    match state {
        Some(AccountState::PendingRegistration) => pb::AccountState::PendingRegistration,
        Some(AccountState::Active) => pb::AccountState::Active,
        Some(AccountState::Disabled) => pb::AccountState::Disabled,
        None => pb::AccountState::Unspecified,
    }
}

pub fn state_from_proto(value: i32) -> Result<Option<AccountState>, UnknownValue> {
    match pb::AccountState::try_from(value).map_err(|_| UnknownValue)? {
        pb::AccountState::Unspecified => Ok(None),
        pb::AccountState::PendingRegistration => Ok(Some(AccountState::PendingRegistration)),
        pb::AccountState::Active => Ok(Some(AccountState::Active)),
        pb::AccountState::Disabled => Ok(Some(AccountState::Disabled)),
    }
}

pub fn role_to_proto(role: Option<Role>) -> common::Role {
    role.map_or(common::Role::Unspecified, Role::to_proto)
}

/// An account as its callers see it when it has no temporary lock: just created, signed in,
/// just unlocked. See [`account_with_lock`].
pub fn account(row: &AccountRow) -> pb::Account {
    account_with_lock(row, None)
}

/// An account as its callers see it: the durable (permanent) lock comes from the row, a
/// temporary lock (which lives only in Redis) from `locked_until`, the end read from the
/// lock-out store.
pub fn account_with_lock(row: &AccountRow, locked_until: Option<DateTime<Utc>>) -> pb::Account {
    let (lock_state, lock_expire_time) = match (row.locked_at, locked_until) {
        (Some(_), _) => (pb::LockState::PermanentlyLocked, None),
        (None, Some(until)) => (pb::LockState::TemporarilyLocked, Some(timestamp(until))),
        (None, None) => (pb::LockState::Unlocked, None),
    };
    pb::Account {
        id: row.id.to_string(),
        realm: realm_to_proto(row.realm()) as i32,
        user_id: row.user_id.clone().unwrap_or_default(),
        email: row.email.clone(),
        first_name: row.first_name.clone(),
        last_name: row.last_name.clone(),
        state: state_to_proto(row.state()) as i32,
        lock_state: lock_state as i32,
        lock_expire_time,
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
        password_change_time: row.password_changed_at.map(timestamp),
        second_factor: row.second_factor_at.is_some(),
    }
}

/// A session as its owner sees it; `now` is when it was last used.
pub fn session(record: &SessionRecord, idle_ttl: Duration, now: DateTime<Utc>) -> pb::Session {
    let idle_end = TimeDelta::from_std(idle_ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .map_or(record.absolute_expiry, |t| t.min(record.absolute_expiry));
    pb::Session {
        account_id: record.account_id.to_string(),
        create_time: Some(timestamp(record.created_at)),
        expire_time: Some(timestamp(record.absolute_expiry)),
        idle_expire_time: Some(timestamp(idle_end)),
        active_organisation_id: record
            .active
            .map(|g| g.organisation_id.to_string())
            .unwrap_or_default(),
        active_role: role_to_proto(record.active.map(|g| g.role)) as i32,
    }
}

/// RFC 8037 form of an Ed25519 public key.
pub fn jwk(key: &VerifyingKey) -> pb::JsonWebKey {
    pb::JsonWebKey {
        kid: key.kid.clone(),
        kty: "OKP".to_owned(),
        crv: "Ed25519".to_owned(),
        x: key.public_key_b64url(),
        alg: "EdDSA".to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip() {
        for role in Role::ALL {
            let proto = role_to_proto(Some(role));
            assert_ne!(proto, common::Role::Unspecified);
            assert_eq!(role_from_proto(proto as i32), Ok(Some(role)));
        }
        assert_eq!(role_from_proto(0), Ok(None));
        assert!(role_from_proto(999).is_err());
    }

    #[test]
    fn enums() {
        assert_eq!(realm_from_proto(1), Ok(Some(Realm::National)));
        assert_eq!(realm_from_proto(0), Ok(None));
        assert!(realm_from_proto(7).is_err());
        assert_eq!(state_from_proto(3), Ok(Some(AccountState::Disabled)));
        assert!(state_from_proto(-1).is_err());
    }
}
