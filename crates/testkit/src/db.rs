//! A fresh Postgres database per test, so tests can run in parallel (nextest runs each in its
//! own process) without seeing each other's rows.

use cqrs_rules::backoff::Backoff;
use std::fmt;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Many test processes share one server (max_connections is usually 100), so each test
/// database gets only a few connections.
const MAX_POOL_CONNECTIONS: u32 = 5;
const ATTEMPTS: u32 = 8;
/// How long a test waits on drop for its database to be removed.
const DROP_TIMEOUT: Duration = Duration::from_secs(15);

/// A newly created database named `cqrs_t_<uuid>`, dropped (`WITH (FORCE)`) when this value
/// is dropped.
pub struct TestDb {
    pub pool: PgPool,
    /// Connection URL of the test database (the admin URL with the path replaced).
    pub url: String,
    /// Database name.
    pub name: String,
    admin_url: String,
}

impl fmt::Debug for TestDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDb")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestDb {
    /// A fresh database with `migrator` applied.
    ///
    /// The admin connection comes from `TEST_DATABASE_URL` (default
    /// `postgres://postgres@127.0.0.1:5432/postgres`); it needs `CREATEDB`.
    pub async fn new(migrator: &'static Migrator) -> TestDb {
        let db = TestDb::empty().await;
        if let Err(e) = migrator.run(&db.pool).await {
            panic!("TestDb: migrating {} failed: {e}", db.name);
        }
        db
    }

    /// A fresh database with nothing in it, for code that runs its own migrations.
    pub async fn empty() -> TestDb {
        let admin_url = admin_url();
        let name = format!("cqrs_t_{}", uuid::Uuid::new_v4().simple());
        let url = database_url(&admin_url, &name);

        // The name is unique, so a retry only has to cope with transient refusals (too many
        // clients, server starting up, template database briefly in use).
        let create = format!(r#"CREATE DATABASE "{name}""#);
        retry("create database", &admin_url, || async {
            let mut admin = PgConnection::connect(&admin_url).await?;
            let created = sqlx::raw_sql(AssertSqlSafe(create.clone()))
                .execute(&mut admin)
                .await;
            let _ = admin.close().await;
            match created {
                // An earlier attempt may have succeeded before its answer was lost.
                Err(e) if sqlstate(&e).as_deref() == Some("42P04") => Ok(()),
                other => other.map(drop),
            }
        })
        .await;

        let pool = retry("connect to test database", &url, || {
            PgPoolOptions::new()
                .max_connections(MAX_POOL_CONNECTIONS)
                .acquire_timeout(Duration::from_secs(30))
                .connect(&url)
        })
        .await;

        TestDb {
            pool,
            url,
            name,
            admin_url,
        }
    }

    /// This database as a service's own database (no schema), for code that connects through
    /// `cqrs_runtime::db::connect`.
    pub fn config(&self) -> cqrs_runtime::config::DatabaseConfig {
        cqrs_runtime::config::DatabaseConfig {
            url: self.url.clone(),
            schema: None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be current-thread (blocking it would
        // deadlock anything that runs on it), so the database is dropped from a thread with its
        // own runtime. The wait is bounded: a leaked database beats a hung test.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("testdb-drop".into())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
                    .and_then(|rt| {
                        rt.block_on(drop_database(&admin_url, &name))
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
            eprintln!("TestDb: could not drop database {}: {e}", self.name);
        }
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        let result = async {
            let mut admin = PgConnection::connect(admin_url).await?;
            let dropped = sqlx::raw_sql(AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
            )))
            .execute(&mut admin)
            .await;
            let _ = admin.close().await;
            dropped.map(drop)
        }
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(sqlx::Error::PoolTimedOut))
}

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_ADMIN_URL.to_owned())
}

fn database_url(admin_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin_url).unwrap_or_else(|e| {
        panic!("TestDb: TEST_DATABASE_URL is not a valid URL ({e}): {admin_url}")
    });
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|db| db.code())
        .map(|code| code.into_owned())
}

fn backoff(attempt: u32) -> Duration {
    Backoff::new(Duration::from_millis(100), Duration::from_millis(3200)).delay(attempt + 1)
}

async fn retry<T, F, Fut>(what: &str, url: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) if attempt + 1 < ATTEMPTS && is_transient(&e) => {
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => panic!(
                "TestDb: cannot {what} at {} (set TEST_DATABASE_URL to a server where this user may CREATE DATABASE): {e}",
                redacted(url)
            ),
        }
    }
}

fn is_transient(e: &sqlx::Error) -> bool {
    match sqlstate(e).as_deref() {
        // too_many_connections, cannot_connect_now, object_in_use (template busy),
        // serialization/deadlock on the catalog.
        Some("53300" | "57P03" | "55006" | "40001" | "40P01") => true,
        Some(_) => false,
        None => matches!(
            e,
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_replaces_path_only() {
        assert_eq!(
            database_url("postgres://u:p@h:1/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
        assert_eq!(
            redacted("postgres://u:p@h:1/postgres"),
            "postgres://u:***@h:1/postgres"
        );
    }
}
