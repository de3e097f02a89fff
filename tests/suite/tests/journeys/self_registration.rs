//! Journey 2: a practice user self-registers with an ODS code → the administrator sees an
//! in-app notification and a mail → approves → the user sets a password and signs in. A
//! second registration is rejected with a reason that arrives by mail.

use cqrs_proto::access::v1::{self as access_pb, Decision, RegistrationState};
use cqrs_proto::common::v1::Role;
use cqrs_proto::identity::v1::{self as id_pb, AccountState};
use cqrs_proto::notifications::v1 as notifications_pb;
use cqrs_suite::{AuditQuery, PASSWORD, Service, World, people, subject, with_token};
use tonic::Code;

use crate::{assert_link, eventually};

const REJECT_REASON: &str = "Jo Bloggs is not a member of staff at Bridge Street Surgery.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_registration_is_approved_and_a_second_one_rejected() {
    journey(&World::start().await).await;
}

/// The journey in `world` (one replica of each service, or two: `crate::replicas`).
pub async fn journey(world: &World) {
    let suite = &world.suite;
    let tree = &world.tree;
    let admin = &world.admin_session;
    let (email, names) = people::PRACTICE_USER;

    // Sam registers for Bridge Street Surgery by its ODS code (public: no token).
    let registration = suite
        .submit_registration(email, names, &tree.practice.ods_code, Role::PracticeUser)
        .await
        .unwrap();
    assert_eq!(registration.state, RegistrationState::Pending as i32);
    assert_eq!(registration.organisation_id, tree.practice.id);
    assert_eq!(registration.organisation_name, tree.practice.name);

    // The CCG's administrator is told in the app and by mail.
    let inbox = eventually("the administrator's in-app notification", || async {
        let answer = suite
            .notifications()
            .list_notifications(with_token(
                notifications_pb::ListNotificationsRequest {
                    unread_only: true,
                    ..Default::default()
                },
                &admin.token,
            ))
            .await
            .unwrap_or_else(|s| panic!("ListNotifications with the administrator's token: {s:?}"))
            .into_inner();
        (!answer.notifications.is_empty()).then_some(answer)
    })
    .await;
    assert_eq!(inbox.unread_count, 1);
    let notification = &inbox.notifications[0];
    assert_eq!(notification.kind, "REGISTRATION_SUBMITTED");
    assert_eq!(notification.account_id, world.admin.account_id);
    assert!(
        notification.body.contains("Sam Patel") || notification.title.contains("Sam Patel"),
        "{notification:#?}"
    );
    let mail = suite
        .mail(&world.admin.email, subject::REGISTRATION_RECEIVED)
        .await;
    assert!(mail.subject.contains(&tree.practice.name), "{mail:#?}");
    assert!(mail.text.contains("Sam Patel"), "{mail:#?}");
    assert!(mail.text.contains("Practice User"), "{mail:#?}");
    let read = suite
        .notifications()
        .mark_notification_read(with_token(
            notifications_pb::MarkNotificationReadRequest {
                notification_id: notification.id.clone(),
            },
            &admin.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .notification
        .unwrap();
    assert!(read.read);

    // The administrator finds it among the pending ones and approves it.
    let pending = list_registrations(world, RegistrationState::Pending).await;
    assert_eq!(ids(&pending), [registration.id.as_str()]);
    let approved = suite
        .review_registration(&admin.token, &registration.id, Decision::Approve, "")
        .await
        .unwrap();
    assert_eq!(approved.state, RegistrationState::Approved as i32);
    assert_eq!(approved.reviewer_id, world.admin.account_id);
    assert!(!approved.account_id.is_empty());

    // Sam is told, sets a password from the link, and signs in with the practice role.
    let mail = suite.mail(email, subject::REGISTRATION_APPROVED).await;
    assert!(mail.text.contains(&tree.practice.name), "{mail:#?}");
    let link_mail = suite.mail(email, subject::REGISTRATION_LINK).await;
    assert_link(&link_mail, "register/complete");
    let sam = suite.register_from_mail(email, PASSWORD).await;
    assert_eq!(sam.account_id, approved.account_id);
    assert!(link_mail.text.contains(&sam.user_id), "{link_mail:#?}");
    let sign_in = suite.sign_in(&sam.user_id, PASSWORD).await.unwrap();
    assert_eq!(
        sign_in
            .grants
            .iter()
            .map(|g| (g.organisation_id.as_str(), g.role))
            .collect::<Vec<_>>(),
        [(tree.practice.id.as_str(), Role::PracticeUser as i32)]
    );
    let session = suite
        .select(sign_in, &tree.practice.id, Role::PracticeUser)
        .await;
    assert_eq!(session.grant.organisation_name, tree.practice.name);

    // A second registration is rejected: a reason is required, and it is mailed.
    let (other_email, other_names) = ("jo.bloggs@bridgestreet.nhs.uk", ("Jo", "Bloggs"));
    let second = suite
        .submit_registration(
            other_email,
            other_names,
            &tree.practice.ods_code,
            Role::PracticeUser,
        )
        .await
        .unwrap();
    let no_reason = suite
        .review_registration(&admin.token, &second.id, Decision::Reject, "")
        .await
        .unwrap_err();
    assert_eq!(no_reason.code(), Code::InvalidArgument, "{no_reason:?}");
    let rejected = suite
        .review_registration(&admin.token, &second.id, Decision::Reject, REJECT_REASON)
        .await
        .unwrap();
    assert_eq!(rejected.state, RegistrationState::Rejected as i32);
    assert_eq!(rejected.decision_reason, REJECT_REASON);
    assert!(rejected.account_id.is_empty());
    let mail = suite
        .mail(other_email, subject::REGISTRATION_REJECTED)
        .await;
    assert!(mail.text.contains(REJECT_REASON), "{mail:#?}");
    assert!(mail.links().is_empty(), "{mail:#?}");
    // A decided registration cannot be decided again.
    let again = suite
        .review_registration(&admin.token, &second.id, Decision::Approve, "")
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");

    // No account exists for the rejected applicant; Sam's is active.
    let service_token = suite.service_token().await;
    let lookup = suite
        .identity()
        .lookup_account(with_token(
            id_pb::LookupAccountRequest {
                key: Some(id_pb::lookup_account_request::Key::Email(
                    other_email.into(),
                )),
            },
            &service_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(lookup.code(), Code::NotFound);
    assert_eq!(
        session.account().state,
        AccountState::Active as i32,
        "{:#?}",
        session.account()
    );
    assert!(
        suite
            .mails_now(other_email, subject::REGISTRATION_LINK)
            .is_empty()
    );
    let decided = list_registrations(world, RegistrationState::Unspecified).await;
    assert_eq!(ids(&decided), [second.id.as_str(), &registration.id]);

    // Audit: the workflow, the account and the grant.
    let trail = suite
        .audit(Service::Access, AuditQuery::target(&registration.id))
        .await;
    let steps: Vec<(&str, &str, &str)> = trail
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.actor_kind.as_str(),
                e.detail("to_state").unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("SUBMIT_REGISTRATION", "ANONYMOUS", "PENDING"),
            ("REVIEW_REGISTRATION", "USER", "APPROVED")
        ]
    );
    assert_eq!(trail[1].actor_id, world.admin.account_id);
    let trail = suite
        .audit(
            Service::Access,
            AuditQuery::target(&second.id).and_action("REVIEW_REGISTRATION"),
        )
        .await;
    let decision = trail
        .iter()
        .find(|e| e.is_success())
        .unwrap_or_else(|| panic!("{trail:#?}"));
    assert_eq!(decision.detail("to_state"), Some("REJECTED"));
    assert_eq!(decision.detail("reason"), Some(REJECT_REASON));
    let created = suite
        .audit(
            Service::Identity,
            AuditQuery::target(&sam.account_id).and_action("CREATE_ACCOUNT"),
        )
        .await;
    assert_eq!(created.len(), 1, "{created:#?}");
    assert_eq!(created[0].actor_id, "access");
    let grants = suite
        .audit(Service::Directory, AuditQuery::action("GRANT_ROLE"))
        .await;
    assert!(
        grants.iter().any(|e| e.actor_id == "access"
            && e.detail("account_id") == Some(sam.account_id.as_str())
            && e.detail("organisation_id") == Some(tree.practice.id.as_str())
            && e.detail("role") == Some("PRACTICE_USER")),
        "{grants:#?}"
    );

    suite.assert_every_change_audited().await;
}

async fn list_registrations(
    world: &World,
    state: RegistrationState,
) -> Vec<access_pb::Registration> {
    world
        .suite
        .access()
        .list_registrations(with_token(
            access_pb::ListRegistrationsRequest {
                state: state as i32,
                ..Default::default()
            },
            &world.admin_session.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .registrations
}

fn ids(registrations: &[access_pb::Registration]) -> Vec<&str> {
    registrations.iter().map(|r| r.id.as_str()).collect()
}
