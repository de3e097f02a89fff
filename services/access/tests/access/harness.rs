//! The access service in-process with the real identity, directory and notification services
//! beside it (each over its own fresh database), one Redis namespace for sessions, one
//! signing key every service trusts, and an SMTP sink behind the notification service.
//!
//! Organisation tree of every harness:
//!
//! ```text
//! DESK (SERVICE_DESK)
//! REGION
//! ├── CCG          ── PRACTICE
//! └── OTHER_CCG    ── OTHER_PRACTICE
//! ```

use cqrs_auth::RoleProto;
use std::sync::Arc;
use std::time::Duration;

use cqrs_access::{Access, Peers, WorkflowSettings};
use cqrs_auth::{
    ActiveGrant, IssuerTokenSource, RedisSessionCheck, Role, SigningKey, TokenVerifier,
};
use cqrs_outbox::RelayConfig;
use cqrs_proto::access::v1::{self as pb, access_service_client::AccessServiceClient};
use cqrs_proto::directory::v1::{
    self as dir_pb, OrganisationKind, directory_service_client::DirectoryServiceClient,
};
use cqrs_proto::identity::v1::{self as id_pb, identity_service_client::IdentityServiceClient};
use cqrs_proto::notifications::v1::notification_service_client::NotificationServiceClient;
use cqrs_runtime::clock::OffsetClock;
use cqrs_runtime::config::{Env, ServerConfig};
use cqrs_testkit::{
    CapturedMail, RunningServer, SmtpSink, TestDb, TestKeys, TestRedis, spawn, with_token,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

pub const BASE_URL: &str = "https://cqrs.example.nhs.uk/portal/";
/// Client id of the internal caller the tests use (e.g. a gateway acting for the system).
pub const INTERNAL: &str = "gateway";
/// A password both cqrs profiles accept.
pub const PASSWORD: &str = "Velvet#Harbor42";
const MAIL_WAIT: Duration = Duration::from_secs(20);

fn lazy(url: &str) -> Channel {
    Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

async fn free_addr() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

fn relay_config() -> RelayConfig {
    RelayConfig {
        poll_interval: Duration::from_millis(20),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        ..RelayConfig::default()
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Tree {
    pub desk: Uuid,
    pub region: Uuid,
    pub ccg: Uuid,
    pub other_ccg: Uuid,
    pub practice: Uuid,
    pub other_practice: Uuid,
}

/// A signed-in person acting through one grant.
#[derive(Clone, Debug)]
pub struct User {
    pub account_id: Uuid,
    pub email: String,
    pub token: String,
}

pub struct Harness {
    pub keys: TestKeys,
    pub redis: TestRedis,
    pub smtp: SmtpSink,
    pub clock: OffsetClock,
    pub access_db: TestDb,
    _identity_db: TestDb,
    _directory_db: TestDb,
    pub access: Access,
    pub server: RunningServer,
    pub tree: Tree,
    identity_url: String,
    directory_url: String,
    notifications: RunningServer,
    _notifications_db: TestDb,
    _identity: RunningServer,
    _stops: Vec<oneshot::Sender<()>>,
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(WorkflowSettings::default()).await
    }

    pub async fn start_with(settings: WorkflowSettings) -> Harness {
        let keys = TestKeys::generate();
        let redis = TestRedis::new().await;
        let smtp = SmtpSink::start().await;
        let sessions = Arc::new(RedisSessionCheck::new(
            redis.conn.clone(),
            redis.namespace.clone(),
        ));
        let mut stops = Vec::new();
        let mut stop = || {
            let (tx, rx) = oneshot::channel::<()>();
            stops.push(tx);
            async move {
                let _ = rx.await;
            }
        };

        // Notifications, with its SMTP worker.
        let notifications_db = TestDb::new(&cqrs_notifications::MIGRATOR).await;
        let verify = keys.verify_env_value();
        let smtp_url = smtp.url();
        let env = Env::from_pairs(&[
            ("CQRS_TOKEN_VERIFY_KEYS", &verify),
            ("CQRS_SMTP_URL", &smtp_url),
            ("CQRS_PUBLIC_BASE_URL", BASE_URL),
            ("NOTIFICATIONS_POLL_INTERVAL_MS", "20"),
            ("NOTIFICATIONS_RETRY_BASE_MS", "50"),
            ("NOTIFICATIONS_SMTP_TIMEOUT_SECS", "5"),
        ]);
        let config = cqrs_notifications::NotificationsConfig::from_env(&env).unwrap();
        let store = cqrs_notifications::Store::new(notifications_db.pool.clone());
        let notifications = spawn(
            cqrs_notifications::server(
                ServerConfig::from_env(&env, "notifications", 0).unwrap(),
                store.clone(),
                Arc::new(cqrs_runtime::clock::SystemClock),
            )
            .session_check(sessions.clone()),
        )
        .await;
        tokio::spawn(
            cqrs_notifications::worker(&config, store, Arc::new(cqrs_runtime::clock::SystemClock))
                .unwrap()
                .run(stop()),
        );

        // Identity (signing with the harness key) and the directory find each other on
        // addresses reserved up front.
        let directory_addr = free_addr().await;
        let directory_url = format!("http://{directory_addr}");
        let identity_db = TestDb::new(&cqrs_identity::MIGRATOR).await;
        let signing = keys.signing.to_env_value();
        let identity_env = Env::from_pairs(&[
            ("CQRS_TOKEN_SIGNING_KEY", &signing),
            ("REDIS_URL", &redis.url),
            ("CQRS_REDIS_NAMESPACE", &redis.namespace),
            ("NOTIFICATIONS_URL", &notifications.url()),
            ("DIRECTORY_URL", &directory_url),
            ("IDENTITY_OUTBOX_POLL_INTERVAL_MS", "20"),
            ("IDENTITY_HASH_QUEUE_TIMEOUT_MS", "300000"),
        ]);
        let identity_config = cqrs_identity::IdentityConfig::from_env(&identity_env).unwrap();
        let identity_store = cqrs_identity::Store::new(identity_db.pool.clone());
        identity_store.ensure_outbox().await.unwrap();
        let identity_redis = cqrs_identity::redis_connection(&identity_config.redis_url).unwrap();
        let identity = cqrs_identity::Identity::new(
            identity_config,
            identity_store,
            identity_redis,
            Arc::new(cqrs_identity::OffsetClock::new()),
        )
        .unwrap();
        let identity_server = spawn(identity.server(ServerConfig::for_tests(
            "identity",
            TokenVerifier::new(vec![SigningKey::generate("unused").verifying_key()]),
        )))
        .await;
        tokio::spawn(identity.relay().unwrap().run(stop()));
        let identity_url = identity_server.url();

        let directory_db = TestDb::new(&cqrs_directory::MIGRATOR).await;
        let directory = cqrs_directory::Directory::new(
            cqrs_directory::Store::new(directory_db.pool.clone()),
            lazy(&identity_url),
            Arc::new(IssuerTokenSource::new(
                Arc::new(keys.issuer.clone()),
                "directory",
                Arc::new(cqrs_runtime::clock::SystemClock),
            )),
            cqrs_directory::RevocationConfig::default(),
            Arc::new(cqrs_runtime::clock::SystemClock),
        );
        let listener = TcpListener::bind(directory_addr).await.unwrap();
        tokio::spawn(
            directory
                .server(
                    ServerConfig::for_tests("directory", keys.verifier.clone()),
                    sessions.clone(),
                )
                .serve_with(listener, stop()),
        );

        // Access, with its outbox relay.
        let access_db = TestDb::new(&cqrs_access::MIGRATOR).await;
        let clock = OffsetClock::new();
        let (access, server) = spawn_access(
            &access_db,
            &keys,
            &identity_url,
            &directory_url,
            settings,
            &clock,
            sessions.clone(),
        )
        .await;
        let tokens = Arc::new(IssuerTokenSource::new(
            Arc::new(keys.issuer.clone()),
            "access",
            Arc::new(cqrs_runtime::clock::SystemClock),
        ));
        tokio::spawn(
            access
                .relay(lazy(&notifications.url()), tokens, relay_config())
                .run(stop()),
        );

        let mut harness = Harness {
            keys,
            redis,
            smtp,
            clock,
            access_db,
            _identity_db: identity_db,
            _directory_db: directory_db,
            access,
            server,
            tree: Tree {
                desk: Uuid::nil(),
                region: Uuid::nil(),
                ccg: Uuid::nil(),
                other_ccg: Uuid::nil(),
                practice: Uuid::nil(),
                other_practice: Uuid::nil(),
            },
            identity_url,
            directory_url,
            notifications,
            _notifications_db: notifications_db,
            _identity: identity_server,
            _stops: stops,
        };
        harness.tree = harness.build_tree().await;
        harness
    }

    /// Another access server over the same database and peers, with other settings.
    pub async fn second_access(&self, settings: WorkflowSettings) -> RunningServer {
        let sessions = Arc::new(RedisSessionCheck::new(
            self.redis.conn.clone(),
            self.redis.namespace.clone(),
        ));
        spawn_access(
            &self.access_db,
            &self.keys,
            &self.identity_url,
            &self.directory_url,
            settings,
            &self.clock,
            sessions,
        )
        .await
        .1
    }

    async fn build_tree(&self) -> Tree {
        let desk = self
            .organisation(OrganisationKind::ServiceDesk, "DSK01", "Service Desk", None)
            .await;
        let region = self
            .organisation(OrganisationKind::Region, "Y56", "North Region", None)
            .await;
        let ccg = self
            .organisation(
                OrganisationKind::CommissioningOrganisation,
                "15N",
                "Riverside CCG",
                Some(region),
            )
            .await;
        let other_ccg = self
            .organisation(
                OrganisationKind::CommissioningOrganisation,
                "QWO",
                "Hillside CCG",
                Some(region),
            )
            .await;
        let practice = self
            .organisation(
                OrganisationKind::ServiceProvider,
                "A81001",
                "Bridge Street Surgery",
                Some(ccg),
            )
            .await;
        let other_practice = self
            .organisation(
                OrganisationKind::ServiceProvider,
                "A81002",
                "Mill Lane Practice",
                Some(other_ccg),
            )
            .await;
        Tree {
            desk,
            region,
            ccg,
            other_ccg,
            practice,
            other_practice,
        }
    }

    async fn organisation(
        &self,
        kind: OrganisationKind,
        ods: &str,
        name: &str,
        parent: Option<Uuid>,
    ) -> Uuid {
        let org = self
            .directory()
            .create_organisation(with_token(
                dir_pb::CreateOrganisationRequest {
                    request_id: Uuid::new_v4().to_string(),
                    kind: kind as i32,
                    ods_code: ods.into(),
                    name: name.into(),
                    parent_id: parent.map(|p| p.to_string()).unwrap_or_default(),
                    multi_level_approval: false,
                },
                &self.service_token(),
            ))
            .await
            .unwrap()
            .into_inner()
            .organisation
            .unwrap();
        Uuid::parse_str(&org.id).unwrap()
    }

    pub fn client(&self) -> AccessServiceClient<Channel> {
        AccessServiceClient::new(self.server.channel.clone())
    }

    pub fn directory(&self) -> DirectoryServiceClient<Channel> {
        DirectoryServiceClient::new(lazy(&self.directory_url))
    }

    pub fn identity(&self) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(lazy(&self.identity_url))
    }

    pub fn notifications(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.notifications.channel.clone())
    }

    /// A service token of an internal caller.
    pub fn service_token(&self) -> String {
        self.keys.service_token(INTERNAL)
    }

    /// A person with an identity account at `email` holding `role` at `org`, signed in
    /// through that grant.
    pub async fn user(&self, email: &str, role: Role, org: Uuid) -> User {
        let account_id = self.account(email, "Pat", "Admin").await;
        self.grant(account_id, role, org).await;
        User {
            account_id,
            email: email.to_owned(),
            token: self.token(account_id, role, org).await,
        }
    }

    /// A person with no identity account: enough for calls that only need the grant.
    pub async fn grantee(&self, role: Role, org: Uuid) -> User {
        let account_id = Uuid::new_v4();
        self.grant(account_id, role, org).await;
        User {
            account_id,
            email: String::new(),
            token: self.token(account_id, role, org).await,
        }
    }

    /// A user token acting through (`role`, `org`), whether or not the grant exists.
    pub async fn token(&self, account_id: Uuid, role: Role, org: Uuid) -> String {
        self.keys
            .user_token(
                &self.redis,
                account_id,
                Some(ActiveGrant {
                    organisation_id: org,
                    role,
                }),
            )
            .await
    }

    /// A NATIONAL account in identity (which mails it a registration link).
    pub async fn account(&self, email: &str, first: &str, last: &str) -> Uuid {
        let account = self
            .identity()
            .create_account(with_token(
                id_pb::CreateAccountRequest {
                    request_id: Uuid::new_v4().to_string(),
                    realm: id_pb::Realm::National as i32,
                    email: email.into(),
                    first_name: first.into(),
                    last_name: last.into(),
                },
                &self.service_token(),
            ))
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap();
        Uuid::parse_str(&account.id).unwrap()
    }

    pub async fn grant(&self, account_id: Uuid, role: Role, org: Uuid) -> dir_pb::Grant {
        self.directory()
            .grant_role(with_token(
                dir_pb::GrantRoleRequest {
                    request_id: Uuid::new_v4().to_string(),
                    account_id: account_id.to_string(),
                    organisation_id: org.to_string(),
                    role: role.to_proto() as i32,
                },
                &self.service_token(),
            ))
            .await
            .unwrap()
            .into_inner()
            .grant
            .unwrap()
    }

    /// `account_id`'s grants as (organisation, role).
    pub async fn grants(&self, account_id: Uuid) -> Vec<(Uuid, Role)> {
        self.directory()
            .list_grants(with_token(
                dir_pb::ListGrantsRequest {
                    account_id: account_id.to_string(),
                    page_size: 0,
                    page_token: String::new(),
                },
                &self.service_token(),
            ))
            .await
            .unwrap()
            .into_inner()
            .grants
            .iter()
            .map(|g| {
                (
                    Uuid::parse_str(&g.organisation_id).unwrap(),
                    Role::from_proto(g.role).unwrap().unwrap(),
                )
            })
            .collect()
    }

    /// The identity account with this address, if any.
    pub async fn lookup(&self, email: &str) -> Option<id_pb::Account> {
        match self
            .identity()
            .lookup_account(with_token(
                id_pb::LookupAccountRequest {
                    key: Some(id_pb::lookup_account_request::Key::Email(email.into())),
                },
                &self.service_token(),
            ))
            .await
        {
            Ok(answer) => answer.into_inner().account,
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => panic!("LookupAccount: {status:?}"),
        }
    }

    pub async fn invite(
        &self,
        token: &str,
        email: &str,
        org: Uuid,
        role: Role,
    ) -> Result<pb::Invitation, Status> {
        self.invite_keyed(token, &Uuid::new_v4().to_string(), email, org, role)
            .await
    }

    pub async fn invite_keyed(
        &self,
        token: &str,
        request_id: &str,
        email: &str,
        org: Uuid,
        role: Role,
    ) -> Result<pb::Invitation, Status> {
        self.client()
            .create_invitation(with_token(
                pb::CreateInvitationRequest {
                    request_id: request_id.into(),
                    email: email.into(),
                    first_name: "Jo".into(),
                    last_name: "Bloggs".into(),
                    organisation_id: org.to_string(),
                    role: role.to_proto() as i32,
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().invitation.unwrap())
    }

    pub async fn accept(&self, link: &str) -> Result<pb::Invitation, Status> {
        self.client()
            .accept_invitation(pb::AcceptInvitationRequest {
                token: link.into(),
                first_name: String::new(),
                last_name: String::new(),
            })
            .await
            .map(|r| r.into_inner().invitation.unwrap())
    }

    pub async fn get_invitation(&self, link: &str) -> Result<pb::Invitation, Status> {
        self.client()
            .get_invitation(pb::GetInvitationRequest { token: link.into() })
            .await
            .map(|r| r.into_inner().invitation.unwrap())
    }

    pub async fn submit(
        &self,
        request_id: &str,
        email: &str,
        organisation: pb::submit_registration_request::Organisation,
        role: Role,
    ) -> Result<pb::Registration, Status> {
        self.client()
            .submit_registration(pb::SubmitRegistrationRequest {
                request_id: request_id.into(),
                email: email.into(),
                organisation: Some(organisation),
                role: role.to_proto() as i32,
                first_name: "Sam".into(),
                last_name: "Patel".into(),
            })
            .await
            .map(|r| r.into_inner().registration.unwrap())
    }

    pub async fn review_registration(
        &self,
        token: &str,
        id: &str,
        decision: pb::Decision,
        reason: &str,
    ) -> Result<pb::Registration, Status> {
        self.client()
            .review_registration(with_token(
                pb::ReviewRegistrationRequest {
                    registration_id: id.into(),
                    decision: decision as i32,
                    reason: reason.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().registration.unwrap())
    }

    pub async fn request_access(
        &self,
        token: &str,
        request_id: &str,
        org: Uuid,
        role: Role,
    ) -> Result<pb::AccessRequest, Status> {
        self.client()
            .request_access(with_token(
                pb::RequestAccessRequest {
                    request_id: request_id.into(),
                    organisation_id: org.to_string(),
                    role: role.to_proto() as i32,
                    reason: "I cover this practice on Tuesdays".into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().access_request.unwrap())
    }

    pub async fn review_request(
        &self,
        token: &str,
        id: &str,
        decision: pb::Decision,
        reason: &str,
    ) -> Result<pb::AccessRequest, Status> {
        self.client()
            .review_access_request(with_token(
                pb::ReviewAccessRequestRequest {
                    access_request_id: id.into(),
                    decision: decision as i32,
                    reason: reason.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().access_request.unwrap())
    }

    pub async fn withdraw(&self, token: &str, id: &str) -> Result<pb::AccessRequest, Status> {
        self.client()
            .withdraw_access_request(with_token(
                pb::WithdrawAccessRequestRequest {
                    access_request_id: id.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().access_request.unwrap())
    }

    /// Waits for at least `n` mails to `to` whose subject contains `subject` and returns them,
    /// oldest first.
    pub async fn mails(&self, to: &str, subject: &str, n: usize) -> Vec<CapturedMail> {
        let deadline = tokio::time::Instant::now() + MAIL_WAIT;
        loop {
            let found: Vec<CapturedMail> = self
                .smtp
                .messages_to(to)
                .into_iter()
                .filter(|m| m.subject.contains(subject))
                .collect();
            if found.len() >= n {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "expected {n} mail(s) to {to} about {subject:?}, got {found:#?}; all: {:#?}",
                    self.smtp.messages()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The link token of the `n`-th (1-based) invitation mail to `to`.
    pub async fn invitation_link(&self, to: &str, n: usize) -> String {
        let mails = self.mails(to, "You have been invited", n).await;
        mails[n - 1]
            .link_token()
            .expect("the invitation mail has a link")
    }

    /// Audit rows of `action` for `target_id`, as (actor_kind, actor_id, outcome, details).
    pub async fn audit(
        &self,
        action: &str,
        target_id: &str,
    ) -> Vec<(String, String, String, serde_json::Value)> {
        sqlx::query_as(
            "SELECT actor_kind, actor_id, outcome, details FROM audit_events \
             WHERE action = $1 AND target_id = $2 ORDER BY occurred_at, id",
        )
        .bind(action)
        .bind(target_id)
        .fetch_all(&self.access_db.pool)
        .await
        .unwrap()
    }

    pub async fn audit_count(&self, action: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM audit_events WHERE action = $1 AND outcome = 'success'",
        )
        .bind(action)
        .fetch_one(&self.access_db.pool)
        .await
        .unwrap();
        n
    }

    pub async fn count(&self, table: &str) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&self.access_db.pool)
                .await
                .unwrap();
        n
    }

    /// Every workflow row and audit event, to show that a refused call changed nothing.
    pub async fn footprint(&self) -> [i64; 5] {
        [
            self.count("invitations").await,
            self.count("registrations").await,
            self.count("access_requests").await,
            self.count("request_keys").await,
            self.count("audit_events WHERE outcome = 'success'").await,
        ]
    }
}

async fn spawn_access(
    db: &TestDb,
    keys: &TestKeys,
    identity_url: &str,
    directory_url: &str,
    settings: WorkflowSettings,
    clock: &OffsetClock,
    sessions: Arc<RedisSessionCheck>,
) -> (Access, RunningServer) {
    let store = cqrs_access::Store::new(db.pool.clone());
    store.ensure_outbox().await.unwrap();
    let tokens = Arc::new(IssuerTokenSource::new(
        Arc::new(keys.issuer.clone()),
        "access",
        Arc::new(cqrs_runtime::clock::SystemClock),
    ));
    let peers = Peers::new(
        lazy(identity_url),
        lazy(directory_url),
        tokens,
        Duration::from_secs(5),
    );
    let access = Access::new(store, peers, settings, Arc::new(clock.clone()));
    let server = spawn(access.server(
        ServerConfig::for_tests("access", keys.verifier.clone()),
        sessions,
    ))
    .await;
    (access, server)
}
