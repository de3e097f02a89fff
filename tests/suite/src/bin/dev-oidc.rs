//! `cqrs-dev-oidc`: a local OpenID provider for trying "Sign in with NHSmail" under
//! `make run` (`CQRS_DEV_OIDC=1`). Its sign-in page asks which e-mail address to sign in as;
//! it is for one machine only, never a deployment.
//!
//! Reads `DEV_OIDC_LISTEN` (default `127.0.0.1:8090`) and `DEV_OIDC_CLIENT_SECRET`
//! (required; the client id is `cqrs-suite`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cqrs_suite::oidc::TestProvider;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let listen = std::env::var("DEV_OIDC_LISTEN").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let secret = std::env::var("DEV_OIDC_CLIENT_SECRET")
        .expect("DEV_OIDC_CLIENT_SECRET must be set (make run makes one)");
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {listen}: {e}"));
    let provider = TestProvider::start_on(listener, secret, true).await;
    println!(
        "local OpenID provider at {} (client id {})",
        provider.issuer, provider.client_id
    );
    tokio::signal::ctrl_c().await.ok();
}
