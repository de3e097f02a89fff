//! The notification service: e-mail delivery over SMTP with retries and dead-lettering, an
//! in-app inbox per account, and each account's notification preferences.
//!
//! `api` decodes and authorises gRPC calls, `domain` holds the rules (validation, templates,
//! retry schedule) without I/O, `store` is Postgres, and `worker` delivers mail.

pub mod api;
pub mod config;
pub mod domain;
pub mod store;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::CachedSessionCheck;
use cqrs_proto::notifications::v1::notification_service_server::NotificationServiceServer;
use cqrs_runtime::clock::{Clock, SystemClock};
use cqrs_runtime::config::{ConfigErrors, DatabaseConfig, Env, ServerConfig};
use cqrs_runtime::health::PgReadiness;
use cqrs_runtime::server::ServiceServer;

pub use api::NotificationApi;
pub use config::NotificationsConfig;
pub use store::{MIGRATOR, Store};
pub use worker::{Mailer, Worker};

pub const SERVICE: &str = "notifications";
pub const DEFAULT_PORT: u16 = 50054;

/// The gRPC server for this service, with its readiness check, ready to serve. Give it
/// [`session_check`] (`ServiceServer::session_check`, as [`run`] does): without one every
/// user token is refused.
///
/// Its audit chain is served too. It keeps no other service's checkpoints: it has no
/// credentials to call them with (the others keep its own).
pub fn server(config: ServerConfig, store: Store, clock: Arc<dyn Clock>) -> ServiceServer {
    let readiness = PgReadiness::new(store.pool().clone());
    let pool = store.pool().clone();
    let server = ServiceServer::new(config)
        .add_service(NotificationServiceServer::new(NotificationApi::new(
            store,
            Arc::clone(&clock),
        )))
        .readiness(readiness);
    cqrs_edge::audit_chain::attach(server, pool, clock, None)
}

/// The check user tokens are held to: their session must be live in identity's Redis
/// (`REDIS_URL`, `CQRS_REDIS_NAMESPACE`). The inbox and preference RPCs take user tokens, and
/// a server without a session check refuses every one of them (fail closed), so [`run`] gives
/// the server this one.
pub fn session_check(
    config: &NotificationsConfig,
) -> Result<Arc<CachedSessionCheck>, Box<dyn std::error::Error + Send + Sync>> {
    let redis = cqrs_runtime::db::redis_connection(&config.redis_url)?;
    Ok(Arc::new(CachedSessionCheck::new(
        redis,
        config.redis_namespace.clone(),
    )))
}

/// A delivery worker for this service's store, with time from `clock`.
pub fn worker(
    config: &NotificationsConfig,
    store: Store,
    clock: Arc<dyn Clock>,
) -> Result<Worker, worker::MailerError> {
    let connections = u32::try_from(config.worker.concurrency).unwrap_or(u32::MAX);
    let mailer = Mailer::new(
        &config.smtp_url,
        &config.mail_from,
        config.smtp_timeout,
        connections,
    )?;
    Ok(Worker::new(
        store,
        mailer,
        config.public_base_url.clone(),
        config.worker.clone(),
        clock,
    ))
}

/// Runs the service as the binary does: configuration from `env`, migrations, the gRPC
/// server and the delivery workers, until SIGTERM or SIGINT.
/// Applies the migrations and returns (`cqrs-notifications migrate`).
pub async fn migrate(env: Env) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let database = DatabaseConfig::from_env(&env, SERVICE)?;
    let pool = cqrs_runtime::db::connect(&database).await?;
    cqrs_runtime::db::migrate(&pool, &MIGRATOR).await?;
    pool.close().await;
    Ok(())
}

pub async fn run(env: Env) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Every bad variable is reported at once, not one per restart.
    let mut errs = ConfigErrors::default();
    let server_config = errs.take(ServerConfig::from_env(&env, SERVICE, DEFAULT_PORT));
    let database = errs.take(DatabaseConfig::from_env(&env, SERVICE));
    let config = errs.take(NotificationsConfig::from_env(&env));
    let (server_config, database, config) =
        errs.finish(|| Some((server_config?, database?, config?)))?;
    let _telemetry =
        cqrs_runtime::telemetry::init(SERVICE, server_config.otel_endpoint.as_deref())?;

    let pool = cqrs_runtime::db::connect(&database).await?;
    cqrs_runtime::db::migrate(&pool, &MIGRATOR).await?;
    let store = Store::new(pool);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let mut workers = Vec::new();
    for _ in 0..config.workers {
        let worker = worker(&config, store.clone(), Arc::clone(&clock))?;
        workers.push(tokio::spawn(worker.run(stopped())));
    }

    let sessions = session_check(&config)?;

    let listener = tokio::net::TcpListener::bind(server_config.listen).await?;
    tracing::info!(listen = %server_config.listen, workers = config.workers, "notification service starting");
    let signal = async move {
        cqrs_runtime::server::shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    server(server_config, store, clock)
        .session_check(sessions)
        .serve_with(listener, signal)
        .await?;
    for worker in workers {
        // A worker finishes its current batch; give it the same bound as the RPC drain.
        let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
    }
    Ok(())
}
