//! The directory service as identity sees it: the source of an account's grants, asked at
//! sign-in (to list them) and at SelectRole (to check the one asked for); the judge of whether
//! a user's grant reaches another account (disable, enable); and where the bootstrap account
//! gets its service-desk organisation and grant.
//!
//! Calls go through the suite's typed client (`cqrs_peers::DirectoryPeer`) with a service
//! token identity signs itself (it holds the signing key), so they do not depend on
//! identity's own token endpoint. Each call, connecting included, is bounded by a short
//! timeout, or by what is left of the deadline of the request identity is serving when that
//! is sooner: identity answers interactive requests and must not hang on the directory.
//! Whatever goes wrong, to identity's callers the directory is a missing dependency
//! ([`DirectoryError`], answered `Unavailable`): even a refused service token is a deployment
//! fault they cannot mend.

use std::sync::Arc;

use cqrs_auth::{ActiveGrant, IssuerTokenSource, Permission, Role, TokenIssuer};
use cqrs_peers::{Check, DirectoryPeer, PeerError};
use cqrs_proto::directory::v1::{CreateOrganisationRequest, Grant, OrganisationKind};
use cqrs_runtime::server::RequestDeadline;
use uuid::Uuid;

use crate::clock::SystemClock;
use crate::config::IdentityConfig;

/// The directory did not answer usefully.
#[derive(Debug, thiserror::Error)]
#[error("the directory did not answer usefully: {0}")]
pub struct DirectoryError(#[from] PeerError);

/// A client of the directory; cheap to clone.
#[derive(Clone)]
pub struct DirectoryClient {
    peer: DirectoryPeer,
}

impl DirectoryClient {
    /// The directory at `config.directory_url`, with service tokens for
    /// `config.outbox_client_id` signed by `issuer`. Connects on first use, so identity can
    /// start before the directory.
    pub fn new(
        config: &IdentityConfig,
        issuer: Arc<TokenIssuer>,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = cqrs_runtime::credentials::lazy_channel(
            &config.directory_url,
            config.directory_timeout,
        )?;
        // Token time is the system clock, which the directory verifies with.
        let tokens = Arc::new(IssuerTokenSource::new(
            issuer,
            config.outbox_client_id.clone(),
            Arc::new(SystemClock),
        ));
        Ok(DirectoryClient {
            // Sign-in answers without grants when the directory is down: retrying a refused
            // connection would only add the timeout to every sign-in meanwhile.
            peer: DirectoryPeer::new(channel, tokens, config.directory_timeout).without_retries(),
        })
    }

    /// Every grant of `account_id`, within the configured timeout or what is left of
    /// `deadline` (the request being served), whichever is sooner.
    pub async fn list_grants(
        &self,
        account_id: Uuid,
        deadline: Option<RequestDeadline>,
    ) -> Result<Vec<Grant>, DirectoryError> {
        Ok(self.peer.grants(account_id, deadline).await?)
    }

    /// Whether the user `caller`, acting through `active`, may use `permission` on the
    /// account `target` (in scope wherever `target` holds a grant): the directory's shared
    /// decision. `(allowed, reason)`; an account the directory does not know is in nobody's
    /// scope. Bounded like [`DirectoryClient::list_grants`] by `deadline`.
    pub async fn check_on_account(
        &self,
        caller: Uuid,
        active: ActiveGrant,
        permission: Permission,
        target: Uuid,
        deadline: Option<RequestDeadline>,
    ) -> Result<(bool, String), DirectoryError> {
        let check = self
            .peer
            .check_on_account(caller, active, permission, target, deadline)
            .await?;
        Ok(match check {
            Check::Allowed => (true, cqrs_auth::GRANTED.to_owned()),
            Check::Denied(reason) => (false, reason),
            Check::NoOrganisation => (false, cqrs_auth::NO_GRANT_IN_SCOPE.to_owned()),
        })
    }

    /// Creates (or finds, on a retry) the service-desk organisation of the bootstrap account
    /// and grants that account SERVICE_DESK there. Both calls are keyed on ids derived from
    /// the account, so running this again after any failure creates nothing twice. Bootstrap
    /// serves no request, so only the configured timeout bounds the calls.
    pub async fn ensure_service_desk(
        &self,
        account_id: Uuid,
        ods_code: &str,
        name: &str,
    ) -> Result<Grant, DirectoryError> {
        let create = CreateOrganisationRequest {
            request_id: derived_id(account_id, "bootstrap-organisation").to_string(),
            kind: OrganisationKind::ServiceDesk as i32,
            ods_code: ods_code.to_owned(),
            name: name.to_owned(),
            parent_id: String::new(),
            multi_level_approval: false,
        };
        let organisation = self.peer.create_organisation(create, None).await?;
        let organisation_id = Uuid::parse_str(&organisation.id)
            .map_err(|_| PeerError::incomplete("directory", "a UUID in Organisation.id"))?;
        Ok(self
            .peer
            .grant_role(
                derived_id(account_id, "bootstrap-grant"),
                account_id,
                organisation_id,
                Role::ServiceDesk,
                None,
            )
            .await?)
    }
}

/// A request id derived from the account, so every retry of the bootstrap sends the same one.
fn derived_id(account_id: Uuid, purpose: &str) -> Uuid {
    Uuid::new_v5(&account_id, purpose.as_bytes())
}
