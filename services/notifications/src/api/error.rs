//! The notification service's errors: the suite's common ones ([`ApiError`]) plus its own
//! reasons, mapped to `tonic::Status` once, in `cqrs_edge`.

use cqrs_edge::{ApiError, Refusal, ServiceReason};
use tonic::Code;

use crate::store::StoreError;

pub const DOMAIN: &str = "cqrs.notifications";

/// Every failure of a notification RPC.
pub type NotificationError = ApiError<NotificationReason>;

/// What only the notification service refuses.
#[derive(Debug, thiserror::Error)]
pub enum NotificationReason {
    #[error("the idempotency key was already used for a different request")]
    IdempotencyKeyReused,
}

impl ServiceReason for NotificationReason {
    const DOMAIN: &'static str = DOMAIN;

    fn refusal(&self) -> Refusal {
        match self {
            NotificationReason::IdempotencyKeyReused => Refusal::new(
                Code::AlreadyExists,
                "IDEMPOTENCY_KEY_REUSED",
                "the idempotency key was already used for a different request",
            ),
        }
    }
}

/// A store failure; `what` names the record a "not found" is about.
pub fn store_error(what: &'static str) -> impl FnOnce(StoreError) -> NotificationError {
    move |err| match err {
        StoreError::IdempotencyConflict => NotificationReason::IdempotencyKeyReused.into(),
        StoreError::NotFound => NotificationError::NotFound(what),
        StoreError::Unavailable(e) => NotificationError::database_unavailable(e),
        StoreError::Database(e) => NotificationError::internal(e),
    }
}

impl From<StoreError> for NotificationError {
    fn from(err: StoreError) -> Self {
        store_error("resource")(err)
    }
}
