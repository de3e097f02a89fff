//! The audit trail every service keeps in its own `audit_events` table (same columns in each
//! service's migrations): who did what to which target, when, with what outcome and under
//! which request id. Rows are written inside the transaction of the change they record, so
//! a change and its audit event commit or roll back together; a trigger makes the table
//! append-only. Never put a password, token or hash in `details`.

use chrono::{DateTime, Utc};
use cqrs_auth::Principal;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::errors::FieldViolations;
use crate::paging::{Page, PageToken, paginate};

/// Who did something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// `user`, `service`, `anonymous` or `system`.
    pub kind: &'static str,
    pub id: String,
    pub request_id: Option<String>,
}

impl Actor {
    /// The authenticated caller of an RPC, with the request id the server stack assigned.
    pub fn from_request<T>(request: &tonic::Request<T>, principal: &Principal) -> Self {
        let request_id = crate::server::request_id(request).map(str::to_owned);
        match principal {
            Principal::User { account_id, .. } => Actor {
                kind: "user",
                id: account_id.to_string(),
                request_id,
            },
            Principal::Service { client_id } => Actor {
                kind: "service",
                id: client_id.clone(),
                request_id,
            },
        }
    }

    /// A caller of a public RPC (sign-in, registration): nobody is known yet.
    pub fn anonymous<T>(request: &tonic::Request<T>) -> Self {
        let request_id = crate::server::request_id(request).map(str::to_owned);
        Actor {
            kind: "anonymous",
            id: String::new(),
            request_id,
        }
    }

    /// Work the service does on its own (delivery workers, bootstrap).
    pub fn system(id: &str) -> Self {
        Actor {
            kind: "system",
            id: id.to_owned(),
            request_id: None,
        }
    }
}

/// One event to record.
#[derive(Clone, Debug)]
pub struct Event<'a> {
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    /// `success`, `failure` or `denied`.
    pub outcome: &'a str,
    pub details: serde_json::Value,
}

/// Appends an event. Call it with the transaction that makes the change.
pub async fn record(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    actor: &Actor,
    event: Event<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events (id, occurred_at, actor_kind, actor_id, action, target_type, \
             target_id, outcome, request_id, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(Uuid::now_v7())
    .bind(now)
    .bind(actor.kind)
    .bind(&actor.id)
    .bind(event.action)
    .bind(event.target_type)
    .bind(event.target_id)
    .bind(event.outcome)
    .bind(&actor.request_id)
    .bind(event.details)
    .execute(conn)
    .await?;
    Ok(())
}

/// A stored event.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AuditRow {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor_id: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub outcome: String,
    pub request_id: Option<String>,
    pub details: serde_json::Value,
}

/// ListAuditEvents filters; `None` matches everything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub actor_id: Option<String>,
    pub target_id: Option<String>,
    pub action: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// ListAuditEvents page sizes, the same in every service's contract: 0 means 100, at most 500.
pub const DEFAULT_PAGE_SIZE: i32 = 100;
pub const MAX_PAGE_SIZE: i32 = 500;
/// Longest filter value looked at.
const MAX_FILTER_LEN: usize = 128;

impl Filter {
    /// The filters of a ListAuditEvents request (every service's has the same fields), with
    /// problems recorded in `violations`. Empty strings and unset times match anything.
    pub fn from_request(
        violations: &mut FieldViolations,
        actor_id: &str,
        target_id: &str,
        action: &str,
        start_time: Option<&prost_types::Timestamp>,
        end_time: Option<&prost_types::Timestamp>,
    ) -> Filter {
        let mut text = |field: &str, value: &str| {
            violations.check(
                value.len() <= MAX_FILTER_LEN,
                field,
                "must be at most 128 characters",
            );
            (!value.is_empty()).then(|| value.to_owned())
        };
        let actor_id = text("actor_id", actor_id);
        let target_id = text("target_id", target_id);
        let action = text("action", action);
        let mut time = |field: &str, ts: Option<&prost_types::Timestamp>| {
            ts.and_then(|ts| {
                let t = u32::try_from(ts.nanos)
                    .ok()
                    .and_then(|nanos| DateTime::from_timestamp(ts.seconds, nanos));
                if t.is_none() {
                    violations.add(field, "must be a valid timestamp");
                }
                t
            })
        };
        let start = time("start_time", start_time);
        let end = time("end_time", end_time);
        Filter {
            actor_id,
            target_id,
            action,
            start,
            end,
        }
    }
}

/// Events matching `filter`, newest first, one page at a time.
pub async fn list(
    pool: &PgPool,
    filter: &Filter,
    page_size: i64,
    after: Option<&PageToken>,
) -> Result<Page<AuditRow>, sqlx::Error> {
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT id, occurred_at, actor_kind, actor_id, action, target_type, target_id, outcome, \
             request_id, details \
         FROM audit_events \
         WHERE ($1::text IS NULL OR actor_id = $1) \
           AND ($2::text IS NULL OR target_id = $2) \
           AND ($3::text IS NULL OR action = $3) \
           AND ($4::timestamptz IS NULL OR occurred_at >= $4) \
           AND ($5::timestamptz IS NULL OR occurred_at < $5) \
           AND ($6::timestamptz IS NULL OR (occurred_at, id) < ($6, $7)) \
         ORDER BY occurred_at DESC, id DESC LIMIT $8",
    )
    .bind(&filter.actor_id)
    .bind(&filter.target_id)
    .bind(&filter.action)
    .bind(filter.start)
    .bind(filter.end)
    .bind(after.map(|t| t.time))
    .bind(after.map(|t| t.id))
    .bind(page_size + 1)
    .fetch_all(pool)
    .await?;
    Ok(paginate(rows, page_size, |r| PageToken {
        time: r.occurred_at,
        id: r.id,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn filters_from_a_request() {
        let mut v = FieldViolations::new();
        let start = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        let f = Filter::from_request(&mut v, "", "t1", "GRANT_ROLE", Some(&start), None);
        assert!(v.is_empty());
        assert_eq!(f.actor_id, None);
        assert_eq!(f.target_id.as_deref(), Some("t1"));
        assert_eq!(f.action.as_deref(), Some("GRANT_ROLE"));
        assert_eq!(f.start.unwrap().timestamp(), 1_700_000_000);
        assert_eq!(f.end, None);

        let bad = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        Filter::from_request(&mut v, &"x".repeat(129), "", "", None, Some(&bad));
        assert_eq!(
            v.iter().map(|(f, _)| f).collect::<Vec<_>>(),
            ["actor_id", "end_time"]
        );
    }
}
