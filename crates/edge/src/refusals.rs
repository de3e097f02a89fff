//! Refused changes are audited too (outcome `denied`, with the refusal's reason), in a
//! transaction of their own: an administrator probing beyond their scope leaves a trace.
//! Recording is best effort — the refusal stands whether or not its event could be written.

use chrono::{DateTime, Utc};
use cqrs_auth::Principal;
use cqrs_runtime::audit::{self, Actor, Event};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::{ApiError, ServiceReason};

/// Longest id echoed into a denied-attempt audit event (the id is the caller's input).
const MAX_AUDITED_ID: usize = 64;

/// What a refused change would have been, for its audit event.
#[derive(Clone, Debug)]
pub struct Denied {
    actor: Actor,
    action: &'static str,
    target_type: &'static str,
    target_id: String,
}

impl Denied {
    /// The change `request` asks for; `None` for a caller the auth layer did not identify.
    pub fn of<T>(
        request: &Request<T>,
        action: &'static str,
        target_type: &'static str,
        target_id: &str,
    ) -> Option<Denied> {
        let principal = request.extensions().get::<Principal>()?;
        Some(Denied {
            actor: Actor::from_request(request, principal),
            action,
            target_type,
            target_id: target_id.chars().take(MAX_AUDITED_ID).collect(),
        })
    }

    /// Appends the refusal to the trail in `pool` (best effort).
    pub async fn record(&self, pool: &PgPool, now: DateTime<Utc>, reason: &'static str) {
        let event = Event {
            action: self.action,
            target_type: self.target_type,
            target_id: &self.target_id,
            outcome: "denied",
            details: serde_json::json!({ "reason": reason }),
            changes: audit::Changes::new(),
        };
        let result = async {
            let mut tx = pool.begin().await?;
            audit::record(&mut tx, now, &self.actor, event).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, action = self.action, "cannot audit a refused change");
        }
    }
}

/// Answers a change: its result, after recording a refusal for lack of permission in the
/// service's trail (`pool`).
pub async fn audited<T, R: ServiceReason>(
    pool: &PgPool,
    now: DateTime<Utc>,
    denied: Option<Denied>,
    result: Result<T, ApiError<R>>,
) -> Result<Response<T>, Status> {
    match result {
        Ok(answer) => Ok(Response::new(answer)),
        Err(ApiError::PermissionDenied(reason)) => {
            if let Some(denied) = denied {
                denied.record(pool, now, reason).await;
            }
            Err(ApiError::<R>::PermissionDenied(reason).into())
        }
        Err(e) => Err(e.into()),
    }
}
