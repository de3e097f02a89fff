//! [`Suite`]: the four services in-process, and the calls a gateway or cqrsctl would make.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chrono::TimeDelta;
use cqrs_auth::ActiveGrant;
use cqrs_proto::access::v1::access_service_client::AccessServiceClient;
use cqrs_proto::common::v1 as common_pb;
use cqrs_proto::directory::v1::{self as dir_pb, directory_service_client::DirectoryServiceClient};
use cqrs_proto::identity::v1::{self as id_pb, identity_service_client::IdentityServiceClient};
use cqrs_proto::notifications::v1::notification_service_client::NotificationServiceClient;
use cqrs_runtime::clock::OffsetClock;
use cqrs_testkit::{
    CapturedMail, RunningServer, SmtpSink, TestDb, TestKeys, TestRedis, spawn, with_token,
};
use sqlx::PgPool;
use tonic::Status;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::start::{Parts, SuiteBuilder, serve};

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

    /// The service's name, as its audit chain gives it.
    pub fn name(self) -> &'static str {
        match self {
            Service::Identity => "identity",
            Service::Directory => "directory",
            Service::Access => "access",
            Service::Notifications => "notifications",
        }
    }

    pub(crate) fn index(self) -> usize {
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
    pub const SECOND_FACTOR_ADDED: &str = "An authenticator app has been added";
    pub const SECOND_FACTOR_REMOVED: &str = "The authenticator app has been removed";
    pub const RECOVERY_CODE_USED: &str = "A recovery code was used";
}

/// The four services running in this process; see the crate docs.
pub struct Suite {
    // Dropped first: closing its stop channel stops every server, relay and worker.
    parts: Parts,
    /// Every mail the notification service delivered.
    pub smtp: SmtpSink,
    /// "Now" for every service (see [`Suite::advance_clock`]).
    pub clock: OffsetClock,
    /// The Redis namespace every service shares (sessions, lock-out counters).
    pub redis: TestRedis,
    /// The key identity signs with and every service trusts, for tokens made up by a test
    /// (see [`Suite::user_token`]).
    pub keys: TestKeys,
    urls: [String; 4],
    /// Per service, the channel of each replica (one, or two with
    /// [`crate::SuiteBuilder::replicated`]); clients take them in turn.
    channels: [Vec<Channel>; 4],
    turns: [std::sync::atomic::AtomicUsize; 4],
    secrets: HashMap<&'static str, String>,
    desk_account_id: Option<String>,
    desk_user_id: Option<String>,
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
    /// registration mail on its way or delivered) and granted SERVICE_DESK, and accounts
    /// locked for good after [`Suite::LOCKOUT_THRESHOLD`] wrong passwords.
    pub async fn start() -> Suite {
        Self::standard().start().await
    }

    /// The builder of [`Suite::start`], for more settings on top (e.g. replicas).
    pub fn standard() -> SuiteBuilder {
        let threshold = Self::LOCKOUT_THRESHOLD.to_string();
        Suite::builder().env(
            Service::Identity,
            &[
                ("CQRS_LOCKOUT_TEMPORARY_AFTER", &threshold),
                ("CQRS_LOCKOUT_PERMANENT_AFTER", &threshold),
            ],
        )
    }

    /// A suite made to measure: some services only, other settings, no bootstrap.
    pub fn builder() -> SuiteBuilder {
        SuiteBuilder::default()
    }

    pub(crate) fn assemble(
        parts: Parts,
        redis: TestRedis,
        smtp: SmtpSink,
        urls: [String; 4],
        channels: [Vec<Channel>; 4],
        secrets: HashMap<&'static str, String>,
        desk_account_id: Option<String>,
    ) -> Suite {
        Suite {
            clock: parts.clock.clone(),
            redis,
            keys: parts.keys.clone(),
            parts,
            smtp,
            urls,
            channels,
            turns: Default::default(),
            secrets,
            desk_account_id,
            desk_user_id: None,
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
        // With replicas, each new client goes to the next one: calls alternate between them.
        let replicas = &self.channels[service.index()];
        let turn = self.turns[service.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        replicas[turn % replicas.len()].clone()
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
    ///
    /// # Panics
    /// In a suite without the bootstrap ([`SuiteBuilder::without_bootstrap`]).
    pub fn desk_account_id(&self) -> &str {
        self.desk_account_id
            .as_deref()
            .expect("this suite was started without the service-desk bootstrap")
    }

    /// Whether a service runs in this suite ([`SuiteBuilder::only`]).
    pub fn runs(&self, service: Service) -> bool {
        self.parts.databases[service.index()].is_some()
    }

    /// A service's database.
    ///
    /// # Panics
    /// If the service does not run in this suite.
    pub fn db(&self, service: Service) -> &TestDb {
        self.parts.databases[service.index()]
            .as_ref()
            .unwrap_or_else(|| panic!("{service:?} does not run in this suite"))
    }

    /// A service's connection pool (see [`Suite::db`]).
    pub fn pool(&self, service: Service) -> &PgPool {
        &self.db(service).pool
    }

    /// How many rows a table of a service's database holds.
    pub async fn count_rows(&self, service: Service, table: &str) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(self.pool(service))
                .await
                .unwrap_or_else(|e| panic!("counting {service:?}'s {table}: {e}"));
        n
    }

    /// Every row change in every running service's tables of record has its audit event: the
    /// changes each transaction made are taken up by the audit event it appends, so any left
    /// pending were made by a transaction that appended none. Panics naming them.
    pub async fn assert_every_change_audited(&self) {
        let mut unaudited = Vec::new();
        for service in Service::ALL.into_iter().filter(|s| self.runs(*s)) {
            let rows: Vec<(
                String,
                String,
                Option<serde_json::Value>,
                Option<serde_json::Value>,
            )> = sqlx::query_as(
                "SELECT table_name, row_id, old, new FROM audit_pending_changes ORDER BY position",
            )
            .fetch_all(self.pool(service))
            .await
            .unwrap_or_else(|e| panic!("reading {service:?}'s pending changes: {e}"));
            unaudited.extend(rows.into_iter().map(|r| (service, r)));
        }
        assert!(
            unaudited.is_empty(),
            "row changes without an audit event in their transaction: {unaudited:#?}"
        );
    }

    /// The identity service's parts (its API, store and configuration).
    pub fn identity_service(&self) -> &cqrs_identity::Identity {
        self.parts
            .identity
            .as_ref()
            .expect("identity runs in this suite")
    }

    /// The directory's parts (its API with the permission cache, the session ender).
    pub fn directory_service(&self) -> &cqrs_directory::Directory {
        self.parts
            .directory
            .as_ref()
            .expect("the directory runs in this suite")
    }

    /// Access's parts (its API, store).
    pub fn access_service(&self) -> &cqrs_access::Access {
        self.parts
            .access
            .as_ref()
            .expect("access runs in this suite")
    }

    /// Starts serving a service built held ([`SuiteBuilder::held`]) on its address.
    ///
    /// # Panics
    /// If the service was not held or already serves, or its address was taken meanwhile.
    pub async fn serve(&mut self, service: Service) {
        let (server, addr) = self.parts.pending[service.index()]
            .take()
            .unwrap_or_else(|| panic!("{service:?} was not held, or serves already"));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("{service:?}'s address {addr} is taken: {e}"));
        serve(server, listener, self.parts.stopped());
    }

    /// Another identity instance over identity's database, configured as the suite's plus
    /// `extra` (for example another `REDIS_URL`); not serving.
    pub async fn identity_replica(&self, extra: &[(&str, &str)]) -> cqrs_identity::Identity {
        self.parts
            .identity_over(self.pool(Service::Identity), extra)
            .await
    }

    /// Serves an identity instance (for example from [`Suite::identity_replica`]) on a port
    /// of its own.
    pub async fn serve_identity(&self, identity: &cqrs_identity::Identity) -> RunningServer {
        spawn(identity.server(self.parts.server_config(
            Service::Identity,
            cqrs_identity::SERVICE,
            cqrs_identity::DEFAULT_PORT,
        )))
        .await
    }

    /// Serves directory or access (as built in this suite) on a port of its own, checking user
    /// sessions in the Redis at `redis_url` instead of the suite's (for example a dead port).
    pub async fn serve_with_session_store(
        &self,
        service: Service,
        redis_url: &str,
    ) -> RunningServer {
        let conn = cqrs_runtime::db::redis_connection(redis_url).expect("redis url");
        let sessions = std::sync::Arc::new(cqrs_auth::RedisSessionCheck::new(
            conn,
            self.parts.namespace.clone(),
        ));
        let server = match service {
            Service::Directory => self
                .parts
                .server_of_directory_with(self.directory_service(), sessions),
            Service::Access => self
                .parts
                .server_of_access_with(self.access_service(), sessions),
            other => panic!("{other:?} does not check sessions for readiness"),
        };
        spawn(server).await
    }

    /// One more notifications delivery worker, configured as the suite's plus `extra`, until
    /// the suite stops (with `NOTIFICATIONS_WORKERS=0`, a test decides when workers start).
    pub fn start_notifications_worker(&self, extra: &[(&str, &str)]) {
        let mut env = self.parts.envs[Service::Notifications.index()].clone();
        for (k, v) in extra {
            env.set(k, v);
        }
        let config =
            cqrs_notifications::NotificationsConfig::from_env(&env).expect("notifications config");
        let store = cqrs_notifications::Store::new(self.pool(Service::Notifications).clone());
        let worker =
            cqrs_notifications::worker(&config, store, std::sync::Arc::new(self.clock.clone()))
                .expect("mailer");
        tokio::spawn(worker.run(self.parts.stopped()));
    }

    /// Another directory instance over the directory's database with its own pool, cache and
    /// server, as a second replica runs; answers once its cache listens for grant changes.
    pub async fn directory_replica(&self) -> (cqrs_directory::Directory, RunningServer) {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.db(Service::Directory).url)
            .await
            .expect("a second pool on the directory's database");
        let directory = self.parts.directory_over(pool, None);
        let server = spawn(self.parts.server_of_directory(&directory)).await;
        wait_until_listening(&directory).await;
        (directory, server)
    }

    /// Another access server over access's database and the same peers, with `workflow`.
    pub async fn access_replica(&self, workflow: cqrs_access::WorkflowSettings) -> RunningServer {
        let (access, _, _) = self
            .parts
            .access_over(self.pool(Service::Access), Some(workflow))
            .await;
        spawn(self.parts.server_of_access(&access)).await
    }

    /// A user token for `account_id` (which need not exist), acting through `grant` (which
    /// need not exist either), backed by a new live session in the suite's Redis namespace.
    pub async fn user_token(&self, account_id: Uuid, grant: Option<ActiveGrant>) -> String {
        self.keys.user_token(&self.redis, account_id, grant).await
    }

    /// A service token of `client_id`, signed with the suite's key without a round trip.
    pub fn service_token_of(&self, client_id: &str) -> String {
        self.keys.service_token(client_id)
    }

    /// The secret of an internal client registered at identity: `directory`, `access` or
    /// [`Suite::GATEWAY_CLIENT_ID`].
    pub fn client_secret(&self, client_id: &str) -> &str {
        self.secrets
            .get(client_id)
            .unwrap_or_else(|| panic!("no internal client {client_id} in the suite"))
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
    /// The code an authenticator app shows now (the suite's clock) for the secret that
    /// StartTotpEnrolment gave.
    pub fn totp_code(&self, secret_base32: &str) -> String {
        use cqrs_runtime::clock::Clock as _;
        let secret = cqrs_identity::domain::second_factor::TotpSecret::from_base32(secret_base32)
            .expect("a base32 TOTP secret");
        let now = u64::try_from(self.clock.now().timestamp()).expect("a time after 1970");
        secret.code_at(now).expect("a TOTP secret of RFC length")
    }

    pub fn advance_clock(&self, by: TimeDelta) {
        self.clock.advance(by);
    }

    /// One pass of access's invitation-expiry sweep; how many invitations it expired.
    pub async fn expire_invitations(&self) -> usize {
        self.access_service()
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
                client_secret: self.client_secret(Self::GATEWAY_CLIENT_ID).to_owned(),
            })
            .await
            .expect("IssueServiceToken for the suite's gateway client")
            .into_inner()
            .access_token
    }

    /// The suite's internal client credentials (client id, secret) for `IssueServiceToken`,
    /// e.g. for a CLI under test that authenticates as a service.
    pub fn gateway_credentials(&self) -> (&str, &str) {
        (
            Self::GATEWAY_CLIENT_ID,
            self.client_secret(Self::GATEWAY_CLIENT_ID),
        )
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
                ..Default::default()
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

/// Waits (up to 10 s) until `directory`'s permission cache listens for grant changes, so that
/// checks go through the cache.
pub async fn wait_until_listening(directory: &cqrs_directory::Directory) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !directory.api.cache().is_listening() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the directory's cache never started listening for grant changes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
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
