//! Access requests: a signed-in user asks for a role at an organisation (keyed), may withdraw
//! it while it is pending and list their own; administrators list and review them.

use std::collections::BTreeMap;

use cqrs_edge::request::role_field;
use cqrs_outbox::OutboxMessage;
use cqrs_proto::access::v1 as pb;
use cqrs_proto::notifications::v1::EmailTemplate;
use cqrs_runtime::audit::{Actor, Event};
use cqrs_runtime::errors::FieldViolations;
use cqrs_runtime::idempotency::fingerprint;
use cqrs_runtime::server::request_deadline;
use prost::Message;
use tonic::Request;
use uuid::Uuid;

use super::registrations::{clip, role_label};
use super::{
    AccessApi, AccessError, KEYED_ROUNDS, MAX_TITLE_CHARS, authz, check_role_at, convert,
    decision_field, id_field, in_app, organisation_facts, page_fields, principal,
};
use crate::domain::rules::{Decision, decision_reason, derived_id, normalise_reason, requestable};
use crate::domain::{AccessRequestEvent, AccessRequestState, Workflow, access_request};
use crate::store::access_requests::{self as ar_store, NewAccessRequest, Transition};
use crate::store::{self, ListFilter, StoreError, requests};

const TARGET: &str = "ACCESS_REQUEST";
/// Kind of the in-app notification administrators get.
const SUBMITTED_KIND: &str = "ACCESS_REQUEST_SUBMITTED";

fn request_event<'a>(action: &'a str, target_id: &'a str, details: serde_json::Value) -> Event<'a> {
    Event {
        changes: cqrs_runtime::audit::Changes::new(),
        action,
        target_type: TARGET,
        target_id,
        outcome: "success",
        details,
    }
}

fn not_pending(refusal: crate::domain::Refusal) -> AccessError {
    AccessError::FailedPrecondition(
        "ACCESS_REQUEST_NOT_PENDING",
        format!("the access request is {}", refusal.from),
    )
}

fn state_filter(violations: &mut FieldViolations, value: i32) -> Option<AccessRequestState> {
    match convert::access_request_state_from_proto(value) {
        Ok(state) => state,
        Err(convert::UnknownValue) => {
            violations.add("state", "must be a known AccessRequestState");
            None
        }
    }
}

impl AccessApi {
    /// Signed-in user -> PENDING. Refused when the account already holds the grant or has a
    /// pending request for it. Keyed on request_id.
    pub(super) async fn do_request_access(
        &self,
        request: Request<pb::RequestAccessRequest>,
    ) -> Result<pb::RequestAccessResponse, AccessError> {
        let principal = principal(&request)?;
        let account_id = authz::user_only(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let deadline = request_deadline(&request);
        let req = request.into_inner();

        let mut violations = FieldViolations::new();
        let request_id = violations.uuid("request_id", &req.request_id);
        let organisation_id = violations.uuid("organisation_id", &req.organisation_id);
        let role = role_field(&mut violations, "role", req.role, true).filter(|role| {
            let ok = requestable(*role);
            violations.check(
                ok,
                "role",
                "cannot be asked for; the service desk invites its own members",
            );
            ok
        });
        let reason = match normalise_reason(&req.reason) {
            Ok(reason) if reason.is_empty() => {
                violations.add("reason", "is required");
                None
            }
            Ok(reason) => Some(reason),
            Err(e) => {
                violations.add("reason", e);
                None
            }
        };
        let (Some(request_id), Some(organisation_id), Some(role), Some(reason)) =
            (request_id, organisation_id, role, reason)
        else {
            return Err(AccessError::from(violations));
        };

        let (account_text, org_text) = (account_id.to_string(), organisation_id.to_string());
        let hash = fingerprint(&[
            "REQUEST_ACCESS",
            &account_text,
            &org_text,
            role.as_str(),
            &reason,
        ]);
        if let Some(answer) = self.earlier_answer(request_id, &hash).await? {
            return Ok(answer);
        }
        // Organisations are no secret to signed-in users, so a missing one is NOT_FOUND.
        let (organisation, holds, reviewers) = tokio::join!(
            self.peers()
                .directory
                .organisation(organisation_id, deadline),
            self.peers()
                .directory
                .holds_grant(account_id, organisation_id, role, deadline),
            self.reviewers(organisation_id, role, Some(account_id), false, deadline),
        );
        let organisation = organisation?.ok_or(AccessError::NotFound("organisation"))?;
        let (kind, path) = organisation_facts(&organisation)?;
        check_role_at(role, kind)?;
        if holds? {
            return Err(AccessError::FailedPrecondition(
                "ALREADY_GRANTED",
                "the account already holds this role at this organisation".to_owned(),
            ));
        }
        let reviewers = reviewers?;

        for _ in 0..KEYED_ROUNDS {
            if let Some(answer) = self.earlier_answer(request_id, &hash).await? {
                return Ok(answer);
            }
            let now = self.now();
            let mut tx = self.store().begin().await?;
            if !requests::claim(&mut tx, request_id, &hash, now).await? {
                continue;
            }
            let new = NewAccessRequest {
                id: Uuid::now_v7(),
                account_id,
                organisation_id,
                organisation_name: &organisation.name,
                organisation_path: &path,
                role,
                reason: &reason,
                now,
            };
            let row = match ar_store::insert(&mut tx, &new).await {
                Err(StoreError::Conflict(index)) if index == ar_store::ONE_PENDING => {
                    return Err(AccessError::AlreadyExists(
                        "ACCESS_REQUEST_PENDING",
                        "a request for this role at this organisation is already pending"
                            .to_owned(),
                    ));
                }
                other => other?,
            };
            let id = row.id.to_string();
            store::record(
                &mut tx,
                now,
                &actor,
                request_event(
                    "REQUEST_ACCESS",
                    &id,
                    serde_json::json!({
                        "to_state": row.state,
                        "organisation_id": organisation_id,
                        "role": row.role,
                        "notified": reviewers.len(),
                    }),
                ),
            )
            .await?;
            let title = clip(
                format!("New access request for {}", organisation.name),
                MAX_TITLE_CHARS,
            );
            let body = format!(
                "An access request for {} ({}) as {} awaits review in CQRS.",
                organisation.name,
                organisation.ods_code,
                role_label(role)
            );
            for message in in_app(&reviewers, SUBMITTED_KIND, &id, &title, &body) {
                store::enqueue(&mut tx, &message).await?;
            }
            let answer = pb::RequestAccessResponse {
                access_request: Some(convert::access_request(&row)),
            };
            requests::answer(&mut tx, request_id, &answer.encode_to_vec()).await?;
            store::commit(tx).await?;
            tracing::info!(access_request_id = %row.id, %organisation_id, role = %row.role, "access requested");
            return Ok(answer);
        }
        Err(AccessError::corrupt(
            "request id still contended after retries",
        ))
    }

    /// PENDING -> WITHDRAWN, by the requester only.
    pub(super) async fn do_withdraw_access_request(
        &self,
        request: Request<pb::WithdrawAccessRequestRequest>,
    ) -> Result<pb::WithdrawAccessRequestResponse, AccessError> {
        let principal = principal(&request)?;
        let account_id = authz::user_only(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let id = id_field("access_request_id", &request.get_ref().access_request_id)?;
        // Someone else's request and a missing one answer alike.
        let row = ar_store::get(self.store().pool(), id).await?;
        if row.is_none_or(|row| row.account_id != account_id) {
            return Err(AccessError::PermissionDenied(authz::NOT_REQUESTER));
        }

        let now = self.now();
        let mut tx = self.store().begin().await?;
        // A review of the same request holds or waits on this lock: whichever commits first
        // wins, and the other finds the request final.
        let row = ar_store::get_for_update(&mut tx, id)
            .await?
            .ok_or(AccessError::NotFound("access request"))?;
        let from = row
            .state()
            .ok_or_else(|| AccessError::corrupt("stored access request state unknown"))?;
        let to =
            access_request::transition(from, AccessRequestEvent::Withdraw).map_err(not_pending)?;
        let updated = ar_store::set_state(
            &mut tx,
            id,
            Transition {
                state: to,
                actor_kind: actor.kind,
                actor_id: &actor.id,
                reason: "",
                grant_id: None,
                now,
            },
        )
        .await?;
        let id_text = id.to_string();
        store::record(
            &mut tx,
            now,
            &actor,
            request_event(
                "WITHDRAW_ACCESS_REQUEST",
                &id_text,
                serde_json::json!({ "from_state": from.as_str(), "to_state": to.as_str() }),
            ),
        )
        .await?;
        store::commit(tx).await?;
        Ok(pb::WithdrawAccessRequestResponse {
            access_request: Some(convert::access_request(&updated)),
        })
    }

    /// The caller's own requests, newest first.
    pub(super) async fn do_list_my_access_requests(
        &self,
        request: Request<pb::ListMyAccessRequestsRequest>,
    ) -> Result<pb::ListMyAccessRequestsResponse, AccessError> {
        let principal = principal(&request)?;
        let account_id = authz::user_only(&principal)?;
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let state = state_filter(&mut violations, req.state);
        let (page_size, after) = page_fields(&mut violations, req.page_size, &req.page_token);
        violations.into_result()?;
        let filter = ListFilter {
            state: state.map(AccessRequestState::as_str),
            ..ListFilter::default()
        };
        let page = ar_store::list(
            self.store().pool(),
            &filter,
            Some(account_id),
            page_size,
            after.as_ref(),
        )
        .await?;
        Ok(pb::ListMyAccessRequestsResponse {
            access_requests: page.items.iter().map(convert::access_request).collect(),
            next_page_token: page.next_page_token(),
        })
    }

    /// Requests in the caller's scope, of the roles it may approve into, newest first.
    pub(super) async fn do_list_access_requests(
        &self,
        request: Request<pb::ListAccessRequestsRequest>,
    ) -> Result<pb::ListAccessRequestsResponse, AccessError> {
        let principal = principal(&request)?;
        let access = authz::by_role(&principal, Workflow::AccessRequest)?;
        let deadline = request_deadline(&request);
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let organisation = violations.optional_uuid("organisation_id", &req.organisation_id);
        let state = state_filter(&mut violations, req.state);
        let (page_size, after) = page_fields(&mut violations, req.page_size, &req.page_token);
        violations.into_result()?;

        let root = self
            .list_root(
                &access,
                &Workflow::AccessRequest.permissions(),
                organisation,
                deadline,
            )
            .await?;
        let filter = ListFilter {
            root,
            roles: authz::actionable_roles(&access, Workflow::AccessRequest)
                .map(|roles| roles.iter().map(|r| r.as_str().to_owned()).collect()),
            state: state.map(AccessRequestState::as_str),
        };
        let page = ar_store::list(
            self.store().pool(),
            &filter,
            None,
            page_size,
            after.as_ref(),
        )
        .await?;
        Ok(pb::ListAccessRequestsResponse {
            access_requests: page.items.iter().map(convert::access_request).collect(),
            next_page_token: page.next_page_token(),
        })
    }

    /// One access request: to its requester (as ListMyAccessRequests), else to the callers it
    /// lists for, out of scope answering as missing.
    pub(super) async fn do_get_access_request(
        &self,
        request: Request<pb::GetAccessRequestRequest>,
    ) -> Result<pb::GetAccessRequestResponse, AccessError> {
        let principal = principal(&request)?;
        // Step 1 is applied once the requester's own rule has had its say: a caller who is
        // neither a reviewer nor the requester is refused by role whether or not the request
        // exists, so the read before it tells them nothing.
        let access = authz::by_role(&principal, Workflow::AccessRequest);
        let deadline = request_deadline(&request);
        let id = id_field("access_request_id", &request.get_ref().access_request_id)?;
        let row = match ar_store::get(self.store().pool(), id).await? {
            Some(row) if principal.account_id() == Some(row.account_id) => row,
            row => {
                self.authorised_read(
                    &access?,
                    Workflow::AccessRequest,
                    row,
                    "access request",
                    deadline,
                )
                .await?
            }
        };
        Ok(pb::GetAccessRequestResponse {
            access_request: Some(convert::access_request(&row)),
        })
    }

    /// PENDING -> APPROVED (grant made) or REJECTED (reason required); the requester is
    /// mailed either way. Never by the requester.
    pub(super) async fn do_review_access_request(
        &self,
        request: Request<pb::ReviewAccessRequestRequest>,
    ) -> Result<pb::ReviewAccessRequestResponse, AccessError> {
        let principal = principal(&request)?;
        let access = authz::by_role(&principal, Workflow::AccessRequest)?;
        let actor = Actor::from_request(&request, &principal);
        let deadline = request_deadline(&request);
        let req = request.into_inner();

        let mut violations = FieldViolations::new();
        let id = violations.uuid("access_request_id", &req.access_request_id);
        let decision = decision_field(&mut violations, req.decision);
        let reason = decision.and_then(|decision| {
            decision_reason(decision, &req.reason)
                .map_err(|e| violations.add("reason", e))
                .ok()
        });
        let (Some(id), Some(decision), Some(reason)) = (id, decision, reason) else {
            return Err(AccessError::from(violations));
        };

        let row = ar_store::get(self.store().pool(), id).await?;
        authz::covers_row(
            &access,
            row.as_ref().map(|r| r.organisation_path.as_slice()),
            "access request",
        )?;
        let row = row.ok_or(AccessError::NotFound("access request"))?;
        if access.account_id() == Some(row.account_id) {
            return Err(AccessError::PermissionDenied(authz::OWN_REQUEST));
        }
        let role = row
            .role()
            .ok_or_else(|| AccessError::corrupt("stored role unknown"))?;
        let permission = authz::for_role(&access, Workflow::AccessRequest, role)?;
        // The requester's name and address for the mail, read before the row is locked.
        let (decided, requester) = tokio::join!(
            self.authorise_org(&access, permission, row.organisation_id, deadline),
            self.peers().identity.account(row.account_id, deadline),
        );
        decided?;
        let requester = requester?;

        let now = self.now();
        let mut tx = self.store().begin().await?;
        let row = ar_store::get_for_update(&mut tx, id)
            .await?
            .ok_or(AccessError::NotFound("access request"))?;
        let from = row
            .state()
            .ok_or_else(|| AccessError::corrupt("stored access request state unknown"))?;
        let event = match decision {
            Decision::Approve => AccessRequestEvent::Approve,
            Decision::Reject => AccessRequestEvent::Reject,
        };
        let to = access_request::transition(from, event).map_err(not_pending)?;
        // While the row is locked (see the module docs of `api`).
        let grant_id = match decision {
            Decision::Approve => {
                let grant = self
                    .peers()
                    .directory
                    .grant_role(
                        derived_id(row.id, "approve-access-request:grant"),
                        row.account_id,
                        row.organisation_id,
                        role,
                        deadline,
                    )
                    .await?;
                Some(Uuid::parse_str(&grant.id).map_err(AccessError::internal)?)
            }
            Decision::Reject => None,
        };
        let updated = ar_store::set_state(
            &mut tx,
            id,
            Transition {
                state: to,
                actor_kind: actor.kind,
                actor_id: &actor.id,
                reason: &reason,
                grant_id,
                now,
            },
        )
        .await?;
        let id_text = id.to_string();
        store::record(
            &mut tx,
            now,
            &actor,
            request_event(
                "REVIEW_ACCESS_REQUEST",
                &id_text,
                serde_json::json!({
                    "decision": decision.as_str(),
                    "from_state": from.as_str(),
                    "to_state": to.as_str(),
                    "reason": reason,
                    "grant_id": grant_id,
                }),
            ),
        )
        .await?;
        if let Some(requester) = requester {
            let mut params = BTreeMap::from([
                ("first_name".to_owned(), requester.first_name.clone()),
                (
                    "organisation_name".to_owned(),
                    row.organisation_name.clone(),
                ),
                ("role".to_owned(), row.role.clone()),
            ]);
            let template = match decision {
                Decision::Approve => EmailTemplate::AccessRequestApproved,
                Decision::Reject => {
                    params.insert("reason".to_owned(), reason.clone());
                    EmailTemplate::AccessRequestRejected
                }
            };
            store::enqueue(
                &mut tx,
                &OutboxMessage::Email {
                    template,
                    to: requester.email,
                    params,
                    account_id: Some(row.account_id),
                },
            )
            .await?;
        }
        store::commit(tx).await?;
        tracing::info!(access_request_id = %id, decision = decision.as_str(), "access request reviewed");
        Ok(pb::ReviewAccessRequestResponse {
            access_request: Some(convert::access_request(&updated)),
        })
    }
}
