//! Session liveness: a user token only counts while its session exists in identity's Redis.

use std::fmt;

use futures::future::BoxFuture;
use redis::AsyncCommands;

use crate::error::AuthError;

/// Key prefix of a session record; the full key is `"{namespace}identity:session:{sid}"`.
/// Owned here so identity (writer) and every verifier (readers) agree on it.
pub const SESSION_KEY_PREFIX: &str = "identity:session:";

/// The Redis key of session `session_id` under `namespace` (e.g. `""` in production,
/// `"t-<uuid>:"` in tests).
pub fn session_key(namespace: &str, session_id: &str) -> String {
    format!("{namespace}{SESSION_KEY_PREFIX}{session_id}")
}

/// Answers whether a session is still live.
pub trait SessionCheck: Send + Sync + 'static {
    /// `Ok(false)` for an ended session; `Err` when the store cannot answer (callers fail
    /// closed with `Unavailable`).
    fn is_live(&self, session_id: &str) -> BoxFuture<'_, Result<bool, AuthError>>;

    /// Whether the store answers at all, for readiness: a service whose every user call
    /// needs it is not ready without it. Stores that cannot be down say yes.
    fn reachable(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}

/// [`SessionCheck`] against identity's Redis: `EXISTS {namespace}identity:session:{sid}`.
#[derive(Clone)]
pub struct RedisSessionCheck {
    conn: redis::aio::ConnectionManager,
    namespace: String,
}

impl RedisSessionCheck {
    /// Checks keys under `namespace` using `conn` (which reconnects by itself).
    pub fn new(conn: redis::aio::ConnectionManager, namespace: impl Into<String>) -> Self {
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
    fn is_live(&self, session_id: &str) -> BoxFuture<'_, Result<bool, AuthError>> {
        let key = session_key(&self.namespace, session_id);
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
        assert_eq!(session_key("", "abc"), "identity:session:abc");
        assert_eq!(session_key("t-1:", "abc"), "t-1:identity:session:abc");
    }
}
