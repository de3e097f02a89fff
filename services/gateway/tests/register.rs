//! Self-registration and the person's own profile pages (Available roles with access requests
//! and Withdraw, Request access, notification settings, disabling one's own account), over
//! HTTP against the whole suite in-process; every effect is checked in the services.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cqrs_proto::access::v1 as access_pb;
use cqrs_proto::common::v1::Role;
use cqrs_proto::notifications::v1 as notifications_pb;
use cqrs_suite::world::{PASSWORD, World};
use cqrs_suite::{Suite, subject};
use cqrs_testkit::with_token;
use reqwest::StatusCode;

use common::{Browser, Gateway, Page};

/// The value of the first input named `name` on the page.
fn value_of(page: &Page, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no input {name} on the page: {}", page.body));
    let rest = &page.body[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

fn role(role: Role) -> String {
    (role as i32).to_string()
}

async fn registrations(suite: &Suite, token: &str) -> Vec<access_pb::Registration> {
    suite
        .access()
        .list_registrations(with_token(
            access_pb::ListRegistrationsRequest {
                organisation_id: String::new(),
                state: access_pb::RegistrationState::Unspecified as i32,
                page_size: 100,
                page_token: String::new(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .registrations
}

async fn my_requests(suite: &Suite, login: &str) -> Vec<access_pb::AccessRequest> {
    let token = suite.sign_in(login, PASSWORD).await.unwrap().access_token;
    suite
        .access()
        .list_my_access_requests(with_token(
            access_pb::ListMyAccessRequestsRequest {
                state: access_pb::AccessRequestState::Unspecified as i32,
                page_size: 100,
                page_token: String::new(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .access_requests
}

/// Posts the registration form of `page` with `fields` (its CSRF token and request id too).
async fn register(browser: &Browser, page: &Page, fields: &[(&str, &str)]) -> Page {
    let csrf = page.csrf();
    let request_id = value_of(page, "request_id");
    let mut form = vec![("csrf", csrf.as_str()), ("request_id", request_id.as_str())];
    form.extend_from_slice(fields);
    browser.post("/portal/register", &form).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_registers_by_search_or_ods_code_and_the_administrators_are_told() {
    let world = World::start().await;
    let suite = &world.suite;
    let gateway = Gateway::start(suite).await;
    let browser = gateway.browser();

    let form = browser.get("/portal/register").await;
    assert_eq!(form.status, StatusCode::OK);
    form.assert_shows("Register for a CQRS Local account");
    form.assert_shows("<label for=\"q\">Organisation name or ODS code</label>");
    // Every role but the service desk's can be asked for.
    form.assert_shows(&format!(
        "<option value=\"{}\">Practice User</option>",
        role(Role::PracticeUser)
    ));
    form.assert_shows(&format!(
        "<option value=\"{}\">Commissioning Approver</option>",
        role(Role::CommissioningApprover)
    ));
    assert!(!form.contains(&format!("<option value=\"{}\"", role(Role::ServiceDesk))));

    // The search (no script: a GET form) lists the matches as choices.
    let found = browser.get("/portal/register?q=bridge").await;
    found.assert_shows(&format!(
        "name=\"organisation_id\" value=\"{}\"",
        world.tree.practice.id
    ));
    found.assert_shows("Bridge Street Surgery (A81001), GP practice");
    assert!(!found.contains("Mill Lane Practice"));
    // By exact ODS code too; a service desk is never offered.
    browser
        .get("/portal/register?q=A81002")
        .await
        .assert_shows("Mill Lane Practice (A81002)");
    browser
        .get("/portal/register?q=CQRS")
        .await
        .assert_shows("No organisation matches");
    let short = browser.get("/portal/register?q=B").await;
    short.assert_shows("id=\"q-error\"");
    short.assert_shows("Organisation name or ODS code must be at least 2 characters.");

    // Chosen from the matches; sent twice (a double click) it is one registration.
    let fields = [
        ("q", "bridge"),
        ("email", "nina.okafor@bridgestreet.nhs.uk"),
        ("organisation_id", world.tree.practice.id.as_str()),
        ("ods_code", ""),
        ("role", &role(Role::PracticeUser)),
        ("first_name", "Nina"),
        ("last_name", "Okafor"),
    ];
    let done = register(&browser, &found, &fields).await;
    assert_eq!(done.status, StatusCode::OK);
    done.assert_shows("Your request is under review");
    let again = register(&browser, &found, &fields).await;
    assert_eq!(again.body, done.body);

    // By ODS code typed in.
    let form = browser.get("/portal/register").await;
    let by_code = register(
        &browser,
        &form,
        &[
            ("email", "omar.haddad@millane.nhs.uk"),
            ("ods_code", "a81002"),
            ("role", &role(Role::PracticeManager)),
            ("first_name", "Omar"),
            ("last_name", "Haddad"),
        ],
    )
    .await;
    assert_eq!(by_code.body, done.body);

    // An address that already has an account reads exactly the same.
    let form = browser.get("/portal/register").await;
    let known = register(
        &browser,
        &form,
        &[
            ("email", world.admin.email.as_str()),
            ("ods_code", "15N"),
            ("role", &role(Role::CommissioningUser)),
            ("first_name", "Alex"),
            ("last_name", "Turner"),
        ],
    )
    .await;
    assert_eq!(known.body, done.body);

    // The administrator of the CCG is told, and lists them pending.
    suite
        .mails(&world.admin.email, subject::REGISTRATION_RECEIVED, 3)
        .await;
    let listed = registrations(suite, &world.admin_session.token).await;
    let nina: Vec<_> = listed
        .iter()
        .filter(|r| r.email == "nina.okafor@bridgestreet.nhs.uk")
        .collect();
    assert_eq!(nina.len(), 1, "one registration for a double submit");
    assert_eq!(nina[0].organisation_id, world.tree.practice.id);
    assert_eq!(nina[0].role, Role::PracticeUser as i32);
    assert_eq!(nina[0].state, access_pb::RegistrationState::Pending as i32);
    assert_eq!(
        (nina[0].first_name.as_str(), nina[0].last_name.as_str()),
        ("Nina", "Okafor")
    );
    let omar = listed
        .iter()
        .find(|r| r.email == "omar.haddad@millane.nhs.uk")
        .unwrap();
    assert_eq!(omar.organisation_id, world.tree.second_practice.id);
    assert_eq!(omar.role, Role::PracticeManager as i32);
    assert_eq!(omar.state, access_pb::RegistrationState::Pending as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_errors_are_shown_by_their_fields_and_register_nothing() {
    let world = World::start().await;
    let suite = &world.suite;
    let gateway = Gateway::start(suite).await;
    let browser = gateway.browser();
    let form = browser.get("/portal/register").await;

    let empty = register(&browser, &form, &[]).await;
    assert_eq!(empty.status, StatusCode::OK);
    for field in ["email", "organisation", "role", "first_name", "last_name"] {
        empty.assert_shows(&format!("id=\"{field}-error\""));
    }
    empty.assert_shows("Choose your organisation from the search results, or enter its ODS code.");

    let filled = |email: &str, ods: &str, role_value: String| {
        vec![
            ("email", email.to_owned()),
            ("ods_code", ods.to_owned()),
            ("role", role_value),
            ("first_name", "Nina".to_owned()),
            ("last_name", "Okafor".to_owned()),
        ]
    };
    let send = async |fields: Vec<(&str, String)>| {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        register(&browser, &form, &fields).await
    };

    // A generic mailbox is refused by the e-mail field, the other answers kept.
    let generic = send(filled(
        "reception@bridgestreet.nhs.uk",
        "A81001",
        role(Role::PracticeUser),
    ))
    .await;
    generic.assert_shows("id=\"email-error\"");
    generic.assert_shows("Use your own e-mail address: generic or shared mailboxes");
    generic.assert_shows("value=\"reception@bridgestreet.nhs.uk\"");
    generic.assert_shows("value=\"Nina\"");
    generic.assert_shows(&format!(
        "<option value=\"{}\" selected>Practice User</option>",
        role(Role::PracticeUser)
    ));
    assert!(!generic.contains("GENERIC_EMAIL_NOT_PERMITTED"));

    // An unknown ODS code, and one that cannot be one, by the ODS code field.
    let unknown = send(filled(
        "nina.okafor@bridgestreet.nhs.uk",
        "ZZ999",
        role(Role::PracticeUser),
    ))
    .await;
    unknown.assert_shows("id=\"ods_code-error\"");
    unknown.assert_shows("No organisation has this ODS code.");
    let malformed = send(filled(
        "nina.okafor@bridgestreet.nhs.uk",
        "1",
        role(Role::PracticeUser),
    ))
    .await;
    malformed.assert_shows("id=\"ods_code-error\"");
    malformed.assert_shows("ODS code must be 3 to 6 letters and digits");

    // A role the organisation cannot hold, by the role field.
    let wrong_role = send(filled(
        "nina.okafor@bridgestreet.nhs.uk",
        "A81001",
        role(Role::CommissioningUser),
    ))
    .await;
    wrong_role.assert_shows("id=\"role-error\"");
    wrong_role.assert_shows("This role cannot be held at the organisation you chose");

    // The service desk's role cannot be asked for even when posted by hand.
    let desk_role = send(filled(
        "nina.okafor@bridgestreet.nhs.uk",
        "A81001",
        role(Role::ServiceDesk),
    ))
    .await;
    desk_role.assert_shows("id=\"role-error\"");

    // A choice from the list and a code typed in at once.
    let mut both = filled(
        "nina.okafor@bridgestreet.nhs.uk",
        "A81001",
        role(Role::PracticeUser),
    );
    both.push(("organisation_id", world.tree.second_practice.id.clone()));
    both.push(("q", "mill".to_owned()));
    let both = send(both).await;
    both.assert_shows("id=\"organisation-error\"");
    // The matches of the search are shown again, the choice kept.
    both.assert_shows(&format!(
        "value=\"{}\" checked",
        world.tree.second_practice.id
    ));

    assert!(
        registrations(suite, &world.admin_session.token)
            .await
            .is_empty(),
        "nothing was registered"
    );
    assert!(
        suite
            .mails_now(&world.admin.email, subject::REGISTRATION_RECEIVED)
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_requests_access_to_another_practice_then_withdraws_it() {
    let world = World::start().await;
    let suite = &world.suite;
    let sam = world.practice_user().await;
    let gateway = Gateway::start(suite).await;
    let browser = gateway.browser();
    browser.sign_in(&sam.user_id, &sam.password).await;

    let access = browser.get("/portal/profile/access").await;
    assert_eq!(access.status, StatusCode::OK);
    access.assert_shows("Practice User, Bridge Street Surgery");
    access.assert_shows("You have not asked for access to another organisation.");
    access.assert_shows("href=\"/portal/profile/access/new\"");

    // Search, choose, Next.
    let found = browser.get("/portal/profile/access/new?q=mill").await;
    found.assert_shows("Mill Lane Practice (A81002), GP practice");
    found.assert_shows("action=\"/portal/profile/access/new/details\"");
    let no_choice = browser
        .get("/portal/profile/access/new/details?q=mill")
        .await;
    no_choice.assert_shows("id=\"organisation-error\"");
    no_choice.assert_shows("Mill Lane Practice (A81002)");

    // Only the roles a practice holds, less those one holds there already.
    let own = browser
        .get(&format!(
            "/portal/profile/access/new/details?organisation_id={}",
            world.tree.practice.id
        ))
        .await;
    own.assert_shows(&format!(
        "<option value=\"{}\"",
        role(Role::PracticeManager)
    ));
    assert!(!own.contains(&format!("<option value=\"{}\"", role(Role::PracticeUser))));
    let details_path = format!(
        "/portal/profile/access/new/details?organisation_id={}",
        world.tree.second_practice.id
    );
    let details = browser.get(&details_path).await;
    details.assert_shows("Request access to Mill Lane Practice");
    details.assert_shows(&format!("<option value=\"{}\"", role(Role::PracticeUser)));
    assert!(!details.contains(&format!(
        "<option value=\"{}\"",
        role(Role::CommissioningUser)
    )));

    let mill = world.tree.second_practice.id.as_str();
    let manager = role(Role::PracticeManager);
    let reason = "I manage Mill Lane Practice as well.";
    let missing = browser
        .fill_at(
            &details_path,
            "/portal/profile/access/new/confirm",
            &[("organisation_id", mill), ("role", ""), ("reason", " ")],
        )
        .await;
    missing.assert_shows("id=\"role-error\"");
    missing.assert_shows("id=\"reason-error\"");

    let confirm = browser
        .fill_at(
            &details_path,
            "/portal/profile/access/new/confirm",
            &[
                ("organisation_id", mill),
                ("role", &manager),
                ("reason", reason),
            ],
        )
        .await;
    confirm.assert_shows("Check your request");
    confirm.assert_shows("Mill Lane Practice (A81002)");
    confirm.assert_shows("<dd>Practice Manager</dd>");
    confirm.assert_shows(reason);
    let request_id = value_of(&confirm, "request_id");
    let csrf = confirm.csrf();
    let sent_form = [
        ("csrf", csrf.as_str()),
        ("request_id", request_id.as_str()),
        ("organisation_id", mill),
        ("role", manager.as_str()),
        ("reason", reason),
    ];

    // A role the practice cannot hold (posted by hand: it is not offered), by the role field.
    let commissioning = role(Role::CommissioningUser);
    let misplaced = browser
        .post(
            "/portal/profile/access/new/send",
            &[
                ("csrf", csrf.as_str()),
                ("request_id", "7f1d5a52-3d65-4c1e-9a43-7f8a3c1b2e01"),
                ("organisation_id", mill),
                ("role", commissioning.as_str()),
                ("reason", reason),
            ],
        )
        .await;
    assert_eq!(misplaced.status, StatusCode::OK);
    misplaced.assert_shows("id=\"role-error\"");
    misplaced.assert_shows("This role cannot be held at the organisation you chose");
    assert!(!misplaced.contains("SERVICE_PROVIDER"));
    assert!(my_requests(suite, &sam.user_id).await.is_empty());

    // Change goes back to the form as filled in.
    let change = browser
        .post("/portal/profile/access/new/details", &sent_form)
        .await;
    change.assert_shows(&format!("<option value=\"{manager}\" selected>"));
    change.assert_shows(&format!(">{reason}</textarea>"));

    // Send (twice, as a double click does): one request, pending.
    let sent = browser
        .post("/portal/profile/access/new/send", &sent_form)
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    assert_eq!(sent.location(), "/portal/profile/access");
    let again = browser
        .post("/portal/profile/access/new/send", &sent_form)
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    let listed = browser.get("/portal/profile/access").await;
    listed.assert_shows("has been sent");
    listed.assert_shows("Mill Lane Practice");
    listed.assert_shows("<strong>Pending</strong>");
    listed.assert_shows(reason);
    let requests = my_requests(suite, &sam.user_id).await;
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let request = &requests[0];
    assert_eq!(request.organisation_id, world.tree.second_practice.id);
    assert_eq!(request.role, Role::PracticeManager as i32);
    assert_eq!(request.reason, reason);
    assert_eq!(request.state, access_pb::AccessRequestState::Pending as i32);
    listed.assert_shows(&format!(
        "name=\"access_request_id\" value=\"{}\"",
        request.id
    ));

    // The same role there again, as a new request: already pending, said so.
    let confirm = browser
        .fill_at(
            &details_path,
            "/portal/profile/access/new/confirm",
            &[
                ("organisation_id", mill),
                ("role", &manager),
                ("reason", reason),
            ],
        )
        .await;
    let second_id = value_of(&confirm, "request_id");
    assert_ne!(second_id, request_id);
    let pending = browser
        .post(
            "/portal/profile/access/new/send",
            &[
                ("csrf", csrf.as_str()),
                ("request_id", second_id.as_str()),
                ("organisation_id", mill),
                ("role", manager.as_str()),
                ("reason", reason),
            ],
        )
        .await;
    assert_eq!(pending.status, StatusCode::OK);
    pending.assert_shows("You have already asked for this role at this organisation");

    // Someone else cannot withdraw it.
    let other = gateway.browser();
    other.sign_in(&world.admin.user_id, PASSWORD).await;
    let refused = other
        .fill_at(
            "/portal/profile/access",
            "/portal/profile/access/withdraw",
            &[("access_request_id", &request.id)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // Withdraw.
    let withdrawn = browser
        .fill_at(
            "/portal/profile/access",
            "/portal/profile/access/withdraw",
            &[("access_request_id", &request.id)],
        )
        .await;
    assert_eq!(
        withdrawn.status,
        StatusCode::SEE_OTHER,
        "{}",
        withdrawn.body
    );
    let listed = browser.get(withdrawn.location()).await;
    listed
        .assert_shows("Your request for Practice Manager, Mill Lane Practice has been withdrawn.");
    listed.assert_shows("<strong>Withdrawn</strong>");
    assert!(!listed.contains("name=\"access_request_id\""));
    let requests = my_requests(suite, &sam.user_id).await;
    assert_eq!(
        requests[0].state,
        access_pb::AccessRequestState::Withdrawn as i32
    );
    let twice = browser
        .fill_at(
            "/portal/profile/access",
            "/portal/profile/access/withdraw",
            &[("access_request_id", &request.id)],
        )
        .await;
    assert_eq!(twice.status, StatusCode::OK);
    twice.assert_shows("already been decided or withdrawn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_settings_are_saved_in_the_notification_service() {
    let world = World::start().await;
    let suite = &world.suite;
    let gateway = Gateway::start(suite).await;
    let browser = gateway.browser();
    browser.sign_in(&world.admin.user_id, PASSWORD).await;
    let preference = || async {
        suite
            .notifications()
            .get_preferences(with_token(
                notifications_pb::GetPreferencesRequest {},
                &world.admin_session.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .preferences
            .is_none_or(|p| p.email_enabled)
    };

    let page = browser.get("/portal/profile/notifications").await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_shows("<label for=\"email_enabled\">Send me notifications by e-mail</label>");
    page.assert_shows("checked>");
    assert!(preference().await);

    // Unticked: the box posts nothing.
    let saved = browser.fill("/portal/profile/notifications", &[]).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER);
    assert_eq!(saved.location(), "/portal/profile/notifications");
    let page = browser.get(saved.location()).await;
    page.assert_shows("Your notification settings have been saved");
    assert!(!page.contains("checked>"));
    assert!(!preference().await);

    let saved = browser
        .fill("/portal/profile/notifications", &[("email_enabled", "on")])
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER);
    browser
        .get("/portal/profile/notifications")
        .await
        .assert_shows("checked>");
    assert!(preference().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_ones_own_account_ends_the_web_session_and_sign_in() {
    let world = World::start().await;
    let suite = &world.suite;
    let sam = world.practice_user().await;
    let gateway = Gateway::start(suite).await;
    let browser = gateway.browser();
    browser.sign_in(&sam.user_id, &sam.password).await;

    let page = browser.get("/portal/profile/disable").await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_shows("Disable your account");
    page.assert_shows("Confirm disable");

    let long = "x".repeat(501);
    let too_long = browser
        .fill("/portal/profile/disable", &[("reason", &long)])
        .await;
    assert_eq!(too_long.status, StatusCode::OK);
    too_long.assert_shows("id=\"reason-error\"");
    too_long.assert_shows("Reason must be at most 500 characters.");
    assert!(suite.sign_in(&sam.user_id, &sam.password).await.is_ok());

    let disabled = browser
        .fill(
            "/portal/profile/disable",
            &[("reason", "I have left the practice")],
        )
        .await;
    assert_eq!(disabled.status, StatusCode::OK);
    disabled.assert_shows("Your account has been disabled");
    disabled.assert_shows("re-enable");
    assert!(!disabled.contains("Sign out"), "no signed-in header");
    let cookie = disabled.headers["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("Max-Age=0"), "{cookie}");

    // The web session is gone, and signing in again fails.
    let profile = browser.get("/portal/profile").await;
    assert_eq!(profile.status, StatusCode::SEE_OTHER);
    assert_eq!(profile.location(), "/portal/sign-in");
    let again = browser
        .fill(
            "/portal/sign-in",
            &[("login", &sam.user_id), ("password", &sam.password)],
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    again.assert_shows("cannot be used");
    assert!(suite.sign_in(&sam.user_id, &sam.password).await.is_err());
    suite.mail(&sam.email, subject::ACCOUNT_DISABLED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_pages_need_a_signed_in_person() {
    let world = World::start().await;
    let gateway = Gateway::start(&world.suite).await;
    let browser = gateway.browser();
    let details = format!(
        "/portal/profile/access/new/details?organisation_id={}",
        world.tree.practice.id
    );
    for page in [
        "/portal/profile/access",
        "/portal/profile/access/new",
        "/portal/profile/access/new?q=mill",
        details.as_str(),
        "/portal/profile/notifications",
        "/portal/profile/disable",
    ] {
        let answer = browser.get(page).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{page}");
        assert_eq!(answer.location(), "/portal/sign-in", "{page}");
    }
    // A form posted without a session (so without its token) is refused, and does nothing.
    let csrf = browser.get("/portal/register").await.csrf();
    for action in [
        "/portal/profile/access/withdraw",
        "/portal/profile/access/new/send",
        "/portal/profile/notifications",
        "/portal/profile/disable",
    ] {
        let forged = gateway
            .browser()
            .post(action, &[("csrf", csrf.as_str())])
            .await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN, "{action}");
        // With the session's token but nobody signed in: off to sign in.
        let unsigned = browser.post(action, &[("csrf", csrf.as_str())]).await;
        assert_eq!(unsigned.status, StatusCode::SEE_OTHER, "{action}");
        assert_eq!(unsigned.location(), "/portal/sign-in", "{action}");
    }
    assert!(
        world
            .suite
            .sign_in(&world.admin.user_id, PASSWORD)
            .await
            .is_ok(),
        "nobody was disabled"
    );
}
