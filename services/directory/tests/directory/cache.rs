//! CheckPermission answers from memory (`store::cache`): a change is seen at once by the
//! instance that made it, and within a short wait by the other replicas, however it was made.

use std::future::Future;
use std::time::Duration;

use cqrs_auth::Role;
use cqrs_proto::directory::v1::{self as pb, directory_service_client::DirectoryServiceClient};
use cqrs_suite::{Service, Suite, wait_until_listening};
use cqrs_testkit::with_token;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::calls::{DirectoryCalls, Tree, directory_alone, grant_through};

/// How long another replica may take to hear of a change (normally milliseconds).
const PROPAGATION: Duration = Duration::from_secs(10);

enum About {
    Organisation(Uuid),
    Account(Uuid),
}

async fn allowed(
    client: &mut DirectoryServiceClient<Channel>,
    token: &str,
    account: Uuid,
    permission: &str,
    about: About,
) -> bool {
    let (organisation_id, target_account_id) = match about {
        About::Organisation(org) => (org.to_string(), String::new()),
        About::Account(target) => (String::new(), target.to_string()),
    };
    client
        .check_permission(with_token(
            pb::CheckPermissionRequest {
                account_id: account.to_string(),
                permission: permission.into(),
                organisation_id,
                active_organisation_id: String::new(),
                active_role: 0,
                target_account_id,
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .allowed
}

/// Polls `check` until it answers `expected`, for at most [`PROPAGATION`].
async fn eventually<F, Fut>(expected: bool, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PROPAGATION;
    loop {
        if check().await == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still not {expected} after {PROPAGATION:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn revoke(h: &Suite, client: &mut DirectoryServiceClient<Channel>, grant_id: &str) {
    client
        .revoke_role(with_token(
            pb::RevokeRoleRequest {
                grant_id: grant_id.into(),
            },
            &h.svc(),
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn changes_are_seen_at_once_by_the_instance_that_made_them() {
    let h = directory_alone().await;
    wait_until_listening(h.directory_service()).await;
    let tree = Tree::build(&h).await;
    let mut c = h.directory();
    let svc = h.svc();
    let user = Uuid::new_v4();
    let about_p1 = || About::Organisation(tree.p1);

    // No grant yet: refused, and the (empty) answer is now cached.
    assert!(!allowed(&mut c, &svc, user, "VIEW_SCOPE", about_p1()).await);
    assert!(h.directory_service().api.cache().cached_accounts() >= 1);

    let grant = h
        .grant(user, tree.c1, Role::CommissioningUser)
        .await
        .unwrap();
    assert!(allowed(&mut c, &svc, user, "VIEW_SCOPE", about_p1()).await);

    revoke(&h, &mut c, &grant.id).await;
    assert!(!allowed(&mut c, &svc, user, "VIEW_SCOPE", about_p1()).await);

    h.grant(user, tree.c1, Role::CommissioningUser)
        .await
        .unwrap();
    assert!(allowed(&mut c, &svc, user, "VIEW_SCOPE", about_p1()).await);
    c.revoke_all_roles(with_token(
        pb::RevokeAllRolesRequest {
            account_id: user.to_string(),
        },
        &svc,
    ))
    .await
    .unwrap();
    assert!(!allowed(&mut c, &svc, user, "VIEW_SCOPE", about_p1()).await);
}

#[tokio::test]
async fn a_target_accounts_grants_are_current_too() {
    let h = directory_alone().await;
    wait_until_listening(h.directory_service()).await;
    let tree = Tree::build(&h).await;
    let mut c = h.directory();
    let svc = h.svc();
    let admin = Uuid::new_v4();
    h.grant(admin, tree.c1, Role::CommissioningAccountAdministrator)
        .await
        .unwrap();
    let target = Uuid::new_v4();
    let revoke_target = |c: &mut DirectoryServiceClient<Channel>| {
        let mut c = c.clone();
        let svc = svc.clone();
        async move { allowed(&mut c, &svc, admin, "REVOKE_ROLES", About::Account(target)).await }
    };

    // Without grants the target is in no administrator's scope.
    assert!(!revoke_target(&mut c).await);
    let grant = h.grant(target, tree.p1, Role::PracticeUser).await.unwrap();
    assert!(revoke_target(&mut c).await);
    revoke(&h, &mut c, &grant.id).await;
    assert!(!revoke_target(&mut c).await);
    // Somewhere outside the administrator's subtree.
    h.grant(target, tree.p4, Role::PracticeUser).await.unwrap();
    assert!(!revoke_target(&mut c).await);
}

#[tokio::test]
async fn changes_made_by_another_replica_reach_this_one() {
    let h = directory_alone().await;
    wait_until_listening(h.directory_service()).await;
    let tree = Tree::build(&h).await;
    let (other, other_server) = h.directory_replica().await;
    let mut here = h.directory();
    let mut there = DirectoryServiceClient::new(other_server.channel.clone());
    let svc = h.svc();
    let user = Uuid::new_v4();
    let cached_before = h.directory_service().api.cache().cached_accounts();

    assert!(
        !allowed(
            &mut here,
            &svc,
            user,
            "VIEW_SCOPE",
            About::Organisation(tree.p1)
        )
        .await
    );
    assert!(h.directory_service().api.cache().cached_accounts() > cached_before);

    // Granted through the other replica.
    let grant = grant_through(
        &mut there,
        &svc,
        &Uuid::new_v4().to_string(),
        user,
        tree.c1,
        Role::CommissioningUser,
    )
    .await
    .unwrap();
    eventually(true, || {
        let mut here = here.clone();
        let svc = svc.clone();
        async move {
            allowed(
                &mut here,
                &svc,
                user,
                "VIEW_SCOPE",
                About::Organisation(tree.p1),
            )
            .await
        }
    })
    .await;

    // Revoked through the other replica.
    revoke(&h, &mut there, &grant.id).await;
    eventually(false, || {
        let mut here = here.clone();
        let svc = svc.clone();
        async move {
            allowed(
                &mut here,
                &svc,
                user,
                "VIEW_SCOPE",
                About::Organisation(tree.p1),
            )
            .await
        }
    })
    .await;

    // And the other way round: this replica's change reaches the other one, whose cache
    // holds the account by now.
    assert!(
        !allowed(
            &mut there,
            &svc,
            user,
            "VIEW_SCOPE",
            About::Organisation(tree.p1)
        )
        .await
    );
    h.grant(user, tree.c1, Role::CommissioningUser)
        .await
        .unwrap();
    eventually(true, || {
        let mut there = there.clone();
        let svc = svc.clone();
        async move {
            allowed(
                &mut there,
                &svc,
                user,
                "VIEW_SCOPE",
                About::Organisation(tree.p1),
            )
            .await
        }
    })
    .await;
    drop(other);
}

#[tokio::test]
async fn changes_made_in_sql_and_while_the_listener_was_down_are_seen() {
    let h = directory_alone().await;
    wait_until_listening(h.directory_service()).await;
    let tree = Tree::build(&h).await;
    let c = h.directory();
    let svc = h.svc();
    let user = Uuid::new_v4();
    let check = |c: &DirectoryServiceClient<Channel>| {
        let mut c = c.clone();
        let svc = svc.clone();
        async move {
            allowed(
                &mut c,
                &svc,
                user,
                "VIEW_SCOPE",
                About::Organisation(tree.p1),
            )
            .await
        }
    };
    assert!(!check(&c).await);

    // An operator's hand-made grant, outside the service.
    sqlx::query(
        "INSERT INTO grants (id, account_id, organisation_id, role, created_at) \
         VALUES ($1, $2, $3, 'COMMISSIONING_USER', now())",
    )
    .bind(Uuid::now_v7())
    .bind(user)
    .bind(tree.c1)
    .execute(h.pool(Service::Directory))
    .await
    .unwrap();
    eventually(true, || check(&c)).await;

    // The listening connection is cut; a change lands around that time. Whether or not its
    // notification got through, the cache must not keep the old answer.
    let (cut,): (i64,) = sqlx::query_as(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(cqrs_directory::store::cache::LISTENER_APPLICATION_NAME)
    .fetch_one(h.pool(Service::Directory))
    .await
    .unwrap();
    assert_eq!(cut, 1, "one listening connection");
    sqlx::query("DELETE FROM grants WHERE account_id = $1")
        .bind(user)
        .execute(h.pool(Service::Directory))
        .await
        .unwrap();
    eventually(false, || check(&c)).await;
    // It listens again by itself, and caches again.
    h.grant(user, tree.c1, Role::CommissioningUser)
        .await
        .unwrap();
    assert!(check(&c).await);
    eventually(true, || async {
        assert!(check(&c).await);
        h.directory_service().api.cache().is_listening()
            && h.directory_service().api.cache().cached_accounts() >= 1
    })
    .await;
}

#[tokio::test]
async fn a_new_replica_starts_with_the_grants_loaded() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for user in &users {
        h.grant(*user, tree.c1, Role::CommissioningUser)
            .await
            .unwrap();
    }
    let (other, other_server) = h.directory_replica().await;
    let deadline = tokio::time::Instant::now() + PROPAGATION;
    while !other.api.cache().is_warm() {
        assert!(tokio::time::Instant::now() < deadline, "never loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(other.api.cache().cached_accounts(), users.len());
    let mut there = DirectoryServiceClient::new(other_server.channel.clone());
    for user in users {
        assert!(
            allowed(
                &mut there,
                &h.svc(),
                user,
                "VIEW_SCOPE",
                About::Organisation(tree.p1)
            )
            .await
        );
        assert!(
            !allowed(
                &mut there,
                &h.svc(),
                user,
                "VIEW_SCOPE",
                About::Organisation(tree.p4)
            )
            .await
        );
    }
    assert_eq!(other.api.cache().cached_accounts(), 3);
}

/// ListGrants answers from the same cache under the same rules: an account listed is kept,
/// this instance's changes show at once, another replica's within the propagation wait.
#[tokio::test]
async fn list_grants_answers_from_the_cache_and_follows_changes() {
    let h = directory_alone().await;
    wait_until_listening(h.directory_service()).await;
    let tree = Tree::build(&h).await;
    let (other, other_server) = h.directory_replica().await;
    let mut there = DirectoryServiceClient::new(other_server.channel.clone());
    let svc = h.svc();
    let user = Uuid::new_v4();
    let listed = |svc: String| {
        let mut here = h.directory();
        async move {
            let mut ods: Vec<String> = here
                .list_grants(with_token(
                    pb::ListGrantsRequest {
                        account_id: user.to_string(),
                        page_size: 0,
                        page_token: String::new(),
                    },
                    &svc,
                ))
                .await
                .unwrap()
                .into_inner()
                .grants
                .into_iter()
                .map(|g| g.ods_code)
                .collect();
            ods.sort();
            ods
        }
    };

    let cached_before = h.directory_service().api.cache().cached_accounts();
    assert!(listed(svc.clone()).await.is_empty());
    assert!(h.directory_service().api.cache().cached_accounts() > cached_before);

    let grant = h.grant(user, tree.p1, Role::PracticeUser).await.unwrap();
    assert_eq!(listed(svc.clone()).await, ["A81001"]);
    revoke(&h, &mut h.directory(), &grant.id).await;
    assert!(listed(svc.clone()).await.is_empty());

    // Granted through the other replica: seen here once its notification arrives.
    grant_through(
        &mut there,
        &svc,
        &Uuid::new_v4().to_string(),
        user,
        tree.c1,
        Role::CommissioningUser,
    )
    .await
    .unwrap();
    eventually(true, || {
        let listed = listed(svc.clone());
        async move { listed.await == ["15N"] }
    })
    .await;
    drop(other);
}
