//! "Sign in with NHSmail" through the gateway, against the OpenID provider on loopback: the
//! button above the password form, the round trip, the state bound to the browser that
//! started it, and the one message for an address that has no usable account.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cqrs_suite::Suite;
use cqrs_suite::oidc::TestProvider;
use reqwest::StatusCode;

use common::{Browser, Gateway};

/// The suite with the provider configured (the desk's domain allowed) and the gateway on the
/// address the provider sends browsers back to.
async fn start() -> (TestProvider, Suite, Gateway) {
    let (provider, suite, listener) = common::sso_suite(Some("nhs.net,cqrs-suite.nhs.uk")).await;
    let gateway = Gateway::start_on(&suite, listener).await;
    (provider, suite, gateway)
}

/// Clicks "Sign in with NHSmail" and lets the provider send the browser back: the answer of
/// the callback.
async fn round_trip(browser: &Browser, provider: &TestProvider) -> common::Page {
    let sign_in = browser.get("/portal/sign-in").await;
    sign_in.assert_shows("href=\"/portal/sign-in/sso/nhsmail\">Sign in with NHSmail</a>");
    let away = browser.get("/portal/sign-in/sso/nhsmail").await;
    assert_eq!(away.status, StatusCode::SEE_OTHER, "{}", away.body);
    assert!(
        away.location().starts_with(&provider.issuer),
        "{}",
        away.location()
    );
    let (code, state) = provider.authorize(away.location()).await;
    browser
        .get(&format!(
            "/portal/sign-in/sso/callback?code={code}&state={state}"
        ))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_signs_in_with_its_nhsmail_account() {
    let (provider, _suite, gateway) = start().await;
    provider.sign_in_as(Suite::DESK_EMAIL, true, &["pwd"]);
    let browser = gateway.browser();
    let back = round_trip(&browser, &provider).await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{}", back.body);
    assert_eq!(back.location(), "/portal/");
    let home = browser.get("/portal/").await;
    home.assert_shows("Welcome, ");
    home.assert_shows("You are working as <strong>Service Desk, ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_finishes_only_where_it_started_and_unknown_addresses_are_told_once() {
    let (provider, _suite, gateway) = start().await;
    provider.sign_in_as(Suite::DESK_EMAIL, true, &["pwd"]);

    // Started in one browser, brought back to another: refused, nobody signed in.
    let victim = gateway.browser();
    let attacker = gateway.browser();
    let away = attacker.get("/portal/sign-in/sso/nhsmail").await;
    let (code, state) = provider.authorize(away.location()).await;
    let planted = victim
        .get(&format!(
            "/portal/sign-in/sso/callback?code={code}&state={state}"
        ))
        .await;
    assert_eq!(planted.status, StatusCode::OK);
    planted.assert_shows("The sign-in with NHSmail did not complete.");
    assert_eq!(victim.get("/portal/").await.location(), "/portal/sign-in");

    // The provider says no.
    let refused = gateway.browser();
    refused.get("/portal/sign-in/sso/nhsmail").await;
    refused
        .get("/portal/sign-in/sso/callback?error=access_denied&state=x")
        .await
        .assert_shows("The sign-in with NHSmail did not complete.");

    // An NHSmail address with no CQRS account.
    provider.sign_in_as("somebody.else@nhs.net", true, &["pwd"]);
    let stranger = gateway.browser();
    let back = round_trip(&stranger, &provider).await;
    assert_eq!(back.status, StatusCode::OK);
    back.assert_shows("Ask your commissioner for an account with your NHSmail address.");
    assert_eq!(stranger.get("/portal/").await.location(), "/portal/sign-in");
}
