//! Setting passwords: registration links, change, reset links, and the User ID reminder.
//!
//! Every path that sets a password applies the realm's profile, then the minimum age and the
//! history (compared against stored hashes only). Links are single use: the row is claimed
//! with `UPDATE ... WHERE used_at IS NULL` in the transaction that sets the password, so of
//! two parallel uses exactly one commits.

use chrono::{DateTime, Utc};
use cqrs_proto::identity::v1 as pb;
use cqrs_proto::notifications::v1::EmailTemplate;
use cqrs_runtime::audit::{Actor, Event};
use tonic::Request;

use super::signin::Failure;
use super::signin::{Gate, Presented};
use super::{
    IdentityApi, IdentityError, IdentityReason, MAX_FIELD_BYTES, Notice, account_event,
    audit_and_mail, convert, id_field, principal, require_desk, require_user,
};
use crate::domain::account::{AccountState, Realm};
use crate::domain::email::normalise_email;
use crate::domain::links::{
    LinkPurpose, LinkToken, hash_token, is_well_formed_token, link_expiry, new_link_token,
};
use crate::domain::password::{NormalisedPassword, PolicyContext, PolicyRule, min_age_blocks};
use crate::store::{self, AccountRow, LinkRow, NewLink, Tx, accounts as account_store};

impl IdentityApi {
    /// Checks a new password for `account`: the realm's profile, the minimum age (unless
    /// `exempt_min_age`) and the history. Every failed rule is reported against `field`.
    async fn vet_new_password(
        &self,
        account: &AccountRow,
        raw: &str,
        field: &'static str,
        exempt_min_age: bool,
        now: DateTime<Utc>,
    ) -> Result<NormalisedPassword, IdentityError> {
        let realm = account
            .realm()
            .ok_or_else(|| IdentityError::internal(std::io::Error::other("unknown realm")))?;
        let profile = self.config().profile(realm);
        let context = PolicyContext {
            user_id: account.user_id.as_deref(),
            email: Some(&account.email),
            breached: self.config().breached_passwords.as_deref(),
        };
        let normalised = profile.check(raw, &context).map_err(|rules| {
            IdentityError::from(IdentityReason::PasswordPolicy { field, rules })
        })?;

        let mut rules = Vec::new();
        if min_age_blocks(
            account.password_changed_at,
            now,
            profile.min_age(),
            exempt_min_age,
        ) {
            rules.push(PolicyRule::ChangedTooRecently);
        }
        if profile.history_len() > 0 {
            let hashes = account_store::recent_password_hashes(
                self.store().pool(),
                account.id,
                profile.history_len(),
            )
            .await?;
            for phc in &hashes {
                if self.inner.hasher.verify(&normalised, phc).await? {
                    rules.push(PolicyRule::ReusedPassword);
                    break;
                }
            }
        }
        if rules.is_empty() {
            Ok(normalised)
        } else {
            Err(IdentityError::from(IdentityReason::PasswordPolicy {
                field,
                rules,
            }))
        }
    }

    /// How many history entries to keep for `account`: the current password and the
    /// previous ones its profile compares against.
    fn history_keep(&self, account: &AccountRow) -> usize {
        account
            .realm()
            .map_or(1, |realm| self.config().profile(realm).history_len() + 1)
    }

    /// Issues a link on `tx` (revoking older ones of the purpose) and returns its token for
    /// the mail. Only the hash is stored.
    pub(super) async fn issue_link(
        &self,
        tx: &mut Tx,
        account: &AccountRow,
        purpose: LinkPurpose,
        exempt_min_age: bool,
        now: DateTime<Utc>,
    ) -> Result<LinkToken, IdentityError> {
        let (token, token_hash) = new_link_token();
        let link = NewLink {
            purpose,
            token_hash,
            expires_at: link_expiry(purpose, now, &self.config().links),
            exempt_min_age,
        };
        account_store::insert_link(tx, account, &link, now).await?;
        Ok(token)
    }

    /// The usable link a presented token names, with its account; one answer for unknown,
    /// used, revoked and expired links.
    async fn open_link(
        &self,
        token: &str,
        purpose: LinkPurpose,
        now: DateTime<Utc>,
    ) -> Result<(LinkRow, AccountRow), IdentityError> {
        if token.is_empty() {
            return Err(IdentityError::invalid_field("token", "is required"));
        }
        if !is_well_formed_token(token) {
            return Err(IdentityError::from(IdentityReason::InvalidLink));
        }
        let (link, account) =
            account_store::open_link(self.store().pool(), &hash_token(token), purpose, now)
                .await?
                .ok_or(IdentityError::from(IdentityReason::InvalidLink))?;
        // A registration link serves only an account still waiting for its first password; a
        // reset link only an active one.
        let usable = match purpose {
            LinkPurpose::Registration => account.state() == Some(AccountState::PendingRegistration),
            LinkPurpose::PasswordReset => account.is_active(),
        };
        if !usable {
            return Err(IdentityError::from(IdentityReason::InvalidLink));
        }
        Ok((link, account))
    }

    pub(super) async fn do_get_link(
        &self,
        request: Request<pb::GetLinkRequest>,
    ) -> Result<pb::GetLinkResponse, IdentityError> {
        let req = request.into_inner();
        let purpose = match pb::LinkPurpose::try_from(req.purpose) {
            Ok(pb::LinkPurpose::Registration) => LinkPurpose::Registration,
            Ok(pb::LinkPurpose::PasswordReset) => LinkPurpose::PasswordReset,
            Ok(pb::LinkPurpose::Unspecified) => {
                return Err(IdentityError::invalid_field("purpose", "is required"));
            }
            Err(_) => {
                return Err(IdentityError::invalid_field(
                    "purpose",
                    "is not a known value",
                ));
            }
        };
        let (link, account) = self.open_link(&req.token, purpose, self.now()).await?;
        let realm = account.realm();
        Ok(pb::GetLinkResponse {
            purpose: req.purpose,
            realm: convert::realm_to_proto(realm).into(),
            user_id: account.user_id.clone().unwrap_or_default(),
            password_policy: realm
                .map(|realm| self.config().profile(realm).policy_lines())
                .unwrap_or_default(),
            expire_time: Some(convert::timestamp(link.expires_at)),
        })
    }

    pub(super) async fn do_complete_registration(
        &self,
        request: Request<pb::CompleteRegistrationRequest>,
    ) -> Result<pb::CompleteRegistrationResponse, IdentityError> {
        let actor = Actor::anonymous(&request);
        let req = request.into_inner();
        let now = self.now();
        let (field, raw) = registration_password(&req)?;
        let (link, account) = self
            .open_link(&req.token, LinkPurpose::Registration, now)
            .await?;
        let password = self
            .vet_new_password(&account, raw, field, true, now)
            .await?;
        let phc = self.inner.hasher.hash(&password).await?;

        let mut tx = self.store().begin().await?;
        if !account_store::consume_link(&mut tx, link.id, now).await? {
            return Err(IdentityError::from(IdentityReason::InvalidLink));
        }
        let keep = self.history_keep(&account);
        let Some(updated) =
            account_store::set_password(&mut tx, account.id, &phc, true, keep, now).await?
        else {
            return Err(IdentityError::from(IdentityReason::InvalidLink));
        };
        store::record(
            &mut tx,
            now,
            &actor,
            account_event(
                "COMPLETE_REGISTRATION",
                &account.id.to_string(),
                "success",
                serde_json::json!({}),
            ),
        )
        .await?;
        store::commit(tx).await?;
        Ok(pb::CompleteRegistrationResponse {
            account: Some(convert::account(&updated)),
        })
    }

    pub(super) async fn do_change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<pb::ChangePasswordResponse, IdentityError> {
        let principal = principal(&request)?;
        let (account_id, _) = require_user(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let req = request.into_inner();
        if req.current_password.is_empty() {
            return Err(IdentityError::invalid_field(
                "current_password",
                "is required",
            ));
        }
        let now = self.now();
        let account = self.load(account_id).await?;
        if !account.is_active() {
            return Err(IdentityError::FailedPrecondition(
                "ACCOUNT_NOT_ACTIVE",
                "the account is not active".into(),
            ));
        }
        // The new password's own rules first: a typo in it must not cost a lock-out attempt.
        let realm = account.realm().unwrap_or(Realm::National);
        let context = PolicyContext {
            user_id: account.user_id.as_deref(),
            email: Some(&account.email),
            breached: self.config().breached_passwords.as_deref(),
        };
        if let Err(rules) = self
            .config()
            .profile(realm)
            .check(&req.new_password, &context)
        {
            return Err(IdentityError::from(IdentityReason::PasswordPolicy {
                field: "new_password",
                rules,
            }));
        }

        let presented = Presented::new(&req.current_password);
        let slot = self
            .reserve_check(&actor, "CHANGE_PASSWORD", Some(account.id), now)
            .await?;
        match self.gated_verify(slot, &account, &presented, now).await? {
            Gate::Locked => {
                self.record_failure(&account, &actor, Failure::locked("CHANGE_PASSWORD"), now)
                    .await?;
                return Err(IdentityError::from(IdentityReason::WrongCurrentPassword));
            }
            Gate::Checked {
                matched: false,
                failures,
                permanent_reached,
            } => {
                let failure = Failure {
                    action: "CHANGE_PASSWORD",
                    reason: "wrong_password",
                    failures: Some(failures),
                    lock_now: permanent_reached,
                };
                self.record_failure(&account, &actor, failure, now).await?;
                return Err(IdentityError::from(IdentityReason::WrongCurrentPassword));
            }
            Gate::Checked { matched: true, .. } => {
                self.inner.lockout.record_success(account.id).await?;
            }
        }

        let password = self
            .vet_new_password(&account, &req.new_password, "new_password", false, now)
            .await?;
        let phc = self.inner.hasher.hash(&password).await?;
        let mut tx = self.store().begin().await?;
        let keep = self.history_keep(&account);
        let Some(updated) =
            account_store::set_password(&mut tx, account.id, &phc, false, keep, now).await?
        else {
            return Err(IdentityError::NotFound("account"));
        };
        account_store::revoke_links(&mut tx, account.id, LinkPurpose::PasswordReset, now).await?;
        audit_and_mail(
            &mut tx,
            now,
            &actor,
            &updated,
            Notice {
                action: "CHANGE_PASSWORD",
                details: serde_json::json!({}),
                template: EmailTemplate::PasswordChanged,
                extra: &[],
            },
        )
        .await?;
        self.end_sessions_before_commit(tx, account.id).await?;
        Ok(pb::ChangePasswordResponse {})
    }

    pub(super) async fn do_request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<pb::RequestPasswordResetResponse, IdentityError> {
        let actor = Actor::anonymous(&request);
        let login = request.into_inner().login;
        if login.trim().is_empty() {
            return Err(IdentityError::invalid_field("login", "is required"));
        }
        if login.len() > MAX_FIELD_BYTES {
            return Err(IdentityError::invalid_field(
                "login",
                "must be at most 320 bytes",
            ));
        }
        let now = self.now();
        let account = self.find_login(&login).await?;
        let mut tx = self.store().begin().await?;
        match account.filter(AccountRow::is_active) {
            Some(account) => {
                let token = self
                    .issue_link(&mut tx, &account, LinkPurpose::PasswordReset, false, now)
                    .await?;
                audit_and_mail(
                    &mut tx,
                    now,
                    &actor,
                    &account,
                    Notice {
                        action: "REQUEST_PASSWORD_RESET",
                        details: serde_json::json!({}),
                        template: EmailTemplate::PasswordReset,
                        extra: &[("token", token.as_str())],
                    },
                )
                .await?;
            }
            None => {
                // Nobody to mail. The answer must not say so, in content or in time: do a
                // comparable amount of database work, then answer the same.
                account_store::revoke_links(
                    &mut tx,
                    uuid::Uuid::nil(),
                    LinkPurpose::PasswordReset,
                    now,
                )
                .await?;
                store::record(
                    &mut tx,
                    now,
                    &actor,
                    Event {
                        changes: cqrs_runtime::audit::Changes::new(),
                        action: "REQUEST_PASSWORD_RESET",
                        target_type: "account",
                        target_id: "",
                        outcome: "failure",
                        details: serde_json::json!({ "reason": "no_active_account" }),
                    },
                )
                .await?;
            }
        }
        store::commit(tx).await?;
        Ok(pb::RequestPasswordResetResponse {})
    }

    pub(super) async fn do_reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<pb::ResetPasswordResponse, IdentityError> {
        let actor = Actor::anonymous(&request);
        let req = request.into_inner();
        let now = self.now();
        let (link, account) = self
            .open_link(&req.token, LinkPurpose::PasswordReset, now)
            .await?;
        let password = self
            .vet_new_password(
                &account,
                &req.new_password,
                "new_password",
                link.exempt_min_age,
                now,
            )
            .await?;
        let phc = self.inner.hasher.hash(&password).await?;

        let mut tx = self.store().begin().await?;
        if !account_store::consume_link(&mut tx, link.id, now).await? {
            return Err(IdentityError::from(IdentityReason::InvalidLink));
        }
        let keep = self.history_keep(&account);
        let Some(updated) =
            account_store::set_password(&mut tx, account.id, &phc, false, keep, now).await?
        else {
            return Err(IdentityError::from(IdentityReason::InvalidLink));
        };
        audit_and_mail(
            &mut tx,
            now,
            &actor,
            &updated,
            Notice {
                action: "RESET_PASSWORD",
                details: serde_json::json!({ "exempt_min_age": link.exempt_min_age }),
                template: EmailTemplate::PasswordChanged,
                extra: &[],
            },
        )
        .await?;
        // SECURITY 20: every session ends and the reset does not sign anyone in.
        self.end_sessions_before_commit(tx, account.id).await?;
        Ok(pb::ResetPasswordResponse {})
    }

    pub(super) async fn do_remind_user_id(
        &self,
        request: Request<pb::RemindUserIdRequest>,
    ) -> Result<pb::RemindUserIdResponse, IdentityError> {
        let actor = Actor::anonymous(&request);
        let raw = request.into_inner().email;
        let email = normalise_email(&raw)
            .map_err(|e| IdentityError::invalid_field("email", &e.to_string()))?;
        let now = self.now();
        let account =
            account_store::account_by_email(self.store().pool(), Realm::National, &email).await?;
        let mut tx = self.store().begin().await?;
        match account {
            Some(account) => {
                let user_id = account.user_id.clone().unwrap_or_default();
                audit_and_mail(
                    &mut tx,
                    now,
                    &actor,
                    &account,
                    Notice {
                        action: "REMIND_USER_ID",
                        details: serde_json::json!({}),
                        template: EmailTemplate::UserIdReminder,
                        extra: &[("user_id", user_id.as_str())],
                    },
                )
                .await?;
            }
            None => {
                store::record(
                    &mut tx,
                    now,
                    &actor,
                    Event {
                        changes: cqrs_runtime::audit::Changes::new(),
                        action: "REMIND_USER_ID",
                        target_type: "account",
                        target_id: "",
                        outcome: "failure",
                        details: serde_json::json!({ "reason": "no_national_account" }),
                    },
                )
                .await?;
            }
        }
        store::commit(tx).await?;
        Ok(pb::RemindUserIdResponse {})
    }

    pub(super) async fn do_send_password_reset(
        &self,
        request: Request<pb::SendPasswordResetRequest>,
    ) -> Result<pb::SendPasswordResetResponse, IdentityError> {
        let principal = principal(&request)?;
        require_desk(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let account_id = id_field("account_id", &request.get_ref().account_id)?;
        let now = self.now();
        let account = self.load(account_id).await?;
        if !account.is_active() {
            return Err(IdentityError::FailedPrecondition(
                "ACCOUNT_NOT_ACTIVE",
                "only an active account can be sent a reset link".into(),
            ));
        }
        let mut tx = self.store().begin().await?;
        // Sent by the desk: exempt from the minimum age (SECURITY 15).
        let token = self
            .issue_link(&mut tx, &account, LinkPurpose::PasswordReset, true, now)
            .await?;
        audit_and_mail(
            &mut tx,
            now,
            &actor,
            &account,
            Notice {
                action: "SEND_PASSWORD_RESET",
                details: serde_json::json!({}),
                template: EmailTemplate::PasswordReset,
                extra: &[("token", token.as_str())],
            },
        )
        .await?;
        store::commit(tx).await?;
        Ok(pb::SendPasswordResetResponse {})
    }
}

/// The first password of a registration and the field it came in: `new_password` (the name
/// every password-setting RPC shares) or `password` (API v1's name), or both when equal.
fn registration_password(
    req: &pb::CompleteRegistrationRequest,
) -> Result<(&'static str, &str), IdentityError> {
    match (req.new_password.is_empty(), req.password.is_empty()) {
        (false, true) => Ok(("new_password", &req.new_password)),
        (true, _) => Ok(("password", &req.password)),
        (false, false) if req.new_password == req.password => {
            Ok(("new_password", &req.new_password))
        }
        (false, false) => Err(IdentityError::invalid_field(
            "new_password",
            "differs from password; set only one of the two",
        )),
    }
}
