//! Identity: accounts and sessions.

use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::{Role, RoleProto, TokenSource};
use cqrs_proto::identity::v1::{self as pb, identity_service_client::IdentityServiceClient};
use cqrs_rules::account::Realm;
use cqrs_runtime::server::RequestDeadline;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{Caller, PeerError, Retry};

const IDENTITY: &str = "identity";

/// An account as found or created in identity.
#[derive(Clone, Debug)]
pub struct EnsuredAccount {
    pub account: pb::Account,
    /// Whether this call created it (identity then mailed its set-password link).
    pub created: bool,
}

/// A client of identity; cheap to clone.
#[derive(Clone)]
pub struct IdentityPeer {
    client: IdentityServiceClient<Channel>,
    caller: Caller,
}

impl IdentityPeer {
    pub fn new(channel: Channel, tokens: Arc<dyn TokenSource>, timeout: Duration) -> Self {
        IdentityPeer {
            client: IdentityServiceClient::new(channel),
            caller: Caller::new(IDENTITY, tokens, timeout),
        }
    }

    /// The same client without retries inside a call (see [`Caller::without_retries`]).
    pub fn without_retries(mut self) -> Self {
        self.caller = self.caller.without_retries();
        self
    }

    /// The account for `email`: created (PENDING_REGISTRATION; identity mails its
    /// set-password link) keyed on `request_id`, or — when the address already has one — the
    /// existing account.
    pub async fn ensure_account(
        &self,
        request_id: Uuid,
        realm: Realm,
        email: &str,
        first_name: &str,
        last_name: &str,
        deadline: Option<RequestDeadline>,
    ) -> Result<EnsuredAccount, PeerError> {
        let realm = match realm {
            Realm::National => pb::Realm::National,
            Realm::Local => pb::Realm::Local,
        };
        let request = pb::CreateAccountRequest {
            request_id: request_id.to_string(),
            realm: realm as i32,
            email: email.to_owned(),
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
        };
        let client = &self.client;
        let created = self
            .caller
            .call(deadline, Retry::Safe, request, |r| {
                let mut client = client.clone();
                async move { client.create_account(r).await }
            })
            .await;
        match created {
            Ok(answer) => Ok(EnsuredAccount {
                account: answer.account.ok_or(PeerError::incomplete(
                    IDENTITY,
                    "CreateAccountResponse.account",
                ))?,
                created: true,
            }),
            // The address has an account already — or an earlier attempt of this very call
            // created it with names since corrected (same request id, another request).
            // Either way that account is the one to grant to.
            Err(e) if e.is(Code::AlreadyExists) => Ok(EnsuredAccount {
                account: self.account_by_email(email, deadline).await?,
                created: false,
            }),
            Err(e) => Err(e),
        }
    }

    /// The account with this address.
    pub async fn account_by_email(
        &self,
        email: &str,
        deadline: Option<RequestDeadline>,
    ) -> Result<pb::Account, PeerError> {
        let request = pb::LookupAccountRequest {
            key: Some(pb::lookup_account_request::Key::Email(email.to_owned())),
        };
        let client = &self.client;
        self.caller
            .call(deadline, Retry::Safe, request, |r| {
                let mut client = client.clone();
                async move { client.lookup_account(r).await }
            })
            .await?
            .account
            .ok_or(PeerError::incomplete(
                IDENTITY,
                "LookupAccountResponse.account",
            ))
    }

    /// One account; `None` when it does not exist.
    pub async fn account(
        &self,
        id: Uuid,
        deadline: Option<RequestDeadline>,
    ) -> Result<Option<pb::Account>, PeerError> {
        let request = pb::GetAccountRequest {
            account_id: id.to_string(),
        };
        let client = &self.client;
        let answer = self
            .caller
            .call(deadline, Retry::Safe, request, |r| {
                let mut client = client.clone();
                async move { client.get_account(r).await }
            })
            .await;
        match answer {
            Ok(answer) => Ok(answer.account),
            Err(e) if e.is(Code::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Ends the sessions of `account` acting through `role` at `organisation` (every session
    /// of the account when `role` is `None`); how many ended. Ending twice ends nothing more,
    /// so the call is retried like a read.
    pub async fn end_sessions(
        &self,
        account: Uuid,
        organisation: Uuid,
        role: Option<Role>,
        reason: &str,
        deadline: Option<RequestDeadline>,
    ) -> Result<i32, PeerError> {
        let request = pb::EndSessionsRequest {
            account_id: account.to_string(),
            organisation_id: organisation.to_string(),
            role: role.map_or(0, |r| r.to_proto() as i32),
            reason: reason.to_owned(),
        };
        let client = &self.client;
        Ok(self
            .caller
            .call(deadline, Retry::Safe, request, |r| {
                let mut client = client.clone();
                async move { client.end_sessions(r).await }
            })
            .await?
            .ended_count)
    }
}
