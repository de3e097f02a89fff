//! Who may do what where: callers x own / descendant / ancestor / other / missing
//! organisations, permission checked before existence.

use cqrs_auth::Role;
use cqrs_proto::access::v1 as pb;
use cqrs_suite::Service;
use cqrs_testkit::{status_reason, with_token};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use uuid::Uuid;

use crate::calls::AccessSuite;

/// Expected answer: allowed, or a code with (for PERMISSION_DENIED) its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Ok,
    Denied(&'static str),
    NotFound,
}

fn outcome<T>(result: &Result<T, tonic::Status>) -> Want {
    match result {
        Ok(_) => Want::Ok,
        Err(s) if s.code() == Code::PermissionDenied => {
            let reason = status_reason(s).unwrap();
            Want::Denied(match reason.as_str() {
                "NO_GRANT_IN_SCOPE" => "NO_GRANT_IN_SCOPE",
                "ROLE_LACKS_PERMISSION" => "ROLE_LACKS_PERMISSION",
                "NO_ACTIVE_GRANT" => "NO_ACTIVE_GRANT",
                "GRANT_REVOKED" => "GRANT_REVOKED",
                other => panic!("unexpected reason {other}"),
            })
        }
        Err(s) if s.code() == Code::NotFound => Want::NotFound,
        Err(s) => panic!("unexpected status {s:?}"),
    }
}

const SCOPE: Want = Want::Denied("NO_GRANT_IN_SCOPE");
const ROLE: Want = Want::Denied("ROLE_LACKS_PERMISSION");

#[tokio::test]
async fn create_invitation_matrix() {
    let h = AccessSuite::start().await;
    let t = h.tree;
    let missing = Uuid::new_v4();
    // Target organisation and a role it can hold, seen from an administrator at CCG.
    let targets = [
        ("own", t.ccg, Role::CommissioningUser),
        ("descendant", t.practice, Role::PracticeUser),
        ("ancestor", t.region, Role::CommissioningUser),
        ("other", t.other_practice, Role::PracticeUser),
        ("missing", missing, Role::PracticeUser),
    ];
    let admin = h
        .grantee(Role::CommissioningAccountAdministrator, t.ccg)
        .await
        .token;
    let regional = h
        .grantee(Role::CommissioningAccountAdministrator, t.region)
        .await
        .token;
    let desk = h.grantee(Role::ServiceDesk, t.desk).await.token;
    let manager = h.grantee(Role::PracticeManager, t.practice).await.token;
    let commissioner = h.grantee(Role::CommissioningUser, t.ccg).await.token;
    let no_grant = h.user_token(Uuid::new_v4(), None).await;
    // A token for a grant the directory does not (or no longer) hold.
    let revoked = h
        .token(
            Uuid::new_v4(),
            Role::CommissioningAccountAdministrator,
            t.ccg,
        )
        .await;
    let internal = h.internal_token();

    let denied_everywhere = |want: Want| [want; 5];
    let matrix: [(&str, &str, [Want; 5]); 8] = [
        ("admin", &admin, [Want::Ok, Want::Ok, SCOPE, SCOPE, SCOPE]),
        (
            "regional",
            &regional,
            [Want::Ok, Want::Ok, Want::Ok, Want::Ok, SCOPE],
        ),
        (
            "desk",
            &desk,
            [Want::Ok, Want::Ok, Want::Ok, Want::Ok, Want::NotFound],
        ),
        (
            "internal",
            &internal,
            [Want::Ok, Want::Ok, Want::Ok, Want::Ok, Want::NotFound],
        ),
        ("manager", &manager, denied_everywhere(ROLE)),
        ("commissioner", &commissioner, denied_everywhere(ROLE)),
        (
            "no grant",
            &no_grant,
            denied_everywhere(Want::Denied("NO_ACTIVE_GRANT")),
        ),
        (
            "revoked",
            &revoked,
            [
                Want::Denied("GRANT_REVOKED"),
                Want::Denied("GRANT_REVOKED"),
                Want::Denied("GRANT_REVOKED"),
                Want::Denied("GRANT_REVOKED"),
                SCOPE,
            ],
        ),
    ];
    for (caller, token, wants) in matrix {
        for ((target, org, role), want) in targets.iter().zip(wants) {
            let email = format!("{}.{target}@example.nhs.uk", caller.replace(' ', "-"));
            let got = outcome(&h.invite(token, &email, *org, *role).await);
            assert_eq!(got, want, "{caller} inviting into {target}");
        }
    }
    assert_eq!(h.count("invitations").await, 14);
}

#[tokio::test]
async fn acting_on_rows_and_lists_follows_scope() {
    let h = AccessSuite::start().await;
    let t = h.tree;
    let internal = h.internal_token();
    let invitation = h
        .invite(
            &internal,
            "row.one@bridge-street.nhs.uk",
            t.practice,
            Role::PracticeUser,
        )
        .await
        .unwrap();
    let registration = h
        .submit(
            &Uuid::new_v4().to_string(),
            "row.two@bridge-street.nhs.uk",
            pb::submit_registration_request::Organisation::OrganisationId(t.practice.to_string()),
            Role::PracticeUser,
        )
        .await
        .unwrap();
    let requester = h.grantee(Role::PracticeUser, t.practice).await;
    let request = h
        .request_access(
            &requester.token,
            &Uuid::new_v4().to_string(),
            t.practice,
            Role::PracticeManager,
        )
        .await
        .unwrap();

    let admin = h
        .grantee(Role::CommissioningAccountAdministrator, t.ccg)
        .await
        .token;
    let regional = h
        .grantee(Role::CommissioningAccountAdministrator, t.region)
        .await
        .token;
    let other = h
        .grantee(Role::CommissioningAccountAdministrator, t.other_ccg)
        .await
        .token;
    let approver = h.grantee(Role::CommissioningApprover, t.ccg).await.token;
    let desk = h.grantee(Role::ServiceDesk, t.desk).await.token;
    let manager = h.grantee(Role::PracticeManager, t.practice).await.token;
    let missing = Uuid::new_v4().to_string();

    // Refusals change nothing; the rows stay pending for the allowed reviews at the end.
    let before = h.footprint().await;
    let resend = |id: String, token: String| {
        let mut client = h.access();
        async move {
            client
                .resend_invitation(with_token(
                    pb::ResendInvitationRequest { invitation_id: id },
                    &token,
                ))
                .await
        }
    };
    for (caller, token, want) in [
        ("other", &other, SCOPE),
        ("approver", &approver, ROLE),
        ("manager", &manager, ROLE),
    ] {
        assert_eq!(
            outcome(&resend(invitation.id.clone(), token.clone()).await),
            want,
            "{caller}"
        );
    }
    for (caller, token, want) in [
        ("admin", &admin, SCOPE),
        ("desk", &desk, Want::NotFound),
        ("internal", &internal, Want::NotFound),
    ] {
        assert_eq!(
            outcome(&resend(missing.clone(), token.clone()).await),
            want,
            "{caller} on a missing invitation"
        );
    }
    for (caller, token, want) in [
        ("other", &other, SCOPE),
        ("approver", &approver, ROLE),
        ("desk", &desk, ROLE),
        ("manager", &manager, ROLE),
    ] {
        let got = h
            .review_registration(token, &registration.id, pb::Decision::Approve, "")
            .await;
        assert_eq!(outcome(&got), want, "{caller} reviewing the registration");
        let got = h
            .review_request(token, &request.id, pb::Decision::Approve, "")
            .await;
        assert_eq!(outcome(&got), want, "{caller} reviewing the access request");
    }
    for (caller, token, want) in [
        ("admin", &admin, SCOPE),
        ("internal", &internal, Want::NotFound),
    ] {
        let got = h
            .review_registration(token, &missing, pb::Decision::Reject, "x")
            .await;
        assert_eq!(outcome(&got), want, "{caller} on a missing registration");
        let got = h
            .review_request(token, &missing, pb::Decision::Reject, "x")
            .await;
        assert_eq!(outcome(&got), want, "{caller} on a missing access request");
    }
    assert_eq!(h.footprint().await, before);

    // Lists narrowed to an organisation: own subtree only.
    let list = |org: uuid::Uuid, token: String| {
        let mut client = h.access();
        async move {
            client
                .list_registrations(with_token(
                    pb::ListRegistrationsRequest {
                        organisation_id: org.to_string(),
                        state: 0,
                        page_size: 0,
                        page_token: String::new(),
                    },
                    &token,
                ))
                .await
                .map(|r| r.into_inner().registrations.len())
        }
    };
    for (caller, token, org, want) in [
        ("admin", &admin, t.practice, Want::Ok),
        ("admin", &admin, t.ccg, Want::Ok),
        ("admin", &admin, t.region, SCOPE),
        ("admin", &admin, t.other_ccg, SCOPE),
        ("admin", &admin, Uuid::new_v4(), SCOPE),
        ("regional", &regional, t.other_practice, Want::Ok),
        ("desk", &desk, t.practice, ROLE),
        ("internal", &internal, Uuid::new_v4(), Want::Ok),
    ] {
        assert_eq!(
            outcome(&list(org, token.clone()).await),
            want,
            "{caller} listing {org}"
        );
    }
    assert_eq!(list(t.practice, admin.clone()).await.unwrap(), 1);
    assert_eq!(list(t.other_practice, regional.clone()).await.unwrap(), 0);

    // An ancestor's administrator decides.
    h.review_registration(&regional, &registration.id, pb::Decision::Approve, "")
        .await
        .unwrap();
    h.review_request(
        &regional,
        &request.id,
        pb::Decision::Reject,
        "Covered already",
    )
    .await
    .unwrap();
    h.access()
        .cancel_invitation(with_token(
            pb::CancelInvitationRequest {
                invitation_id: invitation.id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_audit_trail_is_for_the_desk_and_internal_callers() {
    let h = AccessSuite::start().await;
    let desk = h.grantee(Role::ServiceDesk, h.tree.desk).await.token;
    let admin = h
        .grantee(Role::CommissioningAccountAdministrator, h.tree.ccg)
        .await
        .token;
    let invitation = h
        .invite(
            &admin,
            "audited@riverside.nhs.uk",
            h.tree.ccg,
            Role::CommissioningUser,
        )
        .await
        .unwrap();
    let list = |token: String| {
        let mut client = h.access();
        let target_id = invitation.id.clone();
        async move {
            client
                .list_audit_events(with_token(
                    pb::ListAuditEventsRequest {
                        target_id,
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .map(|r| r.into_inner().audit_events)
        }
    };
    for token in [desk.clone(), h.internal_token()] {
        let events = list(token).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].action, "CREATE_INVITATION");
        assert_eq!(events[0].target_type, "INVITATION");
        assert_eq!(
            events[0].actor_kind,
            cqrs_proto::common::v1::ActorKind::User as i32
        );
        assert_eq!(
            events[0].outcome,
            cqrs_proto::common::v1::AuditOutcome::Success as i32
        );
        assert_eq!(events[0].details["role"], "COMMISSIONING_USER");
    }
    assert_eq!(outcome(&list(admin).await), SCOPE);
    let manager = h
        .grantee(Role::PracticeManager, h.tree.practice)
        .await
        .token;
    assert_eq!(outcome(&list(manager).await), ROLE);

    // Health and reflection are served like every service's.
    let health = HealthClient::new(h.channel(Service::Access))
        .check(HealthCheckRequest {
            service: "cqrs.access.v1.AccessService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);
}
