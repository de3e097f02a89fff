//! The directory: organisations, grants and the permission decision.

use std::collections::BTreeSet;

use cqrs_auth::{ActiveGrant, Permission, Role, RoleProto};
use cqrs_proto::directory::v1::{self as pb, directory_service_client::DirectoryServiceClient};
use cqrs_runtime::server::RequestDeadline;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{Caller, PeerError, Retry};

const DIRECTORY: &str = "directory";
/// The directory's largest page for grants and administrators.
const LARGE_PAGE: i32 = 1000;
/// SearchOrganisations' largest page.
const SEARCH_PAGE: i32 = 100;

/// The directory's verdict on a permission check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Allowed,
    /// Refused, with the directory's UPPER_SNAKE reason.
    Denied(String),
    /// The organisation does not exist.
    NoOrganisation,
}

/// A client of the directory; cheap to clone.
#[derive(Clone)]
pub struct DirectoryPeer {
    client: DirectoryServiceClient<Channel>,
    caller: Caller,
}

impl DirectoryPeer {
    pub fn new(
        channel: Channel,
        tokens: std::sync::Arc<dyn cqrs_auth::TokenSource>,
        timeout: std::time::Duration,
    ) -> Self {
        DirectoryPeer {
            client: DirectoryServiceClient::new(channel),
            caller: Caller::new(DIRECTORY, tokens, timeout),
        }
    }

    /// The same client without retries inside a call (see [`Caller::without_retries`]).
    pub fn without_retries(mut self) -> Self {
        self.caller = self.caller.without_retries();
        self
    }

    async fn check(
        &self,
        request: pb::CheckPermissionRequest,
        deadline: Option<RequestDeadline>,
    ) -> Result<Check, PeerError> {
        let client = &self.client;
        let answer = self
            .caller
            .call(deadline, Retry::Safe, request, |r| {
                let mut client = client.clone();
                async move { client.check_permission(r).await }
            })
            .await;
        match answer {
            Ok(answer) if answer.allowed => Ok(Check::Allowed),
            Ok(answer) => Ok(Check::Denied(answer.reason)),
            Err(e) if e.is(Code::NotFound) => Ok(Check::NoOrganisation),
            Err(e) => Err(e),
        }
    }

    /// Whether `account`, acting through `active`, may use `permission` on `organisation`:
    /// the directory's shared decision, which also checks the grant still exists.
    pub async fn check_permission(
        &self,
        account: Uuid,
        active: ActiveGrant,
        permission: Permission,
        organisation: Uuid,
        deadline: Option<RequestDeadline>,
    ) -> Result<Check, PeerError> {
        let request = check_request(account, active, permission);
        self.check(
            pb::CheckPermissionRequest {
                organisation_id: organisation.to_string(),
                ..request
            },
            deadline,
        )
        .await
    }

    /// Whether `account`, acting through `active`, may use `permission` on the account
    /// `target` (in scope wherever `target` holds a grant).
    pub async fn check_on_account(
        &self,
        account: Uuid,
        active: ActiveGrant,
        permission: Permission,
        target: Uuid,
        deadline: Option<RequestDeadline>,
    ) -> Result<Check, PeerError> {
        let request = check_request(account, active, permission);
        self.check(
            pb::CheckPermissionRequest {
                target_account_id: target.to_string(),
                ..request
            },
            deadline,
        )
        .await
    }

    /// One organisation; `None` when it does not exist.
    pub async fn organisation(
        &self,
        id: Uuid,
        deadline: Option<RequestDeadline>,
    ) -> Result<Option<pb::Organisation>, PeerError> {
        let request = pb::GetOrganisationRequest {
            organisation_id: id.to_string(),
        };
        let client = &self.client;
        let answer = self
            .caller
            .call(deadline, Retry::Safe, request, |r| {
                let mut client = client.clone();
                async move { client.get_organisation(r).await }
            })
            .await;
        match answer {
            Ok(answer) => answer.organisation.map(Some).ok_or(PeerError::incomplete(
                DIRECTORY,
                "GetOrganisationResponse.organisation",
            )),
            Err(e) if e.is(Code::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The organisation with this (normalised) ODS code, if any. The search matches codes
    /// exactly and names by prefix; only an exact code match counts here.
    pub async fn organisation_by_code(
        &self,
        ods_code: &str,
        deadline: Option<RequestDeadline>,
    ) -> Result<Option<pb::Organisation>, PeerError> {
        let request = pb::SearchOrganisationsRequest {
            query: ods_code.to_owned(),
            kind: pb::OrganisationKind::Unspecified as i32,
            page_size: SEARCH_PAGE,
            page_token: String::new(),
        };
        let client = &self.client;
        let answer = self
            .caller
            .call(deadline, Retry::Safe, request, |r| {
                let mut client = client.clone();
                async move { client.search_organisations(r).await }
            })
            .await?;
        Ok(answer
            .organisations
            .into_iter()
            .find(|org| org.ods_code == ods_code))
    }

    /// Creates an organisation, keyed on `request.request_id` (a retry returns the first
    /// answer).
    pub async fn create_organisation(
        &self,
        request: pb::CreateOrganisationRequest,
        deadline: Option<RequestDeadline>,
    ) -> Result<pb::Organisation, PeerError> {
        let client = &self.client;
        self.caller
            .call(deadline, Retry::Safe, request, |r| {
                let mut client = client.clone();
                async move { client.create_organisation(r).await }
            })
            .await?
            .organisation
            .ok_or(PeerError::incomplete(
                DIRECTORY,
                "CreateOrganisationResponse.organisation",
            ))
    }

    /// Every grant of `account`.
    pub async fn grants(
        &self,
        account: Uuid,
        deadline: Option<RequestDeadline>,
    ) -> Result<Vec<pb::Grant>, PeerError> {
        let client = &self.client;
        self.caller
            .all_pages(deadline, |page_token, deadline| async move {
                let request = pb::ListGrantsRequest {
                    account_id: account.to_string(),
                    page_size: LARGE_PAGE,
                    page_token,
                };
                let page = self
                    .caller
                    .call(deadline, Retry::Safe, request, |r| {
                        let mut client = client.clone();
                        async move { client.list_grants(r).await }
                    })
                    .await?;
                Ok((page.grants, page.next_page_token))
            })
            .await
    }

    /// Whether `account` holds `role` at `organisation`.
    pub async fn holds_grant(
        &self,
        account: Uuid,
        organisation: Uuid,
        role: Role,
        deadline: Option<RequestDeadline>,
    ) -> Result<bool, PeerError> {
        let (organisation, role) = (organisation.to_string(), role.to_proto() as i32);
        Ok(self
            .grants(account, deadline)
            .await?
            .iter()
            .any(|g| g.organisation_id == organisation && g.role == role))
    }

    /// The accounts administering `organisation` for a request for `role` (approvers when the
    /// role is COMMISSIONING_APPROVER), each once.
    pub async fn administrators(
        &self,
        organisation: Uuid,
        role: Role,
        deadline: Option<RequestDeadline>,
    ) -> Result<Vec<Uuid>, PeerError> {
        let client = &self.client;
        let grants = self
            .caller
            .all_pages(deadline, |page_token, deadline| async move {
                let request = pb::ListAdministratorsRequest {
                    organisation_id: organisation.to_string(),
                    role: role.to_proto() as i32,
                    page_size: LARGE_PAGE,
                    page_token,
                };
                let page = self
                    .caller
                    .call(deadline, Retry::Safe, request, |r| {
                        let mut client = client.clone();
                        async move { client.list_administrators(r).await }
                    })
                    .await?;
                Ok((page.grants, page.next_page_token))
            })
            .await?;
        let accounts: BTreeSet<Uuid> = grants
            .iter()
            .filter_map(|g| Uuid::parse_str(&g.account_id).ok())
            .collect();
        Ok(accounts.into_iter().collect())
    }

    /// Grants `role` at `organisation` to `account`; keyed on `request_id`, and an existing
    /// identical grant is returned as it is.
    pub async fn grant_role(
        &self,
        request_id: Uuid,
        account: Uuid,
        organisation: Uuid,
        role: Role,
        deadline: Option<RequestDeadline>,
    ) -> Result<pb::Grant, PeerError> {
        let request = pb::GrantRoleRequest {
            request_id: request_id.to_string(),
            account_id: account.to_string(),
            organisation_id: organisation.to_string(),
            role: role.to_proto() as i32,
        };
        let client = &self.client;
        self.caller
            .call(deadline, Retry::Safe, request, |r| {
                let mut client = client.clone();
                async move { client.grant_role(r).await }
            })
            .await?
            .grant
            .ok_or(PeerError::incomplete(DIRECTORY, "GrantRoleResponse.grant"))
    }
}

fn check_request(
    account: Uuid,
    active: ActiveGrant,
    permission: Permission,
) -> pb::CheckPermissionRequest {
    pb::CheckPermissionRequest {
        account_id: account.to_string(),
        permission: permission.as_str().to_owned(),
        organisation_id: String::new(),
        active_organisation_id: active.organisation_id.to_string(),
        active_role: active.role.to_proto() as i32,
        target_account_id: String::new(),
    }
}
