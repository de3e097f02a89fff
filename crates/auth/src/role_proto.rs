//! Roles on the wire: the `cqrs.common.v1.Role` enum, which every package's messages use.
//! The roles themselves are pure rules (`cqrs_rules::roles`).

use cqrs_rules::{Role, UnknownName};

/// Conversion of a [`Role`] to and from its proto enum.
pub trait RoleProto: Sized {
    /// The `cqrs.common.v1.Role` value.
    fn to_proto(self) -> cqrs_proto::common::v1::Role;
    /// A `cqrs.common.v1.Role` number: `Ok(None)` for `ROLE_UNSPECIFIED`, an error for a
    /// number that names no role.
    fn from_proto(value: i32) -> Result<Option<Self>, UnknownName>;
}

impl RoleProto for Role {
    fn to_proto(self) -> cqrs_proto::common::v1::Role {
        use cqrs_proto::common::v1::Role as P;
        match self {
            Role::ServiceDesk => P::ServiceDesk,
            Role::CommissioningAccountAdministrator => P::CommissioningAccountAdministrator,
            Role::CommissioningApprover => P::CommissioningApprover,
            Role::CommissioningUser => P::CommissioningUser,
            Role::CommissioningFinance => P::CommissioningFinance,
            Role::PracticeManager => P::PracticeManager,
            Role::PracticeUser => P::PracticeUser,
        }
    }

    fn from_proto(value: i32) -> Result<Option<Role>, UnknownName> {
        use cqrs_proto::common::v1::Role as P;
        let proto = P::try_from(value).map_err(|_| UnknownName {
            kind: "role",
            value: value.to_string(),
        })?;
        Ok(match proto {
            P::Unspecified => None,
            P::ServiceDesk => Some(Role::ServiceDesk),
            P::CommissioningAccountAdministrator => Some(Role::CommissioningAccountAdministrator),
            P::CommissioningApprover => Some(Role::CommissioningApprover),
            P::CommissioningUser => Some(Role::CommissioningUser),
            P::CommissioningFinance => Some(Role::CommissioningFinance),
            P::PracticeManager => Some(Role::PracticeManager),
            P::PracticeUser => Some(Role::PracticeUser),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn proto_round_trip() {
        for role in Role::ALL {
            let proto = role.to_proto();
            assert_eq!(proto.as_str_name(), format!("ROLE_{}", role.as_str()));
            assert_eq!(Role::from_proto(proto as i32), Ok(Some(role)));
        }
        assert_eq!(Role::from_proto(0), Ok(None));
        assert!(Role::from_proto(99).is_err());
    }
}
