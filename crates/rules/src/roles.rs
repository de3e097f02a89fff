//! Roles, permissions and the one table that joins them.

use std::fmt;
use std::str::FromStr;

/// A role held through a grant (account x organisation x role).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// `SERVICE_DESK`: the root administrator.
    ServiceDesk,
    /// `COMMISSIONING_ACCOUNT_ADMINISTRATOR`.
    CommissioningAccountAdministrator,
    /// `COMMISSIONING_APPROVER` (tier 2).
    CommissioningApprover,
    /// `COMMISSIONING_USER` (tier 1).
    CommissioningUser,
    /// `COMMISSIONING_FINANCE`.
    CommissioningFinance,
    /// `PRACTICE_MANAGER`.
    PracticeManager,
    /// `PRACTICE_USER`.
    PracticeUser,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 7] = [
        Role::ServiceDesk,
        Role::CommissioningAccountAdministrator,
        Role::CommissioningApprover,
        Role::CommissioningUser,
        Role::CommissioningFinance,
        Role::PracticeManager,
        Role::PracticeUser,
    ];

    /// The wire and storage name, e.g. `"SERVICE_DESK"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::ServiceDesk => "SERVICE_DESK",
            Role::CommissioningAccountAdministrator => "COMMISSIONING_ACCOUNT_ADMINISTRATOR",
            Role::CommissioningApprover => "COMMISSIONING_APPROVER",
            Role::CommissioningUser => "COMMISSIONING_USER",
            Role::CommissioningFinance => "COMMISSIONING_FINANCE",
            Role::PracticeManager => "PRACTICE_MANAGER",
            Role::PracticeUser => "PRACTICE_USER",
        }
    }

    /// Inverse of [`Role::as_str`]; exact, case-sensitive match.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`Role::from_str`] / [`Permission::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownName {
    /// `"role"` or `"permission"`.
    pub kind: &'static str,
    /// The value that did not match.
    pub value: String,
}

impl FromStr for Role {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::parse(s).ok_or_else(|| UnknownName {
            kind: "role",
            value: s.to_owned(),
        })
    }
}

/// Something a role may do. Scope (a grant covers its organisation's descendants) and the
/// "anyone may act on their own account" rules are applied by the services on top of this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Lift a temporary or permanent lock.
    UnlockAccount,
    /// Send a password-reset link for someone else's account.
    SendPasswordReset,
    /// Re-enable a disabled account.
    EnableAccount,
    /// Disable someone else's account (disabling your own needs no permission).
    DisableAccount,
    /// Create an account directly (`IdentityService/CreateAccount`).
    CreateAccount,
    /// Create organisations.
    CreateOrganisation,
    /// Invite users into a role other than `COMMISSIONING_APPROVER`.
    InviteUsers,
    /// Invite users into the `COMMISSIONING_APPROVER` role.
    InviteApprovers,
    /// Approve a registration or access request into, or grant, the `COMMISSIONING_APPROVER`
    /// role (approving into any other role needs [`Permission::ReviewRegistrations`] /
    /// [`Permission::ReviewAccessRequests`]).
    GrantApproverRole,
    /// Review (approve/reject) self-registrations.
    ReviewRegistrations,
    /// Review (approve/reject) access requests.
    ReviewAccessRequests,
    /// Revoke grants (one, or all of an account's).
    RevokeRoles,
    /// Set a provider's multi-level approval flag.
    SetApprovalLevel,
    /// View organisations, members and accounts in scope.
    ViewScope,
    /// View the users of one's own practice.
    ViewPracticeUsers,
    /// User administration for one's own practice (National realm).
    ManagePracticeUsers,
    /// Query audit events.
    ViewAuditEvents,
    /// Operations: read e-mail delivery records.
    ViewDeliveries,
}

impl Permission {
    /// Every permission, in declaration order.
    pub const ALL: [Permission; 18] = [
        Permission::UnlockAccount,
        Permission::SendPasswordReset,
        Permission::EnableAccount,
        Permission::DisableAccount,
        Permission::CreateAccount,
        Permission::CreateOrganisation,
        Permission::InviteUsers,
        Permission::InviteApprovers,
        Permission::GrantApproverRole,
        Permission::ReviewRegistrations,
        Permission::ReviewAccessRequests,
        Permission::RevokeRoles,
        Permission::SetApprovalLevel,
        Permission::ViewScope,
        Permission::ViewPracticeUsers,
        Permission::ManagePracticeUsers,
        Permission::ViewAuditEvents,
        Permission::ViewDeliveries,
    ];

    /// The wire name, e.g. `"UNLOCK_ACCOUNT"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Permission::UnlockAccount => "UNLOCK_ACCOUNT",
            Permission::SendPasswordReset => "SEND_PASSWORD_RESET",
            Permission::EnableAccount => "ENABLE_ACCOUNT",
            Permission::DisableAccount => "DISABLE_ACCOUNT",
            Permission::CreateAccount => "CREATE_ACCOUNT",
            Permission::CreateOrganisation => "CREATE_ORGANISATION",
            Permission::InviteUsers => "INVITE_USERS",
            Permission::InviteApprovers => "INVITE_APPROVERS",
            Permission::GrantApproverRole => "GRANT_APPROVER_ROLE",
            Permission::ReviewRegistrations => "REVIEW_REGISTRATIONS",
            Permission::ReviewAccessRequests => "REVIEW_ACCESS_REQUESTS",
            Permission::RevokeRoles => "REVOKE_ROLES",
            Permission::SetApprovalLevel => "SET_APPROVAL_LEVEL",
            Permission::ViewScope => "VIEW_SCOPE",
            Permission::ViewPracticeUsers => "VIEW_PRACTICE_USERS",
            Permission::ManagePracticeUsers => "MANAGE_PRACTICE_USERS",
            Permission::ViewAuditEvents => "VIEW_AUDIT_EVENTS",
            Permission::ViewDeliveries => "VIEW_DELIVERIES",
        }
    }

    /// Inverse of [`Permission::as_str`]; exact, case-sensitive match.
    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::parse(s).ok_or_else(|| UnknownName {
            kind: "permission",
            value: s.to_owned(),
        })
    }
}

/// Whether `role` carries `permission` — the whole role table (DESIGN.md §2), in one place.
///
/// | role | permissions |
/// |---|---|
/// | `SERVICE_DESK` | UnlockAccount, SendPasswordReset, EnableAccount, CreateAccount, CreateOrganisation, InviteUsers, InviteApprovers, ViewScope, ViewAuditEvents, ViewDeliveries |
/// | `COMMISSIONING_ACCOUNT_ADMINISTRATOR` | EnableAccount, InviteUsers, ReviewRegistrations, ReviewAccessRequests, RevokeRoles, ViewScope, ViewAuditEvents |
/// | `COMMISSIONING_APPROVER` | DisableAccount, SetApprovalLevel, InviteApprovers, GrantApproverRole, ViewScope |
/// | `COMMISSIONING_USER` | ViewScope, SetApprovalLevel |
/// | `COMMISSIONING_FINANCE` | ViewScope, SetApprovalLevel |
/// | `PRACTICE_MANAGER` | ViewPracticeUsers, ManagePracticeUsers |
/// | `PRACTICE_USER` | — |
///
/// Choices the design leaves open:
/// - `SERVICE_DESK` "invites anywhere", so as the root administrator it also holds
///   `InviteApprovers` (otherwise no first approver could ever be invited). It does not hold
///   `GrantApproverRole`: approving into or granting the approver role stays with approvers.
/// - `CreateAccount` (API: "internal or SERVICE_DESK") and `ViewAuditEvents` ("queryable by
///   authorised roles": the service desk and account administrators) are not in the design
///   table but are needed by the API.
/// - Disabling one's own account, seeing one's own roles and requests, and switching grants
///   need no permission; the services check "self" themselves.
pub fn role_grants(role: Role, permission: Permission) -> bool {
    use Permission as P;
    match role {
        Role::ServiceDesk => matches!(
            permission,
            P::UnlockAccount
                | P::SendPasswordReset
                | P::EnableAccount
                | P::CreateAccount
                | P::CreateOrganisation
                | P::InviteUsers
                | P::InviteApprovers
                | P::ViewScope
                | P::ViewAuditEvents
                | P::ViewDeliveries
        ),
        Role::CommissioningAccountAdministrator => matches!(
            permission,
            P::EnableAccount
                | P::InviteUsers
                | P::ReviewRegistrations
                | P::ReviewAccessRequests
                | P::RevokeRoles
                | P::ViewScope
                | P::ViewAuditEvents
        ),
        Role::CommissioningApprover => matches!(
            permission,
            P::DisableAccount
                | P::SetApprovalLevel
                | P::InviteApprovers
                | P::GrantApproverRole
                | P::ViewScope
        ),
        Role::CommissioningUser | Role::CommissioningFinance => {
            matches!(permission, P::ViewScope | P::SetApprovalLevel)
        }
        Role::PracticeManager => {
            matches!(permission, P::ViewPracticeUsers | P::ManagePracticeUsers)
        }
        Role::PracticeUser => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission as P;

    /// The expected table, written out independently of `role_grants`.
    const EXPECTED: [(Role, &[Permission]); 7] = [
        (
            Role::ServiceDesk,
            &[
                P::UnlockAccount,
                P::SendPasswordReset,
                P::EnableAccount,
                P::CreateAccount,
                P::CreateOrganisation,
                P::InviteUsers,
                P::InviteApprovers,
                P::ViewScope,
                P::ViewAuditEvents,
                P::ViewDeliveries,
            ],
        ),
        (
            Role::CommissioningAccountAdministrator,
            &[
                P::EnableAccount,
                P::InviteUsers,
                P::ReviewRegistrations,
                P::ReviewAccessRequests,
                P::RevokeRoles,
                P::ViewScope,
                P::ViewAuditEvents,
            ],
        ),
        (
            Role::CommissioningApprover,
            &[
                P::DisableAccount,
                P::SetApprovalLevel,
                P::InviteApprovers,
                P::GrantApproverRole,
                P::ViewScope,
            ],
        ),
        (
            Role::CommissioningUser,
            &[P::ViewScope, P::SetApprovalLevel],
        ),
        (
            Role::CommissioningFinance,
            &[P::ViewScope, P::SetApprovalLevel],
        ),
        (
            Role::PracticeManager,
            &[P::ViewPracticeUsers, P::ManagePracticeUsers],
        ),
        (Role::PracticeUser, &[]),
    ];

    #[test]
    fn every_role_permission_pair_matches_the_table() {
        assert_eq!(EXPECTED.len(), Role::ALL.len());
        for (role, granted) in EXPECTED {
            for permission in Permission::ALL {
                assert_eq!(
                    role_grants(role, permission),
                    granted.contains(&permission),
                    "{role} / {permission}"
                );
            }
        }
        let covered: Vec<Role> = EXPECTED.iter().map(|(r, _)| *r).collect();
        assert_eq!(covered, Role::ALL.to_vec());
    }

    #[test]
    fn only_approvers_grant_the_approver_role() {
        for role in Role::ALL {
            assert_eq!(
                role_grants(role, P::GrantApproverRole),
                role == Role::CommissioningApprover
            );
        }
    }

    #[test]
    fn names_round_trip_and_are_unique() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
            assert_eq!(p.to_string().parse::<Permission>(), Ok(p));
        }
        let mut names: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Permission::ALL.len());
    }

    #[test]
    fn parse_is_exact() {
        assert_eq!(Role::parse("service_desk"), None);
        assert_eq!(Role::parse(" SERVICE_DESK"), None);
        assert_eq!(Role::parse(""), None);
        assert_eq!(Permission::parse("unlock_account"), None);
        assert!("NOPE".parse::<Role>().is_err());
    }
}
