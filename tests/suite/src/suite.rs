//! [`Suite`]: the four services in-process, and the calls a gateway or cqrsctl would make.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use cqrs_auth::RedisSessionCheck;
use cqrs_outbox::RelayConfig;
use cqrs_proto::access::v1::access_service_client::AccessServiceClient;
use cqrs_proto::common::v1 as common_pb;
use cqrs_proto::directory::v1::{self as dir_pb, directory_service_client::DirectoryServiceClient};
use cqrs_proto::identity::v1::{self as id_pb, identity_service_client::IdentityServiceClient};
use cqrs_proto::notifications::v1::notification_service_client::NotificationServiceClient;
use cqrs_runtime::clock::{OffsetClock, SystemClock};
use cqrs_runtime::config::{Env, ServerConfig};
use cqrs_runtime::credentials::{lazy_channel, token_source};
use cqrs_testkit::{CapturedMail, SmtpSink, TestDb, TestKeys, TestRedis, with_token};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

/// How long the suite waits for something asynchronous (a mail, the bootstrap grant).
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// One of the four services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Identity,
    Directory,
    Access,
    Notifications,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::Identity,
        Service::Directory,
        Service::Access,
        Service::Notifications,
    ];

    fn index(self) -> usize {
        match self {
            Service::Identity => 0,
            Service::Directory => 1,
            Service::Access => 2,
            Service::Notifications => 3,
        }
    }
}

/// A person signed in (one session) and acting through one selected grant.
#[derive(Clone, Debug)]
pub struct SignedIn {
    /// The SignIn answer: session token, the first (no-grant) access token, the account, the
    /// grants it could select.
    pub sign_in: id_pb::SignInResponse,
    /// The access token SelectRole issued for `grant`.
    pub token: String,
    /// The selected grant.
    pub grant: dir_pb::Grant,
}

impl SignedIn {
    pub fn account(&self) -> &id_pb::Account {
        self.sign_in
            .account
            .as_ref()
            .expect("SignIn answered an account")
    }

    pub fn account_id(&self) -> &str {
        &self.account().id
    }

    /// The session's secret, for RefreshAccessToken.
    pub fn session_token(&self) -> &str {
        &self.sign_in.session_token
    }

    /// The access token of the session before any role was selected.
    pub fn plain_token(&self) -> &str {
        &self.sign_in.access_token
    }
}

/// Subjects (or the start of them) of the mails the suite sends, for [`Suite::mails`].
pub mod subject {
    pub const REGISTRATION_LINK: &str = "Complete your CQRS registration";
    pub const INVITATION: &str = "You have been invited to CQRS";
    pub const REGISTRATION_RECEIVED: &str = "New CQRS registration for";
    pub const REGISTRATION_APPROVED: &str = "Your CQRS registration has been approved";
    pub const REGISTRATION_REJECTED: &str = "Your CQRS registration has been rejected";
    pub const ACCESS_REQUEST_APPROVED: &str = "Your CQRS access request has been approved";
    pub const ACCESS_REQUEST_REJECTED: &str = "Your CQRS access request has been rejected";
    pub const PASSWORD_RESET: &str = "Reset your CQRS password";
    pub const USER_ID_REMINDER: &str = "Your CQRS User ID";
    pub const ACCOUNT_LOCKED: &str = "Your CQRS account has been locked";
    pub const ACCOUNT_UNLOCKED: &str = "Your CQRS account has been unlocked";
    pub const ACCOUNT_DISABLED: &str = "Your CQRS account has been disabled";
    pub const ACCOUNT_ENABLED: &str = "Your CQRS account has been re-enabled";
    pub const PASSWORD_CHANGED: &str = "Your CQRS password has been changed";
}

/// The four services running in this process; see the crate docs.
pub struct Suite {
    // Dropped first: closing it stops every server, relay and worker of the suite.
    _stop: watch::Sender<bool>,
    /// Every mail the notification service delivered.
    pub smtp: SmtpSink,
    /// "Now" for every service (see [`Suite::advance_clock`]).
    pub clock: OffsetClock,
    /// The Redis namespace every service shares (sessions, lock-out counters).
    pub redis: TestRedis,
    _identity: cqrs_identity::Identity,
    access: cqrs_access::Access,
    urls: [String; 4],
    channels: [Channel; 4],
    gateway_secret: String,
    desk_account_id: String,
    desk_user_id: Option<String>,
    _databases: Vec<TestDb>,
}

impl fmt::Debug for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Suite")
            .field("urls", &self.urls)
            .field("desk_account_id", &self.desk_account_id)
            .field("desk_user_id", &self.desk_user_id)
            .finish_non_exhaustive()
    }
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

fn url_of(listener: &TcpListener) -> String {
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

impl Suite {
    /// The address `CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL` names: the first account.
    pub const DESK_EMAIL: &'static str = "service.desk@cqrs-suite.nhs.uk";
    /// The password [`Suite::start_registered`] gives the service desk. (Its User ID starts
    /// with `SDE`, from "Service Desk", which the password must not contain.)
    pub const DESK_PASSWORD: &'static str = "Lantern#Quartz58";
    /// Base of every link in a mail (`CQRS_PUBLIC_BASE_URL`).
    pub const BASE_URL: &'static str = "https://cqrs.example.nhs.uk/portal/";
    /// Client id of the suite's own internal caller (a gateway) at `IssueServiceToken`.
    pub const GATEWAY_CLIENT_ID: &'static str = "gateway";
    /// Consecutive wrong passwords that lock an account permanently
    /// (`CQRS_LOCKOUT_TEMPORARY_AFTER` = `CQRS_LOCKOUT_PERMANENT_AFTER`), so only the service
    /// desk can lift the lock.
    pub const LOCKOUT_THRESHOLD: u32 = 3;

    /// The suite with the service-desk account bootstrapped (PENDING_REGISTRATION, its
    /// registration mail on its way or delivered) and granted SERVICE_DESK.
    pub async fn start() -> Suite {
        let stop = watch::channel(false).0;
        let stopped = {
            let stop = stop.clone();
            move || {
                let mut rx = stop.subscribe();
                async move {
                    let _ = rx.wait_for(|stopped| *stopped).await;
                }
            }
        };

        let keys = TestKeys::generate();
        let redis = TestRedis::new().await;
        let smtp = SmtpSink::start().await;
        let clock = OffsetClock::new();

        // Every address is known before anything starts, so each service is configured with
        // its peers' URLs the way a deployment is.
        let listeners = [
            listener().await,
            listener().await,
            listener().await,
            listener().await,
        ];
        let urls = listeners.each_ref().map(url_of);
        let [
            identity_listener,
            directory_listener,
            access_listener,
            notifications_listener,
        ] = listeners;

        let secret = |name: &str| format!("{name}-{}", Uuid::new_v4().simple());
        let (directory_secret, access_secret, gateway_secret) =
            (secret("directory"), secret("access"), secret("gateway"));
        let service_clients = [
            ("directory", &directory_secret),
            ("access", &access_secret),
            (Self::GATEWAY_CLIENT_ID, &gateway_secret),
        ]
        .map(|(id, secret)| format!("{id}:{}", sha256_hex(secret)))
        .join(",");

        let common: Vec<(&str, String)> = vec![
            ("REDIS_URL", redis.url.clone()),
            ("CQRS_REDIS_NAMESPACE", redis.namespace.clone()),
            ("CQRS_TOKEN_VERIFY_KEYS", keys.verify_env_value()),
            ("IDENTITY_URL", urls[0].clone()),
            ("DIRECTORY_URL", urls[1].clone()),
            ("ACCESS_URL", urls[2].clone()),
            ("NOTIFICATIONS_URL", urls[3].clone()),
        ];
        let mut databases = Vec::new();

        // Notifications, with its SMTP worker(s).
        let notifications_env = env(
            &common,
            &[
                ("CQRS_SMTP_URL", smtp.url()),
                ("CQRS_MAIL_FROM", "CQRS <no-reply@cqrs-suite.nhs.uk>".into()),
                ("CQRS_PUBLIC_BASE_URL", Self::BASE_URL.into()),
                ("NOTIFICATIONS_POLL_INTERVAL_MS", "20".into()),
                ("NOTIFICATIONS_RETRY_BASE_MS", "50".into()),
                ("NOTIFICATIONS_RETRY_MAX_SECS", "1".into()),
                ("NOTIFICATIONS_SMTP_TIMEOUT_SECS", "5".into()),
            ],
        );
        let notifications_db = TestDb::new(&cqrs_notifications::MIGRATOR).await;
        let config = cqrs_notifications::NotificationsConfig::from_env(&notifications_env)
            .expect("notifications config");
        let server_config = ServerConfig::from_env(
            &notifications_env,
            cqrs_notifications::SERVICE,
            cqrs_notifications::DEFAULT_PORT,
        )
        .expect("notifications server config");
        let store = cqrs_notifications::Store::new(notifications_db.pool.clone());
        for _ in 0..config.workers {
            let worker =
                cqrs_notifications::worker(&config, store.clone(), Arc::new(clock.clone()))
                    .expect("mailer");
            tokio::spawn(worker.run(stopped()));
        }
        let sessions = cqrs_notifications::session_check(&config).expect("notifications redis");
        serve(
            cqrs_notifications::server(server_config, store, Arc::new(clock.clone()))
                .session_check(sessions),
            notifications_listener,
            stopped(),
        );
        databases.push(notifications_db);

        // Identity: the signing key, the bootstrap, the outbox relay.
        let identity_env = env(
            &common,
            &[
                ("CQRS_TOKEN_SIGNING_KEY", keys.signing.to_env_value()),
                ("CQRS_SERVICE_CLIENTS", service_clients),
                ("CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL", Self::DESK_EMAIL.into()),
                ("IDENTITY_OUTBOX_POLL_INTERVAL_MS", "20".into()),
                (
                    "CQRS_LOCKOUT_TEMPORARY_AFTER",
                    Self::LOCKOUT_THRESHOLD.to_string(),
                ),
                (
                    "CQRS_LOCKOUT_PERMANENT_AFTER",
                    Self::LOCKOUT_THRESHOLD.to_string(),
                ),
                // Debug-build argon2 on a shared test machine is slow: a sign-in must wait for
                // a hashing slot rather than be turned away as overload.
                ("IDENTITY_HASH_QUEUE_TIMEOUT_MS", "300000".into()),
            ],
        );
        let identity_db = TestDb::new(&cqrs_identity::MIGRATOR).await;
        let config =
            cqrs_identity::IdentityConfig::from_env(&identity_env).expect("identity config");
        let server_config = ServerConfig::from_env(
            &identity_env,
            cqrs_identity::SERVICE,
            cqrs_identity::DEFAULT_PORT,
        )
        .expect("identity server config");
        let store = cqrs_identity::Store::new(identity_db.pool.clone());
        store.ensure_outbox().await.expect("identity outbox");
        let redis_conn =
            cqrs_identity::redis_connection(&config.redis_url).expect("identity redis");
        let identity =
            cqrs_identity::Identity::new(config, store, redis_conn, Arc::new(clock.clone()))
                .expect("identity");
        identity
            .api
            .hasher()
            .warm_up()
            .await
            .expect("identity hasher warm-up");
        let desk_account_id = identity
            .bootstrap()
            .await
            .expect("bootstrap")
            .expect("the bootstrap creates the service-desk account in an empty database")
            .to_string();
        tokio::spawn(identity.relay().expect("identity relay").run(stopped()));
        serve(identity.server(server_config), identity_listener, stopped());
        databases.push(identity_db);

        // The directory: revocations end sessions through identity.
        let directory_env = env(
            &common,
            &[
                ("DIRECTORY_CLIENT_SECRET", directory_secret),
                ("DIRECTORY_REVOCATION_POLL_INTERVAL_MS", "50".into()),
                ("DIRECTORY_REVOCATION_RETRY_BASE_MS", "100".into()),
            ],
        );
        let directory_db = TestDb::new(&cqrs_directory::MIGRATOR).await;
        let config =
            cqrs_directory::DirectoryConfig::from_env(&directory_env).expect("directory config");
        let server_config = ServerConfig::from_env(
            &directory_env,
            cqrs_directory::SERVICE,
            cqrs_directory::DEFAULT_PORT,
        )
        .expect("directory server config");
        let call_timeout = config.revocations.call_timeout;
        let identity_channel =
            lazy_channel(&config.identity_url, call_timeout).expect("identity channel");
        // Token time is the system clock (see cqrs_runtime::clock), not the suite's clock.
        let tokens = token_source(
            &config.credentials,
            identity_channel.clone(),
            call_timeout,
            Arc::new(SystemClock),
        );
        let directory = cqrs_directory::Directory::new(
            cqrs_directory::Store::new(directory_db.pool.clone()),
            identity_channel,
            tokens,
            config.revocations.clone(),
            Arc::new(clock.clone()),
        );
        let sessions = Arc::new(RedisSessionCheck::new(
            cqrs_runtime::db::redis_connection(&config.redis_url).expect("directory redis"),
            config.redis_namespace.clone(),
        ));
        tokio::spawn(directory.ender.clone().run(stopped()));
        serve(
            directory.server(server_config, sessions),
            directory_listener,
            stopped(),
        );
        databases.push(directory_db);

        // Access, with its outbox relay (the expiry sweep is driven by the tests).
        let access_env = env(
            &common,
            &[
                ("ACCESS_CLIENT_SECRET", access_secret),
                ("ACCESS_OUTBOX_POLL_INTERVAL_MS", "20".into()),
            ],
        );
        let access_db = TestDb::new(&cqrs_access::MIGRATOR).await;
        let config = cqrs_access::AccessConfig::from_env(&access_env).expect("access config");
        let server_config =
            ServerConfig::from_env(&access_env, cqrs_access::SERVICE, cqrs_access::DEFAULT_PORT)
                .expect("access server config");
        let store = cqrs_access::Store::new(access_db.pool.clone());
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
            config.workflow.clone(),
            Arc::new(clock.clone()),
        );
        let sessions = Arc::new(RedisSessionCheck::new(
            cqrs_runtime::db::redis_connection(&config.redis_url).expect("access redis"),
            config.redis_namespace.clone(),
        ));
        let relay_config = RelayConfig {
            poll_interval: config.outbox_poll_interval,
            ..RelayConfig::default()
        };
        tokio::spawn(
            access
                .relay(notifications_channel, tokens, relay_config)
                .run(stopped()),
        );
        serve(
            access.server(server_config, sessions),
            access_listener,
            stopped(),
        );
        databases.push(access_db);

        // The bootstrap account's service-desk organisation and grant, from the directory.
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

        let channels = urls.each_ref().map(|url| {
            Endpoint::from_shared(url.clone())
                .expect("service url")
                .connect_timeout(Duration::from_secs(5))
                .connect_lazy()
        });
        Suite {
            _stop: stop,
            smtp,
            clock,
            redis,
            _identity: identity,
            access,
            urls,
            channels,
            gateway_secret,
            desk_account_id,
            desk_user_id: None,
            _databases: databases,
        }
    }

    /// [`Suite::start`], then the service desk completes its registration from the mailed
    /// link with [`Suite::DESK_PASSWORD`] (see [`Suite::desk_user_id`]).
    pub async fn start_registered() -> Suite {
        let mut suite = Suite::start().await;
        suite.register_desk().await;
        suite
    }

    /// Completes the service desk's registration from its mailed link with
    /// [`Suite::DESK_PASSWORD`] and remembers its User ID.
    pub async fn register_desk(&mut self) -> id_pb::Account {
        let token = self
            .link_token(Self::DESK_EMAIL, subject::REGISTRATION_LINK)
            .await;
        let account = self
            .complete_registration(&token, Self::DESK_PASSWORD)
            .await
            .unwrap_or_else(|s| panic!("the service desk cannot complete its registration: {s:?}"));
        self.desk_user_id = Some(account.user_id.clone());
        account
    }

    /// `http://127.0.0.1:<port>` of a service.
    pub fn url(&self, service: Service) -> String {
        self.urls[service.index()].clone()
    }

    /// A channel to a service (connects on first use).
    pub fn channel(&self, service: Service) -> Channel {
        self.channels[service.index()].clone()
    }

    pub fn identity(&self) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(self.channel(Service::Identity))
    }

    pub fn directory(&self) -> DirectoryServiceClient<Channel> {
        DirectoryServiceClient::new(self.channel(Service::Directory))
    }

    pub fn access(&self) -> AccessServiceClient<Channel> {
        AccessServiceClient::new(self.channel(Service::Access))
    }

    pub fn notifications(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.channel(Service::Notifications))
    }

    /// The bootstrap service-desk account's id (known from the start).
    pub fn desk_account_id(&self) -> &str {
        &self.desk_account_id
    }

    /// The service desk's User ID.
    ///
    /// # Panics
    /// Before its registration is complete ([`Suite::start_registered`],
    /// [`Suite::register_desk`]).
    pub fn desk_user_id(&self) -> &str {
        self.desk_user_id.as_deref().expect(
            "the service desk has not registered yet: use Suite::start_registered or register_desk",
        )
    }

    /// Moves "now" of identity, the directory and access by `by`.
    pub fn advance_clock(&self, by: TimeDelta) {
        self.clock.advance(by);
    }

    /// One pass of access's invitation-expiry sweep; how many invitations it expired.
    pub async fn expire_invitations(&self) -> usize {
        self.access
            .api
            .expire_due()
            .await
            .expect("invitation expiry sweep")
    }

    /// A fresh service token of the suite's internal caller, from identity's
    /// `IssueServiceToken` with [`Suite::GATEWAY_CLIENT_ID`]'s secret.
    pub async fn service_token(&self) -> String {
        self.identity()
            .issue_service_token(id_pb::IssueServiceTokenRequest {
                client_id: Self::GATEWAY_CLIENT_ID.into(),
                client_secret: self.gateway_secret.clone(),
            })
            .await
            .expect("IssueServiceToken for the suite's gateway client")
            .into_inner()
            .access_token
    }

    /// The suite's internal client credentials (client id, secret) for `IssueServiceToken`,
    /// e.g. for a CLI under test that authenticates as a service.
    pub fn gateway_credentials(&self) -> (&str, &str) {
        (Self::GATEWAY_CLIENT_ID, &self.gateway_secret)
    }

    /// SignIn (public).
    pub async fn sign_in(
        &self,
        login: &str,
        password: &str,
    ) -> Result<id_pb::SignInResponse, Status> {
        self.identity()
            .sign_in(id_pb::SignInRequest {
                login: login.into(),
                password: password.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// SelectRole with `access_token` (any token of the session); the new access token.
    pub async fn select_role(
        &self,
        access_token: &str,
        organisation_id: &str,
        role: common_pb::Role,
    ) -> Result<String, Status> {
        self.identity()
            .select_role(with_token(
                id_pb::SelectRoleRequest {
                    organisation_id: organisation_id.into(),
                    role: role as i32,
                },
                access_token,
            ))
            .await
            .map(|r| r.into_inner().access_token)
    }

    /// Signs in and selects the grant (`organisation_id`, `role`), which SignIn must list.
    pub async fn sign_in_as(
        &self,
        login: &str,
        password: &str,
        organisation_id: &str,
        role: common_pb::Role,
    ) -> SignedIn {
        let sign_in = self
            .sign_in(login, password)
            .await
            .unwrap_or_else(|s| panic!("{login} cannot sign in: {s:?}"));
        self.select(sign_in, organisation_id, role).await
    }

    /// Selects the grant (`organisation_id`, `role`), which `sign_in` must list, in that
    /// session.
    pub async fn select(
        &self,
        sign_in: id_pb::SignInResponse,
        organisation_id: &str,
        role: common_pb::Role,
    ) -> SignedIn {
        let grant = sign_in
            .grants
            .iter()
            .find(|g| g.organisation_id == organisation_id && g.role == role as i32)
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no grant {role:?} at {organisation_id} to select; SignIn listed {:#?}",
                    sign_in.grants
                )
            });
        let token = self
            .select_role(&sign_in.access_token, organisation_id, role)
            .await
            .unwrap_or_else(|s| panic!("SelectRole {role:?} at {organisation_id}: {s:?}"));
        SignedIn {
            sign_in,
            token,
            grant,
        }
    }

    /// The service desk signed in through its SERVICE_DESK grant (the only grant it has).
    pub async fn desk_sign_in(&self) -> SignedIn {
        let sign_in = self
            .sign_in(self.desk_user_id(), Self::DESK_PASSWORD)
            .await
            .unwrap_or_else(|s| panic!("the service desk cannot sign in: {s:?}"));
        let organisation_id = sign_in
            .grants
            .iter()
            .find(|g| g.role == common_pb::Role::ServiceDesk as i32)
            .map(|g| g.organisation_id.clone())
            .unwrap_or_else(|| panic!("the service desk has no SERVICE_DESK grant: {sign_in:#?}"));
        self.select(sign_in, &organisation_id, common_pb::Role::ServiceDesk)
            .await
    }

    /// CompleteRegistration (public): the first password from a registration link.
    pub async fn complete_registration(
        &self,
        token: &str,
        password: &str,
    ) -> Result<id_pb::Account, Status> {
        self.identity()
            .complete_registration(id_pb::CompleteRegistrationRequest {
                token: token.into(),
                password: password.into(),
            })
            .await
            .map(|r| {
                r.into_inner()
                    .account
                    .expect("CompleteRegistration answers the account")
            })
    }

    /// The mails delivered so far to `to` whose subject contains `subject`, oldest first.
    pub fn mails_now(&self, to: &str, subject: &str) -> Vec<CapturedMail> {
        self.smtp
            .messages_to(to)
            .into_iter()
            .filter(|m| m.subject.contains(subject))
            .collect()
    }

    /// Waits until at least `n` mails to `to` whose subject contains `subject` have been
    /// delivered and returns them all, oldest first.
    ///
    /// # Panics
    /// After 30 s, listing every mail the sink has.
    pub async fn mails(&self, to: &str, subject: &str, n: usize) -> Vec<CapturedMail> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = self.mails_now(to, subject);
            if found.len() >= n {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "expected {n} mail(s) to {to} about {subject:?} within {WAIT:?}, got {}; every mail: {:#?}",
                    found.len(),
                    self.smtp.messages()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The first mail to `to` whose subject contains `subject` (waiting for it).
    pub async fn mail(&self, to: &str, subject: &str) -> CapturedMail {
        self.mails(to, subject, 1).await.swap_remove(0)
    }

    /// The link token of the newest mail to `to` about `subject`, waiting for one.
    pub async fn link_token(&self, to: &str, subject: &str) -> String {
        let mails = self.mails(to, subject, 1).await;
        link_token_of(mails.last().expect("one mail"))
    }

    /// The link token of the `n`-th (1-based) mail to `to` about `subject`, waiting for it.
    pub async fn nth_link_token(&self, to: &str, subject: &str, n: usize) -> String {
        let mails = self.mails(to, subject, n).await;
        link_token_of(&mails[n - 1])
    }
}

/// The `token` of the mail's link, checking the link points into the suite's public site.
fn link_token_of(mail: &CapturedMail) -> String {
    let link = mail
        .links()
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("the mail has no link: {mail:#?}"));
    assert!(
        link.as_str().starts_with(Suite::BASE_URL),
        "links start at CQRS_PUBLIC_BASE_URL ({}): {link}",
        Suite::BASE_URL
    );
    mail.link_token()
        .unwrap_or_else(|| panic!("the mail's link has no token: {mail:#?}"))
}

/// Serves `server` on `listener` until `stop`, as each service's `run` does.
fn serve(
    server: cqrs_runtime::server::ServiceServer,
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    tokio::spawn(async move {
        if let Err(e) = server.serve_with(listener, stop).await {
            eprintln!("cqrs-suite: a server stopped with an error: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use cqrs_proto::access::v1::{self as access_pb, InvitationState};
    use cqrs_proto::common::v1::Role;
    use cqrs_proto::directory::v1::OrganisationKind;
    use tonic::Code;

    use super::*;

    /// The clock and the manual sweep: an invitation runs out when the suite's time passes
    /// its expiry, and one sweep records it. Needs no password hash.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn moving_the_clock_expires_invitations() {
        let suite = Suite::start().await;
        let internal = suite.service_token().await;
        let region = suite
            .create_organisation(&internal, OrganisationKind::Region, "Y57", "East", None)
            .await
            .unwrap();
        let ccg = suite
            .create_organisation(
                &internal,
                OrganisationKind::CommissioningOrganisation,
                "16N",
                "Eastside CCG",
                Some(&region),
            )
            .await
            .unwrap();
        suite
            .invite(
                &internal,
                "kim.wells@eastside.nhs.uk",
                ("Kim", "Wells"),
                &ccg,
                Role::CommissioningUser,
            )
            .await
            .unwrap();
        let link = suite
            .link_token("kim.wells@eastside.nhs.uk", subject::INVITATION)
            .await;

        assert_eq!(suite.expire_invitations().await, 0);
        suite.advance_clock(TimeDelta::days(8));
        assert_eq!(suite.expire_invitations().await, 1);
        // Anything but a live link is LINK_INVALID, for the accept page and for accepting.
        let shown = suite
            .access()
            .get_invitation(access_pb::GetInvitationRequest {
                token: link.clone(),
            })
            .await
            .unwrap_err();
        cqrs_testkit::assert_reason(&shown, Code::FailedPrecondition, "LINK_INVALID");
        let refused = suite.accept_invitation(&link).await.unwrap_err();
        cqrs_testkit::assert_reason(&refused, Code::FailedPrecondition, "LINK_INVALID");
        let listed = suite
            .access()
            .list_invitations(with_token(
                access_pb::ListInvitationsRequest::default(),
                &internal,
            ))
            .await
            .unwrap()
            .into_inner()
            .invitations;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state, InvitationState::Expired as i32);
        // The desk has not registered in this suite.
        assert!(suite.desk_user_id.is_none());
    }
}
