//! How a [`Suite`] is assembled: [`SuiteBuilder`] picks which services run and how each is
//! configured, then builds each from the same library calls its `run` makes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cqrs_audit_chain::CheckpointKey;
use cqrs_auth::{RedisSessionCheck, SessionCheck};
use cqrs_outbox::RelayConfig;
use cqrs_runtime::clock::{OffsetClock, SystemClock};
use cqrs_runtime::config::{Env, ServerConfig};
use cqrs_runtime::credentials::{lazy_channel, token_source};
use cqrs_runtime::server::ServiceServer;
use cqrs_testkit::{SmtpSink, TestDb, TestKeys, TestRedis};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Endpoint;
use uuid::Uuid;

use crate::suite::{Service, Suite, WAIT};

/// Which services a [`Suite`] runs and how; see [`Suite::builder`].
///
/// A service left out still has an address, on which nothing listens: its peers' calls are
/// refused at once, as when it is down. A held service is built but serves only once
/// [`Suite::serve`] is called.
#[derive(Clone, Debug)]
pub struct SuiteBuilder {
    running: [bool; 4],
    held: [bool; 4],
    env: [Vec<(String, String)>; 4],
    bootstrap: bool,
    workflow: Option<cqrs_access::WorkflowSettings>,
    revocations: Option<cqrs_directory::RevocationConfig>,
    replicated: bool,
    redis_url: Option<String>,
}

impl Default for SuiteBuilder {
    fn default() -> Self {
        SuiteBuilder {
            running: [true; 4],
            held: [false; 4],
            env: Default::default(),
            bootstrap: true,
            workflow: None,
            revocations: None,
            replicated: false,
            redis_url: None,
        }
    }
}

impl SuiteBuilder {
    /// Runs only `services`; the others are down (see the type's docs).
    pub fn only(mut self, services: &[Service]) -> Self {
        self.running = Service::ALL.map(|s| services.contains(&s));
        self
    }

    /// Builds `service` but does not serve it until [`Suite::serve`].
    /// Two replicas of every service over the same databases and Redis, each with its own
    /// background work (outbox relays, mail workers, cache listeners, session enders); each
    /// new client the suite hands out goes to the other replica than the last.
    pub fn replicated(mut self) -> Self {
        self.replicated = true;
        self
    }

    /// Over the Redis deployment at `url` (any `REDIS_URL` form) instead of the test Redis.
    pub fn redis(mut self, url: &str) -> Self {
        self.redis_url = Some(url.to_owned());
        self
    }

    pub fn held(mut self, service: Service) -> Self {
        self.held[service.index()] = true;
        self
    }

    /// Sets environment variables of `service` (after, so over, the suite's own).
    pub fn env(mut self, service: Service, vars: &[(&str, &str)]) -> Self {
        self.env[service.index()].extend(vars.iter().map(|(k, v)| ((*k).into(), (*v).into())));
        self
    }

    /// Without the service-desk bootstrap (identity starts with no account at all). Without
    /// identity or the directory there is no bootstrap either.
    pub fn without_bootstrap(mut self) -> Self {
        self.bootstrap = false;
        self
    }

    /// Access's workflow settings, in place of those from its environment.
    pub fn access_workflow(mut self, settings: cqrs_access::WorkflowSettings) -> Self {
        self.workflow = Some(settings);
        self
    }

    /// The directory's revocation schedule, in place of the one from its environment.
    pub fn directory_revocations(mut self, config: cqrs_directory::RevocationConfig) -> Self {
        self.revocations = Some(config);
        self
    }

    fn runs(&self, service: Service) -> bool {
        self.running[service.index()]
    }

    /// Starts the suite as configured.
    pub async fn start(self) -> Suite {
        let stop = watch::channel(false).0;
        let keys = TestKeys::generate();
        let redis = match &self.redis_url {
            Some(url) => TestRedis::at(url).await,
            None => TestRedis::new().await,
        };
        let smtp = SmtpSink::start().await;
        let clock = OffsetClock::new();

        // Every address is known before anything starts, so each service is configured with
        // its peers' URLs the way a deployment is.
        let mut listeners = Vec::new();
        for _ in Service::ALL {
            listeners.push(Some(listener().await));
        }
        let urls: [String; 4] = Service::ALL.map(|s| url_of(listeners[s.index()].as_ref()));
        let secrets: HashMap<&'static str, String> =
            ["directory", "access", Suite::GATEWAY_CLIENT_ID]
                .into_iter()
                .map(|id| (id, format!("{id}-{}", Uuid::new_v4().simple())))
                .collect();
        let service_clients = secrets
            .iter()
            .map(|(id, secret)| format!("{id}:{}", sha256_hex(secret)))
            .collect::<Vec<_>>()
            .join(",");
        let common: Vec<(&str, String)> = vec![
            ("REDIS_URL", redis.url.clone()),
            ("CQRS_REDIS_NAMESPACE", redis.namespace.clone()),
            ("CQRS_TOKEN_VERIFY_KEYS", keys.verify_env_value()),
            ("IDENTITY_URL", urls[0].clone()),
            ("DIRECTORY_URL", urls[1].clone()),
            ("ACCESS_URL", urls[2].clone()),
            ("NOTIFICATIONS_URL", urls[3].clone()),
            // Every test calls from loopback, many in parallel and in loops: the rate limits
            // are off unless a test turns them on with `env`.
            ("CQRS_RATE_LIMIT_PER_CLIENT", "off".into()),
            ("CQRS_RATE_LIMIT_PER_ADDRESS", "off".into()),
            // Short, so tests that mail often stay quick; the timing tests set the default.
            ("CQRS_UNIFORM_ANSWER_MS", "20".into()),
            // Many suites run at once: no fixed metrics ports (a test serves /metrics itself).
            ("IDENTITY_ADMIN_LISTEN", "off".into()),
            ("DIRECTORY_ADMIN_LISTEN", "off".into()),
            ("ACCESS_ADMIN_LISTEN", "off".into()),
            ("NOTIFICATIONS_ADMIN_LISTEN", "off".into()),
        ];
        let mut own: [Vec<(&str, String)>; 4] = Default::default();
        own[Service::Notifications.index()] = vec![
            ("CQRS_SMTP_URL", smtp.url()),
            ("CQRS_MAIL_FROM", "CQRS <no-reply@cqrs-suite.nhs.uk>".into()),
            ("CQRS_PUBLIC_BASE_URL", Suite::BASE_URL.into()),
            ("NOTIFICATIONS_POLL_INTERVAL_MS", "20".into()),
            ("NOTIFICATIONS_RETRY_BASE_MS", "50".into()),
            ("NOTIFICATIONS_RETRY_MAX_SECS", "1".into()),
            ("NOTIFICATIONS_SMTP_TIMEOUT_SECS", "5".into()),
        ];
        let bootstrap =
            self.bootstrap && self.runs(Service::Identity) && self.runs(Service::Directory);
        own[Service::Identity.index()] = vec![
            ("CQRS_TOKEN_SIGNING_KEY", keys.signing.to_env_value()),
            ("CQRS_SERVICE_CLIENTS", service_clients),
            ("IDENTITY_OUTBOX_POLL_INTERVAL_MS", "20".into()),
            // Debug-build argon2 on a shared test machine is slow: a sign-in must wait for
            // a hashing slot rather than be turned away as overload.
            ("IDENTITY_HASH_QUEUE_TIMEOUT_MS", "300000".into()),
            // Most tests act as the desk or an administrator with a password alone; the
            // second-factor tests turn the policy on with `env`.
            ("CQRS_SECOND_FACTOR_ROLES", "none".into()),
        ];
        if bootstrap {
            own[Service::Identity.index()].push((
                "CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL",
                Suite::DESK_EMAIL.into(),
            ));
        }
        own[Service::Directory.index()] = vec![
            ("DIRECTORY_CLIENT_SECRET", secrets["directory"].clone()),
            ("DIRECTORY_REVOCATION_POLL_INTERVAL_MS", "50".into()),
            ("DIRECTORY_REVOCATION_RETRY_BASE_MS", "100".into()),
        ];
        own[Service::Access.index()] = vec![
            ("ACCESS_CLIENT_SECRET", secrets["access"].clone()),
            ("ACCESS_OUTBOX_POLL_INTERVAL_MS", "20".into()),
        ];
        // Each service signs its audit checkpoints with a key of its own and keeps the
        // others' checkpoints.
        for service in Service::ALL {
            let others: Vec<&str> = Service::ALL
                .iter()
                .filter(|s| **s != service)
                .map(|s| urls[s.index()].as_str())
                .collect();
            own[service.index()].extend([
                (
                    "CQRS_AUDIT_SIGNING_KEY",
                    CheckpointKey::generate(&format!("{}-audit-1", service.name())).to_env_value(),
                ),
                ("CQRS_AUDIT_WITNESS_URLS", others.join(",")),
            ]);
        }
        let envs: [Env; 4] = Service::ALL.map(|s| {
            let mut env = env(&common, &own[s.index()]);
            for (k, v) in &self.env[s.index()] {
                env.set(k, v);
            }
            env
        });

        let mut parts = Parts {
            stop,
            clock,
            keys,
            redis_conn: redis.conn.clone(),
            namespace: redis.namespace.clone(),
            envs,
            databases: Default::default(),
            pending: Default::default(),
            identity: None,
            directory: None,
            access: None,
        };
        // Mail is relayed only when notifications runs; otherwise outbox rows stay where a
        // test can read them.
        let relays = self.runs(Service::Notifications);
        if self.runs(Service::Notifications) {
            parts.start_notifications().await;
        }
        if self.runs(Service::Identity) {
            parts.start_identity(relays).await;
        }
        if self.runs(Service::Directory) {
            parts.start_directory(self.revocations.clone()).await;
        }
        if self.runs(Service::Access) {
            parts.start_access(self.workflow.clone(), relays).await;
        }
        for service in Service::ALL {
            let listener = listeners[service.index()].take();
            if let (Some(server), Some(listener)) = (parts.server(service), listener) {
                if self.held[service.index()] {
                    // Nothing listens until it serves: its peers' calls are refused at once.
                    let addr = listener.local_addr().expect("listener address");
                    parts.pending[service.index()] = Some((server, addr));
                } else {
                    serve(server, listener, parts.stopped());
                }
            }
        }

        let desk_account_id = if bootstrap {
            Some(parts.bootstrap_desk().await)
        } else {
            None
        };
        let endpoint = |url: &String| {
            Endpoint::from_shared(url.clone())
                .expect("service url")
                .connect_timeout(Duration::from_secs(5))
        };
        let second = if self.replicated {
            Some(
                parts
                    .start_replicas(relays, self.workflow.clone(), self.revocations.clone())
                    .await,
            )
        } else {
            None
        };
        let mut i = 0;
        let channels = urls.each_ref().map(|url| {
            let mut replicas = vec![endpoint(url).connect_lazy()];
            if let Some(url) = second.as_ref().map(|s| &s[i]).filter(|u| !u.is_empty()) {
                replicas.push(endpoint(url).connect_lazy());
            }
            i += 1;
            replicas
        });
        Suite::assemble(parts, redis, smtp, urls, channels, secrets, desk_account_id)
    }
}

/// What [`SuiteBuilder::start`] builds, before the suite owns it.
pub(crate) struct Parts {
    pub stop: watch::Sender<bool>,
    pub clock: OffsetClock,
    pub keys: TestKeys,
    pub redis_conn: cqrs_redis::RedisConnection,
    pub namespace: String,
    pub envs: [Env; 4],
    pub databases: [Option<TestDb>; 4],
    pub pending: [Option<(ServiceServer, std::net::SocketAddr)>; 4],
    pub identity: Option<cqrs_identity::Identity>,
    pub directory: Option<cqrs_directory::Directory>,
    pub access: Option<cqrs_access::Access>,
}

impl Parts {
    /// A future that ends when the suite stops.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }

    fn env(&self, service: Service) -> &Env {
        &self.envs[service.index()]
    }

    pub fn server_config(&self, service: Service, name: &'static str, port: u16) -> ServerConfig {
        ServerConfig::from_env(self.env(service), name, port)
            .unwrap_or_else(|e| panic!("{name} server config: {e}"))
    }

    /// The server of a service that was built, for its listener.
    fn server(&self, service: Service) -> Option<ServiceServer> {
        match service {
            Service::Identity => self.identity.as_ref().map(|identity| {
                identity.server(self.server_config(
                    service,
                    cqrs_identity::SERVICE,
                    cqrs_identity::DEFAULT_PORT,
                ))
            }),
            Service::Directory => self
                .directory
                .as_ref()
                .map(|directory| self.server_of_directory(directory)),
            Service::Access => self
                .access
                .as_ref()
                .map(|access| self.server_of_access(access)),
            Service::Notifications => self.databases[service.index()]
                .as_ref()
                .map(|db| self.server_of_notifications(&db.pool)),
        }
    }

    fn server_of_notifications(&self, pool: &sqlx::PgPool) -> ServiceServer {
        cqrs_notifications::server(
            self.server_config(
                Service::Notifications,
                cqrs_notifications::SERVICE,
                cqrs_notifications::DEFAULT_PORT,
            ),
            cqrs_notifications::Store::new(pool.clone()),
            Arc::new(self.clock.clone()),
        )
        .session_check(self.sessions())
    }

    /// The configured number of mail workers over `pool`, until the suite stops.
    fn spawn_mail_workers(&self, pool: &sqlx::PgPool) {
        let config =
            cqrs_notifications::NotificationsConfig::from_env(self.env(Service::Notifications))
                .expect("notifications config");
        let store = cqrs_notifications::Store::new(pool.clone());
        for _ in 0..config.workers {
            let worker =
                cqrs_notifications::worker(&config, store.clone(), Arc::new(self.clock.clone()))
                    .expect("mailer");
            tokio::spawn(worker.run(self.stopped()));
        }
    }

    /// Access's outbox relay, until the suite stops.
    fn spawn_access_relay(
        &self,
        access: &cqrs_access::Access,
        notifications: tonic::transport::Channel,
        tokens: Arc<dyn cqrs_auth::TokenSource>,
    ) {
        let config =
            cqrs_access::AccessConfig::from_env(self.env(Service::Access)).expect("access config");
        let relay_config = RelayConfig {
            poll_interval: config.outbox_poll_interval,
            producer: "access",
            ..RelayConfig::default()
        };
        tokio::spawn(
            access
                .relay(notifications, tokens, relay_config)
                .run(self.stopped()),
        );
    }

    /// Identity's outbox relay, until the suite stops.
    fn spawn_identity_relay(&self, identity: &cqrs_identity::Identity) {
        tokio::spawn(
            identity
                .relay()
                .expect("identity relay")
                .run(self.stopped()),
        );
    }

    pub fn server_of_directory(&self, directory: &cqrs_directory::Directory) -> ServiceServer {
        self.server_of_directory_with(directory, self.sessions())
    }

    pub fn server_of_directory_with(
        &self,
        directory: &cqrs_directory::Directory,
        sessions: Arc<dyn SessionCheck>,
    ) -> ServiceServer {
        directory.server(
            self.server_config(
                Service::Directory,
                cqrs_directory::SERVICE,
                cqrs_directory::DEFAULT_PORT,
            ),
            sessions,
        )
    }

    pub fn server_of_access(&self, access: &cqrs_access::Access) -> ServiceServer {
        self.server_of_access_with(access, self.sessions())
    }

    pub fn server_of_access_with(
        &self,
        access: &cqrs_access::Access,
        sessions: Arc<dyn SessionCheck>,
    ) -> ServiceServer {
        access.server(
            self.server_config(
                Service::Access,
                cqrs_access::SERVICE,
                cqrs_access::DEFAULT_PORT,
            ),
            sessions,
        )
    }

    fn sessions(&self) -> Arc<RedisSessionCheck> {
        Arc::new(RedisSessionCheck::new(
            self.redis_conn.clone(),
            self.namespace.clone(),
        ))
    }

    /// Notifications' SMTP worker(s); its server is made by [`Parts::server`].
    async fn start_notifications(&mut self) {
        let db = TestDb::new(&cqrs_notifications::MIGRATOR).await;
        self.spawn_mail_workers(&db.pool);
        self.databases[Service::Notifications.index()] = Some(db);
    }

    async fn start_identity(&mut self, relay: bool) {
        let db = TestDb::new(&cqrs_identity::MIGRATOR).await;
        let identity = self.identity_over(&db.pool, &[]).await;
        if relay {
            self.spawn_identity_relay(&identity);
        }
        self.identity = Some(identity);
        self.databases[Service::Identity.index()] = Some(db);
    }

    /// A second replica of every running service over the same databases, with its own
    /// background work, each serving on a port of its own; their URLs.
    async fn start_replicas(
        &self,
        relays: bool,
        workflow: Option<cqrs_access::WorkflowSettings>,
        revocations: Option<cqrs_directory::RevocationConfig>,
    ) -> [String; 4] {
        let mut urls: [String; 4] = Default::default();
        for service in Service::ALL {
            let Some(db) = &self.databases[service.index()] else {
                continue;
            };
            let server = match service {
                Service::Identity => {
                    let identity = self.identity_over(&db.pool, &[]).await;
                    if relays {
                        self.spawn_identity_relay(&identity);
                    }
                    identity.server(self.server_config(
                        service,
                        cqrs_identity::SERVICE,
                        cqrs_identity::DEFAULT_PORT,
                    ))
                }
                Service::Directory => {
                    let directory = self.directory_over(db.pool.clone(), revocations.clone());
                    tokio::spawn(directory.ender.clone().run(self.stopped()));
                    self.server_of_directory(&directory)
                }
                Service::Access => {
                    let (access, notifications, tokens) =
                        self.access_over(&db.pool, workflow.clone()).await;
                    if relays {
                        self.spawn_access_relay(&access, notifications, tokens);
                    }
                    self.server_of_access(&access)
                }
                Service::Notifications => {
                    self.spawn_mail_workers(&db.pool);
                    self.server_of_notifications(&db.pool)
                }
            };
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("replica listener");
            urls[service.index()] =
                format!("http://{}", listener.local_addr().expect("replica address"));
            serve(server, listener, self.stopped());
        }
        urls
    }

    /// An identity instance over `pool`, configured as the suite's plus `extra`.
    pub async fn identity_over(
        &self,
        pool: &sqlx::PgPool,
        extra: &[(&str, &str)],
    ) -> cqrs_identity::Identity {
        let mut env = self.env(Service::Identity).clone();
        for (k, v) in extra {
            env.set(k, v);
        }
        let config = cqrs_identity::IdentityConfig::from_env(&env).expect("identity config");
        let store = cqrs_identity::Store::new(pool.clone());
        store.ensure_outbox().await.expect("identity outbox");
        let redis = cqrs_identity::redis_connection(&config.redis_url).expect("identity redis");
        let identity =
            cqrs_identity::Identity::new(config, store, redis, Arc::new(self.clock.clone()))
                .expect("identity");
        identity
            .api
            .hasher()
            .warm_up()
            .await
            .expect("identity hasher warm-up");
        identity
    }

    async fn start_directory(&mut self, revocations: Option<cqrs_directory::RevocationConfig>) {
        let db = TestDb::new(&cqrs_directory::MIGRATOR).await;
        let directory = self.directory_over(db.pool.clone(), revocations);
        tokio::spawn(directory.ender.clone().run(self.stopped()));
        self.directory = Some(directory);
        self.databases[Service::Directory.index()] = Some(db);
    }

    /// A directory instance over `pool`, configured as the suite's.
    pub fn directory_over(
        &self,
        pool: sqlx::PgPool,
        revocations: Option<cqrs_directory::RevocationConfig>,
    ) -> cqrs_directory::Directory {
        let config = cqrs_directory::DirectoryConfig::from_env(self.env(Service::Directory))
            .expect("directory config");
        let revocations = revocations.unwrap_or_else(|| config.revocations.clone());
        let call_timeout = revocations.call_timeout;
        let identity_channel =
            lazy_channel(&config.identity_url, call_timeout).expect("identity channel");
        // Token time is the system clock (see cqrs_runtime::clock), not the suite's clock.
        let tokens = token_source(
            &config.credentials,
            identity_channel.clone(),
            call_timeout,
            Arc::new(SystemClock),
        );
        cqrs_directory::Directory::new(
            cqrs_directory::Store::new(pool),
            identity_channel,
            tokens,
            revocations,
            Arc::new(self.clock.clone()),
        )
    }

    async fn start_access(&mut self, workflow: Option<cqrs_access::WorkflowSettings>, relay: bool) {
        let db = TestDb::new(&cqrs_access::MIGRATOR).await;
        let (access, notifications, tokens) = self.access_over(&db.pool, workflow).await;
        if relay {
            self.spawn_access_relay(&access, notifications, tokens);
        }
        self.access = Some(access);
        self.databases[Service::Access.index()] = Some(db);
    }

    /// An access instance over `pool`, configured as the suite's, with the channel and
    /// tokens its outbox relay would use.
    pub async fn access_over(
        &self,
        pool: &sqlx::PgPool,
        workflow: Option<cqrs_access::WorkflowSettings>,
    ) -> (
        cqrs_access::Access,
        tonic::transport::Channel,
        Arc<dyn cqrs_auth::TokenSource>,
    ) {
        let config =
            cqrs_access::AccessConfig::from_env(self.env(Service::Access)).expect("access config");
        let store = cqrs_access::Store::new(pool.clone());
        store.ensure_outbox().await.expect("access outbox");
        let timeout = config.call_timeout;
        let identity_channel = lazy_channel(&config.identity_url, timeout).expect("identity");
        let directory_channel = lazy_channel(&config.directory_url, timeout).expect("directory");
        let notifications_channel =
            lazy_channel(&config.notifications_url, timeout).expect("notifications");
        let tokens = token_source(
            &config.credentials,
            identity_channel.clone(),
            timeout,
            Arc::new(SystemClock),
        );
        let peers = cqrs_access::Peers::new(
            identity_channel,
            directory_channel,
            Arc::clone(&tokens),
            timeout,
        );
        let access = cqrs_access::Access::new(
            store,
            peers,
            workflow.unwrap_or(config.workflow),
            cqrs_edge::rate_limit::RateLimits::new(config.rate_limits),
            Arc::new(self.clock.clone()),
        );
        (access, notifications_channel, tokens)
    }

    /// The bootstrap account's service-desk organisation and grant, from the directory.
    async fn bootstrap_desk(&self) -> String {
        let identity = self.identity.as_ref().expect("identity runs");
        let desk_account_id = identity
            .bootstrap()
            .await
            .expect("bootstrap")
            .expect("the bootstrap creates the service-desk account in an empty database")
            .to_string();
        let bootstrap = identity
            .config
            .bootstrap
            .clone()
            .expect("bootstrap configured");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match cqrs_identity::bootstrap::grant_pending(&identity.api, &bootstrap).await {
                Ok(0) => break,
                Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!("the bootstrap grant was not made within {WAIT:?}: {other:?}"),
            }
        }
        desk_account_id
    }
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

fn url_of(listener: Option<&TcpListener>) -> String {
    let listener = listener.expect("a listener per service");
    format!(
        "http://{}",
        listener.local_addr().expect("listener address")
    )
}

fn sha256_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn env(common: &[(&str, String)], own: &[(&str, String)]) -> Env {
    let pairs: Vec<(&str, &str)> = common
        .iter()
        .chain(own)
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    Env::from_pairs(&pairs)
}

/// Serves `server` on `listener` until `stop`, as each service's `run` does.
pub(crate) fn serve(
    server: ServiceServer,
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    tokio::spawn(async move {
        if let Err(e) = server.serve_with(listener, stop).await {
            eprintln!("cqrs-suite: a server stopped with an error: {e}");
        }
    });
}
