//! Single sign-on with an upstream OpenID provider (SECURITY 35). The protocol is
//! [`crate::federation`]; the rules are here:
//! * `state` is single use and bound to the sign-in that made it; the nonce and the PKCE
//!   verifier never leave identity.
//! * Only a verified e-mail, of a domain the provider is allowed for, equal to an existing
//!   ACTIVE, unlocked account's e-mail signs in — to that account, with its grants, as a
//!   password would. Nothing is ever created. Every other e-mail gets one answer.
//! * An account with an authenticator app is asked for its code too, unless the provider's
//!   MFA is configured to count (`amr` of mfa, otp, hwk, swk or sms).

use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_proto::identity::v1 as pb;
use cqrs_runtime::audit::{Actor, Event};
use cqrs_runtime::server::request_deadline;
use tonic::Request;

use super::signin::token_time;
use super::{IdentityApi, IdentityError, IdentityReason, audit_alone, convert};
use crate::config::OidcProvider;
use crate::domain::account::Realm;
use crate::domain::email::normalise_email;
use crate::federation::{Federation, FederationError, Verified};
use crate::store::AccountRow;
use crate::store::accounts as account_store;
use crate::store::sessions::{CHALLENGE_TTL, FederatedPending};

/// Longest state or code looked at.
const MAX_PARAM_LEN: usize = 2048;
/// Longest wait for a provider's answer.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// Upstream `amr` values that mean more than one factor was used.
const MFA_METHODS: [&str; 5] = ["mfa", "otp", "hwk", "swk", "sms"];

impl IdentityApi {
    fn provider(&self, id: &str) -> Result<&OidcProvider, IdentityError> {
        self.config().oidc.provider(id).ok_or_else(|| {
            IdentityError::invalid_field("provider_id", "is not a configured provider")
        })
    }

    fn redirect_uri(&self) -> Result<&str, IdentityError> {
        self.config().oidc.redirect_uri.as_deref().ok_or_else(|| {
            IdentityError::internal(std::io::Error::other("CQRS_OIDC_REDIRECT_URI is not set"))
        })
    }

    fn federation(&self) -> Result<Federation, IdentityError> {
        Federation::new(PROVIDER_TIMEOUT).map_err(IdentityError::internal)
    }

    pub(super) async fn do_list_identity_providers(
        &self,
    ) -> Result<pb::ListIdentityProvidersResponse, IdentityError> {
        Ok(pb::ListIdentityProvidersResponse {
            providers: self
                .config()
                .oidc
                .providers
                .iter()
                .map(|p| pb::IdentityProvider {
                    id: p.id.clone(),
                    label: p.label.clone(),
                })
                .collect(),
        })
    }

    pub(super) async fn do_start_federated_sign_in(
        &self,
        request: Request<pb::StartFederatedSignInRequest>,
    ) -> Result<pb::StartFederatedSignInResponse, IdentityError> {
        let req = request.into_inner();
        let provider = self.provider(&req.provider_id)?;
        let started = self
            .federation()?
            .start(provider, self.redirect_uri()?)
            .await
            .map_err(|e| {
                IdentityError::unavailable("the identity provider", std::io::Error::other(e.kind()))
            })?;
        let pending = FederatedPending {
            provider_id: provider.id.clone(),
            nonce: started.nonce,
            pkce_verifier: started.pkce_verifier,
        };
        self.inner
            .sessions
            .keep_federated(&started.state, &pending)
            .await?;
        Ok(pb::StartFederatedSignInResponse {
            authorization_url: started.authorization_url,
            state: started.state,
        })
    }

    pub(super) async fn do_complete_federated_sign_in(
        &self,
        request: Request<pb::CompleteFederatedSignInRequest>,
    ) -> Result<pb::CompleteFederatedSignInResponse, IdentityError> {
        let actor = Actor::anonymous(&request);
        let deadline = request_deadline(&request);
        let req = request.into_inner();
        for (field, value) in [("state", &req.state), ("code", &req.code)] {
            if value.is_empty() {
                return Err(IdentityError::invalid_field(field, "is required"));
            }
        }
        let now = self.now();
        if req.state.len() > MAX_PARAM_LEN || req.code.len() > MAX_PARAM_LEN {
            return Err(self.refuse(&actor, "", "oversized", now).await);
        }
        // Taken before anything else: a state is used once, whatever happens next.
        let Some(pending) = self.inner.sessions.take_federated(&req.state).await? else {
            return Err(self.refuse(&actor, "", "unknown_state", now).await);
        };
        let provider = self.provider(&pending.provider_id)?.clone();
        let verified = match self
            .federation()?
            .complete(
                &provider,
                self.redirect_uri()?,
                &req.code,
                &pending.nonce,
                &pending.pkce_verifier,
            )
            .await
        {
            Ok(verified) => verified,
            Err(e @ FederationError::Discovery(_)) => {
                return Err(IdentityError::unavailable(
                    "the identity provider",
                    std::io::Error::other(e.kind()),
                ));
            }
            Err(e) => {
                tracing::info!(
                    provider = provider.id,
                    failed = e.kind(),
                    "federated sign-in refused"
                );
                return Err(self.refuse(&actor, &provider.id, e.kind(), now).await);
            }
        };
        let account = match self.linked_account(&provider, &verified, now).await? {
            Ok(account) => account,
            Err(why) => {
                self.audit_federated(&actor, &provider.id, None, "failure", why, now)
                    .await?;
                return Err(IdentityReason::NoMatchingAccount.into());
            }
        };
        let mfa = provider.mfa_satisfies
            && verified
                .methods
                .iter()
                .any(|m| MFA_METHODS.contains(&m.as_str()));
        let sign_in = if account.second_factor_at.is_some() && !mfa {
            self.audit_federated(
                &actor,
                &provider.id,
                Some(&account),
                "success",
                "code_asked",
                now,
            )
            .await?;
            let challenge_token = self
                .inner
                .sessions
                .create_challenge(account.id, "fed")
                .await?;
            let expires = now
                + chrono::TimeDelta::from_std(CHALLENGE_TTL)
                    .unwrap_or(chrono::TimeDelta::minutes(5));
            pb::SignInResponse {
                second_factor_required: true,
                challenge_token,
                challenge_expire_time: Some(convert::timestamp(expires)),
                ..Default::default()
            }
        } else {
            let (methods, checked): (&[&str], Option<i64>) = if mfa {
                (&["fed", "mfa"], Some(token_time().timestamp()))
            } else {
                (&["fed"], None)
            };
            self.audit_federated(
                &actor,
                &provider.id,
                Some(&account),
                "success",
                "signed_in",
                now,
            )
            .await?;
            self.start_session(&account, &actor, now, deadline, methods, checked)
                .await?
        };
        Ok(pb::CompleteFederatedSignInResponse {
            sign_in: Some(sign_in),
        })
    }

    /// The ACTIVE, unlocked account the verified e-mail names, or why there is none (for the
    /// audit trail; the caller gets one answer for all).
    async fn linked_account(
        &self,
        provider: &OidcProvider,
        verified: &Verified,
        now: DateTime<Utc>,
    ) -> Result<Result<AccountRow, &'static str>, IdentityError> {
        let Some(raw) = verified.email.as_deref() else {
            return Ok(Err("no_email"));
        };
        if !verified.email_verified {
            return Ok(Err("email_unverified"));
        }
        let Ok(email) = normalise_email(raw) else {
            return Ok(Err("email_malformed"));
        };
        let domain = email
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !provider.domains.is_empty() && !provider.domains.contains(&domain) {
            return Ok(Err("domain_not_allowed"));
        }
        let pool = self.store().pool();
        let mut found = None;
        for realm in [Realm::National, Realm::Local] {
            if let Some(account) = account_store::account_by_email(pool, realm, &email).await? {
                found = Some(account);
                break;
            }
        }
        let Some(account) = found else {
            return Ok(Err("no_account"));
        };
        if !account.is_active() {
            return Ok(Err("account_not_active"));
        }
        let temporarily_locked = self
            .inner
            .lockout
            .locked_until(account.id, now)
            .await?
            .is_some();
        if account.locked_at.is_some() || temporarily_locked {
            return Ok(Err("account_locked"));
        }
        Ok(Ok(account))
    }

    /// Records a refused federated sign-in and answers it.
    async fn refuse(
        &self,
        actor: &Actor,
        provider_id: &str,
        why: &str,
        now: DateTime<Utc>,
    ) -> IdentityError {
        if let Err(e) = self
            .audit_federated(actor, provider_id, None, "failure", why, now)
            .await
        {
            return e;
        }
        IdentityReason::FederatedSignInFailed.into()
    }

    async fn audit_federated(
        &self,
        actor: &Actor,
        provider_id: &str,
        account: Option<&AccountRow>,
        outcome: &str,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        let target = account.map(|a| a.id.to_string()).unwrap_or_default();
        audit_alone(
            self.store(),
            now,
            actor,
            Event {
                changes: cqrs_runtime::audit::Changes::new(),
                action: "SIGN_IN_FEDERATED",
                target_type: "account",
                target_id: &target,
                outcome,
                details: serde_json::json!({ "provider": provider_id, "detail": detail }),
            },
        )
        .await
    }
}
