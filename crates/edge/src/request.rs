//! What every handler reads off a request first: the caller, the ids and roles it names, and
//! for a keyed create the answer an earlier try of it already got.

use cqrs_auth::{Principal, Role, RoleProto};
use cqrs_rules::FieldViolations;
use cqrs_runtime::idempotency::{self, Earlier};
use prost::Message;
use sqlx::PgPool;
use tonic::Request;
use uuid::Uuid;

use crate::{ApiError, Denial, ServiceReason};

/// The caller the auth layer attached; `Unauthenticated` when there is none (only public
/// RPCs get this far without one).
pub fn principal<T>(request: &Request<T>) -> Result<Principal, Denial> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or(Denial::Unauthenticated)
}

/// A required UUID field on its own (`field` names it in the violation).
pub fn id_field(field: &str, raw: &str) -> Result<Uuid, FieldViolations> {
    let mut violations = FieldViolations::new();
    let id = violations.uuid(field, raw);
    id.ok_or(violations)
}

/// A keyed create's `request_id`, collected with the request's other fields.
pub fn request_id_field(violations: &mut FieldViolations, raw: &str) -> Option<Uuid> {
    violations.uuid("request_id", raw)
}

/// A proto enum number that names no value of the enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownValue;

/// `Ok(None)` for ROLE_UNSPECIFIED, `Err` for a number that is no role.
pub fn role_from_proto(value: i32) -> Result<Option<Role>, UnknownValue> {
    Role::from_proto(value).map_err(|_| UnknownValue)
}

/// A Role field, collected with the request's other fields; unset is a violation when
/// `required`.
pub fn role_field(
    violations: &mut FieldViolations,
    field: &str,
    value: i32,
    required: bool,
) -> Option<Role> {
    match role_from_proto(value) {
        Ok(Some(role)) => Some(role),
        Ok(None) => {
            if required {
                violations.add(field, "is required");
            }
            None
        }
        Err(UnknownValue) => {
            violations.add(field, "must be a known Role");
            None
        }
    }
}

/// The answer a keyed create gave first (see [`cqrs_runtime::idempotency`]): `Ok(None)` if
/// the id is unused, `REQUEST_ID_REUSED` if it was used for another request.
pub async fn earlier_answer<M: Message + Default, R: ServiceReason>(
    pool: &PgPool,
    request_id: Uuid,
    hash: &[u8; 32],
) -> Result<Option<M>, ApiError<R>> {
    let stored = idempotency::earlier(pool, request_id).await?;
    match Earlier::check(stored, hash) {
        Err(_) => Err(ApiError::RequestIdReused),
        Ok(None) => Ok(None),
        Ok(Some(Some(bytes))) => M::decode(bytes.as_slice())
            .map(Some)
            .map_err(ApiError::internal),
        // The answer is written in the transaction that claims the id, so a committed claim
        // always has one.
        Ok(Some(None)) => Err(ApiError::corrupt("keyed request without an answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_fields_name_what_is_wrong() {
        let mut violations = FieldViolations::new();
        assert_eq!(
            role_field(&mut violations, "role", 1, true),
            Some(Role::ServiceDesk)
        );
        assert_eq!(role_field(&mut violations, "role", 0, false), None);
        assert!(violations.is_empty());
        assert_eq!(role_field(&mut violations, "role", 0, true), None);
        assert_eq!(role_field(&mut violations, "active_role", 99, false), None);
        let found: Vec<(&str, &str)> = violations.iter().collect();
        assert_eq!(
            found,
            [
                ("role", "is required"),
                ("active_role", "must be a known Role")
            ]
        );
    }
}
