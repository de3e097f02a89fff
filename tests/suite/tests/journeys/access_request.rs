//! Journey 3: the practice user requests access to the second practice, withdraws, requests
//! again → it is approved → at next sign-in two grants are available → SelectRole switches
//! between them.

use cqrs_proto::access::v1::{self as access_pb, AccessRequestState, Decision};
use cqrs_proto::common::v1::Role;
use cqrs_proto::identity::v1 as id_pb;
use cqrs_suite::{AuditQuery, Service, SignedIn, Suite, World, assert_reason, subject, with_token};
use tonic::Code;

use crate::audit_actions;

const REASON: &str = "I cover Mill Lane Practice on Tuesdays";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_request_withdrawn_then_approved_gives_a_second_role() {
    journey(&World::start().await).await;
}

/// The journey in `world` (one replica of each service, or two: `crate::replicas`).
pub async fn journey(world: &World) {
    let suite = &world.suite;
    let tree = &world.tree;
    let admin = &world.admin_session;
    let sam = world.practice_user().await;
    let first = suite
        .sign_in_person(&sam, &tree.practice, Role::PracticeUser)
        .await;

    // Sam asks for the second practice, sees the request, and withdraws it.
    let request = suite
        .request_access(
            &first.token,
            &tree.second_practice,
            Role::PracticeUser,
            REASON,
        )
        .await
        .unwrap();
    assert_eq!(request.state, AccessRequestState::Pending as i32);
    assert_eq!(request.account_id, sam.account_id);
    assert_eq!(request.organisation_name, tree.second_practice.name);
    assert_eq!(
        my_requests(suite, &first.token).await,
        [(request.id.clone(), AccessRequestState::Pending as i32)]
    );
    assert_eq!(
        pending_for_admin(suite, &admin.token).await,
        [request.id.as_str()]
    );
    let withdrawn = suite
        .access()
        .withdraw_access_request(with_token(
            access_pb::WithdrawAccessRequestRequest {
                access_request_id: request.id.clone(),
            },
            &first.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .access_request
        .unwrap();
    assert_eq!(withdrawn.state, AccessRequestState::Withdrawn as i32);
    assert!(pending_for_admin(suite, &admin.token).await.is_empty());
    let late = suite
        .review_access_request(&admin.token, &request.id, Decision::Approve, "")
        .await
        .unwrap_err();
    assert_reason(
        &late,
        Code::FailedPrecondition,
        "ACCESS_REQUEST_NOT_PENDING",
    );

    // It asks again; the administrator approves; Sam is told by mail.
    let again = suite
        .request_access(
            &first.token,
            &tree.second_practice,
            Role::PracticeUser,
            REASON,
        )
        .await
        .unwrap();
    assert_ne!(again.id, request.id);
    assert_eq!(
        pending_for_admin(suite, &admin.token).await,
        [again.id.as_str()]
    );
    let approved = suite
        .review_access_request(&admin.token, &again.id, Decision::Approve, "")
        .await
        .unwrap();
    assert_eq!(approved.state, AccessRequestState::Approved as i32);
    assert_eq!(approved.reviewer_id, world.admin.account_id);
    assert!(!approved.grant_id.is_empty());
    let mail = suite
        .mail(&sam.email, subject::ACCESS_REQUEST_APPROVED)
        .await;
    assert!(mail.text.contains(&tree.second_practice.name), "{mail:#?}");
    assert_eq!(
        my_requests(suite, &first.token).await,
        [
            (again.id.clone(), AccessRequestState::Approved as i32),
            (request.id.clone(), AccessRequestState::Withdrawn as i32),
        ]
    );

    // At the next sign-in both grants are offered.
    let sign_in = suite.sign_in(&sam.user_id, &sam.password).await.unwrap();
    let mut offered: Vec<(String, i32)> = sign_in
        .grants
        .iter()
        .map(|g| (g.organisation_id.clone(), g.role))
        .collect();
    offered.sort();
    let mut expected = vec![
        (tree.practice.id.clone(), Role::PracticeUser as i32),
        (tree.second_practice.id.clone(), Role::PracticeUser as i32),
    ];
    expected.sort();
    assert_eq!(offered, expected);

    // SelectRole switches between them within the one session, without signing in again.
    let session = suite
        .select(sign_in, &tree.practice.id, Role::PracticeUser)
        .await;
    assert_eq!(active_organisation(suite, &session).await, tree.practice.id);
    let second = suite
        .select_role(&session.token, &tree.second_practice.id, Role::PracticeUser)
        .await
        .unwrap();
    assert_eq!(
        active_organisation(suite, &session).await,
        tree.second_practice.id
    );
    suite
        .select_role(&second, &tree.practice.id, Role::PracticeUser)
        .await
        .unwrap();
    assert_eq!(active_organisation(suite, &session).await, tree.practice.id);
    // Only grants the account holds can be selected.
    let refused = suite
        .select_role(
            &second,
            &tree.ccg.id,
            Role::CommissioningAccountAdministrator,
        )
        .await
        .unwrap_err();
    assert_reason(&refused, Code::PermissionDenied, "NO_GRANT");

    // Audit: the request's life, the grant, the role switches.
    let trail = suite
        .audit(Service::Access, AuditQuery::actor(&sam.account_id))
        .await;
    let successes: Vec<&str> = trail
        .iter()
        .filter(|e| e.is_success())
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        successes,
        [
            "REQUEST_ACCESS",
            "WITHDRAW_ACCESS_REQUEST",
            "REQUEST_ACCESS"
        ]
    );
    let review = suite
        .audit(
            Service::Access,
            AuditQuery::target(&again.id).and_action("REVIEW_ACCESS_REQUEST"),
        )
        .await;
    assert_eq!(review.len(), 1, "{review:#?}");
    assert_eq!(review[0].actor_id, world.admin.account_id);
    assert_eq!(review[0].detail("to_state"), Some("APPROVED"));
    let grant = suite
        .audit(Service::Directory, AuditQuery::target(&approved.grant_id))
        .await;
    assert_eq!(audit_actions(&grant), ["GRANT_ROLE"]);
    assert_eq!(grant[0].actor_id, "access");
    let selected = suite
        .audit(
            Service::Identity,
            AuditQuery::target(&sam.account_id).and_action("SELECT_ROLE"),
        )
        .await;
    let organisations: Vec<&str> = selected
        .iter()
        .filter(|e| e.is_success())
        .filter_map(|e| e.detail("organisation_id"))
        .collect();
    assert_eq!(
        organisations,
        [
            tree.practice.id.as_str(),
            &tree.practice.id,
            &tree.second_practice.id,
            &tree.practice.id
        ]
    );

    suite.assert_every_change_audited().await;
}

async fn my_requests(suite: &Suite, token: &str) -> Vec<(String, i32)> {
    suite
        .access()
        .list_my_access_requests(with_token(
            access_pb::ListMyAccessRequestsRequest::default(),
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .access_requests
        .into_iter()
        .map(|r| (r.id, r.state))
        .collect()
}

async fn pending_for_admin(suite: &Suite, token: &str) -> Vec<String> {
    suite
        .access()
        .list_access_requests(with_token(
            access_pb::ListAccessRequestsRequest {
                state: AccessRequestState::Pending as i32,
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .access_requests
        .into_iter()
        .map(|r| r.id)
        .collect()
}

/// The session's active organisation, as RefreshAccessToken reports it.
async fn active_organisation(suite: &Suite, session: &SignedIn) -> String {
    suite
        .identity()
        .refresh_access_token(id_pb::RefreshAccessTokenRequest {
            session_token: session.session_token().into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .active_organisation_id
}
