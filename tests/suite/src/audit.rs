//! Reading the audit trails of every service through their `ListAuditEvents` RPCs, as one
//! record shape.

use std::collections::BTreeMap;

use cqrs_proto::access::v1 as access_pb;
use cqrs_proto::common::v1 as common;
use cqrs_proto::directory::v1 as dir_pb;
use cqrs_proto::identity::v1 as id_pb;
use cqrs_proto::notifications::v1 as notifications_pb;
use cqrs_testkit::with_token;
use tonic::Status;

use crate::suite::{Service, Suite};

/// Filters of `ListAuditEvents`; empty means any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub actor_id: String,
    pub target_id: String,
    pub action: String,
}

impl AuditQuery {
    pub fn action(action: &str) -> Self {
        AuditQuery {
            action: action.into(),
            ..AuditQuery::default()
        }
    }

    pub fn target(target_id: &str) -> Self {
        AuditQuery {
            target_id: target_id.into(),
            ..AuditQuery::default()
        }
    }

    pub fn actor(actor_id: &str) -> Self {
        AuditQuery {
            actor_id: actor_id.into(),
            ..AuditQuery::default()
        }
    }

    pub fn and_action(mut self, action: &str) -> Self {
        self.action = action.into();
        self
    }

    pub fn and_target(mut self, target_id: &str) -> Self {
        self.target_id = target_id.into();
        self
    }

    pub fn and_actor(mut self, actor_id: &str) -> Self {
        self.actor_id = actor_id.into();
        self
    }
}

/// One audit event of any service. Enum values are given without their prefix: actor kinds
/// `USER`, `SERVICE`, `ANONYMOUS`, `SYSTEM`; outcomes `SUCCESS`, `FAILURE`, `DENIED`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub service: Service,
    pub id: String,
    pub action: String,
    pub actor_kind: String,
    pub actor_id: String,
    pub target_type: String,
    pub target_id: String,
    pub outcome: String,
    pub request_id: String,
    pub create_time: Option<prost_types::Timestamp>,
    pub details: BTreeMap<String, String>,
    /// The actor's name, organisation and role at the time.
    pub actor_name: String,
    pub actor_organisation_id: String,
    pub actor_role: String,
    pub client_address: String,
    pub user_agent: String,
    /// Changed fields: before and after, as JSON.
    pub changes: BTreeMap<String, (serde_json::Value, serde_json::Value)>,
    pub sequence: i64,
}

impl AuditRecord {
    pub fn is_success(&self) -> bool {
        self.outcome == "SUCCESS"
    }

    pub fn detail(&self, key: &str) -> Option<&str> {
        self.details.get(key).map(String::as_str)
    }

    /// A changed field's value before and after.
    pub fn change(&self, field: &str) -> Option<(&serde_json::Value, &serde_json::Value)> {
        self.changes.get(field).map(|(b, a)| (b, a))
    }
}

fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_owned()
}

/// The common event as a record of `service`'s trail.
fn record(service: Service, e: common::AuditEvent) -> AuditRecord {
    let actor_kind = common::ActorKind::try_from(e.actor_kind)
        .map(|k| short(k.as_str_name(), "ACTOR_KIND_"))
        .unwrap_or_else(|_| e.actor_kind.to_string());
    let outcome = common::AuditOutcome::try_from(e.outcome)
        .map(|o| short(o.as_str_name(), "AUDIT_OUTCOME_"))
        .unwrap_or_else(|_| e.outcome.to_string());
    AuditRecord {
        service,
        id: e.id,
        action: e.action,
        actor_kind,
        actor_id: e.actor_id,
        target_type: e.target_type,
        target_id: e.target_id,
        outcome,
        request_id: e.request_id,
        create_time: e.create_time,
        details: e.details.into_iter().collect(),
        actor_name: e.actor_name,
        actor_organisation_id: e.actor_organisation_id,
        actor_role: e.actor_role,
        client_address: e.client_address,
        user_agent: e.user_agent,
        changes: e
            .changes
            .into_iter()
            .map(|c| {
                let json =
                    |text: &str| serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
                (c.field, (json(&c.before_json), json(&c.after_json)))
            })
            .collect(),
        sequence: e.sequence,
    }
}

/// One page of a service's trail: every service's ListAuditEvents has the same fields.
macro_rules! page {
    ($client:expr, $pb:ident, $query:expr, $page_token:expr, $token:expr) => {{
        let answer = $client
            .list_audit_events(with_token(
                $pb::ListAuditEventsRequest {
                    actor_id: $query.actor_id.clone(),
                    target_id: $query.target_id.clone(),
                    action: $query.action.clone(),
                    page_size: 500,
                    page_token: $page_token.clone(),
                    ..Default::default()
                },
                $token,
            ))
            .await?
            .into_inner();
        (answer.audit_events, answer.next_page_token)
    }};
}

impl Suite {
    /// Every event of `service`'s audit trail matching `query`, oldest first, read with a
    /// service token (every page).
    ///
    /// # Panics
    /// When the RPC fails.
    pub async fn audit(&self, service: Service, query: AuditQuery) -> Vec<AuditRecord> {
        let token = self.service_token().await;
        self.audit_as(service, &token, query)
            .await
            .unwrap_or_else(|s| panic!("{service:?} ListAuditEvents: {s:?}"))
    }

    /// Like [`Suite::audit`], with the caller's `token` (e.g. the service desk's), so refusals
    /// can be asserted.
    pub async fn audit_as(
        &self,
        service: Service,
        token: &str,
        query: AuditQuery,
    ) -> Result<Vec<AuditRecord>, Status> {
        let mut records = Vec::new();
        let mut page_token = String::new();
        loop {
            let (events, next) = match service {
                Service::Identity => page!(self.identity(), id_pb, query, page_token, token),
                Service::Directory => page!(self.directory(), dir_pb, query, page_token, token),
                Service::Access => page!(self.access(), access_pb, query, page_token, token),
                Service::Notifications => {
                    page!(
                        self.notifications(),
                        notifications_pb,
                        query,
                        page_token,
                        token
                    )
                }
            };
            records.extend(events.into_iter().map(|e| record(service, e)));
            if next.is_empty() {
                break;
            }
            page_token = next;
        }
        // The RPC answers newest first.
        records.reverse();
        Ok(records)
    }
}
