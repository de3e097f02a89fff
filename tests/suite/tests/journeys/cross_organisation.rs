//! Journey 8: an administrator of one commissioning organisation cannot invite into, review
//! for, or see the requests of another (PermissionDenied).

use cqrs_proto::access::v1::{self as access_pb, AccessRequestState, Decision, RegistrationState};
use cqrs_proto::common::v1::Role;
use cqrs_suite::{AuditQuery, PASSWORD, Service, Suite, World, people, with_token};
use tonic::{Code, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_are_confined_to_their_own_ccg() {
    journey(&World::start().await).await;
}

/// The journey in `world` (one replica of each service, or two: `crate::replicas`).
pub async fn journey(world: &World) {
    let suite = &world.suite;
    let tree = &world.tree;
    let admin = &world.admin_session;

    // A second CCG with its own administrator.
    let (hillside, haxby) = world.other_ccg().await;
    let (email, names) = people::OTHER_ADMIN;
    let grace = suite
        .onboard_by_invitation(
            &world.desk.token,
            email,
            names,
            &hillside,
            Role::CommissioningAccountAdministrator,
            PASSWORD,
        )
        .await;
    let other = suite
        .sign_in_person(&grace, &hillside, Role::CommissioningAccountAdministrator)
        .await;

    // Work waiting in Riverside: a registration for one practice and an access request for
    // the other.
    let registration = suite
        .submit_registration(
            "jo.bloggs@bridgestreet.nhs.uk",
            ("Jo", "Bloggs"),
            &tree.practice.ods_code,
            Role::PracticeUser,
        )
        .await
        .unwrap();
    let sam = world.practice_user().await;
    let sam_session = suite
        .sign_in_person(&sam, &tree.practice, Role::PracticeUser)
        .await;
    let request = suite
        .request_access(
            &sam_session.token,
            &tree.second_practice,
            Role::PracticeUser,
            "Cover at Mill Lane",
        )
        .await
        .unwrap();

    // Hillside's administrator cannot invite into Riverside, its practices or the region ...
    for target in [&tree.ccg, &tree.practice, &tree.region] {
        let refused = suite
            .invite(
                &other.token,
                "new.starter@riverside.nhs.uk",
                ("New", "Starter"),
                target,
                Role::CommissioningUser,
            )
            .await
            .unwrap_err();
        assert_denied(&refused, &format!("invite into {}", target.name));
    }
    // ... cannot review Riverside's registrations or access requests ...
    for decision in [Decision::Approve, Decision::Reject] {
        let refused = suite
            .review_registration(&other.token, &registration.id, decision, "Not ours")
            .await
            .unwrap_err();
        assert_denied(&refused, "review a Riverside registration");
        let refused = suite
            .review_access_request(&other.token, &request.id, decision, "Not ours")
            .await
            .unwrap_err();
        assert_denied(&refused, "review a Riverside access request");
    }
    // ... and cannot see them, whether asking for Riverside by name or listing its own scope.
    for organisation in [&tree.ccg, &tree.practice, &tree.second_practice] {
        let refused = list_registrations(suite, &other.token, &organisation.id)
            .await
            .unwrap_err();
        assert_denied(&refused, "list Riverside's registrations");
        let refused = list_access_requests(suite, &other.token, &organisation.id)
            .await
            .unwrap_err();
        assert_denied(&refused, "list Riverside's access requests");
        let refused = list_invitations(suite, &other.token, &organisation.id)
            .await
            .unwrap_err();
        assert_denied(&refused, "list Riverside's invitations");
    }
    assert!(
        list_registrations(suite, &other.token, "")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        list_access_requests(suite, &other.token, "")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        list_invitations(suite, &other.token, "")
            .await
            .unwrap()
            .iter()
            .all(|i| i.organisation_id == hillside.id)
    );

    // Nothing changed: Riverside's administrator still sees both pending, and decides them.
    let seen = list_registrations(suite, &admin.token, &tree.practice.id)
        .await
        .unwrap();
    let jo = seen.iter().find(|r| r.id == registration.id).unwrap();
    assert_eq!(jo.state, RegistrationState::Pending as i32);
    let seen = list_access_requests(suite, &admin.token, &tree.second_practice.id)
        .await
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].id, request.id);
    assert_eq!(seen[0].state, AccessRequestState::Pending as i32);
    suite
        .review_access_request(&admin.token, &request.id, Decision::Approve, "")
        .await
        .unwrap();

    // Within its own CCG, Hillside's administrator may do all of it.
    suite
        .invite(
            &other.token,
            "new.starter@haxby.nhs.uk",
            ("New", "Starter"),
            &haxby,
            Role::PracticeUser,
        )
        .await
        .unwrap();
    // ... while Riverside's may not reach into Hillside.
    let refused = suite
        .invite(
            &admin.token,
            "another.starter@haxby.nhs.uk",
            ("Another", "Starter"),
            &haxby,
            Role::PracticeUser,
        )
        .await
        .unwrap_err();
    assert_denied(&refused, "Riverside inviting into Hillside");

    // The access trail records every refusal, and no change by Hillside's administrator
    // outside Hillside.
    let denied = suite
        .audit(Service::Access, AuditQuery::actor(&grace.account_id))
        .await;
    let mut denied: Vec<&str> = denied
        .iter()
        .filter(|e| e.outcome == "DENIED")
        .map(|e| e.action.as_str())
        .collect();
    denied.sort_unstable();
    denied.dedup();
    assert_eq!(
        denied,
        [
            "CREATE_INVITATION",
            "REVIEW_ACCESS_REQUEST",
            "REVIEW_REGISTRATION"
        ]
    );

    let by_other = suite
        .audit(Service::Access, AuditQuery::actor(&grace.account_id))
        .await;
    for event in by_other.iter().filter(|e| e.is_success()) {
        assert_eq!(
            event.detail("organisation_id"),
            Some(haxby.id.as_str()),
            "{event:#?}"
        );
    }

    suite.assert_every_change_audited().await;
}

#[track_caller]
fn assert_denied(status: &Status, what: &str) {
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{what} must be refused: {status:?}"
    );
}

async fn list_registrations(
    suite: &Suite,
    token: &str,
    organisation_id: &str,
) -> Result<Vec<access_pb::Registration>, Status> {
    suite
        .access()
        .list_registrations(with_token(
            access_pb::ListRegistrationsRequest {
                organisation_id: organisation_id.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().registrations)
}

async fn list_access_requests(
    suite: &Suite,
    token: &str,
    organisation_id: &str,
) -> Result<Vec<access_pb::AccessRequest>, Status> {
    suite
        .access()
        .list_access_requests(with_token(
            access_pb::ListAccessRequestsRequest {
                organisation_id: organisation_id.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().access_requests)
}

async fn list_invitations(
    suite: &Suite,
    token: &str,
    organisation_id: &str,
) -> Result<Vec<access_pb::Invitation>, Status> {
    suite
        .access()
        .list_invitations(with_token(
            access_pb::ListInvitationsRequest {
                organisation_id: organisation_id.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().invitations)
}
