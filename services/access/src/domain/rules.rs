//! Which permission each workflow needs, what a reviewer's decision must carry, and the checks
//! on what an applicant may ask for.
//!
//! The suite's shared rules (e-mail normal form, the generic-mailbox rule, the name rule, the
//! link-token scheme, which roles an organisation kind can hold and the ODS-code format) come
//! from `cqrs_rules` and are re-exported here, so there is one definition of each.

use cqrs_rules::{Permission, Role, role_grants};
use uuid::Uuid;

pub use cqrs_rules::account::normalise_name;
pub use cqrs_rules::email::{DEFAULT_GENERIC_LOCAL_PARTS, GenericMailboxRules, normalise_email};
pub use cqrs_rules::links::{LinkToken, hash_token, is_well_formed_token, new_link_token};
pub use cqrs_rules::organisation::{OrganisationKind, normalise_ods_code, role_valid_at};

/// Longest reason (an applicant's or a reviewer's), in code points: it is e-mailed and shown.
pub const MAX_REASON_CHARS: usize = 1000;

/// The three workflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workflow {
    Invitation,
    Registration,
    AccessRequest,
}

impl Workflow {
    /// The permission an administrator needs to act on a row of this workflow for `role`:
    /// inviting into, approving into or granting COMMISSIONING_APPROVER is reserved to
    /// approvers (DESIGN §2), so that role has its own permission.
    pub fn permission_for(self, role: Role) -> Permission {
        let approver = role == Role::CommissioningApprover;
        match (self, approver) {
            (Workflow::Invitation, false) => Permission::InviteUsers,
            (Workflow::Invitation, true) => Permission::InviteApprovers,
            (Workflow::Registration, false) => Permission::ReviewRegistrations,
            (Workflow::AccessRequest, false) => Permission::ReviewAccessRequests,
            (Workflow::Registration | Workflow::AccessRequest, true) => {
                Permission::GrantApproverRole
            }
        }
    }

    /// Every permission that lets a role act on some rows of this workflow.
    pub fn permissions(self) -> [Permission; 2] {
        [
            self.permission_for(Role::PracticeUser),
            self.permission_for(Role::CommissioningApprover),
        ]
    }

    /// The roles whose rows a caller acting as `caller` may see and act on: those for which
    /// its role carries the permission. An administrator sees the rows it could decide, an
    /// approver the approver-role rows.
    pub fn actionable_roles(self, caller: Role) -> Vec<Role> {
        Role::ALL
            .into_iter()
            .filter(|role| role_grants(caller, self.permission_for(*role)))
            .collect()
    }
}

/// Whether `role` can be asked for by self-registration or an access request. SERVICE_DESK
/// cannot: it is held only at service-desk organisations, where no administrator could
/// review it; the desk invites its own members.
pub fn requestable(role: Role) -> bool {
    role != Role::ServiceDesk
}

/// A reviewer's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "APPROVE",
            Decision::Reject => "REJECT",
        }
    }
}

/// A free-text reason as stored: trimmed, at most [`MAX_REASON_CHARS`], no control characters
/// but line breaks and tabs (it is e-mailed). `Ok("")` when empty.
pub fn normalise_reason(raw: &str) -> Result<String, &'static str> {
    let reason = raw.trim();
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err("must be at most 1000 characters");
    }
    if reason
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("must not contain control characters");
    }
    Ok(reason.to_owned())
}

/// The reason of a decision: required to reject (it is e-mailed to the applicant), optional
/// to approve.
pub fn decision_reason(decision: Decision, raw: &str) -> Result<String, &'static str> {
    let reason = normalise_reason(raw)?;
    if decision == Decision::Reject && reason.is_empty() {
        return Err("is required to reject");
    }
    Ok(reason)
}

/// The request id of a call made on behalf of the workflow row `row_id` for `purpose`: the
/// same on every retry, so a call repeated after a timeout creates nothing twice.
pub fn derived_id(row_id: Uuid, purpose: &str) -> Uuid {
    Uuid::new_v5(&row_id, purpose.as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn permissions_per_workflow_and_role() {
        use Permission as P;
        for role in Role::ALL {
            let approver = role == Role::CommissioningApprover;
            assert_eq!(
                Workflow::Invitation.permission_for(role),
                if approver {
                    P::InviteApprovers
                } else {
                    P::InviteUsers
                }
            );
            assert_eq!(
                Workflow::Registration.permission_for(role),
                if approver {
                    P::GrantApproverRole
                } else {
                    P::ReviewRegistrations
                }
            );
            assert_eq!(
                Workflow::AccessRequest.permission_for(role),
                if approver {
                    P::GrantApproverRole
                } else {
                    P::ReviewAccessRequests
                }
            );
        }
        assert_eq!(
            Workflow::Registration.permissions(),
            [P::ReviewRegistrations, P::GrantApproverRole]
        );
    }

    #[test]
    fn who_acts_on_which_rows() {
        let others: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|r| *r != Role::CommissioningApprover)
            .collect();
        // The desk invites anyone; administrators everyone but approvers; approvers approvers.
        assert_eq!(
            Workflow::Invitation.actionable_roles(Role::ServiceDesk),
            Role::ALL.to_vec()
        );
        assert_eq!(
            Workflow::Invitation.actionable_roles(Role::CommissioningAccountAdministrator),
            others
        );
        assert_eq!(
            Workflow::Invitation.actionable_roles(Role::CommissioningApprover),
            vec![Role::CommissioningApprover]
        );
        for workflow in [Workflow::Registration, Workflow::AccessRequest] {
            assert_eq!(
                workflow.actionable_roles(Role::CommissioningAccountAdministrator),
                others
            );
            assert_eq!(
                workflow.actionable_roles(Role::CommissioningApprover),
                vec![Role::CommissioningApprover]
            );
            assert!(workflow.actionable_roles(Role::ServiceDesk).is_empty());
            assert!(workflow.actionable_roles(Role::PracticeManager).is_empty());
        }
    }

    #[test]
    fn reasons() {
        assert_eq!(decision_reason(Decision::Approve, "  ").unwrap(), "");
        assert_eq!(
            decision_reason(Decision::Reject, "  "),
            Err("is required to reject")
        );
        assert_eq!(
            decision_reason(Decision::Reject, " not known here \n").unwrap(),
            "not known here"
        );
        assert!(normalise_reason("line one\nline two").is_ok());
        assert!(normalise_reason("bell\u{7}").is_err());
        assert!(normalise_reason(&"x".repeat(1001)).is_err());
        assert!(normalise_reason(&"é".repeat(1000)).is_ok());
    }

    #[test]
    fn requestable_roles() {
        for role in Role::ALL {
            assert_eq!(requestable(role), role != Role::ServiceDesk);
        }
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let row = Uuid::new_v4();
        assert_eq!(derived_id(row, "grant"), derived_id(row, "grant"));
        assert_ne!(derived_id(row, "grant"), derived_id(row, "create-account"));
        assert_ne!(
            derived_id(row, "grant"),
            derived_id(Uuid::new_v4(), "grant")
        );
    }
}
