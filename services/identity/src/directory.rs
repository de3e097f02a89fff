//! The directory service as identity sees it: the source of an account's grants, asked at
//! sign-in (to list them) and at SelectRole (to check the one asked for).
//!
//! Calls carry a service token identity signs itself (it holds the signing key), so they do
//! not depend on identity's own token endpoint. Each call, connecting included, is bounded by
//! a short deadline: identity answers interactive requests and must not hang on the directory.

use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::{AuthError, IssuerTokenSource, TokenIssuer, TokenSource};
use cqrs_proto::directory::v1::directory_service_client::DirectoryServiceClient;
use cqrs_proto::directory::v1::{Grant, ListGrantsRequest};
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
    #[error("the directory returned more than {MAX_PAGES} pages of grants")]
    TooManyPages,
}

/// A client of the directory's `ListGrants`; cheap to clone.
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
        tokio::time::timeout(self.timeout, self.all_pages(account_id))
            .await
            .map_err(|_| DirectoryError::Timeout(self.timeout))?
    }

    async fn all_pages(&self, account_id: Uuid) -> Result<Vec<Grant>, DirectoryError> {
        let token = self.tokens.token().await.map_err(DirectoryError::Token)?;
        let bearer: MetadataValue<_> =
            format!("Bearer {token}")
                .parse()
                .map_err(|_| DirectoryError::Status {
                    code: tonic::Code::Internal,
                    message: "service token is not a valid header value".to_owned(),
                })?;
        let mut grants = Vec::new();
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let mut request = tonic::Request::new(ListGrantsRequest {
                account_id: account_id.to_string(),
                page_size: PAGE_SIZE,
                page_token: std::mem::take(&mut page_token),
            });
            request.set_timeout(self.timeout);
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            cqrs_runtime::telemetry::inject_trace_context(request.metadata_mut());
            let mut client = self.client.clone();
            let page = client
                .list_grants(request)
                .await
                .map_err(|s| DirectoryError::Status {
                    code: s.code(),
                    message: s.message().to_owned(),
                })?
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
