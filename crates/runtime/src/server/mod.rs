//! The gRPC server every service runs.
//!
//! Stack, outermost first:
//! 1. tonic: `grpc-timeout` / request timeout (answers `Cancelled` when it fires, before any
//!    layer below sees the response);
//! 2. request context: `x-request-id` in and out, a span per RPC joined to the caller's W3C
//!    trace, a completion log line, inner errors turned into gRPC statuses;
//! 3. CORS (from config) and gRPC-Web (HTTP/1.1 accepted);
//! 4. global concurrency limit that sheds with `ResourceExhausted` (health checks exempt);
//! 5. authentication ([`cqrs_auth::AuthLayer`]);
//! 6. routes: the services, `grpc.health.v1.Health`, server reflection (v1 and v1alpha).
//!
//! At most `CQRS_MAX_CONNECTIONS` connections are served at once; the next is accepted when
//! one closes, and waits in the kernel's listen queue until then (it costs the service
//! nothing there). Every connection is bounded (HTTP/2 settings sent to each client): at most
//! [`MAX_STREAMS_PER_CONNECTION`] calls at once, [`STREAM_WINDOW`] of unread request body per
//! call and [`CONNECTION_WINDOW`] per connection, [`MAX_HEADER_LIST`] of headers; a peer that
//! stops answering pings is dropped. Without these, hyper under tonic allows unlimited streams
//! and 1 MiB per stream, so one connection could hold any amount of memory.
//!
//! Shutdown: statuses go NOT_SERVING, the listener closes, in-flight RPCs get at most
//! `shutdown_grace`, then remaining connections are cut and `serve` returns.

mod conn;
mod layers;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::{AuthLayer, SessionCheck};
use http::{HeaderName, Method};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tower::{Service, ServiceBuilder};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::clock::{Clock, SystemClock};
use crate::config::{CorsOrigins, ServerConfig};
use crate::health::{HealthState, ReadinessCheck};

pub use layers::{
    NoLiveSessions, RUNTIME_DOMAIN, RequestDeadline, RequestId, X_REQUEST_ID, request_deadline,
    request_id,
};

const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";
/// How long to wait for connection tasks to notice they were cut after the grace period.
const CUT_WAIT: Duration = Duration::from_secs(1);
/// Calls one connection may have open at once; more wait in the client (a gateway multiplexes
/// many people over one connection, so this is well above one person's needs).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// Request body a client may send ahead of the service reading it, per call and per
/// connection. Every request message of the API is far smaller than the stream window.
pub const STREAM_WINDOW: u32 = 256 * 1024;
pub const CONNECTION_WINDOW: u32 = 1024 * 1024;
pub const MAX_HEADER_LIST: u32 = 16 * 1024;
/// A connection silent this long is pinged, and dropped if the ping is not answered in
/// [`KEEPALIVE_TIMEOUT`]: a vanished client's buffers are not kept.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The server could not start or failed while running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The listener's local address could not be read.
    #[error("listener: {0}")]
    Listener(std::io::Error),
    /// The reflection service could not be built from the descriptor sets.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A gRPC server with the suite's standard stack; see the module docs.
pub struct ServiceServer {
    config: ServerConfig,
    routes: RoutesBuilder,
    services: Vec<&'static str>,
    checks: Vec<Arc<dyn ReadinessCheck>>,
    sessions: Option<Arc<dyn SessionCheck>>,
    clock: Arc<dyn Clock>,
    reporter: HealthReporter,
    background: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for ServiceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceServer")
            .field("config", &self.config)
            .field("services", &self.services)
            .field(
                "checks",
                &self.checks.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .field("session_check", &self.sessions.is_some())
            .finish_non_exhaustive()
    }
}

impl ServiceServer {
    /// A server with no services yet.
    pub fn new(config: ServerConfig) -> Self {
        ServiceServer {
            config,
            routes: RoutesBuilder::default(),
            services: Vec::new(),
            checks: Vec::new(),
            sessions: None,
            clock: Arc::new(SystemClock),
            reporter: HealthReporter::new(),
            background: Vec::new(),
        }
    }

    /// A job that runs while the server serves (started with it, stopped when it stops).
    pub fn background(mut self, job: impl Future<Output = ()> + Send + 'static) -> Self {
        self.background.push(Box::pin(job));
        self
    }

    /// Serves `svc` (a tonic-generated `XServer`) and reports health for its name.
    ///
    /// Each service name may be added once, and not `grpc.health.v1.Health` or a reflection
    /// service (the server adds those itself): tonic's router panics on overlapping routes.
    pub fn add_service<S>(mut self, svc: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add_service(svc);
        if !self.services.contains(&S::NAME) {
            self.services.push(S::NAME);
        }
        self
    }

    /// Adds a dependency polled every second; all passing => SERVING for "" and each service,
    /// otherwise NOT_SERVING.
    pub fn readiness(mut self, check: impl ReadinessCheck) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    /// The session store user tokens are checked against. Without one, every user token is
    /// refused ([`NoLiveSessions`], fail closed); service tokens work either way.
    pub fn session_check(mut self, sessions: Arc<dyn SessionCheck>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// The clock tokens are checked against (and shedding warnings are spaced by); the system
    /// clock unless set. Token time must be the wall clock the issuer used, so this is not the
    /// service's adjustable clock (see [`cqrs_rules::clock`]): only tests replace it.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The configuration this server runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The health reporter, for services that report more than readiness checks can.
    /// Statuses set here are overwritten by the next readiness poll.
    pub fn health_reporter(&self) -> HealthReporter {
        self.reporter.clone()
    }

    /// Binds `config.listen` and serves until SIGTERM or SIGINT.
    pub async fn serve(self) -> Result<(), ServeError> {
        let addr = self.config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        self.serve_with(listener, shutdown_signal()).await
    }

    /// Serves on `listener` until `shutdown` completes, then shuts down gracefully (see the
    /// module docs). Readiness is checked once before the first connection is accepted.
    pub async fn serve_with(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let local_addr = listener.local_addr().map_err(ServeError::Listener)?;
        if let Some(admin) = self.config.admin_listen {
            // Ends with the process; a scrape during shutdown may still be answered.
            let bound = crate::metrics::spawn_admin(admin, std::future::pending())
                .await
                .map_err(|source| ServeError::Bind {
                    addr: admin,
                    source,
                })?;
            tracing::info!(admin = %bound, "metrics on /metrics");
        }
        let ServiceServer {
            config,
            mut routes,
            services,
            checks,
            sessions,
            clock,
            reporter,
            background,
        } = self;
        let jobs: Vec<_> = background.into_iter().map(tokio::spawn).collect();

        let mut listed: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
        listed.extend([HEALTH_SERVICE, REFLECTION_V1, REFLECTION_V1ALPHA].map(str::to_owned));
        routes.add_service(reflection_builder(&listed).build_v1()?);
        routes.add_service(reflection_builder(&listed).build_v1alpha()?);
        routes.add_service(HealthServer::new(HealthService::from_health_reporter(
            reporter.clone(),
        )));

        let health = Arc::new(HealthState::new(reporter, &services, checks));
        health.poll_once().await;
        let poller = tokio::spawn(Arc::clone(&health).run());

        let sessions = sessions.unwrap_or_else(|| {
            tracing::warn!(
                "no session check configured: every user token will be refused (fail closed)"
            );
            Arc::new(NoLiveSessions)
        });
        let stack = ServiceBuilder::new()
            .layer(layers::RequestContextLayer::new(
                config.request_timeout,
                config.trusted_gateways.clone(),
            ))
            .layer(cors_layer(&config.cors_origins()))
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(layers::LoadShedLayer::new(
                config.concurrency_limit,
                Arc::clone(&clock),
            ))
            .layer(AuthLayer::new(
                config.token_verify_keys.clone(),
                sessions,
                clock,
            ))
            .into_inner();

        let (kill_tx, kill_rx) = watch::channel(false);
        let incoming = conn::bounded_incoming(listener, config.max_connections, kill_rx);

        let (signalled_tx, signalled_rx) = oneshot::channel::<()>();
        let signal = {
            let health = Arc::clone(&health);
            async move {
                shutdown.await;
                tracing::info!("shutdown requested: reporting NOT_SERVING and draining");
                health.stop().await;
                let _ = signalled_tx.send(());
            }
        };

        tracing::info!(
            service = config.service,
            addr = %local_addr,
            services = ?services,
            "serving"
        );
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .timeout(config.request_timeout)
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .http2_max_header_list_size(MAX_HEADER_LIST)
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .layer(stack)
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(server);

        let grace = config.shutdown_grace;
        let grace_over = async move {
            if signalled_rx.await.is_err() {
                // The server ended without a shutdown request; the other branch has the result.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(grace).await;
        };
        let result = tokio::select! {
            result = &mut server => result,
            () = grace_over => {
                tracing::warn!(
                    grace_secs = grace.as_secs_f64(),
                    "shutdown grace period over: cutting remaining connections"
                );
                let _ = kill_tx.send(true);
                tokio::time::timeout(CUT_WAIT, &mut server).await.unwrap_or(Ok(()))
            }
        };
        health.stop().await;
        poller.abort();
        for job in jobs {
            job.abort();
        }
        tracing::info!(service = config.service, "server stopped");
        result.map_err(ServeError::from)
    }
}

fn reflection_builder(services: &[String]) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cqrs_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // Both reflection versions are listed by both servers, so each must be able to
        // describe the other too (clients that list methods ask for every service).
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    for name in services {
        builder = builder.with_service_name(name.clone());
    }
    builder
}

fn cors_layer(origins: &CorsOrigins) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::POST])
        .allow_headers([
            http::header::AUTHORIZATION,
            http::header::CONTENT_TYPE,
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
            X_REQUEST_ID,
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
            X_REQUEST_ID,
        ])
        .max_age(Duration::from_secs(24 * 60 * 60));
    match origins {
        // No allow-origin header at all: browsers refuse every cross-origin call.
        CorsOrigins::None => layer,
        CorsOrigins::Any => layer.allow_origin(AllowOrigin::any()),
        CorsOrigins::List(list) => layer.allow_origin(AllowOrigin::list(
            // Validated when the configuration was read.
            list.iter()
                .filter_map(|o| http::HeaderValue::from_str(o).ok()),
        )),
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    () = ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
                ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c().await;
    }
}

async fn ctrl_c() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        // Returning would stop the server at once; keep running and say why.
        tracing::error!(error = %e, "cannot listen for SIGINT");
        std::future::pending::<()>().await;
    }
}
