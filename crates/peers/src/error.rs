//! The one error of a call to another service.

use cqrs_auth::AuthError;
use tonic::Code;
use tonic_types::StatusExt;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No answer within the deadline, or the peer could not be reached: worth a retry.
    #[error("{service} is unavailable: {message}")]
    Unavailable {
        service: &'static str,
        /// `Unavailable`, or `DeadlineExceeded` / `Cancelled` when time ran out.
        code: Code,
        message: String,
    },
    /// Any other refusal, with the peer's `ErrorInfo` reason.
    #[error("{service} answered {code:?} ({reason}): {message}")]
    Status {
        service: &'static str,
        code: Code,
        reason: String,
        message: String,
    },
    #[error("cannot get a service token: {0}")]
    Token(#[source] AuthError),
    /// The peer's answer lacks something it always carries.
    #[error("{service}'s answer lacks {field}")]
    Incomplete {
        service: &'static str,
        field: &'static str,
    },
}

impl PeerError {
    /// An answer from `service` without `field`, which it always carries.
    pub fn incomplete(service: &'static str, field: &'static str) -> Self {
        PeerError::Incomplete { service, field }
    }

    /// The error of a status from `service`.
    pub fn from_status(service: &'static str, status: &tonic::Status) -> Self {
        match status.code() {
            code @ (Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled) => {
                PeerError::Unavailable {
                    service,
                    code,
                    message: status.message().to_owned(),
                }
            }
            code => PeerError::Status {
                service,
                code,
                reason: status
                    .get_details_error_info()
                    .map(|info| info.reason)
                    .unwrap_or_default(),
                message: status.message().to_owned(),
            },
        }
    }

    /// Whether the peer refused with `code`.
    pub fn is(&self, code: Code) -> bool {
        matches!(self, PeerError::Status { code: c, .. } if *c == code)
    }

    /// Whether the peer could not be reached or did not answer in time.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, PeerError::Unavailable { .. })
    }

    /// The service the call went to (for the caller's own `Unavailable` answer).
    pub fn service(&self) -> Option<&'static str> {
        match self {
            PeerError::Unavailable { service, .. }
            | PeerError::Status { service, .. }
            | PeerError::Incomplete { service, .. } => Some(service),
            PeerError::Token(_) => None,
        }
    }
}
