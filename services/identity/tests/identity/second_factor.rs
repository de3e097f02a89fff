//! Second factors (SECURITY 34): enrolment, sign-in with a code or a recovery code, replay,
//! one guess budget shared with passwords, the role policy, step-up, and the desk's removal.

use std::time::Duration;

use base64::Engine as _;
use chrono::TimeDelta;
use cqrs_proto::common::v1::Role;
use cqrs_proto::identity::v1 as pb;
use cqrs_suite::{Service, Suite, subject, with_token};
use cqrs_testkit::assert_reason;
use tonic::Code;

use crate::calls::{IdentityCalls, PASSWORDS, start_with_mail};

/// A signed-in person with an authenticator app: the account, its base32 secret, the ten
/// recovery codes, and the session's access token.
struct Enrolled {
    account: pb::Account,
    login: String,
    secret: String,
    recovery_codes: Vec<String>,
    access_token: String,
}

async fn enrol(h: &Suite, email: &str) -> Enrolled {
    let account = h.active(pb::Realm::Local, email, PASSWORDS[0]).await;
    let signed = h.sign_in(email, PASSWORDS[0]).await.unwrap();
    assert!(!signed.second_factor_required);
    let token = signed.access_token;
    let started = h
        .identity()
        .start_totp_enrolment(with_token(pb::StartTotpEnrolmentRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert!(
        started.otpauth_uri.starts_with(&format!(
            "otpauth://totp/CQRS:{}?",
            email.replace('@', "%40")
        )),
        "{}",
        started.otpauth_uri
    );
    assert!(started.otpauth_uri.contains(&started.secret));

    // A wrong first code confirms nothing.
    let right = h.totp_code(&started.secret);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    let err = h
        .identity()
        .confirm_totp_enrolment(with_token(
            pb::ConfirmTotpEnrolmentRequest { code: wrong.into() },
            &token,
        ))
        .await
        .unwrap_err();
    assert_reason(&err, Code::Unauthenticated, "INVALID_CODE");
    let confirmed = h
        .identity()
        .confirm_totp_enrolment(with_token(
            pb::ConfirmTotpEnrolmentRequest { code: right },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(confirmed.recovery_codes.len(), 10);
    h.mail(email, subject::SECOND_FACTOR_ADDED).await;
    Enrolled {
        account,
        login: email.to_owned(),
        secret: started.secret,
        recovery_codes: confirmed.recovery_codes,
        access_token: confirmed.access_token,
    }
}

/// Adds an app to the session's account; its secret and the confirmation.
async fn add_app(suite: &Suite, access_token: &str) -> (String, pb::ConfirmTotpEnrolmentResponse) {
    let secret = suite
        .identity()
        .start_totp_enrolment(with_token(pb::StartTotpEnrolmentRequest {}, access_token))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let confirmed = suite
        .identity()
        .confirm_totp_enrolment(with_token(
            pb::ConfirmTotpEnrolmentRequest {
                code: suite.totp_code(&secret),
            },
            access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    (secret, confirmed)
}

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

async fn challenge(h: &Suite, login: &str) -> String {
    let answer = h.sign_in(login, PASSWORDS[0]).await.unwrap();
    assert!(answer.second_factor_required);
    assert!(answer.session_token.is_empty() && answer.access_token.is_empty());
    assert!(answer.account.is_none(), "nothing is told before the code");
    answer.challenge_token
}

async fn complete(
    h: &Suite,
    challenge_token: &str,
    code: &str,
    recovery_code: &str,
) -> Result<pb::CompleteSignInResponse, tonic::Status> {
    h.identity()
        .complete_sign_in(pb::CompleteSignInRequest {
            challenge_token: challenge_token.into(),
            code: code.into(),
            recovery_code: recovery_code.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn enrolment_then_sign_in_with_a_code_once_or_a_recovery_code_once() {
    let h = start_with_mail(&[]).await;
    let person = enrol(&h, "ria.moss@practice.org").await;
    assert!(
        claims(&person.access_token)["amr"]
            .as_array()
            .unwrap()
            .contains(&"otp".into())
    );
    // A second enrolment is refused while one is confirmed; secrets are stored, never shown.
    let err = h
        .identity()
        .start_totp_enrolment(with_token(
            pb::StartTotpEnrolmentRequest {},
            &person.access_token,
        ))
        .await
        .unwrap_err();
    assert_reason(&err, Code::FailedPrecondition, "SECOND_FACTOR_EXISTS");
    assert_eq!(
        h.count("recovery_codes WHERE used_at IS NULL").await,
        10,
        "only hashes are kept"
    );
    assert_eq!(
        h.count(&format!(
            "recovery_codes WHERE code_hash = convert_to('{}', 'UTF8')",
            person.recovery_codes[0]
        ))
        .await,
        0
    );

    // The password alone signs nobody in; the code of the enrolment step is spent, so the
    // next step's code is needed (the clock moves on 30 s).
    let challenge_token = challenge(&h, &person.login).await;
    let spent = h.totp_code(&person.secret);
    let err = complete(&h, &challenge_token, &spent, "")
        .await
        .unwrap_err();
    assert_reason(&err, Code::Unauthenticated, "INVALID_CODE");
    h.advance_clock(TimeDelta::seconds(30));
    let code = h.totp_code(&person.secret);
    let signed = complete(&h, &challenge_token, &code, "").await.unwrap();
    assert!(!signed.session_token.is_empty());
    assert_eq!(signed.account.unwrap().id, person.account.id);
    let token = claims(&signed.access_token);
    assert_eq!(token["amr"], serde_json::json!(["pwd", "otp"]));
    assert!(token["sfa"].as_i64().is_some() && token["sfx"].as_i64().is_some());
    // The challenge is used up, and the same code (step) is refused in a new sign-in.
    let err = complete(&h, &challenge_token, &code, "").await.unwrap_err();
    assert_reason(&err, Code::Unauthenticated, "SIGN_IN_CHALLENGE_ENDED");
    let again = challenge(&h, &person.login).await;
    let err = complete(&h, &again, &code, "").await.unwrap_err();
    assert_reason(&err, Code::Unauthenticated, "INVALID_CODE");

    // A recovery code works once, however it is typed; the owner is told how many are left.
    let recovery = person.recovery_codes[3].to_lowercase().replace('-', " ");
    let signed = complete(&h, &again, "", &recovery).await.unwrap();
    assert_eq!(signed.recovery_codes_left, 9);
    let mail = h.mail(&person.login, subject::RECOVERY_CODE_USED).await;
    assert!(mail.text.contains("You have 9 left"), "{}", mail.text);
    let third = challenge(&h, &person.login).await;
    let err = complete(&h, &third, "", &person.recovery_codes[3])
        .await
        .unwrap_err();
    assert_reason(&err, Code::Unauthenticated, "INVALID_CODE");
    // Bad input is a field error and counts nothing.
    for (code, recovery, field) in [
        ("", "", "code"),
        ("12345", "", "code"),
        ("", "not-a-code", "recovery_code"),
        ("123456", &*person.recovery_codes[0], "recovery_code"),
    ] {
        let err = complete(&h, &third, code, recovery).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{code} {recovery}");
        assert_eq!(cqrs_testkit::field_violations(&err)[0].0, field);
    }
    let outcomes = h
        .audit_rows("SIGN_IN", &person.account.id)
        .await
        .into_iter()
        .filter(|(outcome, details)| outcome == "failure" && details["reason"] == "wrong_code")
        .count();
    assert_eq!(outcomes, 3, "wrong codes are recorded like wrong passwords");
}

/// SECURITY: "guess budgets per account, not per flow" — wrong passwords, wrong codes and
/// wrong recovery codes add up on one counter, and a locked account checks no code.
#[tokio::test]
async fn passwords_codes_and_recovery_codes_share_one_guess_budget() {
    let h = start_with_mail(&[("CQRS_LOCKOUT_TEMPORARY_AFTER", "5")]).await;
    let person = enrol(&h, "sam.hale@practice.org").await;
    h.advance_clock(TimeDelta::seconds(30));

    for _ in 0..2 {
        let err = h
            .sign_in(&person.login, "Wrong#Password1")
            .await
            .unwrap_err();
        assert_reason(&err, Code::Unauthenticated, "INVALID_CREDENTIALS");
    }
    // The right password does not reset the count: only a finished sign-in does.
    let challenge_token = challenge(&h, &person.login).await;
    let right = h.totp_code(&person.secret);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..2 {
        let err = complete(&h, &challenge_token, wrong, "").await.unwrap_err();
        assert_reason(&err, Code::Unauthenticated, "INVALID_CODE");
    }
    let err = complete(&h, &challenge_token, "", "AAAA-BBBB-CCCC-DDDD")
        .await
        .unwrap_err();
    assert_reason(&err, Code::Unauthenticated, "INVALID_CODE");

    // Five failures in all: locked. The right code and the right password are refused.
    let err = complete(&h, &challenge_token, &right, "")
        .await
        .unwrap_err();
    assert_reason(&err, Code::Unauthenticated, "INVALID_CODE");
    let err = h.sign_in(&person.login, PASSWORDS[0]).await.unwrap_err();
    assert_reason(&err, Code::Unauthenticated, "INVALID_CREDENTIALS");
    let account = h
        .get_account(&h.desk_token().await, &person.account.id)
        .await
        .unwrap();
    assert_eq!(account.lock_state, pb::LockState::TemporarilyLocked as i32);

    // Once the lock is over, the right password and code sign in and reset the count.
    h.advance_clock(TimeDelta::seconds(61));
    let challenge_token = challenge(&h, &person.login).await;
    let code = h.totp_code(&person.secret);
    complete(&h, &challenge_token, &code, "").await.unwrap();
    let account = h
        .get_account(&h.desk_token().await, &person.account.id)
        .await
        .unwrap();
    assert_eq!(account.lock_state, pb::LockState::Unlocked as i32);
}

/// The policy: a role that needs a second factor is refused to a session without one, and
/// the sign-in says enrolment is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_that_need_a_second_factor_wait_for_enrolment() {
    let mut suite = Suite::builder()
        .env(
            Service::Identity,
            &[("CQRS_SECOND_FACTOR_ROLES", "SERVICE_DESK")],
        )
        .start()
        .await;
    suite.register_desk().await;
    let signed = suite
        .sign_in(suite.desk_user_id(), Suite::DESK_PASSWORD)
        .await
        .unwrap();
    assert!(signed.second_factor_enrolment_required);
    let organisation = signed.grants[0].organisation_id.clone();
    let err = suite
        .select_role(&signed.access_token, &organisation, Role::ServiceDesk)
        .await
        .unwrap_err();
    assert_reason(&err, Code::FailedPrecondition, "SECOND_FACTOR_REQUIRED");

    let (_, confirmed) = add_app(&suite, &signed.access_token).await;
    let desk = suite
        .select_role(&confirmed.access_token, &organisation, Role::ServiceDesk)
        .await
        .unwrap();
    assert_eq!(claims(&desk)["role"], "SERVICE_DESK");
    // From now on the desk's sign-in asks for the code.
    let again = suite
        .sign_in(suite.desk_user_id(), Suite::DESK_PASSWORD)
        .await
        .unwrap();
    assert!(again.second_factor_required);
}

/// Step-up: an administrative RPC refuses a token whose second-factor check is older than
/// the window, with its own reason; VerifySecondFactor gives a token that is let through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrative_actions_ask_for_a_recent_code() {
    let mut suite = Suite::builder()
        .env(
            Service::Identity,
            &[
                ("CQRS_SECOND_FACTOR_ROLES", "SERVICE_DESK"),
                ("CQRS_STEP_UP_WINDOW_SECS", "2"),
            ],
        )
        .start()
        .await;
    let desk = suite.register_desk().await;
    let signed = suite
        .sign_in(suite.desk_user_id(), Suite::DESK_PASSWORD)
        .await
        .unwrap();
    let organisation = signed.grants[0].organisation_id.clone();
    let (secret, confirmed) = add_app(&suite, &signed.access_token).await;
    let token = suite
        .select_role(&confirmed.access_token, &organisation, Role::ServiceDesk)
        .await
        .unwrap();
    let unlock = |token: String| {
        let mut identity = suite.identity();
        let account_id = desk.id.clone();
        async move {
            identity
                .unlock_account(with_token(pb::UnlockAccountRequest { account_id }, &token))
                .await
        }
    };
    unlock(token.clone()).await.unwrap();

    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let err = unlock(token.clone()).await.unwrap_err();
    assert_reason(&err, Code::PermissionDenied, "STEP_UP_REQUIRED");
    // Reading is not an administrative action.
    suite
        .identity()
        .get_account(with_token(
            pb::GetAccountRequest {
                account_id: desk.id.clone(),
            },
            &token,
        ))
        .await
        .unwrap();

    suite.advance_clock(TimeDelta::seconds(30));
    let fresh = suite
        .identity()
        .verify_second_factor(with_token(
            pb::VerifySecondFactorRequest {
                code: suite.totp_code(&secret),
                recovery_code: String::new(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claims(&fresh.access_token)["role"], "SERVICE_DESK");
    unlock(fresh.access_token).await.unwrap();
}

/// The desk removes a person's second factor: audited, mailed, the person's sessions end,
/// and the next sign-in needs the password alone. The desk never sees a secret.
#[tokio::test]
async fn the_desk_removes_a_second_factor() {
    let h = start_with_mail(&[]).await;
    let person = enrol(&h, "kai.lund@practice.org").await;
    let desk = h.desk_token().await;
    let remove = |account_id: String| {
        let mut identity = h.identity();
        let desk = desk.clone();
        async move {
            identity
                .remove_second_factor(with_token(
                    pb::RemoveSecondFactorRequest { account_id },
                    &desk,
                ))
                .await
        }
    };
    // Only the desk.
    let err = h
        .identity()
        .remove_second_factor(with_token(
            pb::RemoveSecondFactorRequest {
                account_id: person.account.id.clone(),
            },
            &person.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    remove(person.account.id.clone()).await.unwrap();
    h.mail(&person.login, subject::SECOND_FACTOR_REMOVED).await;
    assert_eq!(
        h.audit_rows("REMOVE_SECOND_FACTOR", &person.account.id)
            .await
            .len(),
        1
    );
    let err = h
        .get_account(&person.access_token, &person.account.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "the session ended");
    let account = h.get_account(&desk, &person.account.id).await.unwrap();
    assert!(!account.second_factor);
    let signed = h.sign_in(&person.login, PASSWORDS[0]).await.unwrap();
    assert!(!signed.second_factor_required);
    assert_eq!(h.count("recovery_codes").await, 0);

    let err = remove(person.account.id.clone()).await.unwrap_err();
    assert_reason(&err, Code::FailedPrecondition, "NO_SECOND_FACTOR");
}
