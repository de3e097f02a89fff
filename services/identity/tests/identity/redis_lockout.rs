//! The lock-out counter against a real Redis: atomic check + count under parallel attempts,
//! growing temporary locks, the permanent lock, reset, unlock and failing closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_identity::domain::lockout::LockoutPolicy;
use cqrs_identity::store::lockout::{AttemptGate, LockoutStore};
use cqrs_testkit::TestRedis;
use redis::AsyncCommands;
use uuid::Uuid;

use crate::redis_fixtures::{dead_redis, t0};

fn policy(temporary_after: u32, permanent_after: u32) -> LockoutPolicy {
    LockoutPolicy {
        temporary_after,
        base_wait: Duration::from_secs(60),
        max_wait: Duration::from_secs(3600),
        permanent_after,
        failure_window: Duration::from_secs(24 * 3600),
    }
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

fn store(redis: &TestRedis) -> LockoutStore {
    LockoutStore::new(redis.conn.clone(), redis.namespace.clone())
}

fn lockout_key(redis: &TestRedis, account: Uuid) -> String {
    cqrs_auth::account_key_prefix(&redis.namespace, account) + "lockout"
}

/// `n` attempts at once on a multi-threaded runtime; returns every gate.
async fn parallel_attempts(
    store: &LockoutStore,
    account: Uuid,
    policy: &Arc<LockoutPolicy>,
    now: DateTime<Utc>,
    n: usize,
) -> Vec<AttemptGate> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let store = store.clone();
            let policy = Arc::clone(policy);
            tokio::spawn(async move { store.begin_attempt(account, &policy, now).await })
        })
        .collect();
    let mut gates = Vec::with_capacity(n);
    for task in tasks {
        gates.push(task.await.unwrap().unwrap());
    }
    gates
}

fn proceeded(gates: &[AttemptGate]) -> Vec<(u32, bool)> {
    let mut out: Vec<_> = gates
        .iter()
        .filter_map(|g| match *g {
            AttemptGate::Proceed {
                failures,
                permanent_reached,
            } => Some((failures, permanent_reached)),
            AttemptGate::Locked { .. } => None,
        })
        .collect();
    out.sort_unstable();
    out
}

/// The wait the policy sets after `failures` failures (0 = none).
fn wait_after(policy: &LockoutPolicy, failures: u32) -> i64 {
    let waits = policy.waits_ms();
    let wait = waits.get(failures as usize - 1).copied().unwrap_or(0);
    i64::try_from(wait).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_attempts_never_exceed_the_threshold() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let policy = Arc::new(policy(5, 10));
    let account = Uuid::new_v4();

    let gates = parallel_attempts(&store, account, &policy, t0(), 200).await;

    assert_eq!(
        proceeded(&gates),
        vec![(1, false), (2, false), (3, false), (4, false), (5, false)],
        "exactly T attempts may check a password"
    );
    let expected_until = t0().timestamp_millis() + wait_after(&policy, 5);
    for gate in &gates {
        if let AttemptGate::Locked { until_ms } = gate {
            assert_eq!(*until_ms, Some(expected_until));
        }
    }
    assert_eq!(store.failures(account).await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_attempts_at_the_permanent_threshold() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    // No temporary stage: the count goes straight to the permanent lock.
    let policy = Arc::new(policy(5, 5));
    let account = Uuid::new_v4();

    let gates = parallel_attempts(&store, account, &policy, t0(), 200).await;

    assert_eq!(
        proceeded(&gates),
        vec![(1, false), (2, false), (3, false), (4, false), (5, true)]
    );
    for gate in &gates {
        if let AttemptGate::Locked { until_ms } = gate {
            assert_eq!(*until_ms, None, "permanent");
        }
    }
    assert_eq!(store.failures(account).await.unwrap(), 5);
}

#[tokio::test]
async fn locked_attempts_do_not_move_the_counter() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let policy = policy(5, 10);
    let account = Uuid::new_v4();
    let now = t0();

    for expected in 1..=5 {
        assert_eq!(
            store.begin_attempt(account, &policy, now).await.unwrap(),
            AttemptGate::Proceed {
                failures: expected,
                permanent_reached: false
            }
        );
    }
    let until = now.timestamp_millis() + wait_after(&policy, 5);
    // Still locked a millisecond before the wait is over.
    for later in [0, 1_000, wait_after(&policy, 5) - 1] {
        let gate = store
            .begin_attempt(account, &policy, at_ms(now.timestamp_millis() + later))
            .await
            .unwrap();
        assert_eq!(
            gate,
            AttemptGate::Locked {
                until_ms: Some(until)
            }
        );
    }
    assert_eq!(store.failures(account).await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_temporary_lock_one_attempt_passes_and_the_wait_grows() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let policy = Arc::new(policy(5, 10));
    let account = Uuid::new_v4();

    parallel_attempts(&store, account, &policy, t0(), 200).await;
    let first_wait = wait_after(&policy, 5);
    let second_wait = wait_after(&policy, 6);
    assert!(first_wait > 0);
    assert!(second_wait > first_wait, "the wait grows");

    let unlocked_at = at_ms(t0().timestamp_millis() + first_wait);
    let gates = parallel_attempts(&store, account, &policy, unlocked_at, 200).await;
    assert_eq!(proceeded(&gates), vec![(6, false)]);
    let relocked_until = unlocked_at.timestamp_millis() + second_wait;
    for gate in &gates {
        if let AttemptGate::Locked { until_ms } = gate {
            assert_eq!(*until_ms, Some(relocked_until));
        }
    }
    assert_eq!(store.failures(account).await.unwrap(), 6);
}

#[tokio::test]
async fn permanent_lock_at_permanent_after() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let policy = policy(3, 6);
    let account = Uuid::new_v4();
    let key = lockout_key(&redis, account);
    let mut conn = redis.conn.clone();
    let mut now = t0().timestamp_millis();

    for expected in 1..=6 {
        let gate = store
            .begin_attempt(account, &policy, at_ms(now))
            .await
            .unwrap();
        assert_eq!(
            gate,
            AttemptGate::Proceed {
                failures: expected,
                permanent_reached: expected == 6
            }
        );
        now += wait_after(&policy, expected);
    }

    // Far beyond any temporary wait: still locked, and without an end.
    let much_later = at_ms(now + TimeDelta::days(30).num_milliseconds());
    assert_eq!(
        store
            .begin_attempt(account, &policy, much_later)
            .await
            .unwrap(),
        AttemptGate::Locked { until_ms: None }
    );
    assert_eq!(store.failures(account).await.unwrap(), 6);

    // Until the service records it durably the flag expires with the counter...
    let ttl: i64 = conn.pttl(&key).await.unwrap();
    assert!(ttl > 0);
    // ...then it is kept without expiry, and a late success from an earlier attempt cannot
    // lift it.
    store.set_permanent(account).await.unwrap();
    let ttl: i64 = conn.pttl(&key).await.unwrap();
    assert_eq!(ttl, -1);
    store.record_success(account).await.unwrap();
    assert_eq!(
        store
            .begin_attempt(account, &policy, much_later)
            .await
            .unwrap(),
        AttemptGate::Locked { until_ms: None }
    );

    // Only the service-desk unlock lifts it.
    store.clear(account).await.unwrap();
    assert_eq!(store.failures(account).await.unwrap(), 0);
    assert_eq!(
        store
            .begin_attempt(account, &policy, much_later)
            .await
            .unwrap(),
        AttemptGate::Proceed {
            failures: 1,
            permanent_reached: false
        }
    );
}

#[tokio::test]
async fn right_password_on_the_permanent_attempt_resets() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let policy = policy(3, 3);
    let account = Uuid::new_v4();

    for _ in 0..3 {
        store.begin_attempt(account, &policy, t0()).await.unwrap();
    }
    // The third attempt reached the permanent threshold but its password was right.
    store.record_success(account).await.unwrap();
    assert_eq!(store.failures(account).await.unwrap(), 0);
    assert!(redis.keys().await.is_empty());
}

#[tokio::test]
async fn success_resets_the_counter() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let policy = policy(5, 10);
    let account = Uuid::new_v4();

    for _ in 0..4 {
        store.begin_attempt(account, &policy, t0()).await.unwrap();
    }
    assert_eq!(store.failures(account).await.unwrap(), 4);
    store.record_success(account).await.unwrap();
    assert_eq!(store.failures(account).await.unwrap(), 0);
    assert!(redis.keys().await.is_empty());

    // Counting starts again from one: four more failures do not lock.
    for expected in 1..=4 {
        assert_eq!(
            store.begin_attempt(account, &policy, t0()).await.unwrap(),
            AttemptGate::Proceed {
                failures: expected,
                permanent_reached: false
            }
        );
    }
}

#[tokio::test]
async fn clear_unlocks_a_temporary_lock() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let policy = policy(5, 10);
    let account = Uuid::new_v4();

    for _ in 0..6 {
        store.begin_attempt(account, &policy, t0()).await.unwrap();
    }
    assert!(matches!(
        store.begin_attempt(account, &policy, t0()).await.unwrap(),
        AttemptGate::Locked { until_ms: Some(_) }
    ));
    store.clear(account).await.unwrap();
    assert_eq!(
        store.begin_attempt(account, &policy, t0()).await.unwrap(),
        AttemptGate::Proceed {
            failures: 1,
            permanent_reached: false
        }
    );
    // Idempotent.
    store.clear(account).await.unwrap();
    store.clear(account).await.unwrap();
}

#[tokio::test]
async fn counter_expires_after_the_failure_window() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let policy = policy(5, 10);
    let account = Uuid::new_v4();
    let window_ms = i64::try_from(policy.failure_window.as_millis()).unwrap();

    store.begin_attempt(account, &policy, t0()).await.unwrap();
    let mut conn = redis.conn.clone();
    let ttl: i64 = conn.pttl(lockout_key(&redis, account)).await.unwrap();
    assert!(ttl > window_ms - 10_000 && ttl <= window_ms, "ttl {ttl}");
}

#[tokio::test]
async fn failures_are_per_account() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let policy = policy(5, 10);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());

    for _ in 0..5 {
        store.begin_attempt(a, &policy, t0()).await.unwrap();
    }
    assert_eq!(
        store.begin_attempt(b, &policy, t0()).await.unwrap(),
        AttemptGate::Proceed {
            failures: 1,
            permanent_reached: false
        }
    );
    assert_eq!(store.failures(a).await.unwrap(), 5);
    assert_eq!(store.failures(b).await.unwrap(), 1);
}

#[tokio::test]
async fn reading_an_unused_account_creates_no_state() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let account = Uuid::new_v4();

    assert_eq!(store.failures(account).await.unwrap(), 0);
    store.record_success(account).await.unwrap();
    store.clear(account).await.unwrap();
    assert_eq!(store.failures(account).await.unwrap(), 0);
    assert!(redis.keys().await.is_empty(), "{:?}", redis.keys().await);
}

/// `locked_until` reports locks that end by themselves, reads several accounts in order, and
/// never creates a key.
#[tokio::test]
async fn locked_until_reads_without_creating_state() {
    let redis = TestRedis::new().await;
    let store = store(&redis);
    let policy = policy(2, 3);
    let (locked, permanent, free) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let now = t0().timestamp_millis();

    assert_eq!(store.locked_until(free, t0()).await.unwrap(), None);
    assert!(redis.keys().await.is_empty(), "{:?}", redis.keys().await);

    // One failure: counted, not locked. Two: locked for the first wait.
    store.begin_attempt(locked, &policy, t0()).await.unwrap();
    assert_eq!(store.locked_until(locked, t0()).await.unwrap(), None);
    store.begin_attempt(locked, &policy, t0()).await.unwrap();
    let until = now + wait_after(&policy, 2);
    assert_eq!(store.locked_until(locked, t0()).await.unwrap(), Some(until));
    assert_eq!(
        store.locked_until(locked, at_ms(until)).await.unwrap(),
        None
    );

    // The script's permanent flag lapses with the counter until it is made durable.
    let straight_to_permanent = self::policy(3, 3);
    for _ in 0..3 {
        store
            .begin_attempt(permanent, &straight_to_permanent, t0())
            .await
            .unwrap();
    }
    let lapses = store.locked_until(permanent, t0()).await.unwrap().unwrap();
    let window = i64::try_from(policy.failure_window.as_millis()).unwrap();
    assert!(
        (now + window - 5_000..=now + window).contains(&lapses),
        "{lapses}"
    );
    store.set_permanent(permanent).await.unwrap();
    assert_eq!(store.locked_until(permanent, t0()).await.unwrap(), None);

    assert_eq!(
        store
            .locked_until_many(&[free, locked, permanent, free], t0())
            .await
            .unwrap(),
        vec![None, Some(until), None, None]
    );
    assert!(store.locked_until_many(&[], t0()).await.unwrap().is_empty());
    let keys = redis.keys().await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains(&free.to_string())));
}

#[tokio::test]
async fn redis_down_fails_closed() {
    let store = LockoutStore::new(dead_redis(), "t-dead:");
    let policy = policy(5, 10);
    let account = Uuid::new_v4();

    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(5),
        store.begin_attempt(account, &policy, t0()),
    )
    .await
    .expect("begin_attempt must answer promptly when Redis is down");
    assert!(outcome.is_err(), "no bypass: {outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let failures = tokio::time::timeout(Duration::from_secs(5), store.failures(account))
        .await
        .unwrap();
    assert!(failures.is_err());
}

/// A Redis of its own, configured as deploy/README.md asks (append-only file), in `dir` on
/// `port`; stopped when dropped.
struct OwnRedis {
    child: std::process::Child,
    port: u16,
}

impl OwnRedis {
    async fn start(dir: &std::path::Path, port: u16) -> OwnRedis {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let own = OwnRedis { child, port };
        let client = redis::Client::open(own.url()).unwrap();
        for _ in 0..100 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return own;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on {port} did not start");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// What a pod stop does: SHUTDOWN (SIGTERM), which writes the append-only file out.
    fn stop(mut self) {
        let _ = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown"])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Temporary locks and failure counters live only in Redis, so Redis must keep them across a
/// restart: with the append-only file the deployment guide asks for, a restarted Redis still
/// refuses the locked account and still counts its earlier failures (no fresh budget of
/// guesses per restart).
#[tokio::test]
async fn temporary_locks_and_counters_survive_a_redis_restart_with_aof() {
    let dir = std::env::temp_dir().join(format!("cqrs-aof-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = cqrs_testkit::free_port();
    let policy = policy(3, 10);
    let account = Uuid::new_v4();

    let redis = OwnRedis::start(&dir, port).await;
    let conn = cqrs_identity::redis_connection(&redis.url()).unwrap();
    let store = LockoutStore::new(conn, "aof-test:".to_owned());
    for _ in 0..3 {
        let gate = store.begin_attempt(account, &policy, t0()).await.unwrap();
        assert!(matches!(gate, AttemptGate::Proceed { .. }), "{gate:?}");
    }
    let locked = store.begin_attempt(account, &policy, t0()).await.unwrap();
    assert!(matches!(locked, AttemptGate::Locked { .. }), "{locked:?}");
    redis.stop();

    let redis = OwnRedis::start(&dir, port).await;
    let conn = cqrs_identity::redis_connection(&redis.url()).unwrap();
    let store = LockoutStore::new(conn, "aof-test:".to_owned());
    let later = t0() + TimeDelta::seconds(10);
    let still = store.begin_attempt(account, &policy, later).await.unwrap();
    assert!(matches!(still, AttemptGate::Locked { .. }), "{still:?}");
    assert_eq!(store.failures(account).await.unwrap(), 3);
    drop(redis);
    std::fs::remove_dir_all(&dir).unwrap();
}
