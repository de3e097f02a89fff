//! The identity service's one error type, mapped to `tonic::Status` in one place.

use cqrs_runtime::errors::{self, FieldViolations};
use tonic::{Code, Status};

use crate::directory::DirectoryError;
use crate::domain::password::PolicyRule;
use crate::hashing::HashError;
use crate::store::StoreError;

pub const DOMAIN: &str = "cqrs.identity";

/// What every refused sign-in says, whatever the cause (unknown login, wrong or empty
/// password, lock, disabled or pending account): SECURITY 4 and 9.
pub const BAD_CREDENTIALS_MESSAGE: &str = "the login or password is incorrect";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Malformed fields. `reason` is `INVALID_ARGUMENT` unless a more specific one applies
    /// (e.g. `GENERIC_EMAIL_NOT_PERMITTED`).
    #[error("invalid request")]
    InvalidArgument {
        reason: &'static str,
        violations: FieldViolations,
    },
    /// A new password broke the policy; every failed rule is listed against `field`.
    #[error("the password does not meet the policy")]
    PasswordPolicy {
        field: &'static str,
        rules: Vec<PolicyRule>,
    },
    /// Sign-in refused; see [`BAD_CREDENTIALS_MESSAGE`].
    #[error("bad credentials")]
    BadCredentials,
    /// ChangePassword: the current password was wrong, or the account is locked.
    #[error("the current password is incorrect")]
    WrongCurrentPassword,
    /// No principal where a caller must be signed in (the auth layer normally answers first).
    #[error("missing credentials")]
    Unauthenticated,
    /// IssueServiceToken: unknown client or wrong secret.
    #[error("bad client credentials")]
    BadClientCredentials,
    /// RefreshAccessToken: the session token is unknown or its session has ended.
    #[error("session ended")]
    SessionEnded,
    /// A registration or reset link that is unknown, used, revoked or expired (one answer
    /// for all of them).
    #[error("the link is invalid or has expired")]
    InvalidLink,
    #[error("permission denied ({0})")]
    PermissionDenied(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the e-mail address already has an account in this realm")]
    EmailTaken,
    #[error("the request id was already used for a different request")]
    RequestIdReused,
    /// The account is not in a state that allows this (`reason`, human message).
    #[error("{1}")]
    FailedPrecondition(&'static str, &'static str),
    /// SelectRole: the caller holds no such grant.
    #[error("no such grant")]
    NoGrant,
    /// The password hashing pool is saturated.
    #[error("too many password checks in progress")]
    Busy,
    #[error("the database is unavailable")]
    DatabaseUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the session and lock-out store is unavailable")]
    RedisUnavailable(#[source] redis::RedisError),
    /// The directory (grants) did not answer usefully: down, slow, or refusing identity's
    /// service token (a deployment fault, but to the caller equally a missing dependency).
    #[error("the directory is unavailable")]
    DirectoryUnavailable(#[source] DirectoryError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl IdentityError {
    /// Plain field violations.
    pub fn invalid(violations: FieldViolations) -> Self {
        IdentityError::InvalidArgument {
            reason: "INVALID_ARGUMENT",
            violations,
        }
    }

    /// One field violation.
    pub fn invalid_field(field: &str, description: &str) -> Self {
        let mut violations = FieldViolations::new();
        violations.add(field, description);
        Self::invalid(violations)
    }

    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        IdentityError::Internal(Box::new(err))
    }
}

impl From<StoreError> for IdentityError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => IdentityError::NotFound("account"),
            StoreError::EmailTaken => IdentityError::EmailTaken,
            StoreError::RequestIdReused => IdentityError::RequestIdReused,
            StoreError::Unavailable(e) => IdentityError::DatabaseUnavailable(Box::new(e)),
            StoreError::SharedUnavailable(e) => IdentityError::DatabaseUnavailable(Box::new(e)),
            e @ (StoreError::UserIdsExhausted | StoreError::AuditWriterStopped) => {
                IdentityError::internal(e)
            }
            StoreError::Database(e) => IdentityError::internal(e),
            StoreError::SharedDatabase(e) => IdentityError::internal(e),
        }
    }
}

impl From<DirectoryError> for IdentityError {
    fn from(err: DirectoryError) -> Self {
        IdentityError::DirectoryUnavailable(err)
    }
}

impl From<redis::RedisError> for IdentityError {
    fn from(err: redis::RedisError) -> Self {
        IdentityError::RedisUnavailable(err)
    }
}

impl From<HashError> for IdentityError {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Busy => IdentityError::Busy,
            other => IdentityError::internal(other),
        }
    }
}

impl From<cqrs_auth::AuthError> for IdentityError {
    fn from(err: cqrs_auth::AuthError) -> Self {
        IdentityError::internal(err)
    }
}

impl From<IdentityError> for Status {
    fn from(err: IdentityError) -> Self {
        match &err {
            IdentityError::InvalidArgument { reason, violations } => errors::invalid_argument(
                DOMAIN,
                reason,
                "the request has invalid fields",
                violations,
            ),
            IdentityError::PasswordPolicy { field, rules } => {
                let mut violations = FieldViolations::new();
                for rule in rules {
                    violations.add(*field, format!("{}: {}", rule.code(), rule.describe()));
                }
                errors::invalid_argument(
                    DOMAIN,
                    "PASSWORD_POLICY_VIOLATION",
                    "the password does not meet the password policy",
                    &violations,
                )
            }
            IdentityError::BadCredentials => errors::status(
                Code::Unauthenticated,
                DOMAIN,
                "INVALID_CREDENTIALS",
                BAD_CREDENTIALS_MESSAGE,
            ),
            IdentityError::WrongCurrentPassword => errors::status(
                Code::Unauthenticated,
                DOMAIN,
                "INVALID_CREDENTIALS",
                "the current password is incorrect",
            ),
            IdentityError::Unauthenticated => {
                Status::unauthenticated(cqrs_auth::UNAUTHENTICATED_MESSAGE)
            }
            IdentityError::BadClientCredentials => errors::status(
                Code::Unauthenticated,
                DOMAIN,
                "INVALID_CLIENT_CREDENTIALS",
                "the client id or secret is incorrect",
            ),
            IdentityError::SessionEnded => errors::status(
                Code::Unauthenticated,
                DOMAIN,
                "SESSION_ENDED",
                "the session has ended; sign in again",
            ),
            IdentityError::InvalidLink => errors::status(
                Code::FailedPrecondition,
                DOMAIN,
                "LINK_INVALID",
                "the link is invalid, already used or expired",
            ),
            IdentityError::PermissionDenied(reason) => errors::status(
                Code::PermissionDenied,
                DOMAIN,
                reason,
                "the caller may not do this",
            ),
            IdentityError::NotFound(what) => errors::status(
                Code::NotFound,
                DOMAIN,
                "NOT_FOUND",
                &format!("{what} not found"),
            ),
            IdentityError::EmailTaken => errors::status(
                Code::AlreadyExists,
                DOMAIN,
                "EMAIL_ALREADY_REGISTERED",
                "the e-mail address already has an account in this realm",
            ),
            IdentityError::RequestIdReused => errors::status(
                Code::AlreadyExists,
                DOMAIN,
                "REQUEST_ID_REUSED",
                "the request id was already used for a different request",
            ),
            IdentityError::FailedPrecondition(reason, message) => {
                errors::status(Code::FailedPrecondition, DOMAIN, reason, message)
            }
            IdentityError::NoGrant => errors::status(
                Code::PermissionDenied,
                DOMAIN,
                "NO_GRANT",
                "the caller holds no such grant",
            ),
            IdentityError::Busy => errors::status(
                Code::ResourceExhausted,
                DOMAIN,
                "PASSWORD_CHECKS_BUSY",
                "too many password checks in progress; retry later",
            ),
            IdentityError::DatabaseUnavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                errors::unavailable(DOMAIN, "the database")
            }
            IdentityError::RedisUnavailable(source) => {
                tracing::warn!(error = %source, "redis unavailable");
                errors::unavailable(DOMAIN, "the session store")
            }
            IdentityError::DirectoryUnavailable(source) => {
                tracing::warn!(error = %source, "directory unavailable");
                errors::unavailable(DOMAIN, "the directory")
            }
            IdentityError::Internal(source) => errors::internal(DOMAIN, source.as_ref()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    #[test]
    fn policy_violations_list_every_rule() {
        let status = Status::from(IdentityError::PasswordPolicy {
            field: "new_password",
            rules: vec![PolicyRule::TooShort { min: 8 }, PolicyRule::CommonPassword],
        });
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().unwrap().reason,
            "PASSWORD_POLICY_VIOLATION"
        );
        let fields: Vec<(String, String)> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|v| (v.field.clone(), v.description.clone()))
            .collect();
        assert_eq!(fields.len(), 2);
        assert!(fields.iter().all(|(f, _)| f == "new_password"));
        assert!(fields[0].1.starts_with("TOO_SHORT: "));
        assert!(fields[1].1.starts_with("COMMON_PASSWORD: "));
    }

    #[test]
    fn internal_errors_hide_their_text() {
        let status = Status::from(IdentityError::internal(std::io::Error::other(
            "SELECT password_hash FROM accounts",
        )));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
    }
}
