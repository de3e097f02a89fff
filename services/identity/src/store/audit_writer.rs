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
//! Each batch is numbered and linked into the audit chain in one transaction (one wait for
//! the chain's lock per batch, not per event), and in one round trip: the writer remembers the
//! head it left and appends after it if the chain still ends there
//! (`cqrs_runtime::audit::append_after`), instead of beginning a transaction, taking the lock
//! and reading the head, inserting and committing in four.
//!
//! Events that belong to a change are still written by [`super::record`] in the change's
//! transaction.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_runtime::audit::{self, Actor, Event, Head, NewEvent};
use sqlx::Connection as _;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

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
/// How long the writer waits before taking the next batch when the last one held more than one
/// event (they arrive faster than a commit takes): under load, more events share each commit,
/// which is most of what an event costs Postgres (its WAL flush). An event that comes alone is
/// written at once.
const LINGER_UNDER_LOAD: Duration = Duration::from_millis(2);
/// Events waiting for the writer before callers wait to queue theirs.
const QUEUE_LEN: usize = 4096;

/// The writer of stand-alone audit events. Cheap to share; the writer task starts with the
/// first event and ends when this is dropped (after writing what is queued).
#[derive(Debug)]
pub struct AuditWriter {
    pool: PgPool,
    queue: OnceLock<mpsc::Sender<Pending>>,
}

#[derive(Debug)]
struct Pending {
    row: NewEvent,
    done: oneshot::Sender<Result<(), Arc<sqlx::Error>>>,
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
        let row = NewEvent::new(now, actor, event);
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
    let mut head = None;
    let mut arriving_fast = false;
    loop {
        if arriving_fast {
            tokio::time::sleep(LINGER_UNDER_LOAD).await;
        }
        if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        arriving_fast = batch.len() > 1;
        while !batch.is_empty() {
            let take = statement_len(&batch);
            let result = insert(&pool, &mut head, &batch[..take])
                .await
                .map_err(Arc::new);
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
            bytes += ROW_OVERHEAD_BYTES + p.row.text_len();
            bytes <= MAX_STATEMENT_BYTES
        })
        .count();
    fits.max(1)
}

/// Numbers, links and commits a batch in one transaction: in one round trip after the head
/// this writer left (`head`, updated), or, when others appended since, in one more from the
/// head they left. Should others keep appending in between, the batch takes the chain's lock
/// for a transaction of its own, as a change's events do.
async fn insert(
    pool: &PgPool,
    head: &mut Option<Head>,
    batch: &[Pending],
) -> Result<(), sqlx::Error> {
    let rows = || batch.iter().map(|p| p.row.clone()).collect::<Vec<_>>();
    let mut conn = pool.acquire().await?;
    for _ in 0..2 {
        match audit::append_after(&mut conn, head.take(), rows()).await? {
            Ok(new) => {
                *head = Some(new);
                return Ok(());
            }
            Err(found) => *head = Some(found),
        }
    }
    *head = None;
    let mut tx = conn.begin().await?;
    audit::append(&mut tx, rows()).await?;
    tx.commit().await
}
