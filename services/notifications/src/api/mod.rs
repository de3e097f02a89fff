//! gRPC handlers: decode, authorise, call the domain and the store, map errors once
//! ([`NotificationError`]). Each RPC is a thin trait method over a `do_` method that returns
//! the service's error, as in every service of the suite.

mod convert;
mod error;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_auth::{Permission, Principal};
use cqrs_edge::audit::{self, AuditQuery};
use cqrs_edge::request::{id_field, principal};
use cqrs_edge::scope;
use cqrs_proto::notifications::v1::{self as pb, notification_service_server::NotificationService};
use cqrs_runtime::audit::Actor;
use cqrs_runtime::clock::Clock;
use cqrs_runtime::errors::FieldViolations;
use cqrs_runtime::paging::page_request;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub use error::{NotificationError, NotificationReason};

use crate::domain::{DeliveryState, NewEmail, NewNotification};
use crate::store::Store;
use error::store_error;

#[derive(Clone)]
pub struct NotificationApi {
    store: Store,
    clock: Arc<dyn Clock>,
}

impl NotificationApi {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        NotificationApi { store, clock }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

type ApiResult<T> = Result<Response<T>, Status>;

/// Reason when an RPC is for a signed-in user's own inbox and preferences.
const USER_PRINCIPAL_REQUIRED: &str = "USER_PRINCIPAL_REQUIRED";
/// Reason when delivery records are asked for without an operations role.
const OPERATIONS_ROLE_REQUIRED: &str = "OPERATIONS_ROLE_REQUIRED";

/// The caller's own inbox and preferences: a signed-in user.
fn require_user(principal: &Principal) -> Result<Uuid, NotificationError> {
    principal
        .account_id()
        .ok_or(NotificationError::PermissionDenied(USER_PRINCIPAL_REQUIRED))
}

/// Delivery records are for operations: a service, or a user acting as the service desk.
fn require_operations(principal: &Principal) -> Result<(), NotificationError> {
    scope::by_permission(principal, Permission::ViewDeliveries)
        .map(drop)
        .map_err(|_| NotificationError::PermissionDenied(OPERATIONS_ROLE_REQUIRED))
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    async fn enqueue_email(
        &self,
        request: Request<pb::EnqueueEmailRequest>,
    ) -> ApiResult<pb::EnqueueEmailResponse> {
        Ok(Response::new(self.do_enqueue_email(request).await?))
    }

    async fn notify(&self, request: Request<pb::NotifyRequest>) -> ApiResult<pb::NotifyResponse> {
        Ok(Response::new(self.do_notify(request).await?))
    }

    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> ApiResult<pb::ListNotificationsResponse> {
        Ok(Response::new(self.do_list_notifications(request).await?))
    }

    async fn mark_notification_read(
        &self,
        request: Request<pb::MarkNotificationReadRequest>,
    ) -> ApiResult<pb::MarkNotificationReadResponse> {
        Ok(Response::new(
            self.do_mark_notification_read(request).await?,
        ))
    }

    async fn get_preferences(
        &self,
        request: Request<pb::GetPreferencesRequest>,
    ) -> ApiResult<pb::GetPreferencesResponse> {
        Ok(Response::new(self.do_get_preferences(request).await?))
    }

    async fn update_preferences(
        &self,
        request: Request<pb::UpdatePreferencesRequest>,
    ) -> ApiResult<pb::UpdatePreferencesResponse> {
        Ok(Response::new(self.do_update_preferences(request).await?))
    }

    async fn get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> ApiResult<pb::GetDeliveryResponse> {
        Ok(Response::new(self.do_get_delivery(request).await?))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> ApiResult<pb::ListDeliveriesResponse> {
        Ok(Response::new(self.do_list_deliveries(request).await?))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> ApiResult<pb::ListAuditEventsResponse> {
        Ok(Response::new(self.do_list_audit_events(request).await?))
    }
}

impl NotificationApi {
    /// Producers only: mail is raised by the workflows, never by users.
    async fn do_enqueue_email(
        &self,
        request: Request<pb::EnqueueEmailRequest>,
    ) -> Result<pb::EnqueueEmailResponse, NotificationError> {
        let principal = principal(&request)?;
        scope::internal_only(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let req = request.into_inner();
        let params: BTreeMap<String, String> = req.params.into_iter().collect();
        let email = NewEmail::validate(
            &req.idempotency_key,
            convert::template_from_proto(req.template),
            &req.to,
            params,
            &req.account_id,
        )?;
        let (row, created) = self.store.insert_email(&email, self.now(), &actor).await?;
        if created {
            tracing::info!(delivery_id = %row.id, template = %row.template, state = %row.state, "mail accepted");
        }
        Ok(pb::EnqueueEmailResponse {
            delivery: Some(convert::delivery(&row)),
        })
    }

    /// Producers only: in-app notices are raised by the workflows, never by users.
    async fn do_notify(
        &self,
        request: Request<pb::NotifyRequest>,
    ) -> Result<pb::NotifyResponse, NotificationError> {
        let principal = principal(&request)?;
        scope::internal_only(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let req = request.into_inner();
        let notification = NewNotification::validate(
            &req.account_ids,
            &req.kind,
            &req.title,
            &req.body,
            &req.idempotency_key,
        )?
        .about(&req.subject_id)?;
        let rows = self
            .store
            .insert_notifications(&notification, self.now(), &actor)
            .await?;
        Ok(pb::NotifyResponse {
            notifications: rows.iter().map(convert::notification).collect(),
        })
    }

    async fn do_list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<pb::ListNotificationsResponse, NotificationError> {
        let account_id = require_user(&principal(&request)?)?;
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let (page_size, after) = page_request(&mut violations, req.page_size, &req.page_token);
        violations.into_result()?;
        let (page, unread) = self
            .store
            .list_notifications(account_id, req.unread_only, page_size, after.as_ref())
            .await?;
        Ok(pb::ListNotificationsResponse {
            notifications: page.items.iter().map(convert::notification).collect(),
            next_page_token: page.next_page_token(),
            unread_count: i32::try_from(unread).unwrap_or(i32::MAX),
        })
    }

    async fn do_mark_notification_read(
        &self,
        request: Request<pb::MarkNotificationReadRequest>,
    ) -> Result<pb::MarkNotificationReadResponse, NotificationError> {
        let principal = principal(&request)?;
        let account_id = require_user(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let id = id_field("notification_id", &request.get_ref().notification_id)?;
        let row = self
            .store
            .mark_read(account_id, id, self.now(), &actor)
            .await
            .map_err(store_error("notification"))?;
        Ok(pb::MarkNotificationReadResponse {
            notification: Some(convert::notification(&row)),
        })
    }

    async fn do_get_preferences(
        &self,
        request: Request<pb::GetPreferencesRequest>,
    ) -> Result<pb::GetPreferencesResponse, NotificationError> {
        let account_id = require_user(&principal(&request)?)?;
        let row = self.store.preferences(account_id).await?;
        Ok(pb::GetPreferencesResponse {
            preferences: Some(convert::preferences(&row)),
        })
    }

    async fn do_update_preferences(
        &self,
        request: Request<pb::UpdatePreferencesRequest>,
    ) -> Result<pb::UpdatePreferencesResponse, NotificationError> {
        let principal = principal(&request)?;
        let account_id = require_user(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let email_enabled = request.get_ref().email_enabled;
        let row = self
            .store
            .update_preferences(account_id, email_enabled, self.now(), &actor)
            .await?;
        Ok(pb::UpdatePreferencesResponse {
            preferences: Some(convert::preferences(&row)),
        })
    }

    async fn do_get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> Result<pb::GetDeliveryResponse, NotificationError> {
        require_operations(&principal(&request)?)?;
        let id = id_field("id", &request.get_ref().id)?;
        let row = self
            .store
            .delivery(id)
            .await
            .map_err(store_error("delivery"))?;
        Ok(pb::GetDeliveryResponse {
            delivery: Some(convert::delivery(&row)),
        })
    }

    async fn do_list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<pb::ListDeliveriesResponse, NotificationError> {
        require_operations(&principal(&request)?)?;
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let state = match pb::DeliveryState::try_from(req.state) {
            Ok(pb::DeliveryState::Unspecified) => None,
            Ok(state) => {
                DeliveryState::parse(state.as_str_name().trim_start_matches("DELIVERY_STATE_"))
            }
            Err(_) => {
                violations.add("state", "must be a known DeliveryState");
                None
            }
        };
        let (page_size, after) = page_request(&mut violations, req.page_size, &req.page_token);
        violations.into_result()?;
        let page = self
            .store
            .list_deliveries(state, page_size, after.as_ref())
            .await?;
        Ok(pb::ListDeliveriesResponse {
            deliveries: page.items.iter().map(convert::delivery).collect(),
            next_page_token: page.next_page_token(),
        })
    }

    /// SERVICE_DESK (the only suite-wide holder of `ViewAuditEvents`), or internal: the trail
    /// is not split by organisation, so a subtree's administrator cannot be given part of it.
    async fn do_list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<pb::ListAuditEventsResponse, NotificationError> {
        let principal = principal(&request)?;
        scope::by_permission(&principal, Permission::ViewAuditEvents)?.suite_wide()?;
        let query = AuditQuery::from(request.get_ref()).check()?;
        let (audit_events, next_page_token) = audit::page(self.store.pool(), &query).await?;
        Ok(pb::ListAuditEventsResponse {
            audit_events,
            next_page_token,
        })
    }
}
