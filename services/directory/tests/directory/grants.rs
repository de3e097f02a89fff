//! Grants: validity per kind, keyed grants, lists, administrators, revocation without identity.

use cqrs_auth::RoleProto;
use std::collections::HashSet;

use cqrs_auth::Role;
use cqrs_proto::common::v1 as common_pb;
use cqrs_proto::directory::v1::{self as pb, OrganisationKind as K};
use cqrs_suite::Service;
use cqrs_testkit::{assert_reason, violated_fields, with_token};
use tonic::Code;
use uuid::Uuid;

use crate::calls::{DirectoryCalls, Tree, directory_alone};

#[tokio::test]
async fn roles_fit_the_kind_of_organisation() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let kinds = [
        (tree.desk, K::ServiceDesk),
        (tree.r1, K::Region),
        (tree.c1, K::CommissioningOrganisation),
        (tree.p1, K::ServiceProvider),
    ];
    for role in Role::ALL {
        for (org, kind) in kinds {
            let valid = match role {
                Role::ServiceDesk => kind == K::ServiceDesk,
                Role::PracticeManager | Role::PracticeUser => kind == K::ServiceProvider,
                _ => matches!(kind, K::Region | K::CommissioningOrganisation),
            };
            match h.grant(Uuid::new_v4(), org, role).await {
                Ok(grant) => {
                    assert!(valid, "{role} at {kind:?} was granted");
                    assert_eq!(grant.role, role.to_proto() as i32);
                    assert_eq!(grant.organisation_kind, kind as i32);
                    assert!(!grant.organisation_name.is_empty());
                }
                Err(err) => {
                    assert!(!valid, "{role} at {kind:?}: {err:?}");
                    assert_reason(
                        &err,
                        Code::FailedPrecondition,
                        "ROLE_NOT_VALID_FOR_ORGANISATION",
                    );
                }
            }
        }
    }
    assert_eq!(h.count("grants").await, 1 + 4 * 2 + 2);
    let err = h
        .grant(Uuid::new_v4(), Uuid::new_v4(), Role::PracticeUser)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn keyed_and_repeated_grants() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let account = Uuid::new_v4();
    let key = Uuid::new_v4().to_string();
    let first = h
        .grant_keyed(&key, account, tree.p1, Role::PracticeUser)
        .await
        .unwrap();
    assert_eq!(
        h.grant_keyed(&key, account, tree.p1, Role::PracticeUser)
            .await
            .unwrap(),
        first
    );
    let err = h
        .grant_keyed(&key, account, tree.p1, Role::PracticeManager)
        .await
        .unwrap_err();
    assert_reason(&err, Code::AlreadyExists, "REQUEST_ID_REUSED");
    // Another request id for a grant that exists returns it.
    let again = h.grant(account, tree.p1, Role::PracticeUser).await.unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(h.count("grants").await, 1);
    assert_eq!(h.audit_rows("GRANT_ROLE").await.len(), 1);

    // Parallel: distinct ids for the same grant, and one id many times.
    let account = Uuid::new_v4();
    let key = Uuid::new_v4().to_string();
    let calls = (0..10).map(|i| {
        let (h, key) = (&h, key.clone());
        async move {
            if i % 2 == 0 {
                h.grant_keyed(&key, account, tree.c1, Role::CommissioningUser)
                    .await
            } else {
                h.grant(account, tree.c1, Role::CommissioningUser).await
            }
        }
    });
    let ids: HashSet<String> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|g| g.unwrap().id)
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(h.count("grants").await, 2);
    assert_eq!(h.audit_rows("GRANT_ROLE").await.len(), 2);
}

#[tokio::test]
async fn grant_role_is_internal_and_validated() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let (_, desk) = h.member(tree.desk, Role::ServiceDesk).await;
    let (_, admin) = h
        .member(tree.c1, Role::CommissioningAccountAdministrator)
        .await;
    for token in [desk, admin] {
        let err = h
            .directory()
            .grant_role(with_token(
                pb::GrantRoleRequest {
                    request_id: Uuid::new_v4().to_string(),
                    account_id: Uuid::new_v4().to_string(),
                    organisation_id: tree.p1.to_string(),
                    role: common_pb::Role::PracticeUser as i32,
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_reason(&err, Code::PermissionDenied, "SERVICE_PRINCIPAL_REQUIRED");
    }
    let before = h.count("grants").await;
    let err = h
        .directory()
        .grant_role(with_token(
            pb::GrantRoleRequest {
                request_id: String::new(),
                account_id: "x".into(),
                organisation_id: String::new(),
                role: 99,
            },
            &h.svc(),
        ))
        .await
        .unwrap_err();
    assert_reason(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(
        violated_fields(&err),
        ["request_id", "account_id", "organisation_id", "role"]
    );
    assert_eq!(h.count("grants").await, before);
    assert_eq!(h.count("request_keys").await, before + 10);
}

#[tokio::test]
async fn list_grants_self_scoped_and_members() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let account = Uuid::new_v4();
    h.grant(account, tree.p1, Role::PracticeManager)
        .await
        .unwrap();
    h.grant(account, tree.p4, Role::PracticeUser).await.unwrap();
    h.grant(account, tree.c1, Role::CommissioningFinance)
        .await
        .unwrap();

    let list = |token: String, account: Uuid, page_size: i32, page_token: String| {
        let req = with_token(
            pb::ListGrantsRequest {
                account_id: account.to_string(),
                page_size,
                page_token,
            },
            &token,
        );
        let mut client = h.directory();
        async move { client.list_grants(req).await.map(|r| r.into_inner()) }
    };
    let orgs = |r: &pb::ListGrantsResponse| -> HashSet<String> {
        r.grants.iter().map(|g| g.ods_code.clone()).collect()
    };
    // The account itself, without an active grant: everything.
    let own = h.user(account, None).await;
    let all = list(own, account, 0, String::new()).await.unwrap();
    assert_eq!(all.grants.len(), 3);
    assert_eq!(all.next_page_token, "");
    // Paging.
    let page = list(h.svc(), account, 2, String::new()).await.unwrap();
    assert_eq!(page.grants.len(), 2);
    let rest = list(h.svc(), account, 2, page.next_page_token)
        .await
        .unwrap();
    assert_eq!(rest.grants.len(), 1);
    assert_eq!(rest.next_page_token, "");
    // Scoped viewers see only their subtree.
    let (_, c1_user) = h.member(tree.c1, Role::CommissioningUser).await;
    let seen = list(c1_user, account, 0, String::new()).await.unwrap();
    assert_eq!(orgs(&seen), HashSet::from(["A81001".into(), "15N".into()]));
    let (_, p1_manager) = h.member(tree.p1, Role::PracticeManager).await;
    let seen = list(p1_manager, account, 0, String::new()).await.unwrap();
    assert_eq!(orgs(&seen), HashSet::from(["A81001".into()]));
    let (_, desk) = h.member(tree.desk, Role::ServiceDesk).await;
    assert_eq!(
        list(desk, account, 0, String::new())
            .await
            .unwrap()
            .grants
            .len(),
        3
    );
    let (_, p1_user) = h.member(tree.p1, Role::PracticeUser).await;
    let err = list(p1_user, account, 0, String::new()).await.unwrap_err();
    assert_reason(&err, Code::PermissionDenied, "ROLE_LACKS_PERMISSION");
    let err = list(h.svc(), account, 1001, String::new())
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_size"]);

    // Members of C1, with and without descendants, by role.
    let members = |org: Uuid, descendants: bool, role: common_pb::Role| {
        let req = with_token(
            pb::ListMembersRequest {
                organisation_id: org.to_string(),
                include_descendants: descendants,
                role: role as i32,
                page_size: 0,
                page_token: String::new(),
            },
            &h.svc(),
        );
        let mut client = h.directory();
        async move { client.list_members(req).await.unwrap().into_inner().grants }
    };
    // At C1: the account's finance grant and the viewer made above.
    assert_eq!(
        members(tree.c1, false, common_pb::Role::Unspecified)
            .await
            .len(),
        2
    );
    // With P1 and P2 below it: the account's manager grant and three viewers at P1.
    assert_eq!(
        members(tree.c1, true, common_pb::Role::Unspecified)
            .await
            .len(),
        5
    );
    assert_eq!(
        members(tree.r1, true, common_pb::Role::PracticeManager)
            .await
            .len(),
        2
    );
    assert_eq!(
        members(tree.r2, true, common_pb::Role::Unspecified)
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn administrators_at_or_above() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let at_c1 = h
        .grant(
            Uuid::new_v4(),
            tree.c1,
            Role::CommissioningAccountAdministrator,
        )
        .await
        .unwrap();
    let at_r1 = h
        .grant(
            Uuid::new_v4(),
            tree.r1,
            Role::CommissioningAccountAdministrator,
        )
        .await
        .unwrap();
    // Elsewhere in the tree, or other roles: not administrators of P1.
    h.grant(
        Uuid::new_v4(),
        tree.c2,
        Role::CommissioningAccountAdministrator,
    )
    .await
    .unwrap();
    h.grant(Uuid::new_v4(), tree.c1, Role::CommissioningUser)
        .await
        .unwrap();
    let approver = h
        .grant(Uuid::new_v4(), tree.r1, Role::CommissioningApprover)
        .await
        .unwrap();
    let admins = |org: Uuid, role: common_pb::Role, token: String| {
        let req = with_token(
            pb::ListAdministratorsRequest {
                organisation_id: org.to_string(),
                role: role as i32,
                page_size: 0,
                page_token: String::new(),
            },
            &token,
        );
        let mut client = h.directory();
        async move {
            client
                .list_administrators(req)
                .await
                .map(|r| r.into_inner())
        }
    };
    let ids = |r: pb::ListAdministratorsResponse| -> HashSet<String> {
        r.grants.into_iter().map(|g| g.id).collect()
    };
    let found = admins(tree.p1, common_pb::Role::PracticeUser, h.svc())
        .await
        .unwrap();
    assert_eq!(
        ids(found),
        HashSet::from([at_c1.id.clone(), at_r1.id.clone()])
    );
    let found = admins(tree.c1, common_pb::Role::Unspecified, h.svc())
        .await
        .unwrap();
    assert_eq!(ids(found), HashSet::from([at_c1.id, at_r1.id.clone()]));
    let found = admins(tree.r1, common_pb::Role::Unspecified, h.svc())
        .await
        .unwrap();
    assert_eq!(ids(found), HashSet::from([at_r1.id]));
    // Approving into the approver role is for approvers.
    let found = admins(tree.p1, common_pb::Role::CommissioningApprover, h.svc())
        .await
        .unwrap();
    assert_eq!(ids(found), HashSet::from([approver.id]));
    assert!(
        admins(tree.p4, common_pb::Role::Unspecified, h.svc())
            .await
            .unwrap()
            .grants
            .is_empty()
    );
    let err = admins(Uuid::new_v4(), common_pb::Role::Unspecified, h.svc())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let (_, desk) = h.member(tree.desk, Role::ServiceDesk).await;
    let err = admins(tree.p1, common_pb::Role::Unspecified, desk)
        .await
        .unwrap_err();
    assert_reason(&err, Code::PermissionDenied, "SERVICE_PRINCIPAL_REQUIRED");
}

#[tokio::test]
async fn revocation_commits_while_identity_is_unreachable() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let account = Uuid::new_v4();
    let grant = h.grant(account, tree.p1, Role::PracticeUser).await.unwrap();
    let (_, admin) = h
        .member(tree.c1, Role::CommissioningAccountAdministrator)
        .await;
    let revoked = h
        .directory()
        .revoke_role(with_token(
            pb::RevokeRoleRequest {
                grant_id: grant.id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap();
    assert_eq!(revoked, grant);
    assert_eq!(h.audit_rows("REVOKE_ROLE").await.len(), 1);
    // Identity did not answer: the session end waits, durably.
    let pending: Vec<(Uuid, Uuid, String, String, i32)> = sqlx::query_as(
        "SELECT account_id, organisation_id, role, reason, attempts FROM session_revocations",
    )
    .fetch_all(h.pool(Service::Directory))
    .await
    .unwrap();
    assert_eq!(
        pending,
        [(
            account,
            tree.p1,
            "PRACTICE_USER".to_owned(),
            "ROLE_REVOKED".to_owned(),
            1
        )]
    );
    // Revoking it again: it is gone.
    let err = h
        .directory()
        .revoke_role(with_token(
            pb::RevokeRoleRequest { grant_id: grant.id },
            &h.svc(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
