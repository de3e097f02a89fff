//! The identity service: accounts in two realms, credentials and password policy, lock-out,
//! sessions and the access tokens every other service verifies.
//!
//! `api` decodes and authorises gRPC calls, `domain` holds the rules without I/O, `hashing`
//! runs argon2id on a bounded pool, `store` is Postgres (accounts, links, history, audit,
//! outbox) and Redis (lock-out counters, sessions). Mail leaves through the transactional
//! outbox: a relay started by [`run`] hands it to the notification service.

pub mod api;
pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod directory;
pub mod domain;
pub mod federation;
pub mod hashing;
pub mod metrics;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::{CachedSessionCheck, IssuerTokenSource, SigningKey, TokenIssuer};
use cqrs_outbox::Relay;
use cqrs_peers::NotificationsPeer;
use cqrs_proto::identity::v1::identity_service_server::IdentityServiceServer;
use cqrs_redis::RedisConnection;
use cqrs_runtime::config::{ConfigErrors, DatabaseConfig, Env, ServerConfig};
use cqrs_runtime::health::{PgReadiness, RedisReadiness};
use cqrs_runtime::server::ServiceServer;
use uuid::Uuid;

pub use api::IdentityApi;
pub use clock::{Clock, OffsetClock, SystemClock};
pub use config::IdentityConfig;
pub use directory::DirectoryClient;
pub use hashing::PasswordHasher;
pub use store::{MIGRATOR, Store};

pub const SERVICE: &str = "identity";
pub const DEFAULT_PORT: u16 = 50051;

/// How long delivered outbox rows (which still hold link tokens) are kept, and how often they
/// are swept.
const OUTBOX_RETENTION: Duration = Duration::from_secs(60 * 60);
const OUTBOX_PURGE_EVERY: Duration = Duration::from_secs(10 * 60);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Identity's Redis connection (lock-out counters, sessions): see
/// [`cqrs_runtime::db::redis_connection`].
pub use cqrs_runtime::db::redis_connection;

/// Why [`Identity::new`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("password hashing: {0}")]
    Hashing(#[from] hashing::HashError),
    #[error("directory endpoint: {0}")]
    Directory(#[from] tonic::transport::Error),
}

/// The issuer of the service tokens identity signs for its own calls to other services.
fn self_issuer(config: &IdentityConfig) -> TokenIssuer {
    TokenIssuer::new(config.signing_key.clone(), config.access_token_ttl)
}

/// The running parts of the service over one database and one Redis.
#[derive(Clone)]
pub struct Identity {
    pub config: Arc<IdentityConfig>,
    pub store: Store,
    pub redis: RedisConnection,
    pub api: IdentityApi,
    /// The session check of this service's own user calls, told of its endings at once.
    pub session_check: Arc<CachedSessionCheck>,
}

impl Identity {
    pub fn new(
        config: IdentityConfig,
        store: Store,
        redis: RedisConnection,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        let config = Arc::new(config);
        let hasher = PasswordHasher::new(&config.hashing)?;
        let directory = DirectoryClient::new(&config, Arc::new(self_issuer(&config)))?;
        let session_check = Arc::new(CachedSessionCheck::new(
            redis.clone(),
            config.redis_namespace.clone(),
        ));
        let api = IdentityApi::new(
            Arc::clone(&config),
            store.clone(),
            redis.clone(),
            Arc::clone(&session_check),
            hasher,
            directory,
            clock,
        );
        Ok(Identity {
            config,
            store,
            redis,
            api,
            session_check,
        })
    }

    /// The gRPC server: identity's API behind the standard stack. Tokens are verified with
    /// the signing key's public key and the configured rotation keys, user tokens against
    /// the sessions this service keeps; health follows Postgres and Redis.
    pub fn server(&self, mut server_config: ServerConfig) -> ServiceServer {
        server_config.token_verify_keys = self.config.verifier();
        let sessions = Arc::clone(&self.session_check);
        let tokens = self.service_tokens();
        let server = ServiceServer::new(server_config)
            .add_service(IdentityServiceServer::new(self.api.clone()))
            .readiness(PgReadiness::new(self.store.pool().clone()))
            .readiness(RedisReadiness::new(self.redis.clone()))
            .session_check(sessions);
        cqrs_edge::audit_chain::attach(
            server,
            self.store.pool().clone(),
            self.api.clock(),
            Some(&tokens),
        )
    }

    /// Erases the personal data of accounts disabled longer than
    /// `IDENTITY_DISABLED_RETENTION_DAYS` (nothing when unset); answers how many.
    pub async fn erase_expired_personal_data(&self) -> Result<usize, store::StoreError> {
        let Some(retention) = self.config.disabled_retention else {
            return Ok(0);
        };
        let now = self.api.clock().now();
        let cutoff = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        store::accounts::erase_disabled(self.store.pool(), cutoff, now).await
    }

    /// Service tokens identity signs itself with its own key, for its calls to the others.
    fn service_tokens(&self) -> Arc<dyn cqrs_auth::TokenSource> {
        // Token time is the system clock, which the other services verify with.
        Arc::new(IssuerTokenSource::new(
            Arc::new(self_issuer(&self.config)),
            self.config.outbox_client_id.clone(),
            Arc::new(SystemClock),
        ))
    }

    /// The outbox relay to the notification service, authenticating with service tokens it
    /// signs itself with identity's own key.
    pub fn relay(&self) -> Result<Relay, BoxError> {
        let channel =
            tonic::transport::Endpoint::from_shared(self.config.notifications_url.clone())?
                .connect_timeout(Duration::from_secs(5))
                .connect_lazy();
        let notifications = NotificationsPeer::new(
            channel,
            self.service_tokens(),
            self.config.relay.call_timeout,
        );
        Ok(Relay::new(
            self.store.pool().clone(),
            notifications,
            self.config.relay.clone(),
        ))
    }

    /// Creates the first account if configured and none exists.
    pub async fn bootstrap(&self) -> Result<Option<Uuid>, api::IdentityError> {
        match &self.config.bootstrap {
            Some(bootstrap) => bootstrap::bootstrap(&self.api, bootstrap).await,
            None => Ok(None),
        }
    }
}

/// Applies the migrations (and the outbox table) and returns (`cqrs-identity migrate`).
pub async fn migrate(env: Env) -> Result<(), BoxError> {
    let database = DatabaseConfig::from_env(&env, SERVICE)?;
    let pool = cqrs_runtime::db::connect(&database).await?;
    cqrs_runtime::db::migrate(&pool, &MIGRATOR).await?;
    let store = Store::new(pool);
    store.ensure_outbox().await?;
    store.pool().close().await;
    Ok(())
}

/// Runs the service as the binary does: configuration from `env`, migrations, bootstrap, the
/// outbox relay and the gRPC server, until SIGTERM or SIGINT.
pub async fn run(mut env: Env) -> Result<(), BoxError> {
    // Every bad variable is reported at once, not one per restart.
    let mut errs = ConfigErrors::default();
    let config = errs.take(IdentityConfig::from_env(&env));
    // Identity verifies its own tokens; other services are given CQRS_TOKEN_VERIFY_KEYS. When
    // it is unset and the signing key is bad, the signing key's error is the one to report.
    let own_keys_only = matches!(env.get("CQRS_TOKEN_VERIFY_KEYS"), Ok(None));
    if own_keys_only
        && let Ok(key) = env.required_with("CQRS_TOKEN_SIGNING_KEY", SigningKey::from_env_value)
    {
        env.set(
            "CQRS_TOKEN_VERIFY_KEYS",
            &key.verifying_key().to_env_value(),
        );
    }
    let server_config = errs.take(ServerConfig::from_env(&env, SERVICE, DEFAULT_PORT).map_err(
        |server_errs| {
            let mut kept = ConfigErrors::default();
            for e in server_errs {
                if !(own_keys_only && e.var == "CQRS_TOKEN_VERIFY_KEYS") {
                    kept.push(e);
                }
            }
            kept
        },
    ));
    let database = errs.take(DatabaseConfig::from_env(&env, SERVICE));
    let (config, server_config, database) =
        errs.finish(|| Some((config?, server_config?, database?)))?;
    let _telemetry =
        cqrs_runtime::telemetry::init(SERVICE, server_config.otel_endpoint.as_deref())?;

    let pool = cqrs_runtime::db::connect(&database).await?;
    cqrs_runtime::db::migrate(&pool, &MIGRATOR).await?;
    let store = Store::new(pool);
    store.ensure_outbox().await?;
    let redis = redis_connection(&config.redis_url)?;
    let identity = Identity::new(config, store, redis, Arc::new(SystemClock))?;
    // The dummy hash for unknown logins and the timing estimate exist before the first
    // request, so no early answer is faster than the rest.
    identity.api.hasher().warm_up().await?;
    // Likewise the word lists of the password rules, built by the first password set
    // otherwise (~20 ms). Nothing is served yet, so it may hold this thread.
    cqrs_rules::password::load_word_lists();
    identity.bootstrap().await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let relay = tokio::spawn(identity.relay()?.run(stopped()));
    if let Some(config) = identity.config.bootstrap.clone() {
        tokio::spawn(bootstrap::grant_task(
            identity.api.clone(),
            config,
            stopped(),
        ));
    }
    let purge_pool = identity.store.pool().clone();
    let purge_stop = stopped();
    let eraser = identity.clone();
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
                    match eraser.erase_expired_personal_data().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(accounts = n, "disabled accounts' personal data erased"),
                        Err(e) => tracing::warn!(error = %e, "erasing personal data failed"),
                    }
                }
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(server_config.listen).await?;
    tracing::info!(listen = %server_config.listen, "identity service starting");
    let signal = async move {
        cqrs_runtime::server::shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    identity
        .server(server_config)
        .serve_with(listener, signal)
        .await?;
    let _ = tokio::time::timeout(Duration::from_secs(30), relay).await;
    let _ = purge.await;
    Ok(())
}
