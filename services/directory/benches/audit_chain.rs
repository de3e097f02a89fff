//! What the audit chain costs a write: GrantRole's transaction (a grant inserted and its audit
//! event appended, then commit) against the directory's real schema, as it is now — the row
//! change captured for before/after values, the event numbered and linked under the chain's
//! lock — and as it was before the chain: the same grant with a plain audit insert, no capture,
//! no lock, no hash. Both alternate in the same run, from one writer and from many (the lock
//! orders concurrent writers), and the ratio is printed. Store level, no gRPC: the RPC around
//! it is the same either way.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_runtime::audit::{self, Actor, Changes, Event};
use cqrs_runtime::clock::{Clock, SystemClock};
use cqrs_testkit::TestDb;
use sqlx::PgPool;
use uuid::Uuid;

const PHASE: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;
const MANY: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Trail {
    Chained,
    Plain,
}

/// One GrantRole-shaped write transaction.
async fn write(pool: &PgPool, organisation: Uuid, trail: Trail) {
    let mut tx = pool.begin().await.unwrap();
    let (grant, account) = (Uuid::now_v7(), Uuid::new_v4());
    let now = SystemClock.now();
    sqlx::query(
        "INSERT INTO grants (id, account_id, organisation_id, role, created_at) \
         VALUES ($1, $2, $3, 'PRACTICE_USER', $4)",
    )
    .bind(grant)
    .bind(account)
    .bind(organisation)
    .bind(now)
    .execute(&mut *tx)
    .await
    .unwrap();
    let target = grant.to_string();
    let details = serde_json::json!({
        "account_id": account, "organisation_id": organisation, "role": "PRACTICE_USER",
    });
    match trail {
        Trail::Chained => {
            let event = Event {
                action: "GRANT_ROLE",
                target_type: "grant",
                target_id: &target,
                outcome: "success",
                details,
                changes: Changes::new(),
            };
            audit::record(&mut tx, now, &Actor::system("bench"), event)
                .await
                .unwrap();
        }
        Trail::Plain => {
            sqlx::query(
                "INSERT INTO audit_events_before_the_chain (id, occurred_at, actor_kind, \
                     actor_id, action, target_type, target_id, outcome, request_id, details) \
                 VALUES ($1, $2, 'system', 'bench', 'GRANT_ROLE', 'grant', $3, 'success', \
                     NULL, $4)",
            )
            .bind(Uuid::now_v7())
            .bind(now)
            .bind(&target)
            .bind(details)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
    }
    tx.commit().await.unwrap();
}

/// Writes per second from `writers` for `PHASE`.
async fn phase(pool: &PgPool, organisation: Uuid, trail: Trail, writers: usize) -> f64 {
    // The capture trigger belongs to the chain's side only.
    let toggle = if trail == Trail::Chained {
        "ENABLE"
    } else {
        "DISABLE"
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE grants {toggle} TRIGGER grants_audit"
    )))
    .execute(pool)
    .await
    .unwrap();
    let start = Instant::now();
    let counts: Vec<_> = (0..writers)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < PHASE {
                    write(&pool, organisation, trail).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for count in counts {
        total += count.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let db = TestDb::new(&cqrs_directory::MIGRATOR).await;
    let pool = Arc::new(db.pool.clone());
    let organisation = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO organisations (id, kind, ods_code, name, parent_id, path, created_at, \
             updated_at) VALUES ($1, 'REGION', 'Y99', 'Bench region', NULL, ARRAY[$1], now(), now())",
    )
    .bind(organisation)
    .execute(&*pool)
    .await
    .unwrap();
    // The set-up is not a change the bench records.
    sqlx::query("DELETE FROM audit_pending_changes")
        .execute(&*pool)
        .await
        .unwrap();
    // The trail as it was before this chain: the first migration's columns, no triggers.
    sqlx::raw_sql(
        "CREATE TABLE audit_events_before_the_chain (
             id uuid PRIMARY KEY, occurred_at timestamptz NOT NULL, actor_kind text NOT NULL,
             actor_id text NOT NULL, action text NOT NULL, target_type text NOT NULL,
             target_id text NOT NULL, outcome text NOT NULL, request_id text,
             details jsonb NOT NULL DEFAULT '{}');
         CREATE INDEX ON audit_events_before_the_chain (occurred_at DESC, id DESC);
         CREATE INDEX ON audit_events_before_the_chain (target_id, occurred_at DESC);",
    )
    .execute(&*pool)
    .await
    .unwrap();

    // Warm-up: connections open, statements prepared.
    for trail in [Trail::Chained, Trail::Plain] {
        phase(&pool, organisation, trail, MANY).await;
    }
    println!();
    println!(
        "audit chain cost on a write (GrantRole's transaction: grant + audit event + commit), \
         {ROUNDS} alternating rounds x {}s",
        PHASE.as_secs()
    );
    println!(
        "  {:<10} {:>22} {:>22} {:>8}",
        "writers", "before the chain /s", "with chain + capture /s", "ratio"
    );
    for writers in [1, MANY] {
        let (mut plain, mut chained) = (0.0, 0.0);
        for _ in 0..ROUNDS {
            plain += phase(&pool, organisation, Trail::Plain, writers).await;
            chained += phase(&pool, organisation, Trail::Chained, writers).await;
        }
        let (plain, chained) = (plain / ROUNDS as f64, chained / ROUNDS as f64);
        println!(
            "  {:<10} {:>22.0} {:>22.0} {:>8.2}",
            writers,
            plain,
            chained,
            chained / plain
        );
    }
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_events")
        .fetch_one(&*pool)
        .await
        .unwrap();
    let (pending,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_pending_changes")
        .fetch_one(&*pool)
        .await
        .unwrap();
    println!("  ({events} chained events written; {pending} row changes left without an event)");
}
