//! Revocation ends sessions at once, through the real identity service: the session acting
//! through the revoked grant dies, the account's other sessions live, and the login stays.
//! While identity is down nothing is lost: sessions end as soon as it is back.

use std::time::Duration;

use cqrs_auth::Role;
use cqrs_proto::directory::v1 as pb;
use cqrs_proto::identity::v1 as ipb;
use cqrs_suite::Service;
use cqrs_testkit::with_token;
use uuid::Uuid;

use crate::calls::{DirectoryCalls, Tree, with_identity, with_identity_down};

const PASSWORD: &str = "Velvet#Harbor42";

#[tokio::test]
async fn revoking_a_grant_ends_its_sessions_at_once() {
    let h = with_identity().await;
    let tree = Tree::build(&h).await;
    let account = Uuid::new_v4();
    let manager = h
        .grant(account, tree.p1, Role::PracticeManager)
        .await
        .unwrap();
    h.grant(account, tree.c1, Role::CommissioningUser)
        .await
        .unwrap();
    let as_manager = h
        .session(account, Some((tree.p1, Role::PracticeManager)))
        .await;
    let as_manager_too = h
        .session(account, Some((tree.p1, Role::PracticeManager)))
        .await;
    let as_commissioner = h
        .session(account, Some((tree.c1, Role::CommissioningUser)))
        .await;
    let no_role = h.session(account, None).await;
    for token in [&as_manager, &as_manager_too, &as_commissioner, &no_role] {
        assert!(h.alive(token).await);
    }

    let (_, admin) = h
        .member(tree.c1, Role::CommissioningAccountAdministrator)
        .await;
    h.directory()
        .revoke_role(with_token(
            pb::RevokeRoleRequest {
                grant_id: manager.id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap();
    // At once: no waiting, and not the background task's doing (a new row is only due to it
    // once its lease, 30 s, has run out).
    assert!(!h.alive(&as_manager).await);
    assert!(!h.alive(&as_manager_too).await);
    assert!(h.alive(&as_commissioner).await);
    assert!(h.alive(&no_role).await);
    assert_eq!(h.count("session_revocations").await, 0);
    assert_eq!(
        h.identity_count(
            "SELECT count(*) FROM audit_events WHERE action = 'END_SESSIONS' \
             AND details->>'reason' = 'ROLE_REVOKED' AND (details->>'ended')::int = 2"
        )
        .await,
        1
    );

    // A second revocation reuses the cached service token.
    let other = h.grant(account, tree.p2, Role::PracticeUser).await.unwrap();
    h.directory()
        .revoke_role(with_token(
            pb::RevokeRoleRequest { grant_id: other.id },
            &h.svc(),
        ))
        .await
        .unwrap();
    assert_eq!(
        h.identity_count(
            "SELECT count(*) FROM audit_events \
             WHERE action = 'ISSUE_SERVICE_TOKEN' AND outcome = 'success'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn revoke_all_roles_keeps_the_login() {
    let h = with_identity().await;
    let tree = Tree::build(&h).await;
    let mut identity = h.identity();
    // A real, registered account.
    let email = format!("ann.smith.{}@nhs.net", Uuid::new_v4().simple());
    let created = identity
        .create_account(with_token(
            ipb::CreateAccountRequest {
                request_id: Uuid::new_v4().to_string(),
                realm: ipb::Realm::Local as i32,
                email: email.clone(),
                first_name: "Ann".into(),
                last_name: "Smith".into(),
            },
            &h.service_token_of("access"),
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    let (payload,): (serde_json::Value,) = sqlx::query_as(
        "SELECT payload FROM outbox WHERE payload->>'account_id' = $1 \
         AND payload->>'template' = 'EMAIL_TEMPLATE_REGISTRATION_LINK'",
    )
    .bind(&created.id)
    .fetch_one(h.pool(Service::Identity))
    .await
    .unwrap();
    identity
        .complete_registration(ipb::CompleteRegistrationRequest {
            token: payload["params"]["token"].as_str().unwrap().into(),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let account = Uuid::parse_str(&created.id).unwrap();

    h.grant(account, tree.p1, Role::PracticeManager)
        .await
        .unwrap();
    h.grant(account, tree.c1, Role::CommissioningFinance)
        .await
        .unwrap();
    h.grant(account, tree.p4, Role::PracticeUser).await.unwrap();
    let at_p1 = h
        .session(account, Some((tree.p1, Role::PracticeManager)))
        .await;
    let at_c1 = h
        .session(account, Some((tree.c1, Role::CommissioningFinance)))
        .await;
    let at_p4 = h
        .session(account, Some((tree.p4, Role::PracticeUser)))
        .await;
    let signed_in = identity
        .sign_in(ipb::SignInRequest {
            login: email.clone(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();

    // An administrator of C1 revokes what lies in its scope: P1 and C1, not P4.
    let (_, admin) = h
        .member(tree.c1, Role::CommissioningAccountAdministrator)
        .await;
    let removed = h
        .directory()
        .revoke_all_roles(with_token(
            pb::RevokeAllRolesRequest {
                account_id: account.to_string(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .grants;
    let mut codes: Vec<_> = removed.iter().map(|g| g.ods_code.as_str()).collect();
    codes.sort_unstable();
    assert_eq!(codes, ["15N", "A81001"]);
    assert!(!h.alive(&at_p1).await);
    assert!(!h.alive(&at_c1).await);
    assert!(h.alive(&at_p4).await);
    assert!(h.alive(&signed_in.access_token).await);

    // Internal callers revoke everything; the login still works.
    let removed = h
        .directory()
        .revoke_all_roles(with_token(
            pb::RevokeAllRolesRequest {
                account_id: account.to_string(),
            },
            &h.svc(),
        ))
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert_eq!(removed.len(), 1);
    assert!(!h.alive(&at_p4).await);
    assert!(h.alive(&signed_in.access_token).await);
    let grants = h
        .directory()
        .list_grants(with_token(
            pb::ListGrantsRequest {
                account_id: account.to_string(),
                ..Default::default()
            },
            &signed_in.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert!(grants.is_empty());
    identity
        .sign_in(ipb::SignInRequest {
            login: email,
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    assert_eq!(h.audit_rows("REVOKE_ROLE").await.len(), 3);
    assert_eq!(h.audit_rows("REVOKE_ALL_ROLES").await.len(), 2);
}

#[tokio::test]
async fn sessions_end_as_soon_as_identity_is_back() {
    let mut h = with_identity_down().await;
    let tree = Tree::build(&h).await;
    let account = Uuid::new_v4();
    let grant = h.grant(account, tree.p1, Role::PracticeUser).await.unwrap();
    let token = h
        .session(account, Some((tree.p1, Role::PracticeUser)))
        .await;
    h.directory()
        .revoke_role(with_token(
            pb::RevokeRoleRequest { grant_id: grant.id },
            &h.svc(),
        ))
        .await
        .unwrap();
    // Committed and recorded; the session waits for identity.
    assert_eq!(h.count("grants").await, 0);
    assert_eq!(h.count("session_revocations").await, 1);
    assert!(h.alive(&token).await);

    // Still down: the background task (the suite's directory runs it) retries without
    // losing the row.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.count("session_revocations").await, 1);
    assert!(h.alive(&token).await);

    h.serve(Service::Identity).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.alive(&token).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session outlived identity's return"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.count("session_revocations").await > 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
