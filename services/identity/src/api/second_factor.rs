//! Second factors: enrolment of an authenticator app, the second step of sign-in, step-up
//! checks, and the service desk's removal. The rules are in [`crate::domain::second_factor`];
//! every code check goes through the account's one lock-out gate.

use chrono::{DateTime, Utc};
use cqrs_proto::identity::v1 as pb;
use cqrs_proto::notifications::v1::EmailTemplate;
use cqrs_runtime::audit::Actor;
use cqrs_runtime::server::request_deadline;
use tonic::Request;
use uuid::Uuid;

use super::signin::{Failure, token_time};
use super::{
    IdentityApi, IdentityError, IdentityReason, Notice, account_event, audit_alone, audit_and_mail,
    convert, id_field, principal, require_desk, require_user,
};
use crate::domain::second_factor::{
    TotpSecret, hash_recovery_code, new_recovery_codes, normalise_code, normalise_recovery_code,
};
use crate::store::lockout::AttemptGate;
use crate::store::{self, AccountRow, second_factors};

/// Longest challenge token looked at; real ones are 43 characters.
const MAX_CHALLENGE_LEN: usize = 128;

/// What a person typed to prove the second factor.
enum Answer {
    Code(String),
    RecoveryCode(String),
}

impl Answer {
    /// Exactly one of the two fields, well formed.
    fn from_fields(
        code: &str,
        recovery_code: &str,
        code_field: &'static str,
        recovery_field: &'static str,
    ) -> Result<Answer, IdentityError> {
        match (code.trim().is_empty(), recovery_code.trim().is_empty()) {
            (false, true) => normalise_code(code)
                .map(Answer::Code)
                .ok_or_else(|| IdentityError::invalid_field(code_field, "must be 6 digits")),
            (true, false) => normalise_recovery_code(recovery_code)
                .map(Answer::RecoveryCode)
                .ok_or_else(|| {
                    IdentityError::invalid_field(
                        recovery_field,
                        "must be 16 letters and digits, as shown when the app was added",
                    )
                }),
            (true, true) => Err(IdentityError::invalid_field(
                code_field,
                "is required (or a recovery code)",
            )),
            (false, false) => Err(IdentityError::invalid_field(
                recovery_field,
                "give a code or a recovery code, not both",
            )),
        }
    }

    fn method(&self) -> &'static str {
        match self {
            Answer::Code(_) => "totp",
            Answer::RecoveryCode(_) => "recovery_code",
        }
    }
}

/// A right answer: how many recovery codes are left when one was used.
struct Accepted {
    recovery_codes_left: Option<i64>,
}

fn unix(now: DateTime<Utc>) -> u64 {
    u64::try_from(now.timestamp()).unwrap_or(0)
}

impl IdentityApi {
    /// Checks `answer` for `account` through the lock-out gate: a locked account checks
    /// nothing; otherwise the attempt is counted first, then checked, and a wrong answer is
    /// recorded like a wrong password (it may lock the account). The caller resets the
    /// counter once the step it serves is complete.
    async fn check_answer(
        &self,
        account: &AccountRow,
        actor: &Actor,
        answer: &Answer,
        action: &str,
        now: DateTime<Utc>,
    ) -> Result<Accepted, IdentityError> {
        let inner = &self.inner;
        let gate = if account.locked_at.is_some() {
            inner.lockout.set_permanent(account.id).await?;
            AttemptGate::Locked { until_ms: None }
        } else {
            inner
                .lockout
                .begin_attempt(account.id, &self.config().lockout, now)
                .await?
        };
        let AttemptGate::Proceed {
            failures,
            permanent_reached,
        } = gate
        else {
            self.record_failure(account, actor, Failure::locked(action), now)
                .await?;
            return Err(IdentityReason::WrongCode.into());
        };
        let pool = self.store().pool();
        let factor = second_factors::factor(pool, account.id)
            .await?
            .filter(|f| f.confirmed_at.is_some());
        let accepted = match (answer, factor) {
            (Answer::Code(code), Some(factor)) => {
                let secret = TotpSecret::from_bytes(factor.secret);
                let last = u64::try_from(factor.last_step).unwrap_or(0);
                match secret.matching_step(code, unix(now), last) {
                    Some(step) => {
                        let step = i64::try_from(step).unwrap_or(i64::MAX);
                        second_factors::accept_step(pool, account.id, step)
                            .await?
                            .then_some(Accepted {
                                recovery_codes_left: None,
                            })
                    }
                    None => None,
                }
            }
            (Answer::RecoveryCode(code), Some(_)) => {
                second_factors::use_recovery_code(pool, account.id, &hash_recovery_code(code), now)
                    .await?
                    .map(|left| Accepted {
                        recovery_codes_left: Some(left),
                    })
            }
            (_, None) => None,
        };
        match accepted {
            Some(accepted) => Ok(accepted),
            None => {
                let failure = Failure {
                    action,
                    reason: "wrong_code",
                    failures: Some(failures),
                    lock_now: permanent_reached,
                };
                self.record_failure(account, actor, failure, now).await?;
                Err(IdentityReason::WrongCode.into())
            }
        }
    }

    /// Tells the owner a recovery code was used, with the count left, and records it.
    async fn recovery_code_used(
        &self,
        account: &AccountRow,
        actor: &Actor,
        left: i64,
        now: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        let left_text = left.to_string();
        let mut tx = self.store().begin().await?;
        audit_and_mail(
            &mut tx,
            now,
            actor,
            account,
            Notice {
                action: "USE_RECOVERY_CODE",
                details: serde_json::json!({ "recovery_codes_left": left }),
                template: EmailTemplate::RecoveryCodeUsed,
                extra: &[("remaining", left_text.as_str())],
            },
        )
        .await?;
        store::commit(tx).await?;
        Ok(())
    }

    pub(super) async fn do_complete_sign_in(
        &self,
        request: Request<pb::CompleteSignInRequest>,
    ) -> Result<pb::CompleteSignInResponse, IdentityError> {
        let actor = Actor::anonymous(&request);
        let deadline = request_deadline(&request);
        let req = request.into_inner();
        if req.challenge_token.is_empty() {
            return Err(IdentityError::invalid_field(
                "challenge_token",
                "is required",
            ));
        }
        let answer = Answer::from_fields(&req.code, &req.recovery_code, "code", "recovery_code")?;
        if req.challenge_token.len() > MAX_CHALLENGE_LEN {
            return Err(IdentityReason::ChallengeEnded.into());
        }
        let now = self.now();
        let inner = &self.inner;
        let Some((account_id, first_method)) =
            inner.sessions.challenge(&req.challenge_token).await?
        else {
            return Err(IdentityReason::ChallengeEnded.into());
        };
        let account = self.load(account_id).await?;
        if !account.is_active() {
            inner.sessions.end_challenge(&req.challenge_token).await?;
            return Err(IdentityReason::ChallengeEnded.into());
        }
        let accepted = self
            .check_answer(&account, &actor, &answer, "SIGN_IN", now)
            .await?;
        // Of two parallel right answers only the one that ends the challenge signs in.
        if !inner.sessions.end_challenge(&req.challenge_token).await? {
            return Err(IdentityReason::ChallengeEnded.into());
        }
        let signed_in = self
            .start_session(
                &account,
                &actor,
                now,
                deadline,
                &[first_method.as_str(), "otp"],
                Some(token_time().timestamp()),
            )
            .await?;
        if let Some(left) = accepted.recovery_codes_left {
            self.recovery_code_used(&account, &actor, left, now).await?;
        }
        Ok(pb::CompleteSignInResponse {
            session_token: signed_in.session_token,
            access_token: signed_in.access_token,
            expires_at: signed_in.expires_at,
            account: signed_in.account,
            grants: signed_in.grants,
            session: signed_in.session,
            recovery_codes_left: accepted
                .recovery_codes_left
                .map_or(0, |left| i32::try_from(left).unwrap_or(i32::MAX)),
        })
    }

    pub(super) async fn do_start_totp_enrolment(
        &self,
        request: Request<pb::StartTotpEnrolmentRequest>,
    ) -> Result<pb::StartTotpEnrolmentResponse, IdentityError> {
        let principal = principal(&request)?;
        let (account_id, _) = require_user(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let now = self.now();
        let account = self.load(account_id).await?;
        if account.second_factor_at.is_some() {
            return Err(IdentityReason::SecondFactorExists.into());
        }
        let secret = TotpSecret::generate();
        let name = account
            .user_id
            .clone()
            .unwrap_or_else(|| account.email.clone());
        let (Some(otpauth_uri), Some(text)) = (secret.otpauth_uri(&name), secret.base32()) else {
            return Err(IdentityError::internal(std::io::Error::other(
                "a generated TOTP secret was refused",
            )));
        };
        if !second_factors::start(self.store().pool(), account_id, secret.bytes(), now).await? {
            return Err(IdentityReason::SecondFactorExists.into());
        }
        audit_alone(
            self.store(),
            now,
            &actor,
            account_event(
                "START_TOTP_ENROLMENT",
                &account_id.to_string(),
                "success",
                serde_json::json!({}),
            ),
        )
        .await?;
        Ok(pb::StartTotpEnrolmentResponse {
            otpauth_uri,
            secret: text,
        })
    }

    pub(super) async fn do_confirm_totp_enrolment(
        &self,
        request: Request<pb::ConfirmTotpEnrolmentRequest>,
    ) -> Result<pb::ConfirmTotpEnrolmentResponse, IdentityError> {
        let principal = principal(&request)?;
        let (account_id, session_id) = require_user(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let req = request.into_inner();
        let code = normalise_code(&req.code)
            .ok_or_else(|| IdentityError::invalid_field("code", "must be 6 digits"))?;
        let now = self.now();
        let account = self.load(account_id).await?;
        let factor = second_factors::factor(self.store().pool(), account_id)
            .await?
            .ok_or(IdentityReason::NoSecondFactor)?;
        if factor.confirmed_at.is_some() {
            return Err(IdentityReason::SecondFactorExists.into());
        }
        // The person has just been shown the secret: a typo here is not a guess at someone
        // else's factor, so it is not counted against the account.
        let step = TotpSecret::from_bytes(factor.secret)
            .matching_step(&code, unix(now), 0)
            .ok_or(IdentityReason::WrongCode)?;
        let codes = new_recovery_codes();
        let hashes: Vec<[u8; 32]> = codes
            .iter()
            .filter_map(|code| normalise_recovery_code(code))
            .map(|code| hash_recovery_code(&code))
            .collect();
        let mut tx = self.store().begin().await?;
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        if !second_factors::confirm(&mut tx, account_id, step, &hashes, now).await? {
            return Err(IdentityReason::SecondFactorExists.into());
        }
        audit_and_mail(
            &mut tx,
            now,
            &actor,
            &account,
            Notice {
                action: "ADD_SECOND_FACTOR",
                details: serde_json::json!({ "kind": "totp" }),
                template: EmailTemplate::SecondFactorAdded,
                extra: &[],
            },
        )
        .await?;
        store::commit(tx).await?;
        let token = self.record_check(account_id, &session_id).await?;
        Ok(pb::ConfirmTotpEnrolmentResponse {
            recovery_codes: codes,
            access_token: token.token,
            expires_at: Some(convert::timestamp(token.expires_at)),
        })
    }

    /// Records a second-factor check on the session and issues its token anew. The check's
    /// time is token time, the clock every service judges step-up windows by.
    async fn record_check(
        &self,
        account_id: Uuid,
        session_id: &str,
    ) -> Result<cqrs_auth::IssuedToken, IdentityError> {
        let now = token_time();
        let sessions = &self.inner.sessions;
        let mut record = sessions
            .get(account_id, session_id)
            .await?
            .ok_or(IdentityReason::SessionEnded)?;
        if !sessions
            .record_second_factor(&record, now.timestamp())
            .await?
        {
            return Err(IdentityReason::SessionEnded.into());
        }
        record.second_factor_at = Some(now.timestamp());
        if !record.methods.iter().any(|m| m == "otp") {
            record.methods.push("otp".to_owned());
        }
        let active = record.active;
        self.token_for(&record, active.as_ref())
    }

    pub(super) async fn do_verify_second_factor(
        &self,
        request: Request<pb::VerifySecondFactorRequest>,
    ) -> Result<pb::VerifySecondFactorResponse, IdentityError> {
        let principal = principal(&request)?;
        let (account_id, session_id) = require_user(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let req = request.into_inner();
        let answer = Answer::from_fields(&req.code, &req.recovery_code, "code", "recovery_code")?;
        let now = self.now();
        let account = self.load(account_id).await?;
        if account.second_factor_at.is_none() {
            return Err(IdentityReason::NoSecondFactor.into());
        }
        let accepted = self
            .check_answer(&account, &actor, &answer, "VERIFY_SECOND_FACTOR", now)
            .await?;
        self.inner.lockout.record_success(account_id).await?;
        let token = self.record_check(account_id, &session_id).await?;
        audit_alone(
            self.store(),
            now,
            &actor,
            account_event(
                "VERIFY_SECOND_FACTOR",
                &account_id.to_string(),
                "success",
                serde_json::json!({ "method": answer.method() }),
            ),
        )
        .await?;
        if let Some(left) = accepted.recovery_codes_left {
            self.recovery_code_used(&account, &actor, left, now).await?;
        }
        Ok(pb::VerifySecondFactorResponse {
            access_token: token.token,
            expires_at: Some(convert::timestamp(token.expires_at)),
        })
    }

    pub(super) async fn do_remove_second_factor(
        &self,
        request: Request<pb::RemoveSecondFactorRequest>,
    ) -> Result<pb::RemoveSecondFactorResponse, IdentityError> {
        let principal = principal(&request)?;
        require_desk(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let req = request.into_inner();
        let account_id: Uuid = id_field("account_id", &req.account_id)?;
        let now = self.now();
        let account = self.load(account_id).await?;
        let mut tx = self.store().begin().await?;
        if !second_factors::remove(&mut tx, account_id, now).await? {
            return Err(IdentityReason::NoSecondFactor.into());
        }
        audit_and_mail(
            &mut tx,
            now,
            &actor,
            &account,
            Notice {
                action: "REMOVE_SECOND_FACTOR",
                details: serde_json::json!({ "by": "service_desk" }),
                template: EmailTemplate::SecondFactorRemoved,
                extra: &[("by_service_desk", "true")],
            },
        )
        .await?;
        // Sessions that checked the removed factor end with it: the person signs in again
        // and, where a role needs one, adds an app first.
        self.end_sessions_before_commit(tx, account_id).await?;
        Ok(pb::RemoveSecondFactorResponse {})
    }
}
