//! Journey 6: wrong passwords lock the account → the service desk unlocks and sends a reset
//! link → the user resets and signs in; the minimum-age rule does not block that reset.

use cqrs_proto::common::v1::Role;
use cqrs_proto::identity::v1::{self as id_pb, LockState};
use cqrs_suite::{
    AuditQuery, NEW_PASSWORD, Service, Suite, World, assert_reason, field_violations, subject,
    with_token,
};
use tonic::Code;

use crate::{assert_link, summary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_out_user_is_unlocked_and_resets_within_the_minimum_age() {
    journey(&World::start().await).await;
}

/// The journey in `world` (one replica of each service, or two: `crate::replicas`).
pub async fn journey(world: &World) {
    let suite = &world.suite;
    let tree = &world.tree;
    let desk = &world.desk;
    let sam = world.practice_user().await;
    let session = suite
        .sign_in_person(&sam, &tree.practice, Role::PracticeUser)
        .await;

    // Just registered: changing the password by oneself is refused (72 h minimum age).
    let too_soon = suite
        .identity()
        .change_password(with_token(
            id_pb::ChangePasswordRequest {
                current_password: sam.password.clone(),
                new_password: NEW_PASSWORD.into(),
            },
            &session.token,
        ))
        .await
        .unwrap_err();
    assert_reason(
        &too_soon,
        Code::InvalidArgument,
        "PASSWORD_POLICY_VIOLATION",
    );
    let rules = field_violations(&too_soon);
    assert!(
        rules.iter().any(
            |(field, rule)| field == "new_password" && rule.starts_with("CHANGED_TOO_RECENTLY")
        ),
        "{rules:?}"
    );

    // Wrong passwords: the last allowed one locks the account for good.
    for attempt in 1..=Suite::LOCKOUT_THRESHOLD {
        let wrong = suite
            .sign_in(&sam.user_id, &format!("Guess#Number{attempt}x"))
            .await
            .unwrap_err();
        assert_reason(&wrong, Code::Unauthenticated, "INVALID_CREDENTIALS");
    }
    let locked = suite
        .sign_in(&sam.user_id, &sam.password)
        .await
        .unwrap_err();
    assert_reason(&locked, Code::Unauthenticated, "INVALID_CREDENTIALS");
    let wrong = suite.sign_in("ZZZ999", &sam.password).await.unwrap_err();
    assert_eq!(
        locked.message(),
        wrong.message(),
        "a locked account answers like an unknown login"
    );
    let mail = suite.mail(&sam.email, subject::ACCOUNT_LOCKED).await;
    assert!(mail.links().is_empty(), "{mail:#?}");
    // Locking ended the live session.
    let ended = suite
        .identity()
        .refresh_access_token(id_pb::RefreshAccessTokenRequest {
            session_token: session.session_token().into(),
        })
        .await
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated);

    // The service desk sees the permanent lock, lifts it and sends a reset link.
    assert_eq!(
        account(suite, &desk.token, &sam.account_id)
            .await
            .lock_state,
        LockState::PermanentlyLocked as i32
    );
    let unlocked = suite
        .identity()
        .unlock_account(with_token(
            id_pb::UnlockAccountRequest {
                account_id: sam.account_id.clone(),
            },
            &desk.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(unlocked.lock_state, LockState::Unlocked as i32);
    suite.mail(&sam.email, subject::ACCOUNT_UNLOCKED).await;
    // Only the desk may do either.
    let refused = suite
        .identity()
        .send_password_reset(with_token(
            id_pb::SendPasswordResetRequest {
                account_id: sam.account_id.clone(),
            },
            &world.admin_session.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    suite
        .identity()
        .send_password_reset(with_token(
            id_pb::SendPasswordResetRequest {
                account_id: sam.account_id.clone(),
            },
            &desk.token,
        ))
        .await
        .unwrap();
    let mail = suite.mail(&sam.email, subject::PASSWORD_RESET).await;
    let link = assert_link(&mail, "password/reset");

    // Sam resets — still within 72 h of registering — and signs in with the new password.
    suite
        .identity()
        .reset_password(id_pb::ResetPasswordRequest {
            token: link.clone(),
            new_password: NEW_PASSWORD.into(),
        })
        .await
        .unwrap();
    let reused = suite
        .identity()
        .reset_password(id_pb::ResetPasswordRequest {
            token: link,
            new_password: "Another#Choice64".into(),
        })
        .await
        .unwrap_err();
    assert_reason(&reused, Code::FailedPrecondition, "LINK_INVALID");
    let back = suite
        .sign_in_as(
            &sam.user_id,
            NEW_PASSWORD,
            &tree.practice.id,
            Role::PracticeUser,
        )
        .await;
    assert_eq!(back.account_id(), sam.account_id);
    assert_eq!(back.account().lock_state, LockState::Unlocked as i32);

    // Audit: the failures, the lock, the desk's unlock and reset link, the reset, the sign-in.
    let trail = suite
        .audit(Service::Identity, AuditQuery::target(&sam.account_id))
        .await;
    let failures: Vec<&str> = trail
        .iter()
        .filter(|e| e.action == "SIGN_IN")
        .filter_map(|e| e.detail("failures"))
        .collect();
    assert_eq!(failures[..3], ["1", "2", "3"], "{}", summary(&trail));
    let lock = trail
        .iter()
        .find(|e| e.action == "LOCK_ACCOUNT")
        .unwrap_or_else(|| panic!("{}", summary(&trail)));
    assert_eq!(lock.actor_kind, "SYSTEM");
    let by_desk: Vec<&str> = trail
        .iter()
        .filter(|e| e.actor_id == suite.desk_account_id() && e.is_success())
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(by_desk, ["UNLOCK_ACCOUNT", "SEND_PASSWORD_RESET"]);
    let tail: Vec<(&str, &str)> = trail
        .iter()
        .rev()
        .take(3)
        .map(|e| (e.action.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        tail,
        [
            ("SELECT_ROLE", "SUCCESS"),
            ("SIGN_IN", "SUCCESS"),
            ("RESET_PASSWORD", "SUCCESS")
        ]
    );
    // The refused self-service change changed nothing; the reset was the exempt one.
    assert!(
        !trail
            .iter()
            .any(|e| e.action == "CHANGE_PASSWORD" && e.is_success()),
        "{}",
        summary(&trail)
    );
    let reset = trail
        .iter()
        .find(|e| e.action == "RESET_PASSWORD")
        .unwrap_or_else(|| panic!("{}", summary(&trail)));
    assert_eq!(reset.detail("exempt_min_age"), Some("true"));

    suite.assert_every_change_audited().await;
}

async fn account(suite: &Suite, token: &str, account_id: &str) -> id_pb::Account {
    suite
        .identity()
        .get_account(with_token(
            id_pb::GetAccountRequest {
                account_id: account_id.into(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap()
}
