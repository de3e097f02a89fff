//! Self-registration: the public submit (keyed), the administrators' list and review.

use std::collections::BTreeMap;

use cqrs_auth::Role;
use cqrs_edge::request::role_field;
use cqrs_outbox::OutboxMessage;
use cqrs_proto::access::v1::{self as pb, submit_registration_request::Organisation};
use cqrs_proto::directory::v1 as directory_pb;
use cqrs_proto::notifications::v1::EmailTemplate;
use cqrs_runtime::audit::{Actor, Event};
use cqrs_runtime::errors::FieldViolations;
use cqrs_runtime::idempotency::fingerprint;
use cqrs_runtime::server::request_deadline;
use prost::Message;
use tonic::Request;
use uuid::Uuid;

use super::{
    AccessApi, AccessError, KEYED_ROUNDS, authz, check_role_at, convert, id_field, name_field,
    organisation_facts, page_fields, principal,
};
use crate::domain::rules::{
    Decision, decision_reason, derived_id, normalise_ods_code, requestable,
};
use crate::domain::{RegistrationEvent, RegistrationState, Workflow, registration};
use crate::store::registrations::{self as reg_store, NewRegistration, Review};
use crate::store::{self, ListFilter, RegistrationRow, requests};

const TARGET: &str = "REGISTRATION";
/// Kind of the in-app notification administrators get.
const SUBMITTED_KIND: &str = "REGISTRATION_SUBMITTED";

fn registration_event<'a>(
    action: &'a str,
    target_id: &'a str,
    details: serde_json::Value,
) -> Event<'a> {
    Event {
        changes: cqrs_runtime::audit::Changes::new(),
        action,
        target_type: TARGET,
        target_id,
        outcome: "success",
        details,
    }
}

fn mail(
    template: EmailTemplate,
    to: &str,
    account_id: Option<Uuid>,
    params: &[(&str, &str)],
) -> OutboxMessage {
    OutboxMessage::Email {
        template,
        to: to.to_owned(),
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        account_id,
    }
}

/// A role as people read it: "COMMISSIONING_USER" -> "Commissioning User".
pub(super) fn role_label(role: Role) -> String {
    role.as_str()
        .split('_')
        .map(|word| {
            let lower = word.to_lowercase();
            let mut chars = lower.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` cut to at most `max` characters (the notification service's limits).
pub(super) fn clip(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        text
    } else {
        text.chars().take(max).collect()
    }
}

impl AccessApi {
    /// Public (FAILED_PRECONDITION when turned off). The same answer whether or not the
    /// address has an account: nothing here looks. Keyed on request_id.
    pub(super) async fn do_submit_registration(
        &self,
        request: Request<pb::SubmitRegistrationRequest>,
    ) -> Result<pb::SubmitRegistrationResponse, AccessError> {
        if !self.settings().self_registration {
            return Err(AccessError::FailedPrecondition(
                "SELF_REGISTRATION_DISABLED",
                "self-registration is turned off; ask an administrator for an invitation"
                    .to_owned(),
            ));
        }
        let actor = Actor::anonymous(&request);
        let deadline = request_deadline(&request);
        let req = request.into_inner();

        let mut violations = FieldViolations::new();
        let mut reason = "INVALID_ARGUMENT";
        let request_id = violations.uuid("request_id", &req.request_id);
        let email = self.email_field(&mut violations, &mut reason, &req.email);
        let first_name = name_field(&mut violations, "first_name", &req.first_name);
        let last_name = name_field(&mut violations, "last_name", &req.last_name);
        let role = role_field(&mut violations, "role", req.role, true).filter(|role| {
            let ok = requestable(*role);
            violations.check(
                ok,
                "role",
                "cannot be asked for; the service desk invites its own members",
            );
            ok
        });
        enum Target {
            Id(Uuid),
            Code(String),
        }
        let target = match &req.organisation {
            Some(Organisation::OrganisationId(raw)) => {
                violations.uuid("organisation_id", raw).map(Target::Id)
            }
            Some(Organisation::OdsCode(raw)) => normalise_ods_code(raw)
                .map_err(|e| violations.add("ods_code", e))
                .ok()
                .map(Target::Code),
            None => {
                violations.add(
                    "organisation_id",
                    "one of organisation_id and ods_code is required",
                );
                None
            }
        };
        let (
            Some(request_id),
            Some(email),
            Some(first_name),
            Some(last_name),
            Some(role),
            Some(target),
        ) = (request_id, email, first_name, last_name, role, target)
        else {
            return Err(AccessError::InvalidArgument { reason, violations });
        };

        let organisation = match target {
            Target::Id(id) => self
                .peers()
                .directory
                .organisation(id, deadline)
                .await?
                .ok_or_else(|| {
                    AccessError::invalid_field("organisation_id", "no organisation has this id")
                })?,
            Target::Code(code) => self
                .peers()
                .directory
                .organisation_by_code(&code, deadline)
                .await?
                .ok_or_else(|| {
                    AccessError::invalid_field("ods_code", "no organisation has this ODS code")
                })?,
        };
        let (kind, path) = organisation_facts(&organisation)?;
        check_role_at(role, kind)?;
        let organisation_id = path
            .first()
            .copied()
            .ok_or_else(|| AccessError::corrupt("empty organisation path"))?;

        let org_text = organisation_id.to_string();
        let hash = fingerprint(&[
            "SUBMIT_REGISTRATION",
            &email,
            &first_name,
            &last_name,
            &org_text,
            role.as_str(),
        ]);
        if let Some(answer) = self.earlier_answer(request_id, &hash).await? {
            return Ok(answer);
        }
        // Read before the transaction: who to tell, and where to mail them.
        let reviewers = self
            .reviewers(organisation_id, role, None, true, deadline)
            .await?;

        for _ in 0..KEYED_ROUNDS {
            if let Some(answer) = self.earlier_answer(request_id, &hash).await? {
                return Ok(answer);
            }
            let now = self.now();
            let mut tx = self.store().begin().await?;
            if !requests::claim(&mut tx, request_id, &hash, now).await? {
                continue;
            }
            let row = reg_store::insert(
                &mut tx,
                &NewRegistration {
                    id: Uuid::now_v7(),
                    email: &email,
                    first_name: &first_name,
                    last_name: &last_name,
                    organisation_id,
                    organisation_name: &organisation.name,
                    ods_code: &organisation.ods_code,
                    organisation_path: &path,
                    role,
                    now,
                },
            )
            .await?;
            let id = row.id.to_string();
            store::record(
                &mut tx,
                now,
                &actor,
                registration_event(
                    "SUBMIT_REGISTRATION",
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
            for message in self.registration_notices(&row, role, &organisation, &reviewers) {
                store::enqueue(&mut tx, &message).await?;
            }
            let answer = pb::SubmitRegistrationResponse {
                registration: Some(convert::registration(&row)),
            };
            requests::answer(&mut tx, request_id, &answer.encode_to_vec()).await?;
            store::commit(tx).await?;
            tracing::info!(registration_id = %row.id, %organisation_id, role = %row.role, "registration submitted");
            return Ok(answer);
        }
        Err(AccessError::corrupt(
            "request id still contended after retries",
        ))
    }

    /// The in-app notification for every administrator in scope, and a mail to each (their
    /// preferences decide whether it is sent: `account_id` is set).
    fn registration_notices(
        &self,
        row: &RegistrationRow,
        role: Role,
        organisation: &directory_pb::Organisation,
        reviewers: &[super::Reviewer],
    ) -> Vec<OutboxMessage> {
        let applicant = format!("{} {}", row.first_name, row.last_name);
        let title = clip(
            format!("New registration for {}", organisation.name),
            super::MAX_TITLE_CHARS,
        );
        let body = format!(
            "{applicant} ({}) has asked to register for {} ({}) as {}. Review it in CQRS.",
            row.email,
            organisation.name,
            organisation.ods_code,
            role_label(role)
        );
        let mut messages = super::in_app(
            reviewers,
            SUBMITTED_KIND,
            &row.id.to_string(),
            &title,
            &body,
        );
        messages.extend(reviewers.iter().filter_map(|reviewer| {
            let address = reviewer.email.as_deref()?;
            Some(mail(
                EmailTemplate::RegistrationReceived,
                address,
                Some(reviewer.account_id),
                &[
                    ("applicant_name", &applicant),
                    ("organisation_name", &organisation.name),
                    ("role", role.as_str()),
                ],
            ))
        }));
        messages
    }

    /// Registrations in the caller's scope, of the roles it may approve into, newest first.
    pub(super) async fn do_list_registrations(
        &self,
        request: Request<pb::ListRegistrationsRequest>,
    ) -> Result<pb::ListRegistrationsResponse, AccessError> {
        let principal = principal(&request)?;
        let access = authz::by_role(&principal, Workflow::Registration)?;
        let deadline = request_deadline(&request);
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let organisation = violations.optional_uuid("organisation_id", &req.organisation_id);
        let state = match convert::registration_state_from_proto(req.state) {
            Ok(state) => state,
            Err(convert::UnknownValue) => {
                violations.add("state", "must be a known RegistrationState");
                None
            }
        };
        let (page_size, after) = page_fields(&mut violations, req.page_size, &req.page_token);
        violations.into_result()?;

        let root = self
            .list_root(
                &access,
                &Workflow::Registration.permissions(),
                organisation,
                deadline,
            )
            .await?;
        let filter = ListFilter {
            root,
            roles: authz::actionable_roles(&access, Workflow::Registration)
                .map(|roles| roles.iter().map(|r| r.as_str().to_owned()).collect()),
            state: state.map(RegistrationState::as_str),
        };
        let page = reg_store::list(self.store().pool(), &filter, page_size, after.as_ref()).await?;
        Ok(pb::ListRegistrationsResponse {
            registrations: page.items.iter().map(convert::registration).collect(),
            next_page_token: page.next_page_token(),
        })
    }

    /// One registration, to the callers it lists for: out of scope answers as missing.
    pub(super) async fn do_get_registration(
        &self,
        request: Request<pb::GetRegistrationRequest>,
    ) -> Result<pb::GetRegistrationResponse, AccessError> {
        let principal = principal(&request)?;
        let access = authz::by_role(&principal, Workflow::Registration)?;
        let deadline = request_deadline(&request);
        let id = id_field("registration_id", &request.get_ref().registration_id)?;
        let row = reg_store::get(self.store().pool(), id).await?;
        let row = self
            .authorised_read(
                &access,
                Workflow::Registration,
                row,
                "registration",
                deadline,
            )
            .await?;
        Ok(pb::GetRegistrationResponse {
            registration: Some(convert::registration(&row)),
        })
    }

    /// PENDING -> APPROVED (account, grant, set-password link) or REJECTED (reason mailed).
    pub(super) async fn do_review_registration(
        &self,
        request: Request<pb::ReviewRegistrationRequest>,
    ) -> Result<pb::ReviewRegistrationResponse, AccessError> {
        let principal = principal(&request)?;
        let access = authz::by_role(&principal, Workflow::Registration)?;
        let actor = Actor::from_request(&request, &principal);
        let deadline = request_deadline(&request);
        let req = request.into_inner();

        let mut violations = FieldViolations::new();
        let id = violations.uuid("registration_id", &req.registration_id);
        let decision = super::decision_field(&mut violations, req.decision);
        let reason = decision.and_then(|decision| {
            decision_reason(decision, &req.reason)
                .map_err(|e| violations.add("reason", e))
                .ok()
        });
        let (Some(id), Some(decision), Some(reason)) = (id, decision, reason) else {
            return Err(AccessError::from(violations));
        };

        let row = reg_store::get(self.store().pool(), id).await?;
        authz::covers_row(
            &access,
            row.as_ref().map(|r| r.organisation_path.as_slice()),
            "registration",
        )?;
        let row = row.ok_or(AccessError::NotFound("registration"))?;
        let role = row
            .role()
            .ok_or_else(|| AccessError::corrupt("stored role unknown"))?;
        let permission = authz::for_role(&access, Workflow::Registration, role)?;
        // Nobody approves their own request: a reviewer whose own address applied is refused.
        let reviewer_account = async {
            match access.account_id() {
                Some(account) => self.peers().identity.account(account, deadline).await,
                None => Ok(None),
            }
        };
        let (decided, reviewer_account) = tokio::join!(
            self.authorise_org(&access, permission, row.organisation_id, deadline),
            reviewer_account,
        );
        decided?;
        if reviewer_account?.is_some_and(|a| a.email.eq_ignore_ascii_case(&row.email)) {
            return Err(AccessError::PermissionDenied(authz::OWN_REQUEST));
        }

        let now = self.now();
        let mut tx = self.store().begin().await?;
        let row = reg_store::get_for_update(&mut tx, id)
            .await?
            .ok_or(AccessError::NotFound("registration"))?;
        let from = row
            .state()
            .ok_or_else(|| AccessError::corrupt("stored registration state unknown"))?;
        let event = match decision {
            Decision::Approve => RegistrationEvent::Approve,
            Decision::Reject => RegistrationEvent::Reject,
        };
        let to = registration::transition(from, event).map_err(|refusal| {
            AccessError::FailedPrecondition("REGISTRATION_NOT_PENDING", refusal.to_string())
        })?;

        // While the row is locked (see the module docs of `api`).
        let (account, grant) = match decision {
            Decision::Approve => {
                let ensured = self
                    .peers()
                    .identity
                    .ensure_account(
                        derived_id(row.id, "approve-registration:account"),
                        self.settings().account_realm,
                        &row.email,
                        &row.first_name,
                        &row.last_name,
                        deadline,
                    )
                    .await?;
                let account_id =
                    Uuid::parse_str(&ensured.account.id).map_err(AccessError::internal)?;
                let grant = self
                    .peers()
                    .directory
                    .grant_role(
                        derived_id(row.id, "approve-registration:grant"),
                        account_id,
                        row.organisation_id,
                        role,
                        deadline,
                    )
                    .await?;
                (Some((account_id, ensured.created)), Some(grant.id))
            }
            Decision::Reject => (None, None),
        };

        let updated = reg_store::review(
            &mut tx,
            id,
            Review {
                state: to,
                reviewer_kind: actor.kind,
                reviewer_id: &actor.id,
                reason: &reason,
                account_id: account.map(|(a, _)| a),
                now,
            },
        )
        .await?;
        let id_text = id.to_string();
        store::record(
            &mut tx,
            now,
            &actor,
            registration_event(
                "REVIEW_REGISTRATION",
                &id_text,
                serde_json::json!({
                    "decision": decision.as_str(),
                    "from_state": from.as_str(),
                    "to_state": to.as_str(),
                    "reason": reason,
                    "account_id": account.map(|(a, _)| a),
                    "account_created": account.map(|(_, created)| created),
                    "grant_id": grant,
                }),
            ),
        )
        .await?;
        let notice = match account {
            Some((account_id, _)) => mail(
                EmailTemplate::RegistrationApproved,
                &row.email,
                Some(account_id),
                &[
                    ("first_name", &row.first_name),
                    ("organisation_name", &row.organisation_name),
                    ("role", role.as_str()),
                ],
            ),
            None => mail(
                EmailTemplate::RegistrationRejected,
                &row.email,
                None,
                &[
                    ("first_name", &row.first_name),
                    ("organisation_name", &row.organisation_name),
                    ("reason", &reason),
                ],
            ),
        };
        store::enqueue(&mut tx, &notice).await?;
        store::commit(tx).await?;
        tracing::info!(registration_id = %id, decision = decision.as_str(), "registration reviewed");
        Ok(pb::ReviewRegistrationResponse {
            registration: Some(convert::registration(&updated)),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_clipping() {
        assert_eq!(
            role_label(Role::CommissioningAccountAdministrator),
            "Commissioning Account Administrator"
        );
        assert_eq!(clip("abcdef".into(), 3), "abc");
        assert_eq!(clip("ab".into(), 3), "ab");
    }
}
