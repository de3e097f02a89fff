//! What every handler shares: the configuration, the web-session store, the clock and a
//! channel to each service.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cqrs_proto::access::v1::access_service_client::AccessServiceClient;
use cqrs_proto::directory::v1::directory_service_client::DirectoryServiceClient;
use cqrs_proto::identity::v1::identity_service_client::IdentityServiceClient;
use cqrs_proto::notifications::v1::notification_service_client::NotificationServiceClient;
use cqrs_runtime::clock::Clock;
use tonic::transport::Channel;

use crate::config::GatewayConfig;
use crate::session::SessionStore;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<GatewayConfig>,
    pub sessions: SessionStore,
    pub clock: Arc<dyn Clock>,
    pub channels: Channels,
    /// gRPC-Web calls go through this to their service.
    pub forwarder: crate::grpc_web::Forwarder,
    /// The single sign-on providers, as identity listed them lately ([`AppState::providers`]).
    pub providers: Arc<Mutex<Option<ListedProviders>>>,
}

/// A single sign-on provider, for the sign-in page's button.
#[derive(Clone, Debug)]
pub struct Provider {
    pub id: String,
    pub label: String,
}

/// The providers and when identity listed them.
pub type ListedProviders = (Instant, Vec<Provider>);

/// How long the provider list is reused: it changes only with identity's configuration.
const PROVIDERS_TTL: Duration = Duration::from_secs(60);

/// One lazily connecting channel per service.
#[derive(Clone, Debug)]
pub struct Channels {
    pub identity: Channel,
    pub directory: Channel,
    pub access: Channel,
    pub notifications: Channel,
}

impl AppState {
    /// The single sign-on providers identity offers (none when it cannot be asked: the
    /// password form still works).
    pub async fn providers(&self) -> Vec<Provider> {
        if let Ok(cached) = self.providers.lock()
            && let Some((at, providers)) = cached.as_ref()
            && at.elapsed() < PROVIDERS_TTL
        {
            return providers.clone();
        }
        let answer = self
            .identity()
            .list_identity_providers(self.request(
                cqrs_proto::identity::v1::ListIdentityProvidersRequest {},
                None,
            ))
            .await;
        match answer {
            Ok(answer) => {
                let providers: Vec<Provider> = answer
                    .into_inner()
                    .providers
                    .into_iter()
                    .map(|p| Provider {
                        id: p.id,
                        label: p.label,
                    })
                    .collect();
                if let Ok(mut cached) = self.providers.lock() {
                    *cached = Some((Instant::now(), providers.clone()));
                }
                providers
            }
            Err(status) => {
                tracing::info!(code = ?status.code(), "sign-in page shown without single sign-on");
                Vec::new()
            }
        }
    }

    pub fn identity(&self) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(self.channels.identity.clone())
    }

    pub fn directory(&self) -> DirectoryServiceClient<Channel> {
        DirectoryServiceClient::new(self.channels.directory.clone())
    }

    pub fn access(&self) -> AccessServiceClient<Channel> {
        AccessServiceClient::new(self.channels.access.clone())
    }

    pub fn notifications(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.channels.notifications.clone())
    }

    /// A request to a service: bounded by the call timeout, with the trace context, the
    /// client's address, and the signed-in person's access token when there is one.
    pub fn request<T>(&self, message: T, token: Option<&str>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.config.call_timeout);
        cqrs_runtime::telemetry::inject_trace_context(request.metadata_mut());
        if let Some(token) = token
            && let Ok(mut value) =
                tonic::metadata::MetadataValue::try_from(format!("Bearer {token}"))
        {
            value.set_sensitive(true);
            request.metadata_mut().insert("authorization", value);
        }
        let mut headers = std::mem::take(request.metadata_mut()).into_headers();
        crate::client_address::stamp(&mut headers);
        *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
        request
    }

    /// The page path of `page` under the public prefix.
    pub fn path(&self, page: &str) -> String {
        self.config.public_url.path(page)
    }
}
