//! The audit trail every service keeps in its own `audit_events` table (same columns in each
//! service's migrations): who did what to which target, when, in which organisation and role,
//! from which address, with what outcome, under which request id, and which fields changed
//! from what to what. Rows are written inside the transaction of the change they record, so a
//! change and its audit event commit or roll back together.
//!
//! Each event is numbered and linked into the service's hash chain as it is appended
//! ([`append`]; the rules are in `cqrs_audit_chain`), under a transaction-scoped advisory lock:
//! events are numbered in commit order and a rolled-back transaction leaves no gap. Triggers
//! keep the table append-only; [`checkpoints`] signs the chain's head from time to time and
//! keeps the other services' checkpoints; [`retention`] purges what is older than configured.
//! Never put a password, token, code or hash in `details` or `changes`.

pub mod checkpoints;
pub mod retention;

use chrono::{DateTime, Utc};
use cqrs_audit_chain::{GENESIS, Hash, Record, hash_from, truncate_to_micros};
use cqrs_auth::Principal;
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool, Row as _};
use uuid::Uuid;

use crate::errors::FieldViolations;
use crate::paging::{Page, PageToken, paginate};

/// Where a call came from, as the gateway saw it: believed only from a trusted peer (see
/// `CQRS_TRUSTED_GATEWAYS`), set on the request by the server stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Client {
    pub address: String,
    pub user_agent: String,
}

/// Who did something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// `user`, `service`, `anonymous` or `system`.
    pub kind: &'static str,
    pub id: String,
    pub request_id: Option<String>,
    /// The person's display name at the time, where the service knows it.
    pub name: String,
    /// The organisation and role a person acted in (their active grant), if any.
    pub organisation_id: String,
    pub role: String,
    pub client: Client,
}

impl Actor {
    fn new<T>(request: Option<&tonic::Request<T>>, kind: &'static str, id: String) -> Self {
        Actor {
            kind,
            id,
            request_id: request
                .and_then(crate::server::request_id)
                .map(str::to_owned),
            name: String::new(),
            organisation_id: String::new(),
            role: String::new(),
            client: request
                .and_then(|r| r.extensions().get::<Client>())
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// The authenticated caller of an RPC, with the request id the server stack assigned.
    pub fn from_request<T>(request: &tonic::Request<T>, principal: &Principal) -> Self {
        match principal {
            Principal::User {
                account_id,
                active,
                proof,
                ..
            } => {
                let mut actor = Actor::new(Some(request), "user", account_id.to_string());
                actor.name.clone_from(&proof.display_name);
                if let Some(grant) = active {
                    actor.organisation_id = grant.organisation_id.to_string();
                    actor.role = grant.role.as_str().to_owned();
                }
                actor
            }
            Principal::Service { client_id } => {
                Actor::new(Some(request), "service", client_id.clone())
            }
        }
    }

    /// A caller of a public RPC (sign-in, registration): nobody is known yet.
    pub fn anonymous<T>(request: &tonic::Request<T>) -> Self {
        Actor::new(Some(request), "anonymous", String::new())
    }

    /// Work the service does on its own (delivery workers, bootstrap, retention).
    pub fn system(id: &str) -> Self {
        Actor::new::<()>(None, "system", id.to_owned())
    }
}

/// The fields an action changed: `{ field: { "before": …, "after": … } }`. `null` stands
/// for "did not exist" (a created record's before, a removed one's after).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes(Map<String, Value>);

impl Changes {
    pub fn new() -> Self {
        Changes::default()
    }

    /// One field, left out when it did not change.
    pub fn field(mut self, name: &str, before: impl Into<Value>, after: impl Into<Value>) -> Self {
        let (before, after) = (before.into(), after.into());
        if before != after {
            self.0.insert(
                name.to_owned(),
                serde_json::json!({ "before": before, "after": after }),
            );
        }
        self
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
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
    /// What the action changed; empty for an action that changed nothing (a refusal, a
    /// sign-in).
    pub changes: Changes,
}

/// An event not yet numbered, owned so it can wait in a batch.
#[derive(Clone, Debug)]
pub struct NewEvent {
    id: Uuid,
    occurred_at: DateTime<Utc>,
    actor: Actor,
    action: String,
    target_type: String,
    target_id: String,
    outcome: String,
    details: Value,
    changes: Value,
}

impl NewEvent {
    pub fn new(now: DateTime<Utc>, actor: &Actor, event: Event<'_>) -> Self {
        NewEvent {
            // Made now, not at insert time, so ids keep the order events happened in.
            id: Uuid::now_v7(),
            occurred_at: truncate_to_micros(now),
            actor: actor.clone(),
            action: event.action.to_owned(),
            target_type: event.target_type.to_owned(),
            target_id: event.target_id.to_owned(),
            outcome: event.outcome.to_owned(),
            details: match event.details {
                Value::Null => Value::Object(Map::new()),
                details => details,
            },
            changes: event.changes.into_value(),
        }
    }

    /// Bytes of text this event adds to an INSERT (for callers that bound statement size).
    pub fn text_len(&self) -> usize {
        self.actor.id.len()
            + self.actor.name.len()
            + self.actor.client.user_agent.len()
            + self.action.len()
            + self.target_id.len()
            + self.details.to_string().len()
            + self.changes.to_string().len()
    }

    fn numbered(self, sequence: i64) -> Record {
        let a = self.actor;
        Record {
            sequence,
            id: self.id.to_string(),
            occurred_at: self.occurred_at,
            actor_kind: a.kind.to_owned(),
            actor_id: a.id,
            actor_name: a.name,
            actor_organisation_id: a.organisation_id,
            actor_role: a.role,
            action: self.action,
            target_type: self.target_type,
            target_id: self.target_id,
            outcome: self.outcome,
            request_id: a.request_id.unwrap_or_default(),
            client_address: a.client.address,
            user_agent: a.client.user_agent,
            details: self.details,
            changes: self.changes,
        }
    }
}

/// Appends an event. Call it with the transaction that makes the change.
pub async fn record(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    actor: &Actor,
    event: Event<'_>,
) -> Result<(), sqlx::Error> {
    append(conn, vec![NewEvent::new(now, actor, event)]).await
}

/// Takes the chain's lock for the rest of the transaction on `conn`, and answers the number
/// of the last event and the last hash (0 and the genesis hash for an empty chain). Events
/// without a hash (from before the chain, or written by the previous release during an
/// upgrade) are linked around.
pub(crate) async fn lock_head(conn: &mut PgConnection) -> Result<(i64, Hash), sqlx::Error> {
    let (head, hash, _) = chain_head(conn).await?;
    Ok((head, hash))
}

/// [`lock_head`], and the row changes this transaction made so far (noted by the
/// `audit_capture` triggers), taken off the pending list; one round trip
/// (`audit_chain_head()`).
async fn chain_head(
    conn: &mut PgConnection,
) -> Result<(i64, Hash, Map<String, Value>), sqlx::Error> {
    let (head, hash, pending): (i64, Option<Vec<u8>>, Value) =
        sqlx::query_as("SELECT head, head_hash, pending FROM audit_chain_head()")
            .fetch_one(&mut *conn)
            .await?;
    let rows: Vec<(String, String, Option<Value>, Option<Value>)> = match pending {
        Value::Array(rows) => rows
            .into_iter()
            .map(|mut r| {
                let text = |v: &mut Value, key: &str| match v[key].take() {
                    Value::String(s) => s,
                    _ => String::new(),
                };
                let json = |v: &mut Value, key: &str| Some(v[key].take()).filter(|v| !v.is_null());
                (
                    text(&mut r, "table_name"),
                    text(&mut r, "row_id"),
                    json(&mut r, "old"),
                    json(&mut r, "new"),
                )
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok((
        head,
        hash.as_deref().and_then(hash_from).unwrap_or(GENESIS),
        diff_rows(&rows),
    ))
}

/// Numbers, links and inserts `events` in order, on the transaction of the change they
/// record (or a transaction of their own).
pub async fn append(conn: &mut PgConnection, events: Vec<NewEvent>) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let (mut sequence, mut previous, captured) = chain_head(conn).await?;
    let mut events = events;
    if let (Some(first), false) = (events.first_mut(), captured.is_empty()) {
        let mut changes = captured;
        if let Value::Object(explicit) = std::mem::take(&mut first.changes) {
            changes.extend(explicit);
        }
        first.changes = Value::Object(changes);
    }
    let mut rows = Columns::default();
    for event in events {
        sequence += 1;
        let record = event.numbered(sequence);
        previous = record.hash(&previous);
        rows.push(record, previous);
    }
    rows.insert(conn).await
}

/// The end of the chain as a writer left it: the last event's number and hash.
pub type Head = (i64, Hash);

/// Appends `events` after `head` in one round trip, as a transaction of its own (call it on a
/// connection outside a transaction), provided the chain still ends at `head`: answers
/// `Ok(the new head)`, or `Err(the head found)` with nothing appended, to call again from.
/// For a writer of events that go with no change and that is, most of the time, the only one
/// appending (identity's stand-alone events): it saves the three round trips [`append`]
/// takes for the chain's lock and the commit. Without a `head` (the writer's first call)
/// nothing is appended and the real head is answered.
pub async fn append_after(
    conn: &mut PgConnection,
    head: Option<Head>,
    events: Vec<NewEvent>,
) -> Result<Result<Head, Head>, sqlx::Error> {
    // No event is numbered -1.
    let (expected, mut previous) = head.unwrap_or((-1, GENESIS));
    let mut rows = Columns::default();
    let mut sequence = expected;
    for event in events {
        sequence += 1;
        let record = event.numbered(sequence);
        previous = record.hash(&previous);
        rows.push(record, previous);
    }
    let row = rows
        .bind(sqlx::query(
            "SELECT appended, head, head_hash FROM audit_append_after($19, $1, $2, $3, $4, $5, \
                 $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        ))
        .bind(expected)
        // `fetch_one` reads on to the end, so a commit that fails is an error here.
        .fetch_one(conn)
        .await?;
    if row.try_get("appended")? {
        return Ok(Ok((sequence, previous)));
    }
    let found: Option<Vec<u8>> = row.try_get("head_hash")?;
    Ok(Err((
        row.try_get("head")?,
        found.as_deref().and_then(hash_from).unwrap_or(GENESIS),
    )))
}

/// Field-level differences of captured rows (table, row id, old, new), in order, as
/// `{ "table.column": { before, after } }`, or `table[row id].column` when the transaction
/// changed several rows of one table. A field changed twice keeps its first `before` and last
/// `after`, and is left out if those are equal.
fn diff_rows(rows: &[(String, String, Option<Value>, Option<Value>)]) -> Map<String, Value> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut ids: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (table, id, _, _) in rows {
        ids.entry(table).or_default().insert(id);
    }
    let mut fields: Vec<(String, Value, Value)> = Vec::new();
    for (table, id, old, new) in rows {
        let prefix = if ids.get(table.as_str()).is_some_and(|s| s.len() > 1) {
            format!("{table}[{id}]")
        } else {
            table.clone()
        };
        let empty = Map::new();
        let object = |v: &Option<Value>| match v {
            Some(Value::Object(m)) => m.clone(),
            _ => empty.clone(),
        };
        let (before, after) = (object(old), object(new));
        let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        for name in names {
            let b = if old.is_some() {
                before.get(name).cloned().unwrap_or(Value::Null)
            } else {
                Value::Null
            };
            let a = if new.is_some() {
                after.get(name).cloned().unwrap_or(Value::Null)
            } else {
                Value::Null
            };
            if b == a {
                continue;
            }
            let key = format!("{prefix}.{name}");
            match fields.iter_mut().find(|(k, _, _)| *k == key) {
                Some(existing) => existing.2 = a,
                None => fields.push((key, b, a)),
            }
        }
    }
    fields
        .into_iter()
        .filter(|(_, b, a)| b != a)
        .map(|(key, before, after)| (key, serde_json::json!({ "before": before, "after": after })))
        .collect()
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The inserted rows, column by column, for one `UNNEST` insert.
#[derive(Default)]
struct Columns {
    sequence: Vec<i64>,
    hash: Vec<Vec<u8>>,
    id: Vec<Uuid>,
    occurred_at: Vec<DateTime<Utc>>,
    text: [Vec<String>; 12],
    details: Vec<Value>,
    changes: Vec<Value>,
}

impl Columns {
    fn push(&mut self, r: Record, hash: Hash) {
        self.sequence.push(r.sequence);
        self.hash.push(hash.to_vec());
        // Ids are made by [`NewEvent::new`], so this parses.
        self.id.push(r.id.parse().unwrap_or_default());
        self.occurred_at.push(r.occurred_at);
        let text = [
            r.actor_kind,
            r.actor_id,
            r.actor_name,
            r.actor_organisation_id,
            r.actor_role,
            r.action,
            r.target_type,
            r.target_id,
            r.outcome,
            r.request_id,
            r.client_address,
            r.user_agent,
        ];
        for (column, value) in self.text.iter_mut().zip(text) {
            column.push(value);
        }
        self.details.push(r.details);
        self.changes.push(r.changes);
    }

    async fn insert(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        self.bind(sqlx::query(
            "INSERT INTO audit_events (sequence, hash, id, occurred_at, actor_kind, actor_id, \
                 actor_name, actor_organisation_id, actor_role, action, target_type, target_id, \
                 outcome, request_id, client_address, user_agent, details, changes) \
             SELECT s, h, i, t, k, a, n, o, r, ac, tt, ti, oc, NULLIF(rq, ''), ca, ua, d, c \
             FROM UNNEST($1::bigint[], $2::bytea[], $3::uuid[], $4::timestamptz[], $5::text[], \
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
                 $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::jsonb[], \
                 $18::jsonb[]) AS u(s, h, i, t, k, a, n, o, r, ac, tt, ti, oc, rq, ca, ua, d, c)",
        ))
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Binds the columns, in order, as `$1` to `$18` of `query`.
    fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        let [
            kind,
            actor_id,
            name,
            org,
            role,
            action,
            target_type,
            target_id,
            outcome,
            request_id,
            address,
            agent,
        ] = self.text;
        query
            .bind(self.sequence)
            .bind(self.hash)
            .bind(self.id)
            .bind(self.occurred_at)
            .bind(kind)
            .bind(actor_id)
            .bind(name)
            .bind(org)
            .bind(role)
            .bind(action)
            .bind(target_type)
            .bind(target_id)
            .bind(outcome)
            .bind(request_id)
            .bind(address)
            .bind(agent)
            .bind(self.details)
            .bind(self.changes)
    }
}

/// A stored event.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AuditRow {
    pub sequence: i64,
    pub hash: Option<Vec<u8>>,
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor_id: String,
    pub actor_name: String,
    pub actor_organisation_id: String,
    pub actor_role: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub outcome: String,
    pub request_id: Option<String>,
    pub client_address: String,
    pub user_agent: String,
    pub details: serde_json::Value,
    pub changes: serde_json::Value,
}

/// The columns of [`AuditRow`], for SELECTs.
const ROW_COLUMNS: &str = "sequence, hash, id, occurred_at, actor_kind, actor_id, actor_name, \
     actor_organisation_id, actor_role, action, target_type, target_id, outcome, request_id, \
     client_address, user_agent, details, changes";

impl AuditRow {
    /// The event as the chain hashes it.
    pub fn record(&self) -> Record {
        Record {
            sequence: self.sequence,
            id: self.id.to_string(),
            occurred_at: self.occurred_at,
            actor_kind: self.actor_kind.clone(),
            actor_id: self.actor_id.clone(),
            actor_name: self.actor_name.clone(),
            actor_organisation_id: self.actor_organisation_id.clone(),
            actor_role: self.actor_role.clone(),
            action: self.action.clone(),
            target_type: self.target_type.clone(),
            target_id: self.target_id.clone(),
            outcome: self.outcome.clone(),
            request_id: self.request_id.clone().unwrap_or_default(),
            client_address: self.client_address.clone(),
            user_agent: self.user_agent.clone(),
            details: self.details.clone(),
            changes: self.changes.clone(),
        }
    }
}

/// Events from `start` in sequence order, at most `limit`.
pub async fn chain_page(
    pool: &PgPool,
    start: i64,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ROW_COLUMNS} FROM audit_events WHERE sequence >= $1 ORDER BY sequence LIMIT $2"
    )))
    .bind(start)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The first and last stored event's numbers and the last one's hash (zeros when empty).
pub async fn chain_bounds(pool: &PgPool) -> Result<(i64, i64, Hash), sqlx::Error> {
    let (first, last): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT min(sequence), max(sequence) FROM audit_events")
            .fetch_one(pool)
            .await?;
    let hash: Option<Option<Vec<u8>>> =
        sqlx::query_scalar("SELECT hash FROM audit_events WHERE sequence = $1")
            .bind(last)
            .fetch_optional(pool)
            .await?;
    Ok((
        first.unwrap_or(0),
        last.unwrap_or(0),
        hash.flatten()
            .as_deref()
            .and_then(hash_from)
            .unwrap_or(GENESIS),
    ))
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
    let rows: Vec<AuditRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ROW_COLUMNS} FROM audit_events \
         WHERE ($1::text IS NULL OR actor_id = $1) \
           AND ($2::text IS NULL OR target_id = $2 OR details->>'organisation_id' = $2) \
           AND ($3::text IS NULL OR action = $3) \
           AND ($4::timestamptz IS NULL OR occurred_at >= $4) \
           AND ($5::timestamptz IS NULL OR occurred_at < $5) \
           AND ($6::timestamptz IS NULL OR (occurred_at, id) < ($6, $7)) \
         ORDER BY occurred_at DESC, id DESC LIMIT $8"
    )))
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
    fn captured_rows_become_field_changes() {
        use serde_json::json;
        let rows = vec![
            (
                "accounts".to_owned(),
                "a1".to_owned(),
                Some(json!({ "id": "a1", "state": "ACTIVE", "email": "x@nhs.net" })),
                Some(json!({ "id": "a1", "state": "DISABLED", "email": "x@nhs.net" })),
            ),
            (
                "links".to_owned(),
                "l1".to_owned(),
                None,
                Some(json!({ "id": "l1", "purpose": "RESET" })),
            ),
            (
                "links".to_owned(),
                "l2".to_owned(),
                Some(json!({ "id": "l2", "used_at": null })),
                Some(json!({ "id": "l2", "used_at": "t" })),
            ),
            // Changed back within the transaction: nothing to tell.
            (
                "accounts".to_owned(),
                "a1".to_owned(),
                Some(json!({ "id": "a1", "state": "DISABLED" })),
                Some(json!({ "id": "a1", "state": "ACTIVE" })),
            ),
        ];
        let changes = diff_rows(&rows);
        assert_eq!(
            Value::Object(changes),
            json!({
                "links[l1].id": { "before": null, "after": "l1" },
                "links[l1].purpose": { "before": null, "after": "RESET" },
                "links[l2].used_at": { "before": null, "after": "t" },
            })
        );
        let only = diff_rows(&rows[..1]);
        assert_eq!(
            only["accounts.state"],
            json!({ "before": "ACTIVE", "after": "DISABLED" })
        );
        assert_eq!(only.len(), 1);
    }

    #[test]
    fn changes_skip_what_did_not_change() {
        let c = Changes::new().field("state", "ACTIVE", "DISABLED").field(
            "email",
            "a@nhs.net",
            "a@nhs.net",
        );
        assert_eq!(
            c.into_value(),
            serde_json::json!({ "state": { "before": "ACTIVE", "after": "DISABLED" } })
        );
        let created = Changes::new().field("role", Value::Null, "GP").into_value();
        assert_eq!(created["role"]["before"], Value::Null);
    }

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
