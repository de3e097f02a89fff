//! gRPC handlers: decode, authorise (see [`authz`]), call the domain and the store, map errors
//! once ([`DirectoryError`]).
//!
//! Every change commits with its audit event in one transaction. Refusals of changes for lack
//! of permission are audited too (outcome `denied`), in a transaction of their own.

pub mod authz;
pub mod convert;
mod error;
mod grants;
mod organisations;
mod permissions;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_auth::Permission;
use cqrs_edge::audit::{self, AuditQuery};
use cqrs_edge::refusals::{self, Denied};
use cqrs_edge::request::{id_field, principal, request_id_field};
use cqrs_proto::directory::v1::{self as pb, directory_service_server::DirectoryService};
use cqrs_runtime::clock::Clock;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub use error::{DOMAIN, DirectoryError, DirectoryReason};

use crate::session_ender::SessionEnder;
use crate::store::cache::AbortOnDrop;
use crate::store::{self, CacheSettings, DecisionCache, Store, organisations as org_store};
use authz::Access;

type ApiResult<T> = Result<Response<T>, Status>;

/// The directory's gRPC API. Cheap to clone.
#[derive(Clone)]
pub struct DirectoryApi {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    ender: SessionEnder,
    clock: Arc<dyn Clock>,
    /// What CheckPermission decides on, in memory (see [`store::cache`]).
    cache: DecisionCache,
    /// Stops the cache's listener when the API is dropped.
    _listener: Option<AbortOnDrop>,
}

impl DirectoryApi {
    /// The API with the default [`CacheSettings`].
    pub fn new(store: Store, ender: SessionEnder, clock: Arc<dyn Clock>) -> Self {
        Self::with_cache(store, ender, clock, CacheSettings::default())
    }

    /// The API over `store`. Its permission cache starts listening for grant changes at once
    /// (a background task on the current tokio runtime, stopped when the last clone of the
    /// API is dropped); outside a runtime nothing listens and every check reads Postgres.
    pub fn with_cache(
        store: Store,
        ender: SessionEnder,
        clock: Arc<dyn Clock>,
        settings: CacheSettings,
    ) -> Self {
        let cache = DecisionCache::new(settings);
        let listener = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let task = runtime.spawn(cache.clone().listen(store.pool().clone()));
            AbortOnDrop(task.abort_handle())
        });
        DirectoryApi {
            inner: Arc::new(Inner {
                store,
                ender,
                clock,
                cache,
                _listener: listener,
            }),
        }
    }

    /// The in-memory view CheckPermission decides on.
    pub fn cache(&self) -> &DecisionCache {
        &self.inner.cache
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Step 2 of [`authz`] for an organisation target: loads its ancestry and re-checks the
    /// caller's grant in one query, then decides. Returns the ancestry.
    async fn authorise_org(
        &self,
        access: &Access,
        permission: Permission,
        target: Uuid,
        what: &'static str,
    ) -> Result<Vec<Uuid>, DirectoryError> {
        let (ancestry, held) =
            org_store::ancestry_and_grant(self.store().pool(), target, access.held_grant()).await?;
        authz::in_scope(access, permission, ancestry.as_deref(), held, what)?;
        Ok(ancestry.unwrap_or_default())
    }

    /// Step 2 of [`authz`] for an action on the suite as a whole (empty ancestry).
    async fn authorise_suite(
        &self,
        access: &Access,
        permission: Permission,
    ) -> Result<(), DirectoryError> {
        let held = match access.held_grant() {
            None => true,
            Some((account, org, role)) => {
                store::grants::holds(self.store().pool(), account, org, role).await?
            }
        };
        Ok(authz::in_scope(
            access,
            permission,
            Some(&[]),
            held,
            "suite",
        )?)
    }

    /// Answers a change, auditing a refusal for lack of permission.
    async fn audited<T>(
        &self,
        denied: Option<Denied>,
        result: Result<T, DirectoryError>,
    ) -> ApiResult<T> {
        refusals::audited(self.store().pool(), self.now(), denied, result).await
    }
}

#[tonic::async_trait]
impl DirectoryService for DirectoryApi {
    async fn create_organisation(
        &self,
        request: Request<pb::CreateOrganisationRequest>,
    ) -> ApiResult<pb::CreateOrganisationResponse> {
        let denied = Denied::of(
            &request,
            "CREATE_ORGANISATION",
            "organisation",
            &request.get_ref().ods_code,
        );
        let result = self.do_create_organisation(request).await;
        self.audited(denied, result).await
    }

    async fn get_organisation(
        &self,
        request: Request<pb::GetOrganisationRequest>,
    ) -> ApiResult<pb::GetOrganisationResponse> {
        Ok(Response::new(self.do_get_organisation(request).await?))
    }

    async fn search_organisations(
        &self,
        request: Request<pb::SearchOrganisationsRequest>,
    ) -> ApiResult<pb::SearchOrganisationsResponse> {
        Ok(Response::new(self.do_search_organisations(request).await?))
    }

    async fn list_organisations(
        &self,
        request: Request<pb::ListOrganisationsRequest>,
    ) -> ApiResult<pb::ListOrganisationsResponse> {
        Ok(Response::new(self.do_list_organisations(request).await?))
    }

    async fn set_approval_level(
        &self,
        request: Request<pb::SetApprovalLevelRequest>,
    ) -> ApiResult<pb::SetApprovalLevelResponse> {
        let denied = Denied::of(
            &request,
            "SET_APPROVAL_LEVEL",
            "organisation",
            &request.get_ref().organisation_id,
        );
        let result = self.do_set_approval_level(request).await;
        self.audited(denied, result).await
    }

    async fn grant_role(
        &self,
        request: Request<pb::GrantRoleRequest>,
    ) -> ApiResult<pb::GrantRoleResponse> {
        let denied = Denied::of(
            &request,
            "GRANT_ROLE",
            "account",
            &request.get_ref().account_id,
        );
        let result = self.do_grant_role(request).await;
        self.audited(denied, result).await
    }

    async fn revoke_role(
        &self,
        request: Request<pb::RevokeRoleRequest>,
    ) -> ApiResult<pb::RevokeRoleResponse> {
        let denied = Denied::of(
            &request,
            "REVOKE_ROLE",
            "grant",
            &request.get_ref().grant_id,
        );
        let result = self.do_revoke_role(request).await;
        self.audited(denied, result).await
    }

    async fn revoke_all_roles(
        &self,
        request: Request<pb::RevokeAllRolesRequest>,
    ) -> ApiResult<pb::RevokeAllRolesResponse> {
        let denied = Denied::of(
            &request,
            "REVOKE_ALL_ROLES",
            "account",
            &request.get_ref().account_id,
        );
        let result = self.do_revoke_all_roles(request).await;
        self.audited(denied, result).await
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> ApiResult<pb::ListGrantsResponse> {
        Ok(Response::new(self.do_list_grants(request).await?))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> ApiResult<pb::ListMembersResponse> {
        Ok(Response::new(self.do_list_members(request).await?))
    }

    async fn check_permission(
        &self,
        request: Request<pb::CheckPermissionRequest>,
    ) -> ApiResult<pb::CheckPermissionResponse> {
        Ok(Response::new(self.do_check_permission(request).await?))
    }

    async fn list_administrators(
        &self,
        request: Request<pb::ListAdministratorsRequest>,
    ) -> ApiResult<pb::ListAdministratorsResponse> {
        Ok(Response::new(self.do_list_administrators(request).await?))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> ApiResult<pb::ListAuditEventsResponse> {
        Ok(Response::new(self.do_list_audit_events(request).await?))
    }
}

impl DirectoryApi {
    /// SERVICE_DESK (the only suite-wide holder of `ViewAuditEvents`), or internal: the trail
    /// is not split by organisation, so a subtree's administrator cannot be given part of it.
    async fn do_list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<pb::ListAuditEventsResponse, DirectoryError> {
        let principal = principal(&request)?;
        let access = authz::by_role(&principal, Permission::ViewAuditEvents)?;
        let query = AuditQuery::from(request.get_ref()).check()?;
        self.authorise_suite(&access, Permission::ViewAuditEvents)
            .await?;
        let (audit_events, next_page_token) = audit::page(self.store().pool(), &query).await?;
        Ok(pb::ListAuditEventsResponse {
            audit_events,
            next_page_token,
        })
    }
}
