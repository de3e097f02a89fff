//! Account administration: create, lock and state changes, reads, session ends and the audit
//! trail.

use chrono::{DateTime, Utc};
use cqrs_auth::Permission;
use cqrs_edge::audit::{self, AuditQuery};
use cqrs_proto::identity::v1 as pb;
use cqrs_proto::notifications::v1::EmailTemplate;
use cqrs_runtime::audit::Actor;
use cqrs_runtime::errors::FieldViolations;
use cqrs_runtime::idempotency::fingerprint;
use cqrs_runtime::paging::page_request;
use cqrs_runtime::server::request_deadline;
use tonic::Request;
use uuid::Uuid;

use super::signin::is_self;
use super::{
    IdentityApi, IdentityError, account_event, audit_alone, convert, id_field, is_service_desk,
    mail, principal, require_desk, require_internal_or_desk,
};
use crate::domain::account::{AccountState, Realm, normalise_name};
use crate::domain::email::normalise_email;
use crate::domain::links::LinkPurpose;
use crate::domain::user_id::{candidate_user_id, normalise_user_id, random_user_id};
use crate::store::accounts::Created;
use crate::store::{self, AccountFilter, AccountRow, NewAccount, accounts as account_store};

/// Advisory-lock key for the bootstrap ("idboot" in ASCII), so replicas starting together
/// create the first account once.
const BOOTSTRAP_LOCK_KEY: i64 = 0x6964_626f_6f74;
/// Draws of an initials-based User ID before falling back to random letters.
const INITIALS_ATTEMPTS: usize = 10;
/// Longest DisableAccount reason kept in the audit trail.
const MAX_REASON_LEN: usize = 500;

pub(crate) enum Inserted {
    Created(Box<AccountRow>),
    /// A parallel request with the same request id committed first.
    Retry,
    /// Bootstrap only: accounts already exist.
    Skipped,
}

/// The request's fingerprint for idempotent retries (shared rule: `cqrs_runtime::idempotency`).
fn request_hash(realm: Realm, email: &str, first: &str, last: &str) -> [u8; 32] {
    fingerprint(&[realm.as_str(), email, first, last])
}

impl IdentityApi {
    /// Creates a PENDING_REGISTRATION account with its registration link, mail and audit event
    /// in one transaction. With `only_if_empty` (bootstrap) it holds an advisory lock and does
    /// nothing if any account exists.
    pub(crate) async fn insert_account(
        &self,
        new: &NewAccount<'_>,
        actor: &Actor,
        now: DateTime<Utc>,
        only_if_empty: bool,
    ) -> Result<Inserted, IdentityError> {
        let mut tx = self.store().begin().await?;
        if only_if_empty {
            account_store::advisory_lock(&mut tx, BOOTSTRAP_LOCK_KEY).await?;
            if !account_store::is_empty(&mut tx).await? {
                return Ok(Inserted::Skipped);
            }
        }
        let mut draws = 0usize;
        let (first, last) = (new.first_name, new.last_name);
        let next_user_id = move || {
            draws += 1;
            let mut rng = rand::rng();
            if draws <= INITIALS_ATTEMPTS {
                candidate_user_id(first, last, &mut rng)
            } else {
                random_user_id(&mut rng)
            }
        };
        let row = match account_store::insert(&mut tx, new, next_user_id, now).await? {
            Created::New(row) => *row,
            Created::Retry(_) => return Ok(Inserted::Retry),
        };
        if only_if_empty {
            account_store::insert_bootstrap_grant(&mut tx, row.id, now).await?;
        }
        let token = self
            .issue_link(&mut tx, &row, LinkPurpose::Registration, false, now)
            .await?;
        let mut params = vec![("token", token.as_str())];
        if let Some(user_id) = &row.user_id {
            params.push(("user_id", user_id.as_str()));
        }
        store::enqueue(
            &mut tx,
            &mail(EmailTemplate::RegistrationLink, &row, &params),
        )
        .await?;
        store::record(
            &mut tx,
            now,
            actor,
            account_event(
                "CREATE_ACCOUNT",
                &row.id.to_string(),
                "success",
                serde_json::json!({
                    "realm": row.realm,
                    "user_id": row.user_id,
                    "bootstrap": only_if_empty,
                }),
            ),
        )
        .await?;
        store::commit(tx).await?;
        tracing::info!(account_id = %row.id, realm = %row.realm, "account created");
        Ok(Inserted::Created(Box::new(row)))
    }

    pub(super) async fn do_create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<pb::CreateAccountResponse, IdentityError> {
        let principal = principal(&request)?;
        require_internal_or_desk(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let req = request.into_inner();

        let mut violations = FieldViolations::new();
        let mut reason = "INVALID_ARGUMENT";
        let request_id = violations.uuid("request_id", &req.request_id);
        let realm = match convert::realm_from_proto(req.realm) {
            Ok(Some(realm)) => Some(realm),
            Ok(None) => {
                violations.add("realm", "is required");
                None
            }
            Err(convert::UnknownValue) => {
                violations.add("realm", "must be a known Realm");
                None
            }
        };
        let email = match normalise_email(&req.email) {
            Ok(email) if self.config().generic_mailboxes.is_generic(&email) => {
                reason = "GENERIC_EMAIL_NOT_PERMITTED";
                violations.add(
                    "email",
                    "GENERIC_EMAIL_NOT_PERMITTED: generic or shared mailboxes are not \
                     permitted; use the person's own address",
                );
                None
            }
            Ok(email) => Some(email),
            Err(e) => {
                violations.add("email", e.to_string());
                None
            }
        };
        let mut name = |field: &str, raw: &str| match normalise_name(raw) {
            Ok(name) => Some(name),
            Err(e) => {
                violations.add(field, e);
                None
            }
        };
        let first_name = name("first_name", &req.first_name);
        let last_name = name("last_name", &req.last_name);
        let (Some(request_id), Some(realm), Some(email), Some(first_name), Some(last_name)) =
            (request_id, realm, email, first_name, last_name)
        else {
            return Err(IdentityError::InvalidArgument { reason, violations });
        };

        let hash = request_hash(realm, &email, &first_name, &last_name);
        let new = NewAccount {
            realm,
            email: &email,
            first_name: &first_name,
            last_name: &last_name,
            request: Some((request_id, hash)),
        };
        let now = self.now();
        let pool = self.store().pool();
        // A parallel retry waits on the request id, then finds the first answer on the next
        // round; two rounds always suffice, the third is a safety margin.
        for _ in 0..3 {
            if let Some(account_id) =
                account_store::earlier_request(pool, request_id, &hash).await?
            {
                let account = self.load(account_id).await?;
                return Ok(pb::CreateAccountResponse {
                    account: Some(convert::account(&account)),
                });
            }
            match self.insert_account(&new, &actor, now, false).await? {
                Inserted::Created(row) => {
                    return Ok(pb::CreateAccountResponse {
                        account: Some(convert::account(&row)),
                    });
                }
                Inserted::Retry | Inserted::Skipped => {}
            }
        }
        Err(IdentityError::internal(std::io::Error::other(
            "request id still contended after retries",
        )))
    }

    pub(super) async fn do_unlock_account(
        &self,
        request: Request<pb::UnlockAccountRequest>,
    ) -> Result<pb::UnlockAccountResponse, IdentityError> {
        let principal = principal(&request)?;
        require_desk(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let account_id = id_field("account_id", &request.get_ref().account_id)?;
        let now = self.now();
        let inner = &self.inner;

        let mut tx = self.store().begin().await?;
        let current = account_store::account_for_update(&mut tx, account_id)
            .await?
            .ok_or(IdentityError::NotFound("account"))?;
        let failures = inner.lockout.failures(account_id).await?;
        let was_locked =
            current.locked_at.is_some() || failures >= self.config().lockout.temporary_after;
        let updated = account_store::unlock(&mut tx, account_id, now)
            .await?
            .ok_or(IdentityError::NotFound("account"))?;
        store::record(
            &mut tx,
            now,
            &actor,
            account_event(
                "UNLOCK_ACCOUNT",
                &account_id.to_string(),
                "success",
                serde_json::json!({ "was_locked": was_locked, "failures": failures }),
            ),
        )
        .await?;
        if was_locked {
            store::enqueue(
                &mut tx,
                &mail(EmailTemplate::AccountUnlocked, &updated, &[]),
            )
            .await?;
        }
        // Redis first: if it fails the Postgres lock stays, and Postgres is what sign-in
        // trusts, so the account is never half unlocked in the dangerous direction.
        if let Err(e) = inner.lockout.clear(account_id).await {
            let _ = tx.rollback().await;
            return Err(e.into());
        }
        store::commit(tx).await?;
        Ok(pb::UnlockAccountResponse {
            account: Some(convert::account(&updated)),
        })
    }

    pub(super) async fn do_disable_account(
        &self,
        request: Request<pb::DisableAccountRequest>,
    ) -> Result<pb::DisableAccountResponse, IdentityError> {
        let principal = principal(&request)?;
        let actor = Actor::from_request(&request, &principal);
        let deadline = request_deadline(&request);
        let req = request.get_ref();
        let mut violations = FieldViolations::new();
        let account_id = violations.uuid("account_id", &req.account_id);
        violations.check(
            req.reason.chars().count() <= MAX_REASON_LEN,
            "reason",
            "must be at most 500 characters",
        );
        violations.check(
            !req.reason.chars().any(char::is_control),
            "reason",
            "must not contain control characters",
        );
        let (Some(account_id), true) = (account_id, violations.is_empty()) else {
            return Err(IdentityError::invalid(violations));
        };
        if !(is_self(&principal, account_id) || principal.is_service()) {
            self.require_on_account(&principal, Permission::DisableAccount, account_id, deadline)
                .await?;
        }
        let reason = req.reason.trim().to_owned();
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let Some(updated) = account_store::set_state(
            &mut tx,
            account_id,
            AccountState::Active,
            AccountState::Disabled,
            now,
        )
        .await?
        else {
            return Err(self.state_refusal(account_id, "ACCOUNT_NOT_ACTIVE").await);
        };
        store::record(
            &mut tx,
            now,
            &actor,
            account_event(
                "DISABLE_ACCOUNT",
                &account_id.to_string(),
                "success",
                serde_json::json!({ "reason": reason }),
            ),
        )
        .await?;
        store::enqueue(
            &mut tx,
            &mail(EmailTemplate::AccountDisabled, &updated, &[]),
        )
        .await?;
        self.end_sessions_before_commit(tx, account_id).await?;
        Ok(pb::DisableAccountResponse {
            account: Some(convert::account(&updated)),
        })
    }

    pub(super) async fn do_enable_account(
        &self,
        request: Request<pb::EnableAccountRequest>,
    ) -> Result<pb::EnableAccountResponse, IdentityError> {
        let principal = principal(&request)?;
        let deadline = request_deadline(&request);
        let account_id = id_field("account_id", &request.get_ref().account_id)?;
        // The service desk's scope is the whole suite: no need to ask the directory.
        if !(principal.is_service() || is_service_desk(&principal)) {
            self.require_on_account(&principal, Permission::EnableAccount, account_id, deadline)
                .await?;
        }
        let actor = Actor::from_request(&request, &principal);
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let Some(updated) = account_store::set_state(
            &mut tx,
            account_id,
            AccountState::Disabled,
            AccountState::Active,
            now,
        )
        .await?
        else {
            return Err(self.state_refusal(account_id, "ACCOUNT_NOT_DISABLED").await);
        };
        store::record(
            &mut tx,
            now,
            &actor,
            account_event(
                "ENABLE_ACCOUNT",
                &account_id.to_string(),
                "success",
                serde_json::json!({}),
            ),
        )
        .await?;
        store::enqueue(&mut tx, &mail(EmailTemplate::AccountEnabled, &updated, &[])).await?;
        store::commit(tx).await?;
        Ok(pb::EnableAccountResponse {
            account: Some(convert::account(&updated)),
        })
    }

    /// Why a state change found nothing to change: a missing account, or one in another state.
    async fn state_refusal(&self, account_id: Uuid, reason: &'static str) -> IdentityError {
        match self.load(account_id).await {
            Ok(_) => IdentityError::FailedPrecondition(
                reason,
                "the account is not in a state that allows this".into(),
            ),
            Err(e) => e,
        }
    }

    pub(super) async fn do_get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<pb::GetAccountResponse, IdentityError> {
        let principal = principal(&request)?;
        let deadline = request_deadline(&request);
        let account_id = id_field("account_id", &request.get_ref().account_id)?;
        let unscoped = is_self(&principal, account_id)
            || principal.is_service()
            || is_service_desk(&principal);
        if !unscoped {
            // Commissioners see their scope; a practice manager sees its practice's users.
            let permission = match principal.active_role() {
                Some(role) if cqrs_auth::role_grants(role, Permission::ViewScope) => {
                    Permission::ViewScope
                }
                _ => Permission::ViewPracticeUsers,
            };
            self.require_on_account(&principal, permission, account_id, deadline)
                .await?;
        }
        let account = self.load(account_id).await?;
        Ok(pb::GetAccountResponse {
            account: Some(self.account_view(&account).await?),
        })
    }

    /// By User ID, or by address: an address may have an account in each realm, and then the
    /// NATIONAL one is returned.
    pub(super) async fn do_lookup_account(
        &self,
        request: Request<pb::LookupAccountRequest>,
    ) -> Result<pb::LookupAccountResponse, IdentityError> {
        let principal = principal(&request)?;
        require_internal_or_desk(&principal)?;
        let pool = self.store().pool();
        let found = match &request.get_ref().key {
            Some(pb::lookup_account_request::Key::Email(raw)) => {
                let email = normalise_email(raw)
                    .map_err(|e| IdentityError::invalid_field("email", &e.to_string()))?;
                match account_store::account_by_email(pool, Realm::National, &email).await? {
                    Some(account) => Some(account),
                    None => account_store::account_by_email(pool, Realm::Local, &email).await?,
                }
            }
            Some(pb::lookup_account_request::Key::UserId(raw)) => {
                let user_id = normalise_user_id(raw).ok_or_else(|| {
                    IdentityError::invalid_field(
                        "user_id",
                        "must be three letters followed by three digits",
                    )
                })?;
                account_store::account_by_user_id(pool, &user_id).await?
            }
            None => {
                return Err(IdentityError::invalid_field(
                    "key",
                    "one of email or user_id is required",
                ));
            }
        };
        let account = found.ok_or(IdentityError::NotFound("account"))?;
        Ok(pb::LookupAccountResponse {
            account: Some(self.account_view(&account).await?),
        })
    }

    pub(super) async fn do_list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<pb::ListAccountsResponse, IdentityError> {
        let principal = principal(&request)?;
        require_internal_or_desk(&principal)?;
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let realm = convert::realm_from_proto(req.realm).unwrap_or_else(|convert::UnknownValue| {
            violations.add("realm", "must be a known Realm");
            None
        });
        let state = convert::state_from_proto(req.state).unwrap_or_else(|convert::UnknownValue| {
            violations.add("state", "must be a known AccountState");
            None
        });
        let query = req.query.trim();
        violations.check(
            query.chars().count() <= 100,
            "query",
            "must be at most 100 characters",
        );
        violations.check(
            req.account_ids.len() <= 100,
            "account_ids",
            "must list at most 100 ids",
        );
        let mut ids = Vec::with_capacity(req.account_ids.len());
        for (i, raw) in req.account_ids.iter().enumerate() {
            if let Some(id) = violations.uuid(&format!("account_ids[{i}]"), raw) {
                ids.push(id);
            }
        }
        let (page_size, after) = page_request(&mut violations, req.page_size, &req.page_token);
        violations.into_result().map_err(IdentityError::invalid)?;
        let filter = AccountFilter {
            realm,
            state,
            query: (!query.is_empty()).then(|| query.to_owned()),
            ids: (!ids.is_empty()).then_some(ids),
        };
        let page =
            account_store::list(self.store().pool(), &filter, page_size, after.as_ref()).await?;
        Ok(pb::ListAccountsResponse {
            accounts: self.account_views(&page.items).await?,
            next_page_token: page.next_page_token(),
        })
    }

    pub(super) async fn do_end_sessions(
        &self,
        request: Request<pb::EndSessionsRequest>,
    ) -> Result<pb::EndSessionsResponse, IdentityError> {
        let principal = principal(&request)?;
        cqrs_edge::scope::internal_only(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let req = request.get_ref();
        let mut violations = FieldViolations::new();
        let account_id = violations.uuid("account_id", &req.account_id);
        let organisation_id = if req.organisation_id.is_empty() {
            None
        } else {
            violations.uuid("organisation_id", &req.organisation_id)
        };
        let role = convert::role_from_proto(req.role).unwrap_or_else(|convert::UnknownValue| {
            violations.add("role", "must be a known Role");
            None
        });
        let reason_ok = req.reason.len() <= 64
            && req
                .reason
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        violations.check(
            reason_ok,
            "reason",
            "must be UPPER_SNAKE, at most 64 characters",
        );
        let (Some(account_id), true) = (account_id, violations.is_empty()) else {
            return Err(IdentityError::invalid(violations));
        };
        let sessions = &self.inner.sessions;
        let ended = match (organisation_id, role) {
            (Some(org), Some(role)) => {
                sessions
                    .end_matching(account_id, Some(org), Some(role))
                    .await?
            }
            _ => sessions.end_all(account_id).await?,
        };
        audit_alone(
            self.store(),
            self.now(),
            &actor,
            account_event(
                "END_SESSIONS",
                &account_id.to_string(),
                "success",
                serde_json::json!({
                    "reason": req.reason,
                    "ended": ended,
                    "organisation_id": organisation_id,
                    "role": role.map(|r| r.as_str()),
                }),
            ),
        )
        .await?;
        Ok(pb::EndSessionsResponse {
            ended_count: i32::try_from(ended).unwrap_or(i32::MAX),
        })
    }

    pub(super) async fn do_list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<pb::ListAuditEventsResponse, IdentityError> {
        let principal = principal(&request)?;
        require_internal_or_desk(&principal)?;
        let query = AuditQuery::from(request.get_ref()).check()?;
        let (audit_events, next_page_token) = audit::page(self.store().pool(), &query).await?;
        Ok(pb::ListAuditEventsResponse {
            audit_events,
            next_page_token,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn request_fingerprints_separate_fields() {
        let a = request_hash(Realm::Local, "ab@x.org", "Ann", "Lee");
        assert_eq!(a, request_hash(Realm::Local, "ab@x.org", "Ann", "Lee"));
        assert_ne!(a, request_hash(Realm::National, "ab@x.org", "Ann", "Lee"));
        assert_ne!(a, request_hash(Realm::Local, "ab@x.org", "An", "nLee"));
    }
}
