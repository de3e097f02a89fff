//! Postgres storage for deliveries, the in-app inbox, preferences and the audit trail.
//! Every change writes its audit event in the same transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_runtime::audit::{self, Actor, Event};
use cqrs_runtime::paging::{Page, PageToken, paginate};
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

use crate::domain::{DeliveryState, NewEmail, NewNotification, Template};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the idempotency key was used for a different request")]
    IdempotencyConflict,
    #[error("not found")]
    NotFound,
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if cqrs_runtime::errors::is_unavailable(&err) {
            StoreError::Unavailable(err)
        } else {
            StoreError::Database(err)
        }
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub idempotency_key: String,
    pub template: String,
    pub recipient: String,
    pub params: Json<BTreeMap<String, String>>,
    pub account_id: Option<Uuid>,
    pub security: bool,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The claim's lease: the worker that holds this value may record the attempt's result.
    pub lease_until: Option<DateTime<Utc>>,
}

impl DeliveryRow {
    pub fn template(&self) -> Option<Template> {
        Template::parse(&self.template)
    }

    pub fn state(&self) -> Option<DeliveryState> {
        DeliveryState::parse(&self.state)
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub subject_id: String,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PreferencesRow {
    pub account_id: Uuid,
    pub email_enabled: bool,
    pub updated_at: Option<DateTime<Utc>>,
}

/// The columns of `DeliveryRow`, as a macro so queries stay `&'static str` (sqlx refuses
/// SQL built at run time).
macro_rules! delivery_columns {
    () => {
        "id, idempotency_key, template, recipient, params, account_id, security, state, \
         attempts, next_attempt_at, last_error, created_at, delivered_at, lease_until"
    };
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Store { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Stores a new mail, or returns the one already stored under the same key when its
    /// content is the same. `created` tells which.
    pub async fn insert_email(
        &self,
        email: &NewEmail,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<(DeliveryRow, bool), StoreError> {
        let hash = email.content_hash();
        if let Some(existing) = self.email_by_key(&email.idempotency_key, &hash).await? {
            return Ok((existing, false));
        }

        let mut tx = self.pool.begin().await?;
        let email_enabled = match email.account_id {
            Some(account_id) => preferences_in(&mut tx, account_id).await?.email_enabled,
            None => true,
        };
        let state = email.initial_state(email_enabled);
        let stored_params = match state {
            DeliveryState::Suppressed => crate::domain::scrub(&email.params),
            _ => email.params.clone(),
        };
        let inserted: Option<DeliveryRow> = sqlx::query_as(concat!(
            "INSERT INTO emails (id, idempotency_key, content_hash, template, recipient, params, \
                 account_id, security, state, attempts, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $10) \
             ON CONFLICT (idempotency_key) DO NOTHING \
             RETURNING ",
            delivery_columns!(),
            ""
        ))
        .bind(Uuid::now_v7())
        .bind(&email.idempotency_key)
        .bind(&hash)
        .bind(email.template.as_str())
        .bind(&email.to)
        .bind(Json(&stored_params))
        .bind(email.account_id)
        .bind(email.template.is_security())
        .bind(state.as_str())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;

        let Some(row) = inserted else {
            // Lost a race with a concurrent request carrying the same key.
            tx.rollback().await?;
            return match self.email_by_key(&email.idempotency_key, &hash).await? {
                Some(existing) => Ok((existing, false)),
                None => Err(StoreError::IdempotencyConflict),
            };
        };
        let action = match state {
            DeliveryState::Suppressed => "SUPPRESS_EMAIL",
            _ => "ENQUEUE_EMAIL",
        };
        audit::record(
            &mut tx,
            now,
            actor,
            Event {
                changes: cqrs_runtime::audit::Changes::new(),
                action,
                target_type: "email",
                target_id: &row.id.to_string(),
                outcome: "success",
                details: serde_json::json!({ "template": row.template }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok((row, true))
    }

    /// The mail stored under `key`: `Ok(None)` if there is none, a conflict if there is one
    /// with other content.
    async fn email_by_key(
        &self,
        key: &str,
        hash: &[u8],
    ) -> Result<Option<DeliveryRow>, StoreError> {
        let found: Option<(Vec<u8>, Uuid)> =
            sqlx::query_as("SELECT content_hash, id FROM emails WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        match found {
            None => Ok(None),
            Some((stored, id)) if stored == hash => self.delivery(id).await.map(Some),
            Some(_) => Err(StoreError::IdempotencyConflict),
        }
    }

    pub async fn delivery(&self, id: Uuid) -> Result<DeliveryRow, StoreError> {
        sqlx::query_as(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM emails WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)
    }

    pub async fn list_deliveries(
        &self,
        state: Option<DeliveryState>,
        page_size: i64,
        after: Option<&PageToken>,
    ) -> Result<Page<DeliveryRow>, StoreError> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM emails \
             WHERE ($1::text IS NULL OR state = $1) \
               AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) \
             ORDER BY created_at DESC, id DESC LIMIT $4"
        ))
        .bind(state.map(DeliveryState::as_str))
        .bind(after.map(|t| t.time))
        .bind(after.map(|t| t.id))
        .bind(page_size + 1)
        .fetch_all(&self.pool)
        .await?;
        Ok(paginate(rows, page_size, |r| PageToken {
            time: r.created_at,
            id: r.id,
        }))
    }

    /// Claims up to `limit` due mails for this worker for `lease`. Rows another worker holds
    /// are skipped, not waited for, so replicas work side by side without sending twice. A
    /// mail is due only once every mail queued before it to the same recipient has left (or
    /// been given up): one recipient's mail arrives in order, so a newer reset link never
    /// overtakes the older one it revoked, even when the older one waits for a retry.
    pub async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let rows = sqlx::query_as(concat!(
            "UPDATE emails SET lease_until = $2, attempts = attempts + 1 \
             WHERE id IN ( \
                 SELECT id FROM emails \
                 WHERE state = 'PENDING' AND next_attempt_at <= $1 \
                   AND (lease_until IS NULL OR lease_until < $1) \
                   AND NOT EXISTS (SELECT 1 FROM emails earlier \
                       WHERE earlier.state = 'PENDING' AND earlier.recipient = emails.recipient \
                         AND earlier.queued < emails.queued) \
                 ORDER BY next_attempt_at \
                 LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING ",
            delivery_columns!(),
            ""
        ))
        .bind(now)
        .bind(lease_until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// How many mails are in each state (for the metrics; every state, zero included).
    pub async fn count_by_state(&self) -> Result<Vec<(&'static str, i64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM emails GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        Ok(["PENDING", "DELIVERED", "DEAD_LETTER", "SUPPRESSED"]
            .into_iter()
            .map(|state| {
                let n = rows.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
                (state, n)
            })
            .collect())
    }

    /// Records a delivery under the claim's lease. `false` when the lease was lost (it expired
    /// and another worker claimed the mail): that worker's result counts, nothing is changed.
    pub async fn mark_delivered(
        &self,
        row: &DeliveryRow,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE emails SET state = 'DELIVERED', delivered_at = $2, lease_until = NULL, \
                 last_error = NULL, params = $3 \
             WHERE id = $1 AND state = 'PENDING' AND lease_until = $4",
        )
        .bind(row.id)
        .bind(now)
        .bind(Json(crate::domain::scrub(&row.params)))
        .bind(row.lease_until)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        audit::record(
            &mut tx,
            now,
            &Actor::system("notifications-worker"),
            Event {
                changes: cqrs_runtime::audit::Changes::new(),
                action: "DELIVER_EMAIL",
                target_type: "email",
                target_id: &row.id.to_string(),
                outcome: "success",
                details: serde_json::json!({ "attempts": row.attempts }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a failed attempt under the claim's lease: retry at `retry_at`, or dead-letter
    /// when it is `None`. `false` when the lease was lost, as for [`Self::mark_delivered`].
    pub async fn mark_failed(
        &self,
        row: &DeliveryRow,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        match retry_at {
            Some(at) => {
                let updated = sqlx::query(
                    "UPDATE emails SET next_attempt_at = $2, lease_until = NULL, last_error = $3 \
                     WHERE id = $1 AND state = 'PENDING' AND lease_until = $4",
                )
                .bind(row.id)
                .bind(at)
                .bind(error)
                .bind(row.lease_until)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 0 {
                    return Ok(false);
                }
            }
            None => {
                let updated = sqlx::query(
                    "UPDATE emails SET state = 'DEAD_LETTER', lease_until = NULL, last_error = $2, \
                         params = $3 \
                     WHERE id = $1 AND state = 'PENDING' AND lease_until = $4",
                )
                .bind(row.id)
                .bind(error)
                .bind(Json(crate::domain::scrub(&row.params)))
                .bind(row.lease_until)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 0 {
                    return Ok(false);
                }
                audit::record(
                    &mut tx,
                    now,
                    &Actor::system("notifications-worker"),
                    Event {
                        changes: cqrs_runtime::audit::Changes::new(),
                        action: "DEAD_LETTER_EMAIL",
                        target_type: "email",
                        target_id: &row.id.to_string(),
                        outcome: "failure",
                        details: serde_json::json!({ "attempts": row.attempts, "error": error }),
                    },
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn insert_notifications(
        &self,
        notification: &NewNotification,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut rows = Vec::with_capacity(notification.account_ids.len());
        for account_id in &notification.account_ids {
            let inserted: Option<NotificationRow> = sqlx::query_as(
                "INSERT INTO notifications \
                 (id, account_id, kind, title, body, idempotency_key, created_at, subject_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (idempotency_key, account_id) WHERE idempotency_key IS NOT NULL DO NOTHING \
                 RETURNING id, account_id, kind, title, body, subject_id, created_at, read_at",
            )
            .bind(Uuid::now_v7())
            .bind(account_id)
            .bind(&notification.kind)
            .bind(&notification.title)
            .bind(&notification.body)
            .bind(&notification.idempotency_key)
            .bind(now)
            .bind(&notification.subject_id)
            .fetch_optional(&mut *tx)
            .await?;
            let row = match inserted {
                Some(row) => {
                    audit::record(
            &mut tx,
            now,
            actor,
            Event {
                changes: cqrs_runtime::audit::Changes::new(),
                action: "NOTIFY",
                target_type: "notification",
                target_id: &row.id.to_string(),
                outcome: "success",
                details: serde_json::json!({ "account_id": account_id, "kind": row.kind }),
            },
        )
                    .await?;
                    row
                }
                None => {
                    sqlx::query_as(
                        "SELECT id, account_id, kind, title, body, subject_id, created_at, \
                         read_at FROM notifications WHERE idempotency_key = $1 AND account_id = $2",
                    )
                    .bind(&notification.idempotency_key)
                    .bind(account_id)
                    .fetch_one(&mut *tx)
                    .await?
                }
            };
            rows.push(row);
        }
        tx.commit().await?;
        Ok(rows)
    }

    pub async fn list_notifications(
        &self,
        account_id: Uuid,
        unread_only: bool,
        page_size: i64,
        after: Option<&PageToken>,
    ) -> Result<(Page<NotificationRow>, i64), StoreError> {
        let rows: Vec<NotificationRow> = sqlx::query_as(
            "SELECT id, account_id, kind, title, body, subject_id, created_at, read_at \
             FROM notifications \
             WHERE account_id = $1 AND (NOT $2 OR read_at IS NULL) \
               AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4)) \
             ORDER BY created_at DESC, id DESC LIMIT $5",
        )
        .bind(account_id)
        .bind(unread_only)
        .bind(after.map(|t| t.time))
        .bind(after.map(|t| t.id))
        .bind(page_size + 1)
        .fetch_all(&self.pool)
        .await?;
        let (unread,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM notifications WHERE account_id = $1 AND read_at IS NULL",
        )
        .bind(account_id)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            paginate(rows, page_size, |r| PageToken {
                time: r.created_at,
                id: r.id,
            }),
            unread,
        ))
    }

    /// Marks the account's own notification read. Someone else's notification is
    /// `NotFound`, exactly as a missing one, so ids cannot be probed.
    pub async fn mark_read(
        &self,
        account_id: Uuid,
        id: Uuid,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<NotificationRow, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row: NotificationRow = sqlx::query_as(
            "UPDATE notifications SET read_at = COALESCE(read_at, $3) \
             WHERE id = $1 AND account_id = $2 \
             RETURNING id, account_id, kind, title, body, subject_id, created_at, read_at",
        )
        .bind(id)
        .bind(account_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        audit::record(
            &mut tx,
            now,
            actor,
            Event {
                changes: cqrs_runtime::audit::Changes::new(),
                action: "MARK_NOTIFICATION_READ",
                target_type: "notification",
                target_id: &id.to_string(),
                outcome: "success",
                details: serde_json::json!({}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn preferences(&self, account_id: Uuid) -> Result<PreferencesRow, StoreError> {
        let mut conn = self.pool.acquire().await?;
        preferences_in(&mut conn, account_id).await
    }

    pub async fn update_preferences(
        &self,
        account_id: Uuid,
        email_enabled: bool,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<PreferencesRow, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row: PreferencesRow = sqlx::query_as(
            "INSERT INTO preferences (account_id, email_enabled, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (account_id) DO UPDATE SET email_enabled = $2, updated_at = $3 \
             RETURNING account_id, email_enabled, updated_at",
        )
        .bind(account_id)
        .bind(email_enabled)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        audit::record(
            &mut tx,
            now,
            actor,
            Event {
                changes: cqrs_runtime::audit::Changes::new(),
                action: "UPDATE_PREFERENCES",
                target_type: "account",
                target_id: &account_id.to_string(),
                outcome: "success",
                details: serde_json::json!({ "email_enabled": email_enabled }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Audit events, newest first (for tests and operations).
    pub async fn audit_actions(&self, target_id: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT action FROM audit_events WHERE target_id = $1 ORDER BY occurred_at, id",
        )
        .bind(target_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(action,)| action).collect())
    }
}

async fn preferences_in(
    conn: &mut sqlx::PgConnection,
    account_id: Uuid,
) -> Result<PreferencesRow, StoreError> {
    let row: Option<PreferencesRow> = sqlx::query_as(
        "SELECT account_id, email_enabled, updated_at FROM preferences WHERE account_id = $1",
    )
    .bind(account_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.unwrap_or(PreferencesRow {
        account_id,
        email_enabled: true,
        updated_at: None,
    }))
}
