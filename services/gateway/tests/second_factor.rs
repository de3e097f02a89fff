//! Authenticator apps through the gateway: the desk, whose role needs one, is led to add it
//! right after signing in and can do nothing else first; then signs in with a code or a
//! recovery code; and an administrative action after the step-up window asks for a code and
//! is carried out as asked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use chrono::TimeDelta;
use cqrs_suite::{Service, Suite, subject};
use reqwest::StatusCode;

use common::{Browser, Gateway, Page};

/// The secret the enrolment page shows, without its spaces.
fn secret_of(page: &Page) -> String {
    let at = page
        .body
        .find("id=\"secret\">")
        .expect("the secret is shown")
        + 12;
    let rest = &page.body[at..];
    rest[..rest.find('<').unwrap()].replace(' ', "")
}

/// The desk's User ID and password on the sign-in page.
async fn give_password(suite: &Suite, browser: &Browser) -> Page {
    browser
        .fill(
            "/portal/sign-in",
            &[
                ("login", suite.desk_user_id()),
                ("password", Suite::DESK_PASSWORD),
            ],
        )
        .await
}

async fn suite(window_secs: &str) -> Suite {
    let mut suite = Suite::builder()
        .env(
            Service::Identity,
            &[
                ("CQRS_SECOND_FACTOR_ROLES", "SERVICE_DESK"),
                ("CQRS_STEP_UP_WINDOW_SECS", window_secs),
            ],
        )
        .start()
        .await;
    suite.register_desk().await;
    suite
}

/// Signs the desk in and adds an app as the gateway leads it to; the secret and the recovery
/// codes.
async fn enrol_desk(suite: &Suite, browser: &Browser) -> (String, Vec<String>) {
    let signed = give_password(suite, browser).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
    // Every page leads to adding an app first.
    for page in ["/portal/", "/portal/desk", "/portal/notifications"] {
        let led = browser.get(page).await;
        assert_eq!(led.status, StatusCode::SEE_OTHER, "{page}");
        assert_eq!(led.location(), "/portal/profile/authenticator");
    }
    let page = browser.get("/portal/profile/authenticator").await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_shows("One of your roles needs an authenticator app");
    page.assert_shows("<svg");
    let secret = secret_of(&page);
    // The same secret until it is confirmed (a reload does not change it).
    assert_eq!(
        secret_of(&browser.get("/portal/profile/authenticator").await),
        secret
    );

    let wrong = browser
        .fill("/portal/profile/authenticator", &[("code", "12345")])
        .await;
    wrong.assert_shows("id=\"code-error\"");
    let done = browser
        .fill(
            "/portal/profile/authenticator",
            &[("code", &suite.totp_code(&secret))],
        )
        .await;
    done.assert_shows("Authenticator app added");
    let codes: Vec<String> = done
        .body
        .split("<li><code>")
        .skip(1)
        .map(|part| part[..part.find('<').unwrap()].to_owned())
        .collect();
    assert_eq!(codes.len(), 10, "{}", done.body);
    suite
        .mail(Suite::DESK_EMAIL, subject::SECOND_FACTOR_ADDED)
        .await;
    // Now the desk acts through its one role at once.
    let home = browser.get("/portal/").await;
    home.assert_shows("You are working as <strong>Service Desk, ");
    (secret, codes)
}

async fn sign_in_for_code(suite: &Suite, browser: &Browser) {
    let signed = give_password(suite, browser).await;
    assert_eq!(signed.location(), "/portal/sign-in/code");
    // Nothing is signed in yet.
    assert_eq!(
        browser.get("/portal/").await.location(),
        "/portal/sign-in",
        "no session before the code"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_adds_an_app_then_signs_in_with_a_code_or_a_recovery_code() {
    let suite = suite("900").await;
    let gateway = Gateway::start(&suite).await;
    let first = gateway.browser();
    let (secret, codes) = enrol_desk(&suite, &first).await;
    first
        .get("/portal/profile")
        .await
        .assert_shows("Added: you sign in with your password and a code");

    let browser = gateway.browser();
    sign_in_for_code(&suite, &browser).await;
    let page = browser.get("/portal/sign-in/code").await;
    page.assert_shows("Enter the code from your authenticator app");
    let wrong = browser
        .fill("/portal/sign-in/code", &[("code", "000000")])
        .await;
    wrong.assert_shows("id=\"code-error\">The code is not right.");
    suite.advance_clock(TimeDelta::seconds(30));
    let done = browser
        .fill(
            "/portal/sign-in/code",
            &[("code", &suite.totp_code(&secret))],
        )
        .await;
    assert_eq!(done.location(), "/portal/");
    browser
        .get("/portal/")
        .await
        .assert_shows("You are working as <strong>Service Desk, ");

    let other = gateway.browser();
    sign_in_for_code(&suite, &other).await;
    let recovered = other
        .fill("/portal/sign-in/code", &[("recovery_code", &codes[0])])
        .await;
    assert_eq!(recovered.location(), "/portal/");
    other
        .get("/portal/")
        .await
        .assert_shows("You have 9 left: each works once.");
    suite
        .mail(Suite::DESK_EMAIL, subject::RECOVERY_CODE_USED)
        .await;

    // The desk's screen shows the app and removes it (here the desk's own): the owner is
    // mailed and signed out, and the next sign-in leads to adding an app again.
    let page = format!("/portal/desk?account={}", suite.desk_account_id());
    let account = browser.get(&page).await;
    account.assert_shows("<dd id=\"account-second-factor\">Added</dd>");
    let removed = browser
        .fill_at(
            &page,
            "/portal/desk/second-factor",
            &[("account_id", suite.desk_account_id())],
        )
        .await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER, "{}", removed.body);
    suite
        .mail(Suite::DESK_EMAIL, subject::SECOND_FACTOR_REMOVED)
        .await;
    assert_eq!(browser.get(&page).await.location(), "/portal/sign-in");
    let again = gateway.browser();
    let signed = give_password(&suite, &again).await;
    assert_eq!(signed.location(), "/portal/");
    assert_eq!(
        again.get("/portal/").await.location(),
        "/portal/profile/authenticator"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_after_the_step_up_window_asks_for_a_code_then_is_done() {
    let suite = suite("2").await;
    let gateway = Gateway::start(&suite).await;
    let browser = gateway.browser();
    let (secret, _) = enrol_desk(&suite, &browser).await;
    // Whole seconds: a check at t.9 is stale once the clock reads t + window + 1.
    tokio::time::sleep(Duration::from_millis(3_100)).await;

    let form = browser.get("/portal/desk/organisations").await;
    let csrf = form.csrf();
    let at = form.body.find("name=\"request_id\" value=\"").unwrap() + 25;
    let request_id = form.body[at..at + 36].to_owned();
    let fields = [
        ("csrf", csrf.as_str()),
        ("request_id", request_id.as_str()),
        ("kind", "REGION"),
        ("ods_code", "Y61"),
        ("name", "Harbour Region"),
    ];
    let asked = browser.post("/portal/desk/organisations", &fields).await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.body);
    asked.assert_shows("<h1>Confirm it is you</h1>");
    asked.assert_shows("action=\"/portal/step-up?then=/portal/desk/organisations\"");
    asked.assert_shows("name=\"name\" value=\"Harbour Region\"");
    assert!(
        !browser
            .get("/portal/desk/organisations")
            .await
            .contains("Harbour Region"),
        "nothing was created"
    );

    let mut with_code: Vec<(&str, &str)> = fields.to_vec();
    let wrong = browser
        .post(
            "/portal/step-up?then=%2Fportal%2Fdesk%2Forganisations",
            &[with_code.clone(), vec![("code", "000000")]].concat(),
        )
        .await;
    wrong.assert_shows("id=\"code-error\">The code is not right.");
    wrong.assert_shows("name=\"ods_code\" value=\"Y61\"");

    suite.advance_clock(TimeDelta::seconds(30));
    let code = suite.totp_code(&secret);
    with_code.push(("code", &code));
    let verified = browser
        .post(
            "/portal/step-up?then=%2Fportal%2Fdesk%2Forganisations",
            &with_code,
        )
        .await;
    assert_eq!(verified.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(verified.location(), "/portal/desk/organisations");
    // The browser posts the same fields again (307); now it is done.
    let repeated = browser.post(verified.location(), &with_code).await;
    assert_eq!(repeated.status, StatusCode::SEE_OTHER, "{}", repeated.body);
    browser
        .get("/portal/desk/organisations")
        .await
        .assert_shows("Harbour Region");

    // A step-up that would send the browser elsewhere is refused.
    let away = browser
        .post(
            "/portal/step-up?then=https%3A%2F%2Fevil.example%2F",
            &with_code,
        )
        .await;
    assert_eq!(away.status, StatusCode::FORBIDDEN);
}
