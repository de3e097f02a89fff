//! Grants: keyed grant, revocation (one, or all of an account's in the caller's scope) and the
//! lists built on them.
//!
//! A revocation commits first — the grant's removal, its audit event and a pending session
//! end in one transaction — and then asks identity to end the sessions acting through the
//! grant ([`crate::session_ender`]); if identity cannot be reached the pending row is retried
//! in the background. Every change drops the account's grants from this instance's permission
//! cache after its commit and before answering ([`crate::store::cache`]).

use cqrs_auth::{Permission, Principal, Role, role_grants};
use cqrs_edge::request::role_field;
use cqrs_proto::directory::v1 as pb;
use cqrs_runtime::audit::{Actor, Event};
use cqrs_runtime::errors::FieldViolations;
use cqrs_runtime::idempotency::fingerprint;
use cqrs_runtime::paging::{PageToken, page_request, page_request_bounded, paginate};
use cqrs_runtime::server::request_deadline;
use prost::Message;
use tonic::Request;

use super::authz::{self, Access};
use super::{DirectoryApi, DirectoryError, convert, id_field, principal, request_id_field};
use crate::domain::role_valid_at;
use crate::store::{self, GrantRow, Tx, grants as grant_store, organisations as org_store};
use crate::store::{AccountGrant, requests, revocations};

/// ListGrants / ListAdministrators page sizes (their contract: 0 means 1000, at most 1000), so
/// one page normally holds everything.
const LARGE_PAGE: i32 = 1000;
const KEYED_ROUNDS: usize = 3;
/// `reason` sent to identity's EndSessions.
const ROLE_REVOKED: &str = "ROLE_REVOKED";
const ALL_ROLES_REVOKED: &str = "ALL_ROLES_REVOKED";

fn grant_event<'a>(action: &'a str, target_id: &'a str, row: &GrantRow, via: &str) -> Event<'a> {
    Event {
        changes: cqrs_runtime::audit::Changes::new(),
        action,
        target_type: "grant",
        target_id,
        outcome: "success",
        details: serde_json::json!({
            "account_id": row.account_id,
            "organisation_id": row.organisation_id,
            "role": row.role,
            "via": via,
        }),
    }
}

/// Who may look at grants in a subtree: roles that view their scope (commissioners, the
/// service desk) or their practice's users (practice managers).
fn view_access(principal: &Principal) -> Result<(Access, Permission), DirectoryError> {
    let permission = match principal.active_role() {
        Some(role) if !role_grants(role, Permission::ViewScope) => Permission::ViewPracticeUsers,
        _ => Permission::ViewScope,
    };
    Ok((authz::by_role(principal, permission)?, permission))
}

impl DirectoryApi {
    /// Internal (the access workflow, after an accepted invitation or an approved request).
    pub(super) async fn do_grant_role(
        &self,
        request: Request<pb::GrantRoleRequest>,
    ) -> Result<pb::GrantRoleResponse, DirectoryError> {
        let principal = principal(&request)?;
        authz::internal_only(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let request_id = request_id_field(&mut violations, &req.request_id);
        let account_id = violations.uuid("account_id", &req.account_id);
        let organisation_id = violations.uuid("organisation_id", &req.organisation_id);
        let role = role_field(&mut violations, "role", req.role, true);
        let (Some(request_id), Some(account_id), Some(organisation_id), Some(role)) =
            (request_id, account_id, organisation_id, role)
        else {
            return Err(DirectoryError::invalid(violations));
        };

        let organisation = org_store::get(self.store().pool(), organisation_id)
            .await?
            .ok_or(DirectoryError::NotFound("organisation"))?;
        let kind = organisation.kind().ok_or_else(|| {
            DirectoryError::internal(std::io::Error::other("stored organisation kind unknown"))
        })?;
        if !role_valid_at(role, kind) {
            return Err(DirectoryError::FailedPrecondition(
                "ROLE_NOT_VALID_FOR_ORGANISATION",
                format!("a {kind} cannot hold the {role} role"),
            ));
        }

        let (account_text, org_text) = (account_id.to_string(), organisation_id.to_string());
        let hash = fingerprint(&["GRANT_ROLE", &account_text, &org_text, role.as_str()]);
        for _ in 0..KEYED_ROUNDS {
            if let Some(answer) = self.earlier_answer(request_id, &hash).await? {
                return Ok(answer);
            }
            let now = self.now();
            let mut tx = self.store().begin().await?;
            if !requests::claim(&mut tx, request_id, &hash, now).await? {
                continue;
            }
            let (row, created) =
                grant_store::insert(&mut tx, account_id, organisation_id, role, now).await?;
            if created {
                let id = row.id.to_string();
                store::record(
                    &mut tx,
                    now,
                    &actor,
                    grant_event("GRANT_ROLE", &id, &row, "GRANT_ROLE"),
                )
                .await?;
                tracing::info!(grant_id = %row.id, account_id = %account_id, organisation_id = %organisation_id, role = %role, "role granted");
            }
            let answer = pb::GrantRoleResponse {
                grant: Some(convert::grant(&row)),
            };
            requests::answer(&mut tx, request_id, &answer.encode_to_vec()).await?;
            let committed = store::commit(tx).await;
            // Even when the commit's answer was lost: it may have committed.
            if created {
                self.inner.cache.invalidate(account_id);
            }
            committed?;
            return Ok(answer);
        }
        Err(DirectoryError::internal(std::io::Error::other(
            "request id still contended after retries",
        )))
    }

    /// COMMISSIONING_ACCOUNT_ADMINISTRATOR in scope of the grant's organisation, or internal.
    pub(super) async fn do_revoke_role(
        &self,
        request: Request<pb::RevokeRoleRequest>,
    ) -> Result<pb::RevokeRoleResponse, DirectoryError> {
        let principal = principal(&request)?;
        let access = authz::by_role(&principal, Permission::RevokeRoles)?;
        let actor = Actor::from_request(&request, &principal);
        let deadline = request_deadline(&request);
        let id = id_field("grant_id", &request.get_ref().grant_id)?;
        let pool = self.store().pool();
        let (grant, held) = match access.held_grant() {
            None => (grant_store::get(pool, id).await?, true),
            Some(active) => grant_store::get_and_active(pool, id, active).await?,
        };
        authz::in_scope(
            &access,
            Permission::RevokeRoles,
            grant.as_ref().map(|g| g.organisation_path.as_slice()),
            held,
            "grant",
        )?;

        let now = self.now();
        let mut tx = self.store().begin().await?;
        // Gone since it was read: a parallel revocation won and ended the sessions.
        let row = grant_store::delete(&mut tx, id)
            .await?
            .ok_or(DirectoryError::NotFound("grant"))?;
        let target = row.id.to_string();
        store::record(
            &mut tx,
            now,
            &actor,
            grant_event("REVOKE_ROLE", &target, &row, "REVOKE_ROLE"),
        )
        .await?;
        let pending = self
            .pending_session_end(&mut tx, &row, ROLE_REVOKED, now)
            .await?;
        let committed = store::commit(tx).await;
        self.inner.cache.invalidate(row.account_id);
        committed?;
        tracing::info!(grant_id = %row.id, account_id = %row.account_id, role = %row.role, "role revoked");
        self.inner.ender.end_now(vec![pending], deadline).await;
        Ok(pb::RevokeRoleResponse {
            grant: Some(convert::grant(&row)),
        })
    }

    /// The seeds' "Revoke": every grant of the account in the caller's scope (all of them for
    /// internal callers) goes; the login stays. COMMISSIONING_ACCOUNT_ADMINISTRATOR or
    /// internal. Grants outside the caller's scope are untouched and not reported, so the
    /// answer says nothing about them; a repeat finds nothing left and answers an empty list.
    pub(super) async fn do_revoke_all_roles(
        &self,
        request: Request<pb::RevokeAllRolesRequest>,
    ) -> Result<pb::RevokeAllRolesResponse, DirectoryError> {
        let principal = principal(&request)?;
        let access = authz::by_role(&principal, Permission::RevokeRoles)?;
        let actor = Actor::from_request(&request, &principal);
        let deadline = request_deadline(&request);
        let account_id = id_field("account_id", &request.get_ref().account_id)?;
        if let Some((account, org, role)) = access.held_grant()
            && !grant_store::holds(self.store().pool(), account, org, role).await?
        {
            return Err(DirectoryError::PermissionDenied(authz::GRANT_REVOKED));
        }

        let now = self.now();
        let mut tx = self.store().begin().await?;
        let rows =
            grant_store::delete_for_account(&mut tx, account_id, access.scope_root()).await?;
        let mut pending = Vec::with_capacity(rows.len());
        for row in &rows {
            let target = row.id.to_string();
            store::record(
                &mut tx,
                now,
                &actor,
                grant_event("REVOKE_ROLE", &target, row, "REVOKE_ALL_ROLES"),
            )
            .await?;
            pending.push(
                self.pending_session_end(&mut tx, row, ALL_ROLES_REVOKED, now)
                    .await?,
            );
        }
        let account_text = account_id.to_string();
        store::record(
            &mut tx,
            now,
            &actor,
            Event {
                changes: cqrs_runtime::audit::Changes::new(),
                action: "REVOKE_ALL_ROLES",
                target_type: "account",
                target_id: &account_text,
                outcome: "success",
                details: serde_json::json!({
                    "removed": rows.len(),
                    "scope": access.scope_root(),
                }),
            },
        )
        .await?;
        let committed = store::commit(tx).await;
        self.inner.cache.invalidate(account_id);
        committed?;
        tracing::info!(account_id = %account_id, removed = rows.len(), "roles revoked");
        self.inner.ender.end_now(pending, deadline).await;
        Ok(pb::RevokeAllRolesResponse {
            grants: rows.iter().map(convert::grant).collect(),
        })
    }

    async fn pending_session_end(
        &self,
        tx: &mut Tx,
        row: &GrantRow,
        reason: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<store::RevocationRow, DirectoryError> {
        Ok(revocations::enqueue(
            tx,
            row.account_id,
            row.organisation_id,
            &row.role,
            reason,
            now,
            self.inner.ender.first_attempt_at(now),
        )
        .await?)
    }

    /// The account itself, internal callers and the service desk see every grant; other
    /// roles that view a subtree see the grants in it.
    pub(super) async fn do_list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Result<pb::ListGrantsResponse, DirectoryError> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let account_id = violations.uuid("account_id", &req.account_id);
        let (page_size, after) = page_request_bounded(
            &mut violations,
            req.page_size,
            &req.page_token,
            LARGE_PAGE,
            LARGE_PAGE,
        );
        let is_self = account_id.is_some() && principal.account_id() == account_id;
        // Everyone may see their own grants (their available roles): unscoped, with no grant
        // of their own to re-check.
        let access = if is_self {
            Access::Internal
        } else {
            view_access(&principal)?.0
        };
        let (Some(account_id), true) = (account_id, violations.is_empty()) else {
            return Err(DirectoryError::invalid(violations));
        };
        if let Some((account, org, role)) = access.held_grant()
            && !grant_store::holds(self.store().pool(), account, org, role).await?
        {
            return Err(DirectoryError::PermissionDenied(authz::GRANT_REVOKED));
        }
        // From the decision cache (its rules: store/cache.rs), newest first like the table's
        // index: an account holds a handful of grants, so a page is a filter over them.
        let grants = self
            .inner
            .cache
            .grants(self.store().pool(), account_id)
            .await?;
        let scope = access.scope_root();
        let in_page: Vec<&AccountGrant> = grants
            .iter()
            .filter(|g| scope.is_none_or(|root| g.organisation.path.contains(&root)))
            .filter(|g| {
                after
                    .as_ref()
                    .is_none_or(|t| (g.created_at, g.id) < (t.time, t.id))
            })
            .take(usize::try_from(page_size).unwrap_or(0).saturating_add(1))
            .collect();
        let page = paginate(in_page, page_size, |g| PageToken {
            time: g.created_at,
            id: g.id,
        });
        Ok(pb::ListGrantsResponse {
            grants: page
                .items
                .iter()
                .map(|g| convert::account_grant(account_id, g))
                .collect(),
            next_page_token: page.next_page_token(),
        })
    }

    /// Any commissioning role in scope, the practice manager of that practice, the service
    /// desk, or internal.
    pub(super) async fn do_list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<pb::ListMembersResponse, DirectoryError> {
        let principal = principal(&request)?;
        let (access, permission) = view_access(&principal)?;
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let organisation_id = violations.uuid("organisation_id", &req.organisation_id);
        let role = role_field(&mut violations, "role", req.role, false);
        let (page_size, after) = page_request(&mut violations, req.page_size, &req.page_token);
        let (Some(organisation_id), true) = (organisation_id, violations.is_empty()) else {
            return Err(DirectoryError::invalid(violations));
        };
        self.authorise_org(&access, permission, organisation_id, "organisation")
            .await?;
        let page = grant_store::members(
            self.store().pool(),
            organisation_id,
            req.include_descendants,
            role,
            page_size,
            after.as_ref(),
        )
        .await?;
        Ok(pb::ListMembersResponse {
            grants: page.items.iter().map(convert::grant).collect(),
            next_page_token: page.next_page_token(),
        })
    }

    /// Internal (the access workflow notifies them): account-administrator grants at the
    /// organisation or an ancestor — approver grants when the role under review is the
    /// approver role, which only approvers may approve into.
    pub(super) async fn do_list_administrators(
        &self,
        request: Request<pb::ListAdministratorsRequest>,
    ) -> Result<pb::ListAdministratorsResponse, DirectoryError> {
        let principal = principal(&request)?;
        authz::internal_only(&principal)?;
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let organisation_id = violations.uuid("organisation_id", &req.organisation_id);
        let role = role_field(&mut violations, "role", req.role, false);
        let (page_size, after) = page_request_bounded(
            &mut violations,
            req.page_size,
            &req.page_token,
            LARGE_PAGE,
            LARGE_PAGE,
        );
        let (Some(organisation_id), true) = (organisation_id, violations.is_empty()) else {
            return Err(DirectoryError::invalid(violations));
        };
        self.authorise_org(
            &Access::Internal,
            Permission::ViewScope,
            organisation_id,
            "organisation",
        )
        .await?;
        let administrator = if role == Some(Role::CommissioningApprover) {
            Role::CommissioningApprover
        } else {
            Role::CommissioningAccountAdministrator
        };
        let page = grant_store::at_ancestry(
            self.store().pool(),
            organisation_id,
            administrator,
            page_size,
            after.as_ref(),
        )
        .await?;
        Ok(pb::ListAdministratorsResponse {
            grants: page.items.iter().map(convert::grant).collect(),
            next_page_token: page.next_page_token(),
        })
    }
}
