//! The access service's one error type, mapped to `tonic::Status` in one place.

use cqrs_runtime::errors::{self, FieldViolations};
use tonic::{Code, Status};

use crate::clients::PeerError;
use crate::store::StoreError;

pub const DOMAIN: &str = "cqrs.access";

/// Reason of every refused link, whatever the cause (unknown, used, expired, cancelled,
/// replaced by a resend): the answers must not tell them apart.
pub const LINK_INVALID: &str = "LINK_INVALID";

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Bad fields; `reason` is the ErrorInfo reason (`INVALID_ARGUMENT`, or a more telling one
    /// such as `GENERIC_EMAIL_NOT_PERMITTED`).
    #[error("invalid request")]
    InvalidArgument {
        reason: &'static str,
        violations: FieldViolations,
    },
    /// No principal where a caller must be signed in (the auth layer normally answers first).
    #[error("missing credentials")]
    Unauthenticated,
    /// Refused for lack of permission; the reason is an UPPER_SNAKE code such as
    /// `NO_GRANT_IN_SCOPE`. Also what an out-of-scope caller gets for a target that does not
    /// exist, so errors cannot be used to probe.
    #[error("permission denied ({0})")]
    PermissionDenied(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// An invitation link that does not work (see [`LINK_INVALID`]).
    #[error("the link is invalid, already used or expired")]
    LinkInvalid,
    /// A rule about existing rows refuses a create (`reason`, human message).
    #[error("{1}")]
    AlreadyExists(&'static str, String),
    #[error("the request id was already used for a different request")]
    RequestIdReused,
    /// The stored state does not allow this (`reason`, human message).
    #[error("{1}")]
    FailedPrecondition(&'static str, String),
    #[error("the database is unavailable")]
    DatabaseUnavailable(#[source] sqlx::Error),
    /// Identity or the directory did not answer in time or could not be reached.
    #[error("{service} is unavailable")]
    PeerUnavailable {
        service: &'static str,
        #[source]
        source: PeerError,
    },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AccessError {
    /// One field violation.
    pub fn invalid_field(field: &str, description: &str) -> Self {
        let mut violations = FieldViolations::new();
        violations.add(field, description);
        AccessError::InvalidArgument {
            reason: "INVALID_ARGUMENT",
            violations,
        }
    }

    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        AccessError::Internal(Box::new(err))
    }

    /// A stored value the service itself wrote that it cannot read back.
    pub fn corrupt(what: &'static str) -> Self {
        AccessError::internal(std::io::Error::other(what))
    }
}

impl From<sqlx::Error> for AccessError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::from(err).into()
    }
}

impl From<StoreError> for AccessError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(e) => AccessError::DatabaseUnavailable(e),
            StoreError::Database(e) => AccessError::internal(e),
            // Callers that expect a conflict map it themselves; any other is a bug.
            e @ StoreError::Conflict(_) => AccessError::internal(e),
        }
    }
}

impl From<PeerError> for AccessError {
    fn from(err: PeerError) -> Self {
        match err {
            PeerError::Unavailable { service, .. } => AccessError::PeerUnavailable {
                service,
                source: err,
            },
            other => AccessError::internal(other),
        }
    }
}

impl From<FieldViolations> for AccessError {
    fn from(violations: FieldViolations) -> Self {
        AccessError::InvalidArgument {
            reason: "INVALID_ARGUMENT",
            violations,
        }
    }
}

impl From<AccessError> for Status {
    fn from(err: AccessError) -> Self {
        match &err {
            AccessError::InvalidArgument { reason, violations } => errors::invalid_argument(
                DOMAIN,
                reason,
                "the request has invalid fields",
                violations,
            ),
            AccessError::Unauthenticated => {
                Status::unauthenticated(cqrs_auth::UNAUTHENTICATED_MESSAGE)
            }
            AccessError::PermissionDenied(reason) => errors::status(
                Code::PermissionDenied,
                DOMAIN,
                reason,
                "the caller may not do this",
            ),
            AccessError::NotFound(what) => errors::status(
                Code::NotFound,
                DOMAIN,
                "NOT_FOUND",
                &format!("{what} not found"),
            ),
            AccessError::LinkInvalid => errors::status(
                Code::FailedPrecondition,
                DOMAIN,
                LINK_INVALID,
                "the link is invalid, already used or expired",
            ),
            AccessError::AlreadyExists(reason, message) => {
                errors::status(Code::AlreadyExists, DOMAIN, reason, message)
            }
            AccessError::RequestIdReused => errors::status(
                Code::AlreadyExists,
                DOMAIN,
                "REQUEST_ID_REUSED",
                "the request id was already used for a different request",
            ),
            AccessError::FailedPrecondition(reason, message) => {
                errors::status(Code::FailedPrecondition, DOMAIN, reason, message)
            }
            AccessError::DatabaseUnavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                errors::unavailable(DOMAIN, "the database")
            }
            AccessError::PeerUnavailable { service, source } => {
                tracing::warn!(error = %source, "peer service unavailable");
                errors::unavailable(DOMAIN, &format!("the {service} service"))
            }
            AccessError::Internal(source) => errors::internal(DOMAIN, source.as_ref()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    #[test]
    fn statuses_carry_reasons() {
        let st = Status::from(AccessError::PermissionDenied("OWN_REQUEST"));
        assert_eq!(st.code(), Code::PermissionDenied);
        let info = st.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, "OWN_REQUEST");
        assert_eq!(info.domain, DOMAIN);
        let st = Status::from(AccessError::LinkInvalid);
        assert_eq!(st.code(), Code::FailedPrecondition);
        assert_eq!(st.get_details_error_info().unwrap().reason, LINK_INVALID);
        let st = Status::from(AccessError::from(PeerError::Unavailable {
            service: "identity",
            message: "connection refused".into(),
        }));
        assert_eq!(st.code(), Code::Unavailable);
        assert!(!st.message().contains("refused"));
    }

    #[test]
    fn internal_errors_hide_their_text() {
        let st = Status::from(AccessError::internal(std::io::Error::other(
            "SELECT * FROM invitations",
        )));
        assert_eq!(st.code(), Code::Internal);
        assert!(!st.message().contains("SELECT"));
    }
}
