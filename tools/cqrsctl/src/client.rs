//! gRPC channels to the four services and the interceptor that adds the caller's access token
//! (`authorization: Bearer …`) and the deadline (`grpc-timeout`) to every request.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use cqrs_proto::access::v1::access_service_client::AccessServiceClient;
use cqrs_proto::directory::v1::directory_service_client::DirectoryServiceClient;
use cqrs_proto::identity::v1::identity_service_client::IdentityServiceClient;
use cqrs_proto::notifications::v1::notification_service_client::NotificationServiceClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::errors::CliError;

/// The current access token, shared by every client so a refresh reaches them all.
#[derive(Clone, Debug, Default)]
pub struct TokenSlot(Arc<RwLock<Option<String>>>);

impl TokenSlot {
    pub fn set(&self, token: Option<String>) {
        let mut slot = self.0.write().unwrap_or_else(|e| e.into_inner());
        *slot = token;
    }

    pub fn get(&self) -> Option<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Adds the bearer token (when there is one) and the deadline.
#[derive(Clone, Debug)]
pub struct Auth {
    token: Option<TokenSlot>,
    timeout: Duration,
}

impl Auth {
    /// Sends the token held in `slot`.
    pub fn bearer(slot: TokenSlot, timeout: Duration) -> Self {
        Auth {
            token: Some(slot),
            timeout,
        }
    }

    /// Sends no token (public RPCs: SignIn, RefreshAccessToken).
    pub fn anonymous(timeout: Duration) -> Self {
        Auth {
            token: None,
            timeout,
        }
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.set_timeout(self.timeout);
        if let Some(token) = self.token.as_ref().and_then(TokenSlot::get) {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::unauthenticated("the cached access token is malformed"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

pub type Authed = InterceptedService<Channel, Auth>;
pub type Identity = IdentityServiceClient<Authed>;
pub type Directory = DirectoryServiceClient<Authed>;
pub type Access = AccessServiceClient<Authed>;
pub type Notifications = NotificationServiceClient<Authed>;
pub type AuditChain =
    cqrs_proto::audit::v1::audit_chain_service_client::AuditChainServiceClient<Authed>;

/// Where the four services are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub identity: String,
    pub directory: String,
    pub access: String,
    pub notifications: String,
}

/// A channel that connects on first use (so a command only needs the services it calls).
pub fn lazy_channel(url: &str, timeout: Duration) -> Result<Channel, CliError> {
    Ok(endpoint(url, timeout)?.connect_lazy())
}

/// The endpoint for a service URL. Only `http://` is accepted: this build has no TLS stack.
pub fn endpoint(url: &str, timeout: Duration) -> Result<Endpoint, CliError> {
    let url = url.trim();
    if url.starts_with("https://") {
        return Err(CliError::Usage(format!(
            "`{url}`: this build of cqrsctl speaks plain http:// only (no TLS); reach the \
             service through a tunnel or port-forward"
        )));
    }
    if !url.starts_with("http://") {
        return Err(CliError::Usage(format!(
            "`{url}` is not a service URL; expected http://host:port"
        )));
    }
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| CliError::Usage(format!("`{url}` is not a valid URL: {e}")))?
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .tcp_nodelay(true);
    Ok(endpoint)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_and_deadline_are_added() {
        let slot = TokenSlot::default();
        let mut auth = Auth::bearer(slot.clone(), Duration::from_secs(7));
        let req = auth.call(Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
        assert_eq!(req.metadata().get("grpc-timeout").unwrap(), "7000000u");

        slot.set(Some("abc.def".into()));
        let req = auth.call(Request::new(())).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer abc.def"
        );

        let mut anon = Auth::anonymous(Duration::from_secs(1));
        let req = anon.call(Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
    }

    #[test]
    fn malformed_token_is_refused_locally() {
        let slot = TokenSlot::default();
        slot.set(Some("bad\ntoken".into()));
        let err = Auth::bearer(slot, Duration::from_secs(1))
            .call(Request::new(()))
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[tokio::test]
    async fn only_plain_http_urls() {
        assert!(lazy_channel("http://127.0.0.1:50051", Duration::from_secs(1)).is_ok());
        for bad in ["https://x:1", "127.0.0.1:50051", "ftp://x", "http://"] {
            let err = endpoint(bad, Duration::from_secs(1)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }
}
