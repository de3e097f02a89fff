//! Session liveness: a user token only counts while its session exists in identity's Redis.

use std::fmt;

use cqrs_redis::RedisConnection;
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
