//! Postgres pool and migrations, and the shared Redis connection.
//!
//! When a service shares a database with others it gets its own schema: the schema is created
//! if missing and every pooled connection starts with `search_path=<schema>`, so its tables and
//! sqlx's `_sqlx_migrations` history both live there and unqualified SQL needs no changes.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use crate::config::{ConfigErrors, DatabaseConfig, Env, nonzero, validate_schema_name};

/// Pool sizing and waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Upper bound of open connections per process.
    pub max_connections: u32,
    /// How long a query waits for a free (or new) connection before failing with
    /// `PoolTimedOut`, which stores map to `Unavailable`.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

impl PoolSettings {
    /// `CQRS_DB_MAX_CONNECTIONS` (10) and `CQRS_DB_ACQUIRE_TIMEOUT_SECS` (5); both reported
    /// when both are bad.
    pub fn from_env(env: &Env) -> Result<Self, ConfigErrors> {
        let defaults = PoolSettings::default();
        let mut errs = ConfigErrors::default();
        let max_connections = errs.take(
            env.or("CQRS_DB_MAX_CONNECTIONS", defaults.max_connections)
                .and_then(nonzero("CQRS_DB_MAX_CONNECTIONS")),
        );
        let acquire_timeout = errs.take(
            env.duration_secs("CQRS_DB_ACQUIRE_TIMEOUT_SECS", defaults.acquire_timeout)
                .and_then(nonzero("CQRS_DB_ACQUIRE_TIMEOUT_SECS")),
        );
        errs.finish(|| {
            Some(PoolSettings {
                max_connections: max_connections?,
                acquire_timeout: acquire_timeout?,
            })
        })
    }
}

/// Opens a pool with default [`PoolSettings`]. See [`connect_with`].
pub async fn connect(cfg: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    connect_with(cfg, PoolSettings::default()).await
}

/// Opens a pool for `cfg`, creating its schema first when one is set. Connects eagerly, so a
/// wrong URL or an unreachable server fails here, at start-up.
pub async fn connect_with(
    cfg: &DatabaseConfig,
    settings: PoolSettings,
) -> Result<PgPool, sqlx::Error> {
    let mut options = PgConnectOptions::from_str(&cfg.url)?;
    if let Some(schema) = &cfg.schema {
        validate_schema_name(schema).map_err(sqlx::Error::InvalidArgument)?;
        create_schema(&options, schema).await?;
        options = options.options([("search_path", schema.as_str())]);
    }
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        // sqlx pings every idle connection before handing it out by default: one extra round
        // trip in front of every pooled query, which on a busy service costs as much as the
        // query itself. A connection in steady use has just proved itself (sqlx also pings it
        // when it comes back to the pool, and drops it if that fails), so only one that sat
        // idle long enough for a firewall, a failover or a server restart to have cut it is
        // tested. A connection cut more recently fails its next query once (`Unavailable`,
        // which callers may retry) and is then discarded; `max_lifetime` and `idle_timeout`
        // (sqlx's defaults, 30 and 10 minutes) still retire old ones, and the readiness probe
        // notices an unreachable server.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
}

/// A pooled connection idle at least this long is pinged before use (see [`connect_with`]).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(30);

async fn create_schema(options: &PgConnectOptions, schema: &str) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect_with(options).await?;
    // `schema` is validated as [a-z_][a-z0-9_]*, so quoting cannot be escaped.
    let ddl = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    let result = sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(&mut conn)
        .await;
    conn.close().await?;
    match result {
        Ok(_) => Ok(()),
        // Two replicas starting together can both pass the IF NOT EXISTS check; the loser sees a
        // unique violation on pg_namespace (23505) or duplicate_schema (42P06). Either way the
        // schema exists, which is all we need.
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("23505") | Some("42P06")) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The Redis `url` names (a single server, Sentinel or Cluster: [`cqrs_redis::RedisTarget`]),
/// connected on first use and reconnecting by itself with short timeouts: while Redis is down,
/// calls fail fast (callers answer `Unavailable`, session checks fail closed) instead of
/// hanging, and the service recovers without a restart when it returns.
pub fn redis_connection(url: &str) -> Result<cqrs_redis::RedisConnection, redis::RedisError> {
    cqrs_redis::RedisConnection::open_url(url)
}

/// Applies `migrator`'s pending migrations (holding sqlx's advisory lock, so replicas starting
/// together migrate once).
///
/// Migrations recorded in the database but unknown to this binary are tolerated: during a
/// rolling upgrade, pods of the previous release restart against a schema the new release
/// has already migrated, and rolling back must be possible. That is safe only because every
/// migration is additive within a release (expand, then contract in a later one; see
/// deploy/README.md).
pub async fn migrate(pool: &PgPool, migrator: &Migrator) -> Result<(), MigrateError> {
    let mut tolerant = Migrator::with_migrations(migrator.iter().cloned().collect());
    tolerant.set_ignore_missing(true);
    tolerant.run(pool).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use sqlx::migrate::Migration;
    use sqlx::{ConnectOptions, Executor};
    use std::borrow::Cow;

    const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    /// A throwaway database, dropped at the end of the test body.
    struct Scratch {
        name: String,
        url: String,
    }

    impl Scratch {
        async fn new() -> Scratch {
            let admin_url =
                std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| ADMIN_URL.to_owned());
            let name = format!("rt_{}", uuid::Uuid::new_v4().simple());
            let mut admin = PgConnection::connect(&admin_url).await.unwrap();
            admin
                .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .await
                .unwrap();
            admin.close().await.unwrap();
            let mut opts = PgConnectOptions::from_str(&admin_url).unwrap();
            opts = opts.database(&name);
            let url = opts.to_url_lossy().to_string();
            Scratch { name, url }
        }

        async fn drop_db(self) {
            let admin_url =
                std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| ADMIN_URL.to_owned());
            let mut admin = PgConnection::connect(&admin_url).await.unwrap();
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                )))
                .await
                .unwrap();
            admin.close().await.unwrap();
        }
    }

    fn migrator() -> Migrator {
        let migrations = vec![Migration::new(
            1,
            Cow::Borrowed("create widgets"),
            sqlx::migrate::MigrationType::Simple,
            sqlx::SqlStr::from_static(
                "CREATE TABLE widgets (id BIGINT PRIMARY KEY, name TEXT NOT NULL);",
            ),
            false,
        )];
        Migrator {
            migrations: Cow::Owned(migrations),
            ..Migrator::DEFAULT
        }
    }

    /// The next release's migrator: the same first migration and an additive second one.
    fn next_release_migrator() -> Migrator {
        let mut migrations: Vec<Migration> = migrator().iter().cloned().collect();
        migrations.push(Migration::new(
            2,
            Cow::Borrowed("add widget colour"),
            sqlx::migrate::MigrationType::Simple,
            sqlx::SqlStr::from_static("ALTER TABLE widgets ADD COLUMN colour TEXT;"),
            false,
        ));
        Migrator {
            migrations: Cow::Owned(migrations),
            ..Migrator::DEFAULT
        }
    }

    async fn tables_in(pool: &PgPool, schema: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 ORDER BY table_name",
        )
        .bind(schema)
        .fetch_all(pool)
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn schemas_isolate_services_sharing_a_database() {
        let scratch = Scratch::new().await;
        let url = scratch.url.clone();
        let result = async move {
            let m = migrator();
            let a = connect(&DatabaseConfig {
                url: url.clone(),
                schema: Some("svc_a".into()),
            })
            .await
            .unwrap();
            let b = connect(&DatabaseConfig {
                url: url.clone(),
                schema: Some("svc_b".into()),
            })
            .await
            .unwrap();
            migrate(&a, &m).await.unwrap();
            migrate(&b, &m).await.unwrap();
            // Running again is a no-op.
            migrate(&a, &m).await.unwrap();

            sqlx::query("INSERT INTO widgets (id, name) VALUES (1, 'a')")
                .execute(&a)
                .await
                .unwrap();
            let in_b: i64 = sqlx::query_scalar("SELECT count(*) FROM widgets")
                .fetch_one(&b)
                .await
                .unwrap();
            assert_eq!(in_b, 0, "schemas must not share tables");

            assert_eq!(
                tables_in(&a, "svc_a").await,
                ["_sqlx_migrations", "widgets"]
            );
            assert_eq!(
                tables_in(&a, "svc_b").await,
                ["_sqlx_migrations", "widgets"]
            );
            assert!(tables_in(&a, "public").await.is_empty());

            let path: String = sqlx::query_scalar("SHOW search_path")
                .fetch_one(&a)
                .await
                .unwrap();
            assert_eq!(path, "svc_a");

            // Another replica of a starting against an existing schema.
            let a2 = connect(&DatabaseConfig {
                url: url.clone(),
                schema: Some("svc_a".into()),
            })
            .await
            .unwrap();
            let in_a: i64 = sqlx::query_scalar("SELECT count(*) FROM widgets")
                .fetch_one(&a2)
                .await
                .unwrap();
            assert_eq!(in_a, 1);
            a.close().await;
            a2.close().await;
            b.close().await;
        };
        // Drop the database even when an assertion fails.
        let outcome = tokio::spawn(result).await;
        scratch.drop_db().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    #[tokio::test]
    async fn own_database_uses_public_schema() {
        let scratch = Scratch::new().await;
        let url = scratch.url.clone();
        let outcome = tokio::spawn(async move {
            let pool = connect(&DatabaseConfig { url, schema: None })
                .await
                .unwrap();
            migrate(&pool, &migrator()).await.unwrap();
            assert_eq!(
                tables_in(&pool, "public").await,
                ["_sqlx_migrations", "widgets"]
            );
            pool.close().await;
        })
        .await;
        scratch.drop_db().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    /// A pod of the previous release restarting after the upgrade migrated (or a rollback)
    /// still starts: migrations it does not know are tolerated.
    #[tokio::test]
    async fn previous_release_starts_against_a_newer_schema() {
        let scratch = Scratch::new().await;
        let url = scratch.url.clone();
        let outcome = tokio::spawn(async move {
            let pool = connect(&DatabaseConfig { url, schema: None })
                .await
                .unwrap();
            migrate(&pool, &next_release_migrator()).await.unwrap();
            migrate(&pool, &migrator()).await.unwrap();
            let versions: Vec<i64> =
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            assert_eq!(versions, [1, 2]);
            pool.close().await;
        })
        .await;
        scratch.drop_db().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    /// Pooled connections are not pinged before each use: one the server cut is found by the
    /// next query on it, which may fail, and is then replaced.
    #[tokio::test]
    async fn a_connection_cut_by_the_server_is_replaced() {
        let scratch = Scratch::new().await;
        let url = scratch.url.clone();
        let outcome = tokio::spawn(async move {
            let pool = connect_with(
                &DatabaseConfig { url, schema: None },
                PoolSettings {
                    max_connections: 1,
                    acquire_timeout: Duration::from_secs(5),
                },
            )
            .await
            .unwrap();
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&pool)
                .await
                .unwrap();
            let admin_url =
                std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| ADMIN_URL.to_owned());
            let mut admin = PgConnection::connect(&admin_url).await.unwrap();
            let cut: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_one(&mut admin)
                .await
                .unwrap();
            assert!(cut);
            admin.close().await.unwrap();
            let mut failures = 0;
            let new_pid: i32 = loop {
                match sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&pool)
                    .await
                {
                    Ok(pid) => break pid,
                    Err(e) => {
                        assert!(crate::errors::is_unavailable(&e), "{e:?}");
                        failures += 1;
                        assert!(failures <= 1, "more than one query failed: {e}");
                    }
                }
            };
            assert_ne!(new_pid, pid);
            pool.close().await;
        })
        .await;
        scratch.drop_db().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    #[tokio::test]
    async fn rejects_unsafe_schema_names() {
        let err = connect(&DatabaseConfig {
            url: ADMIN_URL.into(),
            schema: Some("x\"; DROP SCHEMA public; --".into()),
        })
        .await
        .unwrap_err();
        assert!(matches!(err, sqlx::Error::InvalidArgument(_)), "{err}");
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable() {
        let err = connect_with(
            &DatabaseConfig {
                url: "postgres://postgres@127.0.0.1:1/postgres".into(),
                schema: None,
            },
            PoolSettings {
                max_connections: 1,
                acquire_timeout: Duration::from_secs(2),
            },
        )
        .await
        .unwrap_err();
        assert!(crate::errors::is_unavailable(&err), "{err:?}");
    }

    #[test]
    fn pool_settings_from_env() {
        assert_eq!(
            PoolSettings::from_env(&Env::from_pairs(&[])).unwrap(),
            PoolSettings::default()
        );
        let s = PoolSettings::from_env(&Env::from_pairs(&[
            ("CQRS_DB_MAX_CONNECTIONS", "3"),
            ("CQRS_DB_ACQUIRE_TIMEOUT_SECS", "0.5"),
        ]))
        .unwrap();
        assert_eq!(s.max_connections, 3);
        assert_eq!(s.acquire_timeout, Duration::from_millis(500));
        for (var, value) in [
            ("CQRS_DB_MAX_CONNECTIONS", "0"),
            ("CQRS_DB_MAX_CONNECTIONS", "many"),
            ("CQRS_DB_ACQUIRE_TIMEOUT_SECS", "0"),
            ("CQRS_DB_ACQUIRE_TIMEOUT_SECS", "x"),
        ] {
            let errs = PoolSettings::from_env(&Env::from_pairs(&[(var, value)])).unwrap_err();
            assert_eq!(errs.only().map(|e| e.var.as_str()), Some(var));
        }
        let errs = PoolSettings::from_env(&Env::from_pairs(&[
            ("CQRS_DB_MAX_CONNECTIONS", "0"),
            ("CQRS_DB_ACQUIRE_TIMEOUT_SECS", "x"),
        ]))
        .unwrap_err();
        assert_eq!(errs.len(), 2, "{errs}");
        assert!(
            errs.names("CQRS_DB_MAX_CONNECTIONS") && errs.names("CQRS_DB_ACQUIRE_TIMEOUT_SECS")
        );
    }
}
