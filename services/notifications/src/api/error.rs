//! The notification service's one error type, mapped to `tonic::Status` in one place.

use cqrs_runtime::errors::{self, FieldViolations};
use tonic::{Code, Status};

use crate::store::StoreError;

pub const DOMAIN: &str = "cqrs.notifications";

#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error("invalid request")]
    InvalidArgument(FieldViolations),
    #[error("the idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("permission denied ({0})")]
    PermissionDenied(&'static str),
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("internal error")]
    Internal(#[source] sqlx::Error),
}

impl NotificationError {
    /// Names what was not found, for a store error that says only "not found".
    pub fn not_found_as(self, what: &'static str) -> Self {
        match self {
            NotificationError::NotFound(_) => NotificationError::NotFound(what),
            other => other,
        }
    }
}

impl From<StoreError> for NotificationError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::IdempotencyConflict => NotificationError::IdempotencyKeyReused,
            StoreError::NotFound => NotificationError::NotFound("resource"),
            StoreError::Unavailable(e) => NotificationError::Unavailable(e),
            StoreError::Database(e) => NotificationError::Internal(e),
        }
    }
}

impl From<NotificationError> for Status {
    fn from(err: NotificationError) -> Self {
        match &err {
            NotificationError::InvalidArgument(violations) => errors::invalid_argument(
                DOMAIN,
                "INVALID_ARGUMENT",
                "the request has invalid fields",
                violations,
            ),
            NotificationError::IdempotencyKeyReused => errors::status(
                Code::AlreadyExists,
                DOMAIN,
                "IDEMPOTENCY_KEY_REUSED",
                "the idempotency key was already used for a different request",
            ),
            NotificationError::NotFound(what) => errors::status(
                Code::NotFound,
                DOMAIN,
                "NOT_FOUND",
                &format!("{what} not found"),
            ),
            NotificationError::PermissionDenied(reason) => errors::status(
                Code::PermissionDenied,
                DOMAIN,
                reason,
                "the caller may not do this",
            ),
            NotificationError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                errors::unavailable(DOMAIN, "the database")
            }
            NotificationError::Internal(source) => errors::internal(DOMAIN, source),
        }
    }
}
