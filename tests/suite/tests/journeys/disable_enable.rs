//! Journey 4: an approver disables the user → the user cannot sign in, live sessions die →
//! the administrator re-enables → sign-in works.

use cqrs_proto::access::v1 as access_pb;
use cqrs_proto::common::v1::Role;
use cqrs_proto::identity::v1::{self as id_pb, AccountState};
use cqrs_proto::notifications::v1 as notifications_pb;
use cqrs_suite::{AuditQuery, Service, Suite, World, assert_reason, subject, with_token};
use tonic::Code;

use crate::summary;

const REASON: &str = "Left the practice";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_user_is_locked_out_until_re_enabled() {
    journey(&World::start().await).await;
}

/// The journey in `world` (one replica of each service, or two: `crate::replicas`).
pub async fn journey(world: &World) {
    let suite = &world.suite;
    let tree = &world.tree;
    let admin = &world.admin_session;
    let (approver, approver_session) = world.approver().await;
    let sam = world.practice_user().await;
    let live = suite
        .sign_in_person(&sam, &tree.practice, Role::PracticeUser)
        .await;
    assert_live(suite, &live.token, &live.sign_in.session_token).await;

    // Disabling is the approver's, not the account administrator's.
    let refused = disable(suite, &admin.token, &sam.account_id)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let disabled = disable(suite, &approver_session.token, &sam.account_id)
        .await
        .unwrap();
    assert_eq!(disabled.state, AccountState::Disabled as i32);

    // Sam's live session is dead everywhere at once, and signing in fails like a wrong
    // password.
    let ended = suite
        .access()
        .list_my_access_requests(with_token(
            access_pb::ListMyAccessRequestsRequest::default(),
            &live.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    let ended = suite
        .notifications()
        .get_preferences(with_token(
            notifications_pb::GetPreferencesRequest {},
            &live.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    let refresh = suite
        .identity()
        .refresh_access_token(id_pb::RefreshAccessTokenRequest {
            session_token: live.sign_in.session_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refresh.code(), Code::Unauthenticated, "{refresh:?}");
    let blocked = suite
        .sign_in(&sam.user_id, &sam.password)
        .await
        .unwrap_err();
    assert_reason(&blocked, Code::Unauthenticated, "INVALID_CREDENTIALS");
    let wrong = suite
        .sign_in(&sam.user_id, "Not#TheRightOne1")
        .await
        .unwrap_err();
    assert_eq!(
        (blocked.code(), blocked.message()),
        (wrong.code(), wrong.message()),
        "a disabled account looks like a wrong password"
    );
    suite.mail(&sam.email, subject::ACCOUNT_DISABLED).await;

    // Re-enabling is the administrator's (in scope through Sam's practice grant).
    let refused = enable(suite, &approver_session.token, &sam.account_id)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let enabled = enable(suite, &admin.token, &sam.account_id).await.unwrap();
    assert_eq!(enabled.state, AccountState::Active as i32);
    suite.mail(&sam.email, subject::ACCOUNT_ENABLED).await;

    // Sam signs in again, with the grant kept through it all.
    let back = suite
        .sign_in_person(&sam, &tree.practice, Role::PracticeUser)
        .await;
    assert_live(suite, &back.token, &back.sign_in.session_token).await;
    // The old session stays dead.
    let old = suite
        .identity()
        .refresh_access_token(id_pb::RefreshAccessTokenRequest {
            session_token: live.sign_in.session_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated);

    // Audit: who disabled and re-enabled, why, and the refused sign-in.
    let trail = suite
        .audit(Service::Identity, AuditQuery::target(&sam.account_id))
        .await;
    let disable_event = trail
        .iter()
        .find(|e| e.action == "DISABLE_ACCOUNT" && e.is_success())
        .unwrap_or_else(|| panic!("{}", summary(&trail)));
    assert_eq!(disable_event.actor_id, approver.account_id);
    assert_eq!(disable_event.detail("reason"), Some(REASON));
    // Who acted, as what, and what changed, from the record's before and after.
    assert!(!disable_event.actor_role.is_empty(), "{disable_event:?}");
    assert!(!disable_event.actor_name.is_empty(), "{disable_event:?}");
    assert!(!disable_event.actor_organisation_id.is_empty());
    assert_eq!(
        disable_event.change("accounts.state"),
        Some((&serde_json::json!("ACTIVE"), &serde_json::json!("DISABLED"))),
        "{disable_event:?}"
    );
    assert!(
        disable_event
            .changes
            .keys()
            .all(|f| !f.contains("password_hash")),
        "no secret is recorded: {disable_event:?}"
    );
    assert!(disable_event.sequence > 0);
    let enable_event = trail
        .iter()
        .find(|e| e.action == "ENABLE_ACCOUNT" && e.is_success())
        .unwrap_or_else(|| panic!("{}", summary(&trail)));
    assert_eq!(enable_event.actor_id, world.admin.account_id);
    // The refused sign-in (right password, disabled account) is recorded as such.
    let failures: Vec<&str> = trail
        .iter()
        .filter(|e| e.action == "SIGN_IN" && !e.is_success())
        .filter_map(|e| e.detail("reason"))
        .collect();
    assert_eq!(
        failures,
        ["disabled", "wrong_password"],
        "{}",
        summary(&trail)
    );
    // The refusals for lack of permission change nothing.
    let changes: Vec<&str> = trail
        .iter()
        .filter(|e| e.action.ends_with("_ACCOUNT") && e.is_success())
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        changes,
        ["CREATE_ACCOUNT", "DISABLE_ACCOUNT", "ENABLE_ACCOUNT"],
        "{}",
        summary(&trail)
    );

    suite.assert_every_change_audited().await;
}

async fn disable(
    suite: &Suite,
    token: &str,
    account_id: &str,
) -> Result<id_pb::Account, tonic::Status> {
    suite
        .identity()
        .disable_account(with_token(
            id_pb::DisableAccountRequest {
                account_id: account_id.into(),
                reason: REASON.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().account.unwrap())
}

async fn enable(
    suite: &Suite,
    token: &str,
    account_id: &str,
) -> Result<id_pb::Account, tonic::Status> {
    suite
        .identity()
        .enable_account(with_token(
            id_pb::EnableAccountRequest {
                account_id: account_id.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().account.unwrap())
}

/// The session works in access, notifications and identity.
async fn assert_live(suite: &Suite, token: &str, session_token: &str) {
    suite
        .access()
        .list_my_access_requests(with_token(
            access_pb::ListMyAccessRequestsRequest::default(),
            token,
        ))
        .await
        .unwrap();
    suite
        .notifications()
        .get_preferences(with_token(
            notifications_pb::GetPreferencesRequest {},
            token,
        ))
        .await
        .unwrap();
    suite
        .identity()
        .refresh_access_token(id_pb::RefreshAccessTokenRequest {
            session_token: session_token.into(),
        })
        .await
        .unwrap();
}
