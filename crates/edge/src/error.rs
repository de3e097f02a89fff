//! One error type for every service's handlers, mapped to `Status` once.
//!
//! Every status carries a `google.rpc.ErrorInfo` (UPPER_SNAKE reason, the service's domain),
//! so clients branch on the reason and never on message text; field problems add a
//! `BadRequest`. Dependencies that are down answer `Unavailable` (logged as a warning) and
//! anything unexpected answers `Internal` with a correlation id, its text kept in the log.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use cqrs_rules::FieldViolations;
use cqrs_runtime::errors;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How one of a service's own reasons is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: Code,
    /// The `ErrorInfo.reason`, UPPER_SNAKE.
    pub reason: &'static str,
    /// What the caller reads; never a secret, SQL or a stack.
    pub message: Cow<'static, str>,
    /// Field problems, answered as a `BadRequest` beside the `ErrorInfo`; only refusals made
    /// with [`Refusal::invalid`] (code `InvalidArgument`) carry them.
    violations: Option<FieldViolations>,
}

impl Refusal {
    /// A refusal without field problems.
    pub fn new(code: Code, reason: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Refusal {
            code,
            reason,
            message: message.into(),
            violations: None,
        }
    }

    /// `InvalidArgument` listing every bad field under a reason of the service's own.
    pub fn invalid(
        reason: &'static str,
        message: impl Into<Cow<'static, str>>,
        violations: FieldViolations,
    ) -> Self {
        Refusal {
            violations: Some(violations),
            ..Refusal::new(Code::InvalidArgument, reason, message)
        }
    }
}

/// The reasons only one service has (a wrong password, a taken ODS code, …).
pub trait ServiceReason: fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// `ErrorInfo.domain` of every status the service answers, e.g. `cqrs.identity`.
    const DOMAIN: &'static str;

    /// How this reason is answered.
    fn refusal(&self) -> Refusal;
}

/// An RPC's failure. `R` holds the service's own reasons.
#[derive(Debug, thiserror::Error)]
pub enum ApiError<R: ServiceReason> {
    /// Bad fields. `reason` is `INVALID_ARGUMENT` unless a more telling one applies (e.g.
    /// `GENERIC_EMAIL_NOT_PERMITTED`).
    #[error("invalid request: {violations}")]
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
    /// A rule about existing records refuses a create (`reason`, message).
    #[error("{1}")]
    AlreadyExists(&'static str, String),
    /// A keyed create's request id came back with a different request.
    #[error("the request id was already used for a different request")]
    RequestIdReused,
    /// The stored state does not allow this (`reason`, message).
    #[error("{1}")]
    FailedPrecondition(&'static str, String),
    /// A store or another service could not be reached; `what` names it to the caller
    /// ("the database", "the directory service").
    #[error("{what} is unavailable")]
    Unavailable {
        what: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("internal error")]
    Internal(#[source] BoxError),
    /// A rate limit's budget is spent ([`crate::rate_limit`]).
    #[error(transparent)]
    RateLimited(#[from] crate::rate_limit::RateLimited),
    /// One of the service's own reasons.
    #[error("{0}")]
    Service(R),
}

impl<R: ServiceReason> ApiError<R> {
    /// Plain field violations (`INVALID_ARGUMENT`).
    pub fn invalid(violations: FieldViolations) -> Self {
        ApiError::InvalidArgument {
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
        ApiError::Internal(Box::new(err))
    }

    /// A stored value the service itself wrote that it cannot read back.
    pub fn corrupt(what: &'static str) -> Self {
        Self::internal(std::io::Error::other(what))
    }

    /// The service's database could not be reached.
    pub fn database_unavailable(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Unavailable {
            what: "the database",
            source: Box::new(err),
        }
    }

    /// Another service (or a store other than the database) could not be reached.
    pub fn unavailable(
        what: &'static str,
        err: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ApiError::Unavailable {
            what,
            source: Box::new(err),
        }
    }
}

impl<R: ServiceReason> From<R> for ApiError<R> {
    fn from(reason: R) -> Self {
        ApiError::Service(reason)
    }
}

/// A refusal decided at the edge before any rule of the service: nobody signed in, not
/// allowed, or — only to callers who may see everything — not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("missing credentials")]
    Unauthenticated,
    #[error("permission denied ({0})")]
    PermissionDenied(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
}

impl<R: ServiceReason> From<Denial> for ApiError<R> {
    fn from(denial: Denial) -> Self {
        match denial {
            Denial::Unauthenticated => ApiError::Unauthenticated,
            Denial::PermissionDenied(reason) => ApiError::PermissionDenied(reason),
            Denial::NotFound(what) => ApiError::NotFound(what),
        }
    }
}

/// A query's failure: `Unavailable` when the database could not be reached, else a bug.
impl<R: ServiceReason> From<sqlx::Error> for ApiError<R> {
    fn from(err: sqlx::Error) -> Self {
        if errors::is_unavailable(&err) {
            ApiError::database_unavailable(err)
        } else {
            ApiError::internal(err)
        }
    }
}

/// Another service's failure: `Unavailable` (naming the service) when it could not be reached
/// or did not answer in time, else a bug or a deployment fault, answered `Internal`.
impl<R: ServiceReason> From<cqrs_peers::PeerError> for ApiError<R> {
    fn from(err: cqrs_peers::PeerError) -> Self {
        if !err.is_unavailable() {
            return ApiError::internal(err);
        }
        let what = match err.service() {
            Some("identity") => "the identity service",
            Some("directory") => "the directory service",
            Some("notifications") => "the notification service",
            _ => "a service it depends on",
        };
        ApiError::unavailable(what, err)
    }
}

/// The session and lock-out store could not be reached.
impl<R: ServiceReason> From<redis::RedisError> for ApiError<R> {
    fn from(err: redis::RedisError) -> Self {
        ApiError::unavailable("the session store", err)
    }
}

/// Issuing or reading a token failed for want of a key: a deployment fault.
impl<R: ServiceReason> From<cqrs_auth::AuthError> for ApiError<R> {
    fn from(err: cqrs_auth::AuthError) -> Self {
        ApiError::internal(err)
    }
}

impl<R: ServiceReason> From<FieldViolations> for ApiError<R> {
    fn from(violations: FieldViolations) -> Self {
        ApiError::invalid(violations)
    }
}

impl<R: ServiceReason> From<ApiError<R>> for Status {
    fn from(err: ApiError<R>) -> Self {
        let domain = R::DOMAIN;
        match &err {
            ApiError::InvalidArgument { reason, violations } => errors::invalid_argument(
                domain,
                reason,
                "the request has invalid fields",
                violations,
            ),
            ApiError::Unauthenticated => cqrs_auth::unauthenticated(),
            ApiError::PermissionDenied(reason) => errors::status(
                Code::PermissionDenied,
                domain,
                reason,
                "the caller may not do this",
            ),
            ApiError::NotFound(what) => errors::status(
                Code::NotFound,
                domain,
                "NOT_FOUND",
                &format!("{what} not found"),
            ),
            ApiError::AlreadyExists(reason, message) => {
                errors::status(Code::AlreadyExists, domain, reason, message)
            }
            ApiError::RequestIdReused => errors::status(
                Code::AlreadyExists,
                domain,
                "REQUEST_ID_REUSED",
                "the request id was already used for a different request",
            ),
            ApiError::FailedPrecondition(reason, message) => {
                errors::status(Code::FailedPrecondition, domain, reason, message)
            }
            ApiError::Unavailable { what, source } => {
                tracing::warn!(error = %source, "{what} is unavailable");
                errors::unavailable(domain, what)
            }
            ApiError::Internal(source) => errors::internal(domain, source.as_ref()),
            ApiError::RateLimited(limited) => {
                let mut details = ErrorDetails::with_error_info(
                    "RATE_LIMITED",
                    domain,
                    HashMap::from([(
                        "retry_after_secs".to_owned(),
                        limited.retry_after.as_secs().max(1).to_string(),
                    )]),
                );
                details.set_retry_info(Some(limited.retry_after));
                Status::with_error_details(Code::ResourceExhausted, limited.to_string(), details)
            }
            ApiError::Service(reason) => {
                let refusal = reason.refusal();
                match &refusal.violations {
                    Some(violations) => errors::invalid_argument(
                        domain,
                        refusal.reason,
                        &refusal.message,
                        violations,
                    ),
                    None => errors::status(refusal.code, domain, refusal.reason, &refusal.message),
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    #[derive(Debug, thiserror::Error)]
    enum TestReason {
        #[error("taken")]
        Taken,
        #[error("policy")]
        Policy,
    }

    impl ServiceReason for TestReason {
        const DOMAIN: &'static str = "cqrs.test";
        fn refusal(&self) -> Refusal {
            match self {
                TestReason::Taken => Refusal::new(Code::AlreadyExists, "TAKEN", "it is taken"),
                TestReason::Policy => {
                    let mut violations = FieldViolations::new();
                    violations.add("password", "TOO_SHORT");
                    Refusal::invalid("POLICY", "the policy", violations)
                }
            }
        }
    }

    type TestError = ApiError<TestReason>;

    fn info(status: &Status) -> (String, String) {
        let info = status.get_error_details().error_info().cloned().unwrap();
        (info.reason, info.domain)
    }

    #[test]
    fn common_errors_carry_reason_and_domain() {
        let st = Status::from(TestError::PermissionDenied("NO_GRANT_IN_SCOPE"));
        assert_eq!(st.code(), Code::PermissionDenied);
        assert_eq!(info(&st), ("NO_GRANT_IN_SCOPE".into(), "cqrs.test".into()));
        let st = Status::from(TestError::NotFound("organisation"));
        assert_eq!(st.code(), Code::NotFound);
        assert_eq!(st.message(), "organisation not found");
        let st = Status::from(TestError::RequestIdReused);
        assert_eq!(info(&st).0, "REQUEST_ID_REUSED");
        let st = Status::from(TestError::invalid_field("email", "is required"));
        assert_eq!(st.code(), Code::InvalidArgument);
        let violations = st.get_error_details().bad_request().cloned().unwrap();
        assert_eq!(violations.field_violations[0].field, "email");
    }

    #[test]
    fn service_reasons_are_answered_as_they_say() {
        let st = Status::from(TestError::from(TestReason::Taken));
        assert_eq!(st.code(), Code::AlreadyExists);
        assert_eq!(info(&st), ("TAKEN".into(), "cqrs.test".into()));
        let st = Status::from(TestError::from(TestReason::Policy));
        assert_eq!(st.code(), Code::InvalidArgument);
        assert_eq!(info(&st).0, "POLICY");
        let bad = st.get_error_details().bad_request().cloned().unwrap();
        assert_eq!(bad.field_violations[0].description, "TOO_SHORT");
    }

    #[test]
    fn failures_hide_their_text() {
        let st = Status::from(TestError::internal(std::io::Error::other(
            "SELECT * FROM accounts",
        )));
        assert_eq!(st.code(), Code::Internal);
        assert!(!st.message().contains("SELECT"));
        let st = Status::from(TestError::unavailable(
            "the directory service",
            std::io::Error::other("connection refused"),
        ));
        assert_eq!(st.code(), Code::Unavailable);
        assert!(
            st.message()
                .starts_with("the directory service is unavailable")
        );
        assert!(!st.message().contains("refused"));
    }
}
