#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cqrs_testkit::TestDb;
use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnection;

static MIGRATOR: Migrator = sqlx::migrate!("tests/migrations");

async fn admin() -> PgConnection {
    let url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    PgConnection::connect(&url).await.unwrap()
}

async fn exists(name: &str) -> bool {
    let mut admin = admin().await;
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn new_database_is_migrated_and_dropped() {
    let db = TestDb::new(&MIGRATOR).await;
    assert!(db.name.starts_with("cqrs_t_"), "{}", db.name);
    assert!(db.url.ends_with(&format!("/{}", db.name)), "{}", db.url);

    sqlx::query("INSERT INTO widgets (id, name) VALUES (gen_random_uuid(), 'w')")
        .execute(&db.pool)
        .await
        .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM widgets")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);

    // The URL works on its own, not just through the pool.
    let mut direct = PgConnection::connect(&db.url).await.unwrap();
    let current: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut direct)
        .await
        .unwrap();
    assert_eq!(current, db.name);
    assert_eq!(db.config().url, db.url);
    assert_eq!(db.config().schema, None);

    let name = db.name.clone();
    assert!(exists(&name).await);
    // Dropped even with connections still open (the pool's and `direct`).
    drop(db);
    assert!(!exists(&name).await, "{name} should be gone after drop");
}

#[tokio::test]
async fn empty_database_has_no_migrations() {
    let db = TestDb::empty().await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tables, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_databases_are_distinct() {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        set.spawn(TestDb::new(&MIGRATOR));
    }
    let mut dbs = Vec::new();
    while let Some(db) = set.join_next().await {
        dbs.push(db.unwrap());
    }
    let mut names: Vec<_> = dbs.iter().map(|db| db.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 8);

    // Each has its own rows.
    for (i, db) in dbs.iter().enumerate() {
        sqlx::query("INSERT INTO widgets (id, name) VALUES (gen_random_uuid(), $1)")
            .bind(i.to_string())
            .execute(&db.pool)
            .await
            .unwrap();
    }
    for db in &dbs {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM widgets")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(count, 1);
    }

    drop(dbs);
    for name in names {
        assert!(!exists(&name).await, "{name} should be gone");
    }
}
