//! Who may call what, decided in two steps so permission is always checked before existence:
//!
//! 1. [`by_role`] (no I/O): a service token is internal; a user needs an active grant whose
//!    role carries the permission (`cqrs_auth::role_grants`). Anything else is refused before
//!    any lookup.
//! 2. [`in_scope`], once the target's ancestry and the active grant's current existence are
//!    loaded in one query: the shared decision (`cqrs_auth::decide`) on the target. A user
//!    whose grant has since been revoked is refused (`GRANT_REVOKED`) even while its session
//!    lives. A missing target is `NOT_FOUND` only to callers that would be allowed to see
//!    anything there — internal callers and suite-wide roles; everyone else gets the same
//!    `PERMISSION_DENIED` as for an existing organisation outside their scope, so ids cannot
//!    be probed.

use cqrs_auth::{
    ActiveGrant, NO_GRANT_IN_SCOPE, Permission, Principal, Role, decide, has_suite_scope,
};
use uuid::Uuid;

use super::DirectoryError;

/// Reason when the caller's active grant no longer exists.
pub const GRANT_REVOKED: &str = "GRANT_REVOKED";
/// Reason when a user has picked no grant.
pub const NO_ACTIVE_GRANT: &str = "NO_ACTIVE_GRANT";
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
}

/// Step 1: may this principal's role use `permission` anywhere?
pub fn by_role(principal: &Principal, permission: Permission) -> Result<Access, DirectoryError> {
    match principal {
        Principal::Service { .. } => Ok(Access::Internal),
        Principal::User {
            account_id, active, ..
        } => {
            let grant = active.ok_or(DirectoryError::PermissionDenied(NO_ACTIVE_GRANT))?;
            if cqrs_auth::role_grants(grant.role, permission) {
                Ok(Access::Grant {
                    account_id: *account_id,
                    grant,
                })
            } else {
                Err(DirectoryError::PermissionDenied(
                    cqrs_auth::ROLE_LACKS_PERMISSION,
                ))
            }
        }
    }
}

/// Internal callers only.
pub fn internal_only(principal: &Principal) -> Result<(), DirectoryError> {
    if principal.is_service() {
        Ok(())
    } else {
        Err(DirectoryError::PermissionDenied(SERVICE_PRINCIPAL_REQUIRED))
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
) -> Result<(), DirectoryError> {
    match access {
        Access::Internal => ancestry.map(drop).ok_or(DirectoryError::NotFound(what)),
        Access::Grant { grant, .. } => {
            if !grant_held {
                return Err(DirectoryError::PermissionDenied(GRANT_REVOKED));
            }
            let Some(ancestry) = ancestry else {
                return Err(if has_suite_scope(grant.role) {
                    DirectoryError::NotFound(what)
                } else {
                    DirectoryError::PermissionDenied(NO_GRANT_IN_SCOPE)
                });
            };
            let decision = decide(grant.organisation_id, grant.role, permission, ancestry);
            if decision.allowed {
                Ok(())
            } else {
                Err(DirectoryError::PermissionDenied(decision.reason))
            }
        }
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
        }
    }

    fn denied(r: Result<impl std::fmt::Debug, DirectoryError>) -> &'static str {
        match r {
            Err(DirectoryError::PermissionDenied(reason)) => reason,
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
            by_role(&service, Permission::RevokeRoles).unwrap(),
            Access::Internal
        );
        assert_eq!(
            denied(by_role(&user(None, org), Permission::ViewScope)),
            NO_ACTIVE_GRANT
        );
        assert_eq!(
            denied(by_role(
                &user(Some(Role::PracticeUser), org),
                Permission::ViewScope
            )),
            cqrs_auth::ROLE_LACKS_PERMISSION
        );
        assert!(
            by_role(
                &user(Some(Role::CommissioningUser), org),
                Permission::ViewScope
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
        let ccg_user = by_role(&user(Some(Role::CommissioningUser), ccg), p).unwrap();
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
        let desk = by_role(&user(Some(Role::ServiceDesk), other), p).unwrap();
        assert!(matches!(
            in_scope(&desk, p, None, true, "organisation"),
            Err(DirectoryError::NotFound("organisation"))
        ));
        assert!(in_scope(&Access::Internal, p, Some(&[]), false, "x").is_ok());
        assert!(matches!(
            in_scope(&Access::Internal, p, None, false, "grant"),
            Err(DirectoryError::NotFound("grant"))
        ));
        assert_eq!(desk.scope_root(), None);
        assert_eq!(ccg_user.scope_root(), Some(ccg));
    }
}
