//! Postgres storage: the three workflows' rows, keyed-create answers, the audit trail and the
//! outbox (created by `cqrs_outbox::ensure_schema`).
//!
//! Changes run in a transaction the api opens with [`Store::begin`]: a transition, its audit
//! event and its mail commit together. Transitions lock their row (`SELECT … FOR UPDATE`), so
//! of two racing transitions the second sees the first's result and is refused by the state
//! machine.

pub mod access_requests;
pub mod invitations;
pub mod registrations;
/// Keyed creates: the shared queries over this service's `request_keys` table.
pub use cqrs_runtime::idempotency as requests;

use chrono::{DateTime, Utc};
use cqrs_outbox::OutboxMessage;
use cqrs_runtime::audit::{self, Actor, Event};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

pub use access_requests::AccessRequestRow;
pub use invitations::InvitationRow;
pub use registrations::RegistrationRow;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// An open transaction on the access database.
pub type Tx = Transaction<'static, Postgres>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the row; the name of the index says which rule.
    #[error("conflicts with an existing row ({0})")]
    Conflict(String),
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err
            && db.is_unique_violation()
        {
            return StoreError::Conflict(db.constraint().unwrap_or_default().to_owned());
        }
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
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Store { pool }
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
}

/// Commits `tx`.
pub async fn commit(tx: Tx) -> Result<(), StoreError> {
    Ok(tx.commit().await?)
}

/// Appends an audit event on `conn` (the transaction of the change it records).
pub async fn record(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    actor: &Actor,
    event: Event<'_>,
) -> Result<(), StoreError> {
    Ok(audit::record(conn, now, actor, event).await?)
}

/// Queues a notification on `conn`, relayed to the notification service after commit.
pub async fn enqueue(conn: &mut PgConnection, message: &OutboxMessage) -> Result<(), StoreError> {
    cqrs_outbox::enqueue(conn, message).await?;
    Ok(())
}

/// What a List RPC over a workflow table asks for.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Rows at this organisation or below it; `None`: everywhere.
    pub root: Option<uuid::Uuid>,
    /// Rows for these roles only (storage names); `None`: every role.
    pub roles: Option<Vec<String>>,
    /// Rows in this state only (storage name); `None`: every state.
    pub state: Option<&'static str>,
}
