//! In-process gRPC servers and helpers for calling them and reading their errors.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use cqrs_runtime::server::{ServeError, ServiceServer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

/// A [`ServiceServer`] serving on `127.0.0.1:<free port>` in this process, with a connected
/// channel. Dropping it also starts a graceful shutdown (without waiting for it);
/// [`RunningServer::shutdown`] waits.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
}

impl fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server gracefully and waits until it has.
    ///
    /// # Panics
    /// If the server ended with an error or its task panicked.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("RunningServer {}: server failed: {e}", self.addr),
                Err(e) => panic!("RunningServer {}: server task failed: {e}", self.addr),
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves `server` on `127.0.0.1:<free port>` and connects a channel to it.
///
/// # Panics
/// If the port cannot be bound, or the server fails or cannot be reached within 10 s.
pub async fn spawn(server: ServiceServer) -> RunningServer {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap_or_else(|e| panic!("spawn: cannot bind 127.0.0.1:0: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("spawn: listener address: {e}"));
    let (tx, rx) = oneshot::channel::<()>();
    // A dropped sender counts as a shutdown request too, so a forgotten server still stops.
    let mut handle = tokio::spawn(server.serve_with(listener, async move {
        let _ = rx.await;
    }));

    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap_or_else(|e| panic!("spawn: endpoint for {addr}: {e}"))
        .connect_timeout(Duration::from_secs(2));
    let deadline = tokio::time::Instant::now() + CONNECT_DEADLINE;
    let channel = loop {
        match endpoint.connect().await {
            Ok(channel) => break channel,
            Err(e) => {
                if handle.is_finished() {
                    match (&mut handle).await {
                        Ok(Ok(())) => panic!("spawn: server on {addr} stopped before serving"),
                        Ok(Err(e)) => panic!("spawn: server on {addr} failed to start: {e}"),
                        Err(e) => panic!("spawn: server task on {addr} failed: {e}"),
                    }
                }
                if tokio::time::Instant::now() >= deadline {
                    panic!("spawn: cannot connect to {addr} within {CONNECT_DEADLINE:?}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    RunningServer {
        addr,
        channel,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

/// `msg` as a request carrying `authorization: Bearer <token>`.
pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    let value: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .unwrap_or_else(|e| panic!("with_token: token is not a valid header value: {e}"));
    request.metadata_mut().insert("authorization", value);
    request
}

/// The rich error details (`google.rpc.*`) of `status`; empty if there are none.
///
/// # Panics
/// If the details are present but cannot be decoded.
pub fn status_details(status: &Status) -> ErrorDetails {
    status
        .check_error_details()
        .unwrap_or_else(|e| panic!("status details do not decode ({e}): {status:?}"))
}

/// The `ErrorInfo` reason of `status`, if it has one.
pub fn status_reason(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// The `BadRequest` field violations of `status` as `(field, description)` pairs.
pub fn field_violations(status: &Status) -> Vec<(String, String)> {
    status
        .get_details_bad_request()
        .map(|bad| {
            bad.field_violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

/// Just the field names of [`field_violations`], in order.
pub fn violated_fields(status: &Status) -> Vec<String> {
    field_violations(status)
        .into_iter()
        .map(|(field, _)| field)
        .collect()
}

/// Asserts `status` has `code` and `ErrorInfo` reason `reason`.
///
/// # Panics
/// When either differs, showing the whole status.
#[track_caller]
pub fn assert_reason(status: &Status, code: Code, reason: &str) {
    let actual = status_reason(status);
    if status.code() != code || actual.as_deref() != Some(reason) {
        panic!(
            "expected {code:?} with reason {reason}, got {:?} with reason {actual:?}: {status:?}",
            status.code()
        );
    }
}

/// The overall (`""`) health status a server reports.
pub async fn health(channel: &Channel) -> tonic_health::pb::health_check_response::ServingStatus {
    tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status()
}

/// Waits (up to 10 s: the server polls its readiness checks every second) until the server
/// reports `want`.
pub async fn wait_health(
    channel: &Channel,
    want: tonic_health::pb::health_check_response::ServingStatus,
) {
    for _ in 0..100 {
        if health(channel).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("health never became {want:?}");
}

/// A loopback port nothing listens on right now, for a server a test starts itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .expect("a free loopback port")
        .port()
}
