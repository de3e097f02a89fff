//! CheckPermission: the shared decision (`cqrs_auth::decide`) over an account's grants, for
//! other services and for users asking about themselves.
//!
//! The grants and the target's ancestry come from the in-memory [`DecisionCache`] (its rules
//! and consistency window are at the top of `store::cache`), or from Postgres when it does not
//! hold them.

use cqrs_auth::{ActiveGrant, Permission, Role, counts_approver_grants, decide, decide_any};
use cqrs_proto::directory::v1 as pb;
use cqrs_runtime::errors::FieldViolations;
use tonic::Request;
use uuid::Uuid;

use super::{DirectoryApi, DirectoryError, authz, convert, principal};
use crate::store::{AccountGrant, DecisionCache};

/// Reason when a user asks about someone else.
const SELF_OR_INTERNAL_REQUIRED: &str = "SELF_OR_INTERNAL_REQUIRED";

/// The decision for one account: allowed + reason, and the grant that allows it.
fn decide_for_account<'g>(
    grants: &'g [AccountGrant],
    permission: Permission,
    target: &[Uuid],
    active: Option<ActiveGrant>,
) -> (bool, &'static str, Option<&'g AccountGrant>) {
    let parsed: Vec<(&'g AccountGrant, Uuid, Role)> = grants
        .iter()
        .map(|g| (g, g.organisation_id(), g.role))
        .collect();
    let any_of = |candidates: Vec<&(&'g AccountGrant, Uuid, Role)>| {
        let pairs: Vec<(Uuid, Role)> = candidates.iter().map(|(_, o, r)| (*o, *r)).collect();
        let (decision, index) = decide_any(&pairs, permission, target);
        let grant = index.and_then(|i| candidates.get(i)).map(|(g, _, _)| *g);
        (decision.allowed, decision.reason, grant)
    };
    let Some(active) = active else {
        return any_of(parsed.iter().collect());
    };
    let Some((grant, _, _)) = parsed
        .iter()
        .find(|(_, org, role)| *org == active.organisation_id && *role == active.role)
    else {
        return (false, authz::GRANT_REVOKED, None);
    };
    let decision = decide(active.organisation_id, active.role, permission, target);
    if decision.allowed {
        return (true, decision.reason, Some(grant));
    }
    if counts_approver_grants(permission) {
        let approvers: Vec<_> = parsed
            .iter()
            .filter(|(_, _, role)| *role == Role::CommissioningApprover)
            .collect();
        let (allowed, reason, grant) = any_of(approvers);
        if allowed {
            return (allowed, reason, grant);
        }
    }
    (false, decision.reason, None)
}

/// What a permission is asked about.
#[derive(Clone, Copy)]
enum Target {
    Organisation(Uuid),
    /// Someone's account: in scope wherever it holds a grant.
    Account(Uuid),
}

/// The decision on an account holding `held_by_target`: allowed when allowed at any
/// organisation where it holds a grant. An account with no grants sits in no subtree, so only
/// suite-wide roles reach it (decided on the empty ancestry, "the suite as a whole").
fn decide_for_target_account<'g>(
    grants: &'g [AccountGrant],
    permission: Permission,
    held_by_target: &[AccountGrant],
    active: Option<ActiveGrant>,
) -> (bool, &'static str, Option<&'g AccountGrant>) {
    if held_by_target.is_empty() {
        return decide_for_account(grants, permission, &[], active);
    }
    let mut refusal = (false, cqrs_auth::NO_GRANT_IN_SCOPE, None);
    for held in held_by_target {
        let decision = decide_for_account(grants, permission, &held.organisation.path, active);
        if decision.0 {
            return decision;
        }
        // The most telling refusal wins: a revoked grant or a role without the permission
        // says more than "not in scope".
        if decision.1 != cqrs_auth::NO_GRANT_IN_SCOPE {
            refusal = decision;
        }
    }
    refusal
}

impl DirectoryApi {
    /// Internal, or a user asking about its own account.
    pub(super) async fn do_check_permission(
        &self,
        request: Request<pb::CheckPermissionRequest>,
    ) -> Result<pb::CheckPermissionResponse, DirectoryError> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let account_id = violations.uuid("account_id", &req.account_id);
        let permission = match req.permission.as_str() {
            "" => {
                violations.add("permission", "is required");
                None
            }
            name => {
                let permission = Permission::parse(name);
                violations.check(
                    permission.is_some(),
                    "permission",
                    "must be a permission name of the suite, e.g. VIEW_SCOPE",
                );
                permission
            }
        };
        let target = match (
            req.organisation_id.is_empty(),
            req.target_account_id.is_empty(),
        ) {
            (false, true) => violations
                .uuid("organisation_id", &req.organisation_id)
                .map(Target::Organisation),
            (true, false) => violations
                .uuid("target_account_id", &req.target_account_id)
                .map(Target::Account),
            _ => {
                violations.add(
                    "organisation_id",
                    "exactly one of organisation_id and target_account_id is required",
                );
                None
            }
        };
        let active_org = if req.active_organisation_id.is_empty() {
            None
        } else {
            violations.uuid("active_organisation_id", &req.active_organisation_id)
        };
        let active_role = match convert::role_from_proto(req.active_role) {
            Ok(role) => role,
            Err(convert::UnknownValue) => {
                violations.add("active_role", "must be a known Role");
                None
            }
        };
        let active = match (req.active_organisation_id.is_empty(), active_role) {
            (true, None) => None,
            // An unparsable organisation id is already reported.
            (false, Some(role)) => active_org.map(|organisation_id| ActiveGrant {
                organisation_id,
                role,
            }),
            _ => {
                violations.add(
                    "active_role",
                    "active_organisation_id and active_role are given together",
                );
                None
            }
        };
        if let (Some(account_id), false) = (account_id, principal.is_service())
            && principal.account_id() != Some(account_id)
        {
            return Err(DirectoryError::PermissionDenied(SELF_OR_INTERNAL_REQUIRED));
        }
        let (Some(account_id), Some(permission), Some(target), true) =
            (account_id, permission, target, violations.is_empty())
        else {
            return Err(DirectoryError::invalid(violations));
        };

        let pool = self.store().pool();
        let cache: &DecisionCache = &self.inner.cache;
        let (allowed, reason, grant) = match target {
            Target::Organisation(organisation_id) => {
                let (target, grants) = cache
                    .for_decision(pool, account_id, organisation_id)
                    .await?
                    .ok_or(DirectoryError::NotFound("organisation"))?;
                let (allowed, reason, grant) =
                    decide_for_account(&grants, permission, &target.path, active);
                (
                    allowed,
                    reason,
                    grant.map(|g| convert::account_grant(account_id, g)),
                )
            }
            Target::Account(target_account) => {
                let (grants, held_by_target) = tokio::try_join!(
                    cache.grants(pool, account_id),
                    cache.grants(pool, target_account),
                )?;
                let (allowed, reason, grant) =
                    decide_for_target_account(&grants, permission, &held_by_target, active);
                (
                    allowed,
                    reason,
                    grant.map(|g| convert::account_grant(account_id, g)),
                )
            }
        };
        Ok(pb::CheckPermissionResponse {
            allowed,
            reason: reason.to_owned(),
            grant,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::store::Organisation;
    use cqrs_runtime::clock::{Clock, SystemClock};
    use std::sync::Arc;

    const REGION: Uuid = Uuid::from_u128(1);
    const CCG: Uuid = Uuid::from_u128(2);
    const PRACTICE: Uuid = Uuid::from_u128(3);

    fn grant(org: Uuid, role: Role) -> AccountGrant {
        AccountGrant {
            id: Uuid::new_v4(),
            role,
            created_at: SystemClock.now(),
            organisation: Arc::new(Organisation {
                id: org,
                path: vec![org].into_boxed_slice(),
                name: "".into(),
                ods_code: "".into(),
                kind: None,
            }),
        }
    }

    #[test]
    fn active_grant_and_approver_rule() {
        let grants = [
            grant(CCG, Role::CommissioningAccountAdministrator),
            grant(REGION, Role::CommissioningApprover),
        ];
        let target = [PRACTICE, CCG, REGION];
        let caa = ActiveGrant {
            organisation_id: CCG,
            role: Role::CommissioningAccountAdministrator,
        };
        let (ok, reason, g) =
            decide_for_account(&grants, Permission::InviteUsers, &target, Some(caa));
        assert!(ok);
        assert_eq!(reason, "GRANTED");
        assert_eq!(g.unwrap().id, grants[0].id);
        // Approver-only permission: the account's approver grant counts besides the active one.
        let (ok, _, g) =
            decide_for_account(&grants, Permission::GrantApproverRole, &target, Some(caa));
        assert!(ok);
        assert_eq!(g.unwrap().id, grants[1].id);
        // Any other permission: only the active grant counts.
        let (ok, reason, _) =
            decide_for_account(&grants, Permission::DisableAccount, &target, Some(caa));
        assert!(!ok);
        assert_eq!(reason, "ROLE_LACKS_PERMISSION");
        // A grant the account no longer holds.
        let gone = ActiveGrant {
            organisation_id: PRACTICE,
            role: Role::PracticeManager,
        };
        let (ok, reason, _) =
            decide_for_account(&grants, Permission::ViewPracticeUsers, &target, Some(gone));
        assert!(!ok);
        assert_eq!(reason, authz::GRANT_REVOKED);
        // No active grant: any grant counts.
        let (ok, _, g) = decide_for_account(&grants, Permission::DisableAccount, &target, None);
        assert!(ok);
        assert_eq!(g.unwrap().id, grants[1].id);
        let (ok, reason, _) =
            decide_for_account(&grants, Permission::ViewScope, &[Uuid::from_u128(77)], None);
        assert!(!ok);
        assert_eq!(reason, "NO_GRANT_IN_SCOPE");
    }
}
