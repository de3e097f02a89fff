//! Authenticator apps (TOTP secrets) and recovery codes in Postgres.
//!
//! `accounts.second_factor_at` mirrors "a confirmed factor exists" and is changed in the same
//! statement batch as the factor itself, inside the caller's transaction.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::StoreError;

/// An account's authenticator app as stored. The secret is a credential: never log it.
#[derive(sqlx::FromRow)]
pub struct FactorRow {
    pub secret: Vec<u8>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub last_step: i64,
}

impl std::fmt::Debug for FactorRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactorRow")
            .field("confirmed_at", &self.confirmed_at)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// The account's factor, confirmed or waiting for its first code.
pub async fn factor(pool: &PgPool, account_id: Uuid) -> Result<Option<FactorRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT secret, confirmed_at, last_step FROM totp_factors WHERE account_id = $1",
    )
    .bind(account_id)
    .fetch_optional(pool)
    .await?)
}

/// Stores a new unconfirmed secret, replacing an earlier unconfirmed one. `false` (nothing
/// changed) when the account has a confirmed factor.
pub async fn start(
    pool: &PgPool,
    account_id: Uuid,
    secret: &[u8],
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let stored: Option<(Uuid,)> = sqlx::query_as(
        "INSERT INTO totp_factors (account_id, secret, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (account_id) DO UPDATE \
           SET secret = EXCLUDED.secret, created_at = EXCLUDED.created_at, last_step = 0 \
           WHERE totp_factors.confirmed_at IS NULL \
         RETURNING account_id",
    )
    .bind(account_id)
    .bind(secret)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    Ok(stored.is_some())
}

/// Confirms the pending factor with its first accepted `step` and stores the recovery codes'
/// hashes. `false` when there was no pending factor (confirmed meanwhile, or never started).
pub async fn confirm(
    conn: &mut PgConnection,
    account_id: Uuid,
    step: i64,
    code_hashes: &[[u8; 32]],
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let confirmed: Option<(Uuid,)> = sqlx::query_as(
        "UPDATE totp_factors SET confirmed_at = $3, last_step = $2 \
         WHERE account_id = $1 AND confirmed_at IS NULL AND last_step < $2 \
         RETURNING account_id",
    )
    .bind(account_id)
    .bind(step)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    if confirmed.is_none() {
        return Ok(false);
    }
    sqlx::query("DELETE FROM recovery_codes WHERE account_id = $1")
        .bind(account_id)
        .execute(&mut *conn)
        .await?;
    let hashes: Vec<Vec<u8>> = code_hashes.iter().map(|h| h.to_vec()).collect();
    sqlx::query(
        "INSERT INTO recovery_codes (account_id, code_hash) SELECT $1, unnest($2::bytea[])",
    )
    .bind(account_id)
    .bind(&hashes)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE accounts SET second_factor_at = $2, updated_at = $2 WHERE id = $1")
        .bind(account_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// Accepts time step `step` for the confirmed factor: `false` when a step as late or later
/// was accepted before (a replay, or a parallel use of the same code).
pub async fn accept_step(pool: &PgPool, account_id: Uuid, step: i64) -> Result<bool, StoreError> {
    let accepted: Option<(Uuid,)> = sqlx::query_as(
        "UPDATE totp_factors SET last_step = $2 \
         WHERE account_id = $1 AND confirmed_at IS NOT NULL AND last_step < $2 \
         RETURNING account_id",
    )
    .bind(account_id)
    .bind(step)
    .fetch_optional(pool)
    .await?;
    Ok(accepted.is_some())
}

/// Uses up the recovery code with this hash; the number of unused codes left, or `None` when
/// no unused code matches.
pub async fn use_recovery_code(
    pool: &PgPool,
    account_id: Uuid,
    code_hash: &[u8; 32],
    now: DateTime<Utc>,
) -> Result<Option<i64>, StoreError> {
    let used: Option<(i64,)> = sqlx::query_as(
        "WITH used AS ( \
           UPDATE recovery_codes SET used_at = $3 \
           WHERE account_id = $1 AND code_hash = $2 AND used_at IS NULL \
           RETURNING account_id) \
         SELECT (SELECT count(*) FROM recovery_codes r \
                 WHERE r.account_id = used.account_id AND r.used_at IS NULL) - 1 \
         FROM used",
    )
    .bind(account_id)
    .bind(code_hash.as_slice())
    .bind(now)
    .fetch_optional(pool)
    .await?;
    // The CTE's update is not visible to the outer count, which still sees the code unused.
    Ok(used.map(|(left,)| left.max(0)))
}

/// Removes the account's factor and recovery codes. `false` when it had none.
pub async fn remove(
    conn: &mut PgConnection,
    account_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let removed = sqlx::query("DELETE FROM totp_factors WHERE account_id = $1")
        .bind(account_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM recovery_codes WHERE account_id = $1")
        .bind(account_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE accounts SET second_factor_at = NULL, updated_at = $2 \
         WHERE id = $1 AND second_factor_at IS NOT NULL",
    )
    .bind(account_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(removed > 0)
}
