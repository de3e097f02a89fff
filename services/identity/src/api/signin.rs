//! Sign-in, the lock-out gate every password check goes through, sessions and tokens.

use chrono::{DateTime, Utc};
use cqrs_auth::{ActiveGrant, Principal, SecondFactorCheck, SignInProof};
use cqrs_proto::directory::v1 as dir;
use cqrs_proto::identity::v1 as pb;
use cqrs_proto::notifications::v1::EmailTemplate;
use cqrs_runtime::audit::{Actor, Event};
use cqrs_runtime::clock::{Clock, SystemClock};
use cqrs_runtime::errors::FieldViolations;
use cqrs_runtime::server::{RequestDeadline, request_deadline};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Request;
use uuid::Uuid;

use super::{
    IdentityApi, IdentityError, IdentityReason, MAX_PASSWORD_BYTES, account_event, audit_alone,
    convert, mail, principal, require_user,
};
use crate::domain::account::AccountState;
use crate::domain::lockout::LockLevel;
use crate::domain::password::NormalisedPassword;
use crate::hashing::{HashError, Slot};
use crate::store::lockout::AttemptGate;
use crate::store::sessions::{CHALLENGE_TTL, SessionRecord};
use crate::store::{self, AccountRow, accounts as account_store};

/// `lock_reason` of a lock-out recorded by the sign-in path.
const LOCK_REASON_FAILURES: &str = "TOO_MANY_FAILED_ATTEMPTS";
/// Longest session token looked at; real ones are 76 characters (account id, dot, secret).
const MAX_SESSION_TOKEN_LEN: usize = 128;

/// What the lock-out gate let happen to one password check.
pub(super) enum Gate {
    /// Locked: no password was checked and the counter did not move.
    Locked,
    /// The password was checked; `failures` counts this attempt (counted before checking).
    Checked {
        matched: bool,
        failures: u32,
        permanent_reached: bool,
    },
}

/// A presented password, bounded before any work is done on it.
pub(super) struct Presented {
    pub password: NormalisedPassword,
    /// Longer than anyone's password can be: checked like a wrong one, never normalised.
    pub oversized: bool,
}

impl Presented {
    pub fn new(raw: &str) -> Self {
        if raw.len() > MAX_PASSWORD_BYTES {
            Presented {
                password: NormalisedPassword::from_presented(""),
                oversized: true,
            }
        } else {
            Presented {
                password: NormalisedPassword::from_presented(raw),
                oversized: false,
            }
        }
    }
}

/// A refused password check, as [`IdentityApi::record_failure`] records it.
pub(super) struct Failure<'a> {
    /// The RPC's audit action, e.g. `SIGN_IN`.
    pub action: &'a str,
    /// Why, e.g. `wrong_password`, `locked`.
    pub reason: &'a str,
    /// The account's failure count after this one; `None` when the attempt was not counted
    /// (a locked account: no password was checked).
    pub failures: Option<u32>,
    /// Whether this failure reaches the permanent lock.
    pub lock_now: bool,
}

impl<'a> Failure<'a> {
    /// An attempt on a locked account: answered without a check, counted nowhere.
    pub fn locked(action: &'a str) -> Self {
        Failure {
            action,
            reason: "locked",
            failures: None,
            lock_now: false,
        }
    }
}

impl IdentityApi {
    /// Takes a place in the hashing pool for one password check before anything else about
    /// it is decided (SECURITY 10): a check refused for load is refused before the lock-out
    /// counts it, answers the same for locked, unlocked and unknown accounts, and is audited.
    pub(super) async fn reserve_check(
        &self,
        actor: &Actor,
        action: &str,
        account_id: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<Slot, IdentityError> {
        match self.inner.hasher.reserve().await {
            Ok(slot) => Ok(slot),
            Err(HashError::Busy) => {
                let target = account_id.map(|id| id.to_string()).unwrap_or_default();
                let details = serde_json::json!({ "reason": "busy" });
                audit_alone(
                    self.store(),
                    now,
                    actor,
                    account_event(action, &target, "failure", details),
                )
                .await?;
                Err(HashError::Busy.into())
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Checks a password of `account` through the lock-out (SECURITY 3-5) with a place taken
    /// in the hashing pool: a locked account checks nothing and answers as late as a check
    /// would; otherwise the attempt is counted first and then verified, so parallel attempts can
    /// never check more than the threshold.
    pub(super) async fn gated_verify(
        &self,
        slot: Slot,
        account: &AccountRow,
        presented: &Presented,
        now: DateTime<Utc>,
    ) -> Result<Gate, IdentityError> {
        let inner = &self.inner;
        if account.locked_at.is_some() {
            // Postgres holds the durable lock; restore its Redis mirror if Redis lost it. The
            // write goes on while the answer waits, so the place is let go as soon as its turn
            // comes rather than after a Redis round trip.
            let (waited, restored) = tokio::join!(
                slot.wait_like_verify(),
                inner.lockout.set_permanent(account.id)
            );
            restored?;
            waited?;
            return Ok(Gate::Locked);
        }
        match inner
            .lockout
            .begin_attempt(account.id, &self.config().lockout, now)
            .await?
        {
            AttemptGate::Locked { .. } => {
                slot.wait_like_verify().await?;
                Ok(Gate::Locked)
            }
            AttemptGate::Proceed {
                failures,
                permanent_reached,
            } => {
                let matched = match (&account.password_hash, presented.oversized) {
                    (Some(phc), false) => slot.verify(&presented.password, phc).await?,
                    _ => {
                        slot.verify_dummy(&presented.password).await?;
                        false
                    }
                };
                Ok(Gate::Checked {
                    matched,
                    failures,
                    permanent_reached,
                })
            }
        }
    }

    /// Records a refused password check, and the lock it causes: a permanent lock is written
    /// to Postgres with its audit event and the owner's mail, mirrored in Redis, and ends the
    /// account's sessions; a temporary lock ends them too (DESIGN §2: a lock ends sessions).
    pub(super) async fn record_failure(
        &self,
        account: &AccountRow,
        actor: &Actor,
        failure: Failure<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        let Failure {
            action,
            reason,
            failures,
            lock_now,
        } = failure;
        let id = account.id.to_string();
        let mut details = serde_json::json!({ "reason": reason });
        if let Some(failures) = failures {
            details["failures"] = failures.into();
        }
        let event = account_event(action, &id, "failure", details);
        if !lock_now {
            let level = failures.map_or(LockLevel::None, |n| self.config().lockout.lock_after(n));
            let LockLevel::Temporary(wait) = level else {
                audit_alone(self.store(), now, actor, event).await?;
                if level == LockLevel::Permanent {
                    self.inner.sessions.end_all(account.id).await?;
                }
                return Ok(());
            };
            // This failure started a temporary lock. While it lasts no attempt is counted, so
            // no other failure starts one: the owner gets one mail per lock, whoever floods.
            crate::metrics::locked("temporary");
            let minutes = wait.as_secs().div_ceil(60).max(1).to_string();
            let mut tx = self.store().begin().await?;
            store::record(&mut tx, now, actor, event).await?;
            store::enqueue(
                &mut tx,
                &mail(
                    EmailTemplate::AccountLocked,
                    account,
                    &[("minutes", &minutes)],
                ),
            )
            .await?;
            self.end_sessions_before_commit(tx, account.id).await?;
            return Ok(());
        }
        let mut tx = self.store().begin().await?;
        store::record(&mut tx, now, actor, event).await?;
        if let Some(locked) =
            account_store::lock(&mut tx, account.id, LOCK_REASON_FAILURES, now).await?
        {
            store::record(
                &mut tx,
                now,
                &Actor::system("lockout"),
                account_event(
                    "LOCK_ACCOUNT",
                    &id,
                    "success",
                    serde_json::json!({ "reason": LOCK_REASON_FAILURES }),
                ),
            )
            .await?;
            store::enqueue(&mut tx, &mail(EmailTemplate::AccountLocked, &locked, &[])).await?;
            crate::metrics::locked("permanent");
            tracing::info!(account_id = %account.id, "account locked permanently");
        }
        self.end_sessions_before_commit(tx, account.id).await?;
        self.inner.lockout.set_permanent(account.id).await?;
        Ok(())
    }

    pub(super) async fn do_sign_in(
        &self,
        request: Request<pb::SignInRequest>,
    ) -> Result<pb::SignInResponse, IdentityError> {
        let actor = Actor::anonymous(&request);
        let deadline = request_deadline(&request);
        let req = request.into_inner();
        let presented = Presented::new(&req.password);
        let now = self.now();
        let inner = &self.inner;

        let account = self.find_login(&req.login).await?;
        let slot = self
            .reserve_check(&actor, "SIGN_IN", account.as_ref().map(|a| a.id), now)
            .await?;
        let Some(account) = account else {
            // Redis must be asked for unknown logins too, or an outage would answer them
            // differently from known ones. A read only: unknown logins leave no state.
            inner.lockout.failures(Uuid::nil()).await?;
            slot.verify_dummy(&presented.password).await?;
            audit_alone(
                self.store(),
                now,
                &actor,
                Event {
                    changes: cqrs_runtime::audit::Changes::new(),
                    action: "SIGN_IN",
                    target_type: "account",
                    target_id: "",
                    outcome: "failure",
                    details: serde_json::json!({ "reason": "unknown_login" }),
                },
            )
            .await?;
            return Err(IdentityError::from(IdentityReason::BadCredentials));
        };

        let (matched, failures, permanent_reached) = match self
            .gated_verify(slot, &account, &presented, now)
            .await?
        {
            Gate::Locked => {
                Box::pin(self.record_failure(&account, &actor, Failure::locked("SIGN_IN"), now))
                    .await?;
                return Err(IdentityError::from(IdentityReason::BadCredentials));
            }
            Gate::Checked {
                matched,
                failures,
                permanent_reached,
            } => (matched, failures, permanent_reached),
        };

        // The paths past the check are boxed: the future of every sign-in in flight is as
        // large as its deepest await, and most of a flood waits before the check.
        if matched && account.is_active() {
            Box::pin(self.upgrade_hash(&account, &presented)).await;
            if account.second_factor_at.is_some() {
                return Box::pin(self.challenge(&account, &actor, now)).await;
            }
            return Box::pin(self.start_session(&account, &actor, now, deadline, &["pwd"], None))
                .await;
        }
        // A right password on a disabled or pending account is still a refusal, answered like
        // a wrong one; it stays counted, as the attempt was counted before the check.
        let reason = match (matched, account.state()) {
            (false, _) => "wrong_password",
            (true, Some(AccountState::Disabled)) => "disabled",
            (true, _) => "pending_registration",
        };
        let failure = Failure {
            action: "SIGN_IN",
            reason,
            failures: Some(failures),
            lock_now: permanent_reached && !matched,
        };
        Box::pin(self.record_failure(&account, &actor, failure, now)).await?;
        Err(IdentityError::from(IdentityReason::BadCredentials))
    }

    /// Re-hashes a password stored with older argon2 settings, now that it is known to be
    /// right, so raised settings reach every account over time. Best effort: a failure only
    /// means the old (still valid) hash stays.
    async fn upgrade_hash(&self, account: &AccountRow, presented: &Presented) {
        let Some(old) = &account.password_hash else {
            return;
        };
        if !self.inner.hasher.needs_rehash(old) {
            return;
        }
        let result = match self.inner.hasher.hash(&presented.password).await {
            Ok(new) => account_store::rehash(self.store().pool(), account.id, old, &new)
                .await
                .map_err(IdentityError::from),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            tracing::warn!(account_id = %account.id, error = %e, "password re-hash skipped");
        }
    }

    /// The right password of an account with a second factor: the attempt's count is taken
    /// back (only a right code resets the counter) and the code is asked for with a
    /// challenge. Nothing else about the account is told yet.
    async fn challenge(
        &self,
        account: &AccountRow,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<pb::SignInResponse, IdentityError> {
        let inner = &self.inner;
        inner.lockout.forgive_attempt(account.id).await?;
        let challenge_token = inner.sessions.create_challenge(account.id, "pwd").await?;
        audit_alone(
            self.store(),
            now,
            actor,
            account_event(
                "SIGN_IN_PASSWORD_ACCEPTED",
                &account.id.to_string(),
                "success",
                serde_json::json!({ "second_factor": "required" }),
            ),
        )
        .await?;
        let expires = now
            + chrono::TimeDelta::from_std(CHALLENGE_TTL).unwrap_or(chrono::TimeDelta::minutes(5));
        Ok(pb::SignInResponse {
            second_factor_required: true,
            challenge_token,
            challenge_expire_time: Some(convert::timestamp(expires)),
            ..Default::default()
        })
    }

    /// How `record`'s person signed in, as its tokens say: the methods, and the last
    /// second-factor check with the end of its step-up window.
    pub(super) fn proof_of(&self, record: &SessionRecord) -> SignInProof {
        let window = i64::try_from(self.config().step_up_window.as_secs()).unwrap_or(i64::MAX);
        SignInProof {
            methods: record.methods.clone(),
            second_factor: record.second_factor_at.map(|at| SecondFactorCheck {
                checked_at: at,
                fresh_until: at.saturating_add(window),
            }),
            display_name: record.display_name.clone(),
        }
    }

    /// An access token for `record`'s session, scoped to `active`.
    pub(super) fn token_for(
        &self,
        record: &SessionRecord,
        active: Option<&ActiveGrant>,
    ) -> Result<cqrs_auth::IssuedToken, IdentityError> {
        Ok(self.inner.issuer.issue_user_with(
            record.account_id,
            &record.session_id,
            active,
            &self.proof_of(record),
            token_time(),
        )?)
    }

    /// Starts a session for `account` signed in with `methods` (its second factor checked at
    /// `second_factor_at`, unix seconds, if it was) and answers the sign-in; `deadline` (the
    /// sign-in's own) bounds the directory call listing the grants.
    pub(super) async fn start_session(
        &self,
        account: &AccountRow,
        actor: &Actor,
        now: DateTime<Utc>,
        deadline: Option<RequestDeadline>,
        methods: &[&str],
        second_factor_at: Option<i64>,
    ) -> Result<pb::SignInResponse, IdentityError> {
        let inner = &self.inner;
        let display_name = format!("{} {}", account.first_name, account.last_name);
        let (session_token, record) = inner
            .sessions
            .create_with(
                account.id,
                now,
                methods,
                second_factor_at,
                display_name.trim(),
                Some(inner.lockout.success_command(account.id)),
            )
            .await?;
        let token = self.token_for(&record, None)?;
        audit_alone(
            self.store(),
            now,
            actor,
            account_event(
                "SIGN_IN",
                &account.id.to_string(),
                "success",
                serde_json::json!({ "methods": methods }),
            ),
        )
        .await?;
        // The grants are only a convenience for the role picker: the session and its token
        // carry no role, and SelectRole checks the grant with the directory again. Failing
        // closed here would stop every sign-in (service desk included) whenever the directory
        // is down, so the sign-in is answered without them; the client can list them later
        // (ListGrants) or retry SelectRole once the directory is back.
        let grants = match inner.directory.list_grants(account.id, deadline).await {
            Ok(grants) => grants,
            Err(e) => {
                tracing::warn!(account_id = %account.id, error = %e, "sign-in answered without grants: directory unavailable");
                Vec::new()
            }
        };
        let policy = &self.config().second_factor;
        // A session whose second factor was checked (an app, or a provider's MFA that counts)
        // satisfies the policy already.
        let second_factor_enrolment_required = second_factor_at.is_none()
            && account.second_factor_at.is_none()
            && grants.iter().any(|g| {
                convert::role_from_proto(g.role)
                    .ok()
                    .flatten()
                    .is_some_and(|role| policy.requires(role))
            });
        Ok(pb::SignInResponse {
            session_token,
            access_token: token.token,
            expires_at: Some(convert::timestamp(token.expires_at)),
            account: Some(convert::account(account)),
            grants,
            session: Some(convert::session(
                &record,
                self.config().session_idle_ttl,
                now,
            )),
            second_factor_enrolment_required,
            ..Default::default()
        })
    }

    /// Switches the caller's session to one of its grants. The grant is checked with the
    /// directory (fail closed: no answer, no switch), recorded on the session so refreshed
    /// tokens keep it, and checked once more after recording: a revocation committed before
    /// the second look is seen there, and one committed after it ends the session through
    /// EndSessions, which by then finds the active grant on it. Either way no session keeps
    /// a revoked grant.
    pub(super) async fn do_select_role(
        &self,
        request: Request<pb::SelectRoleRequest>,
    ) -> Result<pb::SelectRoleResponse, IdentityError> {
        let principal = principal(&request)?;
        let (account_id, session_id) = require_user(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let deadline = request_deadline(&request);
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let organisation_id = violations.uuid("organisation_id", &req.organisation_id);
        let role = match convert::role_from_proto(req.role) {
            Ok(Some(role)) => Some(role),
            Ok(None) => {
                violations.add("role", "is required");
                None
            }
            Err(convert::UnknownValue) => {
                violations.add("role", "must be a known Role");
                None
            }
        };
        violations.into_result().map_err(IdentityError::invalid)?;
        let (Some(organisation_id), Some(role)) = (organisation_id, role) else {
            return Err(IdentityError::invalid(FieldViolations::new()));
        };
        let wanted = ActiveGrant {
            organisation_id,
            role,
        };
        let inner = &self.inner;
        let now = self.now();
        let record = inner
            .sessions
            .get(account_id, &session_id)
            .await?
            .ok_or(IdentityError::from(IdentityReason::SessionEnded))?;
        // The policy: a role that needs a second factor is used only by a session whose
        // person checked one.
        if self.config().second_factor.requires(role) && record.second_factor_at.is_none() {
            self.audit_selection(&actor, account_id, &wanted, "failure", now)
                .await?;
            return Err(IdentityError::from(IdentityReason::SecondFactorRequired));
        }

        let Some(grant) = self.held_grant(account_id, &wanted, deadline).await? else {
            self.audit_selection(&actor, account_id, &wanted, "failure", now)
                .await?;
            return Err(IdentityError::from(IdentityReason::NoGrant));
        };
        if !inner
            .sessions
            .set_active(account_id, &session_id, Some(wanted))
            .await?
        {
            return Err(IdentityError::from(IdentityReason::SessionEnded));
        }
        let grant = match self.held_grant(account_id, &wanted, deadline).await {
            Ok(Some(_)) => grant,
            checked => {
                // Revoked meanwhile, or no longer verifiable: leave no unchecked grant on
                // the session.
                inner
                    .sessions
                    .set_active(account_id, &session_id, None)
                    .await?;
                checked?;
                self.audit_selection(&actor, account_id, &wanted, "failure", now)
                    .await?;
                return Err(IdentityError::from(IdentityReason::NoGrant));
            }
        };
        let issued = self.token_for(&record, Some(&wanted))?;
        self.audit_selection(&actor, account_id, &wanted, "success", now)
            .await?;
        Ok(pb::SelectRoleResponse {
            access_token: issued.token,
            expires_at: Some(convert::timestamp(issued.expires_at)),
            grant: Some(grant),
        })
    }

    /// The account's grant matching `wanted`, as the directory lists it now, asked within
    /// `deadline` (the request being served).
    async fn held_grant(
        &self,
        account_id: Uuid,
        wanted: &ActiveGrant,
        deadline: Option<RequestDeadline>,
    ) -> Result<Option<dir::Grant>, IdentityError> {
        let grants = self
            .inner
            .directory
            .list_grants(account_id, deadline)
            .await?;
        Ok(grants.into_iter().find(|g| {
            Uuid::parse_str(&g.organisation_id).ok() == Some(wanted.organisation_id)
                && convert::role_from_proto(g.role).ok().flatten() == Some(wanted.role)
        }))
    }

    async fn audit_selection(
        &self,
        actor: &Actor,
        account_id: Uuid,
        grant: &ActiveGrant,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        audit_alone(
            self.store(),
            now,
            actor,
            account_event(
                "SELECT_ROLE",
                &account_id.to_string(),
                outcome,
                serde_json::json!({
                    "organisation_id": grant.organisation_id.to_string(),
                    "role": grant.role.as_str(),
                }),
            ),
        )
        .await
    }

    pub(super) async fn do_refresh(
        &self,
        request: Request<pb::RefreshAccessTokenRequest>,
    ) -> Result<pb::RefreshAccessTokenResponse, IdentityError> {
        let token = request.into_inner().session_token;
        if token.is_empty() {
            return Err(IdentityError::invalid_field("session_token", "is required"));
        }
        if token.len() > MAX_SESSION_TOKEN_LEN {
            return Err(IdentityError::from(IdentityReason::SessionEnded));
        }
        let now = self.now();
        let inner = &self.inner;
        let record = inner
            .sessions
            .by_token(&token, now)
            .await?
            .ok_or(IdentityError::from(IdentityReason::SessionEnded))?;
        // Sessions end when an account is disabled or locked; checking again here keeps a
        // session that escaped (e.g. Redis restored from a backup) from minting tokens.
        let usable = account_store::account(self.store().pool(), record.account_id)
            .await?
            .is_some_and(|a| a.is_active() && a.locked_at.is_none());
        if !usable {
            inner
                .sessions
                .end(record.account_id, &record.session_id)
                .await?;
            return Err(IdentityError::from(IdentityReason::SessionEnded));
        }
        let issued = self.token_for(&record, record.active.as_ref())?;
        Ok(pb::RefreshAccessTokenResponse {
            access_token: issued.token,
            expires_at: Some(convert::timestamp(issued.expires_at)),
            session: Some(convert::session(
                &record,
                self.config().session_idle_ttl,
                now,
            )),
        })
    }

    pub(super) async fn do_sign_out(
        &self,
        request: Request<pb::SignOutRequest>,
    ) -> Result<pb::SignOutResponse, IdentityError> {
        let principal = principal(&request)?;
        let (account_id, session_id) = require_user(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let now = self.now();
        self.inner.sessions.end(account_id, &session_id).await?;
        audit_alone(
            self.store(),
            now,
            &actor,
            account_event(
                "signout",
                &account_id.to_string(),
                "success",
                serde_json::json!({}),
            ),
        )
        .await?;
        Ok(pb::SignOutResponse {})
    }

    pub(super) async fn do_issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Result<pb::IssueServiceTokenResponse, IdentityError> {
        let actor = Actor::anonymous(&request);
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let id_ok = !req.client_id.is_empty()
            && req.client_id.len() <= 64
            && req
                .client_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        violations.check(
            id_ok,
            "client_id",
            "must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-'",
        );
        violations.check(
            !req.client_secret.is_empty(),
            "client_secret",
            "is required",
        );
        violations.check(
            req.client_secret.len() <= 1024,
            "client_secret",
            "must be at most 1024 bytes",
        );
        violations.into_result().map_err(IdentityError::invalid)?;

        let presented: [u8; 32] = Sha256::digest(req.client_secret.as_bytes()).into();
        // An unknown client is compared against zeros, so both cases do the same work.
        let (expected, known) = match self.config().service_clients.secret_hash(&req.client_id) {
            Some(hash) => (*hash, true),
            None => ([0u8; 32], false),
        };
        let matched: bool = presented.ct_eq(&expected).into();
        let now = self.now();
        let event = |outcome| Event {
            changes: cqrs_runtime::audit::Changes::new(),
            action: "ISSUE_SERVICE_TOKEN",
            target_type: "service_client",
            target_id: &req.client_id,
            outcome,
            details: serde_json::json!({}),
        };
        if !(matched && known) {
            audit_alone(self.store(), now, &actor, event("failure")).await?;
            return Err(IdentityError::from(IdentityReason::BadClientCredentials));
        }
        let issued = self
            .inner
            .issuer
            .issue_service(&req.client_id, token_time())?;
        audit_alone(self.store(), now, &actor, event("success")).await?;
        Ok(pb::IssueServiceTokenResponse {
            access_token: issued.token,
            expires_at: Some(convert::timestamp(issued.expires_at)),
        })
    }
}

/// The issue time of access tokens: token time (see [`cqrs_runtime::clock`]). Every verifier
/// checks `iat` and `exp` against its own system clock, so tokens use the system clock, not
/// the service's adjustable one.
pub(super) fn token_time() -> DateTime<Utc> {
    SystemClock.now()
}

/// Whether the principal is this account signing in as itself.
pub(super) fn is_self(principal: &Principal, account_id: Uuid) -> bool {
    principal.account_id() == Some(account_id)
}
