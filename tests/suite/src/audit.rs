//! Reading the audit trails of identity, the directory and access through their
//! `ListAuditEvents` RPCs, as one record shape.

use std::collections::BTreeMap;

use cqrs_proto::access::v1 as access_pb;
use cqrs_proto::directory::v1 as dir_pb;
use cqrs_proto::identity::v1 as id_pb;
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
}

impl AuditRecord {
    pub fn is_success(&self) -> bool {
        self.outcome == "SUCCESS"
    }

    pub fn detail(&self, key: &str) -> Option<&str> {
        self.details.get(key).map(String::as_str)
    }
}

fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_owned()
}

macro_rules! record {
    ($service:expr, $pb:ident, $event:expr) => {{
        let e = $event;
        let actor_kind = $pb::ActorKind::try_from(e.actor_kind)
            .map(|k| short(k.as_str_name(), "ACTOR_KIND_"))
            .unwrap_or_else(|_| e.actor_kind.to_string());
        let outcome = $pb::AuditOutcome::try_from(e.outcome)
            .map(|o| short(o.as_str_name(), "AUDIT_OUTCOME_"))
            .unwrap_or_else(|_| e.outcome.to_string());
        AuditRecord {
            service: $service,
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
        }
    }};
}

impl Suite {
    /// Every event of `service`'s audit trail matching `query`, oldest first, read with a
    /// service token (every page).
    ///
    /// # Panics
    /// For [`Service::Notifications`] (it has no audit RPC) and when the RPC fails.
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
            let next = match service {
                Service::Identity => {
                    let answer = self
                        .identity()
                        .list_audit_events(with_token(
                            id_pb::ListAuditEventsRequest {
                                actor_id: query.actor_id.clone(),
                                target_id: query.target_id.clone(),
                                action: query.action.clone(),
                                page_size: 500,
                                page_token: page_token.clone(),
                                ..Default::default()
                            },
                            token,
                        ))
                        .await?
                        .into_inner();
                    records.extend(
                        answer
                            .audit_events
                            .into_iter()
                            .map(|e| record!(Service::Identity, id_pb, e)),
                    );
                    answer.next_page_token
                }
                Service::Directory => {
                    let answer = self
                        .directory()
                        .list_audit_events(with_token(
                            dir_pb::ListAuditEventsRequest {
                                actor_id: query.actor_id.clone(),
                                target_id: query.target_id.clone(),
                                action: query.action.clone(),
                                page_size: 500,
                                page_token: page_token.clone(),
                                ..Default::default()
                            },
                            token,
                        ))
                        .await?
                        .into_inner();
                    records.extend(
                        answer
                            .audit_events
                            .into_iter()
                            .map(|e| record!(Service::Directory, dir_pb, e)),
                    );
                    answer.next_page_token
                }
                Service::Access => {
                    let answer = self
                        .access()
                        .list_audit_events(with_token(
                            access_pb::ListAuditEventsRequest {
                                actor_id: query.actor_id.clone(),
                                target_id: query.target_id.clone(),
                                action: query.action.clone(),
                                page_size: 500,
                                page_token: page_token.clone(),
                                ..Default::default()
                            },
                            token,
                        ))
                        .await?
                        .into_inner();
                    records.extend(
                        answer
                            .audit_events
                            .into_iter()
                            .map(|e| record!(Service::Access, access_pb, e)),
                    );
                    answer.next_page_token
                }
                Service::Notifications => {
                    panic!("the notification service has no ListAuditEvents RPC")
                }
            };
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
