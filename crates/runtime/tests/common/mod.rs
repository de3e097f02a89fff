//! Shared by the integration tests: a tiny EchoService behind the runtime's server stack, and
//! an in-process server.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cqrs_auth::{Principal, SessionCheck, SigningKey, TokenIssuer, TokenVerifier};
use cqrs_proto::testing::v1::echo_service_client::EchoServiceClient;
use cqrs_proto::testing::v1::echo_service_server::{EchoService, EchoServiceServer};
use cqrs_proto::testing::v1::{EchoRequest, EchoResponse};
use cqrs_runtime::clock::{Clock, SystemClock};
use cqrs_runtime::config::ServerConfig;
use cqrs_runtime::errors;
use cqrs_runtime::health::ReadinessFlag;
use cqrs_runtime::server::{ServeError, ServiceServer, request_deadline, request_id};
use opentelemetry::trace::TraceContextExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The served service's name, for health checks and reflection.
pub const ECHO: &str = "cqrs.testing.v1.EchoService";
/// The full gRPC path of its one (protected) method.
pub const ECHO_PATH: &str = "/cqrs.testing.v1.EchoService/Echo";

/// What the handler saw of one call that reached it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub principal: Option<Principal>,
    pub request_id: Option<String>,
    pub deadline_left: Option<Duration>,
    /// Trace id of the span the handler ran in.
    pub trace_id: String,
}

/// Echoes the message back, recording what it saw. Two messages behave differently:
/// `"slow"` takes 3 s (counted in `in_flight` meanwhile) and `"fail"` answers an internal
/// error whose cause must not reach the caller.
#[derive(Default)]
pub struct TestEcho {
    pub seen: Mutex<Vec<Seen>>,
    pub in_flight: AtomicUsize,
}

#[tonic::async_trait]
impl EchoService for TestEcho {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        self.seen.lock().unwrap().push(Seen {
            principal: request.extensions().get::<Principal>().cloned(),
            request_id: request_id(&request).map(str::to_owned),
            deadline_left: request_deadline(&request).map(|d| d.remaining()),
            trace_id: tracing::Span::current()
                .context()
                .span()
                .span_context()
                .trace_id()
                .to_string(),
        });
        let message = request.into_inner().message;
        match message.as_str() {
            "slow" => {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3)).await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            "fail" => {
                let err = std::io::Error::other("SELECT secret FROM accounts failed");
                return Err(errors::internal("cqrs.testing", &err));
            }
            _ => {}
        }
        Ok(Response::new(EchoResponse { message }))
    }
}

/// Every session is live (stands in for identity's Redis).
pub struct AllLive;
impl SessionCheck for AllLive {
    fn is_live(
        &self,
        _: uuid::Uuid,
        _: &str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<bool, cqrs_auth::AuthError>> + Send + '_>,
    > {
        Box::pin(async { Ok(true) })
    }
}

pub struct Harness {
    pub addr: SocketAddr,
    pub channel: Channel,
    pub issuer: TokenIssuer,
    pub flag: ReadinessFlag,
    pub svc: Arc<TestEcho>,
    pub shutdown: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<Result<(), ServeError>>,
}

impl Harness {
    pub async fn start(tweak: impl FnOnce(&mut ServerConfig), sessions: bool) -> Harness {
        let key = SigningKey::generate("test-key");
        let verifier = TokenVerifier::new(vec![key.verifying_key()]);
        let issuer = TokenIssuer::new(key, Duration::from_secs(300));
        let mut config = ServerConfig::for_tests("echo", verifier);
        tweak(&mut config);
        let flag = ReadinessFlag::new("flag", true);
        let svc = Arc::new(TestEcho::default());
        let mut server = ServiceServer::new(config)
            .add_service(EchoServiceServer::from_arc(Arc::clone(&svc)))
            .readiness(flag.clone());
        if sessions {
            server = server.session_check(Arc::new(AllLive));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.serve_with(listener, async {
            let _ = rx.await;
        }));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Harness {
            addr,
            channel,
            issuer,
            flag,
            svc,
            shutdown: Some(tx),
            handle,
        }
    }

    pub fn client(&self) -> EchoServiceClient<Channel> {
        EchoServiceClient::new(self.channel.clone())
    }

    pub fn service_token(&self) -> String {
        self.issuer
            .issue_service("test-client", SystemClock.now())
            .unwrap()
            .token
    }

    pub fn user_token(&self) -> String {
        self.issuer
            .issue_user(uuid::Uuid::new_v4(), "sid-1", None, SystemClock.now())
            .unwrap()
            .token
    }

    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

pub fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
    }
}

pub async fn health_of(channel: &Channel, service: &str) -> Result<ServingStatus, Status> {
    let resp = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(resp.into_inner().status())
}

pub async fn wait_for_health(channel: &Channel, service: &str, want: ServingStatus) -> Duration {
    let started = Instant::now();
    loop {
        if health_of(channel, service).await.unwrap() == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{service:?} never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_in_flight(svc: &TestEcho, n: usize) {
    let started = Instant::now();
    while svc.in_flight.load(Ordering::SeqCst) < n {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "call never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
