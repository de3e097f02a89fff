//! Registration and reset links, password policy on every path, history and minimum age.

use std::time::Duration;

use chrono::TimeDelta;
use cqrs_proto::identity::v1 as pb;
use cqrs_suite::{Service, Suite};
use cqrs_testkit::{assert_reason, field_violations, with_token};
use tonic::Code;
use tonic::metadata::MetadataValue;

use crate::calls::{IdentityCalls, PASSWORDS, start, start_with_mail};

async fn reset(h: &Suite, token: &str, password: &str) -> Result<(), tonic::Status> {
    h.identity()
        .reset_password(pb::ResetPasswordRequest {
            token: token.into(),
            new_password: password.into(),
        })
        .await
        .map(drop)
}

async fn request_reset(h: &Suite, login: &str) {
    h.identity()
        .request_password_reset(pb::RequestPasswordResetRequest {
            login: login.into(),
        })
        .await
        .unwrap();
}

async fn change(
    h: &Suite,
    access_token: &str,
    current: &str,
    new: &str,
) -> Result<(), tonic::Status> {
    h.identity()
        .change_password(with_token(
            pb::ChangePasswordRequest {
                current_password: current.into(),
                new_password: new.into(),
            },
            access_token,
        ))
        .await
        .map(drop)
}

fn assert_policy(status: &tonic::Status, field: &str, code: &str) {
    assert_reason(status, Code::InvalidArgument, "PASSWORD_POLICY_VIOLATION");
    let violations = field_violations(status);
    assert!(
        violations
            .iter()
            .any(|(f, d)| f == field && d.starts_with(&format!("{code}: "))),
        "expected {field} {code}: {violations:?}"
    );
    // The rule is also the violation's machine-readable reason: no client parses text.
    let bad = tonic_types::StatusExt::get_details_bad_request(status).unwrap();
    assert!(
        bad.field_violations
            .iter()
            .any(|v| v.field == field && v.reason == code),
        "expected reason {code} on {field}: {:?}",
        bad.field_violations
    );
}

/// SECURITY 17 and 18 for registration links: two parallel uses, exactly one wins; replay,
/// expiry and a superseded link are refused with one answer.
#[tokio::test]
async fn registration_links_are_single_use_and_expire() {
    let h = start(&[]).await;
    let account = h
        .create(pb::Realm::National, "mia.cole@nhs.net", "Mia", "Cole")
        .await
        .unwrap();
    assert_eq!(account.state, pb::AccountState::PendingRegistration as i32);
    let token = h.outbox_token(&account.id, "REGISTRATION_LINK").await;
    // Only the hash is stored.
    let (stored,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM links WHERE token_hash = sha256($1::bytea)")
            .bind(token.as_bytes())
            .fetch_one(h.pool(Service::Identity))
            .await
            .unwrap();
    assert_eq!(stored, 1);
    let (raw,): (i64,) = sqlx::query_as("SELECT count(*) FROM links WHERE token_hash = $1")
        .bind(token.as_bytes())
        .fetch_one(h.pool(Service::Identity))
        .await
        .unwrap();
    assert_eq!(raw, 0);

    let (a, b) = tokio::join!(
        h.complete_registration(&token, PASSWORDS[0]),
        h.complete_registration(&token, PASSWORDS[1])
    );
    let results = [a, b];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_reason(err, Code::FailedPrecondition, "LINK_INVALID");
    }
    let activated = results.iter().find_map(|r| r.as_ref().ok()).unwrap();
    assert_eq!(activated.state, pb::AccountState::Active as i32);
    assert!(activated.password_change_time.is_some());
    let err = h
        .complete_registration(&token, PASSWORDS[2])
        .await
        .unwrap_err();
    assert_reason(&err, Code::FailedPrecondition, "LINK_INVALID");
    assert_eq!(
        h.audit_rows("COMPLETE_REGISTRATION", &account.id)
            .await
            .len(),
        1
    );

    // Expiry, with the clock moved past 7 days.
    let late = h
        .create(pb::Realm::Local, "ned.fox@practice.org", "Ned", "Fox")
        .await
        .unwrap();
    let late_token = h.outbox_token(&late.id, "REGISTRATION_LINK").await;
    h.clock.advance(TimeDelta::days(7) + TimeDelta::seconds(1));
    let err = h
        .complete_registration(&late_token, PASSWORDS[0])
        .await
        .unwrap_err();
    assert_reason(&err, Code::FailedPrecondition, "LINK_INVALID");

    // Junk and unknown tokens answer the same.
    for junk in ["x", &"A".repeat(43)] {
        let err = h
            .complete_registration(junk, PASSWORDS[0])
            .await
            .unwrap_err();
        assert_reason(&err, Code::FailedPrecondition, "LINK_INVALID");
    }
}

/// SECURITY 17, 18 and 20 for reset links; RequestPasswordReset answers the same for known
/// and unknown logins and mails only the known one.
#[tokio::test]
async fn reset_links_end_sessions_and_do_not_sign_in() {
    let h = start(&[("CQRS_RESET_LINK_TTL_SECS", "600")]).await;
    let account = h
        .active(pb::Realm::Local, "ola.ray@practice.org", PASSWORDS[0])
        .await;
    let signed = h.sign_in(&account.email, PASSWORDS[0]).await.unwrap();

    request_reset(&h, "nobody@practice.org").await;
    request_reset(&h, "ABC123").await;
    assert_eq!(h.outbox_count("PASSWORD_RESET").await, 0);
    request_reset(&h, &account.email).await;
    let first = h.outbox_token(&account.id, "PASSWORD_RESET").await;
    request_reset(&h, &account.email).await;
    let second = h.outbox_token(&account.id, "PASSWORD_RESET").await;
    assert_ne!(first, second);
    assert_eq!(h.outbox_count("PASSWORD_RESET").await, 2);

    // The older link was revoked by the newer one.
    let err = reset(&h, &first, PASSWORDS[1]).await.unwrap_err();
    assert_reason(&err, Code::FailedPrecondition, "LINK_INVALID");
    // A weak password is refused and leaves the link usable.
    let err = reset(&h, &second, "short").await.unwrap_err();
    assert_policy(&err, "new_password", "TOO_SHORT");

    let (a, b) = tokio::join!(
        reset(&h, &second, PASSWORDS[1]),
        reset(&h, &second, PASSWORDS[2])
    );
    assert_eq!(
        [&a, &b].iter().filter(|r| r.is_ok()).count(),
        1,
        "{a:?} {b:?}"
    );
    let err = reset(&h, &second, PASSWORDS[3]).await.unwrap_err();
    assert_reason(&err, Code::FailedPrecondition, "LINK_INVALID");

    // Every session ended; the reset signed nobody in.
    let err = h
        .get_account(&signed.access_token, &account.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let new_password = if a.is_ok() {
        PASSWORDS[1]
    } else {
        PASSWORDS[2]
    };
    h.sign_in(&account.email, new_password).await.unwrap();
    assert!(h.sign_in(&account.email, PASSWORDS[0]).await.is_err());
    assert!(
        h.outbox_payload(&account.id, "PASSWORD_CHANGED")
            .await
            .is_some()
    );
    assert_eq!(h.audit_rows("RESET_PASSWORD", &account.id).await.len(), 1);

    // Expired after the configured 10 minutes.
    request_reset(&h, &account.email).await;
    let third = h.outbox_token(&account.id, "PASSWORD_RESET").await;
    h.clock.advance(TimeDelta::minutes(11));
    let err = reset(&h, &third, PASSWORDS[4]).await.unwrap_err();
    assert_reason(&err, Code::FailedPrecondition, "LINK_INVALID");
}

/// Reset requests for one account arriving together leave exactly one link that works: the
/// account row orders them and `links_one_live` makes it the database's rule too.
#[tokio::test]
async fn concurrent_reset_requests_leave_one_live_link() {
    let h = start(&[]).await;
    let account = h
        .active(pb::Realm::Local, "ivy.lane@practice.org", PASSWORDS[0])
        .await;
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let mut client = h.identity();
            let login = account.email.clone();
            tokio::spawn(async move {
                client
                    .request_password_reset(pb::RequestPasswordResetRequest { login })
                    .await
            })
        })
        .collect();
    for request in requests {
        request.await.unwrap().unwrap();
    }
    let (live, all): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE used_at IS NULL AND revoked_at IS NULL), count(*) \
         FROM links WHERE account_id = $1::uuid AND purpose = 'PASSWORD_RESET'",
    )
    .bind(&account.id)
    .fetch_one(h.pool(Service::Identity))
    .await
    .unwrap();
    assert_eq!((live, all), (1, 8));
    // Eight mails went out; one of their links works.
    let tokens: Vec<(String,)> = sqlx::query_as(
        "SELECT payload->'params'->>'token' FROM outbox WHERE payload->>'account_id' = $1 \
           AND payload->>'template' = 'EMAIL_TEMPLATE_PASSWORD_RESET'",
    )
    .bind(&account.id)
    .fetch_all(h.pool(Service::Identity))
    .await
    .unwrap();
    assert_eq!(tokens.len(), 8);
    let mut worked = 0;
    for (token,) in &tokens {
        match reset(&h, token, PASSWORDS[1]).await {
            Ok(()) => worked += 1,
            Err(err) => assert_reason(&err, Code::FailedPrecondition, "LINK_INVALID"),
        }
    }
    assert_eq!(worked, 1);
}

/// Guessable passwords are refused with the rule that says why: a common word dressed up
/// (TOO_GUESSABLE, from the strength estimate), and with a deployment's breached list, a
/// listed password dressed up (COMMON_PASSWORD). The link stays usable after each refusal.
#[tokio::test]
async fn guessable_and_breached_passwords_are_refused_by_name() {
    let list = std::env::temp_dir().join(format!("breached-{}.txt", uuid::Uuid::new_v4()));
    std::fs::write(&list, "# test list\nmaldita\n").unwrap();
    let h = start(&[("IDENTITY_BREACHED_PASSWORDS_FILE", list.to_str().unwrap())]).await;
    let account = h
        .active(pb::Realm::Local, "pia.west@practice.org", PASSWORDS[0])
        .await;
    request_reset(&h, &account.email).await;
    let token = h.outbox_token(&account.id, "PASSWORD_RESET").await;
    let err = reset(&h, &token, "Butterfly2024!").await.unwrap_err();
    assert_policy(&err, "new_password", "TOO_GUESSABLE");
    let err = reset(&h, &token, "M@ld1t@2024!").await.unwrap_err();
    assert_policy(&err, "new_password", "COMMON_PASSWORD");
    reset(&h, &token, PASSWORDS[1]).await.unwrap();
    std::fs::remove_file(&list).unwrap();
}

/// Every path that sets a password applies the policy (SECURITY 12-13): registration,
/// change and reset.
#[tokio::test]
async fn every_password_path_enforces_the_policy() {
    let h = start(&[]).await;
    let account = h
        .create(pb::Realm::National, "pat.quinn@nhs.net", "Pat", "Quinn")
        .await
        .unwrap();
    let token = h.outbox_token(&account.id, "REGISTRATION_LINK").await;
    let user_id = account.user_id.clone();
    for (password, code) in [
        ("short", "TOO_SHORT"),
        ("alllowercaseletters", "NOT_ENOUGH_CLASSES"),
        ("Password123!", "COMMON_PASSWORD"),
        (&*format!("Xy#{user_id}9"), "CONTAINS_USER_ID"),
        ("Abcdefgh1234567890!Abcdefgh12345678", "TOO_LONG"),
        ("", "EMPTY"),
    ] {
        let err = h.complete_registration(&token, password).await.unwrap_err();
        assert_policy(&err, "password", code);
    }
    // A refused password does not use the link up.
    h.complete_registration(&token, PASSWORDS[0]).await.unwrap();

    let signed = h.sign_in(&user_id, PASSWORDS[0]).await.unwrap();
    h.clock.advance(TimeDelta::hours(73));
    let err = change(&h, &signed.access_token, PASSWORDS[0], "short")
        .await
        .unwrap_err();
    assert_policy(&err, "new_password", "TOO_SHORT");

    let desk = h.desk_token().await;
    h.identity()
        .send_password_reset(with_token(
            pb::SendPasswordResetRequest {
                account_id: account.id.clone(),
            },
            &desk,
        ))
        .await
        .unwrap();
    let reset_token = h.outbox_token(&account.id, "PASSWORD_RESET").await;
    let err = reset(&h, &reset_token, "alllowercaseletters")
        .await
        .unwrap_err();
    assert_reason(&err, Code::InvalidArgument, "PASSWORD_POLICY_VIOLATION");
    assert_eq!(field_violations(&err)[0].0, "new_password");
}

/// GetLink reads a link for its page without using it: the User ID and the realm's policy.
/// CompleteRegistration takes the first password as `new_password`, like every other
/// password-setting RPC, and violations name that field.
#[tokio::test]
async fn links_are_read_without_being_used() {
    let h = start(&[]).await;
    let account = h
        .create(pb::Realm::National, "ria.moss@nhs.net", "Ria", "Moss")
        .await
        .unwrap();
    let token = h.outbox_token(&account.id, "REGISTRATION_LINK").await;
    let get = |purpose: pb::LinkPurpose, token: &str| {
        let request = pb::GetLinkRequest {
            token: token.into(),
            purpose: purpose.into(),
        };
        let mut client = h.identity();
        async move { client.get_link(request).await }
    };
    for _ in 0..2 {
        let link = get(pb::LinkPurpose::Registration, &token)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(link.user_id, account.user_id);
        assert_eq!(link.realm, pb::Realm::National as i32);
        assert!(link.expire_time.is_some());
        assert!(
            link.password_policy[0].starts_with("Password must be 8-"),
            "{:?}",
            link.password_policy
        );
        assert!(
            link.password_policy
                .iter()
                .any(|line| line.contains("User ID"))
        );
    }
    // A link serves only its own purpose; no purpose is a field error.
    let err = get(pb::LinkPurpose::PasswordReset, &token)
        .await
        .unwrap_err();
    assert_reason(&err, Code::FailedPrecondition, "LINK_INVALID");
    let err = get(pb::LinkPurpose::Unspecified, &token).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&err)[0].0, "purpose");
    let err = get(pb::LinkPurpose::Registration, "x").await.unwrap_err();
    assert_reason(&err, Code::FailedPrecondition, "LINK_INVALID");

    let complete = |request: pb::CompleteRegistrationRequest| {
        let mut client = h.identity();
        async move { client.complete_registration(request).await }
    };
    let err = complete(pb::CompleteRegistrationRequest {
        token: token.clone(),
        new_password: "short".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_policy(&err, "new_password", "TOO_SHORT");
    let err = complete(pb::CompleteRegistrationRequest {
        token: token.clone(),
        password: PASSWORDS[0].into(),
        new_password: PASSWORDS[1].into(),
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&err)[0].0, "new_password");
    complete(pb::CompleteRegistrationRequest {
        token: token.clone(),
        new_password: PASSWORDS[0].into(),
        ..Default::default()
    })
    .await
    .unwrap();
    h.sign_in(&account.user_id, PASSWORDS[0]).await.unwrap();
    let err = get(pb::LinkPurpose::Registration, &token)
        .await
        .unwrap_err();
    assert_reason(&err, Code::FailedPrecondition, "LINK_INVALID");
}

/// History of 8 against stored hashes, the 72-hour minimum age, and its exemption for resets
/// sent by the service desk (SECURITY 14-16). ChangePassword checks the current password
/// through the lock-out and ends every session, the caller's included.
#[tokio::test]
async fn history_minimum_age_and_desk_exemption() {
    let h = start(&[
        ("CQRS_LOCKOUT_TEMPORARY_AFTER", "3"),
        ("CQRS_LOCKOUT_PERMANENT_AFTER", "20"),
    ])
    .await;
    let account = h
        .active(pb::Realm::National, "ray.stone@nhs.net", PASSWORDS[0])
        .await;
    let login = account.user_id.clone();

    let signed = h.sign_in(&login, PASSWORDS[0]).await.unwrap();
    // Too soon after registration.
    let err = change(&h, &signed.access_token, PASSWORDS[0], PASSWORDS[1])
        .await
        .unwrap_err();
    assert_policy(&err, "new_password", "CHANGED_TOO_RECENTLY");

    // The current password is checked through the lock-out.
    let err = change(&h, &signed.access_token, "Wrong#Current1", PASSWORDS[1])
        .await
        .unwrap_err();
    assert_reason(&err, Code::Unauthenticated, "INVALID_CREDENTIALS");
    assert_eq!(
        h.audit_rows("CHANGE_PASSWORD", &account.id).await[0].1["reason"],
        "wrong_password"
    );

    h.clock.advance(TimeDelta::hours(73));
    change(&h, &signed.access_token, PASSWORDS[0], PASSWORDS[1])
        .await
        .unwrap();
    // Every session ended, the caller's included; the owner is told.
    let err = h
        .get_account(&signed.access_token, &account.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        h.outbox_payload(&account.id, "PASSWORD_CHANGED")
            .await
            .is_some()
    );

    // Back to a previous password: refused by the history, even after the minimum age.
    h.clock.advance(TimeDelta::hours(73));
    let signed = h.sign_in(&login, PASSWORDS[1]).await.unwrap();
    let err = change(&h, &signed.access_token, PASSWORDS[1], PASSWORDS[0])
        .await
        .unwrap_err();
    assert_policy(&err, "new_password", "REUSED_PASSWORD");
    let err = change(&h, &signed.access_token, PASSWORDS[1], PASSWORDS[1])
        .await
        .unwrap_err();
    assert_policy(&err, "new_password", "REUSED_PASSWORD");
    change(&h, &signed.access_token, PASSWORDS[1], PASSWORDS[2])
        .await
        .unwrap();

    // A self-service reset right after the change is still subject to the minimum age...
    request_reset(&h, &login).await;
    let own = h.outbox_token(&account.id, "PASSWORD_RESET").await;
    let err = reset(&h, &own, PASSWORDS[3]).await.unwrap_err();
    assert_policy(&err, "new_password", "CHANGED_TOO_RECENTLY");
    // ...a reset sent by the desk is not.
    let desk = h.desk_token().await;
    h.identity()
        .send_password_reset(with_token(
            pb::SendPasswordResetRequest {
                account_id: account.id.clone(),
            },
            &desk,
        ))
        .await
        .unwrap();
    let sent = h.outbox_token(&account.id, "PASSWORD_RESET").await;
    reset(&h, &sent, PASSWORDS[3]).await.unwrap();
    h.sign_in(&login, PASSWORDS[3]).await.unwrap();
    // Only hashes are kept, and no more of them than the history needs.
    let (kept, plain): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE password_hash NOT LIKE '$argon2id$%') \
         FROM password_history WHERE account_id = $1::uuid",
    )
    .bind(&account.id)
    .fetch_one(h.pool(Service::Identity))
    .await
    .unwrap();
    assert_eq!((kept, plain), (4, 0));
}

/// SECURITY 19: the mailed link's host comes from configuration whatever the request says;
/// the user-ID reminder answers the same for any address and mails only a NATIONAL owner.
#[tokio::test]
async fn mailed_links_use_the_configured_host() {
    let h = start_with_mail(&[]).await;
    let account = h
        .active(pb::Realm::National, "sue.tate@nhs.net", PASSWORDS[0])
        .await;
    let smtp = &h.smtp;
    let registration = smtp.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(registration[0].subject, "Complete your CQRS registration");
    assert!(registration[0].text.contains(&account.user_id));

    // Past the minimum age of the registration password, so the reset below may set one.
    h.clock.advance(TimeDelta::hours(73));
    let mut request = tonic::Request::new(pb::RequestPasswordResetRequest {
        login: account.user_id.clone(),
    });
    for (key, value) in [
        ("x-forwarded-host", "evil.example.com"),
        ("host", "evil.example.com"),
        ("forwarded", "host=evil.example.com"),
    ] {
        request
            .metadata_mut()
            .insert(key, MetadataValue::try_from(value).unwrap());
    }
    h.identity().request_password_reset(request).await.unwrap();
    let mails = smtp.wait_for(2, Duration::from_secs(20)).await;
    let mail = &mails[1];
    assert_eq!(mail.subject, "Reset your CQRS password");
    let link = &mail.links()[0];
    assert!(
        link.as_str()
            .starts_with(&format!("{}password/reset?token=", Suite::BASE_URL)),
        "{link}"
    );
    assert!(!mail.raw.contains("evil.example.com"));
    // The mailed token works.
    let token = mail.link_token().unwrap();
    reset(&h, &token, PASSWORDS[1]).await.unwrap();
    let changed = smtp.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(changed[2].subject, "Your CQRS password has been changed");

    for email in ["nobody@nhs.net", "sue.tate@nhs.net"] {
        h.identity()
            .remind_user_id(pb::RemindUserIdRequest {
                email: email.into(),
            })
            .await
            .unwrap();
    }
    let mails = smtp.wait_for(4, Duration::from_secs(20)).await;
    assert_eq!(mails[3].subject, "Your CQRS User ID");
    assert!(mails[3].text.contains(&account.user_id));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.messages().len(), 4, "no mail for an unknown address");
}

/// SECURITY 9: reset and reminder requests answer known and unknown addresses alike, in time
/// too: their median answer times are within 5% of each other (both answer no sooner than
/// `CQRS_UNIFORM_ANSWER_MS`, set here to its default).
#[tokio::test]
async fn reset_and_reminder_timing_does_not_tell_known_from_unknown() {
    let h = start(&[("CQRS_UNIFORM_ANSWER_MS", "250")]).await;
    let account = h
        .active(pb::Realm::National, "uma.vance@nhs.net", PASSWORDS[0])
        .await;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut known = (Vec::new(), Vec::new());
    let mut unknown = (Vec::new(), Vec::new());
    for i in 0..15 {
        for (login, email, into) in [
            (account.user_id.clone(), account.email.clone(), &mut known),
            (
                format!("QQQ{:03}", i),
                format!("nobody{i}@nhs.net"),
                &mut unknown,
            ),
        ] {
            let started = std::time::Instant::now();
            request_reset(&h, &login).await;
            into.0.push(started.elapsed());
            let started = std::time::Instant::now();
            h.identity()
                .remind_user_id(pb::RemindUserIdRequest { email })
                .await
                .unwrap();
            into.1.push(started.elapsed());
        }
    }
    for (k, u) in [
        (median(known.0), median(unknown.0)),
        (median(known.1), median(unknown.1)),
    ] {
        assert!(
            k.abs_diff(u) <= k.max(u) / 20,
            "known {k:?} vs unknown {u:?}"
        );
    }
}
