//! Journey 1: bootstrap service desk → sets password from the mailed link → signs in →
//! creates a region, a commissioning organisation and two practices → invites a Commissioning
//! Account Administrator → the invitee accepts, sets a password from the mail, signs in,
//! selects role.

use cqrs_proto::access::v1::{self as access_pb, InvitationState};
use cqrs_proto::common::v1::Role;
use cqrs_proto::directory::v1::{self as dir_pb, OrganisationKind};
use cqrs_proto::identity::v1::{self as id_pb, AccountState};
use cqrs_suite::{
    AuditQuery, PASSWORD, Service, Suite, assert_reason, people, subject, with_token,
};
use tonic::Code;

use crate::{assert_link, audit_actions, is_user_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_desk_builds_the_tree_and_onboards_an_administrator() {
    let suite = Suite::start().await;
    let service_token = suite.service_token().await;

    // The bootstrap made a NATIONAL account waiting for its password, and mailed it a link.
    let desk_account = suite
        .identity()
        .get_account(with_token(
            id_pb::GetAccountRequest {
                account_id: suite.desk_account_id().into(),
            },
            &service_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(desk_account.email, Suite::DESK_EMAIL);
    assert_eq!(desk_account.state, AccountState::PendingRegistration as i32);
    let mail = suite
        .mail(Suite::DESK_EMAIL, subject::REGISTRATION_LINK)
        .await;
    assert_eq!(mail.to, vec![Suite::DESK_EMAIL.to_owned()]);
    assert!(
        mail.text
            .contains(&format!("Your User ID is {}", desk_account.user_id)),
        "{mail:#?}"
    );
    let link = assert_link(&mail, "register/complete");

    // The desk sets its password from the link; the link then stops working.
    let registered = suite
        .complete_registration(&link, Suite::DESK_PASSWORD)
        .await
        .unwrap();
    assert_eq!(registered.state, AccountState::Active as i32);
    assert!(is_user_id(&registered.user_id), "{}", registered.user_id);
    assert!(registered.user_id.starts_with("SDE"), "from 'Service Desk'");
    let again = suite
        .complete_registration(&link, Suite::DESK_PASSWORD)
        .await
        .unwrap_err();
    assert_reason(&again, Code::FailedPrecondition, "LINK_INVALID");

    // It signs in with its User ID; its only grant is SERVICE_DESK at the desk organisation.
    let sign_in = suite
        .sign_in(&registered.user_id, Suite::DESK_PASSWORD)
        .await
        .unwrap();
    assert_eq!(
        sign_in.account.as_ref().unwrap().id,
        suite.desk_account_id()
    );
    assert_eq!(sign_in.grants.len(), 1, "{:#?}", sign_in.grants);
    let desk_grant = &sign_in.grants[0];
    assert_eq!(desk_grant.role, Role::ServiceDesk as i32);
    assert_eq!(
        desk_grant.organisation_kind,
        OrganisationKind::ServiceDesk as i32
    );
    let desk_org = desk_grant.organisation_id.clone();
    let desk = suite.select(sign_in, &desk_org, Role::ServiceDesk).await;

    // The organisation tree.
    let tree = suite.create_tree(&desk.token).await;
    let practices = suite
        .directory()
        .list_organisations(with_token(
            dir_pb::ListOrganisationsRequest {
                parent_id: tree.ccg.id.clone(),
                ..Default::default()
            },
            &desk.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .organisations;
    let mut names: Vec<&str> = practices.iter().map(|o| o.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [tree.practice.name.as_str(), &tree.second_practice.name]
    );
    let practice = suite
        .directory()
        .get_organisation(with_token(
            dir_pb::GetOrganisationRequest {
                organisation_id: tree.practice.id.clone(),
            },
            &desk.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .organisation
        .unwrap();
    assert_eq!(
        practice.path,
        [tree.practice.id.as_str(), &tree.ccg.id, &tree.region.id]
    );
    assert_eq!(practice.kind, OrganisationKind::ServiceProvider as i32);

    // The desk invites a Commissioning Account Administrator of the CCG.
    let (email, names) = people::ADMIN;
    let invitation = suite
        .invite(
            &desk.token,
            email,
            names,
            &tree.ccg,
            Role::CommissioningAccountAdministrator,
        )
        .await
        .unwrap();
    assert_eq!(invitation.state, InvitationState::Sent as i32);
    assert_eq!(invitation.inviter_id, suite.desk_account_id());
    let mail = suite.mail(email, subject::INVITATION).await;
    assert!(mail.subject.contains(&tree.ccg.name), "{mail:#?}");
    assert!(
        mail.text.contains("Commissioning Account Administrator"),
        "{mail:#?}"
    );
    let link = assert_link(&mail, "invitation");

    // The invitee opens the link, accepts, and gets a registration link.
    let shown = suite
        .access()
        .get_invitation(access_pb::GetInvitationRequest {
            token: link.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .invitation
        .unwrap();
    assert_eq!(shown.id, invitation.id);
    assert_eq!(shown.organisation_name, tree.ccg.name);
    assert_eq!(shown.role, Role::CommissioningAccountAdministrator as i32);
    let accepted = suite.accept_invitation(&link).await.unwrap();
    assert_eq!(accepted.state, InvitationState::Accepted as i32);
    assert!(!accepted.account_id.is_empty());
    let reuse = suite.accept_invitation(&link).await.unwrap_err();
    assert_reason(&reuse, Code::FailedPrecondition, "LINK_INVALID");

    let admin = suite.register_from_mail(email, PASSWORD).await;
    assert_eq!(admin.account_id, accepted.account_id);
    assert!(admin.user_id.starts_with("ATU"), "{}", admin.user_id);

    // The administrator signs in, sees the role, selects it, and can use it.
    let sign_in = suite.sign_in(&admin.user_id, PASSWORD).await.unwrap();
    let grants: Vec<(String, i32)> = sign_in
        .grants
        .iter()
        .map(|g| (g.organisation_id.clone(), g.role))
        .collect();
    assert_eq!(
        grants,
        [(
            tree.ccg.id.clone(),
            Role::CommissioningAccountAdministrator as i32
        )]
    );
    let admin_session = suite
        .select(
            sign_in,
            &tree.ccg.id,
            Role::CommissioningAccountAdministrator,
        )
        .await;
    let listed = suite
        .access()
        .list_invitations(with_token(
            access_pb::ListInvitationsRequest::default(),
            &admin_session.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .invitations;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, invitation.id);
    assert_eq!(listed[0].state, InvitationState::Accepted as i32);
    // ... and nothing beyond it: creating organisations is the desk's.
    let refused = suite
        .create_organisation(
            &admin_session.token,
            OrganisationKind::ServiceProvider,
            "A81003",
            "Canal Side Practice",
            Some(&tree.ccg),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Exactly the mails of the journey went out.
    let mut sent: Vec<(String, String)> = suite
        .smtp
        .messages()
        .into_iter()
        .map(|m| (m.to.join(","), m.subject))
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            (email.to_owned(), subject::REGISTRATION_LINK.to_owned()),
            (
                email.to_owned(),
                format!("{} {}", subject::INVITATION, "by Riverside CCG")
            ),
            (
                Suite::DESK_EMAIL.to_owned(),
                subject::REGISTRATION_LINK.to_owned()
            ),
        ]
    );

    // The audit trails tell the same story.
    let desk_id = suite.desk_account_id().to_owned();
    let identity = suite
        .audit(Service::Identity, AuditQuery::target(&desk_id))
        .await;
    let actions = audit_actions(&identity);
    for expected in [
        "CREATE_ACCOUNT",
        "COMPLETE_REGISTRATION",
        "SIGN_IN",
        "SELECT_ROLE",
    ] {
        assert!(actions.contains(&expected), "{expected}: {identity:#?}");
    }
    let created = suite
        .audit(Service::Identity, AuditQuery::target(&admin.account_id))
        .await;
    assert_eq!(
        audit_actions(&created)[..4],
        [
            "CREATE_ACCOUNT",
            "COMPLETE_REGISTRATION",
            "SIGN_IN",
            "SELECT_ROLE"
        ]
    );
    assert_eq!(
        (created[0].actor_kind.as_str(), created[0].actor_id.as_str()),
        ("SERVICE", "access"),
        "the access workflow created the account"
    );

    let directory = suite
        .audit(
            Service::Directory,
            AuditQuery::actor(&desk_id).and_action("CREATE_ORGANISATION"),
        )
        .await;
    let mut codes: Vec<&str> = directory
        .iter()
        .filter(|e| e.is_success())
        .filter_map(|e| e.detail("ods_code"))
        .collect();
    codes.sort_unstable();
    assert_eq!(codes, ["15N", "A81001", "A81002", "Y56"]);
    let grants = suite
        .audit(Service::Directory, AuditQuery::action("GRANT_ROLE"))
        .await;
    assert!(
        grants.iter().any(|e| e.actor_id == "access"
            && e.detail("account_id") == Some(admin.account_id.as_str())
            && e.detail("role") == Some("COMMISSIONING_ACCOUNT_ADMINISTRATOR")),
        "{grants:#?}"
    );

    let access = suite
        .audit(Service::Access, AuditQuery::target(&invitation.id))
        .await;
    let steps: Vec<(&str, &str, &str)> = access
        .iter()
        .filter(|e| e.is_success())
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
            ("CREATE_INVITATION", "USER", "SENT"),
            ("ACCEPT_INVITATION", "ANONYMOUS", "ACCEPTED")
        ]
    );
    assert_eq!(access[0].actor_id, desk_id);

    // The desk may read the trails itself; the administrator may not.
    assert!(
        suite
            .audit_as(Service::Access, &desk.token, AuditQuery::default())
            .await
            .is_ok()
    );
    let denied = suite
        .audit_as(
            Service::Identity,
            &admin_session.token,
            AuditQuery::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    suite.assert_every_change_audited().await;
}
