//! SECURITY 25 for identity: every identity RPC that acts on another account x every role x
//! where the target account's grants sit relative to the caller's grant (own organisation,
//! below it, above it, another branch, no grants at all, no such account) — allowed or
//! PERMISSION_DENIED exactly as the role table (DESIGN §2, API.md) says, checked with the real
//! directory, and permission before existence: a missing account answers an out-of-scope
//! caller exactly like one in another branch. Also the bootstrap account's service-desk grant.
//!
//! The expectations are written out from the design, independently of the code under test.

use cqrs_auth::RoleProto;
use cqrs_auth::{ActiveGrant, Role};
use cqrs_proto::directory::v1::{self as dir, OrganisationKind as K};
use cqrs_proto::identity::v1 as pb;
use cqrs_suite::Suite;
use cqrs_testkit::{status_reason, with_token};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::calls::{IdentityCalls, PASSWORDS, SERVICE_CLIENT, start, start_with_directory};
use crate::grants::GrantCalls;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    Disable,
    Enable,
    Unlock,
    SendReset,
    Get,
}

const RPCS: [Rpc; 5] = [
    Rpc::Disable,
    Rpc::Enable,
    Rpc::Unlock,
    Rpc::SendReset,
    Rpc::Get,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pos {
    Own,
    Descendant,
    Ancestor,
    Other,
    NoGrants,
    Missing,
}

const POSITIONS: [Pos; 6] = [
    Pos::Own,
    Pos::Descendant,
    Pos::Ancestor,
    Pos::Other,
    Pos::NoGrants,
    Pos::Missing,
];

const ROLES: [Role; 7] = [
    Role::ServiceDesk,
    Role::CommissioningAccountAdministrator,
    Role::CommissioningApprover,
    Role::CommissioningUser,
    Role::CommissioningFinance,
    Role::PracticeManager,
    Role::PracticeUser,
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Past the permission check: done, or refused for the account's state (the targets are
    /// still PENDING_REGISTRATION, so disabling them, say, is a state error).
    Allowed,
    Denied,
    NotFound,
}

/// Which roles may use each RPC on someone else's account at all (API.md), written out.
fn role_may(rpc: Rpc, role: Role) -> bool {
    match rpc {
        Rpc::Disable => role == Role::CommissioningApprover,
        Rpc::Enable => matches!(
            role,
            Role::ServiceDesk | Role::CommissioningAccountAdministrator
        ),
        Rpc::Unlock | Rpc::SendReset => role == Role::ServiceDesk,
        // Everyone who may view users: commissioners their scope, practice managers theirs.
        Rpc::Get => role != Role::PracticeUser,
    }
}

fn expected(rpc: Rpc, role: Role, pos: Pos) -> Outcome {
    if !role_may(rpc, role) {
        return Outcome::Denied;
    }
    // The service desk's scope is the whole suite; everyone else's is its grant's subtree.
    if role == Role::ServiceDesk {
        return if pos == Pos::Missing {
            Outcome::NotFound
        } else {
            Outcome::Allowed
        };
    }
    match pos {
        Pos::Own | Pos::Descendant => Outcome::Allowed,
        _ => Outcome::Denied,
    }
}

fn outcome(result: Result<(), Status>) -> Outcome {
    match result {
        Ok(()) => Outcome::Allowed,
        Err(s) => match s.code() {
            Code::FailedPrecondition => Outcome::Allowed,
            Code::PermissionDenied => Outcome::Denied,
            Code::NotFound => Outcome::NotFound,
            other => panic!("unexpected {other:?}: {s:?}"),
        },
    }
}

/// The targeted RPCs, and their targets.
trait ScopeCalls {
    /// `rpc` on `target` with `token`, whatever it answers.
    async fn call(&self, rpc: Rpc, token: &str, target: &str) -> Result<(), Status>;
    async fn target(&self, n: usize, grant: Option<(Uuid, Role)>) -> String;
}

impl ScopeCalls for Suite {
    async fn call(&self, rpc: Rpc, token: &str, target: &str) -> Result<(), Status> {
        let mut c = self.identity();
        let account_id = target.to_owned();
        match rpc {
            Rpc::Disable => c
                .disable_account(with_token(
                    pb::DisableAccountRequest {
                        account_id,
                        reason: String::new(),
                    },
                    token,
                ))
                .await
                .map(drop),
            Rpc::Enable => c
                .enable_account(with_token(pb::EnableAccountRequest { account_id }, token))
                .await
                .map(drop),
            Rpc::Unlock => c
                .unlock_account(with_token(pb::UnlockAccountRequest { account_id }, token))
                .await
                .map(drop),
            Rpc::SendReset => c
                .send_password_reset(with_token(
                    pb::SendPasswordResetRequest { account_id },
                    token,
                ))
                .await
                .map(drop),
            Rpc::Get => c
                .get_account(with_token(pb::GetAccountRequest { account_id }, token))
                .await
                .map(drop),
        }
    }

    async fn target(&self, n: usize, grant: Option<(Uuid, Role)>) -> String {
        let account = self
            .create(
                pb::Realm::Local,
                &format!("target.{n}@practice.org"),
                "Tia",
                "Target",
            )
            .await
            .unwrap();
        if let Some((org, role)) = grant {
            self.grant_role(&account.id, org, role).await;
        }
        account.id
    }
}

#[tokio::test]
async fn targeted_rpcs_follow_the_role_table_across_organisations() {
    let h = start_with_directory(&[]).await;
    let region = h.org(K::Region, "Y56", None).await;
    let ccg = h
        .org(K::CommissioningOrganisation, "15N", Some(region))
        .await;
    let other_ccg = h
        .org(K::CommissioningOrganisation, "16N", Some(region))
        .await;
    let practice = h.org(K::ServiceProvider, "A81001", Some(ccg)).await;
    let other_practice = h.org(K::ServiceProvider, "A81002", Some(other_ccg)).await;
    let desk = h.org(K::ServiceDesk, "X26", None).await;

    let at_desk = h.target(0, Some((desk, Role::ServiceDesk))).await;
    let at_region = h.target(1, Some((region, Role::CommissioningUser))).await;
    let at_ccg = h.target(2, Some((ccg, Role::CommissioningUser))).await;
    let at_other_ccg = h
        .target(3, Some((other_ccg, Role::CommissioningUser)))
        .await;
    let at_practice = h.target(4, Some((practice, Role::PracticeUser))).await;
    let at_other_practice = h
        .target(5, Some((other_practice, Role::PracticeUser)))
        .await;
    let no_grants = h.target(6, None).await;
    let missing = Uuid::new_v4().to_string();

    let mut failures = Vec::new();
    let mut checked = 0;
    for role in ROLES {
        // Each role sits where it can be granted; the targets are placed relative to it.
        let (home, own, below, above, other) = match role {
            Role::ServiceDesk => (desk, &at_desk, &at_practice, &at_region, &at_other_ccg),
            Role::PracticeManager | Role::PracticeUser => (
                practice,
                &at_practice,
                // A practice has nothing below it.
                &String::new(),
                &at_ccg,
                &at_other_practice,
            ),
            _ => (ccg, &at_ccg, &at_practice, &at_region, &at_other_ccg),
        };
        let caller = Uuid::new_v4();
        h.grant_role(&caller.to_string(), home, role).await;
        let token = h
            .user_token(
                caller,
                Some(ActiveGrant {
                    organisation_id: home,
                    role,
                }),
            )
            .await;
        for rpc in RPCS {
            let mut denial_elsewhere = None;
            for pos in POSITIONS {
                let target = match pos {
                    Pos::Own => own,
                    Pos::Descendant => below,
                    Pos::Ancestor => above,
                    Pos::Other => other,
                    Pos::NoGrants => &no_grants,
                    Pos::Missing => &missing,
                };
                if target.is_empty() {
                    continue;
                }
                let result = h.call(rpc, &token, target).await;
                // Probing ids must not work: a missing account is refused like one in
                // another branch, with the same reason.
                if let Err(s) = &result
                    && s.code() == Code::PermissionDenied
                {
                    let reason = status_reason(s).unwrap_or_default();
                    match pos {
                        Pos::Other => denial_elsewhere = Some(reason),
                        Pos::Missing
                            if denial_elsewhere.is_some()
                                && denial_elsewhere.as_deref() != Some(reason.as_str()) =>
                        {
                            failures.push(format!(
                                "{role:?} {rpc:?}: missing answered {reason:?}, other branch {denial_elsewhere:?}"
                            ));
                        }
                        _ => {}
                    }
                }
                let got = outcome(result);
                let want = expected(rpc, role, pos);
                checked += 1;
                if got != want {
                    failures.push(format!(
                        "{role:?} {rpc:?} {pos:?}: got {got:?}, want {want:?}"
                    ));
                }
            }
        }
    }
    assert!(checked > 180, "{checked}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Internal callers: the workflows disable and re-enable; unlocking and resets are the
    // desk's alone.
    let service = h.service_token_of(SERVICE_CLIENT);
    for (rpc, want) in [
        (Rpc::Disable, Outcome::Allowed),
        (Rpc::Enable, Outcome::Allowed),
        (Rpc::Get, Outcome::Allowed),
        (Rpc::Unlock, Outcome::Denied),
        (Rpc::SendReset, Outcome::Denied),
    ] {
        assert_eq!(
            outcome(h.call(rpc, &service, &at_practice).await),
            want,
            "{rpc:?}"
        );
    }
    assert_eq!(
        outcome(h.call(Rpc::Disable, &service, &missing).await),
        Outcome::NotFound
    );
}

/// An approver in scope really disables the account and its sessions end; the account
/// administrator in scope re-enables it.
#[tokio::test]
async fn approver_disables_and_administrator_enables_in_scope() {
    let h = start_with_directory(&[]).await;
    let region = h.org(K::Region, "Y56", None).await;
    let ccg = h
        .org(K::CommissioningOrganisation, "15N", Some(region))
        .await;
    let practice = h.org(K::ServiceProvider, "A81001", Some(ccg)).await;
    let user = h
        .active(pb::Realm::Local, "pat.user@practice.org", PASSWORDS[0])
        .await;
    h.grant_role(&user.id, practice, Role::PracticeUser).await;
    let signed = h.sign_in(&user.email, PASSWORDS[0]).await.unwrap();

    let approver = Uuid::new_v4();
    h.grant_role(&approver.to_string(), ccg, Role::CommissioningApprover)
        .await;
    let approver_token = h
        .user_token(
            approver,
            Some(ActiveGrant {
                organisation_id: ccg,
                role: Role::CommissioningApprover,
            }),
        )
        .await;
    h.call(Rpc::Disable, &approver_token, &user.id)
        .await
        .unwrap();
    let account = h
        .get_account(&h.service_token_of(SERVICE_CLIENT), &user.id)
        .await
        .unwrap();
    assert_eq!(account.state, pb::AccountState::Disabled as i32);
    let err = h
        .get_account(&signed.access_token, &user.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let audit = h.audit_rows("DISABLE_ACCOUNT", &user.id).await;
    assert_eq!(audit.len(), 1);

    let admin = Uuid::new_v4();
    h.grant_role(
        &admin.to_string(),
        region,
        Role::CommissioningAccountAdministrator,
    )
    .await;
    let admin_token = h
        .user_token(
            admin,
            Some(ActiveGrant {
                organisation_id: region,
                role: Role::CommissioningAccountAdministrator,
            }),
        )
        .await;
    h.call(Rpc::Enable, &admin_token, &user.id).await.unwrap();
    h.sign_in(&user.email, PASSWORDS[0]).await.unwrap();
}

/// Without the directory a scoped decision cannot be made: UNAVAILABLE, nothing changed.
#[tokio::test]
async fn scoped_actions_fail_closed_without_the_directory() {
    let h = start(&[]).await;
    let target = h
        .create(
            pb::Realm::Local,
            "tess.target@practice.org",
            "Tess",
            "Target",
        )
        .await
        .unwrap();
    let approver = h
        .role_token(Uuid::new_v4(), Some(Role::CommissioningApprover))
        .await;
    let err = h
        .call(Rpc::Disable, &approver, &target.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(h.audit_rows("DISABLE_ACCOUNT", &target.id).await.is_empty());
    // A role that could never do it is refused without asking the directory.
    let user = h.role_token(Uuid::new_v4(), Some(Role::PracticeUser)).await;
    let err = h.call(Rpc::Disable, &user, &target.id).await.unwrap_err();
    assert_eq!(
        status_reason(&err).as_deref(),
        Some("ROLE_LACKS_PERMISSION")
    );
}

/// The bootstrap account gets the service-desk organisation and its SERVICE_DESK grant from
/// the directory, once, and can then act as the service desk.
#[tokio::test]
async fn bootstrap_account_gets_the_service_desk_grant() {
    let h = start_with_directory(&[
        ("CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL", "desk.lead@nhs.net"),
        ("CQRS_BOOTSTRAP_SERVICE_DESK_ODS_CODE", "X26"),
    ])
    .await;
    let account_id = h.identity_service().bootstrap().await.unwrap().unwrap();
    let config = h.identity_service().config.bootstrap.clone().unwrap();
    let api = &h.identity_service().api;
    assert_eq!(
        cqrs_identity::bootstrap::grant_pending(api, &config)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        h.count("bootstrap_grants WHERE done_at IS NOT NULL").await,
        1
    );
    // Asking again (a crash before done_at was written) creates nothing new.
    let again = api
        .directory()
        .ensure_service_desk(account_id, "X26", "CQRS Service Desk")
        .await
        .unwrap();

    let grants = h
        .directory()
        .list_grants(with_token(
            dir::ListGrantsRequest {
                account_id: account_id.to_string(),
                page_size: 0,
                page_token: String::new(),
            },
            &h.service_token_of(SERVICE_CLIENT),
        ))
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0].role, Role::ServiceDesk.to_proto() as i32);
    assert_eq!(grants[0].ods_code, "X26");
    assert_eq!(grants[0].organisation_kind, K::ServiceDesk as i32);
    assert_eq!(grants[0].id, again.id);

    let token = h
        .outbox_token(&account_id.to_string(), "REGISTRATION_LINK")
        .await;
    let account = h.complete_registration(&token, PASSWORDS[0]).await.unwrap();
    let signed = h.sign_in(&account.user_id, PASSWORDS[0]).await.unwrap();
    assert_eq!(signed.grants.len(), 1);
    let selected = h
        .identity()
        .select_role(with_token(
            pb::SelectRoleRequest {
                organisation_id: grants[0].organisation_id.clone(),
                role: Role::ServiceDesk.to_proto() as i32,
            },
            &signed.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    // Now a desk-only RPC works with the scoped token.
    h.identity()
        .lookup_account(with_token(
            pb::LookupAccountRequest {
                key: Some(pb::lookup_account_request::Key::Email(
                    "desk.lead@nhs.net".into(),
                )),
            },
            &selected.access_token,
        ))
        .await
        .unwrap();
}
