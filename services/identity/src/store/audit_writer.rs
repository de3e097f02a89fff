//! Audit events that go with no other change (refused and successful sign-ins, sign-outs,
//! service-token requests), written in batches.
//!
//! Each of these used to be an INSERT of its own, with its own commit, and under a flood of
//! sign-in attempts on a locked account (answered without hashing) that INSERT and its WAL
//! flush were most of the cost of an answer. Events are queued to one writer task instead,
//! which inserts everything queued so far in one statement and one commit, then the next
//! batch: alone, an event is written at once as before; under load, the events that arrive
//! while a batch is being written share the next one (group commit). The caller still gets
//! its answer only after its event is committed, so nothing audited is ever lost or
//! reported before it is durable.
//!
//! Events that belong to a change are still written by [`super::record`] in the change's
//! transaction.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use cqrs_runtime::audit::{Actor, Event};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::StoreError;

/// Events taken from the queue at once.
const MAX_BATCH: usize = 512;
/// Most bytes of row data in one INSERT. sqlx 0.9.0 leaves Nagle's algorithm on
/// (launchbadge/sqlx#4335): a message that leaves in more than one write (over TLS, anything
/// above one 16 KiB record) waits for the server's delayed ACK, ~40 ms. Statements are kept
/// well under one record; a batch above that is written as several.
const MAX_STATEMENT_BYTES: usize = 8 * 1024;
/// Per-row cost of an INSERT beyond its text (lengths, uuid, timestamp, array framing).
const ROW_OVERHEAD_BYTES: usize = 96;
/// Events waiting for the writer before callers wait to queue theirs.
const QUEUE_LEN: usize = 4096;

const INSERT_BATCH: &str = "INSERT INTO audit_events (id, occurred_at, actor_kind, actor_id, \
         action, target_type, target_id, outcome, request_id, details) \
     SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::text[], $8::text[], $9::text[], $10::jsonb[])";

/// The writer of stand-alone audit events. Cheap to share; the writer task starts with the
/// first event and ends when this is dropped (after writing what is queued).
#[derive(Debug)]
pub struct AuditWriter {
    pool: PgPool,
    queue: OnceLock<mpsc::Sender<Pending>>,
}

#[derive(Debug)]
struct Pending {
    row: Row,
    done: oneshot::Sender<Result<(), Arc<sqlx::Error>>>,
}

/// An event as stored.
#[derive(Debug)]
struct Row {
    id: Uuid,
    occurred_at: DateTime<Utc>,
    actor_kind: &'static str,
    actor_id: String,
    action: String,
    target_type: String,
    target_id: String,
    outcome: String,
    request_id: Option<String>,
    details: serde_json::Value,
}

impl AuditWriter {
    pub fn new(pool: PgPool) -> Self {
        AuditWriter {
            pool,
            queue: OnceLock::new(),
        }
    }

    /// Appends `event` and returns once it is committed.
    pub async fn record(
        &self,
        now: DateTime<Utc>,
        actor: &Actor,
        event: Event<'_>,
    ) -> Result<(), StoreError> {
        let row = Row {
            // Made now, not at insert time, so ids keep the order events happened in.
            id: Uuid::now_v7(),
            occurred_at: now,
            actor_kind: actor.kind,
            actor_id: actor.id.clone(),
            action: event.action.to_owned(),
            target_type: event.target_type.to_owned(),
            target_id: event.target_id.to_owned(),
            outcome: event.outcome.to_owned(),
            request_id: actor.request_id.clone(),
            details: event.details,
        };
        let (done, written) = oneshot::channel();
        self.queue()
            .send(Pending { row, done })
            .await
            .map_err(|_| StoreError::AuditWriterStopped)?;
        written
            .await
            .map_err(|_| StoreError::AuditWriterStopped)?
            .map_err(StoreError::from_shared)
    }

    fn queue(&self) -> &mpsc::Sender<Pending> {
        // Started on first use, so it runs on the caller's runtime.
        self.queue.get_or_init(|| {
            let (queue, pending) = mpsc::channel(QUEUE_LEN);
            tokio::spawn(write_batches(self.pool.clone(), pending));
            queue
        })
    }
}

/// Writes whatever is queued, one batch at a time, until every sender is gone.
async fn write_batches(pool: PgPool, mut queue: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        while !batch.is_empty() {
            let take = statement_len(&batch);
            let result = insert(&pool, &batch[..take]).await.map_err(Arc::new);
            for pending in batch.drain(..take) {
                // A caller that gave up does not want the answer; its event is written
                // anyway.
                let _ = pending.done.send(result.clone());
            }
        }
    }
}

/// How many of the first events fit in one statement (always at least one).
fn statement_len(batch: &[Pending]) -> usize {
    let mut bytes = 0;
    let fits = batch
        .iter()
        .take_while(|p| {
            bytes += p.row.approx_bytes();
            bytes <= MAX_STATEMENT_BYTES
        })
        .count();
    fits.max(1)
}

impl Row {
    fn approx_bytes(&self) -> usize {
        ROW_OVERHEAD_BYTES
            + self.actor_kind.len()
            + self.actor_id.len()
            + self.action.len()
            + self.target_type.len()
            + self.target_id.len()
            + self.outcome.len()
            + self.request_id.as_ref().map_or(0, String::len)
            // Identity's details are a few short fields; serialising them to measure costs
            // little next to the INSERT.
            + self.details.to_string().len()
    }
}

async fn insert(pool: &PgPool, batch: &[Pending]) -> Result<(), sqlx::Error> {
    let rows = batch.iter().map(|p| &p.row);
    sqlx::query(INSERT_BATCH)
        .bind(rows.clone().map(|r| r.id).collect::<Vec<_>>())
        .bind(rows.clone().map(|r| r.occurred_at).collect::<Vec<_>>())
        .bind(rows.clone().map(|r| r.actor_kind).collect::<Vec<_>>())
        .bind(
            rows.clone()
                .map(|r| r.actor_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.clone().map(|r| r.action.as_str()).collect::<Vec<_>>())
        .bind(
            rows.clone()
                .map(|r| r.target_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|r| r.target_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.clone().map(|r| r.outcome.as_str()).collect::<Vec<_>>())
        .bind(
            rows.clone()
                .map(|r| r.request_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(rows.map(|r| r.details.clone()).collect::<Vec<_>>())
        .execute(pool)
        .await?;
    Ok(())
}
