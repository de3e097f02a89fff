//! The identity service's errors: the suite's common ones ([`ApiError`]) plus its own reasons,
//! mapped to `tonic::Status` once, in `cqrs_edge`.

use cqrs_edge::{ApiError, Refusal, ServiceReason};
use cqrs_runtime::errors::FieldViolations;
use tonic::Code;

use crate::directory::DirectoryError;
use crate::domain::password::PolicyRule;
use crate::hashing::HashError;
use crate::store::StoreError;

pub const DOMAIN: &str = "cqrs.identity";

/// What every refused sign-in says, whatever the cause (unknown login, wrong or empty
/// password, lock, disabled or pending account): SECURITY 4 and 9.
pub const BAD_CREDENTIALS_MESSAGE: &str = "the login or password is incorrect";

/// Every failure of an identity RPC.
pub type IdentityError = ApiError<IdentityReason>;

/// What only the identity service refuses.
#[derive(Debug, thiserror::Error)]
pub enum IdentityReason {
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
    #[error("the e-mail address already has an account in this realm")]
    EmailTaken,
    /// SelectRole: the caller holds no such grant.
    #[error("no such grant")]
    NoGrant,
    /// The password hashing pool is saturated.
    #[error("too many password checks in progress")]
    Busy,
    /// CompleteSignIn / VerifySecondFactor / ConfirmTotpEnrolment: the code or recovery code
    /// is wrong, used already, or the account is locked (one answer).
    #[error("the code is incorrect")]
    WrongCode,
    /// CompleteSignIn: the challenge is unknown, used or expired; sign in again.
    #[error("the sign-in challenge has ended")]
    ChallengeEnded,
    /// StartTotpEnrolment: the account has a confirmed second factor already.
    #[error("the account already has a second factor")]
    SecondFactorExists,
    /// ConfirmTotpEnrolment without StartTotpEnrolment, VerifySecondFactor without a factor,
    /// RemoveSecondFactor of an account without one.
    #[error("the account has no second factor")]
    NoSecondFactor,
    /// SelectRole: the role needs a second factor and the account has none.
    #[error("the role needs a second factor")]
    SecondFactorRequired,
    /// CompleteFederatedSignIn: the state, the code exchange or the ID token was refused.
    #[error("the federated sign-in failed")]
    FederatedSignInFailed,
    /// CompleteFederatedSignIn: the provider vouched for an e-mail that signs nobody in here
    /// (unverified, another domain, no account, or a disabled or locked one).
    #[error("no account matches the provider's e-mail")]
    NoMatchingAccount,
}

impl ServiceReason for IdentityReason {
    const DOMAIN: &'static str = DOMAIN;

    fn refusal(&self) -> Refusal {
        use Code::{AlreadyExists, FailedPrecondition, PermissionDenied, Unauthenticated};
        match self {
            IdentityReason::PasswordPolicy { field, rules } => {
                let mut violations = FieldViolations::new();
                for rule in rules {
                    violations.add(*field, format!("{}: {}", rule.code(), rule.describe()));
                }
                Refusal::invalid(
                    "PASSWORD_POLICY_VIOLATION",
                    "the password does not meet the password policy",
                    violations,
                )
            }
            IdentityReason::BadCredentials => Refusal::new(
                Unauthenticated,
                "INVALID_CREDENTIALS",
                BAD_CREDENTIALS_MESSAGE,
            ),
            IdentityReason::WrongCurrentPassword => Refusal::new(
                Unauthenticated,
                "INVALID_CREDENTIALS",
                "the current password is incorrect",
            ),
            IdentityReason::BadClientCredentials => Refusal::new(
                Unauthenticated,
                "INVALID_CLIENT_CREDENTIALS",
                "the client id or secret is incorrect",
            ),
            IdentityReason::SessionEnded => Refusal::new(
                Unauthenticated,
                "SESSION_ENDED",
                "the session has ended; sign in again",
            ),
            IdentityReason::InvalidLink => Refusal::new(
                FailedPrecondition,
                "LINK_INVALID",
                "the link is invalid, already used or expired",
            ),
            IdentityReason::EmailTaken => Refusal::new(
                AlreadyExists,
                "EMAIL_ALREADY_REGISTERED",
                "the e-mail address already has an account in this realm",
            ),
            IdentityReason::NoGrant => Refusal::new(
                PermissionDenied,
                "NO_GRANT",
                "the caller holds no such grant",
            ),
            IdentityReason::WrongCode => {
                Refusal::new(Unauthenticated, "INVALID_CODE", "the code is incorrect")
            }
            IdentityReason::ChallengeEnded => Refusal::new(
                Unauthenticated,
                "SIGN_IN_CHALLENGE_ENDED",
                "the sign-in has expired; sign in again",
            ),
            IdentityReason::SecondFactorExists => Refusal::new(
                FailedPrecondition,
                "SECOND_FACTOR_EXISTS",
                "the account already has an authenticator app",
            ),
            IdentityReason::NoSecondFactor => Refusal::new(
                FailedPrecondition,
                "NO_SECOND_FACTOR",
                "the account has no authenticator app",
            ),
            IdentityReason::SecondFactorRequired => Refusal::new(
                FailedPrecondition,
                "SECOND_FACTOR_REQUIRED",
                "this role needs an authenticator app: add one first",
            ),
            IdentityReason::FederatedSignInFailed => Refusal::new(
                Unauthenticated,
                "FEDERATED_SIGN_IN_FAILED",
                "the sign-in with your organisation's account did not complete; try again",
            ),
            IdentityReason::NoMatchingAccount => Refusal::new(
                Unauthenticated,
                "NO_MATCHING_ACCOUNT",
                "no CQRS account can be used with this e-mail address: ask your commissioner \
                 for an account with your NHSmail address",
            ),
            IdentityReason::Busy => Refusal::new(
                Code::ResourceExhausted,
                "PASSWORD_CHECKS_BUSY",
                "too many password checks in progress; retry later",
            ),
        }
    }
}

impl From<StoreError> for IdentityError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => IdentityError::NotFound("account"),
            StoreError::EmailTaken => IdentityReason::EmailTaken.into(),
            StoreError::RequestIdReused => IdentityError::RequestIdReused,
            StoreError::Unavailable(e) => IdentityError::database_unavailable(e),
            StoreError::SharedUnavailable(e) => IdentityError::database_unavailable(e),
            e @ (StoreError::UserIdsExhausted | StoreError::AuditWriterStopped) => {
                IdentityError::internal(e)
            }
            StoreError::Database(e) => IdentityError::internal(e),
            StoreError::SharedDatabase(e) => IdentityError::internal(e),
        }
    }
}

/// The directory (grants) did not answer usefully: down, slow, or refusing identity's service
/// token (a deployment fault, but to the caller equally a missing dependency).
impl From<DirectoryError> for IdentityError {
    fn from(err: DirectoryError) -> Self {
        IdentityError::unavailable("the directory", err)
    }
}

impl From<HashError> for IdentityError {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Busy => IdentityReason::Busy.into(),
            other => IdentityError::internal(other),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tonic::Status;
    use tonic_types::StatusExt;

    #[test]
    fn policy_violations_list_every_rule() {
        let status = Status::from(IdentityError::from(IdentityReason::PasswordPolicy {
            field: "new_password",
            rules: vec![PolicyRule::TooShort { min: 8 }, PolicyRule::CommonPassword],
        }));
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
