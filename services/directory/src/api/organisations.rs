//! Organisations: keyed create, reads, search and the providers' approval level.

use cqrs_auth::Permission;
use cqrs_proto::directory::v1 as pb;
use cqrs_runtime::audit::{Actor, Event};
use cqrs_runtime::errors::FieldViolations;
use cqrs_runtime::idempotency::fingerprint;
use cqrs_runtime::paging::{page_request, page_request_bounded};
use prost::Message;
use tonic::Request;
use uuid::Uuid;

use super::{DirectoryApi, DirectoryError, authz, convert, id_field, principal, request_id_field};
use crate::domain::{NewOrganisation, OrganisationKind, SearchQuery};
use crate::store::{self, OrganisationRow, organisations as org_store, requests};

/// SearchOrganisations page sizes (its own contract: 0 means 20, at most 100).
const SEARCH_DEFAULT_PAGE: i32 = 20;
const SEARCH_MAX_PAGE: i32 = 100;
/// A keyed create whose request id is contended waits for the holder, then finds its answer
/// on the next round: two rounds always suffice, the third is a safety margin.
const KEYED_ROUNDS: usize = 3;

fn organisation_event<'a>(
    action: &'a str,
    target_id: &'a str,
    details: serde_json::Value,
) -> Event<'a> {
    Event {
        changes: cqrs_runtime::audit::Changes::new(),
        action,
        target_type: "organisation",
        target_id,
        outcome: "success",
        details,
    }
}

/// The kind field of a request: unknown numbers and (when `required`) UNSPECIFIED are
/// violations.
fn kind_field(
    violations: &mut FieldViolations,
    value: i32,
    required: bool,
) -> Option<OrganisationKind> {
    match convert::kind_from_proto(value) {
        Ok(Some(kind)) => Some(kind),
        Ok(None) => {
            if required {
                violations.add("kind", "is required");
            }
            None
        }
        Err(convert::UnknownValue) => {
            violations.add("kind", "must be a known OrganisationKind");
            None
        }
    }
}

impl DirectoryApi {
    /// The answer a keyed create gave first ([`request::earlier_answer`]).
    pub(super) async fn earlier_answer<M: Message + Default>(
        &self,
        request_id: Uuid,
        hash: &[u8; 32],
    ) -> Result<Option<M>, DirectoryError> {
        cqrs_edge::request::earlier_answer(self.store().pool(), request_id, hash).await
    }

    pub(super) async fn do_create_organisation(
        &self,
        request: Request<pb::CreateOrganisationRequest>,
    ) -> Result<pb::CreateOrganisationResponse, DirectoryError> {
        let principal = principal(&request)?;
        let access = authz::by_role(&principal, Permission::CreateOrganisation)?;
        let actor = Actor::from_request(&request, &principal);
        let req = request.into_inner();

        let mut violations = FieldViolations::new();
        let request_id = request_id_field(&mut violations, &req.request_id);
        let kind = kind_field(&mut violations, req.kind, true);
        let new = NewOrganisation::validate(
            &mut violations,
            kind,
            &req.ods_code,
            &req.name,
            &req.parent_id,
            req.multi_level_approval,
        );
        let (Some(request_id), Some(new), true) = (request_id, new, violations.is_empty()) else {
            return Err(DirectoryError::invalid(violations));
        };

        // The parent is the target: creating under it needs scope over it; a root is created
        // in the suite as a whole.
        let parent = match new.parent_id {
            Some(parent_id) => {
                self.authorise_org(
                    &access,
                    Permission::CreateOrganisation,
                    parent_id,
                    "parent organisation",
                )
                .await?;
                Some(
                    org_store::get(self.store().pool(), parent_id)
                        .await?
                        .ok_or(DirectoryError::NotFound("parent organisation"))?,
                )
            }
            None => {
                self.authorise_suite(&access, Permission::CreateOrganisation)
                    .await?;
                None
            }
        };
        if let (Some(rule), Some(parent)) = (new.parent_rule(), &parent) {
            let parent_kind = parent.kind().ok_or_else(|| {
                DirectoryError::internal(std::io::Error::other("stored organisation kind unknown"))
            })?;
            rule.check(parent_kind).map_err(|rule| {
                DirectoryError::FailedPrecondition("PARENT_KIND_MISMATCH", rule.describe())
            })?;
        }

        let parent_text = new.parent_id.map(|p| p.to_string()).unwrap_or_default();
        let hash = fingerprint(&[
            "CREATE_ORGANISATION",
            new.kind.as_str(),
            &new.ods_code,
            &new.name,
            &parent_text,
            if new.multi_level_approval {
                "true"
            } else {
                "false"
            },
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
            let row = org_store::insert(&mut tx, &new, parent.as_ref(), now).await?;
            let id = row.id.to_string();
            store::record(
                &mut tx,
                now,
                &actor,
                organisation_event(
                    "CREATE_ORGANISATION",
                    &id,
                    serde_json::json!({
                        "kind": row.kind,
                        "ods_code": row.ods_code,
                        "parent_id": row.parent_id,
                        "multi_level_approval": row.multi_level_approval,
                    }),
                ),
            )
            .await?;
            let answer = pb::CreateOrganisationResponse {
                organisation: Some(convert::organisation(&row)),
            };
            requests::answer(&mut tx, request_id, &answer.encode_to_vec()).await?;
            store::commit(tx).await?;
            tracing::info!(organisation_id = %row.id, kind = %row.kind, ods_code = %row.ods_code, "organisation created");
            return Ok(answer);
        }
        Err(DirectoryError::internal(std::io::Error::other(
            "request id still contended after retries",
        )))
    }

    /// Any signed-in user, or internal: organisations are not secret (search is public).
    pub(super) async fn do_get_organisation(
        &self,
        request: Request<pb::GetOrganisationRequest>,
    ) -> Result<pb::GetOrganisationResponse, DirectoryError> {
        principal(&request)?;
        let id = id_field("organisation_id", &request.get_ref().organisation_id)?;
        let row = org_store::get(self.store().pool(), id)
            .await?
            .ok_or(DirectoryError::NotFound("organisation"))?;
        Ok(pb::GetOrganisationResponse {
            organisation: Some(convert::organisation(&row)),
        })
    }

    /// Public (the self-registration form): name prefix or exact ODS code, in name order.
    pub(super) async fn do_search_organisations(
        &self,
        request: Request<pb::SearchOrganisationsRequest>,
    ) -> Result<pb::SearchOrganisationsResponse, DirectoryError> {
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let query = SearchQuery::parse(&req.query)
            .map_err(|e| violations.add("query", e))
            .ok();
        let kind = kind_field(&mut violations, req.kind, false);
        let (page_size, after) = page_request_bounded(
            &mut violations,
            req.page_size,
            &req.page_token,
            SEARCH_DEFAULT_PAGE,
            SEARCH_MAX_PAGE,
        );
        let (Some(query), true) = (query, violations.is_empty()) else {
            return Err(DirectoryError::invalid(violations));
        };
        let page = org_store::search(
            self.store().pool(),
            &query.name_prefix,
            query.ods_code.as_deref(),
            kind,
            page_size,
            after.as_ref(),
        )
        .await?;
        Ok(pb::SearchOrganisationsResponse {
            organisations: page.items.iter().map(convert::organisation).collect(),
            next_page_token: page.next_page_token(),
        })
    }

    /// Any signed-in user, or internal. An unknown parent has no children.
    pub(super) async fn do_list_organisations(
        &self,
        request: Request<pb::ListOrganisationsRequest>,
    ) -> Result<pb::ListOrganisationsResponse, DirectoryError> {
        principal(&request)?;
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let parent = if req.parent_id.is_empty() {
            None
        } else {
            Uuid::parse_str(&req.parent_id)
                .map_err(|_| violations.add("parent_id", "must be a UUID"))
                .ok()
        };
        let (page_size, after) = page_request(&mut violations, req.page_size, &req.page_token);
        violations.into_result()?;
        let page =
            org_store::children(self.store().pool(), parent, page_size, after.as_ref()).await?;
        Ok(pb::ListOrganisationsResponse {
            organisations: page.items.iter().map(convert::organisation).collect(),
            next_page_token: page.next_page_token(),
        })
    }

    /// Commissioning roles other than the account administrator, in scope; or internal.
    pub(super) async fn do_set_approval_level(
        &self,
        request: Request<pb::SetApprovalLevelRequest>,
    ) -> Result<pb::SetApprovalLevelResponse, DirectoryError> {
        let principal = principal(&request)?;
        let access = authz::by_role(&principal, Permission::SetApprovalLevel)?;
        let actor = Actor::from_request(&request, &principal);
        let req = request.into_inner();
        let id = id_field("organisation_id", &req.organisation_id)?;
        self.authorise_org(&access, Permission::SetApprovalLevel, id, "organisation")
            .await?;

        let now = self.now();
        let mut tx = self.store().begin().await?;
        let current = org_store::get_for_update(&mut tx, id)
            .await?
            .ok_or(DirectoryError::NotFound("organisation"))?;
        if current.kind() != Some(OrganisationKind::ServiceProvider) {
            return Err(DirectoryError::FailedPrecondition(
                "NOT_A_SERVICE_PROVIDER",
                "only service providers have an approval level".into(),
            ));
        }
        let row: OrganisationRow = if current.multi_level_approval == req.multi_level_approval {
            // Nothing changes, so nothing to audit.
            current
        } else {
            let row = org_store::set_approval_level(&mut tx, id, req.multi_level_approval, now)
                .await?
                .ok_or(DirectoryError::NotFound("organisation"))?;
            let target = row.id.to_string();
            store::record(
                &mut tx,
                now,
                &actor,
                organisation_event(
                    "SET_APPROVAL_LEVEL",
                    &target,
                    serde_json::json!({ "multi_level_approval": row.multi_level_approval }),
                ),
            )
            .await?;
            row
        };
        store::commit(tx).await?;
        Ok(pb::SetApprovalLevelResponse {
            organisation: Some(convert::organisation(&row)),
        })
    }
}
