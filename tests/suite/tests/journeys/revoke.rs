//! Journey 5: the administrator revokes the user → the user still signs in, has no grants,
//! can request access again.

use cqrs_proto::access::v1::{self as access_pb, AccessRequestState};
use cqrs_proto::common::v1::Role;
use cqrs_proto::directory::v1 as dir_pb;
use cqrs_proto::identity::v1::AccountState;
use cqrs_suite::{AuditQuery, Service, World, assert_reason, with_token};
use tonic::Code;

use crate::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_user_keeps_the_login_but_no_roles() {
    journey(&World::start().await).await;
}

/// The journey in `world` (one replica of each service, or two: `crate::replicas`).
pub async fn journey(world: &World) {
    let suite = &world.suite;
    let tree = &world.tree;
    let admin = &world.admin_session;
    let sam = world.practice_user().await;
    let live = suite
        .sign_in_person(&sam, &tree.practice, Role::PracticeUser)
        .await;

    // The administrator revokes every role Sam holds in the CCG.
    let revoked = suite
        .directory()
        .revoke_all_roles(with_token(
            dir_pb::RevokeAllRolesRequest {
                account_id: sam.account_id.clone(),
            },
            &admin.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert_eq!(
        revoked
            .iter()
            .map(|g| (g.organisation_id.as_str(), g.role))
            .collect::<Vec<_>>(),
        [(tree.practice.id.as_str(), Role::PracticeUser as i32)]
    );

    // The session acting through the revoked grant ends.
    let ended = eventually("the revoked session to end", || async {
        let answer = suite
            .access()
            .list_my_access_requests(with_token(
                access_pb::ListMyAccessRequestsRequest::default(),
                &live.token,
            ))
            .await;
        answer.err()
    })
    .await;
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");

    // Sam still signs in — the login is kept — but has nothing to select.
    let sign_in = suite.sign_in(&sam.user_id, &sam.password).await.unwrap();
    assert!(sign_in.grants.is_empty(), "{:#?}", sign_in.grants);
    assert_eq!(
        sign_in.account.as_ref().unwrap().state,
        AccountState::Active as i32
    );
    let no_grant = suite
        .select_role(&sign_in.access_token, &tree.practice.id, Role::PracticeUser)
        .await
        .unwrap_err();
    assert_reason(&no_grant, Code::PermissionDenied, "NO_GRANT");
    let grants = suite
        .directory()
        .list_grants(with_token(
            dir_pb::ListGrantsRequest {
                account_id: sam.account_id.clone(),
                ..Default::default()
            },
            &sign_in.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert!(grants.is_empty(), "{grants:#?}");

    // ... and can ask for access again, signed in without a role.
    let request = suite
        .request_access(
            &sign_in.access_token,
            &tree.practice,
            Role::PracticeUser,
            "Revoked by mistake: I still work at Bridge Street",
        )
        .await
        .unwrap();
    assert_eq!(request.state, AccessRequestState::Pending as i32);
    let pending = suite
        .access()
        .list_access_requests(with_token(
            access_pb::ListAccessRequestsRequest {
                organisation_id: tree.practice.id.clone(),
                state: AccessRequestState::Pending as i32,
                ..Default::default()
            },
            &admin.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .access_requests;
    assert_eq!(
        pending.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [request.id.as_str()]
    );

    // Audit: the revocation by the administrator, the ended session, the new request.
    let trail = suite
        .audit(
            Service::Directory,
            AuditQuery::action("REVOKE_ALL_ROLES").and_actor(&world.admin.account_id),
        )
        .await;
    assert_eq!(trail.len(), 1, "{trail:#?}");
    assert_eq!(trail[0].target_id, sam.account_id);
    assert!(trail[0].is_success());
    let sessions = suite
        .audit(
            Service::Identity,
            AuditQuery::target(&sam.account_id).and_action("END_SESSIONS"),
        )
        .await;
    assert!(!sessions.is_empty(), "identity records the ended session");
    let requested = suite
        .audit(Service::Access, AuditQuery::target(&request.id))
        .await;
    assert_eq!(requested[0].action, "REQUEST_ACCESS");
    assert_eq!(requested[0].actor_id, sam.account_id);

    suite.assert_every_change_audited().await;
}
