//! Every failure the tool can report, how it is printed and which exit code it leads to. This is
//! the only place that maps gRPC status codes to exit codes.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::output::{Format, sanitize};

/// Exit codes scripts can rely on (also in `--help` and the README).
pub mod exit {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// Anything not listed below (internal server errors, local I/O, ...).
    pub const OTHER: u8 = 1;
    /// Bad command line (unknown option, missing argument, ambiguous choice).
    pub const USAGE: u8 = 2;
    /// Not signed in, the session ended, or the credentials were refused.
    pub const UNAUTHENTICATED: u8 = 3;
    /// Signed in, but the active role may not do this.
    pub const PERMISSION_DENIED: u8 = 4;
    /// What was named does not exist.
    pub const NOT_FOUND: u8 = 5;
    /// Invalid argument, failed precondition or out of range: fix the input or the state.
    pub const INVALID: u8 = 6;
    /// Already exists or aborted (a conflict): re-read and decide.
    pub const CONFLICT: u8 = 7;
    /// Unavailable, deadline exceeded or resource exhausted: retry later.
    pub const UNAVAILABLE: u8 = 8;
    /// `audit verify` found an audit trail changed after it was written.
    pub const TAMPERED: u8 = 9;
}

/// The exit-code table shown at the end of `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  ok
  1  other error (e.g. INTERNAL, local I/O)
  2  usage error (bad arguments, ambiguous choice)
  3  not signed in / UNAUTHENTICATED (run `cqrsctl login`)
  4  PERMISSION_DENIED
  5  NOT_FOUND
  6  INVALID_ARGUMENT / FAILED_PRECONDITION / OUT_OF_RANGE
  7  ALREADY_EXISTS / ABORTED
  8  UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED (retry later)
  9  `audit verify`: an audit trail was changed after it was written
Errors go to stderr as one line; with --output json a JSON object {\"error\": {...}} follows.";

/// The exit code for a gRPC status code.
pub fn exit_code_for(code: Code) -> u8 {
    match code {
        Code::Ok => exit::OK,
        Code::Unauthenticated => exit::UNAUTHENTICATED,
        Code::PermissionDenied => exit::PERMISSION_DENIED,
        Code::NotFound => exit::NOT_FOUND,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => exit::INVALID,
        Code::AlreadyExists | Code::Aborted => exit::CONFLICT,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => exit::UNAVAILABLE,
        Code::Cancelled | Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => {
            exit::OTHER
        }
    }
}

/// The canonical upper-case name of a gRPC code, as in `google.rpc.Code`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A failure of a command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A service answered with an error status.
    #[error("{}", ErrorReport::from_status(.0).one_line())]
    Rpc(Box<Status>),
    /// The command line cannot be acted on.
    #[error("{0}")]
    Usage(String),
    /// No cached session for the profile, or it ended.
    #[error("{0}")]
    NotSignedIn(String),
    /// A name given on the command line resolves to nothing.
    #[error("{0}")]
    NotFound(String),
    /// Local input is invalid; each problem as a field violation (e.g. CSV rows).
    #[error("{message}")]
    Invalid {
        message: String,
        violations: Vec<Violation>,
    },
    /// Anything else (local I/O, a malformed answer).
    #[error("{0}")]
    Other(String),
    /// Some items of a batch failed; the per-item outcome was already printed.
    #[error("{message}")]
    Partial { message: String, exit_code: u8 },
}

impl From<Status> for CliError {
    fn from(status: Status) -> Self {
        CliError::Rpc(Box::new(status))
    }
}

impl CliError {
    pub fn invalid(message: impl Into<String>) -> Self {
        CliError::Invalid {
            message: message.into(),
            violations: Vec::new(),
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.report().exit_code
    }

    /// The structured form printed to stderr.
    pub fn report(&self) -> ErrorReport {
        let local = |code: &str, message: &str, exit_code: u8| ErrorReport {
            code: code.to_owned(),
            reason: None,
            domain: None,
            message: message.to_owned(),
            violations: Vec::new(),
            metadata: BTreeMap::new(),
            exit_code,
        };
        match self {
            CliError::Rpc(status) => ErrorReport::from_status(status),
            CliError::Usage(m) => local("USAGE", m, exit::USAGE),
            CliError::NotSignedIn(m) => local("UNAUTHENTICATED", m, exit::UNAUTHENTICATED),
            CliError::NotFound(m) => local("NOT_FOUND", m, exit::NOT_FOUND),
            CliError::Invalid {
                message,
                violations,
            } => ErrorReport {
                violations: violations.clone(),
                ..local("INVALID_ARGUMENT", message, exit::INVALID)
            },
            CliError::Other(m) => local("ERROR", m, exit::OTHER),
            CliError::Partial { message, exit_code } => {
                local("PARTIAL_FAILURE", message, *exit_code)
            }
        }
    }
}

/// One `google.rpc.BadRequest.FieldViolation` (or a local equivalent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

/// An error as reported to the user: the gRPC code (or a local category), the `ErrorInfo`
/// reason and domain, the message, every field violation and the exit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorReport {
    pub code: String,
    pub reason: Option<String>,
    pub domain: Option<String>,
    pub message: String,
    pub violations: Vec<Violation>,
    /// `ErrorInfo.metadata`, e.g. the `correlation_id` of an internal error.
    pub metadata: BTreeMap<String, String>,
    pub exit_code: u8,
}

impl ErrorReport {
    /// Decodes the `google.rpc` details (`ErrorInfo`, `BadRequest`) of a status.
    pub fn from_status(status: &Status) -> Self {
        let details = status.get_error_details();
        let info = details.error_info();
        let violations = details
            .bad_request()
            .map(|br| {
                br.field_violations
                    .iter()
                    .map(|v| Violation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        ErrorReport {
            code: code_name(status.code()).to_owned(),
            reason: info.map(|i| i.reason.clone()),
            domain: info.map(|i| i.domain.clone()),
            message: status.message().to_owned(),
            violations,
            metadata: info
                .map(|i| i.metadata.clone().into_iter().collect())
                .unwrap_or_default(),
            exit_code: exit_code_for(status.code()),
        }
    }

    /// One line: `error: CODE (reason REASON): message; field: description; ...`.
    pub fn one_line(&self) -> String {
        let mut line = format!("error: {}", self.code);
        if let Some(reason) = self.reason.as_deref().filter(|r| !r.is_empty()) {
            line.push_str(&format!(" (reason {})", sanitize(reason)));
        }
        let message = sanitize(&self.message);
        if !message.is_empty() {
            line.push_str(": ");
            line.push_str(&message);
        }
        for v in &self.violations {
            line.push_str(&format!(
                "; {}: {}",
                sanitize(&v.field),
                sanitize(&v.description)
            ));
        }
        if self.exit_code == exit::UNAUTHENTICATED && !line.contains("cqrsctl login") {
            line.push_str(" (sign in with `cqrsctl login`)");
        }
        line
    }

    /// `{"error": {...}}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "error": self }).to_string()
    }
}

impl fmt::Display for ErrorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

/// Prints an error to stderr: the one-line form, and in json mode the JSON object as well.
pub fn print_error(err: &CliError, format: Format) {
    let report = err.report();
    eprintln!("{}", report.one_line());
    if format == Format::Json {
        eprintln!("{}", report.to_json());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::HashMap;

    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn codes_map_to_documented_exit_codes() {
        let table = [
            (Code::Ok, 0),
            (Code::Unknown, 1),
            (Code::Internal, 1),
            (Code::Cancelled, 1),
            (Code::Unimplemented, 1),
            (Code::DataLoss, 1),
            (Code::Unauthenticated, 3),
            (Code::PermissionDenied, 4),
            (Code::NotFound, 5),
            (Code::InvalidArgument, 6),
            (Code::FailedPrecondition, 6),
            (Code::OutOfRange, 6),
            (Code::AlreadyExists, 7),
            (Code::Aborted, 7),
            (Code::Unavailable, 8),
            (Code::DeadlineExceeded, 8),
            (Code::ResourceExhausted, 8),
        ];
        for (code, want) in table {
            assert_eq!(exit_code_for(code), want, "{code:?}");
        }
    }

    #[test]
    fn local_errors_map_to_exit_codes() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::NotSignedIn("x".into()).exit_code(), 3);
        assert_eq!(CliError::NotFound("x".into()).exit_code(), 5);
        assert_eq!(CliError::invalid("x").exit_code(), 6);
        assert_eq!(CliError::Other("x".into()).exit_code(), 1);
        let partial = CliError::Partial {
            message: "1 of 2 rows failed".into(),
            exit_code: 7,
        };
        assert_eq!(partial.exit_code(), 7);
    }

    #[test]
    fn status_details_are_decoded_into_one_line() {
        let mut details = ErrorDetails::with_error_info(
            "PASSWORD_POLICY_VIOLATION",
            "cqrs.identity",
            HashMap::new(),
        );
        details.add_bad_request_violation("new_password", "must be at least 8 characters");
        details.add_bad_request_violation("new_password", "is a common password");
        let status =
            Status::with_error_details(Code::InvalidArgument, "password too weak", details);
        let err = CliError::from(status);
        assert_eq!(err.exit_code(), 6);
        let report = err.report();
        assert_eq!(report.reason.as_deref(), Some("PASSWORD_POLICY_VIOLATION"));
        assert_eq!(report.domain.as_deref(), Some("cqrs.identity"));
        assert_eq!(report.violations.len(), 2);
        assert_eq!(
            report.one_line(),
            "error: INVALID_ARGUMENT (reason PASSWORD_POLICY_VIOLATION): password too weak; \
             new_password: must be at least 8 characters; new_password: is a common password"
        );
        assert_eq!(err.to_string(), report.one_line());
    }

    #[test]
    fn json_error_object_is_stable() {
        let status = Status::with_error_details(
            Code::PermissionDenied,
            "the caller may not do this",
            ErrorDetails::with_error_info("NO_GRANT_IN_SCOPE", "cqrs.directory", HashMap::new()),
        );
        let json: serde_json::Value =
            serde_json::from_str(&ErrorReport::from_status(&status).to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {
                "code": "PERMISSION_DENIED",
                "reason": "NO_GRANT_IN_SCOPE",
                "domain": "cqrs.directory",
                "message": "the caller may not do this",
                "violations": [],
                "metadata": {},
                "exit_code": 4,
            }})
        );
    }

    #[test]
    fn plain_status_without_details_still_reports() {
        let report = ErrorReport::from_status(&Status::unavailable("tcp connect error\nrefused"));
        assert_eq!(report.exit_code, 8);
        assert_eq!(report.reason, None);
        assert_eq!(
            report.one_line(),
            "error: UNAVAILABLE: tcp connect error refused"
        );
    }

    #[test]
    fn unauthenticated_hints_at_login() {
        let line = ErrorReport::from_status(&Status::unauthenticated("token expired")).one_line();
        assert!(
            line.starts_with("error: UNAUTHENTICATED: token expired"),
            "{line}"
        );
        assert!(line.contains("cqrsctl login"), "{line}");
    }

    #[test]
    fn internal_errors_keep_the_correlation_id() {
        let status = Status::with_error_details(
            Code::Internal,
            "internal error; correlation id abc",
            ErrorDetails::with_error_info(
                "INTERNAL",
                "cqrs.access",
                HashMap::from([("correlation_id".to_owned(), "abc".to_owned())]),
            ),
        );
        let report = ErrorReport::from_status(&status);
        assert_eq!(report.exit_code, 1);
        assert_eq!(
            report.metadata.get("correlation_id").map(String::as_str),
            Some("abc")
        );
    }

    #[test]
    fn local_invalid_lists_violations() {
        let err = CliError::Invalid {
            message: "orgs.csv: 1 invalid row".into(),
            violations: vec![Violation {
                field: "line 3: ods_code".into(),
                description: "is required".into(),
            }],
        };
        assert_eq!(
            err.report().one_line(),
            "error: INVALID_ARGUMENT: orgs.csv: 1 invalid row; line 3: ods_code: is required"
        );
    }
}
