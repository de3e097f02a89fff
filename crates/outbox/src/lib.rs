//! Transactional outbox for services that produce notifications (identity, access).
//!
//! # Why a table on the producer's side
//!
//! A change and the mail it causes must commit together (SECURITY.md item 29). Calling
//! NotificationService inside the producer's transaction cannot be rolled back if that
//! transaction later fails, and calling it after commit loses the mail if the process dies in
//! between. So the producer writes an `outbox` row in its own database, in the same
//! transaction as the change: "the change happened" and "a notification is owed" become one
//! atomic fact. A [`Relay`] then hands each row to NotificationService at least once, using the
//! row id as the idempotency key; the notification service dedupes on that key, which turns
//! at-least-once delivery from the relay into once per event at the recipient.
//!
//! # Why [`ensure_schema`] instead of a migration in every service
//!
//! The table's shape belongs to this crate: the relay's queries depend on it. Copying the DDL
//! into each producer's migrations would let the copies drift from the queries, and every
//! change to the relay would need a coordinated migration in every producer. Instead each
//! producer calls `ensure_schema` after running its own migrations; the connection's
//! `search_path` puts the table in that service's schema, next to the data it commits with.
//! The DDL is idempotent and taken under an advisory lock, because concurrent
//! `CREATE TABLE IF NOT EXISTS` from replicas starting together can still fail on the catalog's
//! unique indexes. Any future change to the shape must stay additive
//! (`ADD COLUMN IF NOT EXISTS`) so old and new replicas can run side by side.
//!
//! # Delivery
//!
//! [`Relay::run_once`] claims due rows with `FOR UPDATE SKIP LOCKED` and a lease, commits the
//! claim, and only then calls NotificationService, so no database transaction is open across a
//! network call. Every call's deadline is clamped to what is left of the lease, so a relay has
//! given up on a row before another relay can claim it (and if a request it abandoned still
//! reaches the server, the idempotency key absorbs it). Transient failures are
//! retried with capped, jittered exponential backoff; a payload the notification service
//! rejects as invalid is marked dead instead of being retried forever.

use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    pin::pin,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use cqrs_peers::{NotificationsPeer, PeerError};
use cqrs_proto::notifications::v1::{EmailTemplate, EnqueueEmailRequest, NotifyRequest};
use cqrs_rules::backoff::Backoff;
use cqrs_runtime::server::RequestDeadline;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection, PgPool, types::Json};
use tonic::Code;
use uuid::Uuid;

/// Key for `pg_advisory_xact_lock` around the DDL ("outbox" in ASCII). It is database-wide, so
/// services sharing a database in different schemas merely take turns for a moment.
const SCHEMA_LOCK_KEY: i64 = 0x6f75_7462_6f78;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS outbox (
    id uuid PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('email', 'in_app')),
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz,
    delivered_at timestamptz,
    dead_at timestamptz,
    last_error text
)";

// Partial: once delivered or dead a row never needs to be found by the relay again, so the index
// stays as small as the backlog.
const CREATE_INDEX: &str = "CREATE INDEX IF NOT EXISTS outbox_pending_idx
    ON outbox (created_at, id) WHERE delivered_at IS NULL AND dead_at IS NULL";

// The claim's look for an earlier e-mail to the same address owed, without scanning the backlog.
const CREATE_RECIPIENT_INDEX: &str = "CREATE INDEX IF NOT EXISTS outbox_pending_recipient_idx
    ON outbox ((payload->>'to'), id)
    WHERE kind = 'email' AND delivered_at IS NULL AND dead_at IS NULL";

// The candidate set is materialized so it is evaluated exactly once: the LIMIT and the row locks
// taken by SKIP LOCKED then describe precisely the rows this statement leases. Under READ
// COMMITTED, a row another relay leased after our snapshot is re-checked against the WHERE
// clause when we lock it, and dropped.
//
// One recipient's mail is handed over in the order it was written: an e-mail is due only when
// no earlier e-mail to the same address is still owed (the ids are UUIDv7, ordered by when
// they were made, which is after any row lock the writing transaction took; a newer reset link
// therefore never overtakes the older one it revoked, whether the notification service was
// down in between or the two would have shared a batch).
const CLAIM: &str = "WITH due AS MATERIALIZED (
        SELECT id FROM outbox
        WHERE delivered_at IS NULL AND dead_at IS NULL
          AND next_attempt_at <= now()
          AND (lease_until IS NULL OR lease_until < now())
          AND NOT (kind = 'email' AND EXISTS (
              SELECT 1 FROM outbox earlier
              WHERE earlier.kind = 'email'
                AND earlier.delivered_at IS NULL AND earlier.dead_at IS NULL
                AND earlier.payload->>'to' = outbox.payload->>'to'
                AND earlier.id < outbox.id))
        ORDER BY created_at, id
        LIMIT $1
        FOR UPDATE SKIP LOCKED
    )
    UPDATE outbox SET lease_until = now() + make_interval(secs => $2)
    WHERE id IN (SELECT id FROM due)
    RETURNING id, payload, attempts, lease_until";

/// Time kept back from the lease when sizing a call's deadline, for the bookkeeping update that
/// follows the call (at most a tenth of the lease, so a short lease still leaves room to send).
const LEASE_MARGIN: Duration = Duration::from_millis(500);

/// `last_error` is for operators; a bounded length keeps a misbehaving server from filling it.
const MAX_ERROR_LEN: usize = 1000;

/// Creates the `outbox` table and its indexes in the connection's current schema if they do not
/// exist. Run it after the service's own migrations. Safe to call from many replicas at once.
pub async fn ensure_schema(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SCHEMA_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    sqlx::query(CREATE_TABLE).execute(&mut *tx).await?;
    sqlx::query(CREATE_INDEX).execute(&mut *tx).await?;
    sqlx::query(CREATE_RECIPIENT_INDEX)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// A notification owed to someone, as stored in the outbox.
///
/// Stored as JSON tagged by `type` (`"email"` / `"in_app"`, the same values as the `kind`
/// column); the template is stored by its proto enum name (`"EMAIL_TEMPLATE_PASSWORD_RESET"`),
/// which stays meaningful if enum numbers are ever reordered.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutboxMessage {
    Email {
        #[serde(with = "template_name")]
        template: EmailTemplate,
        to: String,
        params: BTreeMap<String, String>,
        #[serde(default)]
        account_id: Option<Uuid>,
    },
    InApp {
        account_ids: Vec<Uuid>,
        kind: String,
        title: String,
        body: String,
        /// The record the notification is about (NotifyRequest.subject_id); empty for none,
        /// and for rows written before the field existed.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        subject_id: String,
    },
}

impl OutboxMessage {
    /// The value of the `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            OutboxMessage::Email { .. } => "email",
            OutboxMessage::InApp { .. } => "in_app",
        }
    }
}

// Template params carry one-time tokens (password reset, registration links): Debug output
// names the keys but never shows the values, so logging a message cannot leak a token.
impl fmt::Debug for OutboxMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboxMessage::Email {
                template,
                to,
                params,
                account_id,
            } => f
                .debug_struct("Email")
                .field("template", template)
                .field("to", to)
                .field("params", &params.keys().collect::<Vec<_>>())
                .field("account_id", account_id)
                .finish(),
            OutboxMessage::InApp {
                account_ids,
                kind,
                title,
                body,
                subject_id,
            } => f
                .debug_struct("InApp")
                .field("account_ids", account_ids)
                .field("kind", kind)
                .field("title", title)
                .field("body", body)
                .field("subject_id", subject_id)
                .finish(),
        }
    }
}

mod template_name {
    use cqrs_proto::notifications::v1::EmailTemplate;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    #[allow(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's serialize_with hands the field by reference"
    )]
    pub fn serialize<S: Serializer>(template: &EmailTemplate, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(template.as_str_name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EmailTemplate, D::Error> {
        let name = String::deserialize(d)?;
        EmailTemplate::from_str_name(&name)
            .ok_or_else(|| D::Error::custom(format!("unknown email template {name:?}")))
    }
}

/// Writes `msg` to the outbox on `tx` and returns the row id, which becomes the idempotency key.
/// Insert only: the caller owns the transaction, so the row commits or rolls back with the
/// change that caused it.
pub async fn enqueue(tx: &mut PgConnection, msg: &OutboxMessage) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO outbox (id, kind, payload) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(msg.kind())
        .bind(Json(msg))
        .execute(tx)
        .await?;
    Ok(id)
}

/// Rows still owed to the notification service (neither delivered nor dead).
pub async fn pending_count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL")
        .fetch_one(pool)
        .await
}

/// Rows given up on because the notification service rejected them as invalid. Anything above
/// zero needs a person: alert on it.
pub async fn dead_count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE dead_at IS NOT NULL")
        .fetch_one(pool)
        .await
}

/// Deletes rows delivered more than `older_than` ago and returns how many went. Delivered
/// rows keep no payload and the notification service keeps its own record, so they only
/// take space; producers call this periodically.
pub async fn purge_delivered(pool: &PgPool, older_than: Duration) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM outbox WHERE delivered_at < now() - make_interval(secs => $1)")
            .bind(older_than.as_secs_f64())
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}

/// How a [`Relay`] paces itself.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Most rows claimed by one [`Relay::run_once`].
    pub batch_size: u32,
    /// Sleep between passes that found nothing to do.
    pub poll_interval: Duration,
    /// Delay before the first retry; doubled for each further failure.
    pub initial_backoff: Duration,
    /// Upper bound of the retry delay.
    pub max_backoff: Duration,
    /// How long a claim keeps other relays off a row. Calls are cut short to fit inside it, and
    /// rows of a batch whose turn comes too late are released for the next pass, so keep it
    /// above `ceil(batch_size / concurrency) * call_timeout`.
    pub lease: Duration,
    /// Deadline of one call to the notification service.
    pub call_timeout: Duration,
    /// Calls in flight at once within a batch.
    pub concurrency: usize,
    /// The producing service, as the backlog metrics name it.
    pub producer: &'static str,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: 50,
            poll_interval: Duration::from_secs(1),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            lease: Duration::from_secs(90),
            call_timeout: Duration::from_secs(10),
            concurrency: 8,
            producer: "outbox",
        }
    }
}

/// Failure of a relay pass as a whole. Failures of single deliveries are recorded on their rows
/// and retried, not returned.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Moves outbox rows to NotificationService. Any number of relays may run against the same
/// table: a row is leased to one of them at a time.
pub struct Relay {
    pool: PgPool,
    notifications: NotificationsPeer,
    config: RelayConfig,
}

#[derive(sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    payload: serde_json::Value,
    attempts: i32,
    // Also the fencing token: bookkeeping updates only apply while the row still carries the
    // lease this relay took.
    lease_until: DateTime<Utc>,
}

enum Outcome {
    Delivered,
    Retry(String),
    Dead(String),
    /// Too little of the lease was left to make the call safely.
    Release,
}

impl Relay {
    pub fn new(pool: PgPool, notifications: NotificationsPeer, config: RelayConfig) -> Self {
        Relay {
            pool,
            // Failed rows are rescheduled durably (and leased), so a call makes one attempt.
            notifications: notifications.without_retries(),
            config,
        }
    }

    /// Claims up to `batch_size` due rows and tries to deliver each once. Returns how many rows
    /// were claimed (0 means there was nothing to do).
    pub async fn run_once(&self) -> Result<usize, RelayError> {
        // Taken before the claim, so the local deadline can only be earlier than the lease the
        // database records.
        let lease_deadline = Instant::now() + self.config.lease;
        let claimed: Vec<Claimed> = sqlx::query_as(CLAIM)
            .bind(i64::from(self.config.batch_size))
            .bind(self.config.lease.as_secs_f64())
            .fetch_all(&self.pool)
            .await?;
        let count = claimed.len();
        if count == 0 {
            return Ok(0);
        }

        let results: Vec<Result<(), sqlx::Error>> = futures::stream::iter(claimed)
            .map(|row| self.process(row, lease_deadline))
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        // A row whose bookkeeping failed keeps its lease and is retried after it expires; the
        // notification service's dedupe absorbs the repeat.
        results.into_iter().collect::<Result<(), _>>()?;
        Ok(count)
    }

    /// Runs passes until `shutdown` resolves, sleeping `poll_interval` whenever a pass finds
    /// nothing or fails. A batch already in flight is finished first (each call is bounded by
    /// `call_timeout`), so shutdown does not leave rows leased until their lease expires.
    pub async fn run<F>(self, shutdown: F)
    where
        F: Future<Output = ()> + Send,
    {
        let mut shutdown = pin!(shutdown.fuse());
        let mut sampled: Option<Instant> = None;
        loop {
            if shutdown.as_mut().now_or_never().is_some() {
                break;
            }
            if sampled.is_none_or(|at| at.elapsed() >= BACKLOG_SAMPLE_EVERY) {
                sampled = Some(Instant::now());
                self.sample_backlog().await;
            }
            let idle = match self.run_once().await {
                Ok(claimed) => claimed == 0,
                Err(err) => {
                    tracing::warn!(error = %err, "outbox relay pass failed");
                    true
                }
            };
            if idle {
                tokio::select! {
                    () = shutdown.as_mut() => break,
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                }
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// Records how many rows wait and how old the oldest is (`outbox.backlog`,
    /// `outbox.oldest_age`): what an operator watches to see mail held up.
    async fn sample_backlog(&self) {
        let sample: Result<(i64, Option<f64>), _> = sqlx::query_as(
            "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8 FROM outbox \
             WHERE delivered_at IS NULL AND dead_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await;
        match sample {
            Ok((backlog, oldest)) => {
                let producer = [cqrs_runtime::metrics::KeyValue::new(
                    "producer",
                    self.config.producer,
                )];
                let gauges = backlog_gauges();
                // Counts are far below f64's exact range.
                gauges.backlog.record(backlog as f64, &producer);
                gauges.oldest.record(oldest.unwrap_or(0.0), &producer);
            }
            Err(e) => tracing::debug!(error = %e, "outbox backlog not sampled"),
        }
    }

    async fn process(&self, row: Claimed, lease_deadline: Instant) -> Result<(), sqlx::Error> {
        let outcome = self.attempt(&row, lease_deadline).await;
        match outcome {
            Outcome::Delivered => {
                // Not fenced by the lease: the service has the message whoever holds the row now.
                sqlx::query(
                    // The payload's job is done and it may hold a one-time link token:
                    // keep the row as a record, not the secret.
                    "UPDATE outbox SET delivered_at = now(), lease_until = NULL, payload = '{}'
                     WHERE id = $1 AND delivered_at IS NULL",
                )
                .bind(row.id)
                .execute(&self.pool)
                .await?;
                tracing::debug!(outbox_id = %row.id, "outbox message delivered");
            }
            Outcome::Retry(error) => {
                let failures = u32::try_from(row.attempts.saturating_add(1)).unwrap_or(0);
                let delay = Backoff::new(self.config.initial_backoff, self.config.max_backoff)
                    .jittered(failures, rand::random::<f64>());
                tracing::warn!(
                    outbox_id = %row.id,
                    attempts = row.attempts.saturating_add(1),
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error = %error,
                    "outbox delivery failed; will retry",
                );
                let done = sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1,
                        next_attempt_at = now() + make_interval(secs => $2),
                        last_error = $3, lease_until = NULL
                     WHERE id = $1 AND lease_until = $4 AND delivered_at IS NULL",
                )
                .bind(row.id)
                .bind(delay.as_secs_f64())
                .bind(error)
                .bind(row.lease_until)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    tracing::warn!(outbox_id = %row.id, "outbox lease lost before recording a failure");
                }
            }
            Outcome::Dead(error) => {
                tracing::error!(
                    outbox_id = %row.id,
                    error = %error,
                    "outbox message rejected as invalid; marked dead and will NOT be retried",
                );
                sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, dead_at = now(),
                        last_error = $2, lease_until = NULL
                     WHERE id = $1 AND lease_until = $3 AND delivered_at IS NULL",
                )
                .bind(row.id)
                .bind(error)
                .bind(row.lease_until)
                .execute(&self.pool)
                .await?;
            }
            Outcome::Release => {
                tracing::debug!(outbox_id = %row.id, "outbox lease too short to send; released");
                sqlx::query(
                    "UPDATE outbox SET lease_until = NULL WHERE id = $1 AND lease_until = $2",
                )
                .bind(row.id)
                .bind(row.lease_until)
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }

    async fn attempt(&self, row: &Claimed, lease_deadline: Instant) -> Outcome {
        // Error text from serde can quote payload values, which may be tokens: keep only the
        // category and position.
        let msg = match serde_json::from_value::<OutboxMessage>(row.payload.clone()) {
            Ok(msg) => msg,
            Err(err) => {
                return Outcome::Dead(format!(
                    "undecodable payload ({:?} error at line {} column {})",
                    err.classify(),
                    err.line(),
                    err.column()
                ));
            }
        };

        let margin = LEASE_MARGIN.min(self.config.lease / 10);
        let left = lease_deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(margin);
        let deadline = left.min(self.config.call_timeout);
        if deadline.is_zero() {
            return Outcome::Release;
        }
        // The lease bounds the call: the peer answers within what is left of it.
        let deadline = Some(RequestDeadline(tokio::time::Instant::now() + deadline));

        let key = row.id.to_string();
        let result = match msg {
            OutboxMessage::Email {
                template,
                to,
                params,
                account_id,
            } => {
                let request = EnqueueEmailRequest {
                    idempotency_key: key,
                    template: template.into(),
                    to,
                    params: params.into_iter().collect(),
                    account_id: account_id.map(|id| id.to_string()).unwrap_or_default(),
                };
                self.notifications
                    .enqueue_email(request, deadline)
                    .await
                    .map(drop)
            }
            OutboxMessage::InApp {
                account_ids,
                kind,
                title,
                body,
                subject_id,
            } => {
                let request = NotifyRequest {
                    account_ids: account_ids.iter().map(Uuid::to_string).collect(),
                    kind,
                    title,
                    body,
                    idempotency_key: key,
                    subject_id,
                };
                self.notifications.notify(request, deadline).await.map(drop)
            }
        };
        match result {
            Ok(()) => Outcome::Delivered,
            Err(PeerError::Status { code, message, .. }) if is_permanent(code) => {
                Outcome::Dead(describe(code, &message))
            }
            Err(PeerError::Status { code, message, .. }) => {
                Outcome::Retry(describe(code, &message))
            }
            Err(PeerError::Unavailable { code, message, .. }) => {
                Outcome::Retry(describe(code, &message))
            }
            Err(PeerError::Token(err)) => {
                tracing::warn!(error = %err, "outbox relay could not get a service token");
                Outcome::Retry("service token unavailable".to_owned())
            }
            // The service answered OK: the row is accepted there, whatever the answer lacks.
            Err(PeerError::Incomplete { .. }) => Outcome::Delivered,
        }
    }
}

/// Failures that no retry can fix because the content of the row will never change:
/// InvalidArgument (the payload fails validation) and AlreadyExists (the key was used for
/// different content). Everything else — including Unauthenticated and PermissionDenied, which
/// a configuration fix cures — is retried.
fn is_permanent(code: Code) -> bool {
    matches!(code, Code::InvalidArgument | Code::AlreadyExists)
}

/// Only the code and the server's message: never request content, metadata or the token.
fn describe(code: Code, message: &str) -> String {
    let mut text = format!("{code:?}: {message}");
    if text.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// How often the relay samples its backlog for the metrics.
const BACKLOG_SAMPLE_EVERY: Duration = Duration::from_secs(10);

struct BacklogGauges {
    backlog: cqrs_runtime::metrics::Gauge<f64>,
    oldest: cqrs_runtime::metrics::Gauge<f64>,
}

fn backlog_gauges() -> &'static BacklogGauges {
    static GAUGES: std::sync::OnceLock<BacklogGauges> = std::sync::OnceLock::new();
    GAUGES.get_or_init(|| BacklogGauges {
        backlog: cqrs_runtime::metrics::gauge(
            "outbox.backlog",
            "Notifications written by the producer and not yet handed to the notification service",
        ),
        oldest: cqrs_runtime::metrics::gauge(
            "outbox.oldest_age",
            "Age in seconds of the oldest notification still waiting in the outbox",
        ),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn payload_names_template_and_round_trips() {
        let msg = OutboxMessage::Email {
            template: EmailTemplate::PasswordReset,
            to: "a@example.test".into(),
            params: BTreeMap::from([("token".to_owned(), "secret-token".to_owned())]),
            account_id: Some(Uuid::nil()),
        };
        let json = serde_json::to_value(&msg).unwrap();
        assert_eq!(json["type"], "email");
        assert_eq!(json["template"], "EMAIL_TEMPLATE_PASSWORD_RESET");
        assert_eq!(serde_json::from_value::<OutboxMessage>(json).unwrap(), msg);

        let in_app = OutboxMessage::InApp {
            account_ids: vec![Uuid::nil()],
            kind: "REGISTRATION_SUBMITTED".into(),
            title: "t".into(),
            body: "b".into(),
            subject_id: String::new(),
        };
        let json = serde_json::to_value(&in_app).unwrap();
        assert_eq!(json["type"], in_app.kind());
        assert_eq!(
            serde_json::from_value::<OutboxMessage>(json).unwrap(),
            in_app
        );
    }

    #[test]
    fn unknown_template_name_is_rejected() {
        let json = serde_json::json!({
            "type": "email", "template": "EMAIL_TEMPLATE_NOPE", "to": "a@b", "params": {}
        });
        assert!(serde_json::from_value::<OutboxMessage>(json).is_err());
    }

    #[test]
    fn debug_hides_param_values() {
        let msg = OutboxMessage::Email {
            template: EmailTemplate::PasswordReset,
            to: "a@example.test".into(),
            params: BTreeMap::from([("token".to_owned(), "secret-token".to_owned())]),
            account_id: None,
        };
        let text = format!("{msg:?}");
        assert!(text.contains("token"));
        assert!(!text.contains("secret-token"));
    }

    #[test]
    fn describe_keeps_code_and_message_and_bounds_length() {
        assert_eq!(
            describe(Code::Unavailable, "smtp down"),
            "Unavailable: smtp down"
        );
        let long = "é".repeat(MAX_ERROR_LEN);
        assert!(describe(Code::Internal, &long).len() <= MAX_ERROR_LEN);
    }
}
