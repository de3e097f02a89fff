//! gRPC handlers: decode, authorise (see [`authz`]), apply the domain's transition to the
//! locked row, store it, map errors once ([`AccessError`]).
//!
//! Every change commits with its audit event (and its mail, through the outbox) in one
//! transaction. Refusals of changes for lack of permission are audited too (outcome
//! `denied`), in a transaction of their own.
//!
//! Cross-service effects (creating the account, granting the role) happen while the
//! workflow row is locked (`SELECT … FOR UPDATE`), before the transition commits: a racing
//! transition of the same row (a second accept of one link, a withdrawal racing a review)
//! waits on the lock and then finds the row final, so exactly one wins. The lock is held at
//! most for the calls' deadline (`ACCESS_CALL_TIMEOUT_SECS`, or less if the caller's deadline
//! is sooner); if a call fails the transaction rolls back and the row stays as it was. The
//! calls are keyed on ids derived from the row, so the retry that follows creates nothing
//! twice.

mod access_requests;
pub mod authz;
pub mod convert;
mod error;
mod invitations;
mod registrations;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_auth::{ActiveGrant, NO_GRANT_IN_SCOPE, Permission, Role};
use cqrs_edge::audit::{self, AuditQuery};
use cqrs_edge::rate_limit::RateLimits;
use cqrs_edge::refusals::{self, Denied};
use cqrs_edge::request::{self, id_field, principal};
use cqrs_proto::access::v1::{self as pb, access_service_server::AccessService};
use cqrs_proto::directory::v1 as directory_pb;
use cqrs_proto::identity::v1 as identity_pb;
use cqrs_runtime::clock::Clock;
use cqrs_runtime::errors::FieldViolations;
use cqrs_runtime::server::RequestDeadline;
use futures::StreamExt;
use prost::Message;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub use error::{AccessError, AccessReason, DOMAIN, LINK_INVALID};

use crate::clients::{Check, Peers};
use crate::config::WorkflowSettings;
use crate::domain::Workflow;
use crate::domain::rules::{OrganisationKind, normalise_email, normalise_name};
use crate::store::{AccessRequestRow, RegistrationRow, Store};
use authz::Access;

type ApiResult<T> = Result<Response<T>, Status>;

/// A keyed create whose request id is contended waits for the holder, then finds its answer
/// on the next round: two rounds always suffice, the third is a safety margin.
const KEYED_ROUNDS: usize = 3;

/// The access service's gRPC API. Cheap to clone.
#[derive(Clone)]
pub struct AccessApi {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    peers: Peers,
    settings: WorkflowSettings,
    clock: Arc<dyn Clock>,
    limits: RateLimits,
}

impl AccessApi {
    pub fn new(
        store: Store,
        peers: Peers,
        settings: WorkflowSettings,
        limits: RateLimits,
        clock: Arc<dyn Clock>,
    ) -> Self {
        AccessApi {
            inner: Arc::new(Inner {
                store,
                peers,
                settings,
                clock,
                limits,
            }),
        }
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    fn settings(&self) -> &WorkflowSettings {
        &self.inner.settings
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Step 2 of [`authz`] for an organisation target: the directory's decision for the
    /// caller's account and active grant. Internal callers are not asked about.
    async fn authorise_org(
        &self,
        access: &Access,
        permission: Permission,
        organisation: Uuid,
        deadline: Option<RequestDeadline>,
    ) -> Result<(), AccessError> {
        let Access::Grant { account_id, grant } = access else {
            return Ok(());
        };
        let check = self
            .peers()
            .directory
            .check_permission(*account_id, *grant, permission, organisation, deadline)
            .await?;
        verdict(access, check)
    }

    /// Step 2 for a target organisation the handler also needs to read: the decision and the
    /// organisation, fetched side by side. A missing organisation is NOT_FOUND only to those
    /// who may see everything.
    async fn authorised_organisation(
        &self,
        access: &Access,
        permission: Permission,
        organisation: Uuid,
        deadline: Option<RequestDeadline>,
    ) -> Result<directory_pb::Organisation, AccessError> {
        let (decision, found) = tokio::join!(
            self.authorise_org(access, permission, organisation, deadline),
            self.peers().directory.organisation(organisation, deadline),
        );
        decision?;
        found?.ok_or(AccessError::NotFound("organisation"))
    }

    /// Step 2 for a list over the caller's whole scope: its grant must still exist.
    async fn authorise_scope(
        &self,
        access: &Access,
        workflow_permissions: &[Permission],
        deadline: Option<RequestDeadline>,
    ) -> Result<(), AccessError> {
        let Access::Grant { grant, .. } = access else {
            return Ok(());
        };
        let permission = held_permission(grant, workflow_permissions)?;
        self.authorise_org(access, permission, grant.organisation_id, deadline)
            .await
    }

    /// Step 2 for reading one stored workflow row (`row`, `None` when there is none): the row
    /// only if `workflow`'s lists would show it to the caller. One outside the caller's scope,
    /// or of a role its lists leave out, answers exactly like a missing one
    /// ([`authz::covers_row`]); then, as for a review, the permission for the row's role and
    /// the directory's decision on its organisation (which refuses a revoked grant).
    async fn authorised_read<R: WorkflowRow>(
        &self,
        access: &Access,
        workflow: Workflow,
        row: Option<R>,
        what: &'static str,
        deadline: Option<RequestDeadline>,
    ) -> Result<R, AccessError> {
        let row = row.filter(|row| authz::lists_role(access, workflow, row.stored_role()));
        authz::covers_row(access, row.as_ref().map(WorkflowRow::path), what)?;
        let row = row.ok_or(AccessError::NotFound(what))?;
        let role = row
            .stored_role()
            .ok_or_else(|| AccessError::corrupt("stored role unknown"))?;
        let permission = authz::for_role(access, workflow, role)?;
        self.authorise_org(access, permission, row.organisation(), deadline)
            .await?;
        Ok(row)
    }

    /// The scope root of a list: `organisation_id` if asked for (and in the caller's scope),
    /// else the caller's whole scope.
    async fn list_root(
        &self,
        access: &Access,
        workflow_permissions: &[Permission],
        organisation: Option<Uuid>,
        deadline: Option<RequestDeadline>,
    ) -> Result<Option<Uuid>, AccessError> {
        match (organisation, access) {
            (Some(org), Access::Internal) => Ok(Some(org)),
            (Some(org), Access::Grant { grant, .. }) => {
                let permission = held_permission(grant, workflow_permissions)?;
                self.authorise_org(access, permission, org, deadline)
                    .await?;
                Ok(Some(org))
            }
            (None, _) => {
                self.authorise_scope(access, workflow_permissions, deadline)
                    .await?;
                Ok(access.scope_root())
            }
        }
    }

    /// The answer a keyed create gave first ([`request::earlier_answer`]).
    async fn earlier_answer<M: Message + Default>(
        &self,
        request_id: Uuid,
        hash: &[u8; 32],
    ) -> Result<Option<M>, AccessError> {
        request::earlier_answer(self.store().pool(), request_id, hash).await
    }

    /// Answers a change, auditing a refusal for lack of permission.
    async fn audited<T>(
        &self,
        denied: Option<Denied>,
        result: Result<T, AccessError>,
    ) -> ApiResult<T> {
        refusals::audited(self.store().pool(), self.now(), denied, result).await
    }

    /// A normalised address that is no generic mailbox, or a violation (and the reason to
    /// answer with).
    fn email_field(
        &self,
        violations: &mut FieldViolations,
        reason: &mut &'static str,
        raw: &str,
    ) -> Option<String> {
        match normalise_email(raw) {
            Ok(email) if self.settings().generic_mailboxes.is_generic(&email) => {
                *reason = "GENERIC_EMAIL_NOT_PERMITTED";
                violations.add(
                    "email",
                    "GENERIC_EMAIL_NOT_PERMITTED: generic or shared mailboxes are not \
                     permitted; use the person's own address",
                );
                None
            }
            Ok(email) => Some(email),
            Err(e) => {
                violations.add("email", e.to_string());
                None
            }
        }
    }
}

/// What step 2 reads off a stored workflow row: its copy of its organisation's ancestry,
/// the organisation, and the role it is about.
trait WorkflowRow {
    /// The organisation, its parent, … the root.
    fn path(&self) -> &[Uuid];
    fn organisation(&self) -> Uuid;
    fn stored_role(&self) -> Option<Role>;
}

impl WorkflowRow for RegistrationRow {
    fn path(&self) -> &[Uuid] {
        &self.organisation_path
    }

    fn organisation(&self) -> Uuid {
        self.organisation_id
    }

    fn stored_role(&self) -> Option<Role> {
        self.role()
    }
}

impl WorkflowRow for AccessRequestRow {
    fn path(&self) -> &[Uuid] {
        &self.organisation_path
    }

    fn organisation(&self) -> Uuid {
        self.organisation_id
    }

    fn stored_role(&self) -> Option<Role> {
        self.role()
    }
}

/// Longest in-app notification title (the notification service's limit).
pub(super) const MAX_TITLE_CHARS: usize = 200;
/// Most accounts one in-app notification may name (the notification service's limit).
const MAX_IN_APP_RECIPIENTS: usize = 1000;
/// Account look-ups in flight at once when addressing reviewers.
const ACCOUNT_LOOKUPS_IN_FLIGHT: usize = 8;

/// An administrator to tell about a new request, and where to mail them (`None`: no mail,
/// e.g. a disabled account).
pub(super) struct Reviewer {
    pub account_id: Uuid,
    pub email: Option<String>,
}

impl AccessApi {
    /// The administrators who may decide a request for `role` at `organisation` (the
    /// directory's ListAdministrators), `except` the requester; with their addresses if
    /// `with_addresses` (identity's GetAccount, a few at a time).
    async fn reviewers(
        &self,
        organisation: Uuid,
        role: Role,
        except: Option<Uuid>,
        with_addresses: bool,
        deadline: Option<RequestDeadline>,
    ) -> Result<Vec<Reviewer>, AccessError> {
        let mut ids = self
            .peers()
            .directory
            .administrators(organisation, role, deadline)
            .await?;
        ids.retain(|id| Some(*id) != except);
        if !with_addresses {
            return Ok(ids
                .into_iter()
                .map(|account_id| Reviewer {
                    account_id,
                    email: None,
                })
                .collect());
        }
        let found: Vec<_> = futures::stream::iter(ids)
            .map(|id| async move { (id, self.peers().identity.account(id, deadline).await) })
            .buffer_unordered(ACCOUNT_LOOKUPS_IN_FLIGHT)
            .collect()
            .await;
        let mut reviewers = Vec::with_capacity(found.len());
        for (account_id, account) in found {
            let email = account?
                .filter(|a| a.state != identity_pb::AccountState::Disabled as i32)
                .map(|a| a.email);
            reviewers.push(Reviewer { account_id, email });
        }
        reviewers.sort_by_key(|r| r.account_id);
        Ok(reviewers)
    }
}

/// In-app notifications for `reviewers` about the record `subject_id`, in as many messages as
/// the notification service's recipient limit needs.
pub(super) fn in_app(
    reviewers: &[Reviewer],
    kind: &str,
    subject_id: &str,
    title: &str,
    body: &str,
) -> Vec<cqrs_outbox::OutboxMessage> {
    reviewers
        .chunks(MAX_IN_APP_RECIPIENTS)
        .map(|chunk| cqrs_outbox::OutboxMessage::InApp {
            account_ids: chunk.iter().map(|r| r.account_id).collect(),
            kind: kind.to_owned(),
            title: title.to_owned(),
            body: body.to_owned(),
            subject_id: subject_id.to_owned(),
        })
        .collect()
}

/// A required Decision field.
fn decision_field(violations: &mut FieldViolations, value: i32) -> Option<crate::domain::Decision> {
    match convert::decision_from_proto(value) {
        Ok(Some(decision)) => Some(decision),
        Ok(None) => {
            violations.add("decision", "is required");
            None
        }
        Err(convert::UnknownValue) => {
            violations.add("decision", "must be a known Decision");
            None
        }
    }
}

/// The directory's check as an answer (see [`authz`]).
fn verdict(access: &Access, check: Check) -> Result<(), AccessError> {
    match check {
        Check::Allowed => Ok(()),
        Check::Denied(reason) => Err(AccessError::PermissionDenied(authz::known_refusal(&reason))),
        Check::NoOrganisation if access.sees_everything() => {
            Err(AccessError::NotFound("organisation"))
        }
        Check::NoOrganisation => Err(AccessError::PermissionDenied(NO_GRANT_IN_SCOPE)),
    }
}

/// The first of `permissions` the grant's role carries (step 1 made sure there is one).
fn held_permission(
    grant: &ActiveGrant,
    permissions: &[Permission],
) -> Result<Permission, AccessError> {
    permissions
        .iter()
        .copied()
        .find(|p| cqrs_auth::role_grants(grant.role, *p))
        .ok_or(AccessError::PermissionDenied(
            cqrs_auth::ROLE_LACKS_PERMISSION,
        ))
}

/// A required first or last name.
fn name_field(violations: &mut FieldViolations, field: &str, raw: &str) -> Option<String> {
    normalise_name(raw)
        .map_err(|e| violations.add(field, e))
        .ok()
}

/// The organisation's kind and ancestry as the directory gave them.
fn organisation_facts(
    organisation: &directory_pb::Organisation,
) -> Result<(OrganisationKind, Vec<Uuid>), AccessError> {
    use directory_pb::OrganisationKind as P;
    let kind = match P::try_from(organisation.kind) {
        Ok(P::Region) => OrganisationKind::Region,
        Ok(P::CommissioningOrganisation) => OrganisationKind::CommissioningOrganisation,
        Ok(P::ServiceProvider) => OrganisationKind::ServiceProvider,
        Ok(P::ServiceDesk) => OrganisationKind::ServiceDesk,
        _ => {
            return Err(AccessError::corrupt(
                "the directory gave no organisation kind",
            ));
        }
    };
    let path: Vec<Uuid> = organisation
        .path
        .iter()
        .map(|id| Uuid::parse_str(id))
        .collect::<Result<_, _>>()
        .map_err(AccessError::internal)?;
    if path.first().map(Uuid::to_string).as_deref() != Some(organisation.id.as_str()) {
        return Err(AccessError::corrupt(
            "the directory gave an organisation path that does not start at it",
        ));
    }
    Ok((kind, path))
}

/// Refuses a role the organisation's kind cannot hold (the directory's rule).
fn check_role_at(role: Role, kind: OrganisationKind) -> Result<(), AccessError> {
    if crate::domain::rules::role_valid_at(role, kind) {
        Ok(())
    } else {
        Err(AccessError::invalid_field(
            "role",
            &format!("a {kind} organisation cannot hold the {role} role"),
        ))
    }
}

/// `(page_size, after)` of a List request with the workflow lists' sizes (0 means 50, at most
/// 100).
fn page_fields(
    violations: &mut FieldViolations,
    page_size: i32,
    page_token: &str,
) -> (i64, Option<cqrs_runtime::paging::PageToken>) {
    cqrs_runtime::paging::page_request(violations, page_size, page_token)
}

#[tonic::async_trait]
impl AccessService for AccessApi {
    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> ApiResult<pb::CreateInvitationResponse> {
        let denied = Denied::of(
            &request,
            "CREATE_INVITATION",
            "INVITATION",
            &request.get_ref().organisation_id,
        );
        let result = self.do_create_invitation(request).await;
        self.audited(denied, result).await
    }

    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> ApiResult<pb::ListInvitationsResponse> {
        Ok(Response::new(self.do_list_invitations(request).await?))
    }

    async fn resend_invitation(
        &self,
        request: Request<pb::ResendInvitationRequest>,
    ) -> ApiResult<pb::ResendInvitationResponse> {
        let denied = Denied::of(
            &request,
            "RESEND_INVITATION",
            "INVITATION",
            &request.get_ref().invitation_id,
        );
        let result = self.do_resend_invitation(request).await;
        self.audited(denied, result).await
    }

    async fn cancel_invitation(
        &self,
        request: Request<pb::CancelInvitationRequest>,
    ) -> ApiResult<pb::CancelInvitationResponse> {
        let denied = Denied::of(
            &request,
            "CANCEL_INVITATION",
            "INVITATION",
            &request.get_ref().invitation_id,
        );
        let result = self.do_cancel_invitation(request).await;
        self.audited(denied, result).await
    }

    async fn get_invitation(
        &self,
        request: Request<pb::GetInvitationRequest>,
    ) -> ApiResult<pb::GetInvitationResponse> {
        Ok(Response::new(self.do_get_invitation(request).await?))
    }

    async fn accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> ApiResult<pb::AcceptInvitationResponse> {
        Ok(Response::new(self.do_accept_invitation(request).await?))
    }

    async fn submit_registration(
        &self,
        request: Request<pb::SubmitRegistrationRequest>,
    ) -> ApiResult<pb::SubmitRegistrationResponse> {
        // A registration mails its applicant: the same budgets as identity's mail RPCs.
        self.inner
            .limits
            .check(&request, Some(&request.get_ref().email))
            .map_err(AccessError::from)?;
        // Its time must not tell whether the address already has an account.
        let started = tokio::time::Instant::now();
        let answer = self.do_submit_registration(request).await;
        let answer = self.inner.limits.answer_no_sooner(started, answer).await;
        Ok(Response::new(answer?))
    }

    async fn list_registrations(
        &self,
        request: Request<pb::ListRegistrationsRequest>,
    ) -> ApiResult<pb::ListRegistrationsResponse> {
        Ok(Response::new(self.do_list_registrations(request).await?))
    }

    async fn get_registration(
        &self,
        request: Request<pb::GetRegistrationRequest>,
    ) -> ApiResult<pb::GetRegistrationResponse> {
        Ok(Response::new(self.do_get_registration(request).await?))
    }

    async fn review_registration(
        &self,
        request: Request<pb::ReviewRegistrationRequest>,
    ) -> ApiResult<pb::ReviewRegistrationResponse> {
        let denied = Denied::of(
            &request,
            "REVIEW_REGISTRATION",
            "REGISTRATION",
            &request.get_ref().registration_id,
        );
        let result = self.do_review_registration(request).await;
        self.audited(denied, result).await
    }

    async fn request_access(
        &self,
        request: Request<pb::RequestAccessRequest>,
    ) -> ApiResult<pb::RequestAccessResponse> {
        let denied = Denied::of(
            &request,
            "REQUEST_ACCESS",
            "ACCESS_REQUEST",
            &request.get_ref().organisation_id,
        );
        let result = self.do_request_access(request).await;
        self.audited(denied, result).await
    }

    async fn withdraw_access_request(
        &self,
        request: Request<pb::WithdrawAccessRequestRequest>,
    ) -> ApiResult<pb::WithdrawAccessRequestResponse> {
        let denied = Denied::of(
            &request,
            "WITHDRAW_ACCESS_REQUEST",
            "ACCESS_REQUEST",
            &request.get_ref().access_request_id,
        );
        let result = self.do_withdraw_access_request(request).await;
        self.audited(denied, result).await
    }

    async fn list_my_access_requests(
        &self,
        request: Request<pb::ListMyAccessRequestsRequest>,
    ) -> ApiResult<pb::ListMyAccessRequestsResponse> {
        Ok(Response::new(
            self.do_list_my_access_requests(request).await?,
        ))
    }

    async fn list_access_requests(
        &self,
        request: Request<pb::ListAccessRequestsRequest>,
    ) -> ApiResult<pb::ListAccessRequestsResponse> {
        Ok(Response::new(self.do_list_access_requests(request).await?))
    }

    async fn get_access_request(
        &self,
        request: Request<pb::GetAccessRequestRequest>,
    ) -> ApiResult<pb::GetAccessRequestResponse> {
        Ok(Response::new(self.do_get_access_request(request).await?))
    }

    async fn review_access_request(
        &self,
        request: Request<pb::ReviewAccessRequestRequest>,
    ) -> ApiResult<pb::ReviewAccessRequestResponse> {
        let denied = Denied::of(
            &request,
            "REVIEW_ACCESS_REQUEST",
            "ACCESS_REQUEST",
            &request.get_ref().access_request_id,
        );
        let result = self.do_review_access_request(request).await;
        self.audited(denied, result).await
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> ApiResult<pb::ListAuditEventsResponse> {
        Ok(Response::new(self.do_list_audit_events(request).await?))
    }
}

impl AccessApi {
    /// SERVICE_DESK, or internal.
    async fn do_list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<pb::ListAuditEventsResponse, AccessError> {
        let principal = principal(&request)?;
        let access = authz::by_permissions(&principal, &[Permission::ViewAuditEvents])?;
        access.suite_wide()?;
        let deadline = cqrs_runtime::server::request_deadline(&request);
        let query = AuditQuery::from(request.get_ref()).check()?;
        self.authorise_scope(&access, &[Permission::ViewAuditEvents], deadline)
            .await?;
        let (audit_events, next_page_token) = audit::page(self.store().pool(), &query).await?;
        Ok(pb::ListAuditEventsResponse {
            audit_events,
            next_page_token,
        })
    }
}
