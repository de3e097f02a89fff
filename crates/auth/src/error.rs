//! Errors of this crate and how they reach a gRPC caller.

use std::collections::HashMap;

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

/// The one message every authentication failure gets on the wire: a caller learns nothing about
/// *why* (expired, unknown key, ended session) so probing the verifier gives nothing away.
pub const UNAUTHENTICATED_MESSAGE: &str = "missing or invalid credentials";

/// `ErrorInfo.reason` of every credential problem (missing, malformed, expired, unknown key,
/// ended session): one reason, like the one message.
pub const AUTHENTICATION_REQUIRED: &str = "AUTHENTICATION_REQUIRED";

/// `ErrorInfo.reason` of [`AuthError::StepUpRequired`].
pub const STEP_UP_REQUIRED: &str = "STEP_UP_REQUIRED";
const STEP_UP_MESSAGE: &str = "confirm a code from your authenticator app, then try again";
/// `ErrorInfo.domain` of the errors this crate answers with details.
pub const DOMAIN: &str = "cqrs.auth";

/// Message for a fail-closed answer when the session store cannot be asked.
pub const UNAVAILABLE_MESSAGE: &str = "authentication temporarily unavailable";

/// Why a request or token was refused.
///
/// The variants are distinct for logs and tests; [`AuthError::to_status`] folds every credential
/// problem into one `Unauthenticated` answer.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: Bearer` header, or one that is not well formed.
    #[error("missing credentials")]
    MissingCredentials,
    /// Malformed token, bad signature, wrong algorithm, issuer, audience or claims.
    #[error("invalid token")]
    InvalidToken,
    /// The token names a key id the verifier does not hold.
    #[error("unknown signing key")]
    UnknownKey,
    /// The token's `exp` is past (beyond the allowed clock leeway).
    #[error("token expired")]
    Expired,
    /// The user token's session no longer exists (signed out, disabled, locked, revoked...).
    #[error("session ended")]
    SessionEnded,
    /// A dependency needed to decide (session store, token endpoint) did not answer. Callers
    /// fail closed on it.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// An administrative action by a person whose last second-factor check is older than
    /// the step-up window: the caller checks a code again (VerifySecondFactor) and repeats.
    #[error("a recent second-factor check is needed")]
    StepUpRequired,
    /// A token could not be issued (e.g. a ttl that overflows the calendar).
    #[error("token issue failed: {0}")]
    Issue(String),
}

impl AuthError {
    /// The gRPC status a caller sees. Never carries the internal detail.
    pub fn to_status(&self) -> Status {
        match self {
            AuthError::Unavailable(_) => {
                with_info(tonic::Code::Unavailable, UNAVAILABLE_MESSAGE, "UNAVAILABLE")
            }
            AuthError::Issue(_) => {
                with_info(tonic::Code::Internal, "token issue failed", "INTERNAL")
            }
            AuthError::StepUpRequired => with_info(
                tonic::Code::PermissionDenied,
                STEP_UP_MESSAGE,
                STEP_UP_REQUIRED,
            ),
            AuthError::MissingCredentials
            | AuthError::InvalidToken
            | AuthError::UnknownKey
            | AuthError::Expired
            | AuthError::SessionEnded => unauthenticated(),
        }
    }
}

/// The answer to a call without usable credentials: `Unauthenticated` with the one message and
/// an `ErrorInfo` (reason [`AUTHENTICATION_REQUIRED`], domain [`DOMAIN`]) like every other
/// error of the suite.
pub fn unauthenticated() -> Status {
    with_info(
        tonic::Code::Unauthenticated,
        UNAUTHENTICATED_MESSAGE,
        AUTHENTICATION_REQUIRED,
    )
}

fn with_info(code: tonic::Code, message: &str, reason: &str) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, DOMAIN, HashMap::new()),
    )
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        err.to_status()
    }
}

/// A key value (from the environment or built in code) that cannot be used.
///
/// Messages never include key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key at all where at least one is required.
    #[error("no key given")]
    Empty,
    /// The value is not of the form `kid:base64url`.
    #[error("expected \"kid:base64url-key\"")]
    Format,
    /// The key id is empty, too long or uses characters outside `[A-Za-z0-9._-]`.
    #[error("key id must be 1-64 characters of [A-Za-z0-9._-]")]
    InvalidKid,
    /// The key part is not unpadded base64url.
    #[error("key is not valid base64url")]
    Base64,
    /// The key part decodes to the wrong number of bytes.
    #[error("key must be {expected} bytes, got {actual}")]
    Length {
        /// Required length.
        expected: usize,
        /// Decoded length.
        actual: usize,
    },
    /// The bytes are not a usable Ed25519 public key (not on the curve, or of small order).
    #[error("not a valid Ed25519 public key")]
    InvalidPublicKey,
    /// Two keys in one set share a key id.
    #[error("duplicate key id {0:?}")]
    DuplicateKid(String),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Every credential problem answers alike, with an ErrorInfo like every other error.
    #[test]
    fn credential_problems_answer_alike_with_error_info() {
        for err in [
            AuthError::MissingCredentials,
            AuthError::InvalidToken,
            AuthError::UnknownKey,
            AuthError::Expired,
            AuthError::SessionEnded,
        ] {
            let status = err.to_status();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{err:?}");
            assert_eq!(status.message(), UNAUTHENTICATED_MESSAGE);
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.reason, AUTHENTICATION_REQUIRED);
            assert_eq!(info.domain, DOMAIN);
        }
        let unavailable = AuthError::Unavailable("redis: refused".into()).to_status();
        assert_eq!(unavailable.code(), tonic::Code::Unavailable);
        assert!(!unavailable.message().contains("redis"));
        let info = unavailable.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "UNAVAILABLE");
    }
}
