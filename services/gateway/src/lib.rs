//! The web gateway: the pages people use — every mailed link, sign-in, and the CQRS screens —
//! rendered on the server (askama) and served by axum. It owns no records: it calls the four
//! services as a gRPC client with the signed-in person's token, and keeps only web sessions,
//! in Redis ([`session`]).
//!
//! gRPC-Web calls to `/cqrs.<service>.v1.*` are forwarded to their service ([`grpc_web`]).
//!
//! A request passes, outermost first: the client-address layer ([`client_address`]), the
//! security layer (headers on every response, the origin check on every POST, failure
//! pages), the session layer (load, then save/renew/end), the step-up layer (an action that
//! needs a recent authenticator code asks for one and is repeated), and the page
//! ([`pages`]), which checks the form's CSRF token and the person's session.

pub mod client_address;
pub mod config;
pub mod grpc_web;
pub mod pages;
pub mod security;
pub mod session;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use cqrs_runtime::clock::{Clock, SystemClock};
use cqrs_runtime::config::Env;
use cqrs_runtime::credentials::lazy_channel;

pub use config::GatewayConfig;
pub use state::{AppState, Channels};

pub const SERVICE: &str = "gateway";

/// The state the pages share, with lazily connecting channels to the services.
pub fn state(
    config: GatewayConfig,
    redis: cqrs_redis::RedisConnection,
    clock: Arc<dyn Clock>,
) -> Result<AppState, tonic::transport::Error> {
    let timeout = config.call_timeout;
    let channels = Channels {
        identity: lazy_channel(&config.identity_url, timeout)?,
        directory: lazy_channel(&config.directory_url, timeout)?,
        access: lazy_channel(&config.access_url, timeout)?,
        notifications: lazy_channel(&config.notifications_url, timeout)?,
    };
    let sessions =
        session::SessionStore::new(redis, config.redis_namespace.clone(), config.session_idle);
    Ok(AppState {
        config: Arc::new(config),
        sessions,
        clock,
        channels,
        forwarder: grpc_web::forwarder(),
        providers: Arc::default(),
    })
}

/// Every page under the public prefix, behind the session and security layers.
pub fn router(state: AppState) -> Router {
    let base = state
        .config
        .public_url
        .prefix
        .trim_end_matches('/')
        .to_owned();
    pages::routes(&base)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            pages::second_factor::step_up_layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::layer,
        ))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/cqrs.identity.v1.IdentityService/{rpc}",
            axum::routing::post(grpc_web::forward),
        )
        .route(
            "/cqrs.directory.v1.DirectoryService/{rpc}",
            axum::routing::post(grpc_web::forward),
        )
        .route(
            "/cqrs.access.v1.AccessService/{rpc}",
            axum::routing::post(grpc_web::forward),
        )
        .route(
            "/cqrs.notifications.v1.NotificationService/{rpc}",
            axum::routing::post(grpc_web::forward),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            client_address::layer,
        ))
        .with_state(state)
}

/// Serves the gateway until SIGTERM/SIGINT.
pub async fn run(env: Env) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = GatewayConfig::from_env(&env)?;
    let _telemetry = cqrs_runtime::telemetry::init(SERVICE, None)?;
    let redis = cqrs_runtime::db::redis_connection(&config.redis_url)?;
    let listen = config.listen;
    let app = router(state(config, redis, Arc::new(SystemClock))?);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "gateway starting");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(cqrs_runtime::server::shutdown_signal())
    .await?;
    Ok(())
}
