//! Postgres storage: organisations, grants, keyed-create answers, pending session ends and
//! the audit trail.
//!
//! Changes run in a transaction the api opens with [`Store::begin`], so a change and its audit
//! event (and, for revocations, its pending session ends) commit together.

pub mod cache;
pub mod grants;
pub mod organisations;
/// Keyed creates: the shared queries over this service's `request_keys` table.
pub use cqrs_runtime::idempotency as requests;
pub mod revocations;

use chrono::{DateTime, Utc};
use cqrs_runtime::audit::{self, Actor, Event};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

pub use cache::{AccountGrant, CacheSettings, DecisionCache, Grants, Organisation};
pub use grants::GrantRow;
pub use organisations::OrganisationRow;
pub use revocations::RevocationRow;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// An open transaction on the directory database.
pub type Tx = Transaction<'static, Postgres>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the ODS code is already taken")]
    OdsCodeTaken,
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
