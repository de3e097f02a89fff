//! Building blocks of `Status` answers, used by the one mapping in `cqrs_edge` (every
//! service's errors) and by the auth layer.
//!
//! Every status carries a `google.rpc.ErrorInfo` (UPPER_SNAKE reason, domain `cqrs.<service>`)
//! so callers branch on the reason, never on message text. Internal failures are reduced to a
//! correlation id: the error itself goes to the log, not to the caller.

use std::collections::HashMap;
use std::fmt;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// `ErrorInfo.reason` of every [`internal`] status.
pub const REASON_INTERNAL: &str = "INTERNAL";
/// `ErrorInfo.reason` of every [`unavailable`] status.
pub const REASON_UNAVAILABLE: &str = "UNAVAILABLE";
/// `ErrorInfo.metadata` key holding the id under which an internal error was logged.
pub const CORRELATION_ID: &str = "correlation_id";

pub use cqrs_rules::FieldViolations;

/// `InvalidArgument` with `ErrorInfo` and a `BadRequest` listing every violation, each with a
/// machine-readable `reason` ([`violation_reason`]) so that clients key their messages on it
/// rather than parse the description.
pub fn invalid_argument(
    domain: &str,
    reason: &str,
    message: &str,
    violations: &FieldViolations,
) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, domain, HashMap::new());
    let violations: Vec<FieldViolation> = violations
        .iter()
        .map(|(field, description)| FieldViolation {
            reason: violation_reason(description).to_owned(),
            ..FieldViolation::new(field, description)
        })
        .collect();
    details.set_bad_request(violations);
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// The rule a violation's description names: a leading `RULE_CODE: ` (the password policy's
/// rules, e.g. `TOO_SHORT: must be at least 8 characters`) is the reason; `is required` is
/// `REQUIRED`; anything else is `INVALID_VALUE`.
pub fn violation_reason(description: &str) -> &str {
    match description.split_once(": ") {
        Some((code, _))
            if !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') =>
        {
            code
        }
        _ if description == "is required" => "REQUIRED",
        _ => "INVALID_VALUE",
    }
}

/// Any code with an `ErrorInfo` only.
pub fn status(code: Code, domain: &str, reason: &str, message: &str) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, domain, HashMap::new()),
    )
}

/// `Internal` for an unexpected failure. The error (with its source chain) is logged at error
/// level under a fresh correlation id; the caller only gets that id, never the error text
/// (which may hold SQL, paths or data).
pub fn internal(domain: &str, err: &dyn std::error::Error) -> Status {
    let correlation_id = uuid::Uuid::new_v4().to_string();
    tracing::error!(
        correlation_id = %correlation_id,
        domain,
        error = %ErrorChain(err),
        "internal error"
    );
    Status::with_error_details(
        Code::Internal,
        format!("internal error; correlation id {correlation_id}"),
        ErrorDetails::with_error_info(
            REASON_INTERNAL,
            domain,
            HashMap::from([(CORRELATION_ID.to_owned(), correlation_id)]),
        ),
    )
}

/// `Unavailable` because a dependency (`what`, e.g. "database") cannot be reached; callers may
/// retry idempotent calls with backoff.
pub fn unavailable(domain: &str, what: &str) -> Status {
    status(
        Code::Unavailable,
        domain,
        REASON_UNAVAILABLE,
        &format!("{what} is unavailable; retry later"),
    )
}

/// Whether a sqlx error means the database could not be reached (connection refused or lost,
/// pool exhausted or closed, TLS failure, server shutting down) rather than a bad query, so a
/// store maps it to `Unavailable` instead of `Internal`.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-03: admin/crash shutdown, cannot connect now;
            // 53300: too many connections.
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// Displays an error and its sources as `outer: inner: root`.
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct SqlLeak;
    impl fmt::Display for SqlLeak {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("relation \"accounts\" does not exist: SELECT * FROM accounts")
        }
    }
    impl std::error::Error for SqlLeak {}

    #[test]
    fn field_violations_collect() {
        let mut v = FieldViolations::new();
        assert!(v.is_empty());
        v.check(true, "a", "never");
        v.check(false, "email", "must be an e-mail address");
        v.add("name", "is required");
        assert_eq!(v.len(), 2);
        assert_eq!(
            v.to_string(),
            "email: must be an e-mail address; name: is required"
        );
        let err = v.clone().into_result().unwrap_err();
        assert_eq!(err, v);
        assert!(FieldViolations::new().into_result().is_ok());
    }

    #[test]
    fn invalid_argument_carries_error_info_and_bad_request() {
        let mut v = FieldViolations::new();
        v.add("email", "must be an e-mail address");
        v.add("name", "is required");
        let st = invalid_argument("cqrs.identity", "VALIDATION_FAILED", "invalid request", &v);
        assert_eq!(st.code(), Code::InvalidArgument);
        assert_eq!(st.message(), "invalid request");
        let details = st.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "VALIDATION_FAILED");
        assert_eq!(info.domain, "cqrs.identity");
        let fields: Vec<(String, String, String)> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|f| (f.field.clone(), f.description.clone(), f.reason.clone()))
            .collect();
        assert_eq!(
            fields,
            vec![
                (
                    "email".into(),
                    "must be an e-mail address".into(),
                    "INVALID_VALUE".into()
                ),
                ("name".into(), "is required".into(), "REQUIRED".into())
            ]
        );
    }

    #[test]
    fn violations_name_their_rule() {
        assert_eq!(
            violation_reason("TOO_SHORT: must be at least 8 characters"),
            "TOO_SHORT"
        );
        assert_eq!(
            violation_reason("MISSING_DIGIT: must contain a digit"),
            "MISSING_DIGIT"
        );
        assert_eq!(violation_reason("is required"), "REQUIRED");
        assert_eq!(violation_reason("must be a UUID"), "INVALID_VALUE");
        assert_eq!(violation_reason("Note: lower case"), "INVALID_VALUE");
        assert_eq!(violation_reason(": x"), "INVALID_VALUE");
    }

    #[test]
    fn status_has_error_info_only() {
        let st = status(
            Code::NotFound,
            "cqrs.directory",
            "ORGANISATION_NOT_FOUND",
            "organisation not found",
        );
        assert_eq!(st.code(), Code::NotFound);
        assert_eq!(st.message(), "organisation not found");
        let details = st.get_error_details();
        assert_eq!(
            details.error_info().unwrap().reason,
            "ORGANISATION_NOT_FOUND"
        );
        assert_eq!(details.error_info().unwrap().domain, "cqrs.directory");
        assert!(details.bad_request().is_none());
    }

    #[test]
    fn internal_hides_error_and_gives_correlation_id() {
        let st = internal("cqrs.identity", &SqlLeak);
        assert_eq!(st.code(), Code::Internal);
        assert!(!st.message().contains("SELECT"));
        assert!(!st.message().contains("accounts"));
        let details = st.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, REASON_INTERNAL);
        assert_eq!(info.domain, "cqrs.identity");
        let id = info.metadata.get(CORRELATION_ID).unwrap();
        uuid::Uuid::parse_str(id).unwrap();
        assert_eq!(st.message(), format!("internal error; correlation id {id}"));
        // The encoded details must not smuggle the text either.
        let raw = String::from_utf8_lossy(st.details()).into_owned();
        assert!(!raw.contains("SELECT"));
        // Each call gets its own id.
        let other = internal("cqrs.identity", &SqlLeak).get_error_details();
        assert_ne!(
            other.error_info().unwrap().metadata.get(CORRELATION_ID),
            Some(id)
        );
    }

    #[test]
    fn unavailable_status() {
        let st = unavailable("cqrs.identity", "session store");
        assert_eq!(st.code(), Code::Unavailable);
        assert_eq!(st.message(), "session store is unavailable; retry later");
        assert_eq!(
            st.get_error_details().error_info().unwrap().reason,
            REASON_UNAVAILABLE
        );
    }

    #[test]
    fn sqlx_classification() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_unavailable(&io));
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::PoolClosed));
        assert!(is_unavailable(&sqlx::Error::Protocol(
            "connection reset".into()
        )));
        assert!(is_unavailable(&sqlx::Error::Tls("handshake".into())));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!is_unavailable(&sqlx::Error::ColumnNotFound("x".into())));
    }

    #[test]
    fn error_chain_display() {
        #[derive(Debug)]
        struct Outer(SqlLeak);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("store failed")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let text = ErrorChain(&Outer(SqlLeak)).to_string();
        assert!(text.starts_with("store failed: relation"));
    }
}
