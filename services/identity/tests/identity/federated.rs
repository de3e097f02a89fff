//! Single sign-on against an OpenID provider on loopback (SECURITY 35): success, every
//! refusal the issue lists with nothing signed in, the provider's key rotation, and how a
//! second factor meets a federated sign-in.

use base64::Engine as _;
use cqrs_proto::identity::v1 as pb;
use cqrs_suite::oidc::{Fault, TestProvider};
use cqrs_suite::{Service, Suite, with_token};
use cqrs_testkit::assert_reason;
use tonic::Code;

use crate::calls::{IdentityCalls, PASSWORDS};

const CALLBACK: &str = "http://127.0.0.1:8080/sign-in/sso/callback";

async fn start(provider: &TestProvider, extra: &[(&str, &str)]) -> Suite {
    let mut env = provider.identity_env(CALLBACK);
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Suite::builder()
        .only(&[Service::Identity])
        .without_bootstrap()
        .env(Service::Identity, &pairs)
        .start()
        .await
}

/// Starts a federated sign-in, lets the provider sign its person in, and completes it.
async fn federated(
    h: &Suite,
    provider: &TestProvider,
) -> Result<pb::SignInResponse, tonic::Status> {
    let started = h
        .identity()
        .start_federated_sign_in(pb::StartFederatedSignInRequest {
            provider_id: "nhsmail".into(),
        })
        .await?
        .into_inner();
    let url = &started.authorization_url;
    for part in [
        "code_challenge_method=S256",
        "nonce=",
        "scope=openid+email",
        CALLBACK_ENCODED,
    ] {
        assert!(url.contains(part), "{part} in {url}");
    }
    let (code, state) = provider.authorize(url).await;
    assert_eq!(state, started.state);
    complete(h, &state, &code).await
}

const CALLBACK_ENCODED: &str =
    "redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Fsign-in%2Fsso%2Fcallback";

async fn complete(h: &Suite, state: &str, code: &str) -> Result<pb::SignInResponse, tonic::Status> {
    h.identity()
        .complete_federated_sign_in(pb::CompleteFederatedSignInRequest {
            state: state.into(),
            code: code.into(),
        })
        .await
        .map(|r| r.into_inner().sign_in.expect("a sign-in answer"))
}

fn amr(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["amr"].clone()
}

#[tokio::test]
async fn a_verified_nhsmail_address_signs_in_to_its_account() {
    let provider = TestProvider::start().await;
    let h = start(&provider, &[]).await;
    let listed = h
        .identity()
        .list_identity_providers(pb::ListIdentityProvidersRequest {})
        .await
        .unwrap()
        .into_inner()
        .providers;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].label.as_str()),
        ("nhsmail", "NHSmail")
    );

    let account = h
        .active(pb::Realm::National, "ria.moss@nhs.net", PASSWORDS[0])
        .await;
    provider.sign_in_as("Ria.Moss@nhs.net", true, &["pwd"]);
    let signed = federated(&h, &provider).await.unwrap();
    assert!(!signed.session_token.is_empty());
    assert_eq!(signed.account.unwrap().id, account.id);
    assert_eq!(amr(&signed.access_token), serde_json::json!(["fed"]));
    assert_eq!(
        h.audit_rows("SIGN_IN_FEDERATED", &account.id).await[0].0,
        "success"
    );

    // The provider rotates its keys: the next sign-in is checked against the new ones.
    provider.rotate_keys();
    federated(&h, &provider).await.unwrap();

    // A state is used once; a made-up one is refused the same way.
    let started = h
        .identity()
        .start_federated_sign_in(pb::StartFederatedSignInRequest {
            provider_id: "nhsmail".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let (code, state) = provider.authorize(&started.authorization_url).await;
    complete(&h, &state, &code).await.unwrap();
    for (state, code) in [(state.as_str(), code.as_str()), ("made-up", "made-up")] {
        let err = complete(&h, state, code).await.unwrap_err();
        assert_reason(&err, Code::Unauthenticated, "FEDERATED_SIGN_IN_FAILED");
    }
    // Unknown providers and missing fields are field errors.
    let err = h
        .identity()
        .start_federated_sign_in(pb::StartFederatedSignInRequest {
            provider_id: "google".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = complete(&h, "", "x").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn bad_tokens_and_unusable_addresses_sign_nobody_in() {
    let provider = TestProvider::start().await;
    let h = start(&provider, &[]).await;
    let account = h
        .active(pb::Realm::National, "sam.hale@nhs.net", PASSWORDS[0])
        .await;
    provider.sign_in_as("sam.hale@nhs.net", true, &["pwd"]);
    for fault in [
        Fault::WrongNonce,
        Fault::WrongAudience,
        Fault::WrongIssuer,
        Fault::Expired,
        Fault::UnknownKey,
    ] {
        provider.misbehave(fault);
        let err = federated(&h, &provider).await.unwrap_err();
        assert_reason(&err, Code::Unauthenticated, "FEDERATED_SIGN_IN_FAILED");
    }
    provider.misbehave(Fault::None);

    // Unverified, of another domain, of no account, of a locked or disabled account: one
    // answer.
    h.active(pb::Realm::Local, "sam.hale@gmail.com", PASSWORDS[0])
        .await;
    for (email, verified) in [
        ("sam.hale@nhs.net", false),
        ("sam.hale@gmail.com", true),
        ("nobody.here@nhs.net", true),
    ] {
        provider.sign_in_as(email, verified, &["pwd"]);
        let err = federated(&h, &provider).await.unwrap_err();
        assert_reason(&err, Code::Unauthenticated, "NO_MATCHING_ACCOUNT");
        assert!(
            err.message().contains("ask your commissioner"),
            "{}",
            err.message()
        );
    }
    provider.sign_in_as("sam.hale@nhs.net", true, &["pwd"]);
    for change in [
        "UPDATE accounts SET locked_at = now(), lock_reason = 'TOO_MANY_FAILED_ATTEMPTS' \
         WHERE email = 'sam.hale@nhs.net'",
        "UPDATE accounts SET locked_at = NULL, lock_reason = NULL, state = 'DISABLED' \
         WHERE email = 'sam.hale@nhs.net'",
    ] {
        sqlx::query(change)
            .execute(h.pool(Service::Identity))
            .await
            .unwrap();
        let err = federated(&h, &provider).await.unwrap_err();
        assert_reason(&err, Code::Unauthenticated, "NO_MATCHING_ACCOUNT");
    }

    // Nothing was created and nobody was signed in.
    assert_eq!(h.count("accounts").await, 2);
    let outcomes: Vec<String> = h
        .audit_rows("SIGN_IN_FEDERATED", "")
        .await
        .into_iter()
        .map(|(outcome, _)| outcome)
        .collect();
    assert!(outcomes.iter().all(|o| o == "failure"), "{outcomes:?}");
    assert_eq!(h.audit_rows("SIGN_IN", &account.id).await.len(), 0);
}

/// Adds an app to the session's account; its secret.
async fn add_app(h: &Suite, token: &str) -> String {
    let secret = h
        .identity()
        .start_totp_enrolment(with_token(pb::StartTotpEnrolmentRequest {}, token))
        .await
        .unwrap()
        .into_inner()
        .secret;
    h.identity()
        .confirm_totp_enrolment(with_token(
            pb::ConfirmTotpEnrolmentRequest {
                code: h.totp_code(&secret),
            },
            token,
        ))
        .await
        .unwrap();
    secret
}

#[tokio::test]
async fn an_account_with_an_app_is_asked_for_its_code_unless_the_provider_mfa_counts() {
    let provider = TestProvider::start().await;
    provider.sign_in_as("kai.lund@nhs.net", true, &["pwd"]);
    for mfa_counts in [false, true] {
        let setting = if mfa_counts { "true" } else { "false" };
        let h = start(&provider, &[("CQRS_OIDC_NHSMAIL_MFA_SATISFIES", setting)]).await;
        h.active(pb::Realm::National, "kai.lund@nhs.net", PASSWORDS[0])
            .await;
        provider.sign_in_as("kai.lund@nhs.net", true, &["pwd"]);
        let session = federated(&h, &provider).await.unwrap();
        let secret = add_app(&h, &session.access_token).await;

        // Upstream MFA that does not count, or none: the app's code is asked for.
        let upstream: &[&str] = if mfa_counts {
            &["pwd"]
        } else {
            &["pwd", "mfa"]
        };
        provider.sign_in_as("kai.lund@nhs.net", true, upstream);
        let asked = federated(&h, &provider).await.unwrap();
        assert!(asked.second_factor_required, "mfa_counts={mfa_counts}");
        assert!(asked.session_token.is_empty());
        h.advance_clock(chrono::TimeDelta::seconds(30));
        let done = h
            .identity()
            .complete_sign_in(pb::CompleteSignInRequest {
                challenge_token: asked.challenge_token,
                code: h.totp_code(&secret),
                recovery_code: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(amr(&done.access_token), serde_json::json!(["fed", "otp"]));

        if mfa_counts {
            // The provider's MFA counts: no code asked, and the token records the check.
            provider.sign_in_as("kai.lund@nhs.net", true, &["pwd", "mfa"]);
            let direct = federated(&h, &provider).await.unwrap();
            assert!(!direct.second_factor_required);
            assert_eq!(amr(&direct.access_token), serde_json::json!(["fed", "mfa"]));
        }
    }
}
