//! The access service's calls to identity (accounts) and the directory (organisations,
//! permission checks, grants).
//!
//! Every call carries a service token, the W3C trace context and a deadline: the configured
//! call timeout, or what is left of the caller's own deadline when that is sooner. Calls that
//! create something (CreateAccount, GrantRole) are keyed on request ids derived from the
//! workflow row (`domain::rules::derived_id`), so repeating one after a timeout or a crash
//! creates nothing twice.

use cqrs_auth::RoleProto;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::{ActiveGrant, AuthError, Permission, Role, TokenSource};
use cqrs_proto::directory::v1::{
    self as directory_pb, directory_service_client::DirectoryServiceClient,
};
use cqrs_proto::identity::v1::{
    self as identity_pb, identity_service_client::IdentityServiceClient,
};
use cqrs_rules::account::Realm;
use cqrs_runtime::server::RequestDeadline;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use uuid::Uuid;

const IDENTITY: &str = "identity";
const DIRECTORY: &str = "directory";
/// The directory's largest page for grants and administrators.
const LARGE_PAGE: i32 = 1000;
/// Pages followed at most: the bound only keeps a misbehaving peer from looping a request.
const MAX_PAGES: usize = 20;
/// SearchOrganisations' largest page.
const SEARCH_PAGE: i32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No answer within the deadline, or the peer could not be reached: worth a retry.
    #[error("{service} is unavailable: {message}")]
    Unavailable {
        service: &'static str,
        message: String,
    },
    /// Any other refusal.
    #[error("{service} answered {code:?} ({reason}): {message}")]
    Status {
        service: &'static str,
        code: Code,
        reason: String,
        message: String,
    },
    #[error("cannot get a service token: {0}")]
    Token(#[source] AuthError),
    #[error("{service}'s answer lacks {field}")]
    Incomplete {
        service: &'static str,
        field: &'static str,
    },
}

impl PeerError {
    fn from_status(service: &'static str, status: &tonic::Status) -> Self {
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                PeerError::Unavailable {
                    service,
                    message: status.message().to_owned(),
                }
            }
            code => PeerError::Status {
                service,
                code,
                reason: status
                    .get_details_error_info()
                    .map(|info| info.reason)
                    .unwrap_or_default(),
                message: status.message().to_owned(),
            },
        }
    }

    fn is(&self, want: Code) -> bool {
        matches!(self, PeerError::Status { code, .. } if *code == want)
    }
}

/// The directory's verdict on a permission check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Allowed,
    /// Refused, with the directory's UPPER_SNAKE reason.
    Denied(String),
    /// The organisation does not exist.
    NoOrganisation,
}

/// An account as found or created in identity.
#[derive(Clone, Debug)]
pub struct EnsuredAccount {
    pub account: identity_pb::Account,
    /// Whether this call created it (identity then mailed its set-password link).
    pub created: bool,
}

/// Clients of identity and the directory; cheap to clone.
#[derive(Clone)]
pub struct Peers {
    identity: IdentityServiceClient<Channel>,
    directory: DirectoryServiceClient<Channel>,
    tokens: Arc<dyn TokenSource>,
    timeout: Duration,
}

impl Peers {
    /// Calls over `identity` and `directory` with tokens from `tokens`, each bounded by
    /// `timeout`.
    pub fn new(
        identity: Channel,
        directory: Channel,
        tokens: Arc<dyn TokenSource>,
        timeout: Duration,
    ) -> Self {
        Peers {
            identity: IdentityServiceClient::new(identity),
            directory: DirectoryServiceClient::new(directory),
            tokens,
            timeout,
        }
    }

    /// The configured call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn budget(&self, deadline: Option<RequestDeadline>) -> Duration {
        deadline.map_or(self.timeout, |d| d.remaining().min(self.timeout))
    }

    /// `message` with a service token, the deadline and the trace context.
    async fn request<T>(
        &self,
        message: T,
        budget: Duration,
    ) -> Result<tonic::Request<T>, PeerError> {
        let token = self.tokens.token().await.map_err(PeerError::Token)?;
        let bearer: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| PeerError::Token(AuthError::MissingCredentials))?;
        let mut request = tonic::Request::new(message);
        request.set_timeout(budget);
        request.metadata_mut().insert("authorization", bearer);
        cqrs_runtime::telemetry::inject_trace_context(request.metadata_mut());
        Ok(request)
    }

    /// Runs `call` within the budget; connecting and fetching the token count against it.
    async fn bounded<T, F>(
        &self,
        service: &'static str,
        deadline: Option<RequestDeadline>,
        call: impl FnOnce(Duration) -> F,
    ) -> Result<T, PeerError>
    where
        F: Future<Output = Result<T, PeerError>>,
    {
        let budget = self.budget(deadline);
        tokio::time::timeout(budget, call(budget))
            .await
            .map_err(|_| PeerError::Unavailable {
                service,
                message: format!("no answer within {budget:?}"),
            })?
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
        let message = directory_pb::CheckPermissionRequest {
            account_id: account.to_string(),
            permission: permission.as_str().to_owned(),
            organisation_id: organisation.to_string(),
            active_organisation_id: active.organisation_id.to_string(),
            active_role: active.role.to_proto() as i32,
            target_account_id: String::new(),
        };
        let answer = self
            .bounded(DIRECTORY, deadline, |budget| async move {
                let request = self.request(message, budget).await?;
                self.directory
                    .clone()
                    .check_permission(request)
                    .await
                    .map_err(|s| PeerError::from_status(DIRECTORY, &s))
            })
            .await;
        match answer {
            Ok(answer) => {
                let answer = answer.into_inner();
                Ok(if answer.allowed {
                    Check::Allowed
                } else {
                    Check::Denied(answer.reason)
                })
            }
            Err(e) if e.is(Code::NotFound) => Ok(Check::NoOrganisation),
            Err(e) => Err(e),
        }
    }

    /// One organisation; `None` when it does not exist.
    pub async fn organisation(
        &self,
        id: Uuid,
        deadline: Option<RequestDeadline>,
    ) -> Result<Option<directory_pb::Organisation>, PeerError> {
        let message = directory_pb::GetOrganisationRequest {
            organisation_id: id.to_string(),
        };
        let answer = self
            .bounded(DIRECTORY, deadline, |budget| async move {
                let request = self.request(message, budget).await?;
                self.directory
                    .clone()
                    .get_organisation(request)
                    .await
                    .map_err(|s| PeerError::from_status(DIRECTORY, &s))
            })
            .await;
        match answer {
            Ok(answer) => answer
                .into_inner()
                .organisation
                .map(Some)
                .ok_or(PeerError::Incomplete {
                    service: DIRECTORY,
                    field: "GetOrganisationResponse.organisation",
                }),
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
    ) -> Result<Option<directory_pb::Organisation>, PeerError> {
        let message = directory_pb::SearchOrganisationsRequest {
            query: ods_code.to_owned(),
            kind: directory_pb::OrganisationKind::Unspecified as i32,
            page_size: SEARCH_PAGE,
            page_token: String::new(),
        };
        let answer = self
            .bounded(DIRECTORY, deadline, |budget| async move {
                let request = self.request(message, budget).await?;
                self.directory
                    .clone()
                    .search_organisations(request)
                    .await
                    .map_err(|s| PeerError::from_status(DIRECTORY, &s))
            })
            .await?;
        Ok(answer
            .into_inner()
            .organisations
            .into_iter()
            .find(|org| org.ods_code == ods_code))
    }

    /// The accounts administering `organisation` for a request for `role` (approvers when the
    /// role is COMMISSIONING_APPROVER), each once.
    pub async fn administrators(
        &self,
        organisation: Uuid,
        role: Role,
        deadline: Option<RequestDeadline>,
    ) -> Result<Vec<Uuid>, PeerError> {
        self.bounded(DIRECTORY, deadline, |budget| async move {
            let mut accounts = BTreeSet::new();
            let mut page_token = String::new();
            for _ in 0..MAX_PAGES {
                let request = self
                    .request(
                        directory_pb::ListAdministratorsRequest {
                            organisation_id: organisation.to_string(),
                            role: role.to_proto() as i32,
                            page_size: LARGE_PAGE,
                            page_token: std::mem::take(&mut page_token),
                        },
                        budget,
                    )
                    .await?;
                let page = self
                    .directory
                    .clone()
                    .list_administrators(request)
                    .await
                    .map_err(|s| PeerError::from_status(DIRECTORY, &s))?
                    .into_inner();
                accounts.extend(
                    page.grants
                        .iter()
                        .filter_map(|g| Uuid::parse_str(&g.account_id).ok()),
                );
                if page.next_page_token.is_empty() {
                    return Ok(accounts.into_iter().collect());
                }
                page_token = page.next_page_token;
            }
            Err(PeerError::Incomplete {
                service: DIRECTORY,
                field: "a last page of ListAdministrators",
            })
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
        let (org_text, role_value) = (organisation.to_string(), role.to_proto() as i32);
        self.bounded(DIRECTORY, deadline, |budget| async move {
            let mut page_token = String::new();
            for _ in 0..MAX_PAGES {
                let request = self
                    .request(
                        directory_pb::ListGrantsRequest {
                            account_id: account.to_string(),
                            page_size: LARGE_PAGE,
                            page_token: std::mem::take(&mut page_token),
                        },
                        budget,
                    )
                    .await?;
                let page = self
                    .directory
                    .clone()
                    .list_grants(request)
                    .await
                    .map_err(|s| PeerError::from_status(DIRECTORY, &s))?
                    .into_inner();
                if page
                    .grants
                    .iter()
                    .any(|g| g.organisation_id == org_text && g.role == role_value)
                {
                    return Ok(true);
                }
                if page.next_page_token.is_empty() {
                    return Ok(false);
                }
                page_token = page.next_page_token;
            }
            Err(PeerError::Incomplete {
                service: DIRECTORY,
                field: "a last page of ListGrants",
            })
        })
        .await
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
    ) -> Result<directory_pb::Grant, PeerError> {
        let message = directory_pb::GrantRoleRequest {
            request_id: request_id.to_string(),
            account_id: account.to_string(),
            organisation_id: organisation.to_string(),
            role: role.to_proto() as i32,
        };
        self.bounded(DIRECTORY, deadline, |budget| async move {
            let request = self.request(message, budget).await?;
            self.directory
                .clone()
                .grant_role(request)
                .await
                .map_err(|s| PeerError::from_status(DIRECTORY, &s))?
                .into_inner()
                .grant
                .ok_or(PeerError::Incomplete {
                    service: DIRECTORY,
                    field: "GrantRoleResponse.grant",
                })
        })
        .await
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
            Realm::National => identity_pb::Realm::National,
            Realm::Local => identity_pb::Realm::Local,
        };
        let message = identity_pb::CreateAccountRequest {
            request_id: request_id.to_string(),
            realm: realm as i32,
            email: email.to_owned(),
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
        };
        let created = self
            .bounded(IDENTITY, deadline, |budget| async move {
                let request = self.request(message, budget).await?;
                self.identity
                    .clone()
                    .create_account(request)
                    .await
                    .map_err(|s| PeerError::from_status(IDENTITY, &s))
            })
            .await;
        match created {
            Ok(answer) => Ok(EnsuredAccount {
                account: answer.into_inner().account.ok_or(PeerError::Incomplete {
                    service: IDENTITY,
                    field: "CreateAccountResponse.account",
                })?,
                created: true,
            }),
            // The address has an account already — or an earlier attempt of this very call
            // created it with names since corrected (same request id, another request).
            // Either way that account is the one to grant to.
            Err(e) if e.is(Code::AlreadyExists) => {
                let account = self.lookup_email(email, deadline).await?;
                Ok(EnsuredAccount {
                    account,
                    created: false,
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn lookup_email(
        &self,
        email: &str,
        deadline: Option<RequestDeadline>,
    ) -> Result<identity_pb::Account, PeerError> {
        let message = identity_pb::LookupAccountRequest {
            key: Some(identity_pb::lookup_account_request::Key::Email(
                email.to_owned(),
            )),
        };
        self.bounded(IDENTITY, deadline, |budget| async move {
            let request = self.request(message, budget).await?;
            self.identity
                .clone()
                .lookup_account(request)
                .await
                .map_err(|s| PeerError::from_status(IDENTITY, &s))?
                .into_inner()
                .account
                .ok_or(PeerError::Incomplete {
                    service: IDENTITY,
                    field: "LookupAccountResponse.account",
                })
        })
        .await
    }

    /// One account; `None` when it does not exist.
    pub async fn account(
        &self,
        id: Uuid,
        deadline: Option<RequestDeadline>,
    ) -> Result<Option<identity_pb::Account>, PeerError> {
        let message = identity_pb::GetAccountRequest {
            account_id: id.to_string(),
        };
        let answer = self
            .bounded(IDENTITY, deadline, |budget| async move {
                let request = self.request(message, budget).await?;
                self.identity
                    .clone()
                    .get_account(request)
                    .await
                    .map_err(|s| PeerError::from_status(IDENTITY, &s))
            })
            .await;
        match answer {
            Ok(answer) => Ok(answer.into_inner().account),
            Err(e) if e.is(Code::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
