//! Audit events that go with no other change (refused and successful sign-ins, sign-outs,
//! service-token requests), written in batches.
//!
//! Each of these used to be an INSERT of its own, with its own commit, and under a flood of
//! sign-in attempts on a locked account (answered without hashing) that INSERT and its WAL
//! flush were most of the cost of an answer. Events are queued to one writer task instead,
//! which inserts everything queued so far in one statement and one commit, then the next
//! batch (group commit). The caller still gets its answer only after its event is committed,
//! so nothing audited is ever lost or reported before it is durable.
//!
//! When events have been coming less than [`LINGER`] apart (a moving average of the gaps
//! between them), a batch waits for company until its first event has waited [`LINGER`] or it
//! holds [`ENOUGH_COMPANY`]: a commit, its round trip and the chain's lock cost Postgres many
//! times what one more row does (measured with `pgbench` on identity's schema: ~450 µs of
//! Postgres CPU for a batch of one, ~75 µs for each further row). At a hundred sign-ins a
//! second that writes two or three per commit, for at most [`LINGER`] more on each answer;
//! under a flood the batch fills at once. An event that comes alone, or after a pause, is
//! written at once.
//!
//! The gaps alone cannot tell many callers from one that sends its next request as soon as
//! it has its answer: that one's events come a hash apart (13-20 ms), within [`LINGER`], yet
//! no company can come while its event waits. So waiting stops after [`LONELY_WAITS`] waits in
//! a row found nobody, and starts again when a batch has company without waiting (events
//! that came while the last batch was being written): proof that more than one caller is
//! about. One caller on its own pays for at most [`LONELY_WAITS`] answers.
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
use tokio::time::Instant;

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
/// Longest an event waits for others to share its commit. Batches wait at all only while the
/// average gap between events is under it: at least one more is expected meanwhile.
const LINGER: Duration = Duration::from_millis(20);
/// Waits in a row that found no company, after which batches are written at once until one
/// has company of its own accord.
const LONELY_WAITS: u32 = 2;
/// A batch this large stops waiting: the commit's fixed cost, spread over it, is about a row's
/// (under a flood, waiting longer would only delay answers).
const ENOUGH_COMPANY: usize = 8;
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
    queued: Instant,
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
            .send(Pending {
                row,
                queued: Instant::now(),
                done,
            })
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
    let mut pace = Pace::default();
    loop {
        if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        batch.iter().for_each(|p| pace.arrived(p.queued));
        let waited = batch.first().and_then(|p| pace.write_at(p.queued));
        if let Some(at) = waited {
            wait_for_company(&mut queue, &mut batch, &mut pace, at).await;
        }
        pace.written(batch.len(), waited.is_some());
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

/// Adds the events that arrive to `batch` until `at`, or until it holds [`ENOUGH_COMPANY`], or
/// every sender is gone (what is in it is still written).
async fn wait_for_company(
    queue: &mut mpsc::Receiver<Pending>,
    batch: &mut Vec<Pending>,
    pace: &mut Pace,
    at: Instant,
) {
    while batch.len() < ENOUGH_COMPANY {
        let seen = batch.len();
        let taken = tokio::time::timeout_at(at, queue.recv_many(batch, MAX_BATCH - seen)).await;
        if !matches!(taken, Ok(n) if n > 0) {
            return;
        }
        batch[seen..].iter().for_each(|p| pace.arrived(p.queued));
    }
}

/// How closely events have been following each other: a moving average of the gaps between
/// their arrivals (each new gap weighs an eighth, so one long pause ends the waiting at once),
/// and whether waiting for company has been finding any.
#[derive(Debug, Default)]
struct Pace {
    last: Option<Instant>,
    gap: Option<Duration>,
    /// Waits in a row that ended with the batch still alone.
    lonely: u32,
}

impl Pace {
    fn arrived(&mut self, at: Instant) {
        if let Some(last) = self.last {
            let gap = at.saturating_duration_since(last);
            self.gap = Some(self.gap.map_or(gap, |average| {
                average.saturating_mul(7).saturating_add(gap) / 8
            }));
        }
        self.last = self.last.max(Some(at));
    }

    /// When a batch whose first event was queued at `first` is written, at the latest: at
    /// once (`None`) unless events have been coming less than [`LINGER`] apart and waiting
    /// has not been in vain lately, then once that event has waited [`LINGER`].
    fn write_at(&self, first: Instant) -> Option<Instant> {
        self.gap
            .filter(|gap| *gap < LINGER && self.lonely < LONELY_WAITS)
            .map(|_| first + LINGER)
    }

    /// A batch of `len` events is being written, after waiting for company or not.
    fn written(&mut self, len: usize, waited: bool) {
        if len > 1 {
            self.lonely = 0;
        } else if waited {
            self.lonely = self.lonely.saturating_add(1);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn batches_wait_only_while_events_come_closer_than_the_linger() {
        let t0 = Instant::now();
        let mut pace = Pace::default();
        pace.arrived(t0);
        // One event tells nothing about the pace: written at once.
        assert_eq!(pace.write_at(t0), None);

        // Events 4 ms apart: a batch waits until its first event has waited LINGER.
        for n in 1..=20 {
            pace.arrived(t0 + ms(4 * n));
        }
        let first = t0 + ms(80);
        assert_eq!(pace.write_at(first), Some(first + LINGER));

        // One pause of a second ends the waiting at once.
        let after_pause = t0 + ms(1080);
        pace.arrived(after_pause);
        assert_eq!(pace.write_at(after_pause), None);

        // Events further apart than LINGER never wait, however many.
        let mut pace = Pace::default();
        for n in 0..50 {
            pace.arrived(t0 + ms(25 * n));
        }
        assert_eq!(pace.write_at(t0 + ms(1250)), None);
    }

    #[test]
    fn one_caller_on_its_own_stops_the_waiting_and_company_starts_it_again() {
        let t0 = Instant::now();
        let mut pace = Pace::default();
        // One caller, its next request as soon as it has its answer (a hash, ~15 ms): each
        // event comes alone, within LINGER of the last.
        let mut at = t0;
        let mut waits = 0;
        for _ in 0..50 {
            at += ms(15);
            pace.arrived(at);
            let waited = pace.write_at(at).is_some();
            waits += u32::from(waited);
            pace.written(1, waited);
        }
        // Only the first event tells nothing about the pace; the next LONELY_WAITS wait.
        assert_eq!(waits, LONELY_WAITS);
        assert_eq!(pace.write_at(at + ms(15)), None);

        // Two events in one batch without waiting: more callers are about, so batches wait.
        at += ms(15);
        pace.arrived(at);
        pace.arrived(at + ms(1));
        pace.written(2, false);
        assert_eq!(pace.write_at(at + ms(10)), Some(at + ms(10) + LINGER));

        // A wait that found company keeps the waiting on.
        pace.written(3, true);
        pace.written(1, true);
        assert_eq!(pace.write_at(at + ms(10)), Some(at + ms(10) + LINGER));
    }

    #[test]
    fn events_stamped_out_of_order_count_as_no_gap() {
        let t0 = Instant::now();
        let mut pace = Pace::default();
        pace.arrived(t0 + ms(50));
        pace.arrived(t0);
        assert_eq!(pace.gap, Some(Duration::ZERO));
        assert_eq!(pace.last, Some(t0 + ms(50)));
    }
}
