//! What every handler reads off a request first: the caller and the ids it names.

use cqrs_auth::Principal;
use cqrs_rules::FieldViolations;
use tonic::Request;
use uuid::Uuid;

use crate::Denial;

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
