//! The gateway's pages over HTTP against the whole suite in-process: every mailed link, sign
//! in and out, the profile, and what every response and every form must carry (security
//! headers, CSRF, the origin check).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cqrs_proto::common::v1::Role;
use cqrs_proto::directory::v1::OrganisationKind;
use cqrs_suite::{Service, Suite, subject};
use reqwest::StatusCode;

use common::{Gateway, on_gateway, registration_link};

const WEAK: &str = "short";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_registers_from_its_mailed_link_and_signs_in() {
    let suite = Suite::start().await;
    let gateway = Gateway::start(&suite).await;
    let link = registration_link(&suite).await;
    assert!(
        link.starts_with("/portal/register/complete?token="),
        "{link}"
    );

    // A mail scanner fetching the link consumes nothing: the link still works afterwards.
    let scanner = gateway.browser();
    let fetched = scanner.get(&link).await;
    assert_eq!(fetched.status, StatusCode::SEE_OTHER);
    assert_eq!(fetched.location(), "/portal/register/complete");
    assert!(!fetched.location().contains("token"));
    let scanned = scanner.get("/portal/register/complete").await;
    scanned.assert_shows("Password policy");
    let scanner_csrf = scanned.csrf();

    let browser = gateway.browser();
    let moved = browser.get(&link).await;
    assert_eq!(moved.location(), "/portal/register/complete");
    let account = suite
        .identity()
        .lookup_account(cqrs_testkit::with_token(
            cqrs_proto::identity::v1::LookupAccountRequest {
                key: Some(
                    cqrs_proto::identity::v1::lookup_account_request::Key::Email(
                        Suite::DESK_EMAIL.into(),
                    ),
                ),
            },
            &suite.service_token().await,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    let form = browser.get("/portal/register/complete").await;
    assert_eq!(form.status, StatusCode::OK);
    form.assert_shows("Security information");
    form.assert_shows("Password must be 8-32 characters long");
    // The User ID is shown before the password is made, as on seed 001's screen.
    form.assert_shows(&format!(
        "Your User ID is <strong>{}</strong>",
        account.user_id
    ));

    // Confirmation first, then every failed rule of the policy, each by the password field.
    let mismatch = browser
        .fill(
            "/portal/register/complete",
            &[
                ("password", Suite::DESK_PASSWORD),
                ("confirm", "something else"),
            ],
        )
        .await;
    mismatch.assert_shows("id=\"confirm-error\"");
    mismatch.assert_shows("The two passwords are not the same.");
    let weak = browser
        .fill(
            "/portal/register/complete",
            &[("password", WEAK), ("confirm", WEAK)],
        )
        .await;
    assert_eq!(weak.status, StatusCode::OK);
    weak.assert_shows("id=\"password-error\"");
    weak.assert_shows("Password must be at least 8 characters.");
    assert!(
        !weak.contains("TOO_SHORT"),
        "no rule codes shown: {}",
        weak.body
    );

    let done = browser
        .fill(
            "/portal/register/complete",
            &[
                ("password", Suite::DESK_PASSWORD),
                ("confirm", Suite::DESK_PASSWORD),
            ],
        )
        .await;
    done.assert_shows("Registration complete");
    done.assert_shows(&format!(
        "<strong id=\"user-id\">{}</strong>",
        account.user_id
    ));

    // The link is spent: the scanner's session (holding the same token and a form shown
    // before) is told so when it posts.
    let spent = scanner
        .post(
            "/portal/register/complete",
            &[
                ("csrf", scanner_csrf.as_str()),
                ("password", Suite::DESK_PASSWORD),
                ("confirm", Suite::DESK_PASSWORD),
            ],
        )
        .await;
    spent.assert_shows("This link cannot be used");
    // Opened again later, the spent link says so before anything is typed.
    let late = gateway.browser();
    late.get(&link).await;
    late.get("/portal/register/complete")
        .await
        .assert_shows("This link cannot be used");

    let home = browser
        .sign_in(&account.user_id, Suite::DESK_PASSWORD)
        .await;
    home.assert_shows("Welcome, ");
    // One grant: acting through it at once, shown in the header's switcher.
    home.assert_shows("You are working as <strong>Service Desk, ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    let suite = Suite::builder()
        .only(&[Service::Identity])
        .without_bootstrap()
        .start()
        .await;
    let gateway = Gateway::start(&suite).await;
    let browser = gateway.browser();
    let pages = [
        browser.get("/portal/sign-in").await,
        browser.get("/portal/static/gateway.css").await,
        browser.get("/portal/profile").await,
        browser.get("/portal/no-such-page").await,
        browser.post("/portal/sign-in", &[("csrf", "forged")]).await,
    ];
    for page in &pages {
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(page.headers["referrer-policy"], "no-referrer");
        assert_eq!(page.headers["x-content-type-options"], "nosniff");
        assert_eq!(page.headers["x-frame-options"], "DENY");
        // Served over http here: no HSTS.
        assert!(page.headers.get("strict-transport-security").is_none());
    }
    // A signed-in page without a session goes to sign-in.
    assert_eq!(pages[2].status, StatusCode::SEE_OTHER);
    assert_eq!(pages[2].location(), "/portal/sign-in");
    assert_eq!(pages[3].status, StatusCode::NOT_FOUND);
    assert_eq!(pages[4].status, StatusCode::FORBIDDEN);
    // The session cookie: HttpOnly, SameSite=Lax, nothing readable by script.
    let cookie = pages[0].headers["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("cqrs="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(!pages[0].body.contains("<script"), "no script on the pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_the_session_token_or_from_another_origin_are_refused() {
    let suite = Suite::builder()
        .only(&[Service::Identity])
        .without_bootstrap()
        .start()
        .await;
    let gateway = Gateway::start(&suite).await;
    let browser = gateway.browser();
    let csrf = browser.get("/portal/password/forgotten").await.csrf();

    let forged = browser
        .post(
            "/portal/password/forgotten",
            &[("csrf", "forged"), ("value", "ABC123")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    forged.assert_shows("This form has expired");
    let missing = browser
        .post("/portal/password/forgotten", &[("value", "ABC123")])
        .await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);

    // The right token from another site's page.
    let cross_site = browser
        .client
        .post(browser.url("/portal/password/forgotten"))
        .header("origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str()), ("value", "ABC123")])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let cross_fetch = browser
        .client
        .post(browser.url("/portal/password/forgotten"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str()), ("value", "ABC123")])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_fetch.status(), StatusCode::FORBIDDEN);
    // A token from another browser's session is no good either.
    let other = gateway.browser();
    let stolen = other
        .post(
            "/portal/password/forgotten",
            &[("csrf", csrf.as_str()), ("value", "ABC123")],
        )
        .await;
    assert_eq!(stolen.status, StatusCode::FORBIDDEN);
    // Nothing was sent by any of them.
    assert_eq!(suite.count_rows(Service::Identity, "outbox").await, 0);

    let accepted = browser
        .post(
            "/portal/password/forgotten",
            &[("csrf", csrf.as_str()), ("value", "ABC123")],
        )
        .await;
    assert_eq!(accepted.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_password_and_user_id_answer_alike_for_known_and_unknown() {
    let mut suite = Suite::start().await;
    suite.register_desk().await;
    let gateway = Gateway::start(&suite).await;
    let browser = gateway.browser();
    let known = browser
        .fill(
            "/portal/password/forgotten",
            &[("value", suite.desk_user_id())],
        )
        .await;
    let unknown = browser
        .fill("/portal/password/forgotten", &[("value", "ZZZ999")])
        .await;
    assert_eq!(known.status, StatusCode::OK);
    assert_eq!(known.body, unknown.body);
    known.assert_shows("If an account matches");
    suite.mail(Suite::DESK_EMAIL, subject::PASSWORD_RESET).await;

    let known = browser
        .fill("/portal/user-id/forgotten", &[("value", Suite::DESK_EMAIL)])
        .await;
    let unknown = browser
        .fill(
            "/portal/user-id/forgotten",
            &[("value", "nobody.here@nhs.net")],
        )
        .await;
    assert_eq!(known.body, unknown.body);
    suite
        .mail(Suite::DESK_EMAIL, subject::USER_ID_REMINDER)
        .await;

    // An empty field is named next to the field, and nothing is sent.
    let empty = browser
        .fill("/portal/user-id/forgotten", &[("value", "")])
        .await;
    empty.assert_shows("id=\"value-error\"");
}

/// The reset form over its rate limit: a readable message on the page, the same for a known
/// and an unknown User ID, and no more mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reset_form_over_its_rate_limit_says_so_alike_for_known_and_unknown() {
    let mut suite = Suite::builder()
        .env(
            Service::Identity,
            &[("CQRS_RATE_LIMIT_PER_ADDRESS", "1/hour")],
        )
        .start()
        .await;
    suite.register_desk().await;
    let gateway = Gateway::start(&suite).await;
    let browser = gateway.browser();
    let mut pages = Vec::new();
    for value in [suite.desk_user_id(), "ZZZ999"] {
        for _ in 0..2 {
            pages.push(
                browser
                    .fill("/portal/password/forgotten", &[("value", value)])
                    .await,
            );
        }
    }
    pages[0].assert_shows("If an account matches");
    for limited in [&pages[1], &pages[3]] {
        assert_eq!(limited.status, StatusCode::OK);
        limited.assert_shows("too many requests from here or for this address");
    }
    assert_eq!(
        pages[1].body.replace(suite.desk_user_id(), "ZZZ999"),
        pages[3].body
    );
    suite.mail(Suite::DESK_EMAIL, subject::PASSWORD_RESET).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        suite
            .mails_now(Suite::DESK_EMAIL, subject::PASSWORD_RESET)
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_link_sets_a_new_password() {
    let mut suite = Suite::start().await;
    suite.register_desk().await;
    // The national profile keeps a password 72 hours before it may change.
    suite.advance_clock(chrono::TimeDelta::hours(73));
    let gateway = Gateway::start(&suite).await;
    let browser = gateway.browser();
    browser
        .fill(
            "/portal/password/forgotten",
            &[("value", suite.desk_user_id())],
        )
        .await;
    let mail = suite.mail(Suite::DESK_EMAIL, subject::PASSWORD_RESET).await;
    let link = on_gateway(&mail.links()[0]);
    assert!(link.starts_with("/portal/password/reset?token="), "{link}");

    let moved = browser.get(&link).await;
    assert_eq!(moved.location(), "/portal/password/reset");
    browser
        .get("/portal/password/reset")
        .await
        .assert_shows("Reset your password");
    let weak = browser
        .fill(
            "/portal/password/reset",
            &[("password", WEAK), ("confirm", WEAK)],
        )
        .await;
    weak.assert_shows("Password must be at least 8 characters.");
    let new_password = "Harbour!Meadow93";
    let done = browser
        .fill(
            "/portal/password/reset",
            &[("password", new_password), ("confirm", new_password)],
        )
        .await;
    done.assert_shows("Your password has been changed");
    assert!(
        suite
            .sign_in(suite.desk_user_id(), new_password)
            .await
            .is_ok()
    );

    // The same link again: spent, which its page says before anything is typed.
    browser.get(&link).await;
    browser
        .get("/portal/password/reset")
        .await
        .assert_shows("This link cannot be used");
    // A page of a kind of link the session holds no token for.
    let fresh = gateway.browser();
    fresh
        .get("/portal/register/complete")
        .await
        .assert_shows("This link cannot be used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_out_and_a_session_ended_in_identity() {
    let mut suite = Suite::start().await;
    suite.register_desk().await;
    let gateway = Gateway::start(&suite).await;
    let browser = gateway.browser();

    let wrong = browser
        .fill(
            "/portal/sign-in",
            &[
                ("login", suite.desk_user_id()),
                ("password", "Wrong#Password1"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::OK);
    wrong.assert_shows("contact the service desk");
    let unknown = browser
        .fill(
            "/portal/sign-in",
            &[("login", "ZZZ999"), ("password", "Wrong#Password1")],
        )
        .await;
    assert_eq!(
        wrong.body.replace(suite.desk_user_id(), ""),
        unknown.body.replace("ZZZ999", ""),
        "an unknown login reads exactly like a wrong password"
    );
    let empty = browser
        .fill("/portal/sign-in", &[("login", ""), ("password", "")])
        .await;
    empty.assert_shows("id=\"login-error\"");
    empty.assert_shows("id=\"password-error\"");

    // Signing in rotates the cookie.
    let before = browser.get("/portal/sign-in").await;
    let cookie_before = before.headers.get("set-cookie").cloned();
    let answer = browser
        .fill(
            "/portal/sign-in",
            &[
                ("login", suite.desk_user_id()),
                ("password", Suite::DESK_PASSWORD),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let cookie_after = answer.headers.get("set-cookie").cloned();
    assert!(cookie_after.is_some());
    assert_ne!(cookie_before, cookie_after);
    let profile = browser.get("/portal/profile").await;
    assert_eq!(profile.status, StatusCode::OK);
    profile.assert_shows(Suite::DESK_EMAIL);
    profile.assert_shows(suite.desk_user_id());

    // Sign out ends the web session and identity's.
    let csrf = profile.csrf();
    let out = browser
        .post("/portal/sign-out", &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        browser.get("/portal/profile").await.status,
        StatusCode::SEE_OTHER
    );

    // A session that ends in identity (here: every session key gone, as an admin's disable or
    // a lock does) ends the web session at the next page.
    browser
        .sign_in(suite.desk_user_id(), Suite::DESK_PASSWORD)
        .await;
    assert_eq!(browser.get("/portal/profile").await.status, StatusCode::OK);
    let mut conn = suite.redis.conn.clone();
    let mut ended = Vec::new();
    for key in suite.redis.keys().await {
        if key.contains(":session:") {
            let _: usize = redis::AsyncCommands::del(&mut conn, &key).await.unwrap();
            ended.push(key);
        }
    }
    cqrs_auth::announce_ended(&mut conn, &suite.redis.namespace, &ended)
        .await
        .unwrap();
    // The home page too, though it shows nothing but the session's own data and the unread
    // count.
    let ended = browser.get("/portal/").await;
    assert_eq!(ended.status, StatusCode::SEE_OTHER);
    assert_eq!(ended.location(), "/portal/sign-in");
    // And it stays ended: no page of the old session comes back.
    assert_eq!(
        browser.get("/portal/profile").await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_changes_the_password_with_errors_by_their_fields() {
    let mut suite = Suite::start().await;
    suite.register_desk().await;
    // The national profile keeps a password 72 hours before it may change.
    suite.advance_clock(chrono::TimeDelta::hours(73));
    let gateway = Gateway::start(&suite).await;
    let browser = gateway.browser();
    browser
        .sign_in(suite.desk_user_id(), Suite::DESK_PASSWORD)
        .await;

    let mismatch = browser
        .fill_at(
            "/portal/profile",
            "/portal/profile/password",
            &[
                ("current", Suite::DESK_PASSWORD),
                ("password", "A"),
                ("confirm", "B"),
            ],
        )
        .await;
    mismatch.assert_shows("id=\"confirm-error\"");
    // The profile form posts to its own address.
    let csrf = browser.get("/portal/profile").await.csrf();
    let weak = browser
        .post(
            "/portal/profile/password",
            &[
                ("csrf", csrf.as_str()),
                ("current", Suite::DESK_PASSWORD),
                ("password", WEAK),
                ("confirm", WEAK),
            ],
        )
        .await;
    weak.assert_shows("id=\"password-error\"");
    weak.assert_shows("New password must be at least 8 characters.");
    let new_password = "Orchard=Cobalt26";
    let changed = browser
        .post(
            "/portal/profile/password",
            &[
                ("csrf", csrf.as_str()),
                ("current", Suite::DESK_PASSWORD),
                ("password", new_password),
                ("confirm", new_password),
            ],
        )
        .await;
    // A new password ends every session of the account, this one too: sign in again.
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    assert_eq!(changed.location(), "/portal/sign-in");
    let sign_in = browser.get(changed.location()).await;
    sign_in.assert_shows("Your password has been changed. Sign in with your new password.");
    assert_eq!(
        browser.get("/portal/profile").await.status,
        StatusCode::SEE_OTHER
    );
    assert!(
        suite
            .sign_in(suite.desk_user_id(), new_password)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_is_shown_then_accepted_from_its_link() {
    let mut suite = Suite::start().await;
    suite.register_desk().await;
    let desk = suite.desk_sign_in().await;
    let region = suite
        .create_organisation(&desk.token, OrganisationKind::Region, "Y58", "West", None)
        .await
        .unwrap();
    let ccg = suite
        .create_organisation(
            &desk.token,
            OrganisationKind::CommissioningOrganisation,
            "17N",
            "Westside CCG",
            Some(&region),
        )
        .await
        .unwrap();
    suite
        .invite(
            &desk.token,
            "amir.khan@westside.nhs.uk",
            ("Amir", "Khan"),
            &ccg,
            Role::CommissioningAccountAdministrator,
        )
        .await
        .unwrap();
    let mail = suite
        .mail("amir.khan@westside.nhs.uk", subject::INVITATION)
        .await;
    let link = on_gateway(&mail.links()[0]);
    assert!(link.starts_with("/portal/invitation?token="), "{link}");

    let gateway = Gateway::start(&suite).await;
    let browser = gateway.browser();
    assert_eq!(browser.get(&link).await.location(), "/portal/invitation");
    let shown = browser.get("/portal/invitation").await;
    shown.assert_shows("Westside CCG");
    shown.assert_shows("Commissioning Account Administrator");
    shown.assert_shows("value=\"Amir\"");
    // Showing it twice accepts nothing.
    browser
        .get("/portal/invitation")
        .await
        .assert_shows("Accept invitation");

    let blank = browser
        .fill(
            "/portal/invitation",
            &[("first_name", ""), ("last_name", "Khan")],
        )
        .await;
    blank.assert_shows("id=\"first_name-error\"");
    let accepted = browser
        .fill(
            "/portal/invitation",
            &[("first_name", "Amir"), ("last_name", "Khan")],
        )
        .await;
    accepted.assert_shows("Invitation accepted");
    // The new account's registration link is on its way.
    suite
        .mail("amir.khan@westside.nhs.uk", subject::REGISTRATION_LINK)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_with_several_roles_chooses_one_in_the_header() {
    let world = cqrs_suite::World::start().await;
    let suite = &world.suite;
    let gateway = Gateway::start(suite).await;
    // The administrator also holds a role at a practice: two grants, none chosen at sign-in.
    let practice = &world.tree.practice;
    suite
        .directory()
        .grant_role(cqrs_testkit::with_token(
            cqrs_proto::directory::v1::GrantRoleRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                account_id: world.admin.account_id.clone(),
                organisation_id: practice.id.clone(),
                role: Role::PracticeManager as i32,
            },
            &suite.service_token().await,
        ))
        .await
        .unwrap();
    let browser = gateway.browser();
    let home = browser
        .sign_in(&world.admin.user_id, &world.admin.password)
        .await;
    home.assert_shows("Choose the organisation and role to work as");
    home.assert_shows("<option value=\"\" selected disabled>Choose a role</option>");

    // Switching without choosing: told to choose, nothing selected.
    let csrf = home.csrf();
    let unchosen = browser
        .post("/portal/role", &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(unchosen.status, StatusCode::SEE_OTHER);
    browser
        .get(unchosen.location())
        .await
        .assert_shows("Choose a role from the list first.");

    // The switcher's option for the practice role.
    let label = home.body.find(">Practice Manager, ").unwrap();
    let value = home.body[..label].rfind("value=\"").unwrap() + "value=\"".len();
    let index = &home.body[value..value + home.body[value..].find('"').unwrap()];
    let chosen = browser
        .post("/portal/role", &[("csrf", csrf.as_str()), ("grant", index)])
        .await;
    assert_eq!(chosen.status, StatusCode::SEE_OTHER);
    let working = browser.get(chosen.location()).await;
    working.assert_shows("You are working as <strong>Practice Manager, ");
    assert!(!working.contains("Choose a role</option>"));
}
