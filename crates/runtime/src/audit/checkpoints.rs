//! Signed checkpoints of the chain: this service's own, made every N events or T minutes, and
//! the other services' ones it keeps (fetched from them; see `cqrs_edge::audit_chain`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_audit_chain::{Checkpoint, CheckpointKey, hash_from};
use sqlx::{PgConnection, PgPool};

use super::lock_head;

/// When this service signs its chain's head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// After this many new events (`CQRS_AUDIT_CHECKPOINT_EVERY`).
    pub every: i64,
    /// Or this long after the last checkpoint when any event is new
    /// (`CQRS_AUDIT_CHECKPOINT_SECS`).
    pub period: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            every: 1000,
            period: Duration::from_secs(300),
        }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    service: String,
    sequence: i64,
    head_hash: Vec<u8>,
    made_at: DateTime<Utc>,
    key_id: String,
    signature: Vec<u8>,
}

impl Row {
    fn checkpoint(self) -> Option<Checkpoint> {
        Some(Checkpoint {
            service: self.service,
            sequence: self.sequence,
            head_hash: hash_from(&self.head_hash)?,
            made_at: self.made_at,
            key_id: self.key_id,
            signature: self.signature.as_slice().try_into().ok()?,
        })
    }
}

/// Signs the head when `policy` says it is due; answers the checkpoint made, if any.
pub async fn make_if_due(
    pool: &PgPool,
    service: &str,
    key: &CheckpointKey,
    policy: Policy,
    now: DateTime<Utc>,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Under the chain's lock the head cannot move while it is signed.
    let (head, hash) = lock_head(&mut tx).await?;
    let last: Option<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT sequence, made_at FROM audit_checkpoints WHERE own \
         ORDER BY sequence DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let (last_sequence, since) = match last {
        Some(last) => last,
        None => {
            let first: Option<DateTime<Utc>> =
                sqlx::query_scalar("SELECT min(occurred_at) FROM audit_events")
                    .fetch_one(&mut *tx)
                    .await?;
            (0, first.unwrap_or(now))
        }
    };
    let period = chrono::Duration::from_std(policy.period).unwrap_or(chrono::Duration::MAX);
    let due = head > last_sequence
        && hash != cqrs_audit_chain::GENESIS
        && (head - last_sequence >= policy.every || now - since >= period);
    if !due {
        return Ok(None);
    }
    let checkpoint = key.sign(service, head, hash, now);
    insert(&mut tx, &checkpoint, true, now).await?;
    tx.commit().await?;
    Ok(Some(checkpoint))
}

/// Signs the chain at `sequence` (an event that exists and has a hash) unless a checkpoint of
/// this service is already there; on the caller's transaction, which holds the chain's lock.
pub async fn make_at(
    conn: &mut PgConnection,
    service: &str,
    key: &CheckpointKey,
    sequence: i64,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let hash: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT hash FROM audit_events WHERE sequence = $1")
            .bind(sequence)
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
    let Some(hash) = hash.as_deref().and_then(hash_from) else {
        return Ok(());
    };
    insert(conn, &key.sign(service, sequence, hash, now), true, now).await
}

/// Keeps another service's checkpoint (a repeat is ignored).
pub async fn hold(
    pool: &PgPool,
    checkpoint: &Checkpoint,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    insert(&mut conn, checkpoint, false, now).await
}

async fn insert(
    conn: &mut PgConnection,
    c: &Checkpoint,
    own: bool,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_checkpoints (service, sequence, head_hash, made_at, key_id, signature, \
             own, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (service, sequence) DO NOTHING",
    )
    .bind(&c.service)
    .bind(c.sequence)
    .bind(c.head_hash.as_slice())
    .bind(c.made_at)
    .bind(&c.key_id)
    .bind(c.signature.as_slice())
    .bind(own)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Checkpoints held of `service`'s chain (`None`: this service's own), from `start`,
/// oldest first.
pub async fn list(
    pool: &PgPool,
    service: Option<&str>,
    start: i64,
) -> Result<Vec<Checkpoint>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT service, sequence, head_hash, made_at, key_id, signature FROM audit_checkpoints \
         WHERE (CASE WHEN $1::text IS NULL THEN own ELSE service = $1 AND NOT own END) \
           AND sequence >= $2 \
         ORDER BY sequence",
    )
    .bind(service)
    .bind(start)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().filter_map(Row::checkpoint).collect())
}

/// The last checkpoint held of `service`'s chain (0 when none).
pub async fn last_held(pool: &PgPool, service: &str) -> Result<i64, sqlx::Error> {
    let last: Option<i64> = sqlx::query_scalar(
        "SELECT max(sequence) FROM audit_checkpoints WHERE service = $1 AND NOT own",
    )
    .bind(service)
    .fetch_one(pool)
    .await?;
    Ok(last.unwrap_or(0))
}
