//! Invitations: the whole journey through the real services, keyed creates, bad input,
//! resend, cancel, expiry and parallel accepts.

use chrono::TimeDelta;
use cqrs_auth::Role;
use cqrs_proto::access::v1 as pb;
use cqrs_proto::identity::v1 as id_pb;
use cqrs_suite::PASSWORD;
use cqrs_testkit::{assert_reason, status_reason, violated_fields, with_token};
use tonic::Code;
use uuid::Uuid;

use crate::calls::AccessSuite;

fn state(invitation: &pb::Invitation) -> pb::InvitationState {
    pb::InvitationState::try_from(invitation.state).unwrap()
}

async fn list(h: &AccessSuite, token: &str, state: pb::InvitationState) -> Vec<pb::Invitation> {
    h.access()
        .list_invitations(with_token(
            pb::ListInvitationsRequest {
                organisation_id: String::new(),
                state: state as i32,
                page_size: 0,
                page_token: String::new(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .invitations
}

#[tokio::test]
async fn invitation_journey_creates_the_account_and_the_grant() {
    let h = AccessSuite::start().await;
    let admin = h
        .grantee(Role::CommissioningAccountAdministrator, h.tree.ccg)
        .await;
    let email = "jo.bloggs@bridge-street.nhs.uk";

    let invitation = h
        .invite(&admin.token, email, h.tree.practice, Role::PracticeManager)
        .await
        .unwrap();
    assert_eq!(state(&invitation), pb::InvitationState::Sent);
    assert_eq!(invitation.organisation_name, "Bridge Street Surgery");
    assert_eq!(invitation.inviter_id, admin.account_id.to_string());
    let expires = invitation.expire_time.unwrap().seconds - invitation.send_time.unwrap().seconds;
    assert_eq!(expires, 7 * 24 * 3600);
    let created = h.audit("CREATE_INVITATION", &invitation.id).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].0, "user");
    assert!(!created[0].3.to_string().contains("token"));

    // The mail carries the link; no answer ever does.
    let mail = &h.mails(email, "You have been invited", 1).await[0];
    assert!(mail.text.contains("Bridge Street Surgery"));
    assert!(mail.text.contains("Practice Manager"));
    let link = mail.link_token().unwrap();
    assert!(!format!("{invitation:?}").contains(&link));
    let shown = h.get_invitation(&link).await.unwrap();
    assert_eq!(shown.id, invitation.id);

    // Accepting (with a corrected first name) creates the account, grants the role and has
    // identity mail a set-password link that works.
    let accepted = h
        .access()
        .accept_invitation(pb::AcceptInvitationRequest {
            token: link.clone(),
            first_name: "Joanna".into(),
            last_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .invitation
        .unwrap();
    assert_eq!(state(&accepted), pb::InvitationState::Accepted);
    assert_eq!(accepted.first_name, "Joanna");
    let account = h.lookup(email).await.expect("account created");
    assert_eq!(accepted.account_id, account.id);
    assert_eq!(account.first_name, "Joanna");
    assert_eq!(
        account.state,
        id_pb::AccountState::PendingRegistration as i32
    );
    let account_id = Uuid::parse_str(&account.id).unwrap();
    assert_eq!(
        h.grants(account_id).await,
        vec![(h.tree.practice, Role::PracticeManager)]
    );
    let set_password = h.mails(email, "Complete your CQRS registration", 1).await[0]
        .link_token()
        .unwrap();
    h.identity()
        .complete_registration(id_pb::CompleteRegistrationRequest {
            token: set_password,
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let accept_audit = h.audit("ACCEPT_INVITATION", &invitation.id).await;
    assert_eq!(accept_audit.len(), 1);
    assert_eq!(accept_audit[0].0, "anonymous");
    assert_eq!(accept_audit[0].3["to_state"], "ACCEPTED");
    assert_eq!(accept_audit[0].3["account_id"], account.id.as_str());

    // Single use: the link is dead for every purpose, with the one answer.
    for status in [
        h.get_invitation(&link).await.unwrap_err(),
        h.accept(&link).await.unwrap_err(),
        h.accept("not-a-token").await.unwrap_err(),
        h.accept(&"A".repeat(43)).await.unwrap_err(),
    ] {
        assert_reason(&status, Code::FailedPrecondition, "LINK_INVALID");
    }
    let listed = list(&h, &admin.token, pb::InvitationState::Accepted).await;
    assert_eq!(
        listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [invitation.id.as_str()]
    );
}

#[tokio::test]
async fn an_address_with_an_account_is_granted_without_a_new_account() {
    let h = AccessSuite::start().await;
    let desk = h.grantee(Role::ServiceDesk, h.tree.desk).await;
    let email = "existing.person@riverside.nhs.uk";
    let existing = h.account(email, "Existing", "Person").await;
    h.invite(&desk.token, email, h.tree.ccg, Role::CommissioningUser)
        .await
        .unwrap();
    let link = h.invitation_link(email, 1).await;
    let accepted = h.accept(&link).await.unwrap();
    assert_eq!(accepted.account_id, existing.to_string());
    assert_eq!(
        h.grants(existing).await,
        vec![(h.tree.ccg, Role::CommissioningUser)]
    );
}

#[tokio::test]
async fn keyed_creates_and_bad_input() {
    let h = AccessSuite::start().await;
    let admin = h
        .grantee(Role::CommissioningAccountAdministrator, h.tree.ccg)
        .await;
    let key = Uuid::new_v4().to_string();
    let email = "keyed@riverside.nhs.uk";
    let first = h
        .invite_keyed(
            &admin.token,
            &key,
            email,
            h.tree.practice,
            Role::PracticeUser,
        )
        .await
        .unwrap();
    let again = h
        .invite_keyed(
            &admin.token,
            &key,
            email,
            h.tree.practice,
            Role::PracticeUser,
        )
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(h.count("invitations").await, 1);
    let reused = h
        .invite_keyed(
            &admin.token,
            &key,
            email,
            h.tree.practice,
            Role::PracticeManager,
        )
        .await
        .unwrap_err();
    assert_reason(&reused, Code::AlreadyExists, "REQUEST_ID_REUSED");
    // A second live invitation for the same person, place and role: resend instead.
    let twice = h
        .invite(&admin.token, email, h.tree.practice, Role::PracticeUser)
        .await
        .unwrap_err();
    assert_reason(&twice, Code::AlreadyExists, "INVITATION_ALREADY_SENT");

    let before = h.footprint().await;
    let bad = h
        .access()
        .create_invitation(with_token(
            pb::CreateInvitationRequest {
                request_id: "nope".into(),
                email: "not an address".into(),
                first_name: " ".into(),
                last_name: "Ok".into(),
                organisation_id: "x".into(),
                role: 0,
            },
            &admin.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&bad),
        [
            "request_id",
            "email",
            "first_name",
            "organisation_id",
            "role"
        ]
    );
    let generic = h
        .invite(
            &admin.token,
            "reception@bridge-street.nhs.uk",
            h.tree.practice,
            Role::PracticeUser,
        )
        .await
        .unwrap_err();
    assert_reason(
        &generic,
        Code::InvalidArgument,
        "GENERIC_EMAIL_NOT_PERMITTED",
    );
    assert_eq!(violated_fields(&generic), ["email"]);
    // A practice role at a commissioning organisation.
    let misplaced = h
        .invite(
            &admin.token,
            "ok.person@x.nhs.uk",
            h.tree.ccg,
            Role::PracticeUser,
        )
        .await
        .unwrap_err();
    assert_eq!(misplaced.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&misplaced), ["role"]);
    assert_eq!(h.footprint().await, before);
    assert_eq!(h.mails(email, "You have been invited", 1).await.len(), 1);
}

#[tokio::test]
async fn resend_replaces_the_link_and_cancel_kills_it() {
    let h = AccessSuite::start().await;
    let admin = h
        .grantee(Role::CommissioningAccountAdministrator, h.tree.region)
        .await;
    let email = "resend.me@hillside.nhs.uk";
    let invitation = h
        .invite(
            &admin.token,
            email,
            h.tree.other_practice,
            Role::PracticeUser,
        )
        .await
        .unwrap();
    let old = h.invitation_link(email, 1).await;

    h.clock.advance(TimeDelta::hours(1));
    let resent = h
        .access()
        .resend_invitation(with_token(
            pb::ResendInvitationRequest {
                invitation_id: invitation.id.clone(),
            },
            &admin.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .invitation
        .unwrap();
    assert_eq!(state(&resent), pb::InvitationState::Sent);
    assert!(resent.expire_time.unwrap().seconds >= invitation.expire_time.unwrap().seconds + 3600);
    let new = h.invitation_link(email, 2).await;
    assert_ne!(old, new);
    assert_reason(
        &h.get_invitation(&old).await.unwrap_err(),
        Code::FailedPrecondition,
        "LINK_INVALID",
    );
    assert_eq!(h.get_invitation(&new).await.unwrap().id, invitation.id);
    assert_eq!(h.audit("RESEND_INVITATION", &invitation.id).await.len(), 1);

    let cancelled = h
        .access()
        .cancel_invitation(with_token(
            pb::CancelInvitationRequest {
                invitation_id: invitation.id.clone(),
            },
            &admin.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .invitation
        .unwrap();
    assert_eq!(state(&cancelled), pb::InvitationState::Cancelled);
    assert_reason(
        &h.accept(&new).await.unwrap_err(),
        Code::FailedPrecondition,
        "LINK_INVALID",
    );
    let again = h
        .access()
        .resend_invitation(with_token(
            pb::ResendInvitationRequest {
                invitation_id: invitation.id.clone(),
            },
            &admin.token,
        ))
        .await
        .unwrap_err();
    assert_reason(&again, Code::FailedPrecondition, "INVITATION_NOT_SENT");
    let audit = h.audit("CANCEL_INVITATION", &invitation.id).await;
    assert_eq!(audit[0].3["from_state"], "SENT");
    assert_eq!(audit[0].3["to_state"], "CANCELLED");
}

#[tokio::test]
async fn invitations_expire_by_the_injected_clock() {
    let h = AccessSuite::start().await;
    let desk = h.grantee(Role::ServiceDesk, h.tree.desk).await;
    let email = "slow.reader@riverside.nhs.uk";
    let invitation = h
        .invite(&desk.token, email, h.tree.ccg, Role::CommissioningFinance)
        .await
        .unwrap();
    let link = h.invitation_link(email, 1).await;
    assert_eq!(
        list(&h, &desk.token, pb::InvitationState::Sent).await.len(),
        1
    );

    h.clock.advance(TimeDelta::days(7) + TimeDelta::seconds(1));
    // Shown and treated as expired before the sweep has recorded anything.
    assert!(
        list(&h, &desk.token, pb::InvitationState::Sent)
            .await
            .is_empty()
    );
    let expired = list(&h, &desk.token, pb::InvitationState::Expired).await;
    assert_eq!(expired.len(), 1);
    assert_eq!(state(&expired[0]), pb::InvitationState::Expired);
    assert_reason(
        &h.get_invitation(&link).await.unwrap_err(),
        Code::FailedPrecondition,
        "LINK_INVALID",
    );

    // The sweep records the transition once, by the system.
    assert_eq!(h.access_service().api.expire_due().await.unwrap(), 1);
    assert_eq!(h.access_service().api.expire_due().await.unwrap(), 0);
    let audit = h.audit("EXPIRE_INVITATION", &invitation.id).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].0, "system");
    assert_reason(
        &h.accept(&link).await.unwrap_err(),
        Code::FailedPrecondition,
        "LINK_INVALID",
    );
    let resend = h
        .access()
        .resend_invitation(with_token(
            pb::ResendInvitationRequest {
                invitation_id: invitation.id.clone(),
            },
            &desk.token,
        ))
        .await
        .unwrap_err();
    assert_reason(&resend, Code::FailedPrecondition, "INVITATION_NOT_SENT");
    assert!(h.lookup(email).await.is_none());

    // An expired invitation does not block a new one.
    h.invite(&desk.token, email, h.tree.ccg, Role::CommissioningFinance)
        .await
        .unwrap();

    // A run-out link used before any sweep is recorded as expired on the spot.
    let other = "also.slow@riverside.nhs.uk";
    let second = h
        .invite(&desk.token, other, h.tree.ccg, Role::CommissioningUser)
        .await
        .unwrap();
    let second_link = h.invitation_link(other, 1).await;
    h.clock.advance(TimeDelta::days(8));
    assert_reason(
        &h.accept(&second_link).await.unwrap_err(),
        Code::FailedPrecondition,
        "LINK_INVALID",
    );
    assert_eq!(h.audit("EXPIRE_INVITATION", &second.id).await.len(), 1);
}

#[tokio::test]
async fn parallel_accepts_of_one_link_exactly_one_wins() {
    let h = AccessSuite::start().await;
    let desk = h.grantee(Role::ServiceDesk, h.tree.desk).await;
    let email = "racer@bridge-street.nhs.uk";
    h.invite(&desk.token, email, h.tree.practice, Role::PracticeUser)
        .await
        .unwrap();
    let link = h.invitation_link(email, 1).await;

    let attempts: Vec<_> = (0..3)
        .map(|_| {
            let client = h.access();
            let link = link.clone();
            tokio::spawn(async move {
                client
                    .clone()
                    .accept_invitation(pb::AcceptInvitationRequest {
                        token: link,
                        first_name: String::new(),
                        last_name: String::new(),
                    })
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => won += 1,
            Err(status) => {
                assert_eq!(
                    status_reason(&status).as_deref(),
                    Some("LINK_INVALID"),
                    "{status:?}"
                );
            }
        }
    }
    assert_eq!(won, 1);
    let account = h.lookup(email).await.unwrap();
    assert_eq!(
        h.grants(Uuid::parse_str(&account.id).unwrap()).await,
        vec![(h.tree.practice, Role::PracticeUser)]
    );
    assert_eq!(h.audit_count("ACCEPT_INVITATION").await, 1);
}

#[tokio::test]
async fn only_approvers_and_the_desk_invite_approvers() {
    let h = AccessSuite::start().await;
    let admin = h
        .grantee(Role::CommissioningAccountAdministrator, h.tree.ccg)
        .await;
    let approver = h.grantee(Role::CommissioningApprover, h.tree.ccg).await;
    let desk = h.grantee(Role::ServiceDesk, h.tree.desk).await;

    let refused = h
        .invite(
            &admin.token,
            "tier2@riverside.nhs.uk",
            h.tree.ccg,
            Role::CommissioningApprover,
        )
        .await
        .unwrap_err();
    assert_reason(&refused, Code::PermissionDenied, "ROLE_LACKS_PERMISSION");
    let denied = h.audit("CREATE_INVITATION", &h.tree.ccg.to_string()).await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].2, "denied");

    h.invite(
        &approver.token,
        "tier2@riverside.nhs.uk",
        h.tree.ccg,
        Role::CommissioningApprover,
    )
    .await
    .unwrap();
    h.invite(
        &desk.token,
        "tier2b@hillside.nhs.uk",
        h.tree.other_ccg,
        Role::CommissioningApprover,
    )
    .await
    .unwrap();
    // An approver invites approvers only, and only in its scope.
    let other_role = h
        .invite(
            &approver.token,
            "user@riverside.nhs.uk",
            h.tree.ccg,
            Role::CommissioningUser,
        )
        .await
        .unwrap_err();
    assert_reason(&other_role, Code::PermissionDenied, "ROLE_LACKS_PERMISSION");
    let elsewhere = h
        .invite(
            &approver.token,
            "tier2c@hillside.nhs.uk",
            h.tree.other_ccg,
            Role::CommissioningApprover,
        )
        .await
        .unwrap_err();
    assert_reason(&elsewhere, Code::PermissionDenied, "NO_GRANT_IN_SCOPE");

    // Each sees the invitations it could have sent.
    let seen = |invitations: Vec<pb::Invitation>| {
        let mut emails: Vec<String> = invitations.into_iter().map(|i| i.email).collect();
        emails.sort();
        emails
    };
    assert_eq!(
        seen(list(&h, &approver.token, pb::InvitationState::Unspecified).await),
        ["tier2@riverside.nhs.uk"]
    );
    assert!(
        list(&h, &admin.token, pb::InvitationState::Unspecified)
            .await
            .is_empty()
    );
    assert_eq!(
        seen(list(&h, &desk.token, pb::InvitationState::Unspecified).await),
        ["tier2@riverside.nhs.uk", "tier2b@hillside.nhs.uk"]
    );
}
