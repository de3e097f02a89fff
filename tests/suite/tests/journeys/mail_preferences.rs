//! Journey 7: a user turns e-mail notifications off → receives no workflow mail but still
//! gets security mail.

use cqrs_proto::access::v1::Decision;
use cqrs_proto::common::v1::Role;
use cqrs_proto::identity::v1 as id_pb;
use cqrs_proto::notifications::v1::{self as notifications_pb, DeliveryState, EmailTemplate};
use cqrs_suite::{Suite, World, subject, with_token};

use crate::{assert_link, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_out_user_gets_security_mail_only() {
    journey(&World::start().await).await;
}

/// The journey in `world` (one replica of each service, or two: `crate::replicas`).
pub async fn journey(world: &World) {
    let suite = &world.suite;
    let tree = &world.tree;
    let admin = &world.admin_session;
    let sam = world.practice_user().await;
    let session = suite
        .sign_in_person(&sam, &tree.practice, Role::PracticeUser)
        .await;

    // E-mail is on by default; Sam turns it off.
    let preferences = suite
        .notifications()
        .get_preferences(with_token(
            notifications_pb::GetPreferencesRequest {},
            &session.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    assert!(preferences.email_enabled);
    let preferences = suite
        .notifications()
        .update_preferences(with_token(
            notifications_pb::UpdatePreferencesRequest {
                email_enabled: false,
            },
            &session.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    assert!(!preferences.email_enabled);
    assert_eq!(preferences.account_id, sam.account_id);

    // Workflow mail: an approved and a rejected access request. Neither is sent.
    let approved = suite
        .request_access(
            &session.token,
            &tree.second_practice,
            Role::PracticeUser,
            "Cover at Mill Lane",
        )
        .await
        .unwrap();
    suite
        .review_access_request(&admin.token, &approved.id, Decision::Approve, "")
        .await
        .unwrap();
    let rejected = suite
        .request_access(
            &session.token,
            &tree.practice,
            Role::PracticeManager,
            "Acting manager this month",
        )
        .await
        .unwrap();
    suite
        .review_access_request(
            &admin.token,
            &rejected.id,
            Decision::Reject,
            "The practice manager role is filled",
        )
        .await
        .unwrap();
    let suppressed = eventually("both workflow mails to be suppressed", || async {
        let found = deliveries_to(suite, &sam.email).await;
        let suppressed: Vec<i32> = found
            .iter()
            .filter(|d| d.state == DeliveryState::Suppressed as i32)
            .map(|d| d.template)
            .collect();
        (suppressed.len() >= 2).then_some(suppressed)
    })
    .await;
    let mut suppressed = suppressed;
    suppressed.sort_unstable();
    assert_eq!(
        suppressed,
        [
            EmailTemplate::AccessRequestApproved as i32,
            EmailTemplate::AccessRequestRejected as i32
        ]
    );

    // Security mail still arrives: a reset link Sam asks for.
    suite
        .identity()
        .request_password_reset(id_pb::RequestPasswordResetRequest {
            login: sam.user_id.clone(),
        })
        .await
        .unwrap();
    let mail = suite.mail(&sam.email, subject::PASSWORD_RESET).await;
    assert_link(&mail, "password/reset");
    let reset = deliveries_to(suite, &sam.email)
        .await
        .into_iter()
        .find(|d| d.template == EmailTemplate::PasswordReset as i32)
        .unwrap();
    assert!(reset.security);
    assert_eq!(reset.state, DeliveryState::Delivered as i32);

    // The workflow mails were never delivered (the reset was handled after them).
    for workflow in [
        subject::ACCESS_REQUEST_APPROVED,
        subject::ACCESS_REQUEST_REJECTED,
    ] {
        assert!(
            suite.mails_now(&sam.email, workflow).is_empty(),
            "{workflow}"
        );
    }
    // The administrator, who kept e-mail on, still got the registration's workflow mail.
    assert_eq!(
        suite
            .mails_now(&world.admin.email, subject::REGISTRATION_RECEIVED)
            .len(),
        1
    );
    // Turning it back on is Sam's own choice too.
    let preferences = suite
        .notifications()
        .update_preferences(with_token(
            notifications_pb::UpdatePreferencesRequest {
                email_enabled: true,
            },
            &session.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    assert!(preferences.email_enabled);

    suite.assert_every_change_audited().await;
}

/// Every delivery to `to`, as operations see them.
async fn deliveries_to(suite: &Suite, to: &str) -> Vec<notifications_pb::Delivery> {
    let token = suite.service_token().await;
    let mut found = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = suite
            .notifications()
            .list_deliveries(with_token(
                notifications_pb::ListDeliveriesRequest {
                    state: DeliveryState::Unspecified as i32,
                    page_size: 100,
                    page_token: page_token.clone(),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        found.extend(page.deliveries.into_iter().filter(|d| d.to == to));
        if page.next_page_token.is_empty() {
            return found;
        }
        page_token = page.next_page_token;
    }
}
