//! A directory server in-process over a fresh database, user sessions in a private Redis
//! namespace, and — for revocations — the real identity service in-process, sharing that
//! namespace and the signing key.

use cqrs_auth::RoleProto;
use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::{
    ActiveGrant, IdentityTokenSource, IssuerTokenSource, RedisSessionCheck, Role, TokenSource,
};
use cqrs_directory::{Directory, RevocationConfig, Store};
use cqrs_identity::store::sessions::SessionStore;
use cqrs_identity::{Identity, IdentityConfig, OffsetClock};
use cqrs_proto::directory::v1::{
    self as pb, OrganisationKind, directory_service_client::DirectoryServiceClient,
};
use cqrs_runtime::clock::SystemClock;
use cqrs_runtime::config::{Env, ServerConfig};
use cqrs_runtime::server::ServiceServer;
use cqrs_testkit::{RunningServer, TestDb, TestKeys, TestRedis, spawn, with_token};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::Status;
use tonic::transport::Channel;
use uuid::Uuid;

/// The directory's client credentials at identity.
pub const CLIENT_ID: &str = "directory";
pub const CLIENT_SECRET: &str = "directory-client-secret-for-tests";
/// Client id of the service tokens the tests call with (the access workflow).
pub const CALLER: &str = "access";

pub fn revocation_config() -> RevocationConfig {
    RevocationConfig {
        poll_interval: Duration::from_millis(50),
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        call_timeout: Duration::from_secs(3),
        lease: Duration::from_secs(30),
        batch_size: 50,
    }
}

/// The identity service's parts the tests use; serving starts with [`IdentityService::serve`]
/// (so a test can revoke while identity is still down).
pub struct IdentityService {
    pub db: TestDb,
    pub identity: Identity,
    pub addr: std::net::SocketAddr,
    pub sessions: SessionStore,
    server: Option<oneshot::Sender<()>>,
}

impl IdentityService {
    async fn build(keys: &TestKeys, redis: &TestRedis) -> IdentityService {
        let db = TestDb::new(&cqrs_identity::MIGRATOR).await;
        let key = keys.signing.to_env_value();
        let digest: String = Sha256::digest(CLIENT_SECRET.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let clients = format!("{CLIENT_ID}:{digest}");
        let env = Env::from_pairs(&[
            ("CQRS_TOKEN_SIGNING_KEY", &key),
            ("REDIS_URL", &redis.url),
            ("CQRS_REDIS_NAMESPACE", &redis.namespace),
            ("NOTIFICATIONS_URL", "http://127.0.0.1:1"),
            ("IDENTITY_HASH_QUEUE_TIMEOUT_MS", "300000"),
            ("CQRS_SERVICE_CLIENTS", &clients),
        ]);
        let config = IdentityConfig::from_env(&env).unwrap();
        let store = cqrs_identity::Store::new(db.pool.clone());
        store.ensure_outbox().await.unwrap();
        let conn = cqrs_identity::redis_connection(&config.redis_url).unwrap();
        let sessions = SessionStore::new(
            conn.clone(),
            redis.namespace.clone(),
            config.session_idle_ttl,
            config.session_absolute_ttl,
        );
        let identity = Identity::new(config, store, conn, Arc::new(OffsetClock::new())).unwrap();
        // A free port, released until `serve` binds it again.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        IdentityService {
            db,
            identity,
            addr,
            sessions,
            server: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts serving on the reserved address.
    pub async fn serve(&mut self) {
        let config = ServerConfig::for_tests(
            "identity",
            cqrs_auth::TokenVerifier::new(vec![
                cqrs_auth::SigningKey::generate("unused").verifying_key(),
            ]),
        );
        let server: ServiceServer = self.identity.server(config);
        let listener = TcpListener::bind(self.addr).await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(server.serve_with(listener, async move {
            let _ = rx.await;
        }));
        self.server = Some(tx);
    }
}

pub struct Harness {
    pub db: TestDb,
    pub redis: TestRedis,
    pub keys: TestKeys,
    pub directory: Directory,
    pub server: RunningServer,
    pub identity: Option<IdentityService>,
}

impl Harness {
    /// The directory alone; identity's address answers nothing, so session ends stay pending.
    pub async fn start() -> Harness {
        Self::start_inner(false, true).await
    }

    /// The directory with the real identity service (serving), tokens from IssueServiceToken.
    pub async fn with_identity() -> Harness {
        Self::start_inner(true, true).await
    }

    /// Like [`Harness::with_identity`], but identity is not serving yet.
    pub async fn with_identity_down() -> Harness {
        Self::start_inner(true, false).await
    }

    async fn start_inner(with_identity: bool, serving: bool) -> Harness {
        let db = TestDb::new(&cqrs_directory::MIGRATOR).await;
        let redis = TestRedis::new().await;
        let keys = TestKeys::generate();
        let mut identity = if with_identity {
            Some(IdentityService::build(&keys, &redis).await)
        } else {
            None
        };
        if serving && let Some(identity) = identity.as_mut() {
            identity.serve().await;
        }
        let identity_url = identity
            .as_ref()
            .map_or("http://127.0.0.1:1".to_owned(), IdentityService::url);
        let channel =
            cqrs_directory::identity_channel(&identity_url, Duration::from_secs(2)).unwrap();
        let tokens: Arc<dyn TokenSource> = if with_identity {
            Arc::new(IdentityTokenSource::new(
                channel.clone(),
                CLIENT_ID,
                CLIENT_SECRET,
                Duration::from_secs(3),
                Arc::new(SystemClock),
            ))
        } else {
            Arc::new(IssuerTokenSource::new(
                Arc::new(keys.issuer.clone()),
                CLIENT_ID,
                Arc::new(SystemClock),
            ))
        };
        let directory = Directory::new(
            Store::new(db.pool.clone()),
            channel,
            tokens,
            revocation_config(),
            Arc::new(SystemClock),
        );
        let sessions = Arc::new(RedisSessionCheck::new(
            redis.conn.clone(),
            redis.namespace.clone(),
        ));
        let server = spawn(directory.server(
            ServerConfig::for_tests("directory", keys.verifier.clone()),
            sessions,
        ))
        .await;
        Harness {
            db,
            redis,
            keys,
            directory,
            server,
            identity,
        }
    }

    pub fn client(&self) -> DirectoryServiceClient<Channel> {
        DirectoryServiceClient::new(self.server.channel.clone())
    }

    pub fn identity(&self) -> &IdentityService {
        self.identity
            .as_ref()
            .expect("harness started without identity")
    }

    pub fn svc(&self) -> String {
        self.keys.service_token(CALLER)
    }

    /// A user token (backed by a live session) for `account`, acting as `active`.
    pub async fn user(&self, account: Uuid, active: Option<(Uuid, Role)>) -> String {
        let grant = active.map(|(organisation_id, role)| ActiveGrant {
            organisation_id,
            role,
        });
        self.keys.user_token(&self.redis, account, grant).await
    }

    /// A user token for a fresh account holding `role` at `org` (granted for real).
    pub async fn member(&self, org: Uuid, role: Role) -> (Uuid, String) {
        let account = Uuid::new_v4();
        self.grant(account, org, role).await.unwrap();
        (account, self.user(account, Some((org, role))).await)
    }

    pub async fn create_org(
        &self,
        kind: OrganisationKind,
        ods: &str,
        name: &str,
        parent: Option<Uuid>,
    ) -> Result<pb::Organisation, Status> {
        self.create_org_as(
            &self.svc(),
            &Uuid::new_v4().to_string(),
            kind,
            ods,
            name,
            parent,
        )
        .await
    }

    pub async fn create_org_as(
        &self,
        token: &str,
        request_id: &str,
        kind: OrganisationKind,
        ods: &str,
        name: &str,
        parent: Option<Uuid>,
    ) -> Result<pb::Organisation, Status> {
        self.client()
            .create_organisation(with_token(
                pb::CreateOrganisationRequest {
                    request_id: request_id.into(),
                    kind: kind as i32,
                    ods_code: ods.into(),
                    name: name.into(),
                    parent_id: parent.map(|p| p.to_string()).unwrap_or_default(),
                    multi_level_approval: false,
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().organisation.unwrap())
    }

    pub async fn grant(&self, account: Uuid, org: Uuid, role: Role) -> Result<pb::Grant, Status> {
        self.grant_keyed(&Uuid::new_v4().to_string(), account, org, role)
            .await
    }

    pub async fn grant_keyed(
        &self,
        request_id: &str,
        account: Uuid,
        org: Uuid,
        role: Role,
    ) -> Result<pb::Grant, Status> {
        self.client()
            .grant_role(with_token(
                pb::GrantRoleRequest {
                    request_id: request_id.into(),
                    account_id: account.to_string(),
                    organisation_id: org.to_string(),
                    role: role.to_proto() as i32,
                },
                &self.svc(),
            ))
            .await
            .map(|r| r.into_inner().grant.unwrap())
    }

    pub async fn count(&self, table: &str) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
        n
    }

    /// Audit rows of `action`, as (outcome, target_id, details).
    pub async fn audit(&self, action: &str) -> Vec<(String, String, serde_json::Value)> {
        sqlx::query_as(
            "SELECT outcome, target_id, details FROM audit_events WHERE action = $1 \
             ORDER BY occurred_at, id",
        )
        .bind(action)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }
}

/// A small tree:
///
/// ```text
/// DESK (service desk)
/// R1 (region) ── C1 (commissioning) ── P1, P2 (practices)
///             └─ C2 ── P3
/// R2 ── C3 ── P4
/// ```
pub struct Tree {
    pub desk: Uuid,
    pub r1: Uuid,
    pub c1: Uuid,
    pub p1: Uuid,
    pub p2: Uuid,
    pub c2: Uuid,
    pub p3: Uuid,
    pub r2: Uuid,
    pub c3: Uuid,
    pub p4: Uuid,
}

impl Tree {
    pub async fn build(h: &Harness) -> Tree {
        use OrganisationKind as K;
        let id = |o: pb::Organisation| Uuid::parse_str(&o.id).unwrap();
        let org = |kind, ods: &'static str, name: &'static str, parent: Option<Uuid>| async move {
            id(h.create_org(kind, ods, name, parent).await.unwrap())
        };
        let desk = org(K::ServiceDesk, "DSK1", "National Service Desk", None).await;
        let r1 = org(K::Region, "Y56", "North Region", None).await;
        let c1 = org(
            K::CommissioningOrganisation,
            "15N",
            "Riverside CCG",
            Some(r1),
        )
        .await;
        let p1 = org(K::ServiceProvider, "A81001", "Riverside Surgery", Some(c1)).await;
        let p2 = org(K::ServiceProvider, "A81002", "Hill Practice", Some(c1)).await;
        let c2 = org(K::CommissioningOrganisation, "QWO", "Moor CCG", Some(r1)).await;
        let p3 = org(K::ServiceProvider, "B82001", "Moor Surgery", Some(c2)).await;
        let r2 = org(K::Region, "Y60", "South Region", None).await;
        let c3 = org(K::CommissioningOrganisation, "99A", "Coast CCG", Some(r2)).await;
        let p4 = org(K::ServiceProvider, "C83001", "Harbour Surgery", Some(c3)).await;
        Tree {
            desk,
            r1,
            c1,
            p1,
            p2,
            c2,
            p3,
            r2,
            c3,
            p4,
        }
    }
}

impl Harness {
    /// Another directory instance over the same database (its own pool, cache and server),
    /// as a second replica would run.
    pub async fn replica(&self) -> (Directory, RunningServer) {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.db.url)
            .await
            .unwrap();
        let channel =
            cqrs_directory::identity_channel("http://127.0.0.1:1", Duration::from_secs(2)).unwrap();
        let directory = Directory::new(
            Store::new(pool),
            channel,
            Arc::new(IssuerTokenSource::new(
                Arc::new(self.keys.issuer.clone()),
                CLIENT_ID,
                Arc::new(SystemClock),
            )),
            revocation_config(),
            Arc::new(SystemClock),
        );
        let sessions = Arc::new(RedisSessionCheck::new(
            self.redis.conn.clone(),
            self.redis.namespace.clone(),
        ));
        let server = spawn(directory.server(
            ServerConfig::for_tests("directory", self.keys.verifier.clone()),
            sessions,
        ))
        .await;
        wait_until_listening(&directory).await;
        (directory, server)
    }
}

/// Waits (up to 10 s) until `directory`'s permission cache listens for grant changes, so that
/// checks go through the cache.
pub async fn wait_until_listening(directory: &Directory) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !directory.api.cache().is_listening() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the directory's cache never started listening for grant changes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
