//! The permission decision every service makes the same way: may a grant (role at an
//! organisation) use a permission on a target organisation?
//!
//! Rules, in order (DESIGN.md §2):
//! 1. the role must carry the permission ([`role_grants`]): otherwise `ROLE_LACKS_PERMISSION`;
//! 2. the grant must cover the target: a grant at an organisation covers it and all its
//!    descendants, i.e. the grant's organisation is in the target's ancestry (target first,
//!    then its parent, … up to the root). Otherwise `NO_GRANT_IN_SCOPE`.
//!
//! `SERVICE_DESK` is the root administrator ("create organisations, invite anywhere"): its
//! grant sits at the service-desk organisation, which is nobody's ancestor, so its scope is
//! the whole suite rather than a subtree.
//!
//! An empty ancestry means "the suite as a whole" (e.g. reading a service's entire audit
//! trail, creating a region): only a suite-wide scope covers it.
//!
//! The approver-role rule (only `COMMISSIONING_APPROVER` holders may invite into, approve into
//! or grant that role) lives in the role table: only approvers hold
//! [`Permission::GrantApproverRole`]. When a service decides for an account rather than for
//! one active grant, [`counts_approver_grants`] says the account's approver grants count
//! besides the active one.

use uuid::Uuid;

use crate::roles::{Permission, Role, role_grants};

/// `reason` of an allowed decision.
pub const GRANTED: &str = "GRANTED";
/// `reason` when the role does not carry the permission anywhere.
pub const ROLE_LACKS_PERMISSION: &str = "ROLE_LACKS_PERMISSION";
/// `reason` when the role carries the permission but the grant does not cover the target.
pub const NO_GRANT_IN_SCOPE: &str = "NO_GRANT_IN_SCOPE";

/// The outcome of [`decide`]: whether it is allowed, and an UPPER_SNAKE reason for logs,
/// audit and `CheckPermission` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: &'static str,
}

impl Decision {
    const fn allow() -> Self {
        Decision {
            allowed: true,
            reason: GRANTED,
        }
    }

    const fn deny(reason: &'static str) -> Self {
        Decision {
            allowed: false,
            reason,
        }
    }
}

/// Whether `role`'s scope is the whole suite rather than the subtree under its grant.
pub fn has_suite_scope(role: Role) -> bool {
    role == Role::ServiceDesk
}

/// Whether a grant at `grant_org` with `role` covers the target whose ancestry is
/// `target_ancestry` (target first, then parent, … root; empty = the whole suite).
pub fn covers(grant_org: Uuid, role: Role, target_ancestry: &[Uuid]) -> bool {
    has_suite_scope(role) || target_ancestry.contains(&grant_org)
}

/// May a grant of `role` at `grant_org` use `permission` on the target whose ancestry is
/// `target_ancestry` (target first, then its parent, … the root)? See the module docs.
pub fn decide(
    grant_org: Uuid,
    role: Role,
    permission: Permission,
    target_ancestry: &[Uuid],
) -> Decision {
    if !role_grants(role, permission) {
        return Decision::deny(ROLE_LACKS_PERMISSION);
    }
    if !covers(grant_org, role, target_ancestry) {
        return Decision::deny(NO_GRANT_IN_SCOPE);
    }
    Decision::allow()
}

/// Whether, for `permission`, an account's `COMMISSIONING_APPROVER` grants count besides its
/// active grant: inviting into or granting the approver role is reserved to approvers, so an
/// approver acting under another of its grants is still an approver for these.
pub fn counts_approver_grants(permission: Permission) -> bool {
    matches!(
        permission,
        Permission::InviteApprovers | Permission::GrantApproverRole
    )
}

/// The decision for an account holding `grants` (organisation, role), none of them singled
/// out as active: allowed if any grant allows it; otherwise the most telling refusal
/// (`ROLE_LACKS_PERMISSION` when some grant covers the target but lacks the permission, else
/// `NO_GRANT_IN_SCOPE`). Returns the index of the allowing grant.
pub fn decide_any(
    grants: &[(Uuid, Role)],
    permission: Permission,
    target_ancestry: &[Uuid],
) -> (Decision, Option<usize>) {
    let mut covered = false;
    for (i, (org, role)) in grants.iter().enumerate() {
        let decision = decide(*org, *role, permission, target_ancestry);
        if decision.allowed {
            return (decision, Some(i));
        }
        covered |= covers(*org, *role, target_ancestry);
    }
    let reason = if covered {
        ROLE_LACKS_PERMISSION
    } else {
        NO_GRANT_IN_SCOPE
    };
    (Decision::deny(reason), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGION: Uuid = Uuid::from_u128(1);
    const CCG: Uuid = Uuid::from_u128(2);
    const PRACTICE: Uuid = Uuid::from_u128(3);
    const OTHER_CCG: Uuid = Uuid::from_u128(4);
    const OTHER_PRACTICE: Uuid = Uuid::from_u128(5);
    const DESK: Uuid = Uuid::from_u128(6);

    fn practice() -> [Uuid; 3] {
        [PRACTICE, CCG, REGION]
    }

    #[test]
    fn scope_covers_descendants_only() {
        let p = Permission::ViewScope;
        let role = Role::CommissioningUser;
        assert_eq!(decide(CCG, role, p, &practice()), Decision::allow());
        assert_eq!(decide(REGION, role, p, &practice()), Decision::allow());
        assert_eq!(decide(CCG, role, p, &[CCG, REGION]), Decision::allow());
        // Ancestor and sibling targets are out of scope.
        assert_eq!(decide(CCG, role, p, &[REGION]).reason, NO_GRANT_IN_SCOPE);
        assert_eq!(
            decide(CCG, role, p, &[OTHER_PRACTICE, OTHER_CCG, REGION]).reason,
            NO_GRANT_IN_SCOPE
        );
        assert_eq!(decide(CCG, role, p, &[]).reason, NO_GRANT_IN_SCOPE);
    }

    #[test]
    fn role_is_checked_before_scope() {
        let d = decide(
            CCG,
            Role::CommissioningAccountAdministrator,
            Permission::SetApprovalLevel,
            &practice(),
        );
        assert_eq!(d, Decision::deny(ROLE_LACKS_PERMISSION));
        let d = decide(
            OTHER_CCG,
            Role::PracticeUser,
            Permission::ViewScope,
            &practice(),
        );
        assert_eq!(d.reason, ROLE_LACKS_PERMISSION);
    }

    #[test]
    fn service_desk_scope_is_the_suite() {
        for target in [&practice()[..], &[OTHER_CCG, REGION], &[]] {
            assert!(
                decide(
                    DESK,
                    Role::ServiceDesk,
                    Permission::CreateOrganisation,
                    target
                )
                .allowed
            );
        }
        assert_eq!(
            decide(
                DESK,
                Role::ServiceDesk,
                Permission::RevokeRoles,
                &practice()
            )
            .reason,
            ROLE_LACKS_PERMISSION
        );
    }

    #[test]
    fn every_role_and_permission_follows_the_table_in_scope() {
        for role in Role::ALL {
            for permission in Permission::ALL {
                let d = decide(CCG, role, permission, &practice());
                assert_eq!(
                    d.allowed,
                    role_grants(role, permission),
                    "{role} {permission}"
                );
            }
        }
    }

    #[test]
    fn any_grant_decisions() {
        let grants = [
            (OTHER_CCG, Role::CommissioningApprover),
            (CCG, Role::CommissioningUser),
        ];
        let (d, i) = decide_any(&grants, Permission::ViewScope, &practice());
        assert_eq!((d.allowed, i), (true, Some(1)));
        let (d, i) = decide_any(&grants, Permission::DisableAccount, &practice());
        assert_eq!((d.reason, i), (ROLE_LACKS_PERMISSION, None));
        let (d, _) = decide_any(&grants, Permission::ViewScope, &[REGION]);
        assert_eq!(d.reason, NO_GRANT_IN_SCOPE);
        let (d, _) = decide_any(&[], Permission::ViewScope, &practice());
        assert_eq!(d.reason, NO_GRANT_IN_SCOPE);
    }

    #[test]
    fn approver_rule() {
        assert!(counts_approver_grants(Permission::GrantApproverRole));
        assert!(counts_approver_grants(Permission::InviteApprovers));
        assert!(!counts_approver_grants(Permission::InviteUsers));
        for role in Role::ALL {
            let d = decide(CCG, role, Permission::GrantApproverRole, &practice());
            assert_eq!(d.allowed, role == Role::CommissioningApprover);
        }
    }
}
