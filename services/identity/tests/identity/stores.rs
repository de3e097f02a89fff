//! Store outages: Redis down fails sign-in closed and recovers without a restart; Postgres
//! down answers Unavailable; health follows both.

use std::sync::Arc;
use std::time::Duration;

use cqrs_identity::domain::password::NormalisedPassword;
use cqrs_identity::{Clock as _, Identity, Store, redis_connection};
use cqrs_proto::identity::v1 as pb;
use cqrs_runtime::audit::{Actor, Event};
use cqrs_suite::Service;
use cqrs_testkit::{assert_reason, wait_health};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::calls::{IdentityCalls, PASSWORDS, start};
use crate::redis_fixtures::FlakyProxy;

/// SECURITY 31: with Redis unreachable, sign-in answers Unavailable for known and unknown
/// logins alike (the counter is never skipped, the right password does not get in) and
/// health is NOT_SERVING; when Redis returns, the same server works again.
#[tokio::test]
async fn redis_down_fails_closed_and_recovers_without_restart() {
    let h = start(&[]).await;
    let account = h
        .active(pb::Realm::Local, "lee.moss@practice.org", PASSWORDS[0])
        .await;

    // A second server over the same database whose Redis is a dead port.
    let dead = h
        .identity_replica(&[("REDIS_URL", "redis://127.0.0.1:1")])
        .await;
    let dead_server = h.serve_identity(&dead).await;
    let mut client = cqrs_proto::identity::v1::identity_service_client::IdentityServiceClient::new(
        dead_server.channel.clone(),
    );
    for (login, password) in [
        (account.email.as_str(), PASSWORDS[0]),
        (account.email.as_str(), "Wrong#Guess1"),
        ("nobody@nowhere.org", PASSWORDS[0]),
    ] {
        let err = client
            .sign_in(pb::SignInRequest {
                login: login.into(),
                password: password.into(),
            })
            .await
            .unwrap_err();
        assert_reason(&err, Code::Unavailable, "UNAVAILABLE");
    }
    wait_health(&dead_server.channel, ServingStatus::NotServing).await;
    // The working server over the same database signs in.
    h.sign_in(&account.email, PASSWORDS[0]).await.unwrap();

    // Through a proxy that goes down and comes back: the server recovers by itself.
    let proxy = FlakyProxy::start(&h.redis.url).await;
    let flaky = h.identity_replica(&[("REDIS_URL", &proxy.url)]).await;
    let flaky_server = h.serve_identity(&flaky).await;
    let mut client = cqrs_proto::identity::v1::identity_service_client::IdentityServiceClient::new(
        flaky_server.channel.clone(),
    );
    let sign_in = pb::SignInRequest {
        login: account.email.clone(),
        password: PASSWORDS[0].into(),
    };
    client.sign_in(sign_in.clone()).await.unwrap();
    wait_health(&flaky_server.channel, ServingStatus::Serving).await;

    proxy.set_up(false);
    let err = client.sign_in(sign_in.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    wait_health(&flaky_server.channel, ServingStatus::NotServing).await;

    proxy.set_up(true);
    let mut recovered = false;
    for _ in 0..50 {
        if client.sign_in(sign_in.clone()).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "sign-in never recovered after Redis came back");
    wait_health(&flaky_server.channel, ServingStatus::Serving).await;
}

/// Postgres unreachable: Unavailable (not Internal), health NOT_SERVING.
#[tokio::test]
async fn postgres_down_answers_unavailable() {
    let h = start(&[]).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/identity")
        .unwrap();
    let config = h.identity_service().config.as_ref().clone();
    let redis = redis_connection(&config.redis_url).unwrap();
    let identity = Identity::new(
        config,
        Store::new(pool),
        redis,
        Arc::new(cqrs_identity::SystemClock),
    )
    .unwrap();
    let server = h.serve_identity(&identity).await;
    let mut client = cqrs_proto::identity::v1::identity_service_client::IdentityServiceClient::new(
        server.channel.clone(),
    );
    let err = client
        .sign_in(pb::SignInRequest {
            login: "someone@practice.org".into(),
            password: PASSWORDS[0].into(),
        })
        .await
        .unwrap_err();
    assert_reason(&err, Code::Unavailable, "UNAVAILABLE");
    let err = client
        .request_password_reset(pb::RequestPasswordResetRequest {
            login: "someone@practice.org".into(),
        })
        .await
        .unwrap_err();
    assert_reason(&err, Code::Unavailable, "UNAVAILABLE");
    wait_health(&server.channel, ServingStatus::NotServing).await;
}

/// SECURITY 10: hashing is bounded; a flood beyond it is turned away with ResourceExhausted
/// instead of queueing without limit, and once the pool is free again checks pass. A check
/// refused for load is not counted towards the lock-out (the owner retrying the right password
/// in a flood is not locked out), answers the same for a locked account, and is audited.
///
/// Deterministic rather than hoping parallel sign-ins saturate the pool: its one hashing
/// thread is first taken by a verify many times longer than the queue timeout, confirmed
/// running before the flood is sent, and the place for the hash after it is held too, so
/// every check of the flood waits for a place for longer than the timeout and is refused
/// unhashed.
#[tokio::test]
async fn a_flood_of_password_checks_is_turned_away() {
    // Long enough for the idle thread to pick up work on a loaded machine; far shorter than
    // the verify holding the thread below.
    const QUEUE_TIMEOUT: Duration = Duration::from_millis(250);
    const HOLD_AT_LEAST: Duration = Duration::from_secs(3);
    let h = start(&[
        ("IDENTITY_HASH_CONCURRENCY", "1"),
        (
            "IDENTITY_HASH_QUEUE_TIMEOUT_MS",
            &QUEUE_TIMEOUT.as_millis().to_string(),
        ),
    ])
    .await;
    let account = h
        .active(pb::Realm::Local, "flo.reed@practice.org", PASSWORDS[0])
        .await;
    let locked = h
        .active(pb::Realm::Local, "lou.kent@practice.org", PASSWORDS[0])
        .await;
    sqlx::query(
        "UPDATE accounts SET locked_at = now(), lock_reason = 'TOO_MANY_FAILED_ATTEMPTS' \
         WHERE email = 'lou.kent@practice.org'",
    )
    .execute(h.pool(Service::Identity))
    .await
    .unwrap();
    let hasher = h.identity_service().api.hasher().clone();
    assert_eq!(hasher.permits(), 1);
    assert_eq!(hasher.in_flight(), 0);

    // A stored hash with more iterations than the configured two: verifying it costs
    // t_cost/2 ordinary verifies (as timed at start-up), whatever its output says. At least
    // four verifies' worth, in case start-up was timed on a busier machine than now.
    let typical = hasher.typical_verify_duration();
    assert!(typical > Duration::ZERO);
    let t_cost = (2 * HOLD_AT_LEAST.as_micros() / typical.as_micros().max(1) + 1)
        .clamp(8, u128::from(cqrs_identity::hashing::MAX_T_COST));
    let slow = format!(
        "$argon2id$v=19$m={},t={t_cost},p=1$c2FsdHNhbHRzYWx0$\
         1EuwiiPAgEsdu03L8+QudHsbzM1r8kwqK6ECdOMiR7k",
        cqrs_identity::hashing::MIN_M_COST_KIB
    );
    let holder = tokio::spawn({
        let hasher = hasher.clone();
        async move {
            let started = std::time::Instant::now();
            let matched = hasher
                .verify(&NormalisedPassword::from_presented("x"), &slow)
                .await
                .unwrap();
            (matched, started.elapsed())
        }
    });
    let waiting = std::time::Instant::now();
    while hasher.in_flight() == 0 {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "the holding verify never started"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The pool's other places (the next hash's, queued while one runs) taken as well.
    let mut next_places = Vec::new();
    for _ in 1..hasher.places() {
        next_places.push(hasher.reserve().await.unwrap());
    }

    // The flood: unknown logins, a locked account, and the owner of a real account retrying
    // the right password more often than the lock-out allows failures, all at once.
    let mut logins: Vec<(String, &str)> = (0..10)
        .map(|i| (format!("nobody{i}@practice.org"), PASSWORDS[0]))
        .collect();
    logins.push((locked.email.clone(), PASSWORDS[0]));
    logins.extend((0..8).map(|_| (account.email.clone(), PASSWORDS[0])));
    let tasks: Vec<_> = logins
        .into_iter()
        .map(|(login, password)| {
            let mut client = h.identity();
            tokio::spawn(async move {
                client
                    .sign_in(pb::SignInRequest {
                        login,
                        password: password.into(),
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert_reason(&err, Code::ResourceExhausted, "PASSWORD_CHECKS_BUSY");
    }
    drop(next_places);
    let (matched, held) = holder.await.unwrap();
    assert!(!matched);
    assert!(held > QUEUE_TIMEOUT, "held the thread only {held:?}");
    assert_eq!(hasher.in_flight(), 0);
    let refused = h.audit_rows("SIGN_IN", &account.id).await;
    assert_eq!(refused.len(), 8, "{refused:?}");
    for (outcome, details) in &refused {
        assert_eq!(outcome, "failure");
        assert_eq!(details, &serde_json::json!({ "reason": "busy" }));
    }

    // None of the eight counted: the next failure is the first.
    let err = h.sign_in(&account.email, PASSWORDS[1]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let wrong: Vec<_> = h
        .audit_rows("SIGN_IN", &account.id)
        .await
        .into_iter()
        .filter(|(_, details)| details["reason"] == "wrong_password")
        .collect();
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert_eq!(wrong[0].1["failures"], 1, "{wrong:?}");

    // The pool is free again: checks are made, and the right password signs in.
    let err = h
        .sign_in("nobody@practice.org", PASSWORDS[0])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    h.sign_in(&account.email, PASSWORDS[0]).await.unwrap();
}

/// A flood holds one sign-in in flight per open call, each as large as the RPC's future (the
/// state of its deepest await); the rare, deep paths (starting a session, recording a
/// failure, a second-factor challenge) are boxed so that a sign-in waiting to be refused for
/// load holds little. Bounds identity's memory under a flood (`benches/memory.rs`).
#[tokio::test]
async fn a_sign_in_in_flight_holds_little_memory() {
    use cqrs_proto::identity::v1::identity_service_server::IdentityService as _;
    const MOST: usize = 4096;
    let h = start(&[]).await;
    let api = h.identity_service().api.clone();
    let call = api.sign_in(tonic::Request::new(pb::SignInRequest {
        login: "flo.reed@practice.org".into(),
        password: PASSWORDS[0].into(),
    }));
    let size = std::mem::size_of_val(&*call);
    eprintln!("a SignIn future: {size} bytes");
    assert!(
        size <= MOST,
        "a SignIn in flight holds {size} bytes, over {MOST}"
    );
    // It is a real call: run to its end it answers (an unknown login).
    let err = call.await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

/// Raised argon2 settings reach an account's stored hash (and its history entry) at its next
/// successful sign-in; the old hash verified until then.
#[tokio::test]
async fn raised_hash_settings_reach_accounts_at_sign_in() {
    let h = start(&[]).await;
    let account = h
        .active(pb::Realm::Local, "tess.owen@practice.org", PASSWORDS[0])
        .await;
    let stronger = h.identity_replica(&[("IDENTITY_ARGON2_T_COST", "3")]).await;
    let server = h.serve_identity(&stronger).await;
    let mut client = cqrs_proto::identity::v1::identity_service_client::IdentityServiceClient::new(
        server.channel.clone(),
    );
    client
        .sign_in(pb::SignInRequest {
            login: account.email.clone(),
            password: PASSWORDS[0].into(),
        })
        .await
        .unwrap();
    let (current, history): (String, String) = sqlx::query_as(
        "SELECT a.password_hash, h.password_hash FROM accounts a \
         JOIN password_history h ON h.account_id = a.id WHERE a.id = $1::uuid",
    )
    .bind(&account.id)
    .fetch_one(h.pool(Service::Identity))
    .await
    .unwrap();
    assert!(current.contains("t=3"), "{current}");
    assert_eq!(current, history);
}

/// Stand-alone audit events written in batches: many at once all commit, each exactly once,
/// with its own fields, even when they need several statements; and with Postgres gone they
/// answer Unavailable like any other write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_audit_events_are_each_written_once() {
    let h = start(&[]).await;
    let store = h.identity_service().store.clone();
    let now = h.clock.now();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let target = format!("target-{i}");
                store
                    .record_alone(
                        now,
                        &Actor::system("batch-test"),
                        // Large enough that a batch spans several statements.
                        test_event(
                            "test.batched",
                            &target,
                            serde_json::json!({ "n": i, "pad": "x".repeat(200) }),
                        ),
                    )
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT target_id, details FROM audit_events WHERE action = 'test.batched' \
         AND actor_id = 'batch-test' ORDER BY target_id",
    )
    .fetch_all(h.pool(Service::Identity))
    .await
    .unwrap();
    assert_eq!(rows.len(), 300);
    for (target, details) in &rows {
        assert_eq!(*target, format!("target-{}", details["n"]));
    }

    // Postgres gone: the write fails as Unavailable, not as an internal error.
    let dead = Store::new(
        sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(500))
            .connect_lazy("postgres://postgres@127.0.0.1:1/identity")
            .unwrap(),
    );
    let err = dead
        .record_alone(
            now,
            &Actor::system("batch-test"),
            test_event("test.batched", "x", serde_json::json!({})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, cqrs_identity::store::StoreError::SharedUnavailable(_)),
        "{err:?}"
    );
}

/// Stand-alone events that follow each other closely share commits (the writer waits a little
/// for company), and each is still written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closely_following_audit_events_share_commits() {
    let h = start(&[]).await;
    let store = h.identity_service().store.clone();
    let now = h.clock.now();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let target = format!("paced-{i}");
            store
                .record_alone(
                    now,
                    &Actor::system("pace-test"),
                    test_event("test.paced", &target, serde_json::json!({})),
                )
                .await
        }));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let (events, commits): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT target_id), count(DISTINCT xmin::text) FROM audit_events \
         WHERE actor_id = 'pace-test'",
    )
    .fetch_one(h.pool(Service::Identity))
    .await
    .unwrap();
    assert_eq!(events, 40);
    assert!(
        commits * 2 <= events,
        "{commits} commits for {events} events"
    );
}

/// A successful event of `action` on the account `target`, changing nothing.
fn test_event<'a>(action: &'a str, target: &'a str, details: serde_json::Value) -> Event<'a> {
    Event {
        changes: cqrs_runtime::audit::Changes::new(),
        action,
        target_type: "account",
        target_id: target,
        outcome: "success",
        details,
    }
}

fn chained(target: &str) -> Event<'_> {
    Event {
        changes: cqrs_runtime::audit::Changes::new().field("n", 0, 1),
        ..test_event(
            "test.chained",
            target,
            serde_json::json!({ "target": target }),
        )
    }
}

/// Concurrent writers (batched and in change transactions), and some that roll back: the
/// chain is numbered without a gap and every link verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_chain_is_gapless_under_concurrent_writers() {
    let h = start(&[]).await;
    let store = h.identity_service().store.clone();
    let pool = h.pool(Service::Identity).clone();
    let now = h.clock.now();
    let actor = Actor::system("chain-test");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (store, pool, actor) = (store.clone(), pool.clone(), actor.clone());
        tasks.spawn(async move {
            let target = format!("t{i}");
            if i % 2 == 0 {
                let event = cqrs_runtime::audit::NewEvent::new(now, &actor, chained(&target));
                let mut tx = pool.begin().await.unwrap();
                cqrs_runtime::audit::append(&mut tx, vec![event])
                    .await
                    .unwrap();
                if i % 10 == 0 {
                    // Rolled back: its number is never used.
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                }
            } else {
                store
                    .record_alone(now, &actor, chained(&target))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // The previous release, mid-upgrade, inserts with the columns it knows: the event is
    // numbered in turn and the chain links around it.
    sqlx::query(
        "INSERT INTO audit_events (id, occurred_at, actor_kind, actor_id, action, target_type, \
             target_id, outcome) \
         VALUES ($1, now(), 'system', 'old-release', 'test.old', 'account', 'x', 'success')",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(&pool)
    .await
    .unwrap();
    store
        .record_alone(now, &actor, chained("after-the-old-one"))
        .await
        .unwrap();
    let rows = cqrs_runtime::audit::chain_page(&pool, 1, 10_000)
        .await
        .unwrap();
    let numbers: Vec<i64> = rows.iter().map(|r| r.sequence).collect();
    assert_eq!(numbers, (1..=rows.len() as i64).collect::<Vec<_>>());
    let chained_rows = rows.iter().filter(|r| r.action == "test.chained").count();
    assert_eq!(
        chained_rows,
        41 - 4,
        "the four rolled-back events are not there"
    );
    let mut verifier = cqrs_audit_chain::ChainVerifier::new(Vec::new(), Vec::new(), 1);
    for row in &rows {
        let hash = row.hash.as_deref().and_then(cqrs_audit_chain::hash_from);
        verifier.push(&row.record(), hash.as_ref()).unwrap();
    }
    let summary = verifier.finish().unwrap();
    assert_eq!(summary.unhashed, 1);
    assert_eq!(summary.verified, rows.len() as u64 - 1);
}

/// The stand-alone writer's one-round-trip append: after the head it was given, and only if the
/// chain still ends there; a stale or unknown head appends nothing and is answered the real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appending_after_a_head_only_appends_if_the_chain_ends_there() {
    use cqrs_runtime::audit::{NewEvent, append, append_after};
    let h = start(&[]).await;
    let pool = h.pool(Service::Identity).clone();
    let actor = Actor::system("append-after");
    let event = |target: &str| NewEvent::new(h.clock.now(), &actor, chained(target));
    let count = || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM audit_events WHERE actor_id = 'append-after'")
                .fetch_one(&pool)
                .await
                .unwrap();
        n
    };
    let mut conn = pool.acquire().await.unwrap();
    let head = append_after(&mut conn, None, vec![event("unknown")])
        .await
        .unwrap()
        .expect_err("an unknown head appends nothing");
    assert_eq!(count().await, 0);
    let after_two = append_after(&mut conn, Some(head), vec![event("a"), event("b")])
        .await
        .unwrap()
        .expect("the chain ends at the head given");
    assert_eq!(after_two.0, head.0 + 2);
    assert_eq!(count().await, 2);
    // Someone else appends: the head given is stale.
    let mut tx = pool.begin().await.unwrap();
    append(&mut tx, vec![event("other")]).await.unwrap();
    tx.commit().await.unwrap();
    let found = append_after(&mut conn, Some(after_two), vec![event("stale")])
        .await
        .unwrap()
        .expect_err("a stale head appends nothing");
    assert_eq!(found.0, after_two.0 + 1);
    assert_eq!(count().await, 3);
    append_after(&mut conn, Some(found), vec![event("c")])
        .await
        .unwrap()
        .expect("from the head found");
    let rows = cqrs_runtime::audit::chain_page(&pool, 1, 10_000)
        .await
        .unwrap();
    let mut verifier = cqrs_audit_chain::ChainVerifier::new(Vec::new(), Vec::new(), 1);
    for row in &rows {
        let hash = row.hash.as_deref().and_then(cqrs_audit_chain::hash_from);
        verifier.push(&row.record(), hash.as_ref()).unwrap();
    }
    assert_eq!(verifier.finish().unwrap().verified, rows.len() as u64);
    let targets: Vec<&str> = rows
        .iter()
        .filter(|r| r.actor_id == "append-after")
        .map(|r| r.target_id.as_str())
        .collect();
    assert_eq!(targets, ["a", "b", "other", "c"]);
}

/// deploy/postgres/audit-grants.sql, applied for a role like the one a deployment runs the
/// service as: that role appends to the trail but can neither change nor remove it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_role_cannot_change_the_trail() {
    let h = start(&[]).await;
    let pool = h.pool(Service::Identity).clone();
    let role = format!("app_{}", uuid::Uuid::new_v4().simple());
    let grants =
        include_str!("../../../../deploy/postgres/audit-grants.sql").replace(":app_role", &role);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} NOLOGIN; {grants}"
    )))
    .execute(&pool)
    .await
    .unwrap();

    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET LOCAL ROLE {role}")))
        .execute(&mut *tx)
        .await
        .unwrap();
    // Appending works as the role…
    let event = cqrs_runtime::audit::NewEvent::new(
        h.clock.now(),
        &Actor::system("grants-test"),
        chained("as-the-app"),
    );
    cqrs_runtime::audit::append(&mut tx, vec![event])
        .await
        .unwrap();
    for sql in [
        "UPDATE audit_events SET outcome = 'failure'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "UPDATE audit_checkpoints SET own = false",
        "DELETE FROM audit_checkpoints",
    ] {
        // …changing or removing does not: refused for privilege before any trigger runs.
        sqlx::query("SAVEPOINT attempt")
            .execute(&mut *tx)
            .await
            .unwrap();
        let refused = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .unwrap_err();
        let code = refused
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {refused}");
        sqlx::query("ROLLBACK TO SAVEPOINT attempt")
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}; DROP ROLE {role}"
    )))
    .execute(&pool)
    .await
    .unwrap();
}
