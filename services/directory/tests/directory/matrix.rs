//! SECURITY 25: every directory RPC that takes a target x every role x the target's position
//! relative to the caller's grant (own, descendant, ancestor, other branch, missing) — allowed
//! or PERMISSION_DENIED exactly as the role table (DESIGN §2) says, with permission checked
//! before existence: a missing target answers an out-of-scope caller exactly like an existing
//! one in another branch.
//!
//! The expectations below are written out from the design, independently of the code under
//! test.

use cqrs_auth::RoleProto;
use std::sync::atomic::{AtomicU32, Ordering};

use cqrs_auth::Role;
use cqrs_proto::directory::v1::{self as pb, OrganisationKind as K};
use cqrs_suite::{Service, Suite};
use cqrs_testkit::{assert_reason, status_reason, with_token};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::calls::{DirectoryCalls, Tree, directory_alone};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    CreateOrganisation,
    SetApprovalLevel,
    ListMembers,
    RevokeRole,
    RevokeAllRoles,
    ListGrants,
    GrantRole,
    ListAdministrators,
}

const RPCS: [Rpc; 8] = [
    Rpc::CreateOrganisation,
    Rpc::SetApprovalLevel,
    Rpc::ListMembers,
    Rpc::RevokeRole,
    Rpc::RevokeAllRoles,
    Rpc::ListGrants,
    Rpc::GrantRole,
    Rpc::ListAdministrators,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pos {
    Own,
    Descendant,
    Ancestor,
    Other,
    Missing,
}

const POSITIONS: [Pos; 5] = [
    Pos::Own,
    Pos::Descendant,
    Pos::Ancestor,
    Pos::Other,
    Pos::Missing,
];

/// Who calls: a user acting through one of its grants, or a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    User(Role),
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Past the permission check (the call did its work, or refused for a reason that is not
    /// about permission, e.g. a practice cannot have children).
    Allowed,
    /// Answered, but the target lay outside the caller's scope, so nothing of it was touched
    /// or shown (RevokeAllRoles and ListGrants filter by scope).
    Filtered,
    Denied(String),
    NotFound,
}

/// Which roles may use each RPC at all (DESIGN §2 and API.md), written out.
fn role_may(rpc: Rpc, role: Role) -> bool {
    use Role::*;
    match rpc {
        Rpc::CreateOrganisation => role == ServiceDesk,
        Rpc::SetApprovalLevel => matches!(
            role,
            CommissioningApprover | CommissioningUser | CommissioningFinance
        ),
        Rpc::ListMembers | Rpc::ListGrants => matches!(
            role,
            ServiceDesk
                | CommissioningAccountAdministrator
                | CommissioningApprover
                | CommissioningUser
                | CommissioningFinance
                | PracticeManager
        ),
        Rpc::RevokeRole | Rpc::RevokeAllRoles => role == CommissioningAccountAdministrator,
        Rpc::GrantRole | Rpc::ListAdministrators => false,
    }
}

/// A grant covers its organisation and descendants; the service desk's covers everything.
fn covers(role: Role, pos: Pos) -> bool {
    role == Role::ServiceDesk || matches!(pos, Pos::Own | Pos::Descendant)
}

fn expected(rpc: Rpc, caller: Caller, pos: Pos) -> Outcome {
    let Caller::User(role) = caller else {
        return if pos == Pos::Missing {
            Outcome::NotFound
        } else {
            Outcome::Allowed
        };
    };
    if matches!(rpc, Rpc::GrantRole | Rpc::ListAdministrators) {
        // Internal only (the access workflow), whatever the role.
        return Outcome::Denied("SERVICE_PRINCIPAL_REQUIRED".into());
    }
    if !role_may(rpc, role) {
        return Outcome::Denied("ROLE_LACKS_PERMISSION".into());
    }
    if matches!(rpc, Rpc::RevokeAllRoles | Rpc::ListGrants) {
        return if covers(role, pos) {
            Outcome::Allowed
        } else {
            Outcome::Filtered
        };
    }
    match pos {
        Pos::Missing if role == Role::ServiceDesk => Outcome::NotFound,
        Pos::Missing => Outcome::Denied("NO_GRANT_IN_SCOPE".into()),
        _ if covers(role, pos) => Outcome::Allowed,
        _ => Outcome::Denied("NO_GRANT_IN_SCOPE".into()),
    }
}

/// The caller's grant: the service desk at the desk, commissioners at C1, practice roles at P1.
fn home(tree: &Tree, role: Role) -> Uuid {
    match role {
        Role::ServiceDesk => tree.desk,
        Role::PracticeManager | Role::PracticeUser => tree.p1,
        _ => tree.c1,
    }
}

/// The target at `pos` from the caller's grant, if the tree has one there.
fn target(tree: &Tree, caller: Caller, pos: Pos) -> Option<Uuid> {
    let home = match caller {
        Caller::User(role) => home(tree, role),
        Caller::Internal => tree.c1,
    };
    let (descendant, ancestor, other) = if home == tree.c1 {
        (Some(tree.p1), Some(tree.r1), tree.c3)
    } else if home == tree.p1 {
        (None, Some(tree.c1), tree.p4)
    } else {
        (None, None, tree.p4)
    };
    match pos {
        Pos::Own => Some(home),
        Pos::Descendant => descendant,
        Pos::Ancestor => ancestor,
        Pos::Other => Some(other),
        Pos::Missing => Some(Uuid::new_v4()),
    }
}

fn kind_of(tree: &Tree, org: Uuid) -> Option<K> {
    if org == tree.desk {
        Some(K::ServiceDesk)
    } else if [tree.r1, tree.r2].contains(&org) {
        Some(K::Region)
    } else if [tree.c1, tree.c2, tree.c3].contains(&org) {
        Some(K::CommissioningOrganisation)
    } else if [tree.p1, tree.p2, tree.p3, tree.p4].contains(&org) {
        Some(K::ServiceProvider)
    } else {
        None
    }
}

/// A role an organisation of `kind` can hold, for grants made as targets.
fn role_at(kind: K) -> Role {
    match kind {
        K::ServiceDesk => Role::ServiceDesk,
        K::ServiceProvider => Role::PracticeUser,
        _ => Role::CommissioningUser,
    }
}

fn classify(result: Result<(), Status>) -> Outcome {
    match result {
        Ok(()) => Outcome::Allowed,
        Err(s) if s.code() == Code::PermissionDenied => {
            Outcome::Denied(status_reason(&s).unwrap_or_default())
        }
        Err(s) if s.code() == Code::NotFound => Outcome::NotFound,
        // Past the permission check, refused by a rule about the target itself.
        Err(s) if s.code() == Code::FailedPrecondition => Outcome::Allowed,
        Err(s) => panic!("unexpected status {s:?}"),
    }
}

static ODS: AtomicU32 = AtomicU32::new(0);

async fn call(h: &Suite, tree: &Tree, rpc: Rpc, token: &str, target: Uuid) -> Outcome {
    let mut client = h.directory();
    let kind = kind_of(tree, target);
    match rpc {
        Rpc::CreateOrganisation => {
            let child = match kind {
                Some(K::Region) => K::CommissioningOrganisation,
                _ => K::ServiceProvider,
            };
            let ods = format!("M{:05}", ODS.fetch_add(1, Ordering::SeqCst));
            classify(
                h.create_org_as(
                    token,
                    &Uuid::new_v4().to_string(),
                    child,
                    &ods,
                    "M",
                    Some(target),
                )
                .await
                .map(drop),
            )
        }
        Rpc::SetApprovalLevel => classify(
            client
                .set_approval_level(with_token(
                    pb::SetApprovalLevelRequest {
                        organisation_id: target.to_string(),
                        multi_level_approval: true,
                    },
                    token,
                ))
                .await
                .map(drop),
        ),
        Rpc::ListMembers => classify(
            client
                .list_members(with_token(
                    pb::ListMembersRequest {
                        organisation_id: target.to_string(),
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .map(drop),
        ),
        Rpc::RevokeRole => {
            let grant_id = match kind {
                Some(kind) => {
                    h.grant(Uuid::new_v4(), target, role_at(kind))
                        .await
                        .unwrap()
                        .id
                }
                None => Uuid::new_v4().to_string(),
            };
            let outcome = classify(
                client
                    .revoke_role(with_token(
                        pb::RevokeRoleRequest {
                            grant_id: grant_id.clone(),
                        },
                        token,
                    ))
                    .await
                    .map(drop),
            );
            let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM grants WHERE id = $1::uuid")
                .bind(&grant_id)
                .fetch_one(h.pool(Service::Directory))
                .await
                .unwrap();
            if kind.is_some() {
                assert_eq!(
                    left == 0,
                    outcome == Outcome::Allowed,
                    "grant removed iff allowed"
                );
            }
            outcome
        }
        Rpc::RevokeAllRoles | Rpc::ListGrants => {
            let Some(kind) = kind else {
                unreachable!("account targets are never missing")
            };
            let account = Uuid::new_v4();
            let grant = h.grant(account, target, role_at(kind)).await.unwrap();
            let result = if rpc == Rpc::RevokeAllRoles {
                client
                    .revoke_all_roles(with_token(
                        pb::RevokeAllRolesRequest {
                            account_id: account.to_string(),
                        },
                        token,
                    ))
                    .await
                    .map(|r| r.into_inner().grants)
            } else {
                client
                    .list_grants(with_token(
                        pb::ListGrantsRequest {
                            account_id: account.to_string(),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await
                    .map(|r| r.into_inner().grants)
            };
            match result {
                Ok(grants) if grants.iter().any(|g| g.id == grant.id) => Outcome::Allowed,
                Ok(grants) => {
                    assert!(grants.is_empty());
                    Outcome::Filtered
                }
                Err(s) => classify(Err(s)),
            }
        }
        Rpc::GrantRole => classify(
            client
                .grant_role(with_token(
                    pb::GrantRoleRequest {
                        request_id: Uuid::new_v4().to_string(),
                        account_id: Uuid::new_v4().to_string(),
                        organisation_id: target.to_string(),
                        role: role_at(kind.unwrap_or(K::Region)).to_proto() as i32,
                    },
                    token,
                ))
                .await
                .map(drop),
        ),
        Rpc::ListAdministrators => classify(
            client
                .list_administrators(with_token(
                    pb::ListAdministratorsRequest {
                        organisation_id: target.to_string(),
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .map(drop),
        ),
    }
}

#[tokio::test]
async fn every_rpc_role_and_position() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let mut callers: Vec<(Caller, String)> = Vec::new();
    for role in Role::ALL {
        let (_, token) = h.member(home(&tree, role), role).await;
        callers.push((Caller::User(role), token));
    }
    callers.push((Caller::Internal, h.svc()));

    let mut checked = 0;
    let mut failures = Vec::new();
    for rpc in RPCS {
        for (caller, token) in &callers {
            let mut answers = Vec::new();
            for pos in POSITIONS {
                let account_target = matches!(rpc, Rpc::RevokeAllRoles | Rpc::ListGrants);
                if account_target && pos == Pos::Missing {
                    continue;
                }
                let Some(target) = target(&tree, *caller, pos) else {
                    continue;
                };
                let want = expected(rpc, *caller, pos);
                let got = call(&h, &tree, rpc, token, target).await;
                checked += 1;
                if got != want {
                    failures.push(format!(
                        "{rpc:?} {caller:?} {pos:?}: want {want:?}, got {got:?}"
                    ));
                }
                answers.push((pos, got));
            }
            // Existence is not revealed: a missing target answers like another branch's.
            let other = answers.iter().find(|(p, _)| *p == Pos::Other);
            let missing = answers.iter().find(|(p, _)| *p == Pos::Missing);
            if let (Some((_, other @ Outcome::Denied(_))), Some((_, missing))) = (other, missing) {
                assert_eq!(missing, other, "{rpc:?} {caller:?}: missing vs other");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 250, "{checked}");

    // A user without an active grant may do none of it.
    let token = h.user(Uuid::new_v4(), None).await;
    for rpc in RPCS {
        let got = call(&h, &tree, rpc, &token, tree.p1).await;
        let want_reason = if matches!(rpc, Rpc::GrantRole | Rpc::ListAdministrators) {
            "SERVICE_PRINCIPAL_REQUIRED"
        } else {
            "NO_ACTIVE_GRANT"
        };
        assert_eq!(got, Outcome::Denied(want_reason.into()), "{rpc:?}");
    }
}

/// Without a token, every RPC but the public search is UNAUTHENTICATED.
#[tokio::test]
async fn unauthenticated_without_a_token() {
    let h = directory_alone().await;
    let mut c = h.directory();
    let id = Uuid::new_v4().to_string();
    let results: Vec<(&str, Result<(), Status>)> = vec![
        (
            "CreateOrganisation",
            c.create_organisation(pb::CreateOrganisationRequest::default())
                .await
                .map(drop),
        ),
        (
            "GetOrganisation",
            c.get_organisation(pb::GetOrganisationRequest {
                organisation_id: id.clone(),
            })
            .await
            .map(drop),
        ),
        (
            "ListOrganisations",
            c.list_organisations(pb::ListOrganisationsRequest::default())
                .await
                .map(drop),
        ),
        (
            "SetApprovalLevel",
            c.set_approval_level(pb::SetApprovalLevelRequest::default())
                .await
                .map(drop),
        ),
        (
            "GrantRole",
            c.grant_role(pb::GrantRoleRequest::default())
                .await
                .map(drop),
        ),
        (
            "RevokeRole",
            c.revoke_role(pb::RevokeRoleRequest::default())
                .await
                .map(drop),
        ),
        (
            "RevokeAllRoles",
            c.revoke_all_roles(pb::RevokeAllRolesRequest::default())
                .await
                .map(drop),
        ),
        (
            "ListGrants",
            c.list_grants(pb::ListGrantsRequest::default())
                .await
                .map(drop),
        ),
        (
            "ListMembers",
            c.list_members(pb::ListMembersRequest::default())
                .await
                .map(drop),
        ),
        (
            "CheckPermission",
            c.check_permission(pb::CheckPermissionRequest::default())
                .await
                .map(drop),
        ),
        (
            "ListAdministrators",
            c.list_administrators(pb::ListAdministratorsRequest::default())
                .await
                .map(drop),
        ),
        (
            "ListAuditEvents",
            c.list_audit_events(pb::ListAuditEventsRequest::default())
                .await
                .map(drop),
        ),
    ];
    for (name, result) in results {
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}");
        assert_reason(&status, Code::Unauthenticated, "AUTHENTICATION_REQUIRED");
    }
    // An ended session's token no longer counts.
    let account = Uuid::new_v4();
    let (sid, token) = h.keys.user_session(&h.redis, account, None).await;
    h.keys.end_session(&h.redis, account, &sid).await;
    let status = c
        .get_organisation(with_token(
            pb::GetOrganisationRequest {
                organisation_id: id,
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_reason(&status, Code::Unauthenticated, "AUTHENTICATION_REQUIRED");
    let search = c
        .search_organisations(pb::SearchOrganisationsRequest {
            query: "no such".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(search.into_inner().organisations.is_empty());
}
