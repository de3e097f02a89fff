//! Sessions to end in the identity service after a revocation, kept until identity confirms.
//!
//! A row is written in the revocation's transaction with `next_attempt_at` one lease ahead, so
//! the background task leaves it to the request that wrote it; that request tries at once and
//! deletes the row on success or reschedules it on failure. Rows are claimed with
//! `FOR UPDATE SKIP LOCKED` and a lease, so several replicas never work on the same row at
//! the same time (and if they ever did, ending sessions twice is harmless).

use chrono::{DateTime, Utc};
use cqrs_auth::Role;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::StoreError;

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RevocationRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub organisation_id: Uuid,
    pub role: String,
    pub reason: String,
    pub attempts: i32,
}

impl RevocationRow {
    pub fn role(&self) -> Option<Role> {
        Role::parse(&self.role)
    }
}

/// Records that sessions acting as (organisation, role) of the account must end.
pub async fn enqueue(
    conn: &mut PgConnection,
    account_id: Uuid,
    organisation_id: Uuid,
    role: &str,
    reason: &str,
    now: DateTime<Utc>,
    first_attempt_at: DateTime<Utc>,
) -> Result<RevocationRow, StoreError> {
    Ok(sqlx::query_as(
        "INSERT INTO session_revocations (id, account_id, organisation_id, role, reason, \
             created_at, attempts, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7) \
         RETURNING id, account_id, organisation_id, role, reason, attempts",
    )
    .bind(Uuid::now_v7())
    .bind(account_id)
    .bind(organisation_id)
    .bind(role)
    .bind(reason)
    .bind(now)
    .bind(first_attempt_at)
    .fetch_one(conn)
    .await?)
}

/// Claims up to `limit` due rows until `lease_until`.
pub async fn claim_due(
    pool: &PgPool,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<RevocationRow>, StoreError> {
    Ok(sqlx::query_as(
        "UPDATE session_revocations SET next_attempt_at = $2 \
         WHERE id IN (SELECT id FROM session_revocations WHERE next_attempt_at <= $1 \
                      ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
         RETURNING id, account_id, organisation_id, role, reason, attempts",
    )
    .bind(now)
    .bind(lease_until)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Identity confirmed: the row is done.
pub async fn done(pool: &PgPool, id: Uuid) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM session_revocations WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The attempt failed (counted in `attempts`): try again at `at`.
pub async fn retry_at(pool: &PgPool, id: Uuid, at: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE session_revocations SET next_attempt_at = $2, attempts = attempts + 1 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Hands the row to the background task at `at` without counting a failed attempt (the
/// request had no time left to try).
pub async fn due_at(pool: &PgPool, id: Uuid, at: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query("UPDATE session_revocations SET next_attempt_at = $2 WHERE id = $1")
        .bind(id)
        .bind(at)
        .execute(pool)
        .await?;
    Ok(())
}
