//! The cached session check against a real Redis: live answers are reused without a round
//! trip, an announced end is refused at once, and a lost subscription or an unreachable
//! Redis means every check goes to Redis again (failing closed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cqrs_auth::{CachedSessionCheck, HEARD_WITHIN, SessionCheck, announce_ended, session_key};
use cqrs_redis::RedisConnection;
use redis::AsyncCommands;
use uuid::Uuid;

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// Writes a live session and checks it until the check answers from its cache: the key is
/// deleted behind its back (no announcement) and the session still counts.
async fn cached_session(
    check: &CachedSessionCheck,
    conn: &mut RedisConnection,
    namespace: &str,
) -> (Uuid, String, String) {
    let account = Uuid::new_v4();
    let sid = Uuid::new_v4().simple().to_string();
    let key = session_key(namespace, account, &sid);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let _: () = conn.set_ex(&key, "1", 60).await.unwrap();
        assert!(check.is_live(account, &sid).await.unwrap());
        let _: () = conn.del(&key).await.unwrap();
        if check.is_live(account, &sid).await.unwrap() {
            return (account, sid, key);
        }
        assert!(Instant::now() < deadline, "the check never used its cache");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_answers_are_cached_and_announced_ends_refused() {
    let mut conn = RedisConnection::open_url(&redis_url()).unwrap();
    let namespace = format!("t-{}:", Uuid::new_v4().simple());
    let check = CachedSessionCheck::new(conn.clone(), namespace.clone());

    // A session never written is refused, and a refusal is never cached.
    let (account, sid) = (Uuid::new_v4(), "never");
    assert!(!check.is_live(account, sid).await.unwrap());
    let never = session_key(&namespace, account, sid);
    let _: () = conn.set_ex(&never, "1", 60).await.unwrap();
    assert!(check.is_live(account, sid).await.unwrap());
    let _: () = conn.del(&never).await.unwrap();

    // Answered from the cache (the key is gone), until the end is announced.
    let (account, sid, key) = cached_session(&check, &mut conn, &namespace).await;
    assert!(check.is_live(account, &sid).await.unwrap());
    let announced = Instant::now();
    announce_ended(&mut conn, &namespace, &[key]).await.unwrap();
    loop {
        if !check.is_live(account, &sid).await.unwrap() {
            break;
        }
        assert!(
            announced.elapsed() < Duration::from_secs(1),
            "an announced end was not heard"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The writer itself forgets at once, without waiting for the announcement.
    let (account, sid, key) = cached_session(&check, &mut conn, &namespace).await;
    check.forget(&[key]);
    assert!(!check.is_live(account, &sid).await.unwrap());
}

/// A Redis server of this test's own, to kill.
struct OwnRedis {
    child: Child,
    url: String,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        OwnRedis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_fails_closed_even_for_cached_sessions() {
    let mut own = OwnRedis::start();
    let mut conn = RedisConnection::open_url(&own.url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let namespace = "t-own:";
    let check = CachedSessionCheck::new(conn.clone(), namespace);
    let (account, sid, _) = cached_session(&check, &mut conn, namespace).await;

    own.child.kill().unwrap();
    own.child.wait().unwrap();
    let killed = Instant::now();
    // The broken subscription empties the cache: the next checks ask Redis and fail.
    let refused = loop {
        match check.is_live(account, &sid).await {
            Err(e) => break e,
            Ok(live) => {
                assert!(live, "a cached session turned ended, not unavailable");
                assert!(
                    killed.elapsed() < HEARD_WITHIN,
                    "the cache was trusted after the channel went quiet"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        matches!(refused, cqrs_auth::AuthError::Unavailable(_)),
        "{refused:?}"
    );
    assert!(!check.reachable().await);
}
