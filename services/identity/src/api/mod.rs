//! gRPC handlers: decode, authorise, call the domain and the stores, map errors once.
//!
//! Permissions are checked before anything is looked up, so a caller without the right
//! cannot tell an existing account from a missing one (no probing). Every change commits with
//! its audit event and its outbox mail in one transaction; changes that end sessions end them
//! in Redis before that transaction commits, so a failure there rolls the change back rather
//! than leaving sessions alive behind a committed change.

mod accounts;
pub mod convert;
mod error;
mod federated;
mod passwords;
mod second_factor;
mod signin;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_auth::{Permission, Principal, Role, TokenIssuer};
use cqrs_outbox::OutboxMessage;
use cqrs_proto::identity::v1::{self as pb, identity_service_server::IdentityService};
use cqrs_proto::notifications::v1::EmailTemplate;
use cqrs_redis::RedisConnection;
use cqrs_runtime::audit::{Actor, Event};
use cqrs_runtime::server::RequestDeadline;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub(crate) use accounts::Inserted;
use cqrs_edge::rate_limit::RateLimits;
use cqrs_edge::request::{id_field, principal};
use cqrs_edge::scope;
pub use error::{BAD_CREDENTIALS_MESSAGE, DOMAIN, IdentityError, IdentityReason};

use crate::clock::Clock;
use crate::config::IdentityConfig;
use crate::directory::DirectoryClient;
use crate::domain::account::Realm;
use crate::domain::email::normalise_email;
use crate::domain::user_id::normalise_user_id;
use crate::hashing::PasswordHasher;
use crate::store::lockout::LockoutStore;
use crate::store::sessions::SessionStore;
use crate::store::{self, AccountRow, Store, Tx, accounts as account_store};

/// Longest password accepted at all. Anything longer is checked as a wrong password (sign-in)
/// or refused by the policy (new passwords), so request size never turns into hashing work.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest login, e-mail or free-text field looked at.
const MAX_FIELD_BYTES: usize = 320;

type ApiResult<T> = Result<Response<T>, Status>;

/// The identity service's gRPC API. Cheap to clone.
#[derive(Clone)]
pub struct IdentityApi {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<IdentityConfig>,
    store: Store,
    lockout: LockoutStore,
    sessions: SessionStore,
    hasher: PasswordHasher,
    issuer: TokenIssuer,
    directory: DirectoryClient,
    clock: Arc<dyn Clock>,
    limits: RateLimits,
}

impl IdentityApi {
    /// The API over `store` and the Redis behind `redis` (keys under the configured
    /// namespace), signing with the configured key.
    pub fn new(
        config: Arc<IdentityConfig>,
        store: Store,
        redis: RedisConnection,
        session_check: Arc<cqrs_auth::CachedSessionCheck>,
        hasher: PasswordHasher,
        directory: DirectoryClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let namespace = config.redis_namespace.clone();
        let issuer = TokenIssuer::new(config.signing_key.clone(), config.access_token_ttl);
        IdentityApi {
            inner: Arc::new(Inner {
                lockout: LockoutStore::new(redis.clone(), namespace.clone()),
                sessions: SessionStore::new(
                    redis,
                    namespace,
                    config.session_idle_ttl,
                    config.session_absolute_ttl,
                )
                .with_local_check(session_check),
                store,
                hasher,
                issuer,
                directory,
                clock,
                limits: RateLimits::new(config.rate_limits),
                config,
            }),
        }
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.inner.hasher
    }

    /// Draws on the rate limits of a public RPC that checks a secret or mails `mailed`.
    fn limit<T>(&self, request: &Request<T>, mailed: Option<&str>) -> Result<(), Status> {
        self.inner
            .limits
            .check(request, mailed)
            .map_err(|limited| IdentityError::from(limited).into())
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// The service's clock (tests move it).
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.inner.clock)
    }

    fn config(&self) -> &IdentityConfig {
        &self.inner.config
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn directory(&self) -> &DirectoryClient {
        &self.inner.directory
    }

    /// The account a login names: a User ID finds a NATIONAL account, an e-mail address a
    /// LOCAL one. Anything else names nobody.
    async fn find_login(&self, login: &str) -> Result<Option<AccountRow>, IdentityError> {
        if login.len() > MAX_FIELD_BYTES {
            return Ok(None);
        }
        // Waiting for a connection and the query are boxed: sqlx's futures for them are large
        // (~14 KiB each in a release build). Held inline, they would make every sign-in's
        // future that large for its whole life, although most of it is spent waiting for a
        // place in the hashing pool; in a flood that is a lot of memory for nothing.
        let mut conn = Box::pin(self.store().pool().acquire())
            .await
            .map_err(store::StoreError::from)?;
        let conn = &mut *conn;
        if let Some(user_id) = normalise_user_id(login) {
            return Ok(Box::pin(account_store::account_by_user_id(conn, &user_id)).await?);
        }
        match normalise_email(login) {
            Ok(email) => {
                Ok(Box::pin(account_store::account_by_email(conn, Realm::Local, &email)).await?)
            }
            Err(_) => Ok(None),
        }
    }

    /// Accounts as callers see them, each with its temporary lock (if any) read from the
    /// lock-out store in one round trip. An account locked for good needs no read: its row
    /// says so.
    async fn account_views(&self, rows: &[AccountRow]) -> Result<Vec<pb::Account>, IdentityError> {
        let ids: Vec<Uuid> = rows
            .iter()
            .filter(|row| row.locked_at.is_none())
            .map(|row| row.id)
            .collect();
        let mut ends = self
            .inner
            .lockout
            .locked_until_many(&ids, self.now())
            .await?
            .into_iter();
        Ok(rows
            .iter()
            .map(|row| {
                let until = if row.locked_at.is_none() {
                    ends.next().flatten()
                } else {
                    None
                };
                convert::account_with_lock(row, until.and_then(DateTime::from_timestamp_millis))
            })
            .collect())
    }

    async fn account_view(&self, row: &AccountRow) -> Result<pb::Account, IdentityError> {
        let mut views = self.account_views(std::slice::from_ref(row)).await?;
        views.pop().ok_or(IdentityError::NotFound("account"))
    }

    async fn load(&self, id: Uuid) -> Result<AccountRow, IdentityError> {
        account_store::account(self.store().pool(), id)
            .await?
            .ok_or(IdentityError::NotFound("account"))
    }

    /// Ends every session of the account inside `tx`'s unit of work: done before the commit,
    /// so a Redis failure aborts the change instead of leaving sessions behind it.
    async fn end_sessions_before_commit(
        &self,
        tx: Tx,
        account_id: Uuid,
    ) -> Result<u32, IdentityError> {
        let ended = match self.inner.sessions.end_all(account_id).await {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e.into());
            }
        };
        store::commit(tx).await?;
        // A sign-in that raced the commit with the old state may have started a session in
        // between; one more sweep catches it. Best effort: the change is already committed.
        if let Err(e) = self.inner.sessions.end_all(account_id).await {
            tracing::warn!(account_id = %account_id, error = %e, "second session sweep failed");
        }
        Ok(ended)
    }
}

/// A mail to the account's owner.
fn mail(template: EmailTemplate, account: &AccountRow, extra: &[(&str, &str)]) -> OutboxMessage {
    let mut params = BTreeMap::new();
    params.insert("first_name".to_owned(), account.first_name.clone());
    for (k, v) in extra {
        params.insert((*k).to_owned(), (*v).to_owned());
    }
    OutboxMessage::Email {
        template,
        to: account.email.clone(),
        params,
        account_id: Some(account.id),
    }
}

/// A change to an account that its owner is told of: the audit action (and its details) and
/// the mail.
struct Notice<'a> {
    action: &'a str,
    details: serde_json::Value,
    template: EmailTemplate,
    /// Mail parameters besides the owner's first name.
    extra: &'a [(&'a str, &'a str)],
}

/// Records `notice.action` as a success on `account` and mails its owner, both on the
/// change's transaction, so the change, its audit event and its mail commit together.
async fn audit_and_mail(
    conn: &mut sqlx::PgConnection,
    now: chrono::DateTime<chrono::Utc>,
    actor: &Actor,
    account: &AccountRow,
    notice: Notice<'_>,
) -> Result<(), IdentityError> {
    let Notice {
        action,
        details,
        template,
        extra,
    } = notice;
    let id = account.id.to_string();
    store::record(
        conn,
        now,
        actor,
        account_event(action, &id, "success", details),
    )
    .await?;
    store::enqueue(conn, &mail(template, account, extra)).await?;
    Ok(())
}

/// An audit event about an account.
fn account_event<'a>(
    action: &'a str,
    target_id: &'a str,
    outcome: &'a str,
    details: serde_json::Value,
) -> Event<'a> {
    Event {
        changes: cqrs_runtime::audit::Changes::new(),
        action,
        target_type: "account",
        target_id,
        outcome,
        details,
    }
}

fn is_service_desk(principal: &Principal) -> bool {
    principal.active_role() == Some(Role::ServiceDesk)
}

/// Internal callers (service tokens) or a user acting as the service desk.
fn require_internal_or_desk(principal: &Principal) -> Result<(), IdentityError> {
    if principal.is_service() || is_service_desk(principal) {
        Ok(())
    } else {
        Err(IdentityError::PermissionDenied(
            "INTERNAL_OR_SERVICE_DESK_REQUIRED",
        ))
    }
}

fn require_desk(principal: &Principal) -> Result<(), IdentityError> {
    if is_service_desk(principal) {
        Ok(())
    } else {
        Err(IdentityError::PermissionDenied("SERVICE_DESK_REQUIRED"))
    }
}

impl IdentityApi {
    /// A user acting through its active grant may use `permission` on the account `target`:
    /// the role must carry it (decided here, no I/O), and the grant must reach an
    /// organisation where `target` holds a grant (decided by the directory with the shared
    /// decision; it also refuses a grant revoked since the token was issued). Permission comes
    /// before existence: an unknown account is in nobody's scope, so it is refused the same
    /// way. The directory unreachable is UNAVAILABLE (fail closed). The directory call is
    /// bounded by `deadline`, the deadline of the request being served, when it is sooner than
    /// the configured timeout.
    async fn require_on_account(
        &self,
        principal: &Principal,
        permission: Permission,
        target: Uuid,
        deadline: Option<RequestDeadline>,
    ) -> Result<(), IdentityError> {
        let Principal::User {
            account_id, active, ..
        } = principal
        else {
            return Err(IdentityError::PermissionDenied("USER_PRINCIPAL_REQUIRED"));
        };
        let active = active.ok_or(IdentityError::PermissionDenied(scope::NO_ACTIVE_GRANT))?;
        if !cqrs_auth::role_grants(active.role, permission) {
            return Err(IdentityError::PermissionDenied(
                cqrs_auth::ROLE_LACKS_PERMISSION,
            ));
        }
        let (allowed, reason) = self
            .directory()
            .check_on_account(*account_id, active, permission, target, deadline)
            .await?;
        if allowed {
            return Ok(());
        }
        Err(IdentityError::PermissionDenied(scope::known_refusal(
            &reason,
        )))
    }
}

/// The signed-in user's account and session.
fn require_user(principal: &Principal) -> Result<(Uuid, String), IdentityError> {
    match principal {
        Principal::User {
            account_id,
            session_id,
            ..
        } => Ok((*account_id, session_id.clone())),
        Principal::Service { .. } => {
            Err(IdentityError::PermissionDenied("USER_PRINCIPAL_REQUIRED"))
        }
    }
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    async fn sign_in(&self, request: Request<pb::SignInRequest>) -> ApiResult<pb::SignInResponse> {
        self.limit(&request, None)?;
        Ok(Response::new(self.do_sign_in(request).await?))
    }

    async fn select_role(
        &self,
        request: Request<pb::SelectRoleRequest>,
    ) -> ApiResult<pb::SelectRoleResponse> {
        Ok(Response::new(self.do_select_role(request).await?))
    }

    async fn refresh_access_token(
        &self,
        request: Request<pb::RefreshAccessTokenRequest>,
    ) -> ApiResult<pb::RefreshAccessTokenResponse> {
        Ok(Response::new(self.do_refresh(request).await?))
    }

    async fn sign_out(
        &self,
        request: Request<pb::SignOutRequest>,
    ) -> ApiResult<pb::SignOutResponse> {
        Ok(Response::new(self.do_sign_out(request).await?))
    }

    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> ApiResult<pb::IssueServiceTokenResponse> {
        Ok(Response::new(self.do_issue_service_token(request).await?))
    }

    async fn get_signing_keys(
        &self,
        _request: Request<pb::GetSigningKeysRequest>,
    ) -> ApiResult<pb::GetSigningKeysResponse> {
        Ok(Response::new(pb::GetSigningKeysResponse {
            keys: self
                .config()
                .public_keys()
                .iter()
                .map(convert::jwk)
                .collect(),
        }))
    }

    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> ApiResult<pb::CreateAccountResponse> {
        Ok(Response::new(self.do_create_account(request).await?))
    }

    async fn complete_registration(
        &self,
        request: Request<pb::CompleteRegistrationRequest>,
    ) -> ApiResult<pb::CompleteRegistrationResponse> {
        Ok(Response::new(self.do_complete_registration(request).await?))
    }

    async fn list_identity_providers(
        &self,
        _request: Request<pb::ListIdentityProvidersRequest>,
    ) -> ApiResult<pb::ListIdentityProvidersResponse> {
        Ok(Response::new(self.do_list_identity_providers().await?))
    }

    async fn start_federated_sign_in(
        &self,
        request: Request<pb::StartFederatedSignInRequest>,
    ) -> ApiResult<pb::StartFederatedSignInResponse> {
        Ok(Response::new(
            self.do_start_federated_sign_in(request).await?,
        ))
    }

    async fn complete_federated_sign_in(
        &self,
        request: Request<pb::CompleteFederatedSignInRequest>,
    ) -> ApiResult<pb::CompleteFederatedSignInResponse> {
        Ok(Response::new(
            self.do_complete_federated_sign_in(request).await?,
        ))
    }

    async fn complete_sign_in(
        &self,
        request: Request<pb::CompleteSignInRequest>,
    ) -> ApiResult<pb::CompleteSignInResponse> {
        self.limit(&request, None)?;
        Ok(Response::new(self.do_complete_sign_in(request).await?))
    }

    async fn start_totp_enrolment(
        &self,
        request: Request<pb::StartTotpEnrolmentRequest>,
    ) -> ApiResult<pb::StartTotpEnrolmentResponse> {
        Ok(Response::new(self.do_start_totp_enrolment(request).await?))
    }

    async fn confirm_totp_enrolment(
        &self,
        request: Request<pb::ConfirmTotpEnrolmentRequest>,
    ) -> ApiResult<pb::ConfirmTotpEnrolmentResponse> {
        Ok(Response::new(
            self.do_confirm_totp_enrolment(request).await?,
        ))
    }

    async fn verify_second_factor(
        &self,
        request: Request<pb::VerifySecondFactorRequest>,
    ) -> ApiResult<pb::VerifySecondFactorResponse> {
        Ok(Response::new(self.do_verify_second_factor(request).await?))
    }

    async fn remove_second_factor(
        &self,
        request: Request<pb::RemoveSecondFactorRequest>,
    ) -> ApiResult<pb::RemoveSecondFactorResponse> {
        Ok(Response::new(self.do_remove_second_factor(request).await?))
    }

    async fn get_link(
        &self,
        request: Request<pb::GetLinkRequest>,
    ) -> ApiResult<pb::GetLinkResponse> {
        Ok(Response::new(self.do_get_link(request).await?))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> ApiResult<pb::ChangePasswordResponse> {
        Ok(Response::new(self.do_change_password(request).await?))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> ApiResult<pb::RequestPasswordResetResponse> {
        self.limit(&request, Some(&request.get_ref().login))?;
        let started = tokio::time::Instant::now();
        let answer = self.do_request_password_reset(request).await;
        let answer = self.inner.limits.answer_no_sooner(started, answer).await;
        Ok(Response::new(answer?))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> ApiResult<pb::ResetPasswordResponse> {
        Ok(Response::new(self.do_reset_password(request).await?))
    }

    async fn remind_user_id(
        &self,
        request: Request<pb::RemindUserIdRequest>,
    ) -> ApiResult<pb::RemindUserIdResponse> {
        self.limit(&request, Some(&request.get_ref().email))?;
        let started = tokio::time::Instant::now();
        let answer = self.do_remind_user_id(request).await;
        let answer = self.inner.limits.answer_no_sooner(started, answer).await;
        Ok(Response::new(answer?))
    }

    async fn send_password_reset(
        &self,
        request: Request<pb::SendPasswordResetRequest>,
    ) -> ApiResult<pb::SendPasswordResetResponse> {
        Ok(Response::new(self.do_send_password_reset(request).await?))
    }

    async fn unlock_account(
        &self,
        request: Request<pb::UnlockAccountRequest>,
    ) -> ApiResult<pb::UnlockAccountResponse> {
        Ok(Response::new(self.do_unlock_account(request).await?))
    }

    async fn disable_account(
        &self,
        request: Request<pb::DisableAccountRequest>,
    ) -> ApiResult<pb::DisableAccountResponse> {
        Ok(Response::new(self.do_disable_account(request).await?))
    }

    async fn enable_account(
        &self,
        request: Request<pb::EnableAccountRequest>,
    ) -> ApiResult<pb::EnableAccountResponse> {
        Ok(Response::new(self.do_enable_account(request).await?))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> ApiResult<pb::GetAccountResponse> {
        Ok(Response::new(self.do_get_account(request).await?))
    }

    async fn lookup_account(
        &self,
        request: Request<pb::LookupAccountRequest>,
    ) -> ApiResult<pb::LookupAccountResponse> {
        Ok(Response::new(self.do_lookup_account(request).await?))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> ApiResult<pb::ListAccountsResponse> {
        Ok(Response::new(self.do_list_accounts(request).await?))
    }

    async fn end_sessions(
        &self,
        request: Request<pb::EndSessionsRequest>,
    ) -> ApiResult<pb::EndSessionsResponse> {
        Ok(Response::new(self.do_end_sessions(request).await?))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> ApiResult<pb::ListAuditEventsResponse> {
        Ok(Response::new(self.do_list_audit_events(request).await?))
    }
}

/// Writes one audit event on its own (outcomes that change nothing else), batched with
/// others so that a flood of refused sign-ins does not cost one commit each.
async fn audit_alone(
    store: &Store,
    now: DateTime<Utc>,
    actor: &Actor,
    event: Event<'_>,
) -> Result<(), IdentityError> {
    Ok(store.record_alone(now, actor, event).await?)
}
