//! The service desk's screens over HTTP against the whole suite in-process: find an account,
//! unlock it, send a reset link, re-enable it (seeds 000, 002 §12, §14); the organisation tree
//! and Create organisation (seed 002 §1); the audit trail of every service; and that no other
//! role gets any of them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cqrs_proto::directory::v1 as dir_pb;
use cqrs_proto::identity::v1 as id_pb;
use cqrs_runtime::clock::Clock;
use cqrs_suite::world::{PASSWORD, World};
use cqrs_suite::{AuditQuery, Service, Suite, subject};
use cqrs_testkit::with_token;
use reqwest::StatusCode;

use common::{Browser, Gateway, Page};

const WRONG: &str = "Wrong#Guess4711";

/// A browser signed in as the service desk (its one grant is active at once).
async fn desk_browser(gateway: &Gateway, suite: &Suite) -> Browser {
    let browser = gateway.browser();
    let home = browser
        .sign_in(suite.desk_user_id(), Suite::DESK_PASSWORD)
        .await;
    home.assert_shows("You are working as <strong>Service Desk, ");
    home.assert_shows("href=\"/portal/desk\">Service desk</a>");
    browser
}

/// Locks the account for good: the suite locks after this many wrong passwords in a row.
async fn lock_out(suite: &Suite, login: &str) {
    for _ in 0..Suite::LOCKOUT_THRESHOLD {
        assert!(suite.sign_in(login, WRONG).await.is_err());
    }
    // Locked: even the right password does not get in.
    assert!(suite.sign_in(login, PASSWORD).await.is_err());
}

async fn account(suite: &Suite, account_id: &str) -> id_pb::Account {
    suite
        .identity()
        .get_account(with_token(
            id_pb::GetAccountRequest {
                account_id: account_id.into(),
            },
            &suite.service_token().await,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap()
}

/// The value of the page's input named `name`.
fn input_value(page: &Page, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no input {name} on the page: {}", page.body));
    let rest = &page.body[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// The `href` of the link whose text is `text`, as a browser reads it.
fn link_to(page: &Page, text: &str) -> String {
    let end = page
        .body
        .find(&format!(">{text}</a>"))
        .unwrap_or_else(|| panic!("no link {text:?} on the page: {}", page.body));
    let start = page.body[..end].rfind("href=\"").unwrap() + "href=\"".len();
    let href = &page.body[start..end];
    // Askama writes `&` in attributes as a character reference.
    href[..href.find('"').unwrap()]
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// Posts one of the account page's action forms.
async fn act(browser: &Browser, account_id: &str, action: &str) -> Page {
    let page = format!("/portal/desk?account={account_id}");
    browser
        .fill_at(
            &page,
            &format!("/portal/desk/{action}"),
            &[("account_id", account_id)],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_finds_a_locked_account_unlocks_it_and_sends_a_reset_link() {
    let world = World::start().await;
    let suite = &world.suite;
    let admin = &world.admin;
    lock_out(suite, &admin.user_id).await;
    suite.mail(&admin.email, subject::ACCOUNT_LOCKED).await;

    let gateway = Gateway::start(suite).await;
    let desk = desk_browser(&gateway, suite).await;
    let empty = desk.get("/portal/desk").await;
    assert_eq!(empty.status, StatusCode::OK);
    empty.assert_shows("<h1>Find an account</h1>");

    // Each refusal by the field, in words.
    let blank = desk.fill("/portal/desk", &[("login", "  ")]).await;
    blank.assert_shows("id=\"login-error\">Enter a User ID or an e-mail address.");
    let malformed = desk.fill("/portal/desk", &[("login", "AB12")]).await;
    malformed.assert_shows(
        "id=\"login-error\">A User ID must be three letters followed by three digits.",
    );
    malformed.assert_shows("value=\"AB12\"");
    let unknown = desk.fill("/portal/desk", &[("login", "ZZZ999")]).await;
    unknown.assert_shows("id=\"login-error\">No account has this User ID or e-mail address.");

    // Found by User ID (as typed, in any case), then shown on its own page.
    let found = desk
        .fill(
            "/portal/desk",
            &[("login", &admin.user_id.to_ascii_lowercase())],
        )
        .await;
    assert_eq!(found.status, StatusCode::SEE_OTHER, "{}", found.body);
    let page = format!("/portal/desk?account={}", admin.account_id);
    assert_eq!(found.location(), page);
    let shown = desk.get(&page).await;
    shown.assert_shows("<h2 id=\"account-heading\">Alex Turner</h2>");
    shown.assert_shows(&format!(
        "<dd id=\"account-user-id\">{}</dd>",
        admin.user_id
    ));
    shown.assert_shows("<dd id=\"account-state\">Active</dd>");
    shown.assert_shows("Locked after too many wrong passwords.");
    shown.assert_shows("Commissioning Account Administrator, Riverside CCG");
    shown.assert_shows("Unlock the account");
    shown.assert_shows("Send a password-reset link");
    assert!(!shown.contains("Re-enable the account"), "{}", shown.body);
    // By e-mail address too.
    let by_email = desk.fill("/portal/desk", &[("login", &admin.email)]).await;
    assert_eq!(by_email.location(), page);

    let unlocked = act(&desk, &admin.account_id, "unlock").await;
    assert_eq!(unlocked.status, StatusCode::SEE_OTHER, "{}", unlocked.body);
    assert_eq!(unlocked.location(), page);
    let after = desk.get(&page).await;
    after.assert_shows("The account is unlocked: Alex Turner can sign in again");
    after.assert_shows("<dd id=\"account-lock\">Not locked</dd>");
    assert!(!after.contains("Unlock the account"), "{}", after.body);
    // The trail says who did it, from where and with what, and what changed.
    let trail = suite
        .audit(
            Service::Identity,
            AuditQuery::action("UNLOCK_ACCOUNT").and_target(&admin.account_id),
        )
        .await;
    let unlock = trail.last().expect("the unlock is audited");
    assert_eq!(unlock.client_address, "127.0.0.1", "{unlock:?}");
    assert_eq!(unlock.user_agent, common::USER_AGENT, "{unlock:?}");
    assert_eq!(unlock.actor_role, "SERVICE_DESK", "{unlock:?}");
    assert!(!unlock.actor_name.is_empty(), "{unlock:?}");
    assert!(unlock.change("accounts.locked_at").is_some(), "{unlock:?}");
    // The notice is shown once.
    assert!(!desk.get(&page).await.contains("The account is unlocked"));
    // The person is told, and gets in again.
    suite.mail(&admin.email, subject::ACCOUNT_UNLOCKED).await;
    assert!(suite.sign_in(&admin.user_id, PASSWORD).await.is_ok());
    let person = gateway.browser();
    person
        .sign_in(&admin.user_id, PASSWORD)
        .await
        .assert_shows("Welcome, Alex");

    let sent = act(&desk, &admin.account_id, "reset").await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    desk.get(&page)
        .await
        .assert_shows("A password-reset link has been e-mailed");
    let mail = suite.mail(&admin.email, subject::PASSWORD_RESET).await;
    assert!(
        mail.links()[0]
            .as_str()
            .starts_with(&format!("{}password/reset?token=", Suite::BASE_URL)),
        "{mail:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_re_enables_a_disabled_account() {
    let world = World::start().await;
    let suite = &world.suite;
    let admin = &world.admin;
    // The administrator disables their own account (seed 002 §11).
    suite
        .identity()
        .disable_account(with_token(
            id_pb::DisableAccountRequest {
                account_id: admin.account_id.clone(),
                reason: String::new(),
            },
            &world.admin_session.token,
        ))
        .await
        .unwrap();
    assert!(suite.sign_in(&admin.user_id, PASSWORD).await.is_err());

    let gateway = Gateway::start(suite).await;
    let desk = desk_browser(&gateway, suite).await;
    let page = format!("/portal/desk?account={}", admin.account_id);
    let shown = desk.get(&page).await;
    shown.assert_shows("<dd id=\"account-state\">Disabled: cannot sign in anywhere</dd>");
    shown.assert_shows("Re-enable the account");
    assert!(!shown.contains("Unlock the account"), "{}", shown.body);
    assert!(
        !shown.contains("Send a password-reset link"),
        "{}",
        shown.body
    );

    // A reset link posted from a page gone stale: refused, in words, on the account's page.
    let refused = act(&desk, &admin.account_id, "reset").await;
    assert_eq!(refused.status, StatusCode::OK);
    refused.assert_shows("A reset link can only be sent to an active account");
    assert!(
        suite
            .mails_now(&admin.email, subject::PASSWORD_RESET)
            .is_empty()
    );

    let enabled = act(&desk, &admin.account_id, "enable").await;
    assert_eq!(enabled.status, StatusCode::SEE_OTHER, "{}", enabled.body);
    let after = desk.get(&page).await;
    after.assert_shows("The account is re-enabled: Alex Turner can sign in again");
    after.assert_shows("<dd id=\"account-state\">Active</dd>");
    assert!(!after.contains("Re-enable the account"), "{}", after.body);
    assert_eq!(
        account(suite, &admin.account_id).await.state,
        id_pb::AccountState::Active as i32
    );
    suite.mail(&admin.email, subject::ACCOUNT_ENABLED).await;
    assert!(suite.sign_in(&admin.user_id, PASSWORD).await.is_ok());

    // Twice: nothing to re-enable, said as such.
    let again = act(&desk, &admin.account_id, "enable").await;
    assert_eq!(again.status, StatusCode::OK);
    again.assert_shows("This account is not disabled, so there is nothing to re-enable.");
    // An account that does not exist.
    let missing = desk
        .get("/portal/desk?account=7d3c5f0e-0000-4000-8000-000000000000")
        .await;
    missing.assert_shows("That account could not be found.");
    let garbage = act(&desk, "not-an-account\r\nX: y", "enable").await;
    assert_eq!(garbage.status, StatusCode::OK);
    garbage.assert_shows("That account could not be found.");
}

async fn children(suite: &Suite, parent_id: &str) -> Vec<dir_pb::Organisation> {
    suite
        .directory()
        .list_organisations(with_token(
            dir_pb::ListOrganisationsRequest {
                parent_id: parent_id.into(),
                page_size: 100,
                page_token: String::new(),
            },
            &suite.service_token().await,
        ))
        .await
        .unwrap()
        .into_inner()
        .organisations
}

/// Posts the Create organisation form as shown (its CSRF token and request id) with `fields`.
async fn create(browser: &Browser, fields: &[(&str, &str)]) -> (Page, String) {
    let form = browser.get("/portal/desk/organisations").await;
    let csrf = form.csrf();
    let request_id = input_value(&form, "request_id");
    let mut posted = vec![("csrf", csrf.as_str()), ("request_id", request_id.as_str())];
    posted.extend_from_slice(fields);
    (
        browser.post("/portal/desk/organisations", &posted).await,
        request_id,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_creates_a_region_then_a_ccg_under_it() {
    let suite = Suite::start_registered().await;
    let gateway = Gateway::start(&suite).await;
    let desk = desk_browser(&gateway, &suite).await;
    let first = desk.get("/portal/desk/organisations").await;
    assert_eq!(first.status, StatusCode::OK);
    // The desk's own organisation is the only root so far.
    first.assert_shows("<span class=\"org-kind\">Service desk</span>");
    uuid::Uuid::parse_str(&input_value(&first, "request_id")).unwrap();

    let (region, _) = create(
        &desk,
        &[
            ("kind", "REGION"),
            ("ods_code", "y58"),
            ("name", "West Region"),
            ("parent", ""),
        ],
    )
    .await;
    assert_eq!(region.status, StatusCode::SEE_OTHER, "{}", region.body);
    assert_eq!(region.location(), "/portal/desk/organisations");
    desk.get("/portal/desk/organisations")
        .await
        .assert_shows("Region West Region (Y58) has been created.");
    let region = children(&suite, "")
        .await
        .into_iter()
        .find(|o| o.ods_code == "Y58")
        .expect("the region exists in the directory");
    assert_eq!(region.kind, dir_pb::OrganisationKind::Region as i32);

    // A bad ODS code and a CCG without its region: both named, each by its field.
    let (refused, _) = create(
        &desk,
        &[
            ("kind", "COMMISSIONING_ORGANISATION"),
            ("ods_code", "1-2"),
            ("name", "Westside CCG"),
            ("parent", ""),
        ],
    )
    .await;
    assert_eq!(refused.status, StatusCode::OK);
    refused.assert_shows(
        "id=\"ods_code-error\">ODS code must be 3 to 6 letters and digits, at least one a letter",
    );
    refused.assert_shows(
        "id=\"parent-error\">Choose the region this commissioning organisation sits under.",
    );
    refused.assert_shows("value=\"Westside CCG\"");
    refused.assert_shows("<option value=\"COMMISSIONING_ORGANISATION\" selected>");
    assert!(
        !refused.contains("COMMISSIONING_ORGANISATION sits"),
        "no codes shown"
    );
    // A practice straight under a region, a kind left out, a code already taken.
    let (practice, _) = create(
        &desk,
        &[
            ("kind", "SERVICE_PROVIDER"),
            ("ods_code", "A81001"),
            ("name", "Bridge Street Surgery"),
            ("parent", &region.id),
        ],
    )
    .await;
    practice.assert_shows(
        "id=\"parent-error\">Choose the commissioning organisation this GP practice sits under.",
    );
    practice.assert_shows(&format!("<option value=\"{}\" selected>", region.id));
    let (no_kind, _) = create(
        &desk,
        &[("kind", ""), ("ods_code", "Q99"), ("name", "Somewhere")],
    )
    .await;
    no_kind.assert_shows("id=\"kind-error\">Choose what kind of organisation this is.");
    let (taken, _) = create(
        &desk,
        &[
            ("kind", "REGION"),
            ("ods_code", "Y58"),
            ("name", "Another West"),
        ],
    )
    .await;
    taken.assert_shows("id=\"ods_code-error\">An organisation with this ODS code already exists.");
    assert!(children(&suite, &region.id).await.is_empty());

    let ccg_fields = [
        ("kind", "COMMISSIONING_ORGANISATION"),
        ("ods_code", "17N"),
        ("name", "Westside CCG"),
        ("parent", region.id.as_str()),
    ];
    let (created, request_id) = create(&desk, &ccg_fields).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let tree = desk.get("/portal/desk/organisations").await;
    tree.assert_shows("Commissioning organisation Westside CCG (17N) has been created.");
    // Nested: the CCG is in a list inside the region's item.
    let region_at = tree.body.find("West Region</span>").unwrap();
    let ccg_at = tree.body.find("Westside CCG</span>").unwrap();
    assert!(region_at < ccg_at, "{}", tree.body);
    let between = &tree.body[region_at..ccg_at];
    assert!(
        between.contains("<ul>") && !between.contains("</li>"),
        "{between}"
    );
    let ccgs = children(&suite, &region.id).await;
    assert_eq!(ccgs.len(), 1);
    assert_eq!(ccgs[0].ods_code, "17N");
    assert_eq!(ccgs[0].parent_id, region.id);

    // The same form sent twice (a double click, a retry) creates nothing more.
    let csrf = tree.csrf();
    let mut again = vec![("csrf", csrf.as_str()), ("request_id", request_id.as_str())];
    again.extend_from_slice(&ccg_fields);
    let repeated = desk.post("/portal/desk/organisations", &again).await;
    assert_eq!(repeated.status, StatusCode::SEE_OTHER, "{}", repeated.body);
    assert_eq!(children(&suite, &region.id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_lists_the_unlock_with_the_filters_applied() {
    let world = World::start().await;
    let suite = &world.suite;
    let admin = &world.admin;
    lock_out(suite, &admin.user_id).await;
    suite
        .identity()
        .unlock_account(with_token(
            id_pb::UnlockAccountRequest {
                account_id: admin.account_id.clone(),
            },
            &world.desk.token,
        ))
        .await
        .unwrap();

    let gateway = Gateway::start(suite).await;
    let desk = desk_browser(&gateway, suite).await;
    let all = desk.get("/portal/desk/audit").await;
    assert_eq!(all.status, StatusCode::OK);
    // Every service's trail at once, each event with its service, newest first.
    all.assert_shows("<option value=\"all\" selected>");
    all.assert_shows("<span class=\"code\">SIGN_IN</span>");
    all.assert_shows("<span class=\"code\">CREATE_ORGANISATION</span>");
    all.assert_shows("<td>directory</td>");
    all.assert_shows("<td>identity</td>");
    // What changed, from what to what: the unlock cleared the lock.
    let page_of_all = desk.get("/portal/desk/audit?action=UNLOCK_ACCOUNT").await;
    page_of_all
        .assert_shows("<dt>Accounts lock reason</dt><dd>TOO_MANY_FAILED_ATTEMPTS → (none)</dd>");

    let today = suite.clock.now().date_naive();
    let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    let unlocks = desk
        .get(&format!(
            "/portal/desk/audit?service=identity&action=unlock+account&target={}&actor={}&from={}&to={}",
            admin.user_id.to_ascii_lowercase(),
            suite.desk_user_id(),
            day(today.pred_opt().unwrap()),
            day(today),
        ))
        .await;
    assert_eq!(unlocks.status, StatusCode::OK, "{}", unlocks.body);
    assert_eq!(
        unlocks
            .body
            .matches("<span class=\"code\">UNLOCK_ACCOUNT</span>")
            .count(),
        1,
        "{}",
        unlocks.body
    );
    assert!(!unlocks.contains("<span class=\"code\">SIGN_IN</span>"));
    unlocks.assert_shows("Unlock account");
    unlocks.assert_shows(&format!("Account: Alex Turner ({})", admin.user_id));
    unlocks.assert_shows(&format!("({}), as Service desk</td>", suite.desk_user_id()));
    unlocks.assert_shows("<dt>Was locked</dt><dd>true</dd>");
    // The filters stay in the form.
    unlocks.assert_shows("value=\"unlock account\"");

    // Each filter narrows: another actor, a later day, another service.
    let by_admin = desk
        .get(&format!(
            "/portal/desk/audit?action=UNLOCK_ACCOUNT&actor={}",
            admin.email
        ))
        .await;
    by_admin.assert_shows("No events match these filters.");
    let tomorrow = desk
        .get(&format!(
            "/portal/desk/audit?action=UNLOCK_ACCOUNT&from={}",
            day(today.succ_opt().unwrap())
        ))
        .await;
    tomorrow.assert_shows("No events match these filters.");
    let directory = desk
        .get("/portal/desk/audit?service=directory&action=CREATE_ORGANISATION")
        .await;
    directory.assert_shows("<option value=\"directory\" selected>");
    for ods_code in ["Y56", "15N", "A81001", "A81002"] {
        directory.assert_shows(&format!("<dt>ODS code</dt><dd>{ods_code}</dd>"));
    }
    // The organisation is named, not shown by its id.
    directory.assert_shows("Organisation: Bridge Street Surgery (A81001)");
    assert!(!directory.contains(&format!("Organisation: {}", world.tree.practice.id)));
    assert!(!directory.contains("UNLOCK_ACCOUNT</span>"));

    // Filters that cannot be used are named by their field.
    let bad = desk
        .get("/portal/desk/audit?from=31/12/2024&target=ZZZ999&to=2024-01-01")
        .await;
    bad.assert_shows("id=\"from-error\">Enter the date as year-month-day");
    bad.assert_shows("id=\"target-error\">No account has this User ID or e-mail address.");
    let backwards = desk
        .get("/portal/desk/audit?from=2025-02-02&to=2025-02-01")
        .await;
    backwards.assert_shows("id=\"to-error\">The end date must be on or after the start date.");

    // A page at a time, newest first.
    let first = desk
        .get("/portal/desk/audit?service=identity&size=10")
        .await;
    assert_eq!(
        first.body.matches("<span class=\"code\">").count(),
        10,
        "{}",
        first.body
    );
    assert!(!first.contains(">First page</a>"));
    let next = link_to(&first, "Next page");
    assert!(next.contains("page="), "{next}");
    assert!(next.contains("size=10"), "{next}");
    let second = desk.get(&next).await;
    assert_eq!(second.status, StatusCode::OK);
    second.assert_shows(">First page</a>");
    assert!(second.body.matches("<span class=\"code\">").count() >= 1);
    // A page token not from the trail.
    let forged = desk
        .get("/portal/desk/audit?service=identity&page=not-a-token")
        .await;
    forged.assert_shows("That page of the trail can no longer be shown.");

    // All services, a page at a time: the second page starts before the first one's end.
    let first = desk.get("/portal/desk/audit?size=10").await;
    assert_eq!(first.body.matches("<span class=\"code\">").count(), 10);
    let next = link_to(&first, "Next page");
    assert!(next.contains("service=all"), "{next}");
    let second = desk.get(&next).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert!(second.body.matches("<span class=\"code\">").count() >= 1);
    let forged = desk
        .get("/portal/desk/audit?service=all&page=yesterday")
        .await;
    forged.assert_shows("That page of the trail can no longer be shown.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_other_role_gets_the_desk_pages() {
    let world = World::start().await;
    let suite = &world.suite;
    let gateway = Gateway::start(suite).await;

    // Not signed in: to sign-in.
    let visitor = gateway.browser();
    let asked = visitor.get("/portal/desk").await;
    assert_eq!(asked.status, StatusCode::SEE_OTHER);
    assert_eq!(asked.location(), "/portal/sign-in");

    // A Commissioning Account Administrator: not offered, and refused if asked.
    let admin = gateway.browser();
    let home = admin.sign_in(&world.admin.user_id, PASSWORD).await;
    home.assert_shows("You are working as <strong>Commissioning Account Administrator");
    assert!(!home.contains("/portal/desk"), "{}", home.body);
    let account = format!("/portal/desk?account={}", suite.desk_account_id());
    for page in [
        "/portal/desk",
        account.as_str(),
        "/portal/desk/organisations",
        "/portal/desk/audit",
        "/portal/desk/audit?service=identity&action=SIGN_IN",
    ] {
        let refused = admin.get(page).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{page}");
        refused.assert_shows("You cannot use this page");
    }
    let csrf = admin.get("/portal/profile").await.csrf();
    let roots = children(suite, "").await.len();
    let posts: [(&str, Vec<(&str, &str)>); 5] = [
        ("/portal/desk", vec![("login", suite.desk_user_id())]),
        (
            "/portal/desk/unlock",
            vec![("account_id", world.admin.account_id.as_str())],
        ),
        (
            "/portal/desk/reset",
            vec![("account_id", world.admin.account_id.as_str())],
        ),
        (
            "/portal/desk/enable",
            vec![("account_id", world.admin.account_id.as_str())],
        ),
        (
            "/portal/desk/organisations",
            vec![
                ("request_id", "0b5f1b8e-3c47-4b1a-9a43-2f6d2c1e7a10"),
                ("kind", "REGION"),
                ("ods_code", "Y99"),
                ("name", "Rogue Region"),
            ],
        ),
    ];
    for (action, fields) in posts {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend(fields);
        let refused = admin.post(action, &form).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{action}");
        refused.assert_shows("You cannot use this page");
    }
    // Nothing happened: no organisation, no reset link.
    assert_eq!(children(suite, "").await.len(), roots);
    assert!(
        suite
            .mails_now(&world.admin.email, subject::PASSWORD_RESET)
            .is_empty()
    );
}
