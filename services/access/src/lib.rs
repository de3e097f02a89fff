//! The access service: the workflows that give people accounts and roles — invitations,
//! self-registration with approval, and requests for access to another organisation.
//!
//! `api` decodes and authorises gRPC calls (step 1 locally, step 2 with the directory's
//! shared decision), `domain` holds the state machines and rules without I/O, `store` is
//! Postgres (workflow rows, keyed-create answers, audit trail, outbox), and `clients` calls
//! identity (accounts) and the directory (organisations, permission checks, grants). Mail and
//! in-app notifications leave through the transactional outbox: a relay started by [`run`]
//! hands them to the notification service. A periodic sweep records run-out invitations as
//! EXPIRED (they count as expired at once either way).

pub mod api;
pub mod clients;
pub mod config;
pub mod domain;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::{CachedSessionCheck, SessionCheck, TokenSource};
use cqrs_edge::rate_limit::RateLimits;
use cqrs_outbox::{Relay, RelayConfig};
use cqrs_peers::NotificationsPeer;
use cqrs_proto::access::v1::access_service_server::AccessServiceServer;
use cqrs_runtime::clock::{Clock, SystemClock};
use cqrs_runtime::config::{ConfigErrors, DatabaseConfig, Env, ServerConfig};
use cqrs_runtime::credentials::{lazy_channel, token_source};
use cqrs_runtime::db::PoolSettings;
use cqrs_runtime::health::{PgReadiness, SessionStoreReadiness};
use cqrs_runtime::server::ServiceServer;
use tonic::transport::Channel;

pub use api::{AccessApi, AccessError};
pub use clients::Peers;
pub use config::{AccessConfig, WorkflowSettings};
pub use store::{MIGRATOR, Store};

pub const SERVICE: &str = "access";
pub const DEFAULT_PORT: u16 = 50053;

/// How long delivered outbox rows (which held link tokens until delivery) are kept, and how
/// often they are swept.
const OUTBOX_RETENTION: Duration = Duration::from_secs(60 * 60);
const OUTBOX_PURGE_EVERY: Duration = Duration::from_secs(10 * 60);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The running parts of the service over one database.
#[derive(Clone)]
pub struct Access {
    pub store: Store,
    pub api: AccessApi,
    tokens: Arc<dyn TokenSource>,
    clock: Arc<dyn Clock>,
}

impl Access {
    /// The service over `store` (migrated, outbox ensured), calling identity and the
    /// directory through `peers`, with time from `clock`.
    pub fn new(
        store: Store,
        peers: Peers,
        settings: WorkflowSettings,
        limits: RateLimits,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let tokens = Arc::clone(&peers.tokens);
        let api = AccessApi::new(store.clone(), peers, settings, limits, Arc::clone(&clock));
        Access {
            store,
            api,
            tokens,
            clock,
        }
    }

    /// The gRPC server: the access API behind the standard stack, user tokens checked against
    /// identity's sessions, health following Postgres and the session store.
    pub fn server(&self, config: ServerConfig, sessions: Arc<dyn SessionCheck>) -> ServiceServer {
        let server = ServiceServer::new(config)
            .add_service(AccessServiceServer::new(self.api.clone()))
            .readiness(PgReadiness::new(self.store.pool().clone()))
            .readiness(SessionStoreReadiness(Arc::clone(&sessions)))
            .session_check(sessions);
        cqrs_edge::audit_chain::attach(
            server,
            self.store.pool().clone(),
            Arc::clone(&self.clock),
            Some(&self.tokens),
        )
    }

    /// The outbox relay to the notification service at `notifications`.
    pub fn relay(
        &self,
        notifications: Channel,
        tokens: Arc<dyn TokenSource>,
        config: RelayConfig,
    ) -> Relay {
        let notifications = NotificationsPeer::new(notifications, tokens, config.call_timeout);
        Relay::new(self.store.pool().clone(), notifications, config)
    }

    /// Records run-out invitations as EXPIRED every `every`, until `shutdown` resolves.
    pub async fn sweep(self, every: Duration, shutdown: impl Future<Output = ()> + Send) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => match self.api.expire_due().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "invitations expired"),
                    Err(e) => tracing::warn!(error = %e, "invitation expiry sweep failed"),
                },
            }
        }
    }
}

/// Applies the migrations (and the outbox table) and returns (`cqrs-access migrate`).
pub async fn migrate(env: Env) -> Result<(), BoxError> {
    let database = DatabaseConfig::from_env(&env, SERVICE)?;
    let pool = cqrs_runtime::db::connect(&database).await?;
    cqrs_runtime::db::migrate(&pool, &MIGRATOR).await?;
    let store = Store::new(pool);
    store.ensure_outbox().await?;
    store.pool().close().await;
    Ok(())
}

/// Runs the service as the binary does: configuration from `env`, migrations, the outbox
/// relay, the expiry sweep and the gRPC server, until SIGTERM or SIGINT.
pub async fn run(env: Env) -> Result<(), BoxError> {
    // Every bad variable is reported at once, not one per restart.
    let mut errs = ConfigErrors::default();
    let server_config = errs.take(ServerConfig::from_env(&env, SERVICE, DEFAULT_PORT));
    let database = errs.take(DatabaseConfig::from_env(&env, SERVICE));
    let pool_settings = errs.take(PoolSettings::from_env(&env));
    let config = errs.take(AccessConfig::from_env(&env));
    let (server_config, database, pool_settings, config) =
        errs.finish(|| Some((server_config?, database?, pool_settings?, config?)))?;
    let _telemetry =
        cqrs_runtime::telemetry::init(SERVICE, server_config.otel_endpoint.as_deref())?;

    let pool = cqrs_runtime::db::connect_with(&database, pool_settings).await?;
    cqrs_runtime::db::migrate(&pool, &MIGRATOR).await?;
    let store = Store::new(pool);
    store.ensure_outbox().await?;

    let timeout = config.call_timeout;
    let identity = lazy_channel(&config.identity_url, timeout)?;
    let directory = lazy_channel(&config.directory_url, timeout)?;
    let notifications = lazy_channel(&config.notifications_url, timeout)?;
    // Token time is the system clock, which the services called verify with.
    let tokens = token_source(
        &config.credentials,
        identity.clone(),
        timeout,
        Arc::new(SystemClock),
    );
    let peers = Peers::new(identity, directory, Arc::clone(&tokens), timeout);
    let access = Access::new(
        store,
        peers,
        config.workflow.clone(),
        RateLimits::new(config.rate_limits),
        Arc::new(SystemClock),
    );
    let redis = cqrs_runtime::db::redis_connection(&config.redis_url)?;
    let sessions = Arc::new(CachedSessionCheck::new(
        redis,
        config.redis_namespace.clone(),
    ));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let relay_config = RelayConfig {
        poll_interval: config.outbox_poll_interval,
        producer: "access",
        ..RelayConfig::default()
    };
    let relay = tokio::spawn(
        access
            .relay(notifications, tokens, relay_config)
            .run(stopped()),
    );
    let sweep = tokio::spawn(access.clone().sweep(config.sweep_interval, stopped()));
    let purge_pool = access.store.pool().clone();
    let purge_stop = stopped();
    let purge = tokio::spawn(async move {
        let mut tick = tokio::time::interval(OUTBOX_PURGE_EVERY);
        tokio::pin!(purge_stop);
        loop {
            tokio::select! {
                () = &mut purge_stop => break,
                _ = tick.tick() => {
                    if let Err(e) = cqrs_outbox::purge_delivered(&purge_pool, OUTBOX_RETENTION).await {
                        tracing::warn!(error = %e, "outbox purge failed");
                    }
                }
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(server_config.listen).await?;
    tracing::info!(listen = %server_config.listen, identity = %config.identity_url, directory = %config.directory_url, client_id = config.credentials.client_id(), "access service starting");
    let signal = async move {
        cqrs_runtime::server::shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    access
        .server(server_config, sessions)
        .serve_with(listener, signal)
        .await?;
    let _ = tokio::time::timeout(Duration::from_secs(30), relay).await;
    let _ = sweep.await;
    let _ = purge.await;
    Ok(())
}
