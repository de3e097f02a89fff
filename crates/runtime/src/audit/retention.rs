//! Audit retention (`CQRS_AUDIT_RETENTION_DAYS`): events older than the period are removed by a
//! job, in one transaction that
//! 1. signs a checkpoint at the last event removed, which anchors the first one kept, so the
//!    chain stays verifiable from there;
//! 2. removes the events through `audit_purge`, which runs with the table owner's rights and
//!    refuses without that checkpoint (the application's role cannot delete audit rows);
//! 3. records the purge as an event of its own.
//!
//! The last event is always kept, so the chain's head never has to be found in checkpoints.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_audit_chain::CheckpointKey;
use serde_json::json;
use sqlx::PgPool;

use super::{Actor, Changes, Event, NewEvent, append, checkpoints, lock_head};

/// The action recorded for a purge.
pub const PURGE_ACTION: &str = "PURGE_AUDIT_EVENTS";

/// Removes the events older than `retention` (as of `now`); answers how many.
pub async fn purge(
    pool: &PgPool,
    service: &str,
    key: &CheckpointKey,
    retention: Duration,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let Ok(retention) = chrono::Duration::from_std(retention) else {
        return Ok(0);
    };
    let cutoff = now - retention;
    let mut tx = pool.begin().await?;
    let (head, _) = lock_head(&mut tx).await?;
    // Only hashed events can be anchored: those from before the chain stay.
    let through: Option<i64> = sqlx::query_scalar(
        "SELECT max(sequence) FROM audit_events \
         WHERE occurred_at < $1 AND sequence < $2 AND hash IS NOT NULL",
    )
    .bind(cutoff)
    .bind(head)
    .fetch_one(&mut *tx)
    .await?;
    let Some(through) = through else {
        return Ok(0);
    };
    checkpoints::make_at(&mut tx, service, key, through, now).await?;
    let purged: i64 = sqlx::query_scalar("SELECT audit_purge($1)")
        .bind(through)
        .fetch_one(&mut *tx)
        .await?;
    let event = Event {
        action: PURGE_ACTION,
        target_type: "audit_trail",
        target_id: service,
        outcome: "success",
        details: json!({
            "through_sequence": through,
            "purged": purged,
            "older_than": cutoff.to_rfc3339(),
        }),
        changes: Changes::new(),
    };
    append(
        &mut tx,
        vec![NewEvent::new(now, &Actor::system("retention"), event)],
    )
    .await?;
    tx.commit().await?;
    Ok(u64::try_from(purged).unwrap_or(0))
}
