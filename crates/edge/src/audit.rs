//! The read side of every service's audit trail, once: a ListAuditEvents request (each
//! service's has the same fields) becomes a filtered page of `cqrs.common.v1.AuditEvent`s,
//! newest first. Who may read a trail is the service's own rule and is checked before this.

use std::collections::HashMap;

use cqrs_proto::common::v1 as common;
use cqrs_rules::FieldViolations;
use cqrs_runtime::audit::{self, AuditRow, Filter};
use cqrs_runtime::paging::{PageToken, page_request_bounded};
use prost_types::Timestamp;
use sqlx::PgPool;

use crate::{ApiError, ServiceReason};

/// The fields of a ListAuditEvents request, borrowed from whichever service's it is.
#[derive(Clone, Copy, Debug)]
pub struct AuditQuery<'a> {
    pub actor_id: &'a str,
    pub target_id: &'a str,
    pub action: &'a str,
    pub start_time: Option<&'a Timestamp>,
    pub end_time: Option<&'a Timestamp>,
    pub page_size: i32,
    pub page_token: &'a str,
}

macro_rules! audit_query_from {
    ($($request:ty),+ $(,)?) => {$(
        impl<'a> From<&'a $request> for AuditQuery<'a> {
            fn from(r: &'a $request) -> Self {
                AuditQuery {
                    actor_id: &r.actor_id,
                    target_id: &r.target_id,
                    action: &r.action,
                    start_time: r.start_time.as_ref(),
                    end_time: r.end_time.as_ref(),
                    page_size: r.page_size,
                    page_token: &r.page_token,
                }
            }
        }
    )+};
}

audit_query_from!(
    cqrs_proto::identity::v1::ListAuditEventsRequest,
    cqrs_proto::directory::v1::ListAuditEventsRequest,
    cqrs_proto::access::v1::ListAuditEventsRequest,
    cqrs_proto::notifications::v1::ListAuditEventsRequest,
);

/// A checked ListAuditEvents request: what to read, without I/O.
#[derive(Clone, Debug)]
pub struct AuditPage {
    filter: Filter,
    page_size: i64,
    after: Option<PageToken>,
}

impl AuditQuery<'_> {
    /// The filters and page asked for, or every bad field. Checked before the caller's scope
    /// is (which may take a round trip), so a malformed request costs nothing.
    pub fn check(&self) -> Result<AuditPage, FieldViolations> {
        let query = self;
        let mut violations = FieldViolations::new();
        let (page_size, after) = page_request_bounded(
            &mut violations,
            query.page_size,
            query.page_token,
            audit::DEFAULT_PAGE_SIZE,
            audit::MAX_PAGE_SIZE,
        );
        let filter = Filter::from_request(
            &mut violations,
            query.actor_id,
            query.target_id,
            query.action,
            query.start_time,
            query.end_time,
        );
        violations.into_result()?;
        Ok(AuditPage {
            filter,
            page_size,
            after,
        })
    }
}

/// One page of the trail in `pool`: the events, newest first, and the next page's token
/// (empty after the last).
pub async fn page<R: ServiceReason>(
    pool: &PgPool,
    query: &AuditPage,
) -> Result<(Vec<common::AuditEvent>, String), ApiError<R>> {
    let page = audit::list(pool, &query.filter, query.page_size, query.after.as_ref()).await?;
    Ok((
        page.items.iter().map(audit_event).collect(),
        page.next_page_token(),
    ))
}

/// A stored event as every service answers it.
pub fn audit_event(row: &AuditRow) -> common::AuditEvent {
    let actor_kind = match row.actor_kind.as_str() {
        "user" => common::ActorKind::User,
        "service" => common::ActorKind::Service,
        "anonymous" => common::ActorKind::Anonymous,
        "system" => common::ActorKind::System,
        _ => common::ActorKind::Unspecified,
    };
    let outcome = match row.outcome.as_str() {
        "success" => common::AuditOutcome::Success,
        "failure" => common::AuditOutcome::Failure,
        "denied" => common::AuditOutcome::Denied,
        _ => common::AuditOutcome::Unspecified,
    };
    // A null detail says nothing (e.g. no reason on an approval): left out.
    let details: HashMap<String, String> = match &row.details {
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| {
                let value = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), value)
            })
            .collect(),
        _ => HashMap::new(),
    };
    let changes = match &row.changes {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(field, change)| common::FieldChange {
                field: field.clone(),
                before_json: change["before"].to_string(),
                after_json: change["after"].to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    common::AuditEvent {
        id: row.id.to_string(),
        actor_id: row.actor_id.clone(),
        actor_kind: actor_kind as i32,
        action: row.action.clone(),
        target_type: row.target_type.clone(),
        target_id: row.target_id.clone(),
        outcome: outcome as i32,
        request_id: row.request_id.clone().unwrap_or_default(),
        create_time: Some(crate::timestamp(row.occurred_at)),
        details,
        sequence: row.sequence,
        hash: row.hash.clone().unwrap_or_default(),
        actor_name: row.actor_name.clone(),
        actor_organisation_id: row.actor_organisation_id.clone(),
        actor_role: row.actor_role.clone(),
        client_address: row.client_address.clone(),
        user_agent: row.user_agent.clone(),
        changes,
        details_json: row.details.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn rows_become_events() {
        let row = AuditRow {
            sequence: 4,
            hash: Some(vec![7; 32]),
            actor_name: "Ann Smith".into(),
            actor_organisation_id: String::new(),
            actor_role: "SERVICE_DESK".into(),
            client_address: "192.0.2.1".into(),
            user_agent: "Firefox".into(),
            changes: serde_json::json!({ "status": { "before": "ACTIVE", "after": null } }),
            id: Uuid::from_u128(7),
            occurred_at: chrono::DateTime::from_timestamp(1_700_000_000, 5).unwrap(),
            actor_kind: "service".into(),
            actor_id: "access".into(),
            action: "GRANT_ROLE".into(),
            target_type: "account".into(),
            target_id: "a1".into(),
            outcome: "denied".into(),
            request_id: Some("r1".into()),
            details: serde_json::json!({ "reason": "NO_GRANT_IN_SCOPE", "count": 2, "gone": null }),
        };
        let event = audit_event(&row);
        assert_eq!(event.actor_kind, common::ActorKind::Service as i32);
        assert_eq!(event.outcome, common::AuditOutcome::Denied as i32);
        assert_eq!(event.request_id, "r1");
        assert_eq!(event.details["reason"], "NO_GRANT_IN_SCOPE");
        assert_eq!(event.details["count"], "2");
        assert!(!event.details.contains_key("gone"));
        assert_eq!(event.create_time.unwrap().nanos, 5);
        // What a verifier rebuilds from the answer hashes as what was stored.
        let (rebuilt, hash) = cqrs_audit_chain::record_from_proto(&event).unwrap();
        assert_eq!(rebuilt, row.record());
        assert_eq!(hash, Some([7; 32]));
        assert_eq!(event.changes[0].after_json, "null");
        let unknown = audit_event(&AuditRow {
            actor_kind: "martian".into(),
            outcome: "maybe".into(),
            details: serde_json::Value::Null,
            ..row.clone()
        });
        assert_eq!(unknown.actor_kind, common::ActorKind::Unspecified as i32);
        assert_eq!(unknown.outcome, common::AuditOutcome::Unspecified as i32);
        assert!(unknown.details.is_empty());
    }
}
