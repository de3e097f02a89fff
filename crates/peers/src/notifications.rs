//! The notification service: mail and in-app notices, both keyed on an idempotency key.

use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::TokenSource;
use cqrs_proto::notifications::v1::{
    self as pb, notification_service_client::NotificationServiceClient,
};
use cqrs_runtime::server::RequestDeadline;
use tonic::transport::Channel;

use crate::{Caller, PeerError, Retry};

const NOTIFICATIONS: &str = "notifications";

/// A client of the notification service; cheap to clone.
#[derive(Clone)]
pub struct NotificationsPeer {
    client: NotificationServiceClient<Channel>,
    caller: Caller,
}

impl NotificationsPeer {
    pub fn new(channel: Channel, tokens: Arc<dyn TokenSource>, timeout: Duration) -> Self {
        NotificationsPeer {
            client: NotificationServiceClient::new(channel),
            caller: Caller::new(NOTIFICATIONS, tokens, timeout),
        }
    }

    /// The same client without retries inside a call (see [`Caller::without_retries`]).
    pub fn without_retries(mut self) -> Self {
        self.caller = self.caller.without_retries();
        self
    }

    /// Queues a mail; keyed on `request.idempotency_key`, so a repeat stores nothing twice.
    pub async fn enqueue_email(
        &self,
        request: pb::EnqueueEmailRequest,
        deadline: Option<RequestDeadline>,
    ) -> Result<pb::Delivery, PeerError> {
        let client = &self.client;
        self.caller
            .call(deadline, Retry::Safe, request, |r| {
                let mut client = client.clone();
                async move { client.enqueue_email(r).await }
            })
            .await?
            .delivery
            .ok_or(PeerError::incomplete(
                NOTIFICATIONS,
                "EnqueueEmailResponse.delivery",
            ))
    }

    /// Raises in-app notices; keyed on `request.idempotency_key`.
    pub async fn notify(
        &self,
        request: pb::NotifyRequest,
        deadline: Option<RequestDeadline>,
    ) -> Result<Vec<pb::Notification>, PeerError> {
        let client = &self.client;
        Ok(self
            .caller
            .call(deadline, Retry::Safe, request, |r| {
                let mut client = client.clone();
                async move { client.notify(r).await }
            })
            .await?
            .notifications)
    }
}
