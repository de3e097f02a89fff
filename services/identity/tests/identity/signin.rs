//! Sign-in, lock-out, sessions and tokens.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use cqrs_auth::{SigningKey, TokenIssuer};
use cqrs_identity::api::BAD_CREDENTIALS_MESSAGE;
use cqrs_identity::store::lockout::LockoutStore;
use cqrs_identity::{Clock as _, SystemClock};
use cqrs_proto::identity::v1 as pb;
use cqrs_suite::Service;
use cqrs_testkit::{assert_reason, status_reason, with_token};
use redis::AsyncCommands;
use tonic::Code;
use uuid::Uuid;

use crate::calls::{IdentityCalls, PASSWORDS, SERVICE_CLIENT, start, start_with_mail};

fn assert_bad_credentials(status: &tonic::Status) {
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), BAD_CREDENTIALS_MESSAGE);
    assert_eq!(
        status_reason(status).as_deref(),
        Some("INVALID_CREDENTIALS")
    );
}

#[tokio::test]
async fn sign_in_refresh_and_sign_out() {
    let h = start(&[]).await;
    let account = h
        .active(pb::Realm::National, "ann.smith@nhs.net", PASSWORDS[0])
        .await;
    assert_eq!(account.state, pb::AccountState::Active as i32);
    assert!(cqrs_identity::domain::user_id::is_valid_user_id(
        &account.user_id
    ));

    // A failure is counted; a success resets the counter (SECURITY 6).
    assert_bad_credentials(
        &h.sign_in(&account.user_id, "Wrong#Guess1")
            .await
            .unwrap_err(),
    );
    let lockout = LockoutStore::new(h.redis.conn.clone(), h.redis.namespace.clone());
    let id = Uuid::parse_str(&account.id).unwrap();
    assert_eq!(lockout.failures(id).await.unwrap(), 1);

    // The User ID is accepted in any case.
    let signed = h
        .sign_in(&account.user_id.to_lowercase(), PASSWORDS[0])
        .await
        .unwrap();
    assert_eq!(lockout.failures(id).await.unwrap(), 0);
    assert!(signed.grants.is_empty());
    assert_eq!(signed.account.as_ref().unwrap().id, account.id);
    let session = signed.session.as_ref().unwrap();
    assert_eq!(session.account_id, account.id);
    assert!(session.expire_time.is_some() && session.idle_expire_time.is_some());
    assert_ne!(signed.session_token, "");
    let expires = signed.expires_at.unwrap().seconds - SystemClock.now().timestamp();
    assert!((590..=600).contains(&expires), "{expires}");

    // The access token works on a protected RPC, and its session is the sign-in's.
    let me = h
        .get_account(&signed.access_token, &account.id)
        .await
        .unwrap();
    assert_eq!(me.email, "ann.smith@nhs.net");
    // The wrong guess, then the success.
    let outcomes: Vec<String> = h
        .audit_rows("SIGN_IN", &account.id)
        .await
        .into_iter()
        .map(|(outcome, _)| outcome)
        .collect();
    assert_eq!(outcomes, ["failure", "success"]);

    let refreshed = h
        .identity()
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            session_token: signed.session_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    h.get_account(&refreshed.access_token, &account.id)
        .await
        .unwrap();

    // Each sign-in is a new session with its own id.
    let second = h.sign_in(&account.user_id, PASSWORDS[0]).await.unwrap();
    assert_ne!(second.session_token, signed.session_token);

    h.identity()
        .sign_out(with_token(pb::SignOutRequest {}, &signed.access_token))
        .await
        .unwrap();
    for token in [&signed.access_token, &refreshed.access_token] {
        let err = h.get_account(token, &account.id).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let err = h
        .identity()
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            session_token: signed.session_token.clone(),
        })
        .await
        .unwrap_err();
    assert_reason(&err, Code::Unauthenticated, "SESSION_ENDED");
    // The other session is untouched.
    h.get_account(&second.access_token, &account.id)
        .await
        .unwrap();
    assert_eq!(h.audit_rows("signout", &account.id).await.len(), 1);

    // LOCAL accounts sign in with their address, in any case of the domain.
    let local = h
        .active(pb::Realm::Local, "bob.jones@practice.org", PASSWORDS[1])
        .await;
    assert_eq!(local.user_id, "");
    h.sign_in("bob.jones@PRACTICE.org", PASSWORDS[1])
        .await
        .unwrap();
}

/// SECURITY 4 and 9: unknown login, wrong password, locked account (right password), empty
/// password, disabled and pending accounts all get the same code, message and reason, and
/// take about as long.
#[tokio::test]
async fn every_refusal_looks_the_same() {
    let h = start(&[
        ("CQRS_LOCKOUT_TEMPORARY_AFTER", "2"),
        ("CQRS_LOCKOUT_PERMANENT_AFTER", "50"),
    ])
    .await;
    let account = h
        .active(pb::Realm::National, "carol.white@nhs.net", PASSWORDS[0])
        .await;
    let disabled = h
        .active(pb::Realm::Local, "dan.brown@practice.org", PASSWORDS[1])
        .await;
    h.identity()
        .disable_account(with_token(
            pb::DisableAccountRequest {
                account_id: disabled.id.clone(),
                reason: String::new(),
            },
            &h.service_token_of(SERVICE_CLIENT),
        ))
        .await
        .unwrap();
    let pending = h
        .create(pb::Realm::Local, "erin.green@practice.org", "Erin", "Green")
        .await
        .unwrap();

    let timed = |login: String, password: String| {
        let h = &h;
        async move {
            let started = Instant::now();
            let err = h.sign_in(&login, &password).await.unwrap_err();
            (err, started.elapsed())
        }
    };
    let (unknown, t_unknown) = timed("XYZ999".into(), PASSWORDS[0].into()).await;
    let (unknown_mail, _) = timed("nobody@nhs.net".into(), PASSWORDS[0].into()).await;
    let (wrong, t_wrong) = timed(account.user_id.clone(), "Wrong#Password1".into()).await;
    let (empty, _) = timed(account.user_id.clone(), String::new()).await;
    // Two failures: now temporarily locked; the right password is refused the same way.
    let (locked, t_locked) = timed(account.user_id.clone(), PASSWORDS[0].into()).await;
    let (disabled_err, _) = timed(disabled.email.clone(), PASSWORDS[1].into()).await;
    let (pending_err, _) = timed(pending.email.clone(), "Anything#123".into()).await;
    for err in [
        &unknown,
        &unknown_mail,
        &wrong,
        &empty,
        &locked,
        &disabled_err,
        &pending_err,
    ] {
        assert_bad_credentials(err);
    }
    // Locked answers skip hashing but are padded to a typical verify; unknown logins verify
    // against a dummy. Loose bounds: timing in CI is noisy.
    assert!(
        t_locked * 3 >= t_wrong,
        "locked {t_locked:?} vs wrong {t_wrong:?}"
    );
    assert!(
        t_unknown * 3 >= t_wrong,
        "unknown {t_unknown:?} vs wrong {t_wrong:?}"
    );

    // Attempts while locked do not move the counter.
    let lockout = LockoutStore::new(h.redis.conn.clone(), h.redis.namespace.clone());
    let id = Uuid::parse_str(&account.id).unwrap();
    assert_eq!(lockout.failures(id).await.unwrap(), 2);

    // Every outcome is audited with its reason, never the password.
    let reasons: Vec<String> = h
        .audit_rows("SIGN_IN", &account.id)
        .await
        .into_iter()
        .map(|(_, d)| d["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reasons, ["wrong_password", "wrong_password", "locked"]);
    let (unknown_rows,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM audit_events WHERE action = 'SIGN_IN' \
         AND details->>'reason' = 'unknown_login'",
    )
    .fetch_one(h.pool(Service::Identity))
    .await
    .unwrap();
    assert_eq!(unknown_rows, 2);
    assert_eq!(
        h.audit_rows("SIGN_IN", &disabled.id).await[0].1["reason"],
        "disabled"
    );
    let (leaks,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM audit_events WHERE details::text LIKE '%Harbor%' \
         OR details::text LIKE '%Wrong#%'",
    )
    .fetch_one(h.pool(Service::Identity))
    .await
    .unwrap();
    assert_eq!(leaks, 0);

    // Unknown logins leave nothing in Redis; the known account's counter is the only key.
    let keys = h.redis.keys().await;
    assert!(
        keys.iter()
            .all(|k| !k.contains("XYZ999") && !k.contains("nobody")),
        "{keys:?}"
    );
}

/// SECURITY 1 and 3: 200 wrong passwords in parallel against threshold T check at most T
/// passwords, and the stored counter equals the failures processed.
#[tokio::test]
async fn parallel_wrong_passwords_check_at_most_the_threshold() {
    const T: u32 = 5;
    let h = start(&[
        ("CQRS_LOCKOUT_TEMPORARY_AFTER", "5"),
        ("CQRS_LOCKOUT_PERMANENT_AFTER", "10"),
    ])
    .await;
    let account = h
        .active(pb::Realm::National, "fay.hill@nhs.net", PASSWORDS[0])
        .await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut client = h.identity();
        let login = account.user_id.clone();
        tasks.push(tokio::spawn(async move {
            client
                .sign_in(pb::SignInRequest {
                    login,
                    password: format!("Wrong#Guess{i}"),
                })
                .await
                .unwrap_err()
        }));
    }
    for task in tasks {
        assert_bad_credentials(&task.await.unwrap());
    }
    let verdicts = h
        .audit_rows("SIGN_IN", &account.id)
        .await
        .into_iter()
        .filter(|(_, d)| d["reason"] == "wrong_password")
        .count();
    assert_eq!(verdicts, T as usize);
    let lockout = LockoutStore::new(h.redis.conn.clone(), h.redis.namespace.clone());
    let id = Uuid::parse_str(&account.id).unwrap();
    assert_eq!(lockout.failures(id).await.unwrap(), T);
    // The one lock the flood caused is mailed to the owner, once.
    assert_eq!(h.outbox_count("ACCOUNT_LOCKED").await, 1);
    // Locked: even the right password is refused.
    assert_bad_credentials(&h.sign_in(&account.user_id, PASSWORDS[0]).await.unwrap_err());
}

/// A temporary lock lives only in Redis, yet the account shows it, with its end, wherever
/// the API returns accounts (GetAccount, LookupAccount, ListAccounts); it lifts by itself, and
/// the desk's unlock lifts it at once.
#[tokio::test]
async fn temporary_lock_shows_on_the_account() {
    let h = start(&[
        ("CQRS_LOCKOUT_TEMPORARY_AFTER", "2"),
        ("CQRS_LOCKOUT_PERMANENT_AFTER", "10"),
    ])
    .await;
    let account = h
        .active(pb::Realm::National, "hana.ward@nhs.net", PASSWORDS[0])
        .await;
    let other = h
        .active(pb::Realm::Local, "ivan.cole@practice.org", PASSWORDS[1])
        .await;
    let desk = h.desk_token().await;
    let service = h.service_token_of(SERVICE_CLIENT);
    let lock_of = |a: &pb::Account| {
        (
            pb::LockState::try_from(a.lock_state).unwrap(),
            a.lock_expire_time.map(|t| t.seconds),
        )
    };
    let list = |ids: Vec<String>| {
        let mut client = h.identity();
        let service = service.clone();
        async move {
            client
                .list_accounts(with_token(
                    pb::ListAccountsRequest {
                        account_ids: ids,
                        ..Default::default()
                    },
                    &service,
                ))
                .await
                .unwrap()
                .into_inner()
                .accounts
        }
    };

    // One failure is no lock yet.
    assert_bad_credentials(
        &h.sign_in(&account.user_id, "Wrong#Guess1")
            .await
            .unwrap_err(),
    );
    let view = h.get_account(&desk, &account.id).await.unwrap();
    assert_eq!(lock_of(&view), (pb::LockState::Unlocked, None));

    assert_bad_credentials(
        &h.sign_in(&account.user_id, "Wrong#Guess2")
            .await
            .unwrap_err(),
    );
    let expected_end = h.clock.now().timestamp() + 60;
    // The owner is told, once per lock: attempts while it lasts send nothing more.
    let locked_mail = h
        .outbox_payload(&account.id, "ACCOUNT_LOCKED")
        .await
        .unwrap();
    assert_eq!(locked_mail["params"]["minutes"], "1", "{locked_mail}");
    assert_bad_credentials(&h.sign_in(&account.user_id, PASSWORDS[0]).await.unwrap_err());
    assert_eq!(h.outbox_count("ACCOUNT_LOCKED").await, 1);
    let view = h.get_account(&desk, &account.id).await.unwrap();
    let (state, end) = lock_of(&view);
    assert_eq!(state, pb::LockState::TemporarilyLocked);
    let end = end.unwrap();
    assert!(
        (expected_end - 2..=expected_end).contains(&end),
        "{end} vs {expected_end}"
    );

    let looked_up = h
        .identity()
        .lookup_account(with_token(
            pb::LookupAccountRequest {
                key: Some(pb::lookup_account_request::Key::UserId(
                    account.user_id.clone(),
                )),
            },
            &service,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(lock_of(&looked_up), (state, Some(end)));

    let listed = list(vec![account.id.clone(), other.id.clone()]).await;
    assert_eq!(listed.len(), 2);
    for a in &listed {
        let want = if a.id == account.id {
            (pb::LockState::TemporarilyLocked, Some(end))
        } else {
            (pb::LockState::Unlocked, None)
        };
        assert_eq!(lock_of(a), want, "{}", a.email);
    }

    // Reading the lock leaves no trace for accounts that have none.
    let keys = h.redis.keys().await;
    assert!(keys.iter().all(|k| !k.contains(&other.id)), "{keys:?}");

    // The lock lifts by itself.
    h.clock.advance(TimeDelta::seconds(61));
    let view = h.get_account(&desk, &account.id).await.unwrap();
    assert_eq!(lock_of(&view), (pb::LockState::Unlocked, None));

    // A further failure locks again, longer; the desk's unlock lifts it at once.
    assert_bad_credentials(
        &h.sign_in(&account.user_id, "Wrong#Guess3")
            .await
            .unwrap_err(),
    );
    let view = h.get_account(&desk, &account.id).await.unwrap();
    let (state, end) = lock_of(&view);
    assert_eq!(state, pb::LockState::TemporarilyLocked);
    let wait = end.unwrap() - h.clock.now().timestamp();
    assert!((118..=120).contains(&wait), "{wait}");
    assert_eq!(h.outbox_count("ACCOUNT_LOCKED").await, 2);
    let locked_mail = h
        .outbox_payload(&account.id, "ACCOUNT_LOCKED")
        .await
        .unwrap();
    assert_eq!(locked_mail["params"]["minutes"], "2", "{locked_mail}");
    let unlocked = h
        .identity()
        .unlock_account(with_token(
            pb::UnlockAccountRequest {
                account_id: account.id.clone(),
            },
            &desk,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(lock_of(&unlocked), (pb::LockState::Unlocked, None));
    let view = h.get_account(&desk, &account.id).await.unwrap();
    assert_eq!(lock_of(&view), (pb::LockState::Unlocked, None));
    h.sign_in(&account.user_id, PASSWORDS[0]).await.unwrap();
}

/// Permanent lock: durable in Postgres (a Redis flush does not lift it), audited, mailed,
/// ends sessions; only the service desk lifts it (audited, mailed).
#[tokio::test]
async fn permanent_lock_is_durable_mailed_and_lifted_by_the_desk() {
    let h = start_with_mail(&[
        ("CQRS_LOCKOUT_TEMPORARY_AFTER", "3"),
        ("CQRS_LOCKOUT_PERMANENT_AFTER", "3"),
    ])
    .await;
    let account = h
        .active(pb::Realm::National, "gina.lowe@nhs.net", PASSWORDS[0])
        .await;
    let signed = h.sign_in(&account.user_id, PASSWORDS[0]).await.unwrap();
    // Registration mail first.
    h.smtp.wait_for(1, Duration::from_secs(20)).await;

    for _ in 0..3 {
        assert_bad_credentials(
            &h.sign_in(&account.user_id, "Wrong#Guess1")
                .await
                .unwrap_err(),
        );
    }
    let (locked_at,): (Option<chrono::DateTime<Utc>>,) =
        sqlx::query_as("SELECT locked_at FROM accounts WHERE id = $1::uuid")
            .bind(&account.id)
            .fetch_one(h.pool(Service::Identity))
            .await
            .unwrap();
    assert!(locked_at.is_some());
    assert_eq!(h.audit_rows("LOCK_ACCOUNT", &account.id).await.len(), 1);
    // The lock ended the session.
    let err = h
        .get_account(&signed.access_token, &account.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mails = h.smtp.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(mails[1].subject, "Your CQRS account has been locked");
    assert_eq!(mails[1].to, vec!["gina.lowe@nhs.net".to_owned()]);

    // Redis loses everything: Postgres still holds the lock.
    let mut conn = h.redis.conn.clone();
    for key in h.redis.keys().await {
        conn.del::<_, ()>(key).await.unwrap();
    }
    assert_bad_credentials(&h.sign_in(&account.user_id, PASSWORDS[0]).await.unwrap_err());

    let desk = h.desk_token().await;
    let account_view = h.get_account(&desk, &account.id).await.unwrap();
    assert_eq!(
        account_view.lock_state,
        pb::LockState::PermanentlyLocked as i32
    );

    // Not the desk: refused, before anything is looked up.
    let user = h.role_token(Uuid::new_v4(), None).await;
    for id in [account.id.clone(), Uuid::new_v4().to_string()] {
        let err = h
            .identity()
            .unlock_account(with_token(
                pb::UnlockAccountRequest { account_id: id },
                &user,
            ))
            .await
            .unwrap_err();
        assert_reason(&err, Code::PermissionDenied, "SERVICE_DESK_REQUIRED");
    }
    let unlocked = h
        .identity()
        .unlock_account(with_token(
            pb::UnlockAccountRequest {
                account_id: account.id.clone(),
            },
            &desk,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(unlocked.lock_state, pb::LockState::Unlocked as i32);
    assert_eq!(h.audit_rows("UNLOCK_ACCOUNT", &account.id).await.len(), 1);
    let mails = h.smtp.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(mails[2].subject, "Your CQRS account has been unlocked");
    h.sign_in(&account.user_id, PASSWORDS[0]).await.unwrap();
}

/// Sessions end on disable (and the account cannot sign in); enabling lets it back in.
#[tokio::test]
async fn disable_ends_sessions_and_enable_restores_sign_in() {
    let h = start(&[]).await;
    let account = h
        .active(pb::Realm::Local, "hal.king@practice.org", PASSWORDS[0])
        .await;
    let other = h
        .active(pb::Realm::Local, "ivy.lane@practice.org", PASSWORDS[1])
        .await;
    let signed = h.sign_in(&account.email, PASSWORDS[0]).await.unwrap();
    let other_signed = h.sign_in(&other.email, PASSWORDS[1]).await.unwrap();

    // Someone else may not disable the account: a user with no active grant has no scope
    // (approvers in scope: tests/identity/scope.rs).
    let err = h
        .identity()
        .disable_account(with_token(
            pb::DisableAccountRequest {
                account_id: account.id.clone(),
                reason: String::new(),
            },
            &other_signed.access_token,
        ))
        .await
        .unwrap_err();
    assert_reason(&err, Code::PermissionDenied, "NO_ACTIVE_GRANT");

    let disabled = h
        .identity()
        .disable_account(with_token(
            pb::DisableAccountRequest {
                account_id: account.id.clone(),
                reason: "leaving the practice".into(),
            },
            &signed.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(disabled.state, pb::AccountState::Disabled as i32);
    let err = h
        .get_account(&signed.access_token, &account.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_bad_credentials(&h.sign_in(&account.email, PASSWORDS[0]).await.unwrap_err());
    assert_eq!(
        h.audit_rows("DISABLE_ACCOUNT", &account.id).await[0].1["reason"],
        "leaving the practice"
    );
    assert!(
        h.outbox_payload(&account.id, "ACCOUNT_DISABLED")
            .await
            .is_some()
    );

    // Enabling: not the user, the desk.
    let err = h
        .identity()
        .enable_account(with_token(
            pb::EnableAccountRequest {
                account_id: account.id.clone(),
            },
            &other_signed.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let desk = h.desk_token().await;
    h.identity()
        .enable_account(with_token(
            pb::EnableAccountRequest {
                account_id: account.id.clone(),
            },
            &desk,
        ))
        .await
        .unwrap();
    assert!(
        h.outbox_payload(&account.id, "ACCOUNT_ENABLED")
            .await
            .is_some()
    );
    // Enabling twice is refused as a state error.
    let err = h
        .identity()
        .enable_account(with_token(
            pb::EnableAccountRequest {
                account_id: account.id.clone(),
            },
            &desk,
        ))
        .await
        .unwrap_err();
    assert_reason(&err, Code::FailedPrecondition, "ACCOUNT_NOT_DISABLED");
    h.sign_in(&account.email, PASSWORDS[0]).await.unwrap();
}

/// Tokens signed by another key, under an unknown kid, expired, or malformed are refused;
/// GetSigningKeys serves the signing key and the rotation keys in JWKS form.
#[tokio::test]
async fn only_live_tokens_signed_by_served_keys_are_accepted() {
    let old = SigningKey::generate("rotated-out");
    let old_env = old.verifying_key().to_env_value();
    let h = start(&[("CQRS_TOKEN_VERIFY_KEYS", &old_env)]).await;
    let account = h
        .active(pb::Realm::Local, "jo.park@practice.org", PASSWORDS[0])
        .await;
    let id = Uuid::parse_str(&account.id).unwrap();
    let signed = h.sign_in(&account.email, PASSWORDS[0]).await.unwrap();
    let sid = {
        // The sid of the live session, to forge tokens for it.
        let record = cqrs_identity::store::sessions::SessionStore::new(
            h.redis.conn.clone(),
            h.redis.namespace.clone(),
            Duration::from_secs(60),
            Duration::from_secs(600),
        )
        .by_token(&signed.session_token, h.clock.now())
        .await
        .unwrap()
        .unwrap();
        record.session_id
    };

    let keys = h
        .identity()
        .get_signing_keys(pb::GetSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    let kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, [h.keys.signing.kid(), "rotated-out"]);
    for key in &keys {
        assert_eq!(
            (key.kty.as_str(), key.crv.as_str(), key.alg.as_str()),
            ("OKP", "Ed25519", "EdDSA")
        );
        assert_eq!(key.x.len(), 43);
    }
    assert_eq!(
        keys[0].x,
        h.keys.signing.verifying_key().public_key_b64url()
    );

    let ttl = Duration::from_secs(600);
    // A token from the rotated-out key still verifies while its key is served.
    let rotated = TokenIssuer::new(old, ttl)
        .issue_user(id, &sid, None, SystemClock.now())
        .unwrap()
        .token;
    h.get_account(&rotated, &account.id).await.unwrap();

    let impostor_same_kid = TokenIssuer::new(SigningKey::generate(h.keys.signing.kid()), ttl)
        .issue_user(id, &sid, None, SystemClock.now())
        .unwrap()
        .token;
    let unknown_kid = TokenIssuer::new(SigningKey::generate("elsewhere"), ttl)
        .issue_user(id, &sid, None, SystemClock.now())
        .unwrap()
        .token;
    let expired = TokenIssuer::new(h.keys.signing.clone(), ttl)
        .issue_user(
            id,
            &sid,
            None,
            SystemClock.now() - chrono::TimeDelta::hours(1),
        )
        .unwrap()
        .token;
    let mut tampered = signed.access_token.clone();
    tampered.pop();
    tampered.push(if signed.access_token.ends_with('A') {
        'B'
    } else {
        'A'
    });
    for token in [
        impostor_same_kid,
        unknown_kid,
        expired,
        tampered,
        "garbage".to_owned(),
    ] {
        let err = h.get_account(&token, &account.id).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{token}");
    }
    h.get_account(&signed.access_token, &account.id)
        .await
        .unwrap();
}

#[tokio::test]
async fn service_tokens_need_the_right_secret() {
    let h = start(&[]).await;
    let secret = h.client_secret(SERVICE_CLIENT);
    // Not among the suite's internal clients (directory, access, gateway).
    let unknown = "reporting";
    let issued = h
        .identity()
        .issue_service_token(pb::IssueServiceTokenRequest {
            client_id: SERVICE_CLIENT.into(),
            client_secret: secret.into(),
        })
        .await
        .unwrap()
        .into_inner();
    // Internal callers may list accounts.
    h.identity()
        .list_accounts(with_token(
            pb::ListAccountsRequest::default(),
            &issued.access_token,
        ))
        .await
        .unwrap();

    let mut messages = Vec::new();
    for (client_id, secret) in [(SERVICE_CLIENT, "wrong-secret"), (unknown, secret)] {
        let err = h
            .identity()
            .issue_service_token(pb::IssueServiceTokenRequest {
                client_id: client_id.into(),
                client_secret: secret.into(),
            })
            .await
            .unwrap_err();
        assert_reason(&err, Code::Unauthenticated, "INVALID_CLIENT_CREDENTIALS");
        messages.push(err.message().to_owned());
    }
    assert_eq!(messages[0], messages[1]);
    // One refusal for the unknown client; the known one was issued once and refused once.
    let outcomes = |rows: Vec<(String, serde_json::Value)>| -> Vec<String> {
        rows.into_iter().map(|(outcome, _)| outcome).collect()
    };
    assert_eq!(
        outcomes(h.audit_rows("ISSUE_SERVICE_TOKEN", unknown).await),
        ["failure"]
    );
    assert_eq!(
        outcomes(h.audit_rows("ISSUE_SERVICE_TOKEN", SERVICE_CLIENT).await),
        ["success", "failure"]
    );
}

/// EndSessions is for internal callers. (SelectRole: see grants.rs.)
#[tokio::test]
async fn end_sessions() {
    let h = start(&[]).await;
    let account = h
        .active(pb::Realm::Local, "kim.ross@practice.org", PASSWORDS[0])
        .await;
    let a = h.sign_in(&account.email, PASSWORDS[0]).await.unwrap();
    let b = h.sign_in(&account.email, PASSWORDS[0]).await.unwrap();

    let request = || pb::EndSessionsRequest {
        account_id: account.id.clone(),
        organisation_id: String::new(),
        role: 0,
        reason: "ROLE_REVOKED".into(),
    };
    let err = h
        .identity()
        .end_sessions(with_token(request(), &a.access_token))
        .await
        .unwrap_err();
    assert_reason(&err, Code::PermissionDenied, "SERVICE_PRINCIPAL_REQUIRED");
    let ended = h
        .identity()
        .end_sessions(with_token(request(), &h.service_token_of(SERVICE_CLIENT)))
        .await
        .unwrap()
        .into_inner()
        .ended_count;
    assert_eq!(ended, 2);
    for token in [&a.access_token, &b.access_token] {
        assert_eq!(
            h.get_account(token, &account.id).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    assert_eq!(
        h.audit_rows("END_SESSIONS", &account.id).await[0].1["reason"],
        "ROLE_REVOKED"
    );
}
