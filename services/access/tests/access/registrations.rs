//! Self-registration: submit, notification of the administrators in scope, review.

use cqrs_auth::RoleProto;
use std::time::Duration;

use cqrs_access::WorkflowSettings;
use cqrs_auth::Role;
use cqrs_proto::access::v1::{
    self as pb, access_service_client::AccessServiceClient,
    submit_registration_request::Organisation,
};
use cqrs_proto::identity::v1 as id_pb;
use cqrs_proto::notifications::v1 as notify_pb;
use cqrs_suite::PASSWORD;
use cqrs_testkit::{assert_reason, violated_fields, with_token};
use tonic::Code;
use uuid::Uuid;

use crate::calls::AccessSuite;

fn state(registration: &pb::Registration) -> pb::RegistrationState {
    pb::RegistrationState::try_from(registration.state).unwrap()
}

/// The in-app notifications of the signed-in `token`'s account, once `n` have arrived.
async fn inbox(h: &AccessSuite, token: &str, n: usize) -> Vec<notify_pb::Notification> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = h
            .notifications()
            .list_notifications(with_token(
                notify_pb::ListNotificationsRequest {
                    unread_only: false,
                    page_size: 0,
                    page_token: String::new(),
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner()
            .notifications;
        if found.len() >= n || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn registration_notifies_the_administrators_in_scope_and_approval_creates_the_account() {
    let h = AccessSuite::start().await;
    let admin = h
        .user(
            "admin.one@riverside.nhs.uk",
            Role::CommissioningAccountAdministrator,
            h.tree.ccg,
        )
        .await;
    let regional = h
        .user(
            "admin.region@north.nhs.uk",
            Role::CommissioningAccountAdministrator,
            h.tree.region,
        )
        .await;
    let elsewhere = h
        .user(
            "admin.two@hillside.nhs.uk",
            Role::CommissioningAccountAdministrator,
            h.tree.other_ccg,
        )
        .await;
    let applicant = "sam.patel@bridge-street.nhs.uk";

    // By ODS code, as typed; public (no token).
    let key = Uuid::new_v4().to_string();
    let registration = h
        .submit(
            &key,
            applicant,
            Organisation::OdsCode(" a81001 ".into()),
            Role::PracticeUser,
        )
        .await
        .unwrap();
    assert_eq!(state(&registration), pb::RegistrationState::Pending);
    assert_eq!(registration.organisation_id, h.tree.practice.to_string());
    assert_eq!(registration.ods_code, "A81001");
    assert_eq!(registration.organisation_name, "Bridge Street Surgery");
    let again = h
        .submit(
            &key,
            applicant,
            Organisation::OrganisationId(h.tree.practice.to_string()),
            Role::PracticeUser,
        )
        .await
        .unwrap();
    assert_eq!(again, registration);
    assert_eq!(h.count("registrations").await, 1);
    let submitted = h.audit("SUBMIT_REGISTRATION", &registration.id).await;
    assert_eq!(submitted[0].0, "anonymous");
    assert_eq!(submitted[0].3["notified"], 2);

    // Both administrators whose scope covers the practice hear of it, in-app and by mail.
    for user in [&admin, &regional] {
        let mail = &h.mails(&user.email, "New CQRS registration", 1).await[0];
        assert!(mail.text.contains("Sam Patel"), "{mail:?}");
        let notices = inbox(&h, &user.token, 1).await;
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].kind, "REGISTRATION_SUBMITTED");
        assert!(notices[0].body.contains(applicant));
    }
    assert!(inbox(&h, &elsewhere.token, 0).await.is_empty());
    assert!(
        h.smtp
            .messages_to(&elsewhere.email)
            .iter()
            .all(|m| !m.subject.contains("New CQRS registration"))
    );

    // Listed for the administrators in scope only.
    let listed = |token: String| {
        let mut client: AccessServiceClient<_> = h.access();
        async move {
            client
                .list_registrations(with_token(
                    pb::ListRegistrationsRequest {
                        organisation_id: String::new(),
                        state: pb::RegistrationState::Pending as i32,
                        page_size: 0,
                        page_token: String::new(),
                    },
                    &token,
                ))
                .await
                .map(|r| r.into_inner().registrations.len())
        }
    };
    assert_eq!(listed(admin.token.clone()).await.unwrap(), 1);
    assert_eq!(listed(regional.token.clone()).await.unwrap(), 1);
    assert_eq!(listed(elsewhere.token.clone()).await.unwrap(), 0);

    let approved = h
        .review_registration(&admin.token, &registration.id, pb::Decision::Approve, "")
        .await
        .unwrap();
    assert_eq!(state(&approved), pb::RegistrationState::Approved);
    assert_eq!(approved.reviewer_id, admin.account_id.to_string());
    assert!(approved.review_time.is_some());
    let account = h.lookup(applicant).await.unwrap();
    assert_eq!(approved.account_id, account.id);
    assert_eq!(
        h.grants(Uuid::parse_str(&account.id).unwrap()).await,
        vec![(h.tree.practice, Role::PracticeUser)]
    );
    h.mails(applicant, "Your CQRS registration has been approved", 1)
        .await;
    let link = h
        .mails(applicant, "Complete your CQRS registration", 1)
        .await[0]
        .link_token()
        .unwrap();
    let active = h
        .identity()
        .complete_registration(id_pb::CompleteRegistrationRequest {
            token: link,
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(active.state, id_pb::AccountState::Active as i32);
    let reviewed = h.audit("REVIEW_REGISTRATION", &registration.id).await;
    assert_eq!(reviewed.len(), 1);
    assert_eq!(reviewed[0].3["decision"], "APPROVE");
    assert_eq!(reviewed[0].3["to_state"], "APPROVED");

    let twice = h
        .review_registration(
            &regional.token,
            &registration.id,
            pb::Decision::Reject,
            "late",
        )
        .await
        .unwrap_err();
    assert_reason(&twice, Code::FailedPrecondition, "REGISTRATION_NOT_PENDING");
}

#[tokio::test]
async fn rejection_needs_a_reason_and_bad_submissions_change_nothing() {
    let h = AccessSuite::start().await;
    let admin = h
        .user(
            "admin.one@riverside.nhs.uk",
            Role::CommissioningAccountAdministrator,
            h.tree.ccg,
        )
        .await;

    let before = h.footprint().await;
    let bad = h
        .access()
        .submit_registration(pb::SubmitRegistrationRequest {
            request_id: String::new(),
            email: "x@".into(),
            organisation: None,
            role: 0,
            first_name: "Sam".into(),
            last_name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&bad),
        [
            "request_id",
            "email",
            "last_name",
            "role",
            "organisation_id"
        ]
    );
    let id = || Uuid::new_v4().to_string();
    let practice = || Organisation::OrganisationId(h.tree.practice.to_string());
    for (organisation, role, email, field) in [
        (
            Organisation::OdsCode("!!".into()),
            Role::PracticeUser,
            "a.b@x.nhs.uk",
            "ods_code",
        ),
        (
            Organisation::OdsCode("ZZZ99".into()),
            Role::PracticeUser,
            "a.b@x.nhs.uk",
            "ods_code",
        ),
        (
            Organisation::OrganisationId(Uuid::new_v4().to_string()),
            Role::PracticeUser,
            "a.b@x.nhs.uk",
            "organisation_id",
        ),
        (practice(), Role::CommissioningUser, "a.b@x.nhs.uk", "role"),
        (practice(), Role::ServiceDesk, "a.b@x.nhs.uk", "role"),
        (
            practice(),
            Role::PracticeUser,
            "info@bridge-street.nhs.uk",
            "email",
        ),
    ] {
        let status = h
            .submit(&id(), email, organisation, role)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(violated_fields(&status), [field], "{status:?}");
    }
    assert_eq!(h.footprint().await, before);

    // Whether or not the address has an account, the answer looks the same.
    let known = "known.person@bridge-street.nhs.uk";
    h.account(known, "Known", "Person").await;
    let for_known = h
        .submit(&id(), known, practice(), Role::PracticeUser)
        .await
        .unwrap();
    let unknown = "new.person@bridge-street.nhs.uk";
    let for_unknown = h
        .submit(&id(), unknown, practice(), Role::PracticeUser)
        .await
        .unwrap();
    assert_eq!(state(&for_known), state(&for_unknown));
    assert_eq!(for_known.account_id, for_unknown.account_id);

    let key = id();
    h.submit(
        &key,
        "third@bridge-street.nhs.uk",
        practice(),
        Role::PracticeUser,
    )
    .await
    .unwrap();
    let reused = h
        .submit(
            &key,
            "third@bridge-street.nhs.uk",
            practice(),
            Role::PracticeManager,
        )
        .await
        .unwrap_err();
    assert_reason(&reused, Code::AlreadyExists, "REQUEST_ID_REUSED");

    let no_reason = h
        .review_registration(&admin.token, &for_unknown.id, pb::Decision::Reject, "  ")
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&no_reason), ["reason"]);
    let rejected = h
        .review_registration(
            &admin.token,
            &for_unknown.id,
            pb::Decision::Reject,
            "Not a member of staff at this practice",
        )
        .await
        .unwrap();
    assert_eq!(state(&rejected), pb::RegistrationState::Rejected);
    assert_eq!(
        rejected.decision_reason,
        "Not a member of staff at this practice"
    );
    let mail = &h.mails(unknown, "has been rejected", 1).await[0];
    assert!(mail.text.contains("Not a member of staff at this practice"));
    assert!(h.lookup(unknown).await.is_none());

    // Nobody approves their own request.
    let own = h
        .submit(&id(), &admin.email, practice(), Role::PracticeManager)
        .await
        .unwrap();
    let refused = h
        .review_registration(&admin.token, &own.id, pb::Decision::Approve, "")
        .await
        .unwrap_err();
    assert_reason(&refused, Code::PermissionDenied, "OWN_REQUEST");
}

#[tokio::test]
async fn self_registration_can_be_turned_off() {
    let h = AccessSuite::start().await;
    let off = h
        .access_replica(WorkflowSettings {
            self_registration: false,
            ..WorkflowSettings::default()
        })
        .await;
    let before = h.footprint().await;
    let refused = AccessServiceClient::new(off.channel.clone())
        .submit_registration(pb::SubmitRegistrationRequest {
            request_id: Uuid::new_v4().to_string(),
            email: "sam.patel@bridge-street.nhs.uk".into(),
            organisation: Some(Organisation::OrganisationId(h.tree.practice.to_string())),
            role: Role::PracticeUser.to_proto() as i32,
            first_name: "Sam".into(),
            last_name: "Patel".into(),
        })
        .await
        .unwrap_err();
    assert_reason(
        &refused,
        Code::FailedPrecondition,
        "SELF_REGISTRATION_DISABLED",
    );
    assert_eq!(h.footprint().await, before);
}

/// SubmitRegistration mails its applicant, so it shares the mail RPCs' budgets: a flood for
/// one address is refused once the budget is spent, answered RATE_LIMITED with a delay.
#[tokio::test]
async fn registrations_for_one_address_are_rate_limited() {
    let h = AccessSuite::start_with_env(
        WorkflowSettings::default(),
        &[
            ("CQRS_RATE_LIMIT_PER_ADDRESS", "2/hour"),
            ("CQRS_RATE_LIMIT_PER_CLIENT", "off"),
        ],
    )
    .await;
    let practice = || Organisation::OrganisationId(h.tree.practice.to_string());
    let mut answers = Vec::new();
    for i in 0..4 {
        answers.push(
            h.submit(
                &uuid::Uuid::new_v4().to_string(),
                if i % 2 == 0 {
                    "flood@bridge-street.nhs.uk"
                } else {
                    "FLOOD@bridge-street.nhs.uk"
                },
                practice(),
                Role::PracticeUser,
            )
            .await,
        );
    }
    for answer in &answers[..2] {
        if let Err(status) = answer {
            assert_ne!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        }
    }
    for answer in &answers[2..] {
        assert_reason(
            answer.as_ref().unwrap_err(),
            tonic::Code::ResourceExhausted,
            "RATE_LIMITED",
        );
    }
    h.submit(
        &uuid::Uuid::new_v4().to_string(),
        "someone.else@bridge-street.nhs.uk",
        practice(),
        Role::PracticeUser,
    )
    .await
    .unwrap();
}

/// A registration for an address that has an account answers in the same time as one for an
/// address that has none: medians within 5%. The floor (`CQRS_UNIFORM_ANSWER_MS`, 250 ms by
/// default) is set to 500 ms here: a registration calls identity and the directory, and a
/// debug build on a busy test machine must still finish inside it.
#[tokio::test]
async fn registration_timing_does_not_tell_known_from_unknown() {
    let h = AccessSuite::start_with_env(
        WorkflowSettings::default(),
        &[("CQRS_UNIFORM_ANSWER_MS", "500")],
    )
    .await;
    let practice = || Organisation::OrganisationId(h.tree.practice.to_string());
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..9 {
        let known_address = format!("known.{i}@bridge-street.nhs.uk");
        h.account(&known_address, "Known", "Person").await;
        for (address, into) in [
            (known_address, &mut known),
            (format!("new.{i}@bridge-street.nhs.uk"), &mut unknown),
        ] {
            let started = std::time::Instant::now();
            h.submit(
                &uuid::Uuid::new_v4().to_string(),
                &address,
                practice(),
                Role::PracticeUser,
            )
            .await
            .unwrap();
            into.push(started.elapsed());
        }
    }
    let (k, u) = (median(known), median(unknown));
    assert!(
        k.abs_diff(u) <= k.max(u) / 20,
        "known {k:?} vs unknown {u:?}"
    );
}
