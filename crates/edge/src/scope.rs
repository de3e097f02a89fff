//! Who may call what, decided in two steps so that permission is always checked before
//! existence:
//!
//! 1. [`by_permission`] / [`by_permissions`] (no I/O): a service token is internal; a user
//!    needs an active grant whose role carries the permission (`cqrs_rules::role_grants`).
//!    Anything else is refused before any lookup.
//! 2. Once the target's ancestry is known (and, for users, whether the active grant still
//!    exists): [`in_scope`], the shared decision (`cqrs_rules::decide`) on the target. A user
//!    whose grant has since been revoked is refused (`GRANT_REVOKED`) even while its session
//!    lives. A missing target is `NOT_FOUND` only to callers who may see everything —
//!    internal callers and suite-wide roles; everyone else gets the same `PERMISSION_DENIED`
//!    as for an existing target outside their scope, so ids cannot be probed.

use cqrs_auth::{ActiveGrant, Principal};
use cqrs_rules::{
    NO_GRANT_IN_SCOPE, Permission, ROLE_LACKS_PERMISSION, Role, covers, decide, has_suite_scope,
    role_grants,
};
use uuid::Uuid;

use crate::Denial;

/// Reason when a user has picked no grant.
pub const NO_ACTIVE_GRANT: &str = "NO_ACTIVE_GRANT";
/// Reason when the caller's active grant no longer exists.
pub const GRANT_REVOKED: &str = "GRANT_REVOKED";
/// Reason when only internal callers may use an RPC.
pub const SERVICE_PRINCIPAL_REQUIRED: &str = "SERVICE_PRINCIPAL_REQUIRED";

/// How the caller may act, as far as can be told without a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A service token: the workflows and other services.
    Internal,
    /// A user acting through its active grant, whose role carries the permission.
    Grant {
        account_id: Uuid,
        grant: ActiveGrant,
    },
}

impl Access {
    /// `(account, organisation, role)` of the grant to re-check, for users.
    pub fn held_grant(&self) -> Option<(Uuid, Uuid, Role)> {
        match self {
            Access::Internal => None,
            Access::Grant { account_id, grant } => {
                Some((*account_id, grant.organisation_id, grant.role))
            }
        }
    }

    /// The subtree a user's grant covers: `None` for internal callers and suite-wide roles
    /// (everything), else the grant's organisation.
    pub fn scope_root(&self) -> Option<Uuid> {
        match self {
            Access::Internal => None,
            Access::Grant { grant, .. } if has_suite_scope(grant.role) => None,
            Access::Grant { grant, .. } => Some(grant.organisation_id),
        }
    }

    /// Whether a missing target may be reported as missing: to callers who could see it
    /// anywhere it might be.
    pub fn sees_everything(&self) -> bool {
        self.scope_root().is_none()
    }

    /// The account of a user.
    pub fn account_id(&self) -> Option<Uuid> {
        match self {
            Access::Internal => None,
            Access::Grant { account_id, .. } => Some(*account_id),
        }
    }

    /// Internal callers and suite-wide roles only: for what is not split by organisation
    /// (an audit trail), so a subtree's administrator cannot be given part of it.
    pub fn suite_wide(&self) -> Result<(), Denial> {
        if self.sees_everything() {
            Ok(())
        } else {
            Err(Denial::PermissionDenied(NO_GRANT_IN_SCOPE))
        }
    }
}

/// Step 1: may this principal's role use `permission` anywhere?
pub fn by_permission(principal: &Principal, permission: Permission) -> Result<Access, Denial> {
    by_permissions(principal, &[permission])
}

/// Step 1 for a set of permissions, any one of which suffices.
pub fn by_permissions(principal: &Principal, permissions: &[Permission]) -> Result<Access, Denial> {
    match principal {
        Principal::Service { .. } => Ok(Access::Internal),
        Principal::User {
            account_id, active, ..
        } => {
            let grant = active.ok_or(Denial::PermissionDenied(NO_ACTIVE_GRANT))?;
            if permissions.iter().any(|p| role_grants(grant.role, *p)) {
                Ok(Access::Grant {
                    account_id: *account_id,
                    grant,
                })
            } else {
                Err(Denial::PermissionDenied(ROLE_LACKS_PERMISSION))
            }
        }
    }
}

/// Internal callers only.
pub fn internal_only(principal: &Principal) -> Result<(), Denial> {
    if principal.is_service() {
        Ok(())
    } else {
        Err(Denial::PermissionDenied(SERVICE_PRINCIPAL_REQUIRED))
    }
}

/// Step 2: the decision on a target whose ancestry (itself first … the root) was loaded;
/// `None` when it does not exist. `grant_held`: whether a user's active grant still exists
/// (ignored for internal callers). `what` names the target in a NOT_FOUND answer.
pub fn in_scope(
    access: &Access,
    permission: Permission,
    ancestry: Option<&[Uuid]>,
    grant_held: bool,
    what: &'static str,
) -> Result<(), Denial> {
    match access {
        Access::Internal => ancestry.map(drop).ok_or(Denial::NotFound(what)),
        Access::Grant { grant, .. } => {
            if !grant_held {
                return Err(Denial::PermissionDenied(GRANT_REVOKED));
            }
            let Some(ancestry) = ancestry else {
                return Err(missing(access, what));
            };
            let decision = decide(grant.organisation_id, grant.role, permission, ancestry);
            if decision.allowed {
                Ok(())
            } else {
                Err(Denial::PermissionDenied(decision.reason))
            }
        }
    }
}

/// Step 2 for a stored row that keeps its own copy of its organisation's ancestry (`path`:
/// itself, its parent, … the root), checked without I/O; `None` when the row does not exist.
pub fn covers_row(
    access: &Access,
    path: Option<&[Uuid]>,
    what: &'static str,
) -> Result<(), Denial> {
    match (access, path) {
        (Access::Internal, Some(_)) => Ok(()),
        (Access::Grant { grant, .. }, Some(path)) => {
            if covers(grant.organisation_id, grant.role, path) {
                Ok(())
            } else {
                Err(Denial::PermissionDenied(NO_GRANT_IN_SCOPE))
            }
        }
        (access, None) => Err(missing(access, what)),
    }
}

/// A refusal reason another service gave (the directory's CheckPermission), as this one
/// reports it: the shared decision's reasons pass through, anything else is "not in scope".
pub fn known_refusal(reason: &str) -> &'static str {
    [GRANT_REVOKED, ROLE_LACKS_PERMISSION, NO_GRANT_IN_SCOPE]
        .into_iter()
        .find(|known| *known == reason)
        .unwrap_or(NO_GRANT_IN_SCOPE)
}

/// What a missing target answers: `NOT_FOUND` to those who may see everything, else the same
/// refusal as a target outside the caller's scope.
fn missing(access: &Access, what: &'static str) -> Denial {
    if access.sees_everything() {
        Denial::NotFound(what)
    } else {
        Denial::PermissionDenied(NO_GRANT_IN_SCOPE)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn user(role: Option<Role>, org: Uuid) -> Principal {
        Principal::User {
            account_id: Uuid::from_u128(1),
            session_id: "s".into(),
            active: role.map(|role| ActiveGrant {
                organisation_id: org,
                role,
            }),
            proof: Default::default(),
        }
    }

    fn denied<T: std::fmt::Debug>(r: Result<T, Denial>) -> &'static str {
        match r {
            Err(Denial::PermissionDenied(reason)) => reason,
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
    }

    #[test]
    fn role_step() {
        let org = Uuid::from_u128(5);
        let service = Principal::Service {
            client_id: "access".into(),
        };
        assert_eq!(
            by_permission(&service, Permission::RevokeRoles).unwrap(),
            Access::Internal
        );
        assert_eq!(
            denied(by_permission(&user(None, org), Permission::ViewScope)),
            NO_ACTIVE_GRANT
        );
        assert_eq!(
            denied(by_permission(
                &user(Some(Role::PracticeUser), org),
                Permission::ViewScope
            )),
            ROLE_LACKS_PERMISSION
        );
        assert!(
            by_permission(
                &user(Some(Role::CommissioningUser), org),
                Permission::ViewScope
            )
            .is_ok()
        );
        // Any one of several permissions suffices.
        assert!(
            by_permissions(
                &user(Some(Role::CommissioningUser), org),
                &[Permission::UnlockAccount, Permission::ViewScope]
            )
            .is_ok()
        );
        assert!(internal_only(&service).is_ok());
        assert_eq!(
            denied(internal_only(&user(Some(Role::ServiceDesk), org))),
            SERVICE_PRINCIPAL_REQUIRED
        );
    }

    #[test]
    fn scope_step() {
        let (region, ccg, other) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let p = Permission::ViewScope;
        let ccg_user = by_permission(&user(Some(Role::CommissioningUser), ccg), p).unwrap();
        assert!(in_scope(&ccg_user, p, Some(&[ccg, region]), true, "x").is_ok());
        assert_eq!(
            denied(in_scope(&ccg_user, p, Some(&[region]), true, "x")),
            NO_GRANT_IN_SCOPE
        );
        // Missing and out of scope answer the same.
        assert_eq!(
            denied(in_scope(&ccg_user, p, None, true, "x")),
            NO_GRANT_IN_SCOPE
        );
        assert_eq!(
            denied(in_scope(&ccg_user, p, Some(&[ccg, region]), false, "x")),
            GRANT_REVOKED
        );
        let desk = by_permission(&user(Some(Role::ServiceDesk), other), p).unwrap();
        assert_eq!(
            in_scope(&desk, p, None, true, "organisation"),
            Err(Denial::NotFound("organisation"))
        );
        assert!(in_scope(&Access::Internal, p, Some(&[]), false, "x").is_ok());
        assert_eq!(
            in_scope(&Access::Internal, p, None, false, "grant"),
            Err(Denial::NotFound("grant"))
        );
        assert_eq!(desk.scope_root(), None);
        assert_eq!(ccg_user.scope_root(), Some(ccg));
        assert!(desk.suite_wide().is_ok());
        assert_eq!(known_refusal("GRANT_REVOKED"), GRANT_REVOKED);
        assert_eq!(
            known_refusal("ROLE_LACKS_PERMISSION"),
            ROLE_LACKS_PERMISSION
        );
        assert_eq!(known_refusal("SOMETHING_ELSE"), NO_GRANT_IN_SCOPE);
        assert_eq!(denied(ccg_user.suite_wide()), NO_GRANT_IN_SCOPE);
    }

    #[test]
    fn row_scope_step() {
        let (region, ccg, other) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let admin = by_permission(
            &user(Some(Role::CommissioningAccountAdministrator), ccg),
            Permission::ReviewRegistrations,
        )
        .unwrap();
        let practice = [other, ccg, region];
        assert!(covers_row(&admin, Some(&practice), "x").is_ok());
        assert_eq!(
            denied(covers_row(&admin, Some(&[region]), "x")),
            NO_GRANT_IN_SCOPE
        );
        // Missing and out of scope answer the same to a subtree's administrator.
        assert_eq!(denied(covers_row(&admin, None, "x")), NO_GRANT_IN_SCOPE);
        assert_eq!(
            covers_row(&Access::Internal, None, "registration"),
            Err(Denial::NotFound("registration"))
        );
        let desk = by_permission(
            &user(Some(Role::ServiceDesk), other),
            Permission::InviteUsers,
        )
        .unwrap();
        assert!(covers_row(&desk, Some(&practice), "x").is_ok());
        assert_eq!(
            covers_row(&desk, None, "invitation"),
            Err(Denial::NotFound("invitation"))
        );
        assert_eq!(admin.scope_root(), Some(ccg));
        assert_eq!(desk.scope_root(), None);
    }
}
