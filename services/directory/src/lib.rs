//! The directory service: organisations (the REGION > COMMISSIONING_ORGANISATION >
//! SERVICE_PROVIDER tree, plus SERVICE_DESK), grants (account x organisation x role) and the
//! permission checks built on them.
//!
//! `api` decodes and authorises gRPC calls (with the shared decision of `cqrs_auth::decide`),
//! `domain` holds the rules without I/O, `store` is Postgres. Revoking a grant ends the
//! sessions acting through it in the identity service; [`session_ender`] makes that call and
//! retries it durably while identity is unreachable.

pub mod api;
pub mod config;
pub mod domain;
pub mod session_ender;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::{CachedSessionCheck, SessionCheck, TokenSource};
use cqrs_proto::directory::v1::directory_service_server::DirectoryServiceServer;
use cqrs_runtime::clock::{Clock, SystemClock};
use cqrs_runtime::config::{ConfigErrors, DatabaseConfig, Env, ServerConfig};
use cqrs_runtime::db::PoolSettings;
use cqrs_runtime::health::{PgReadiness, SessionStoreReadiness};
use cqrs_runtime::server::ServiceServer;
use tonic::transport::Channel;

pub use api::{DirectoryApi, DirectoryError};
pub use config::DirectoryConfig;
/// Moved to the runtime (shared with the access service); re-exported for existing callers.
pub use cqrs_runtime::credentials::{ServiceCredentials, identity_channel, token_source};
pub use session_ender::{RevocationConfig, SessionEnder};
pub use store::{MIGRATOR, Store};

pub const SERVICE: &str = "directory";
pub const DEFAULT_PORT: u16 = 50052;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The running parts of the service over one database.
#[derive(Clone)]
pub struct Directory {
    pub store: Store,
    pub ender: SessionEnder,
    pub api: DirectoryApi,
    tokens: Arc<dyn TokenSource>,
    clock: Arc<dyn Clock>,
}

impl Directory {
    /// The service over `store`, ending revoked sessions through `identity` with tokens from
    /// `tokens`.
    pub fn new(
        store: Store,
        identity: Channel,
        tokens: Arc<dyn TokenSource>,
        revocations: RevocationConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let ender = SessionEnder::new(
            store.clone(),
            identity,
            Arc::clone(&tokens),
            revocations,
            Arc::clone(&clock),
        );
        let api = DirectoryApi::new(store.clone(), ender.clone(), Arc::clone(&clock));
        Directory {
            store,
            ender,
            api,
            tokens,
            clock,
        }
    }

    /// The gRPC server: the directory's API behind the standard stack, user tokens checked
    /// against identity's sessions, health following Postgres and the session store.
    pub fn server(&self, config: ServerConfig, sessions: Arc<dyn SessionCheck>) -> ServiceServer {
        let server = ServiceServer::new(config)
            .add_service(DirectoryServiceServer::new(self.api.clone()))
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
}

/// Applies the migrations and returns (`cqrs-directory migrate`).
pub async fn migrate(env: Env) -> Result<(), BoxError> {
    let database = DatabaseConfig::from_env(&env, SERVICE)?;
    let pool = cqrs_runtime::db::connect(&database).await?;
    cqrs_runtime::db::migrate(&pool, &MIGRATOR).await?;
    pool.close().await;
    Ok(())
}

/// Runs the service as the binary does: configuration from `env`, migrations, the background
/// task that retries pending session ends, and the gRPC server, until SIGTERM or SIGINT.
pub async fn run(env: Env) -> Result<(), BoxError> {
    // Every bad variable is reported at once, not one per restart.
    let mut errs = ConfigErrors::default();
    let server_config = errs.take(ServerConfig::from_env(&env, SERVICE, DEFAULT_PORT));
    let database = errs.take(DatabaseConfig::from_env(&env, SERVICE));
    let pool_settings = errs.take(PoolSettings::from_env(&env));
    let config = errs.take(DirectoryConfig::from_env(&env));
    let (server_config, database, pool_settings, config) =
        errs.finish(|| Some((server_config?, database?, pool_settings?, config?)))?;
    let _telemetry =
        cqrs_runtime::telemetry::init(SERVICE, server_config.otel_endpoint.as_deref())?;

    let pool = cqrs_runtime::db::connect_with(&database, pool_settings).await?;
    cqrs_runtime::db::migrate(&pool, &MIGRATOR).await?;
    let store = Store::new(pool);
    let call_timeout = config.revocations.call_timeout;
    let identity = identity_channel(&config.identity_url, call_timeout)?;
    // Token time is the system clock, which identity verifies with.
    let tokens = token_source(
        &config.credentials,
        identity.clone(),
        call_timeout,
        Arc::new(SystemClock),
    );
    let directory = Directory::new(
        store,
        identity,
        tokens,
        config.revocations.clone(),
        Arc::new(SystemClock),
    );
    let redis = cqrs_runtime::db::redis_connection(&config.redis_url)?;
    let sessions = Arc::new(CachedSessionCheck::new(
        redis,
        config.redis_namespace.clone(),
    ));

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let ender = tokio::spawn(directory.ender.clone().run(async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    }));

    let listener = tokio::net::TcpListener::bind(server_config.listen).await?;
    tracing::info!(listen = %server_config.listen, identity = %config.identity_url, client_id = config.credentials.client_id(), "directory service starting");
    let signal = async move {
        cqrs_runtime::server::shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    directory
        .server(server_config, sessions)
        .serve_with(listener, signal)
        .await?;
    let _ = tokio::time::timeout(call_timeout + Duration::from_secs(1), ender).await;
    Ok(())
}
