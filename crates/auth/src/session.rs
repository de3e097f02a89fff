//! Session liveness: a user token only counts while its session exists in identity's Redis.
//!
//! [`CachedSessionCheck`] answers most checks without a round trip. Rules:
//! * identity announces every session it ends — sign-out, disable, lock, password change, role
//!   revocation — on [`sessions_ended_channel`] (their keys, one per line) right after the
//!   delete, and answers the ending only once both are done; a checker drops those keys from
//!   its cache as it hears them;
//! * a live answer from Redis is kept for [`CACHE_TTL`] (expiries are not announced: an idle
//!   or absolute expiry is noticed that much later), and only if no announcement or
//!   reconnection came while it was read, so a check racing an end cannot cache the session
//!   back to life;
//! * the cache is used only while the checker can be sure it would have heard an end: it is
//!   subscribed and has heard something (every checker announces an empty heartbeat every
//!   [`HEARTBEAT`]) within [`HEARD_WITHIN`]. Otherwise — the subscription broken, Redis
//!   unreachable, a silent network — every check asks Redis, and fails closed when Redis
//!   cannot answer; the cache is emptied whenever the subscription breaks or starts again.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cqrs_redis::{Heard, RedisConnection};
use futures::future::BoxFuture;
use redis::AsyncCommands;
use uuid::Uuid;

use crate::error::AuthError;

/// The start of every key identity keeps for one account (its sessions, their refresh
/// tokens, its session index, its lock-out counter): `"{namespace}identity:{<account>}:"`.
/// The braces are a Redis Cluster hash tag, so all of them live on one node and one script
/// or transaction may touch them together. Owned here so identity (writer) and every
/// verifier (readers) agree on it.
pub fn account_key_prefix(namespace: &str, account_id: Uuid) -> String {
    format!("{namespace}identity:{{{account_id}}}:")
}

/// The Redis key of session `session_id` of `account_id` under `namespace` (e.g. `""` in
/// production, `"t-<uuid>:"` in tests).
pub fn session_key(namespace: &str, account_id: Uuid, session_id: &str) -> String {
    format!(
        "{}session:{session_id}",
        account_key_prefix(namespace, account_id)
    )
}

/// A `SCAN`/`KEYS` pattern matching every session key under `namespace` (braces are not
/// special in Redis patterns).
pub fn session_key_pattern(namespace: &str) -> String {
    format!("{namespace}identity:{{*}}:session:*")
}

/// The pub/sub channel on which ended sessions are announced: their [`session_key`]s, one
/// per line (an empty message is a heartbeat).
pub fn sessions_ended_channel(namespace: &str) -> String {
    format!("{namespace}identity:sessions-ended")
}

/// Announces that the sessions at `keys` ended (for writers outside identity's store, such
/// as tests that end sessions by deleting their keys).
pub async fn announce_ended(
    conn: &mut RedisConnection,
    namespace: &str,
    keys: &[String],
) -> Result<(), redis::RedisError> {
    conn.publish(sessions_ended_channel(namespace), keys.join("\n"))
        .await
}

/// How long a live answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// The cache counts only while the channel was heard from this recently.
pub const HEARD_WITHIN: Duration = Duration::from_millis(1500);
/// How often every checker announces that it is listening.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// Live answers kept at most (beyond it the cache starts again empty).
const CACHE_LIMIT: usize = 100_000;

/// Answers whether a session is still live.
pub trait SessionCheck: Send + Sync + 'static {
    /// `Ok(false)` for an ended session; `Err` when the store cannot answer (callers fail
    /// closed with `Unavailable`).
    fn is_live(&self, account_id: Uuid, session_id: &str)
    -> BoxFuture<'_, Result<bool, AuthError>>;

    /// Whether the store answers at all, for readiness: a service whose every user call
    /// needs it is not ready without it. Stores that cannot be down say yes.
    fn reachable(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}

/// [`SessionCheck`] against identity's Redis: `EXISTS` on the [`session_key`].
#[derive(Clone)]
pub struct RedisSessionCheck {
    conn: RedisConnection,
    namespace: String,
}

impl RedisSessionCheck {
    /// Checks keys under `namespace` using `conn` (which reconnects by itself).
    pub fn new(conn: RedisConnection, namespace: impl Into<String>) -> Self {
        Self {
            conn,
            namespace: namespace.into(),
        }
    }
}

impl fmt::Debug for RedisSessionCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSessionCheck")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl SessionCheck for RedisSessionCheck {
    fn is_live(
        &self,
        account_id: Uuid,
        session_id: &str,
    ) -> BoxFuture<'_, Result<bool, AuthError>> {
        let key = session_key(&self.namespace, account_id, session_id);
        let mut conn = self.conn.clone();
        Box::pin(async move {
            conn.exists::<_, bool>(&key)
                .await
                .map_err(|e| AuthError::Unavailable(format!("session store: {e}")))
        })
    }

    fn reachable(&self) -> BoxFuture<'_, bool> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        })
    }
}

/// [`RedisSessionCheck`] with a cache kept true by identity's announcements (see the module
/// documentation for the rules). Made inside a Tokio runtime: it listens and sends its
/// heartbeat on tasks of its own, stopped when it is dropped.
pub struct CachedSessionCheck {
    redis: RedisSessionCheck,
    cache: Arc<Cache>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

#[derive(Default)]
struct Cache {
    live: Mutex<HashMap<String, Instant>>,
    /// Moves on every announcement and every (re)subscription.
    epoch: AtomicU64,
    /// When the channel was last heard from, while subscribed.
    heard: Mutex<Option<Instant>>,
}

impl Cache {
    fn on(&self, heard: Heard) {
        let now = Instant::now();
        match heard {
            Heard::Subscribed | Heard::Lost => {
                self.epoch.fetch_add(1, Ordering::SeqCst);
                lock(&self.live).clear();
                *lock(&self.heard) = (heard == Heard::Subscribed).then_some(now);
            }
            Heard::Message(keys) => {
                if !keys.is_empty() {
                    self.epoch.fetch_add(1, Ordering::SeqCst);
                    let mut live = lock(&self.live);
                    for key in keys.lines() {
                        live.remove(key);
                    }
                }
                *lock(&self.heard) = Some(now);
            }
        }
    }

    fn trusted(&self, now: Instant) -> bool {
        lock(&self.heard).is_some_and(|at| now.duration_since(at) < HEARD_WITHIN)
    }

    fn hit(&self, key: &str, now: Instant) -> bool {
        lock(&self.live)
            .get(key)
            .is_some_and(|&at| now.duration_since(at) < CACHE_TTL)
    }

    fn keep(&self, key: String, now: Instant) {
        let mut live = lock(&self.live);
        if live.len() >= CACHE_LIMIT {
            live.clear();
        }
        live.insert(key, now);
    }
}

/// A poisoned lock only means another check panicked; the map itself is still whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CachedSessionCheck {
    /// Checks keys under `namespace` using `conn`, listening on its
    /// [`sessions_ended_channel`].
    pub fn new(conn: RedisConnection, namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        let cache = Arc::new(Cache::default());
        let channel = sessions_ended_channel(&namespace);
        let listener = {
            let cache = Arc::clone(&cache);
            conn.subscribe(channel.clone(), move |heard| cache.on(heard))
        };
        let heartbeat = {
            let mut conn = conn.clone();
            tokio::spawn(async move {
                loop {
                    // Nobody listening, or Redis away: the listeners stop trusting their caches.
                    let _ =
                        redis::AsyncCommands::publish::<_, _, ()>(&mut conn, &channel, "").await;
                    tokio::time::sleep(HEARTBEAT).await;
                }
            })
        };
        CachedSessionCheck {
            redis: RedisSessionCheck::new(conn, namespace),
            cache,
            tasks: [listener, heartbeat],
        }
    }
}

impl CachedSessionCheck {
    /// Forgets the sessions at `keys` now, for the writer that ended them: its own next check
    /// must not wait for the announcement to come back.
    pub fn forget(&self, keys: &[String]) {
        self.cache.on(Heard::Message(keys.join("\n")));
    }
}

impl Drop for CachedSessionCheck {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for CachedSessionCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedSessionCheck")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl SessionCheck for CachedSessionCheck {
    fn is_live(
        &self,
        account_id: Uuid,
        session_id: &str,
    ) -> BoxFuture<'_, Result<bool, AuthError>> {
        let key = session_key(&self.redis.namespace, account_id, session_id);
        let session_id = session_id.to_owned();
        Box::pin(async move {
            let now = Instant::now();
            let trusted = self.cache.trusted(now);
            if trusted && self.cache.hit(&key, now) {
                return Ok(true);
            }
            let epoch = self.cache.epoch.load(Ordering::SeqCst);
            let live = self.redis.is_live(account_id, &session_id).await?;
            if live && trusted && self.cache.epoch.load(Ordering::SeqCst) == epoch {
                self.cache.keep(key, now);
            }
            Ok(live)
        })
    }

    fn reachable(&self) -> BoxFuture<'_, bool> {
        self.redis.reachable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_format() {
        let account = Uuid::nil();
        assert_eq!(
            session_key("", account, "abc"),
            format!("identity:{{{account}}}:session:abc")
        );
        assert_eq!(
            session_key("t-1:", account, "abc"),
            format!("t-1:identity:{{{account}}}:session:abc")
        );
        assert_eq!(session_key_pattern("t-1:"), "t-1:identity:{*}:session:*");
    }
}
