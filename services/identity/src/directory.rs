//! The directory service as identity sees it: the source of an account's grants, asked at
//! sign-in (to list them) and at SelectRole (to check the one asked for); the judge of whether
//! a user's grant reaches another account (disable, enable); and where the bootstrap account
//! gets its service-desk organisation and grant.
//!
//! Calls carry a service token identity signs itself (it holds the signing key), so they do
//! not depend on identity's own token endpoint. Each call, connecting included, is bounded by
//! a short deadline: identity answers interactive requests and must not hang on the directory.

use cqrs_auth::RoleProto;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::{ActiveGrant, Permission, Role};
use cqrs_auth::{AuthError, IssuerTokenSource, TokenIssuer, TokenSource};
use cqrs_proto::directory::v1::directory_service_client::DirectoryServiceClient;
use cqrs_proto::directory::v1::{
    CheckPermissionRequest, CreateOrganisationRequest, Grant, GrantRoleRequest, ListGrantsRequest,
    OrganisationKind,
};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use crate::config::IdentityConfig;

/// Grants asked for per page: the directory's maximum, so one page normally holds them all.
const PAGE_SIZE: i32 = 1000;
/// Pages followed at most. No account holds anywhere near this many grants; the bound only
/// keeps a misbehaving directory from looping identity forever.
const MAX_PAGES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("the directory did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the directory answered {code:?}: {message}")]
    Status { code: tonic::Code, message: String },
    #[error("cannot sign a service token: {0}")]
    Token(#[source] AuthError),
    #[error("the directory's answer lacks {0}")]
    Incomplete(&'static str),
    #[error("the directory returned more than {MAX_PAGES} pages of grants")]
    TooManyPages,
}

/// A client of the directory; cheap to clone.
#[derive(Clone)]
pub struct DirectoryClient {
    client: DirectoryServiceClient<Channel>,
    tokens: Arc<dyn TokenSource>,
    timeout: Duration,
}

impl DirectoryClient {
    /// The directory at `config.directory_url`, with service tokens for
    /// `config.outbox_client_id` signed by `issuer`. Connects on first use, so identity can
    /// start before the directory.
    pub fn new(
        config: &IdentityConfig,
        issuer: Arc<TokenIssuer>,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(config.directory_url.clone())?
            .connect_timeout(config.directory_timeout)
            .connect_lazy();
        Ok(DirectoryClient {
            client: DirectoryServiceClient::new(channel),
            tokens: Arc::new(IssuerTokenSource::new(
                issuer,
                config.outbox_client_id.clone(),
            )),
            timeout: config.directory_timeout,
        })
    }

    /// Every grant of `account_id`, within the configured deadline.
    pub async fn list_grants(&self, account_id: Uuid) -> Result<Vec<Grant>, DirectoryError> {
        self.bounded(self.all_pages(account_id)).await
    }

    /// Whether the user `caller`, acting through `active`, may use `permission` on the
    /// account `target` (in scope wherever `target` holds a grant): the directory's shared
    /// decision. `(allowed, reason)`.
    pub async fn check_on_account(
        &self,
        caller: Uuid,
        active: ActiveGrant,
        permission: Permission,
        target: Uuid,
    ) -> Result<(bool, String), DirectoryError> {
        let request = CheckPermissionRequest {
            account_id: caller.to_string(),
            permission: permission.as_str().to_owned(),
            organisation_id: String::new(),
            active_organisation_id: active.organisation_id.to_string(),
            active_role: active.role.to_proto() as i32,
            target_account_id: target.to_string(),
        };
        let answer = self
            .bounded(async {
                let request = self.request(request).await?;
                let mut client = self.client.clone();
                client.check_permission(request).await.map_err(status)
            })
            .await?
            .into_inner();
        Ok((answer.allowed, answer.reason))
    }

    /// Creates (or finds, on a retry) the service-desk organisation of the bootstrap account
    /// and grants that account SERVICE_DESK there. Both calls are keyed on ids derived from
    /// the account, so running this again after any failure creates nothing twice.
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
        let organisation = self
            .bounded(async {
                let request = self.request(create).await?;
                let mut client = self.client.clone();
                client.create_organisation(request).await.map_err(status)
            })
            .await?
            .into_inner()
            .organisation
            .ok_or(DirectoryError::Incomplete(
                "CreateOrganisationResponse.organisation",
            ))?;
        let grant = GrantRoleRequest {
            request_id: derived_id(account_id, "bootstrap-grant").to_string(),
            account_id: account_id.to_string(),
            organisation_id: organisation.id,
            role: Role::ServiceDesk.to_proto() as i32,
        };
        self.bounded(async {
            let request = self.request(grant).await?;
            let mut client = self.client.clone();
            client.grant_role(request).await.map_err(status)
        })
        .await?
        .into_inner()
        .grant
        .ok_or(DirectoryError::Incomplete("GrantRoleResponse.grant"))
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, DirectoryError>>,
    ) -> Result<T, DirectoryError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| DirectoryError::Timeout(self.timeout))?
    }

    /// `message` with a service token, the deadline and the trace context.
    async fn request<T>(&self, message: T) -> Result<tonic::Request<T>, DirectoryError> {
        let token = self.tokens.token().await.map_err(DirectoryError::Token)?;
        let bearer: MetadataValue<_> =
            format!("Bearer {token}")
                .parse()
                .map_err(|_| DirectoryError::Status {
                    code: tonic::Code::Internal,
                    message: "service token is not a valid header value".to_owned(),
                })?;
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request.metadata_mut().insert("authorization", bearer);
        cqrs_runtime::telemetry::inject_trace_context(request.metadata_mut());
        Ok(request)
    }

    async fn all_pages(&self, account_id: Uuid) -> Result<Vec<Grant>, DirectoryError> {
        let mut grants = Vec::new();
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let request = self
                .request(ListGrantsRequest {
                    account_id: account_id.to_string(),
                    page_size: PAGE_SIZE,
                    page_token: std::mem::take(&mut page_token),
                })
                .await?;
            let mut client = self.client.clone();
            let page = client
                .list_grants(request)
                .await
                .map_err(status)?
                .into_inner();
            grants.extend(page.grants);
            if page.next_page_token.is_empty() {
                return Ok(grants);
            }
            page_token = page.next_page_token;
        }
        Err(DirectoryError::TooManyPages)
    }
}

fn status(s: tonic::Status) -> DirectoryError {
    DirectoryError::Status {
        code: s.code(),
        message: s.message().to_owned(),
    }
}

/// A request id for a call identity makes on behalf of `account_id`, the same on every retry.
fn derived_id(account_id: Uuid, purpose: &str) -> Uuid {
    Uuid::new_v5(&account_id, purpose.as_bytes())
}
