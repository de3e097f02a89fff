//! A private key namespace on a shared Redis, so parallel tests never see each other's keys.

use std::fmt;
use std::time::Duration;

use redis::aio::ConnectionManager;

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the test Redis (`TEST_REDIS_URL`, default `redis://127.0.0.1:6379`) and a
/// unique key prefix `t-<uuid>:`. Every key under the prefix is deleted when this is dropped.
pub struct TestRedis {
    pub url: String,
    /// Prefix for every key the test writes, e.g. `t-0123…:`; give it to the code under test
    /// as its namespace.
    pub namespace: String,
    pub conn: ConnectionManager,
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
    pub async fn new() -> TestRedis {
        let url = std::env::var("TEST_REDIS_URL")
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let client = redis::Client::open(url.as_str())
            .unwrap_or_else(|e| panic!("TestRedis: TEST_REDIS_URL is invalid ({e})"));
        let conn = ConnectionManager::new(client).await.unwrap_or_else(|e| {
            panic!("TestRedis: cannot connect to Redis (set TEST_REDIS_URL): {e}")
        });
        TestRedis {
            url,
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
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys = scan_namespace(&mut conn, namespace).await?;
    for chunk in keys.chunks(500) {
        redis::cmd("DEL")
            .arg(chunk)
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(())
}

async fn scan_namespace<C>(conn: &mut C, namespace: &str) -> redis::RedisResult<Vec<String>>
where
    C: redis::aio::ConnectionLike + Send,
{
    // The namespace is `t-` + hex + `:`, so it contains no glob metacharacters.
    let pattern = format!("{namespace}*");
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}
