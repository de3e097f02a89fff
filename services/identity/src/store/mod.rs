//! Storage: Postgres for accounts, links, password history, the audit trail and the outbox;
//! Redis for lock-out counters and sessions.
//!
//! Changes run in a transaction the caller opens with [`Store::begin`]: the api puts the row
//! change, its audit event, its outbox mail and (for changes that end sessions) the Redis
//! update in one unit, so the change and its consequences commit together.

pub mod accounts;
pub mod audit_writer;
pub mod lockout;
pub mod second_factors;
pub mod sessions;

use std::sync::Arc;

use cqrs_outbox::OutboxMessage;
use cqrs_runtime::audit::{self, Actor, Event};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

pub use accounts::{AccountFilter, AccountRow, LinkRow, NewAccount, NewLink};
pub use audit_writer::AuditWriter;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// An open transaction on the identity database.
pub type Tx = Transaction<'static, Postgres>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("the e-mail address already has an account in this realm")]
    EmailTaken,
    #[error("the request id was already used for a different request")]
    RequestIdReused,
    #[error("no free User ID found")]
    UserIdsExhausted,
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// A batch of audit events could not be written; its events share the error.
    #[error("database unavailable")]
    SharedUnavailable(#[source] Arc<sqlx::Error>),
    #[error("database error")]
    SharedDatabase(#[source] Arc<sqlx::Error>),
    #[error("the audit writer has stopped")]
    AuditWriterStopped,
}

impl StoreError {
    fn from_shared(err: Arc<sqlx::Error>) -> Self {
        if cqrs_runtime::errors::is_unavailable(&err) {
            StoreError::SharedUnavailable(err)
        } else {
            StoreError::SharedDatabase(err)
        }
    }
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

#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    audit: Arc<AuditWriter>,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Store {
            audit: Arc::new(AuditWriter::new(pool.clone())),
            pool,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the outbox table next to the service's own (run after the migrations).
    pub async fn ensure_outbox(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        cqrs_outbox::ensure_schema(&mut conn).await?;
        Ok(())
    }

    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Appends an audit event that goes with no other change, batched with others (see
    /// [`audit_writer`]); returns once it is committed.
    pub async fn record_alone(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        actor: &Actor,
        event: Event<'_>,
    ) -> Result<(), StoreError> {
        self.audit.record(now, actor, event).await
    }
}

/// Commits `tx`.
pub async fn commit(tx: Tx) -> Result<(), StoreError> {
    Ok(tx.commit().await?)
}

/// Appends an audit event on `conn` (the transaction of the change it records).
pub async fn record(
    conn: &mut PgConnection,
    now: chrono::DateTime<chrono::Utc>,
    actor: &Actor,
    event: Event<'_>,
) -> Result<(), StoreError> {
    Ok(audit::record(conn, now, actor, event).await?)
}

/// Queues a mail on `conn`, to be relayed to the notification service after commit.
pub async fn enqueue(conn: &mut PgConnection, message: &OutboxMessage) -> Result<(), StoreError> {
    cqrs_outbox::enqueue(conn, message).await?;
    Ok(())
}
