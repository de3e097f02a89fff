//! Proto enums as the tool shows and accepts them: the value name without its prefix
//! (`ROLE_SERVICE_DESK` is shown as `SERVICE_DESK`); on the command line, case-insensitive, with
//! `-` or `_`, with or without the prefix (`service-desk`, `SERVICE_DESK`, `ROLE_SERVICE_DESK`).

use cqrs_proto::access::v1 as access;
use cqrs_proto::common::v1 as common;
use cqrs_proto::directory::v1 as directory;
use cqrs_proto::identity::v1 as identity;
use cqrs_proto::notifications::v1 as notifications;

fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_owned()
}

fn normalise(raw: &str, prefix: &str) -> String {
    let upper = raw.trim().to_ascii_uppercase().replace('-', "_");
    match upper.strip_prefix(prefix) {
        Some(rest) => rest.to_owned(),
        None => upper,
    }
}

macro_rules! proto_enum {
    ($show:ident, $parse:ident, $ty:ty, $prefix:literal, [$($variant:ident),+ $(,)?]) => {
        /// The value's name without the enum prefix; `UNKNOWN(n)` for a value this build does
        /// not know.
        pub fn $show(value: i32) -> String {
            match <$ty>::try_from(value) {
                Ok(v) => short(v.as_str_name(), $prefix),
                Err(_) => format!("UNKNOWN({value})"),
            }
        }

        /// Parses a command-line value (the UNSPECIFIED value is never accepted).
        pub fn $parse(raw: &str) -> Result<$ty, String> {
            let wanted = normalise(raw, $prefix);
            $(
                if short(<$ty>::$variant.as_str_name(), $prefix) == wanted {
                    return Ok(<$ty>::$variant);
                }
            )+
            let accepted: Vec<String> = vec![$(
                short(<$ty>::$variant.as_str_name(), $prefix)
                    .to_ascii_lowercase()
                    .replace('_', "-")
            ),+];
            Err(format!("unknown value `{raw}`; expected one of: {}", accepted.join(", ")))
        }
    };
}

proto_enum!(
    role_name,
    parse_role,
    common::Role,
    "ROLE_",
    [
        ServiceDesk,
        CommissioningAccountAdministrator,
        CommissioningApprover,
        CommissioningUser,
        CommissioningFinance,
        PracticeManager,
        PracticeUser,
    ]
);

proto_enum!(
    kind_name,
    parse_kind,
    directory::OrganisationKind,
    "ORGANISATION_KIND_",
    [
        Region,
        CommissioningOrganisation,
        ServiceProvider,
        ServiceDesk
    ]
);

proto_enum!(
    realm_name,
    parse_realm,
    identity::Realm,
    "REALM_",
    [National, Local]
);

proto_enum!(
    account_state_name,
    parse_account_state,
    identity::AccountState,
    "ACCOUNT_STATE_",
    [PendingRegistration, Active, Disabled]
);

proto_enum!(
    lock_state_name,
    parse_lock_state,
    identity::LockState,
    "LOCK_STATE_",
    [Unlocked, TemporarilyLocked, PermanentlyLocked]
);

proto_enum!(
    invitation_state_name,
    parse_invitation_state,
    access::InvitationState,
    "INVITATION_STATE_",
    [Sent, Accepted, Expired, Cancelled]
);

proto_enum!(
    registration_state_name,
    parse_registration_state,
    access::RegistrationState,
    "REGISTRATION_STATE_",
    [Pending, Approved, Rejected]
);

proto_enum!(
    access_request_state_name,
    parse_access_request_state,
    access::AccessRequestState,
    "ACCESS_REQUEST_STATE_",
    [Pending, Approved, Rejected, Withdrawn]
);

proto_enum!(
    delivery_state_name,
    parse_delivery_state,
    notifications::DeliveryState,
    "DELIVERY_STATE_",
    [Pending, Delivered, DeadLetter, Suppressed]
);

proto_enum!(
    email_template_name,
    parse_email_template,
    notifications::EmailTemplate,
    "EMAIL_TEMPLATE_",
    [
        RegistrationLink,
        Invitation,
        RegistrationReceived,
        RegistrationApproved,
        RegistrationRejected,
        AccessRequestApproved,
        AccessRequestRejected,
        PasswordReset,
        UserIdReminder,
        AccountLocked,
        AccountUnlocked,
        AccountDisabled,
        AccountEnabled,
        PasswordChanged,
    ]
);

proto_enum!(
    actor_kind_name,
    parse_actor_kind,
    common::ActorKind,
    "ACTOR_KIND_",
    [User, Service, Anonymous, System]
);

proto_enum!(
    outcome_name,
    parse_outcome,
    common::AuditOutcome,
    "AUDIT_OUTCOME_",
    [Success, Failure, Denied]
);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_in_every_spelling() {
        for raw in [
            "service-desk",
            "SERVICE_DESK",
            "ROLE_SERVICE_DESK",
            " Service_Desk ",
            "role-service-desk",
        ] {
            assert_eq!(parse_role(raw), Ok(common::Role::ServiceDesk), "{raw}");
        }
        assert_eq!(
            parse_role("commissioning-account-administrator"),
            Ok(common::Role::CommissioningAccountAdministrator)
        );
    }

    #[test]
    fn unspecified_and_unknown_values_are_refused_with_the_choices() {
        let err = parse_role("unspecified").unwrap_err();
        assert!(err.contains("service-desk"), "{err}");
        assert!(err.contains("practice-user"), "{err}");
        assert!(parse_kind("planet").is_err());
        assert!(parse_kind("").is_err());
    }

    #[test]
    fn names_drop_the_prefix() {
        assert_eq!(
            role_name(common::Role::PracticeManager as i32),
            "PRACTICE_MANAGER"
        );
        assert_eq!(
            kind_name(directory::OrganisationKind::ServiceProvider as i32),
            "SERVICE_PROVIDER"
        );
        assert_eq!(role_name(0), "UNSPECIFIED");
        assert_eq!(role_name(99), "UNKNOWN(99)");
        assert_eq!(
            account_state_name(identity::AccountState::PendingRegistration as i32),
            "PENDING_REGISTRATION"
        );
    }

    #[test]
    fn names_round_trip_through_the_parser() {
        for v in 1..=7 {
            assert_eq!(parse_role(&role_name(v)).map(|r| r as i32), Ok(v));
        }
        for v in 1..=4 {
            assert_eq!(parse_kind(&kind_name(v)).map(|k| k as i32), Ok(v));
        }
    }
}
