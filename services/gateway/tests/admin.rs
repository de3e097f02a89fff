//! The Users area (seed 002) over HTTP against the whole suite in-process: the members in
//! scope, the Invite steps, the invitations with Resend and Cancel, disable / re-enable /
//! revoke of a person, and a practice's multi-level approval box — each checked in the
//! services afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cqrs_proto::access::v1 as access_pb;
use cqrs_proto::common::v1::Role;
use cqrs_proto::directory::v1 as dir_pb;
use cqrs_proto::identity::v1 as id_pb;
use cqrs_suite::{PASSWORD, Person, World, people, subject, with_token};
use reqwest::StatusCode;

use common::{Browser, Gateway, Page, on_gateway};

/// The value of the hidden field `name` of a page's form.
fn hidden(page: &Page, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} on the page: {}", page.body));
    let rest = &page.body[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

async fn signed_in(gateway: &Gateway, person: &Person) -> Browser {
    let browser = gateway.browser();
    browser.sign_in(&person.user_id, &person.password).await;
    browser
}

async fn account(world: &World, account_id: &str) -> id_pb::Account {
    world
        .suite
        .identity()
        .get_account(with_token(
            id_pb::GetAccountRequest {
                account_id: account_id.into(),
            },
            &world.desk.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap()
}

async fn grants(world: &World, account_id: &str) -> Vec<dir_pb::Grant> {
    world
        .suite
        .directory()
        .list_grants(with_token(
            dir_pb::ListGrantsRequest {
                account_id: account_id.into(),
                page_size: 0,
                page_token: String::new(),
            },
            &world.desk.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .grants
}

/// The invitations to `email`, as the service desk lists them.
async fn invitations(world: &World, email: &str) -> Vec<access_pb::Invitation> {
    world
        .suite
        .access()
        .list_invitations(with_token(
            access_pb::ListInvitationsRequest::default(),
            &world.desk.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .invitations
        .into_iter()
        .filter(|i| i.email == email)
        .collect()
}

async fn organisation(world: &World, id: &str) -> dir_pb::Organisation {
    world
        .suite
        .directory()
        .get_organisation(with_token(
            dir_pb::GetOrganisationRequest {
                organisation_id: id.into(),
            },
            &world.desk.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .organisation
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_members_list_shows_the_people_in_scope_and_no_others() {
    let world = World::start().await;
    let sam = world.practice_user().await;
    let (hillside, _) = world.other_ccg().await;
    let (grace_email, grace_names) = people::OTHER_ADMIN;
    let grace = world
        .suite
        .onboard_by_invitation(
            &world.desk.token,
            grace_email,
            grace_names,
            &hillside,
            Role::CommissioningAccountAdministrator,
            PASSWORD,
        )
        .await;
    let gateway = Gateway::start(&world.suite).await;
    let admin = signed_in(&gateway, &world.admin).await;

    let home = admin.get("/portal/").await;
    home.assert_shows("href=\"/portal/users\"");
    let users = admin.get("/portal/users").await;
    assert_eq!(users.status, StatusCode::OK);
    for shown in [
        "Sam Patel",
        sam.email.as_str(),
        sam.user_id.as_str(),
        "Bridge Street Surgery (A81001)",
        "Practice User",
        world.admin.email.as_str(),
        world.admin.user_id.as_str(),
        "Commissioning Account Administrator",
        "Active",
        &format!("href=\"/portal/users/{}\"", sam.account_id),
    ] {
        users.assert_shows(shown);
    }
    assert!(!users.contains("Grace Lee"), "{}", users.body);
    assert!(!users.contains(grace_email));
    assert!(!users.contains("Hillside CCG"));
    // The organisation picker lists the scope, the CCG and its practices.
    users.assert_shows("Mill Lane Practice (A81002)");

    // One practice and below.
    let practice = admin
        .get(&format!(
            "/portal/users?organisation={}",
            world.tree.practice.id
        ))
        .await;
    practice.assert_shows("Sam Patel");
    // (Alex Turner's name is in the page's header: the address tells the rows apart.)
    assert!(!practice.contains(&world.admin.email));
    let empty = admin.get("/portal/users?ods=a81002").await;
    empty.assert_shows("Nobody holds a role here yet.");
    // Out of scope, by ODS code or by id: said by the field, and nobody of it shown.
    let other = admin.get("/portal/users?ods=QWO").await;
    assert_eq!(other.status, StatusCode::OK);
    other.assert_shows("id=\"ods-error\"");
    other.assert_shows("Hillside CCG is not in your area");
    assert!(!other.contains("Grace Lee"));
    let other = admin
        .get(&format!("/portal/users?organisation={}", hillside.id))
        .await;
    other.assert_shows("id=\"organisation-error\"");
    assert!(!other.contains("Grace Lee"));
    admin
        .get("/portal/users?ods=1")
        .await
        .assert_shows("ODS code must be 3 to 6 letters and digits");

    // One person: details, roles, and what the administrator may do (revoke, not disable).
    let person = admin
        .get(&format!("/portal/users/{}", sam.account_id))
        .await;
    assert_eq!(person.status, StatusCode::OK);
    person.assert_shows(&sam.user_id);
    person.assert_shows("Practice User, Bridge Street Surgery");
    person.assert_shows(&format!("/portal/users/{}/revoke", sam.account_id));
    assert!(!person.contains("/disable\""));
    assert!(!person.contains("/enable\""));
    // Someone outside the scope, and an id that is no account.
    assert_eq!(
        admin
            .get(&format!("/portal/users/{}", grace.account_id))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        admin.get("/portal/users/not-an-id").await.status,
        StatusCode::FORBIDDEN
    );

    // The service desk's scope is the whole suite: both CCGs under the region.
    let desk = gateway.browser();
    desk.sign_in(world.suite.desk_user_id(), cqrs_suite::Suite::DESK_PASSWORD)
        .await;
    let region = desk
        .get(&format!(
            "/portal/users?organisation={}",
            world.tree.region.id
        ))
        .await;
    assert_eq!(region.status, StatusCode::OK);
    for shown in [sam.email.as_str(), grace_email, world.admin.email.as_str()] {
        region.assert_shows(shown);
    }
    region.assert_shows("Hillside CCG (QWO)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_invites_step_by_step_and_the_mail_goes_out() {
    let world = World::start().await;
    let gateway = Gateway::start(&world.suite).await;
    let admin = signed_in(&gateway, &world.admin).await;
    let email = "jo.bloggs@bridgestreet.nhs.uk";

    let start = admin.get("/portal/users/invite").await;
    assert_eq!(start.status, StatusCode::OK);
    start.assert_shows("What is their e-mail address?");
    let csrf = start.csrf();
    let post = |fields: Vec<(&'static str, String)>| {
        let admin = &admin;
        let csrf = csrf.clone();
        async move {
            let mut form = vec![("csrf", csrf.as_str())];
            form.extend(fields.iter().map(|(k, v)| (*k, v.as_str())));
            admin.post("/portal/users/invite", &form).await
        }
    };
    // The answers so far plus `extra`.
    let answers = |so_far: &[(&'static str, &str)], extra: &[(&'static str, &str)]| {
        so_far
            .iter()
            .chain(extra)
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect::<Vec<_>>()
    };

    // 1. E-mail address.
    let bad = post(answers(
        &[],
        &[("step", "email"), ("email", "not an address")],
    ))
    .await;
    assert_eq!(bad.status, StatusCode::OK);
    bad.assert_shows("id=\"email-error\"");
    bad.assert_shows("aria-invalid=\"true\"");
    bad.assert_shows("What is their e-mail address?");
    let blank = post(answers(&[], &[("step", "email"), ("email", "")])).await;
    blank.assert_shows("Enter the e-mail address of the person to invite.");
    let names = post(answers(&[], &[("step", "email"), ("email", email)])).await;
    names.assert_shows("What is their name?");
    assert_eq!(hidden(&names, "email"), email);

    // 2. Names.
    let so_far = [("email", email)];
    let missing = post(answers(
        &so_far,
        &[
            ("step", "names"),
            ("first_name", " "),
            ("last_name", "Bloggs"),
        ],
    ))
    .await;
    missing.assert_shows("id=\"first_name-error\"");
    missing.assert_shows("Enter their first name.");
    assert!(!missing.contains("id=\"last_name-error\""));
    let organisations = post(answers(
        &so_far,
        &[
            ("step", "names"),
            ("first_name", "Jo"),
            ("last_name", "Bloggs"),
        ],
    ))
    .await;
    organisations.assert_shows("Which organisation are you inviting them to?");
    organisations.assert_shows("Riverside CCG (15N)");
    organisations.assert_shows("Bridge Street Surgery (A81001)");
    organisations.assert_shows("Mill Lane Practice (A81002)");
    assert!(!organisations.contains("North Region"), "above the scope");

    // 3. Organisation.
    let so_far = [
        ("email", email),
        ("first_name", "Jo"),
        ("last_name", "Bloggs"),
    ];
    let none = post(answers(
        &so_far,
        &[("step", "organisation"), ("organisation", "")],
    ))
    .await;
    none.assert_shows("id=\"organisation-error\"");
    let unknown = post(answers(
        &so_far,
        &[("step", "organisation"), ("ods_code", "ZZ999")],
    ))
    .await;
    unknown.assert_shows("id=\"ods_code-error\"");
    unknown.assert_shows("No organisation has the ODS code ZZ999.");
    let above = post(answers(
        &so_far,
        &[("step", "organisation"), ("ods_code", "Y56")],
    ))
    .await;
    above.assert_shows("North Region is not in your area");

    // 4. Role: at the CCG, the commissioning roles this administrator may invite into — not
    // the approver role, which only approvers give.
    let ccg = world.tree.ccg.id.as_str();
    let roles = post(answers(
        &so_far,
        &[("step", "organisation"), ("organisation", ccg)],
    ))
    .await;
    roles.assert_shows("Which role will they have?");
    roles.assert_shows("value=\"COMMISSIONING_USER\"");
    roles.assert_shows("value=\"COMMISSIONING_FINANCE\"");
    assert!(!roles.contains("COMMISSIONING_APPROVER"), "{}", roles.body);
    assert!(!roles.contains("value=\"PRACTICE_USER\""));
    let approver = post(answers(
        &so_far,
        &[
            ("step", "role"),
            ("organisation", ccg),
            ("role", "COMMISSIONING_APPROVER"),
        ],
    ))
    .await;
    approver.assert_shows("id=\"role-error\"");
    approver.assert_shows("You cannot invite a person into that role");
    // The practice, by its ODS code: the practice roles.
    let roles = post(answers(
        &so_far,
        &[("step", "organisation"), ("ods_code", "a81001")],
    ))
    .await;
    roles.assert_shows("Bridge Street Surgery");
    roles.assert_shows("value=\"PRACTICE_USER\"");
    roles.assert_shows("value=\"PRACTICE_MANAGER\"");
    assert!(!roles.contains("value=\"COMMISSIONING_USER\""));
    assert_eq!(hidden(&roles, "organisation"), world.tree.practice.id);
    let practice = world.tree.practice.id.as_str();
    let no_role = post(answers(
        &so_far,
        &[("step", "role"), ("organisation", practice), ("role", "")],
    ))
    .await;
    no_role.assert_shows("id=\"role-error\"");
    no_role.assert_shows("Choose the role they will have.");

    // 5. Check, with Change going back to a step with the answers kept.
    let so_far = [
        ("email", email),
        ("first_name", "Jo"),
        ("last_name", "Bloggs"),
        ("organisation", practice),
        ("role", "PRACTICE_USER"),
    ];
    let check = post(answers(&so_far, &[("step", "role")])).await;
    check.assert_shows("Check the invitation, then send it");
    for shown in [
        email,
        "Jo Bloggs",
        "Bridge Street Surgery (A81001)",
        "Practice User",
    ] {
        check.assert_shows(shown);
    }
    let request_id = hidden(&check, "request_id");
    assert!(uuid::Uuid::parse_str(&request_id).is_ok());
    let change = post(answers(
        &so_far,
        &[
            ("step", "check"),
            ("goto", "names"),
            ("request_id", &request_id),
        ],
    ))
    .await;
    change.assert_shows("What is their name?");
    change.assert_shows("value=\"Jo\"");
    assert_eq!(hidden(&change, "role"), "PRACTICE_USER");
    assert_eq!(hidden(&change, "organisation"), practice);

    let send = answers(&so_far, &[("step", "check"), ("request_id", &request_id)]);
    let sent = post(send.clone()).await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    assert_eq!(sent.location(), "/portal/users/invitations");
    let list = admin.get(sent.location()).await;
    list.assert_shows("The invitation was sent to jo.bloggs@bridgestreet.nhs.uk.");
    list.assert_shows("Waiting to be accepted");
    let mail = world.suite.mail(email, subject::INVITATION).await;
    assert!(on_gateway(&mail.links()[0]).starts_with("/portal/invitation?token="));

    // Send pressed twice is one invitation (the key in the form).
    let again = post(send).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    let made = invitations(&world, email).await;
    assert_eq!(made.len(), 1, "{made:#?}");
    assert_eq!(made[0].email, email);
    assert_eq!(made[0].organisation_id, world.tree.practice.id);
    assert_eq!(made[0].role, Role::PracticeUser as i32);
    assert_eq!(made[0].first_name, "Jo");

    // The same person to the same place again: the service's refusal, in words, on the
    // check page.
    let check = post(answers(&so_far, &[("step", "role")])).await;
    let fresh_id = hidden(&check, "request_id");
    assert_ne!(fresh_id, request_id);
    let twice = post(answers(
        &so_far,
        &[("step", "check"), ("request_id", &fresh_id)],
    ))
    .await;
    assert_eq!(twice.status, StatusCode::OK);
    twice.assert_shows("already has an invitation to this organisation in this role");
    assert_eq!(invitations(&world, email).await.len(), 1);

    // A generic mailbox: the service's rule, shown by the e-mail address.
    let generic_id = uuid::Uuid::new_v4().to_string();
    let generic = post(answers(
        &[
            ("email", "reception@bridgestreet.nhs.uk"),
            ("first_name", "Front"),
            ("last_name", "Desk"),
            ("organisation", practice),
            ("role", "PRACTICE_USER"),
        ],
        &[("step", "check"), ("request_id", &generic_id)],
    ))
    .await;
    generic.assert_shows("id=\"email-error\"");
    generic.assert_shows("Generic or shared mailboxes are not permitted");
    assert!(
        invitations(&world, "reception@bridgestreet.nhs.uk")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_invites_approvers_only_and_sets_the_approval_level() {
    let world = World::start().await;
    let (approver, _) = world.approver().await;
    let (_, other_practice) = world.other_ccg().await;
    let gateway = Gateway::start(&world.suite).await;
    let browser = signed_in(&gateway, &approver).await;

    // Invite: only organisations that can hold the approver role, and only that role.
    let start = browser.get("/portal/users/invite").await;
    let csrf = start.csrf();
    let organisations = browser
        .post(
            "/portal/users/invite",
            &[
                ("csrf", csrf.as_str()),
                ("step", "names"),
                ("email", "lee.chan@riverside.nhs.uk"),
                ("first_name", "Lee"),
                ("last_name", "Chan"),
            ],
        )
        .await;
    organisations.assert_shows("Riverside CCG (15N)");
    assert!(!organisations.contains("Bridge Street Surgery"));
    let refused = browser
        .post(
            "/portal/users/invite",
            &[
                ("csrf", csrf.as_str()),
                ("step", "organisation"),
                ("email", "lee.chan@riverside.nhs.uk"),
                ("first_name", "Lee"),
                ("last_name", "Chan"),
                ("ods_code", "A81001"),
            ],
        )
        .await;
    refused.assert_shows("id=\"ods_code-error\"");
    refused.assert_shows("You cannot invite anyone to Bridge Street Surgery");
    let roles = browser
        .post(
            "/portal/users/invite",
            &[
                ("csrf", csrf.as_str()),
                ("step", "organisation"),
                ("email", "lee.chan@riverside.nhs.uk"),
                ("first_name", "Lee"),
                ("last_name", "Chan"),
                ("organisation", world.tree.ccg.id.as_str()),
            ],
        )
        .await;
    roles.assert_shows("value=\"COMMISSIONING_APPROVER\"");
    assert!(!roles.contains("value=\"COMMISSIONING_USER\""));

    // Providers: a tile of the home page; the practices in scope, single-level by default.
    browser
        .get("/portal/")
        .await
        .assert_shows("href=\"/portal/users/providers\"");
    let providers = browser.get("/portal/users/providers").await;
    assert_eq!(providers.status, StatusCode::OK);
    providers.assert_shows("Bridge Street Surgery");
    providers.assert_shows("Mill Lane Practice");
    providers.assert_shows("Single-level");
    assert!(!providers.contains("Haxby Group Practice"));
    let page = format!("/portal/users/providers/{}", world.tree.practice.id);
    providers.assert_shows(&format!("href=\"{page}\""));
    let found = browser.get("/portal/users/providers?ods=A81001").await;
    assert_eq!(found.status, StatusCode::SEE_OTHER);
    assert_eq!(found.location(), page);
    browser
        .get("/portal/users/providers?ods=15N")
        .await
        .assert_shows("Riverside CCG is not a practice");

    let view = browser.get(&page).await;
    view.assert_shows("name=\"multi_level_approval\"");
    assert!(!view.contains(" checked"));
    let ticked = browser.fill(&page, &[("multi_level_approval", "on")]).await;
    assert_eq!(ticked.status, StatusCode::SEE_OTHER, "{}", ticked.body);
    assert_eq!(ticked.location(), page);
    let view = browser.get(&page).await;
    view.assert_shows("Bridge Street Surgery now uses multi-level approval.");
    view.assert_shows("<dd id=\"approval-level\">Multi-level</dd>");
    view.assert_shows(" checked");
    assert!(
        organisation(&world, &world.tree.practice.id)
            .await
            .multi_level_approval
    );
    // Unticked: single-level again.
    let unticked = browser.fill(&page, &[]).await;
    assert_eq!(unticked.status, StatusCode::SEE_OTHER);
    assert!(
        !organisation(&world, &world.tree.practice.id)
            .await
            .multi_level_approval
    );

    // Not a practice, or not in scope: refused.
    for other in [&world.tree.ccg.id, &other_practice.id] {
        assert_eq!(
            browser
                .get(&format!("/portal/users/providers/{other}"))
                .await
                .status,
            StatusCode::FORBIDDEN
        );
    }

    // The account administrator sees the level but is not offered the box, and is refused.
    let admin = signed_in(&gateway, &world.admin).await;
    let view = admin.get(&page).await;
    assert_eq!(view.status, StatusCode::OK);
    view.assert_shows("Single-level");
    assert!(!view.contains("name=\"multi_level_approval\""));
    let csrf = view.csrf();
    let refused = admin
        .post(
            &page,
            &[("csrf", csrf.as_str()), ("multi_level_approval", "on")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        !organisation(&world, &world.tree.practice.id)
            .await
            .multi_level_approval
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_are_resent_and_cancelled() {
    let world = World::start().await;
    let email = "jo.bloggs@bridgestreet.nhs.uk";
    let invitation = world
        .suite
        .invite(
            &world.admin_session.token,
            email,
            ("Jo", "Bloggs"),
            &world.tree.practice,
            Role::PracticeUser,
        )
        .await
        .unwrap();
    let first_link = world.suite.link_token(email, subject::INVITATION).await;
    let gateway = Gateway::start(&world.suite).await;
    let admin = signed_in(&gateway, &world.admin).await;

    let list = admin.get("/portal/users/invitations").await;
    assert_eq!(list.status, StatusCode::OK);
    list.assert_shows(email);
    list.assert_shows("Jo Bloggs");
    list.assert_shows("Waiting to be accepted");
    let resend = format!("/portal/users/invitations/{}/resend", invitation.id);
    let cancel = format!("/portal/users/invitations/{}/cancel", invitation.id);
    list.assert_shows(&resend);
    list.assert_shows(&cancel);

    let csrf = list.csrf();
    let forged = admin.post(&resend, &[("csrf", "forged")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let resent = admin.post(&resend, &[("csrf", csrf.as_str())]).await;
    assert_eq!(resent.status, StatusCode::SEE_OTHER, "{}", resent.body);
    admin
        .get(resent.location())
        .await
        .assert_shows("The invitation was sent again to jo.bloggs@bridgestreet.nhs.uk");
    let mails = world.suite.mails(email, subject::INVITATION, 2).await;
    assert_eq!(mails.len(), 2);
    let new_link = world
        .suite
        .nth_link_token(email, subject::INVITATION, 2)
        .await;
    assert_ne!(new_link, first_link);
    // The old link no longer works.
    assert!(world.suite.accept_invitation(&first_link).await.is_err());

    let cancelled = admin.post(&cancel, &[("csrf", csrf.as_str())]).await;
    assert_eq!(cancelled.status, StatusCode::SEE_OTHER);
    let list = admin.get(cancelled.location()).await;
    list.assert_shows("The invitation to jo.bloggs@bridgestreet.nhs.uk was cancelled.");
    list.assert_shows("Cancelled");
    assert!(
        !list.contains(&resend),
        "no actions on a cancelled invitation"
    );
    let state = invitations(&world, email).await[0].state;
    assert_eq!(state, access_pb::InvitationState::Cancelled as i32);
    // Filtered: none waiting.
    admin
        .get("/portal/users/invitations?state=sent")
        .await
        .assert_shows("No invitations to show.");

    // Resending a cancelled invitation: refused in words.
    let refused = admin.post(&resend, &[("csrf", csrf.as_str())]).await;
    assert_eq!(refused.status, StatusCode::OK);
    refused.assert_shows("Only an invitation that is still waiting to be accepted");
    assert!(world.suite.accept_invitation(&new_link).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_disables_and_the_administrator_re_enables() {
    let world = World::start().await;
    let sam = world.practice_user().await;
    let (approver, _) = world.approver().await;
    let gateway = Gateway::start(&world.suite).await;
    let browser = signed_in(&gateway, &approver).await;

    let person = format!("/portal/users/{}", sam.account_id);
    let disable = format!("{person}/disable");
    let enable = format!("{person}/enable");
    let view = browser.get(&person).await;
    assert_eq!(view.status, StatusCode::OK);
    view.assert_shows(&format!("href=\"{disable}\""));
    assert!(!view.contains(&enable));
    assert!(!view.contains("/revoke\""), "approvers do not revoke");

    let confirm = browser.get(&disable).await;
    confirm.assert_shows("Confirm disable");
    confirm.assert_shows("Sam Patel");
    let long = "x".repeat(501);
    let too_long = browser.fill(&disable, &[("reason", long.as_str())]).await;
    assert_eq!(too_long.status, StatusCode::OK);
    too_long.assert_shows("id=\"reason-error\"");
    too_long.assert_shows("Reason must be at most 500 characters.");
    assert_eq!(
        account(&world, &sam.account_id).await.state,
        id_pb::AccountState::Active as i32
    );
    let done = browser
        .fill(&disable, &[("reason", "Left the practice")])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), person);
    let view = browser.get(&person).await;
    view.assert_shows("Sam Patel&#39;s account has been disabled.");
    view.assert_shows("<dd id=\"account-state\">Disabled</dd>");
    assert!(!view.contains(&disable));
    assert_eq!(
        account(&world, &sam.account_id).await.state,
        id_pb::AccountState::Disabled as i32
    );
    world
        .suite
        .mail(&sam.email, subject::ACCOUNT_DISABLED)
        .await;
    assert!(
        world
            .suite
            .sign_in(&sam.user_id, &sam.password)
            .await
            .is_err()
    );
    // Disabling again: the service's refusal, in words.
    let again = browser.fill(&disable, &[("reason", "")]).await;
    assert_eq!(again.status, StatusCode::OK);
    again.assert_shows("Only an active account can be disabled.");

    // The account administrator may re-enable, not disable.
    let admin = signed_in(&gateway, &world.admin).await;
    let view = admin.get(&person).await;
    view.assert_shows(&format!("href=\"{enable}\""));
    assert!(!view.contains(&disable));
    assert_eq!(admin.get(&disable).await.status, StatusCode::FORBIDDEN);
    let csrf = view.csrf();
    let refused = admin.post(&disable, &[("csrf", csrf.as_str())]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    admin.get(&enable).await.assert_shows("Confirm re-enable");
    let done = admin.fill(&enable, &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let view = admin.get(done.location()).await;
    view.assert_shows("account has been re-enabled.");
    view.assert_shows("<dd id=\"account-state\">Active</dd>");
    assert_eq!(
        account(&world, &sam.account_id).await.state,
        id_pb::AccountState::Active as i32
    );
    world.suite.mail(&sam.email, subject::ACCOUNT_ENABLED).await;
    assert!(
        world
            .suite
            .sign_in(&sam.user_id, &sam.password)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_removes_every_role_in_scope_and_keeps_the_login() {
    let world = World::start().await;
    let sam = world.practice_user().await;
    let gateway = Gateway::start(&world.suite).await;
    let admin = signed_in(&gateway, &world.admin).await;
    assert_eq!(grants(&world, &sam.account_id).await.len(), 1);

    let revoke = format!("/portal/users/{}/revoke", sam.account_id);
    let confirm = admin.get(&revoke).await;
    assert_eq!(confirm.status, StatusCode::OK);
    confirm.assert_shows("Confirm revoke");
    confirm.assert_shows("Sam Patel");
    let done = admin.fill(&revoke, &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/portal/users");
    let users = admin.get("/portal/users").await;
    users.assert_shows("1 role of Sam Patel has been removed.");
    assert!(!users.contains(&sam.user_id), "{}", users.body);
    assert!(grants(&world, &sam.account_id).await.is_empty());
    // The login is kept; the person is out of this administrator's view now.
    assert!(
        world
            .suite
            .sign_in(&sam.user_id, &sam.password)
            .await
            .is_ok()
    );
    assert_eq!(
        admin
            .get(&format!("/portal/users/{}", sam.account_id))
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // The approver is not offered Revoke and is refused it.
    let (approver, _) = world.approver().await;
    let browser = signed_in(&gateway, &approver).await;
    assert_eq!(
        browser
            .get(&format!("/portal/users/{}/revoke", world.admin.account_id))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(grants(&world, &world.admin.account_id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_practice_user_is_refused_the_users_pages() {
    let world = World::start().await;
    let sam = world.practice_user().await;
    let gateway = Gateway::start(&world.suite).await;
    let browser = signed_in(&gateway, &sam).await;

    let home = browser.get("/portal/").await;
    home.assert_shows("Practice User, Bridge Street Surgery");
    assert!(!home.contains("href=\"/portal/users\""), "not in the menu");
    assert!(!home.contains("href=\"/portal/users/providers\""));
    for page in [
        "/portal/users".to_owned(),
        "/portal/users/invite".to_owned(),
        "/portal/users/invitations".to_owned(),
        "/portal/users/providers".to_owned(),
        format!("/portal/users/providers/{}", world.tree.practice.id),
        format!("/portal/users/{}", world.admin.account_id),
        format!("/portal/users/{}/disable", world.admin.account_id),
    ] {
        let refused = browser.get(&page).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{page}");
        refused.assert_shows("You cannot use this page");
    }
    let csrf = home.csrf();
    let posted = browser
        .post(
            "/portal/users/invite",
            &[
                ("csrf", csrf.as_str()),
                ("step", "email"),
                ("email", "someone@bridgestreet.nhs.uk"),
            ],
        )
        .await;
    assert_eq!(posted.status, StatusCode::FORBIDDEN);
    // A practice manager sees the users of its own practice, and nothing else of the area.
    let manager = world
        .suite
        .onboard_by_registration(
            &world.admin_session.token,
            "nia.okafor@bridgestreet.nhs.uk",
            ("Nia", "Okafor"),
            &world.tree.practice.ods_code,
            Role::PracticeManager,
            PASSWORD,
        )
        .await;
    let browser = signed_in(&gateway, &manager).await;
    let users = browser.get("/portal/users").await;
    assert_eq!(users.status, StatusCode::OK);
    users.assert_shows(&sam.email);
    assert!(!users.contains(&world.admin.email));
    assert!(!users.contains("/portal/users/invite"), "not offered");
    assert!(!users.contains("/portal/users/providers"), "not offered");
    let person = browser
        .get(&format!("/portal/users/{}", sam.account_id))
        .await;
    assert_eq!(person.status, StatusCode::OK);
    assert!(!person.contains("/disable\"") && !person.contains("/revoke\""));
    for page in ["/portal/users/invite", "/portal/users/providers"] {
        assert_eq!(browser.get(page).await.status, StatusCode::FORBIDDEN);
    }

    // Signed out: to sign-in.
    let anonymous = gateway.browser().get("/portal/users").await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.location(), "/portal/sign-in");
}
