//! Rows to protobuf messages, and proto enums to domain values.

use cqrs_auth::RoleProto;

use cqrs_auth::Role;
use cqrs_proto::directory::v1 as pb;
use uuid::Uuid;

use crate::domain::OrganisationKind;
use crate::store::{AccountGrant, GrantRow, OrganisationRow};

pub use cqrs_edge::request::{UnknownValue, role_from_proto};

pub use cqrs_edge::timestamp;

pub fn kind_to_proto(kind: Option<OrganisationKind>) -> pb::OrganisationKind {
    match kind {
        Some(OrganisationKind::Region) => pb::OrganisationKind::Region,
        Some(OrganisationKind::CommissioningOrganisation) => {
            pb::OrganisationKind::CommissioningOrganisation
        }
        Some(OrganisationKind::ServiceProvider) => pb::OrganisationKind::ServiceProvider,
        Some(OrganisationKind::ServiceDesk) => pb::OrganisationKind::ServiceDesk,
        None => pb::OrganisationKind::Unspecified,
    }
}

/// `Ok(None)` for UNSPECIFIED, `Err` for a number that is no kind.
pub fn kind_from_proto(value: i32) -> Result<Option<OrganisationKind>, UnknownValue> {
    Ok(
        match pb::OrganisationKind::try_from(value).map_err(|_| UnknownValue)? {
            pb::OrganisationKind::Unspecified => None,
            pb::OrganisationKind::Region => Some(OrganisationKind::Region),
            pb::OrganisationKind::CommissioningOrganisation => {
                Some(OrganisationKind::CommissioningOrganisation)
            }
            pb::OrganisationKind::ServiceProvider => Some(OrganisationKind::ServiceProvider),
            pb::OrganisationKind::ServiceDesk => Some(OrganisationKind::ServiceDesk),
        },
    )
}

pub fn organisation(row: &OrganisationRow) -> pb::Organisation {
    pb::Organisation {
        id: row.id.to_string(),
        kind: kind_to_proto(row.kind()) as i32,
        ods_code: row.ods_code.clone(),
        name: row.name.clone(),
        parent_id: row.parent_id.map(|p| p.to_string()).unwrap_or_default(),
        multi_level_approval: row.multi_level_approval,
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
        path: row.path.iter().map(ToString::to_string).collect(),
    }
}

pub fn grant(row: &GrantRow) -> pb::Grant {
    pb::Grant {
        id: row.id.to_string(),
        account_id: row.account_id.to_string(),
        organisation_id: row.organisation_id.to_string(),
        role: row
            .role()
            .map_or(cqrs_proto::common::v1::Role::Unspecified, Role::to_proto) as i32,
        organisation_name: row.organisation_name.clone(),
        ods_code: row.ods_code.clone(),
        organisation_kind: kind_to_proto(row.organisation_kind()) as i32,
        create_time: Some(timestamp(row.created_at)),
    }
}

/// A grant of `account_id` as CheckPermission holds it.
pub fn account_grant(account_id: Uuid, grant: &AccountGrant) -> pb::Grant {
    pb::Grant {
        id: grant.id.to_string(),
        account_id: account_id.to_string(),
        organisation_id: grant.organisation.id.to_string(),
        role: grant.role.to_proto() as i32,
        organisation_name: grant.organisation.name.to_string(),
        ods_code: grant.organisation.ods_code.to_string(),
        organisation_kind: kind_to_proto(grant.organisation.kind) as i32,
        create_time: Some(timestamp(grant.created_at)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in OrganisationKind::ALL {
            let proto = kind_to_proto(Some(kind));
            assert_eq!(
                proto.as_str_name(),
                format!("ORGANISATION_KIND_{}", kind.as_str())
            );
            assert_eq!(kind_from_proto(proto as i32), Ok(Some(kind)));
        }
        assert_eq!(kind_from_proto(0), Ok(None));
        assert!(kind_from_proto(42).is_err());
    }
}
