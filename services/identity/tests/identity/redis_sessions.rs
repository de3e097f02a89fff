//! Sessions against a real Redis: the key every service checks, refresh by secret, idle and
//! absolute expiry, ending one / all / those with a revoked grant, and failing closed.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use cqrs_auth::{ActiveGrant, RedisSessionCheck, Role, SessionCheck, session_key};
use cqrs_identity::store::sessions::SessionStore;
use cqrs_identity::{Clock as _, SystemClock};
use cqrs_testkit::TestRedis;
use redis::AsyncCommands;
use uuid::Uuid;

use crate::redis_fixtures::{dead_redis, t0};

const IDLE: Duration = Duration::from_secs(60);
const ABSOLUTE: Duration = Duration::from_secs(100);

fn store(redis: &TestRedis) -> SessionStore {
    SessionStore::new(redis.conn.clone(), redis.namespace.clone(), IDLE, ABSOLUTE)
}

async fn exists(redis: &TestRedis, key: &str) -> bool {
    let mut conn = redis.conn.clone();
    conn.exists(key).await.unwrap()
}

async fn pttl(redis: &TestRedis, key: &str) -> i64 {
    let mut conn = redis.conn.clone();
    conn.pttl(key).await.unwrap()
}

fn grant(org: Uuid, role: Role) -> Option<ActiveGrant> {
    Some(ActiveGrant {
        organisation_id: org,
        role,
    })
}

#[tokio::test]
async fn create_get_and_refresh_by_token() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let account = Uuid::new_v4();

    let (token, record) = store.create(account, t0()).await.unwrap();
    assert_ne!(
        token, record.session_id,
        "the refresh secret is not the sid"
    );
    assert_eq!(token.len(), 32 + 1 + 43, "account id, dot, 256-bit secret");
    assert!(token.starts_with(&account.simple().to_string()));
    assert_eq!(record.session_id.len(), 43);
    assert_eq!(record.account_id, account);
    assert_eq!(record.created_at, t0());
    assert_eq!(
        record.absolute_expiry,
        t0() + TimeDelta::from_std(ABSOLUTE).unwrap()
    );
    assert_eq!(record.active, None);

    assert_eq!(
        store
            .get(record.account_id, &record.session_id)
            .await
            .unwrap(),
        Some(record.clone())
    );
    assert_eq!(
        store.by_token(&token, t0()).await.unwrap(),
        Some(record.clone())
    );

    // The key every service checks, through the same checker they use.
    let sid_key = session_key(&redis.namespace, record.account_id, &record.session_id);
    assert!(exists(&redis, &sid_key).await);
    let check = RedisSessionCheck::new(redis.conn.clone(), redis.namespace.clone());
    assert!(
        check
            .is_live(record.account_id, &record.session_id)
            .await
            .unwrap()
    );

    // The secret is stored only as its hash: no key name or value contains it.
    let mut conn = redis.conn.clone();
    for key in redis.keys().await {
        assert!(!key.contains(&token), "{key}");
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let values: Vec<String> = match kind.as_str() {
            "hash" => conn.hvals(&key).await.unwrap(),
            "string" => vec![conn.get(&key).await.unwrap()],
            "set" => conn.smembers(&key).await.unwrap(),
            other => panic!("unexpected key type {other} for {key}"),
        };
        assert!(values.iter().all(|v| !v.contains(&token)), "{key}");
    }
    assert_eq!(
        redis.keys().await.len(),
        3,
        "session, token and account index"
    );
}

#[tokio::test]
async fn wrong_tokens_find_nothing() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let (token, record) = store.create(Uuid::new_v4(), t0()).await.unwrap();

    assert_eq!(store.by_token("not-a-token", t0()).await.unwrap(), None);
    assert_eq!(store.by_token("", t0()).await.unwrap(), None);
    // The sid travels in every access token; it must not work as a refresh secret.
    assert_eq!(
        store.by_token(&record.session_id, t0()).await.unwrap(),
        None
    );
    let mut other = token.clone();
    other.replace_range(0..1, if token.starts_with('A') { "B" } else { "A" });
    assert_eq!(store.by_token(&other, t0()).await.unwrap(), None);
    assert_eq!(
        store.get(record.account_id, "unknown-sid").await.unwrap(),
        None
    );
    // Nothing was created by the lookups.
    assert_eq!(redis.keys().await.len(), 3);
}

#[tokio::test]
async fn end_is_immediate_and_idempotent() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let account = Uuid::new_v4();
    let (token, record) = store.create(account, t0()).await.unwrap();
    let (other_token, other) = store.create(account, t0()).await.unwrap();
    let sid_key = session_key(&redis.namespace, record.account_id, &record.session_id);

    store
        .end(record.account_id, &record.session_id)
        .await
        .unwrap();
    assert!(!exists(&redis, &sid_key).await);
    let check = RedisSessionCheck::new(redis.conn.clone(), redis.namespace.clone());
    assert!(
        !check
            .is_live(record.account_id, &record.session_id)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get(record.account_id, &record.session_id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.by_token(&token, t0()).await.unwrap(), None);

    store
        .end(record.account_id, &record.session_id)
        .await
        .unwrap();
    store.end(account, "never-existed").await.unwrap();

    // The other session of the account is untouched; only its keys remain.
    assert_eq!(
        store.by_token(&other_token, t0()).await.unwrap(),
        Some(other.clone())
    );
    assert_eq!(redis.keys().await.len(), 3);
    let mut conn = redis.conn.clone();
    let members: Vec<String> = conn
        .smembers(cqrs_auth::account_key_prefix(&redis.namespace, account) + "sessions")
        .await
        .unwrap();
    assert_eq!(members, vec![other.session_id]);
}

#[tokio::test]
async fn idle_ttl_is_refreshed_but_bounded_by_the_absolute_expiry() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let (token, record) = store.create(Uuid::new_v4(), t0()).await.unwrap();
    let sid_key = session_key(&redis.namespace, record.account_id, &record.session_id);
    let idle_ms = i64::try_from(IDLE.as_millis()).unwrap();
    let slack = 5_000;

    let ttl = pttl(&redis, &sid_key).await;
    assert!(ttl > idle_ms - slack && ttl <= idle_ms, "{ttl}");

    // Let most of the idle time pass, then use the token: the idle TTL starts again.
    let mut conn = redis.conn.clone();
    let _: bool = conn.pexpire(&sid_key, 1_000).await.unwrap();
    let later = t0() + TimeDelta::seconds(10);
    assert!(store.by_token(&token, later).await.unwrap().is_some());
    let ttl = pttl(&redis, &sid_key).await;
    assert!(ttl > idle_ms - slack && ttl <= idle_ms, "{ttl}");

    // 30 s before the absolute expiry the refresh may only give 30 s (less than idle).
    let near_end = t0() + TimeDelta::seconds(70);
    assert!(store.by_token(&token, near_end).await.unwrap().is_some());
    for key in redis.keys().await {
        if key.ends_with(":sessions") {
            continue;
        }
        let ttl = pttl(&redis, &key).await;
        assert!(ttl > 30_000 - slack && ttl <= 30_000, "{key}: {ttl}");
    }

    // At the absolute expiry the session is over whatever its idle TTL says.
    let end = t0() + TimeDelta::from_std(ABSOLUTE).unwrap();
    assert_eq!(store.by_token(&token, end).await.unwrap(), None);
    assert!(!exists(&redis, &sid_key).await);
}

#[tokio::test]
async fn an_idle_session_expires() {
    let redis = TestRedis::new().await;
    let store = SessionStore::new(
        redis.conn.clone(),
        redis.namespace.clone(),
        Duration::from_millis(300),
        ABSOLUTE,
    );
    let (token, record) = store
        .create(Uuid::new_v4(), SystemClock.now())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        store.by_token(&token, SystemClock.now()).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .get(record.account_id, &record.session_id)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn end_all_ends_every_session_of_one_account_only() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());

    let mut alices = Vec::new();
    for _ in 0..3 {
        alices.push(store.create(alice, t0()).await.unwrap());
    }
    let (bob_token, bob_record) = store.create(bob, t0()).await.unwrap();
    // A member whose session already expired is dropped and not counted.
    let index = cqrs_auth::account_key_prefix(&redis.namespace, alice) + "sessions";
    let mut conn = redis.conn.clone();
    let _: usize = conn.sadd(&index, "expired-sid").await.unwrap();

    assert_eq!(store.end_all(alice).await.unwrap(), 3);
    for (token, record) in &alices {
        assert!(
            !exists(
                &redis,
                &session_key(&redis.namespace, record.account_id, &record.session_id)
            )
            .await
        );
        assert_eq!(store.by_token(token, t0()).await.unwrap(), None);
    }
    assert!(!exists(&redis, &index).await, "the index is emptied");
    assert_eq!(
        store.by_token(&bob_token, t0()).await.unwrap(),
        Some(bob_record)
    );

    assert_eq!(store.end_all(alice).await.unwrap(), 0, "idempotent");
    assert_eq!(store.end_all(Uuid::new_v4()).await.unwrap(), 0);
}

#[tokio::test]
async fn end_matching_ends_only_sessions_with_that_active_grant() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let account = Uuid::new_v4();
    let (org1, org2) = (Uuid::new_v4(), Uuid::new_v4());

    let (_, s1) = store.create(account, t0()).await.unwrap();
    let (_, s2) = store.create(account, t0()).await.unwrap();
    let (_, s3) = store.create(account, t0()).await.unwrap();
    let (_, s4) = store.create(account, t0()).await.unwrap();
    let other_account = Uuid::new_v4();
    let (_, s5) = store.create(other_account, t0()).await.unwrap();
    for (sid, active) in [
        (&s1.session_id, grant(org1, Role::PracticeUser)),
        (&s2.session_id, grant(org1, Role::PracticeManager)),
        (&s3.session_id, grant(org2, Role::PracticeUser)),
    ] {
        assert!(store.set_active(account, sid, active).await.unwrap());
    }
    assert!(
        store
            .set_active(
                other_account,
                &s5.session_id,
                grant(org1, Role::PracticeUser)
            )
            .await
            .unwrap()
    );
    let live = |sid: &str| session_key(&redis.namespace, account, sid);

    assert_eq!(
        store
            .end_matching(account, Some(org1), Some(Role::PracticeUser))
            .await
            .unwrap(),
        1
    );
    assert!(!exists(&redis, &live(&s1.session_id)).await);
    assert!(exists(&redis, &live(&s2.session_id)).await);
    assert!(exists(&redis, &live(&s3.session_id)).await);
    assert!(
        exists(
            &redis,
            &session_key(&redis.namespace, other_account, &s5.session_id)
        )
        .await,
        "other account"
    );

    assert_eq!(
        store.end_matching(account, Some(org2), None).await.unwrap(),
        1
    );
    assert!(!exists(&redis, &live(&s3.session_id)).await);

    // Any active grant: s2 goes, s4 (no grant picked) stays.
    assert_eq!(store.end_matching(account, None, None).await.unwrap(), 1);
    assert!(!exists(&redis, &live(&s2.session_id)).await);
    assert!(exists(&redis, &live(&s4.session_id)).await);
    assert_eq!(
        store.get(s4.account_id, &s4.session_id).await.unwrap(),
        Some(s4.clone()),
        "a session without a grant never matches"
    );
}

#[tokio::test]
async fn set_active_records_the_grant_and_never_revives_a_session() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let org = Uuid::new_v4();
    let (token, record) = store.create(Uuid::new_v4(), t0()).await.unwrap();

    let active = grant(org, Role::CommissioningApprover);
    assert!(
        store
            .set_active(record.account_id, &record.session_id, active)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get(record.account_id, &record.session_id)
            .await
            .unwrap()
            .unwrap()
            .active,
        active
    );
    assert_eq!(
        store.by_token(&token, t0()).await.unwrap().unwrap().active,
        active
    );
    assert!(
        store
            .set_active(record.account_id, &record.session_id, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get(record.account_id, &record.session_id)
            .await
            .unwrap()
            .unwrap()
            .active,
        None
    );

    store
        .end(record.account_id, &record.session_id)
        .await
        .unwrap();
    assert!(
        !store
            .set_active(record.account_id, &record.session_id, active)
            .await
            .unwrap()
    );
    assert!(
        !exists(
            &redis,
            &session_key(&redis.namespace, record.account_id, &record.session_id)
        )
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_in_parallel() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let account = Uuid::new_v4();

    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.create(account, t0()).await })
        })
        .collect();
    let mut sessions = Vec::new();
    for task in tasks {
        sessions.push(task.await.unwrap().unwrap());
    }
    let sids: HashSet<_> = sessions.iter().map(|(_, r)| r.session_id.clone()).collect();
    let tokens: HashSet<_> = sessions.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(sids.len(), 100);
    assert_eq!(tokens.len(), 100);
    assert!(sids.is_disjoint(&tokens));

    let lookups: Vec<_> = sessions
        .iter()
        .map(|(token, record)| {
            let store = store.clone();
            let token = token.clone();
            let sid = record.session_id.clone();
            tokio::spawn(async move {
                let found = store.by_token(&token, t0()).await.unwrap().unwrap();
                assert_eq!(found.session_id, sid);
            })
        })
        .collect();
    for lookup in lookups {
        lookup.await.unwrap();
    }

    assert_eq!(store.end_all(account).await.unwrap(), 100);
    assert!(redis.keys().await.is_empty(), "{:?}", redis.keys().await);
}

#[tokio::test]
async fn redis_down_fails_closed() {
    let store = SessionStore::new(dead_redis(), "t-dead:", IDLE, ABSOLUTE);

    let started = Instant::now();
    let limit = Duration::from_secs(5);
    let account = Uuid::new_v4();
    assert!(
        tokio::time::timeout(limit, store.create(account, t0()))
            .await
            .unwrap()
            .is_err()
    );
    assert!(
        tokio::time::timeout(
            limit,
            store.by_token(&format!("{}.secret", account.simple()), t0())
        )
        .await
        .unwrap()
        .is_err()
    );
    assert!(
        tokio::time::timeout(limit, store.end(account, "sid"))
            .await
            .unwrap()
            .is_err()
    );
    assert!(
        tokio::time::timeout(limit, store.end_all(account))
            .await
            .unwrap()
            .is_err()
    );
    assert!(started.elapsed() < limit);
}
