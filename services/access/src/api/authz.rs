//! Who may call what: the suite's two-step authorisation (`cqrs_edge::scope`), checking
//! permission before existence, with the workflows' own rules on top:
//!
//! 1. [`by_role`] (no I/O): a service token is internal; a user needs an active grant whose
//!    role carries one of the workflow's permissions (`cqrs_auth::role_grants`), and — once
//!    the role the request is about is known — the permission for that role
//!    ([`for_role`]: only approvers for COMMISSIONING_APPROVER). Anything else is refused
//!    before any lookup.
//! 2. The scope decision on the target organisation, made by the directory's
//!    `CheckPermission` with the caller's account and active grant (the shared decision,
//!    which also refuses a grant revoked since the token was issued). For a stored workflow
//!    row, the row's copy of the organisation's ancestry is checked first without I/O
//!    ([`covers_row`]), so a row outside the caller's scope and a row that does not exist
//!    answer alike: `PERMISSION_DENIED`, except to internal callers and suite-wide roles, who
//!    may see everything and so get `NOT_FOUND`.

use cqrs_auth::{Permission, Principal, ROLE_LACKS_PERMISSION, Role, role_grants};
pub use cqrs_edge::scope::{
    Access, GRANT_REVOKED, NO_ACTIVE_GRANT, by_permissions, covers_row, known_refusal,
};
use uuid::Uuid;

use super::AccessError;
use crate::domain::Workflow;

/// Reason when a reviewer is the one who asked.
pub const OWN_REQUEST: &str = "OWN_REQUEST";
/// Reason when an RPC is for signed-in users (a service token cannot ask for access).
pub const USER_REQUIRED: &str = "USER_REQUIRED";
/// Reason when someone other than the requester withdraws a request.
pub const NOT_REQUESTER: &str = "NOT_REQUESTER";

/// The roles whose rows of `workflow` the caller may see and act on; `None`: all.
pub fn actionable_roles(access: &Access, workflow: Workflow) -> Option<Vec<Role>> {
    match access {
        Access::Internal => None,
        Access::Grant { grant, .. } => Some(workflow.actionable_roles(grant.role)),
    }
}

/// Whether `workflow`'s lists show the caller a row of `role`: one it may act on. A stored
/// role that is no known role shows only to internal callers (who then find it corrupt).
pub fn lists_role(access: &Access, workflow: Workflow, role: Option<Role>) -> bool {
    match actionable_roles(access, workflow) {
        None => true,
        Some(roles) => role.is_some_and(|role| roles.contains(&role)),
    }
}

/// Step 1: may this principal use any of `workflow`'s permissions anywhere?
pub fn by_role(principal: &Principal, workflow: Workflow) -> Result<Access, AccessError> {
    Ok(by_permissions(principal, &workflow.permissions())?)
}

/// Step 1, once the role a request is about is known: the permission `workflow` needs for it.
pub fn for_role(
    access: &Access,
    workflow: Workflow,
    role: Role,
) -> Result<Permission, AccessError> {
    let permission = workflow.permission_for(role);
    match access {
        Access::Internal => Ok(permission),
        Access::Grant { grant, .. } if role_grants(grant.role, permission) => Ok(permission),
        Access::Grant { .. } => Err(AccessError::PermissionDenied(ROLE_LACKS_PERMISSION)),
    }
}

/// Signed-in users only; returns the account.
pub fn user_only(principal: &Principal) -> Result<Uuid, AccessError> {
    principal
        .account_id()
        .ok_or(AccessError::PermissionDenied(USER_REQUIRED))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use cqrs_auth::ActiveGrant;

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

    fn denied<T: std::fmt::Debug>(r: Result<T, AccessError>) -> &'static str {
        match r {
            Err(AccessError::PermissionDenied(reason)) => reason,
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
    }

    #[test]
    fn role_step() {
        let org = Uuid::from_u128(5);
        let service = Principal::Service {
            client_id: "gateway".into(),
        };
        assert_eq!(
            by_role(&service, Workflow::Registration).unwrap(),
            Access::Internal
        );
        assert_eq!(
            denied(by_role(&user(None, org), Workflow::Invitation)),
            NO_ACTIVE_GRANT
        );
        for role in [
            Role::PracticeUser,
            Role::PracticeManager,
            Role::CommissioningUser,
        ] {
            assert_eq!(
                denied(by_role(&user(Some(role), org), Workflow::Invitation)),
                ROLE_LACKS_PERMISSION
            );
        }
        // An approver passes step 1 for every workflow, but only for the approver role.
        let approver = by_role(
            &user(Some(Role::CommissioningApprover), org),
            Workflow::AccessRequest,
        )
        .unwrap();
        assert!(
            for_role(
                &approver,
                Workflow::AccessRequest,
                Role::CommissioningApprover
            )
            .is_ok()
        );
        assert_eq!(
            denied(for_role(
                &approver,
                Workflow::AccessRequest,
                Role::PracticeUser
            )),
            ROLE_LACKS_PERMISSION
        );
        let admin = by_role(
            &user(Some(Role::CommissioningAccountAdministrator), org),
            Workflow::Invitation,
        )
        .unwrap();
        assert_eq!(
            denied(for_role(
                &admin,
                Workflow::Invitation,
                Role::CommissioningApprover
            )),
            ROLE_LACKS_PERMISSION
        );
        assert_eq!(
            for_role(&admin, Workflow::Invitation, Role::PracticeManager).unwrap(),
            Permission::InviteUsers
        );
        // The desk invites anyone but reviews nothing.
        let desk = user(Some(Role::ServiceDesk), org);
        let desk_access = by_role(&desk, Workflow::Invitation).unwrap();
        assert!(
            for_role(
                &desk_access,
                Workflow::Invitation,
                Role::CommissioningApprover
            )
            .is_ok()
        );
        assert_eq!(
            denied(by_role(&desk, Workflow::Registration)),
            ROLE_LACKS_PERMISSION
        );
        assert_eq!(denied(user_only(&service)), USER_REQUIRED);
    }

    #[test]
    fn lists_show_the_rows_a_role_may_act_on() {
        let org = Uuid::from_u128(5);
        let admin = by_role(
            &user(Some(Role::CommissioningAccountAdministrator), org),
            Workflow::Registration,
        )
        .unwrap();
        let approver = by_role(
            &user(Some(Role::CommissioningApprover), org),
            Workflow::Registration,
        )
        .unwrap();
        let workflow = Workflow::Registration;
        assert!(lists_role(&admin, workflow, Some(Role::PracticeUser)));
        assert!(!lists_role(
            &admin,
            workflow,
            Some(Role::CommissioningApprover)
        ));
        assert!(lists_role(
            &approver,
            workflow,
            Some(Role::CommissioningApprover)
        ));
        assert!(!lists_role(&approver, workflow, Some(Role::PracticeUser)));
        assert!(!lists_role(&admin, workflow, None));
        assert!(lists_role(&Access::Internal, workflow, None));
    }
}
