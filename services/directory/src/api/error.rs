//! The directory's one error type, mapped to `tonic::Status` in one place.

use cqrs_runtime::errors::{self, FieldViolations};
use tonic::{Code, Status};

use crate::store::StoreError;

pub const DOMAIN: &str = "cqrs.directory";

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("invalid request")]
    InvalidArgument(FieldViolations),
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
    #[error("the ODS code is already taken")]
    OdsCodeTaken,
    #[error("the request id was already used for a different request")]
    RequestIdReused,
    /// The stored state does not allow this (`reason`, human message).
    #[error("{1}")]
    FailedPrecondition(&'static str, String),
    #[error("the database is unavailable")]
    DatabaseUnavailable(#[source] sqlx::Error),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl DirectoryError {
    /// One field violation.
    pub fn invalid_field(field: &str, description: &str) -> Self {
        let mut violations = FieldViolations::new();
        violations.add(field, description);
        DirectoryError::InvalidArgument(violations)
    }

    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        DirectoryError::Internal(Box::new(err))
    }
}

impl From<sqlx::Error> for DirectoryError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::from(err).into()
    }
}

impl From<StoreError> for DirectoryError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::OdsCodeTaken => DirectoryError::OdsCodeTaken,
            StoreError::Unavailable(e) => DirectoryError::DatabaseUnavailable(e),
            StoreError::Database(e) => DirectoryError::internal(e),
        }
    }
}

impl From<FieldViolations> for DirectoryError {
    fn from(violations: FieldViolations) -> Self {
        DirectoryError::InvalidArgument(violations)
    }
}

impl From<DirectoryError> for Status {
    fn from(err: DirectoryError) -> Self {
        match &err {
            DirectoryError::InvalidArgument(violations) => errors::invalid_argument(
                DOMAIN,
                "INVALID_ARGUMENT",
                "the request has invalid fields",
                violations,
            ),
            DirectoryError::Unauthenticated => {
                Status::unauthenticated(cqrs_auth::UNAUTHENTICATED_MESSAGE)
            }
            DirectoryError::PermissionDenied(reason) => errors::status(
                Code::PermissionDenied,
                DOMAIN,
                reason,
                "the caller may not do this",
            ),
            DirectoryError::NotFound(what) => errors::status(
                Code::NotFound,
                DOMAIN,
                "NOT_FOUND",
                &format!("{what} not found"),
            ),
            DirectoryError::OdsCodeTaken => errors::status(
                Code::AlreadyExists,
                DOMAIN,
                "ODS_CODE_TAKEN",
                "an organisation with this ODS code already exists",
            ),
            DirectoryError::RequestIdReused => errors::status(
                Code::AlreadyExists,
                DOMAIN,
                "REQUEST_ID_REUSED",
                "the request id was already used for a different request",
            ),
            DirectoryError::FailedPrecondition(reason, message) => {
                errors::status(Code::FailedPrecondition, DOMAIN, reason, message)
            }
            DirectoryError::DatabaseUnavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                errors::unavailable(DOMAIN, "the database")
            }
            DirectoryError::Internal(source) => errors::internal(DOMAIN, source.as_ref()),
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
        let st = Status::from(DirectoryError::PermissionDenied("NO_GRANT_IN_SCOPE"));
        assert_eq!(st.code(), Code::PermissionDenied);
        let info = st.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, "NO_GRANT_IN_SCOPE");
        assert_eq!(info.domain, DOMAIN);
        let st = Status::from(DirectoryError::OdsCodeTaken);
        assert_eq!(st.code(), Code::AlreadyExists);
    }

    #[test]
    fn internal_errors_hide_their_text() {
        let st = Status::from(DirectoryError::internal(std::io::Error::other(
            "SELECT * FROM grants",
        )));
        assert_eq!(st.code(), Code::Internal);
        assert!(!st.message().contains("SELECT"));
    }
}
