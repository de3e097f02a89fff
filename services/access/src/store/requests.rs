//! Keyed creates: the request id's fingerprint and the encoded first answer
//! (see `cqrs_runtime::idempotency`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::StoreError;

/// The stored fingerprint and answer of `request_id`, if it was used (and committed).
pub async fn earlier(
    pool: &PgPool,
    request_id: Uuid,
) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT request_hash, response FROM request_keys WHERE request_id = $1")
            .bind(request_id)
            .fetch_optional(pool)
            .await?,
    )
}

/// Claims `request_id` for this transaction. `false` when another request holds it: a
/// parallel holder is waited for, so `false` means it committed and [`earlier`] has its answer.
pub async fn claim(
    conn: &mut PgConnection,
    request_id: Uuid,
    hash: &[u8; 32],
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let claimed: Option<(Uuid,)> = sqlx::query_as(
        "INSERT INTO request_keys (request_id, request_hash, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
    )
    .bind(request_id)
    .bind(hash.as_slice())
    .bind(now)
    .fetch_optional(conn)
    .await?;
    Ok(claimed.is_some())
}

/// Stores the answer of a claimed request, in the transaction that claimed it.
pub async fn answer(
    conn: &mut PgConnection,
    request_id: Uuid,
    response: &[u8],
) -> Result<(), StoreError> {
    sqlx::query("UPDATE request_keys SET response = $2 WHERE request_id = $1")
        .bind(request_id)
        .bind(response)
        .execute(conn)
        .await?;
    Ok(())
}
