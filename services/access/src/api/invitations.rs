//! Invitations: keyed create, list, resend, cancel, and the public pair behind the link
//! (look at it, accept it). Also the expiry of run-out links.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
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

use super::{
    AccessApi, AccessError, AccessReason, KEYED_ROUNDS, authz, check_role_at, convert, id_field,
    name_field, organisation_facts, page_fields, principal,
};
use crate::domain::rules::{
    LinkToken, derived_id, hash_token, is_well_formed_token, new_link_token,
};
use crate::domain::{InvitationEvent, InvitationState, Workflow, invitation};
use crate::store::invitations::{self as inv_store, Change, NewInvitation};
use crate::store::{self, InvitationRow, ListFilter, StoreError, Tx, requests};

const TARGET: &str = "INVITATION";
/// Rows the expiry sweep settles per transaction.
const SWEEP_BATCH: i64 = 100;

fn invitation_event<'a>(
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

/// The invitation mail with its link token (the only place the raw token goes).
fn invitation_mail(row: &InvitationRow, token: &LinkToken) -> OutboxMessage {
    let params = BTreeMap::from([
        ("first_name".to_owned(), row.first_name.clone()),
        (
            "organisation_name".to_owned(),
            row.organisation_name.clone(),
        ),
        ("role".to_owned(), row.role.clone()),
        ("token".to_owned(), token.as_str().to_owned()),
    ]);
    OutboxMessage::Email {
        template: EmailTemplate::Invitation,
        to: row.email.clone(),
        params,
        account_id: None,
    }
}

/// The time a link issued at `now` stops working.
fn expiry(now: DateTime<Utc>, ttl: std::time::Duration) -> Result<DateTime<Utc>, AccessError> {
    TimeDelta::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .ok_or_else(|| AccessError::corrupt("invitation expiry out of range"))
}

fn not_sent(state: InvitationState) -> AccessError {
    AccessError::FailedPrecondition(
        "INVITATION_NOT_SENT",
        format!(
            "the invitation is {}; only a SENT invitation can be resent or cancelled",
            state.as_str()
        ),
    )
}

/// A locked invitation with the state to act on. A SENT one whose link has run out is
/// recorded as EXPIRED (by the service itself) in `tx` first; `expired_now` says so, so a
/// refused caller still commits that record.
struct Locked {
    row: InvitationRow,
    state: InvitationState,
    expired_now: bool,
}

impl AccessApi {
    /// Records `SENT -> EXPIRED` of a locked, run-out invitation, by the service itself.
    async fn record_expiry(
        &self,
        tx: &mut Tx,
        row: &InvitationRow,
        now: DateTime<Utc>,
    ) -> Result<InvitationRow, AccessError> {
        let from = row
            .stored_state()
            .ok_or_else(|| AccessError::corrupt("stored invitation state unknown"))?;
        let to = crate::domain::invitation::transition(from, InvitationEvent::Expire)
            .map_err(AccessError::internal)?;
        let system = Actor::system("");
        let updated = inv_store::set_state(
            tx,
            row.id,
            to,
            Change {
                kind: system.kind,
                id: &system.id,
                reason: "LINK_EXPIRED",
                now,
            },
            None,
        )
        .await?;
        let id = row.id.to_string();
        store::record(
            tx,
            now,
            &system,
            invitation_event(
                "EXPIRE_INVITATION",
                &id,
                serde_json::json!({
                    "from_state": from.as_str(),
                    "to_state": to.as_str(),
                    "expire_time": row.expires_at,
                    "organisation_id": row.organisation_id,
                    "role": row.role,
                }),
            ),
        )
        .await?;
        Ok(updated)
    }

    async fn settle_expiry(
        &self,
        tx: &mut Tx,
        row: InvitationRow,
        now: DateTime<Utc>,
    ) -> Result<Locked, AccessError> {
        let stored = row
            .stored_state()
            .ok_or_else(|| AccessError::corrupt("stored invitation state unknown"))?;
        let state = invitation::effective(stored, row.expires_at, now);
        if stored == InvitationState::Sent && state == InvitationState::Expired {
            let row = self.record_expiry(tx, &row, now).await?;
            return Ok(Locked {
                row,
                state,
                expired_now: true,
            });
        }
        Ok(Locked {
            row,
            state,
            expired_now: false,
        })
    }

    /// Records every run-out SENT invitation as EXPIRED; returns how many. The periodic
    /// sweep calls this; invitations count as expired at once either way.
    pub async fn expire_due(&self) -> Result<usize, AccessError> {
        let mut total = 0;
        loop {
            let now = self.now();
            let mut tx = self.store().begin().await?;
            let due = inv_store::due_for_update(&mut tx, now, SWEEP_BATCH).await?;
            for row in &due {
                self.record_expiry(&mut tx, row, now).await?;
            }
            store::commit(tx).await?;
            total += due.len();
            if i64::try_from(due.len()).unwrap_or(i64::MAX) < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }

    /// Loads an invitation an administrator acts on and authorises the caller for it (see
    /// `authz`: scope on the stored ancestry first, then the role's permission, then the
    /// directory's decision).
    async fn authorised_invitation<T>(
        &self,
        request: &Request<T>,
        access: &authz::Access,
        id: Uuid,
    ) -> Result<(), AccessError> {
        let row = inv_store::get(self.store().pool(), id).await?;
        authz::covers_row(
            access,
            row.as_ref().map(|r| r.organisation_path.as_slice()),
            "invitation",
        )?;
        let row = row.ok_or(AccessError::NotFound("invitation"))?;
        let role = row
            .role()
            .ok_or_else(|| AccessError::corrupt("stored role unknown"))?;
        let permission = authz::for_role(access, Workflow::Invitation, role)?;
        self.authorise_org(
            access,
            permission,
            row.organisation_id,
            request_deadline(request),
        )
        .await
    }

    /// SERVICE_DESK anywhere, COMMISSIONING_ACCOUNT_ADMINISTRATOR in scope (only approvers
    /// for the approver role), or internal. Keyed on request_id.
    pub(super) async fn do_create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<pb::CreateInvitationResponse, AccessError> {
        let principal = principal(&request)?;
        let access = authz::by_role(&principal, Workflow::Invitation)?;
        let actor = Actor::from_request(&request, &principal);
        let deadline = request_deadline(&request);
        let req = request.into_inner();

        let mut violations = FieldViolations::new();
        let mut reason = "INVALID_ARGUMENT";
        let request_id = violations.uuid("request_id", &req.request_id);
        let email = self.email_field(&mut violations, &mut reason, &req.email);
        let first_name = name_field(&mut violations, "first_name", &req.first_name);
        let last_name = name_field(&mut violations, "last_name", &req.last_name);
        let organisation_id = violations.uuid("organisation_id", &req.organisation_id);
        let role = role_field(&mut violations, "role", req.role, true);
        let (
            Some(request_id),
            Some(email),
            Some(first_name),
            Some(last_name),
            Some(organisation_id),
            Some(role),
        ) = (
            request_id,
            email,
            first_name,
            last_name,
            organisation_id,
            role,
        )
        else {
            return Err(AccessError::InvalidArgument { reason, violations });
        };

        let permission = authz::for_role(&access, Workflow::Invitation, role)?;
        let organisation = self
            .authorised_organisation(&access, permission, organisation_id, deadline)
            .await?;
        let (kind, path) = organisation_facts(&organisation)?;
        check_role_at(role, kind)?;

        let org_text = organisation_id.to_string();
        let hash = fingerprint(&[
            "CREATE_INVITATION",
            &email,
            &first_name,
            &last_name,
            &org_text,
            role.as_str(),
        ]);
        for _ in 0..KEYED_ROUNDS {
            if let Some(answer) = self.earlier_answer(request_id, &hash).await? {
                return Ok(answer);
            }
            let now = self.now();
            let mut tx = self.store().begin().await?;
            if !requests::claim(&mut tx, request_id, &hash, now).await? {
                // A parallel request with this id committed first; its answer is read (or
                // its difference refused) on the next round.
                continue;
            }
            // A run-out invitation for the same person, organisation and role is recorded as
            // expired first; a live one refuses the new one below.
            if let Some(lapsed) =
                inv_store::lapsed_for_update(&mut tx, &email, organisation_id, role, now).await?
            {
                self.record_expiry(&mut tx, &lapsed, now).await?;
            }
            let (token, token_hash) = new_link_token();
            let new = NewInvitation {
                id: Uuid::now_v7(),
                email: &email,
                first_name: &first_name,
                last_name: &last_name,
                organisation_id,
                organisation_name: &organisation.name,
                organisation_path: &path,
                role,
                inviter_kind: actor.kind,
                inviter_id: &actor.id,
                token_hash: &token_hash,
                now,
                expires_at: expiry(now, self.settings().invitation_ttl)?,
            };
            let row = match inv_store::insert(&mut tx, &new).await {
                Err(StoreError::Conflict(index)) if index == inv_store::ONE_SENT => {
                    return Err(AccessError::AlreadyExists(
                        "INVITATION_ALREADY_SENT",
                        "this person already has a live invitation to this organisation in \
                         this role; resend it instead"
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
                invitation_event(
                    "CREATE_INVITATION",
                    &id,
                    serde_json::json!({
                        "to_state": row.state,
                        "organisation_id": row.organisation_id,
                        "role": row.role,
                        "expire_time": row.expires_at,
                    }),
                ),
            )
            .await?;
            store::enqueue(&mut tx, &invitation_mail(&row, &token)).await?;
            let answer = pb::CreateInvitationResponse {
                invitation: Some(convert::invitation(&row, now)),
            };
            requests::answer(&mut tx, request_id, &answer.encode_to_vec()).await?;
            store::commit(tx).await?;
            tracing::info!(invitation_id = %row.id, organisation_id = %row.organisation_id, role = %row.role, "invitation sent");
            return Ok(answer);
        }
        Err(AccessError::corrupt(
            "request id still contended after retries",
        ))
    }

    /// Invitations in the caller's scope, of the roles it may invite into, newest first.
    pub(super) async fn do_list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<pb::ListInvitationsResponse, AccessError> {
        let principal = principal(&request)?;
        let access = authz::by_role(&principal, Workflow::Invitation)?;
        let deadline = request_deadline(&request);
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let organisation = violations.optional_uuid("organisation_id", &req.organisation_id);
        let state = match convert::invitation_state_from_proto(req.state) {
            Ok(state) => state,
            Err(convert::UnknownValue) => {
                violations.add("state", "must be a known InvitationState");
                None
            }
        };
        let (page_size, after) = page_fields(&mut violations, req.page_size, &req.page_token);
        violations.into_result()?;

        let root = self
            .list_root(
                &access,
                &Workflow::Invitation.permissions(),
                organisation,
                deadline,
            )
            .await?;
        let filter = ListFilter {
            root,
            roles: authz::actionable_roles(&access, Workflow::Invitation)
                .map(|roles| roles.iter().map(|r| r.as_str().to_owned()).collect()),
            state: state.map(InvitationState::as_str),
        };
        let now = self.now();
        let page =
            inv_store::list(self.store().pool(), &filter, now, page_size, after.as_ref()).await?;
        Ok(pb::ListInvitationsResponse {
            invitations: page
                .items
                .iter()
                .map(|row| convert::invitation(row, now))
                .collect(),
            next_page_token: page.next_page_token(),
        })
    }

    /// A new link and expiry for a SENT invitation; the old link stops working.
    pub(super) async fn do_resend_invitation(
        &self,
        request: Request<pb::ResendInvitationRequest>,
    ) -> Result<pb::ResendInvitationResponse, AccessError> {
        let principal = principal(&request)?;
        let access = authz::by_role(&principal, Workflow::Invitation)?;
        let actor = Actor::from_request(&request, &principal);
        let id = id_field("invitation_id", &request.get_ref().invitation_id)?;
        self.authorised_invitation(&request, &access, id).await?;

        let now = self.now();
        let mut tx = self.store().begin().await?;
        let row = inv_store::get_for_update(&mut tx, id)
            .await?
            .ok_or(AccessError::NotFound("invitation"))?;
        let locked = self.settle_expiry(&mut tx, row, now).await?;
        if let Err(refusal) = invitation::transition(locked.state, InvitationEvent::Resend) {
            if locked.expired_now {
                store::commit(tx).await?;
            }
            tracing::debug!(%refusal, "resend refused");
            return Err(not_sent(locked.state));
        }
        let (token, token_hash) = new_link_token();
        let expires_at = expiry(now, self.settings().invitation_ttl)?;
        let row = inv_store::resend(
            &mut tx,
            id,
            &token_hash,
            expires_at,
            Change {
                kind: actor.kind,
                id: &actor.id,
                reason: "",
                now,
            },
        )
        .await?;
        let id_text = id.to_string();
        store::record(
            &mut tx,
            now,
            &actor,
            invitation_event(
                "RESEND_INVITATION",
                &id_text,
                serde_json::json!({
                    "from_state": locked.state.as_str(),
                    "to_state": row.state,
                    "expire_time": row.expires_at,
                }),
            ),
        )
        .await?;
        store::enqueue(&mut tx, &invitation_mail(&row, &token)).await?;
        store::commit(tx).await?;
        Ok(pb::ResendInvitationResponse {
            invitation: Some(convert::invitation(&row, now)),
        })
    }

    /// SENT -> CANCELLED; the link stops working.
    pub(super) async fn do_cancel_invitation(
        &self,
        request: Request<pb::CancelInvitationRequest>,
    ) -> Result<pb::CancelInvitationResponse, AccessError> {
        let principal = principal(&request)?;
        let access = authz::by_role(&principal, Workflow::Invitation)?;
        let actor = Actor::from_request(&request, &principal);
        let id = id_field("invitation_id", &request.get_ref().invitation_id)?;
        self.authorised_invitation(&request, &access, id).await?;

        let now = self.now();
        let mut tx = self.store().begin().await?;
        let row = inv_store::get_for_update(&mut tx, id)
            .await?
            .ok_or(AccessError::NotFound("invitation"))?;
        let locked = self.settle_expiry(&mut tx, row, now).await?;
        let Ok(to) = invitation::transition(locked.state, InvitationEvent::Cancel) else {
            if locked.expired_now {
                store::commit(tx).await?;
            }
            return Err(not_sent(locked.state));
        };
        let row = inv_store::set_state(
            &mut tx,
            id,
            to,
            Change {
                kind: actor.kind,
                id: &actor.id,
                reason: "",
                now,
            },
            None,
        )
        .await?;
        let id_text = id.to_string();
        store::record(
            &mut tx,
            now,
            &actor,
            invitation_event(
                "CANCEL_INVITATION",
                &id_text,
                serde_json::json!({
                    "from_state": locked.state.as_str(),
                    "to_state": to.as_str(),
                }),
            ),
        )
        .await?;
        store::commit(tx).await?;
        Ok(pb::CancelInvitationResponse {
            invitation: Some(convert::invitation(&row, now)),
        })
    }

    /// Public: the token is the credential. Anything but a live link is LINK_INVALID.
    pub(super) async fn do_get_invitation(
        &self,
        request: Request<pb::GetInvitationRequest>,
    ) -> Result<pb::GetInvitationResponse, AccessError> {
        let token = &request.get_ref().token;
        if !is_well_formed_token(token) {
            return Err(AccessError::from(AccessReason::LinkInvalid));
        }
        let now = self.now();
        let row = inv_store::by_token(self.store().pool(), &hash_token(token))
            .await?
            .ok_or(AccessError::from(AccessReason::LinkInvalid))?;
        let state = row
            .stored_state()
            .map(|state| invitation::effective(state, row.expires_at, now));
        if state != Some(InvitationState::Sent) {
            return Err(AccessError::from(AccessReason::LinkInvalid));
        }
        Ok(pb::GetInvitationResponse {
            invitation: Some(convert::invitation(&row, now)),
        })
    }

    /// Public, single use: SENT -> ACCEPTED. The account is created in identity (which mails
    /// its set-password link) unless the address has one, and the role is granted in the
    /// directory, both while the invitation is locked (see the module docs of `api`).
    pub(super) async fn do_accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Result<pb::AcceptInvitationResponse, AccessError> {
        let actor = Actor::anonymous(&request);
        let deadline = request_deadline(&request);
        let req = request.into_inner();
        // The invitee may correct the names the inviter typed; empty keeps them.
        let mut violations = FieldViolations::new();
        let mut corrected = |field: &str, raw: &str| {
            if raw.trim().is_empty() {
                None
            } else {
                name_field(&mut violations, field, raw)
            }
        };
        let first_name = corrected("first_name", &req.first_name);
        let last_name = corrected("last_name", &req.last_name);
        violations.into_result()?;
        if !is_well_formed_token(&req.token) {
            return Err(AccessError::from(AccessReason::LinkInvalid));
        }

        let now = self.now();
        let mut tx = self.store().begin().await?;
        // A parallel accept of the same link waits here until this one is done, then finds
        // the invitation ACCEPTED.
        let row = inv_store::by_token_for_update(&mut tx, &hash_token(&req.token))
            .await?
            .ok_or(AccessError::from(AccessReason::LinkInvalid))?;
        let locked = self.settle_expiry(&mut tx, row, now).await?;
        let Ok(to) = invitation::transition(locked.state, InvitationEvent::Accept) else {
            if locked.expired_now {
                store::commit(tx).await?;
            }
            return Err(AccessError::from(AccessReason::LinkInvalid));
        };
        let row = locked.row;
        let role = row
            .role()
            .ok_or_else(|| AccessError::corrupt("stored role unknown"))?;
        let first_name = first_name.unwrap_or_else(|| row.first_name.clone());
        let last_name = last_name.unwrap_or_else(|| row.last_name.clone());

        let ensured = self
            .peers()
            .identity
            .ensure_account(
                derived_id(row.id, "accept-invitation:account"),
                self.settings().account_realm,
                &row.email,
                &first_name,
                &last_name,
                deadline,
            )
            .await?;
        let account_id = Uuid::parse_str(&ensured.account.id).map_err(AccessError::internal)?;
        let grant = self
            .peers()
            .directory
            .grant_role(
                derived_id(row.id, "accept-invitation:grant"),
                account_id,
                row.organisation_id,
                role,
                deadline,
            )
            .await?;

        let updated = inv_store::set_state(
            &mut tx,
            row.id,
            to,
            Change {
                kind: actor.kind,
                id: &actor.id,
                reason: "",
                now,
            },
            Some((account_id, &first_name, &last_name)),
        )
        .await?;
        let id_text = row.id.to_string();
        store::record(
            &mut tx,
            now,
            &actor,
            invitation_event(
                "ACCEPT_INVITATION",
                &id_text,
                serde_json::json!({
                    "from_state": locked.state.as_str(),
                    "to_state": to.as_str(),
                    "account_id": account_id,
                    "account_created": ensured.created,
                    "grant_id": grant.id,
                    "organisation_id": row.organisation_id,
                    "role": row.role,
                }),
            ),
        )
        .await?;
        store::commit(tx).await?;
        tracing::info!(invitation_id = %row.id, %account_id, "invitation accepted");
        Ok(pb::AcceptInvitationResponse {
            invitation: Some(convert::invitation(&updated, now)),
        })
    }
}
