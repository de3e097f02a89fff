//! A private key namespace on a shared Redis, so parallel tests never see each other's keys.

use std::fmt;
use std::time::Duration;

use cqrs_redis::RedisConnection;

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the test Redis (`TEST_REDIS_URL`, default `redis://127.0.0.1:6379`) and a
/// unique key prefix `t-<uuid>:`. Every key under the prefix is deleted when this is dropped.
pub struct TestRedis {
    pub url: String,
    /// Prefix for every key the test writes, e.g. `t-0123…:`; give it to the code under test
    /// as its namespace.
    pub namespace: String,
    pub conn: RedisConnection,
}

impl fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestRedis")
            .field("url", &self.url)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl TestRedis {
    /// A namespace on the test Redis: `TEST_REDIS_URL`, any form `REDIS_URL` takes (a single
    /// server, Sentinel or Cluster), default `redis://127.0.0.1:6379`.
    pub async fn new() -> TestRedis {
        let url = std::env::var("TEST_REDIS_URL")
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        Self::at(&url).await
    }

    /// A namespace on the Redis deployment at `url`.
    pub async fn at(url: &str) -> TestRedis {
        let mut conn = RedisConnection::open_url(url)
            .unwrap_or_else(|e| panic!("TestRedis: {url:?} is invalid ({e})"));
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .unwrap_or_else(|e| {
                panic!("TestRedis: cannot reach Redis at {url} (set TEST_REDIS_URL): {e}")
            });
        TestRedis {
            url: url.to_owned(),
            namespace: format!("t-{}:", uuid::Uuid::new_v4().simple()),
            conn,
        }
    }

    /// `namespace` + `suffix`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.namespace)
    }

    /// Every key currently under the namespace (with the namespace), sorted.
    pub async fn keys(&self) -> Vec<String> {
        let mut conn = self.conn.clone();
        let mut keys = scan_namespace(&mut conn, &self.namespace)
            .await
            .unwrap_or_else(|e| panic!("TestRedis: SCAN failed: {e}"));
        keys.sort();
        keys.dedup();
        keys
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        // See TestDb's Drop: cleanup runs on its own thread and runtime, bounded in time.
        let url = self.url.clone();
        let namespace = self.namespace.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("testredis-drop".into())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
                    .and_then(|rt| {
                        rt.block_on(delete_namespace(&url, &namespace))
                            .map_err(|e| e.to_string())
                    });
                let _ = done_tx.send(result);
            });
        let outcome = match spawned {
            Ok(_) => done_rx
                .recv_timeout(DROP_TIMEOUT)
                .unwrap_or_else(|_| Err("timed out".into())),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = outcome {
            eprintln!(
                "TestRedis: could not delete keys under {}: {e}",
                self.namespace
            );
        }
    }
}

async fn delete_namespace(url: &str, namespace: &str) -> redis::RedisResult<()> {
    let mut conn = RedisConnection::open_url(url)?;
    let keys = scan_namespace(&mut conn, namespace).await?;
    // One key per DEL: a cluster keeps them on different nodes.
    let deletes = keys.iter().map(|key| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("DEL")
                .arg(key)
                .query_async::<()>(&mut conn)
                .await
        }
    });
    futures::future::try_join_all(deletes).await?;
    Ok(())
}

async fn scan_namespace(
    conn: &mut RedisConnection,
    namespace: &str,
) -> redis::RedisResult<Vec<String>> {
    // KEYS rather than SCAN: a cluster answers it from every master (a SCAN cursor belongs to
    // one node), and a test's namespace is small. The namespace is `t-` + hex + `:`, so it
    // contains no glob metacharacters.
    redis::cmd("KEYS")
        .arg(format!("{namespace}*"))
        .query_async(conn)
        .await
}
