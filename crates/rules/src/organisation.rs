//! Organisation kinds, ODS codes, names, and which roles each kind can hold: the parts of the
//! directory's rules that other services check too (registration, invitations).
//!
//! Rules (DESIGN §2 "Organisations", "Roles"):
//! - Kinds: `REGION` > `COMMISSIONING_ORGANISATION` > `SERVICE_PROVIDER` (a GP practice), plus
//!   `SERVICE_DESK`; [`OrganisationKind::parent_kind`] says which kind sits above which.
//! - ODS codes: after trimming and upper-casing, 3 to 6 characters of `A-Z0-9` with at least
//!   one letter (regions such as `Y56`, commissioning organisations such as `15N` or `QWO`,
//!   practices such as `A81001`).
//! - Names: trimmed, 1 to 200 characters (Unicode code points), no control characters.
//! - Which roles an organisation can hold: practice roles (`PRACTICE_MANAGER`,
//!   `PRACTICE_USER`) only at a service provider; commissioning roles at a region or a
//!   commissioning organisation; `SERVICE_DESK` only at a service-desk organisation.

use std::fmt;

use crate::names;
use crate::roles::Role;

pub const NAME_MAX_CHARS: usize = 200;
pub const ODS_MIN_LEN: usize = 3;
pub const ODS_MAX_LEN: usize = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrganisationKind {
    Region,
    CommissioningOrganisation,
    ServiceProvider,
    ServiceDesk,
}

impl OrganisationKind {
    pub const ALL: [OrganisationKind; 4] = [
        OrganisationKind::Region,
        OrganisationKind::CommissioningOrganisation,
        OrganisationKind::ServiceProvider,
        OrganisationKind::ServiceDesk,
    ];

    /// The storage and wire name (without the proto enum's prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            OrganisationKind::Region => "REGION",
            OrganisationKind::CommissioningOrganisation => "COMMISSIONING_ORGANISATION",
            OrganisationKind::ServiceProvider => "SERVICE_PROVIDER",
            OrganisationKind::ServiceDesk => "SERVICE_DESK",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind an organisation of this kind must sit under, if any.
    pub fn parent_kind(self) -> Option<OrganisationKind> {
        match self {
            OrganisationKind::Region | OrganisationKind::ServiceDesk => None,
            OrganisationKind::CommissioningOrganisation => Some(OrganisationKind::Region),
            OrganisationKind::ServiceProvider => Some(OrganisationKind::CommissioningOrganisation),
        }
    }
}

impl fmt::Display for OrganisationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an organisation of `kind` can hold grants of `role`.
pub fn role_valid_at(role: Role, kind: OrganisationKind) -> bool {
    use OrganisationKind as K;
    match role {
        Role::ServiceDesk => kind == K::ServiceDesk,
        Role::CommissioningAccountAdministrator
        | Role::CommissioningApprover
        | Role::CommissioningUser
        | Role::CommissioningFinance => {
            matches!(kind, K::Region | K::CommissioningOrganisation)
        }
        Role::PracticeManager | Role::PracticeUser => kind == K::ServiceProvider,
    }
}

/// An ODS code in its stored form, or why it is not one.
pub fn normalise_ods_code(raw: &str) -> Result<String, &'static str> {
    let code = raw.trim().to_ascii_uppercase();
    if code.is_empty() {
        return Err("is required");
    }
    let well_formed = (ODS_MIN_LEN..=ODS_MAX_LEN).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && code.bytes().any(|b| b.is_ascii_uppercase());
    if well_formed {
        Ok(code)
    } else {
        Err("must be 3 to 6 letters and digits, at least one a letter (e.g. Y56, 15N, A81001)")
    }
}

/// An organisation name in its stored form, or why it is not one.
pub fn normalise_name(raw: &str) -> Result<String, &'static str> {
    names::normalise(raw, NAME_MAX_CHARS, "must be at most 200 characters")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use OrganisationKind as K;

    #[test]
    fn ods_codes() {
        for (raw, want) in [
            ("Y56", "Y56"),
            ("15n", "15N"),
            (" qwo ", "QWO"),
            ("A81001", "A81001"),
        ] {
            assert_eq!(normalise_ods_code(raw).as_deref(), Ok(want), "{raw}");
        }
        for bad in ["", "  ", "AB", "A810011", "123456", "A8-001", "ÄBC", "A 81"] {
            assert!(normalise_ods_code(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            normalise_name("  Riverside Surgery ").as_deref(),
            Ok("Riverside Surgery")
        );
        assert!(normalise_name(" ").is_err());
        assert!(normalise_name(&"é".repeat(200)).is_ok());
        assert!(normalise_name(&"é".repeat(201)).is_err());
        assert!(normalise_name("Bad\nName").is_err());
    }

    #[test]
    fn roles_per_kind() {
        let table = [
            (Role::ServiceDesk, &[K::ServiceDesk][..]),
            (
                Role::CommissioningAccountAdministrator,
                &[K::Region, K::CommissioningOrganisation],
            ),
            (
                Role::CommissioningApprover,
                &[K::Region, K::CommissioningOrganisation],
            ),
            (
                Role::CommissioningUser,
                &[K::Region, K::CommissioningOrganisation],
            ),
            (
                Role::CommissioningFinance,
                &[K::Region, K::CommissioningOrganisation],
            ),
            (Role::PracticeManager, &[K::ServiceProvider]),
            (Role::PracticeUser, &[K::ServiceProvider]),
        ];
        for (role, kinds) in table {
            for kind in K::ALL {
                assert_eq!(
                    role_valid_at(role, kind),
                    kinds.contains(&kind),
                    "{role} {kind}"
                );
            }
        }
    }
}
