//! gRPC handlers: decode, authorise, call the domain and store, map errors once.

mod convert;
mod error;

use std::collections::BTreeMap;

use chrono::Utc;
use cqrs_auth::{Permission, Principal};
use cqrs_proto::notifications::v1::{self as pb, notification_service_server::NotificationService};
use cqrs_runtime::audit::Actor;
use cqrs_runtime::errors::FieldViolations;
use cqrs_runtime::paging::page_request;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub use error::NotificationError;

use crate::domain::{DeliveryState, NewEmail, NewNotification};
use crate::store::Store;

#[derive(Clone)]
pub struct NotificationApi {
    store: Store,
}

impl NotificationApi {
    pub fn new(store: Store) -> Self {
        NotificationApi { store }
    }
}

type ApiResult<T> = Result<Response<T>, Status>;

/// Producers only: mail and in-app notices are raised by the workflows, never by users.
fn require_service(principal: &Principal) -> Result<(), NotificationError> {
    if principal.is_service() {
        Ok(())
    } else {
        Err(NotificationError::PermissionDenied(
            "SERVICE_PRINCIPAL_REQUIRED",
        ))
    }
}

/// The caller's own inbox and preferences: a signed-in user.
fn require_user(principal: &Principal) -> Result<Uuid, NotificationError> {
    principal
        .account_id()
        .ok_or(NotificationError::PermissionDenied(
            "USER_PRINCIPAL_REQUIRED",
        ))
}

/// Delivery records are for operations: a service, or a user acting as the service desk.
fn require_operations(principal: &Principal) -> Result<(), NotificationError> {
    let allowed = principal.is_service()
        || principal
            .active_role()
            .is_some_and(|role| cqrs_auth::role_grants(role, Permission::ViewDeliveries));
    if allowed {
        Ok(())
    } else {
        Err(NotificationError::PermissionDenied(
            "OPERATIONS_ROLE_REQUIRED",
        ))
    }
}

fn parse_id(field: &str, raw: &str) -> Result<Uuid, NotificationError> {
    Uuid::parse_str(raw).map_err(|_| {
        let mut violations = FieldViolations::new();
        violations.add(field, "must be a UUID");
        NotificationError::InvalidArgument(violations)
    })
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    async fn enqueue_email(
        &self,
        request: Request<pb::EnqueueEmailRequest>,
    ) -> ApiResult<pb::EnqueueEmailResponse> {
        let principal = cqrs_auth::principal(&request)?.clone();
        require_service(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let req = request.into_inner();
        let params: BTreeMap<String, String> = req.params.into_iter().collect();
        let email = NewEmail::validate(
            &req.idempotency_key,
            convert::template_from_proto(req.template),
            &req.to,
            params,
            &req.account_id,
        )
        .map_err(NotificationError::InvalidArgument)?;
        let (row, created) = self
            .store
            .insert_email(&email, Utc::now(), &actor)
            .await
            .map_err(NotificationError::from)?;
        if created {
            tracing::info!(delivery_id = %row.id, template = %row.template, state = %row.state, "mail accepted");
        }
        Ok(Response::new(pb::EnqueueEmailResponse {
            delivery: Some(convert::delivery(&row)),
        }))
    }

    async fn notify(&self, request: Request<pb::NotifyRequest>) -> ApiResult<pb::NotifyResponse> {
        let principal = cqrs_auth::principal(&request)?.clone();
        require_service(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let req = request.into_inner();
        let notification = NewNotification::validate(
            &req.account_ids,
            &req.kind,
            &req.title,
            &req.body,
            &req.idempotency_key,
        )
        .map_err(NotificationError::InvalidArgument)?;
        let rows = self
            .store
            .insert_notifications(&notification, Utc::now(), &actor)
            .await
            .map_err(NotificationError::from)?;
        Ok(Response::new(pb::NotifyResponse {
            notifications: rows.iter().map(convert::notification).collect(),
        }))
    }

    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> ApiResult<pb::ListNotificationsResponse> {
        let account_id = require_user(cqrs_auth::principal(&request)?)?;
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let (page_size, after) = page_request(&mut violations, req.page_size, &req.page_token);
        violations
            .into_result()
            .map_err(NotificationError::InvalidArgument)?;
        let (page, unread) = self
            .store
            .list_notifications(account_id, req.unread_only, page_size, after.as_ref())
            .await
            .map_err(NotificationError::from)?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: page.items.iter().map(convert::notification).collect(),
            next_page_token: page.next_page_token(),
            unread_count: i32::try_from(unread).unwrap_or(i32::MAX),
        }))
    }

    async fn mark_notification_read(
        &self,
        request: Request<pb::MarkNotificationReadRequest>,
    ) -> ApiResult<pb::MarkNotificationReadResponse> {
        let principal = cqrs_auth::principal(&request)?.clone();
        let account_id = require_user(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let id = parse_id("notification_id", &request.get_ref().notification_id)?;
        let row = self
            .store
            .mark_read(account_id, id, Utc::now(), &actor)
            .await
            .map_err(|e| NotificationError::from(e).not_found_as("notification"))?;
        Ok(Response::new(pb::MarkNotificationReadResponse {
            notification: Some(convert::notification(&row)),
        }))
    }

    async fn get_preferences(
        &self,
        request: Request<pb::GetPreferencesRequest>,
    ) -> ApiResult<pb::GetPreferencesResponse> {
        let account_id = require_user(cqrs_auth::principal(&request)?)?;
        let row = self
            .store
            .preferences(account_id)
            .await
            .map_err(NotificationError::from)?;
        Ok(Response::new(pb::GetPreferencesResponse {
            preferences: Some(convert::preferences(&row)),
        }))
    }

    async fn update_preferences(
        &self,
        request: Request<pb::UpdatePreferencesRequest>,
    ) -> ApiResult<pb::UpdatePreferencesResponse> {
        let principal = cqrs_auth::principal(&request)?.clone();
        let account_id = require_user(&principal)?;
        let actor = Actor::from_request(&request, &principal);
        let row = self
            .store
            .update_preferences(
                account_id,
                request.get_ref().email_enabled,
                Utc::now(),
                &actor,
            )
            .await
            .map_err(NotificationError::from)?;
        Ok(Response::new(pb::UpdatePreferencesResponse {
            preferences: Some(convert::preferences(&row)),
        }))
    }

    async fn get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> ApiResult<pb::GetDeliveryResponse> {
        require_operations(cqrs_auth::principal(&request)?)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let row = self
            .store
            .delivery(id)
            .await
            .map_err(|e| NotificationError::from(e).not_found_as("delivery"))?;
        Ok(Response::new(pb::GetDeliveryResponse {
            delivery: Some(convert::delivery(&row)),
        }))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> ApiResult<pb::ListDeliveriesResponse> {
        require_operations(cqrs_auth::principal(&request)?)?;
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
        violations
            .into_result()
            .map_err(NotificationError::InvalidArgument)?;
        let page = self
            .store
            .list_deliveries(state, page_size, after.as_ref())
            .await
            .map_err(NotificationError::from)?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: page.items.iter().map(convert::delivery).collect(),
            next_page_token: page.next_page_token(),
        }))
    }
}
