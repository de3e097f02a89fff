//! Ends, in the identity service, the sessions whose active grant was revoked.
//!
//! A revocation commits in Postgres first, together with its audit event and one
//! `session_revocations` row per removed grant. The request then calls identity's
//! `EndSessions` at once (within the request's deadline) and deletes the row when identity
//! confirms. When identity cannot be reached the row stays and [`SessionEnder::run`] retries
//! it with exponential backoff until it succeeds: nothing accepted is lost, and sessions end
//! as soon as identity is back.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_auth::TokenSource;
use cqrs_peers::IdentityPeer;
use cqrs_rules::backoff::Backoff;
use cqrs_runtime::clock::Clock;
use cqrs_runtime::server::RequestDeadline;
use tonic::transport::Channel;

use crate::store::{RevocationRow, Store, StoreError, revocations};

/// Below this much time left in the caller's deadline the immediate attempt is skipped and the
/// row handed to the background task at once.
const MIN_IMMEDIATE_BUDGET: Duration = Duration::from_millis(20);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationConfig {
    /// Idle wait of the background task between looks for due rows.
    pub poll_interval: Duration,
    /// Wait after the first failed attempt; doubles per further failure.
    pub retry_base: Duration,
    /// Longest wait between attempts.
    pub retry_max: Duration,
    /// Longest a single EndSessions call (token included) may take.
    pub call_timeout: Duration,
    /// How long a claimed row is left alone by other workers.
    pub lease: Duration,
    /// Rows claimed per round.
    pub batch_size: i64,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            poll_interval: Duration::from_secs(1),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            call_timeout: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            batch_size: 50,
        }
    }
}

impl RevocationConfig {
    /// Wait before the next attempt after `failures` failed ones (1-based).
    pub fn backoff(&self, failures: u32) -> Duration {
        Backoff::new(self.retry_base, self.retry_max).delay(failures)
    }
}

/// Calls identity's `EndSessions` for pending revocations; cheap to clone.
#[derive(Clone)]
pub struct SessionEnder {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    identity: IdentityPeer,
    config: RevocationConfig,
    clock: Arc<dyn Clock>,
}

impl SessionEnder {
    /// Calls the identity service behind `channel` with service tokens from `tokens`.
    pub fn new(
        store: Store,
        channel: Channel,
        tokens: Arc<dyn TokenSource>,
        config: RevocationConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        SessionEnder {
            inner: Arc::new(Inner {
                store,
                // Failed rows are rescheduled durably, so a call makes one attempt.
                identity: IdentityPeer::new(channel, tokens, config.call_timeout).without_retries(),
                config,
                clock,
            }),
        }
    }

    /// When a freshly written row first becomes due for the background task: one lease
    /// ahead, leaving it to the request that wrote it.
    pub fn first_attempt_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + delta(self.inner.config.lease)
    }

    /// Tries every row now, side by side, within the caller's deadline; rows that fail are
    /// rescheduled for the background task. Never fails: the revocation is already committed.
    pub async fn end_now(&self, rows: Vec<RevocationRow>, deadline: Option<RequestDeadline>) {
        let budget = deadline.map_or(self.inner.config.call_timeout, |d| {
            d.remaining().min(self.inner.config.call_timeout)
        });
        if budget < MIN_IMMEDIATE_BUDGET {
            let now = self.inner.clock.now();
            for row in rows {
                self.reschedule(&row, now).await;
            }
            return;
        }
        futures::future::join_all(rows.iter().map(|row| self.attempt(row, deadline))).await;
    }

    /// One round of the background task: claims due rows and tries each. Returns how many
    /// were claimed.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let rows = revocations::claim_due(
            inner.store.pool(),
            now,
            now + delta(inner.config.lease),
            inner.config.batch_size,
        )
        .await?;
        let claimed = rows.len();
        futures::future::join_all(rows.iter().map(|row| self.attempt(row, None))).await;
        Ok(claimed)
    }

    /// Runs [`SessionEnder::run_once`] until `shutdown` completes, waiting `poll_interval`
    /// whenever nothing was due.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        loop {
            let idle = match self.run_once().await {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "session revocation round failed");
                    true
                }
            };
            if idle {
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(self.inner.config.poll_interval) => {}
                }
            } else if futures::poll!(&mut shutdown).is_ready() {
                return;
            }
        }
    }

    /// One EndSessions call for `row`, within the caller's deadline (or the call timeout);
    /// deletes the row on success, reschedules it otherwise.
    async fn attempt(&self, row: &RevocationRow, deadline: Option<RequestDeadline>) -> bool {
        let pool = self.inner.store.pool();
        let ended = self
            .inner
            .identity
            .end_sessions(
                row.account_id,
                row.organisation_id,
                row.role(),
                &row.reason,
                deadline,
            )
            .await;
        match ended {
            Ok(ended) => {
                tracing::info!(
                    account_id = %row.account_id,
                    organisation_id = %row.organisation_id,
                    role = %row.role,
                    ended,
                    "sessions of a revoked grant ended"
                );
                if let Err(e) = revocations::done(pool, row.id).await {
                    tracing::warn!(revocation_id = %row.id, error = %e, "cannot clear a done revocation");
                }
                true
            }
            Err(e) => {
                tracing::warn!(revocation_id = %row.id, attempts = row.attempts + 1, error = %e, "ending sessions failed; will retry");
                self.reschedule_after_failure(row).await;
                false
            }
        }
    }

    async fn reschedule_after_failure(&self, row: &RevocationRow) {
        let failures = u32::try_from(row.attempts.saturating_add(1)).unwrap_or(u32::MAX);
        let at = self.inner.clock.now() + delta(self.inner.config.backoff(failures));
        if let Err(e) = revocations::retry_at(self.inner.store.pool(), row.id, at).await {
            // The lease runs out and the background task picks the row up anyway.
            tracing::warn!(revocation_id = %row.id, error = %e, "cannot reschedule a revocation");
        }
    }

    async fn reschedule(&self, row: &RevocationRow, at: DateTime<Utc>) {
        if let Err(e) = revocations::due_at(self.inner.store.pool(), row.id, at).await {
            tracing::warn!(revocation_id = %row.id, error = %e, "cannot reschedule a revocation");
        }
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = RevocationConfig {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            ..RevocationConfig::default()
        };
        assert_eq!(c.backoff(1), Duration::from_millis(100));
        assert_eq!(c.backoff(2), Duration::from_millis(200));
        assert_eq!(c.backoff(4), Duration::from_millis(800));
        assert_eq!(c.backoff(5), Duration::from_secs(1));
        assert_eq!(c.backoff(u32::MAX), Duration::from_secs(1));
    }
}
