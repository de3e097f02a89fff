//! An identity server in-process over a fresh database and a private Redis namespace, and
//! optionally the real notification service with an SMTP sink behind identity's outbox relay.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_auth::{
    ActiveGrant, IssuerTokenSource, RedisSessionCheck, Role, SigningKey, TokenIssuer, TokenVerifier,
};
use cqrs_identity::{Identity, IdentityConfig, OffsetClock, Store, redis_connection};
use cqrs_proto::directory::v1::directory_service_client::DirectoryServiceClient;
use cqrs_proto::identity::v1::{self as pb, identity_service_client::IdentityServiceClient};
use cqrs_runtime::config::{Env, ServerConfig};
use cqrs_testkit::{RunningServer, SmtpSink, TestDb, TestKeys, TestRedis, spawn, with_token};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

pub const BASE_URL: &str = "https://cqrs.example.nhs.uk/portal/";
pub const SERVICE_CLIENT: &str = "access";
pub const SERVICE_SECRET: &str = "access-client-secret-for-tests";
/// Passwords that pass both cqrs profiles, all different.
pub const PASSWORDS: [&str; 12] = [
    "Velvet#Harbor42",
    "Amber!Falcon77",
    "Quartz&Meadow19",
    "Copper%Lantern58",
    "Indigo*Willow31",
    "Saffron+Glacier64",
    "Cobalt=Orchard26",
    "Crimson~Thicket83",
    "Juniper^Canyon15",
    "Marble@Prairie92",
    "Topaz(Harvest47",
    "Walnut)Summit36",
];

/// The notification service behind identity's relay.
pub struct Mail {
    pub smtp: SmtpSink,
    _db: TestDb,
    _server: RunningServer,
    _worker: oneshot::Sender<()>,
    pub url: String,
}

impl Mail {
    /// Starts the notification service trusting tokens signed by `signing`.
    pub async fn start(signing: &SigningKey) -> Mail {
        let smtp = SmtpSink::start().await;
        let db = TestDb::new(&cqrs_notifications::MIGRATOR).await;
        let verify = signing.verifying_key().to_env_value();
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
        let server_config = ServerConfig::from_env(&env, "notifications", 0).unwrap();
        let store = cqrs_notifications::Store::new(db.pool.clone());
        let server = spawn(cqrs_notifications::server(
            server_config,
            store.clone(),
            Arc::new(cqrs_runtime::clock::SystemClock),
        ))
        .await;
        let (tx, rx) = oneshot::channel::<()>();
        let worker =
            cqrs_notifications::worker(&config, store, Arc::new(cqrs_runtime::clock::SystemClock))
                .unwrap();
        tokio::spawn(worker.run(async move {
            let _ = rx.await;
        }));
        Mail {
            smtp,
            url: server.url(),
            _db: db,
            _server: server,
            _worker: tx,
        }
    }
}

/// The real directory service beside identity: identity asks it for grants, and it ends
/// identity's sessions on revocation. Trusts tokens signed by identity's key.
pub struct DirectoryPeer {
    pub channel: Channel,
    _db: TestDb,
    _stop: oneshot::Sender<()>,
}

impl DirectoryPeer {
    /// A free port for the directory, known before identity is built (identity needs its URL,
    /// the directory identity's). Released until [`DirectoryPeer::start`] binds it again.
    async fn reserve() -> std::net::SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
    }

    async fn start(
        addr: std::net::SocketAddr,
        keys: &TestKeys,
        redis: &TestRedis,
        identity_url: &str,
    ) -> DirectoryPeer {
        let db = TestDb::new(&cqrs_directory::MIGRATOR).await;
        let identity_channel =
            cqrs_directory::identity_channel(identity_url, Duration::from_secs(2)).unwrap();
        let tokens = Arc::new(IssuerTokenSource::new(
            Arc::new(keys.issuer.clone()),
            "directory",
            Arc::new(cqrs_runtime::clock::SystemClock),
        ));
        let directory = cqrs_directory::Directory::new(
            cqrs_directory::Store::new(db.pool.clone()),
            identity_channel,
            tokens,
            cqrs_directory::RevocationConfig::default(),
            Arc::new(cqrs_runtime::clock::SystemClock),
        );
        let sessions = Arc::new(RedisSessionCheck::new(
            redis.conn.clone(),
            redis.namespace.clone(),
        ));
        let server = directory.server(
            ServerConfig::for_tests("directory", keys.verifier.clone()),
            sessions,
        );
        let listener = TcpListener::bind(addr).await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(server.serve_with(listener, async move {
            let _ = rx.await;
        }));
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        DirectoryPeer {
            channel,
            _db: db,
            _stop: tx,
        }
    }

    pub fn client(&self) -> DirectoryServiceClient<Channel> {
        DirectoryServiceClient::new(self.channel.clone())
    }
}

pub struct Harness {
    pub db: TestDb,
    pub redis: TestRedis,
    pub signing: SigningKey,
    pub keys: TestKeys,
    pub clock: OffsetClock,
    pub identity: Identity,
    pub server: RunningServer,
    pub mail: Option<Mail>,
    pub directory: Option<DirectoryPeer>,
    _relay: Option<oneshot::Sender<()>>,
}

/// Environment shared by every identity instance of one harness.
fn identity_env(
    signing: &SigningKey,
    redis: &TestRedis,
    redis_url: &str,
    notifications_url: &str,
    extra: &[(&str, &str)],
) -> Env {
    let key = signing.to_env_value();
    let clients = format!(
        "{SERVICE_CLIENT}:{}",
        hex(&Sha256::digest(SERVICE_SECRET.as_bytes()))
    );
    let mut pairs: Vec<(&str, &str)> = vec![
        ("CQRS_TOKEN_SIGNING_KEY", &key),
        ("REDIS_URL", redis_url),
        ("CQRS_REDIS_NAMESPACE", &redis.namespace),
        ("NOTIFICATIONS_URL", notifications_url),
        // Refuses connections at once; tests that need grants start the real directory.
        ("DIRECTORY_URL", "http://127.0.0.1:1"),
        ("IDENTITY_OUTBOX_POLL_INTERVAL_MS", "50"),
        // Debug builds hash slowly and tests run side by side: wait for a slot rather than
        // answer RESOURCE_EXHAUSTED.
        ("IDENTITY_HASH_QUEUE_TIMEOUT_MS", "300000"),
        ("CQRS_SERVICE_CLIENTS", &clients),
    ];
    pairs.extend_from_slice(extra);
    Env::from_pairs(&pairs)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Harness {
    pub async fn start(extra: &[(&str, &str)]) -> Harness {
        Self::start_inner(extra, false, false).await
    }

    /// With the notification service, an SMTP sink and identity's outbox relay running.
    pub async fn with_mail(extra: &[(&str, &str)]) -> Harness {
        Self::start_inner(extra, true, false).await
    }

    /// With the real directory service, which identity asks for grants.
    pub async fn with_directory() -> Harness {
        Self::start_inner(&[], false, true).await
    }

    /// With the real directory service and extra settings.
    pub async fn with_directory_env(extra: &[(&str, &str)]) -> Harness {
        Self::start_inner(extra, false, true).await
    }

    async fn start_inner(extra: &[(&str, &str)], with_mail: bool, with_directory: bool) -> Harness {
        let db = TestDb::new(&cqrs_identity::MIGRATOR).await;
        let redis = TestRedis::new().await;
        let signing = SigningKey::generate(&format!("id-{}", Uuid::new_v4().simple()));
        let mail = if with_mail {
            Some(Mail::start(&signing).await)
        } else {
            None
        };
        let notifications_url = mail
            .as_ref()
            .map_or("http://127.0.0.1:1".to_owned(), |m| m.url.clone());
        let directory_addr = if with_directory {
            Some(DirectoryPeer::reserve().await)
        } else {
            None
        };
        let directory_url = directory_addr.map(|addr| format!("http://{addr}"));
        let mut extra = extra.to_vec();
        if let Some(url) = &directory_url {
            extra.push(("DIRECTORY_URL", url.as_str()));
        }
        let env = identity_env(&signing, &redis, &redis.url, &notifications_url, &extra);
        let clock = OffsetClock::new();
        let identity = build(&env, &db, &clock).await;
        let server = spawn(identity.server(server_config())).await;
        let relay = if with_mail {
            let (tx, rx) = oneshot::channel::<()>();
            tokio::spawn(identity.relay().unwrap().run(async move {
                let _ = rx.await;
            }));
            Some(tx)
        } else {
            None
        };
        let keys = TestKeys {
            signing: signing.clone(),
            verifier: TokenVerifier::new(vec![signing.verifying_key()]),
            issuer: TokenIssuer::new(signing.clone(), Duration::from_secs(600)),
        };
        let directory = match directory_addr {
            Some(addr) => Some(DirectoryPeer::start(addr, &keys, &redis, &server.url()).await),
            None => None,
        };
        Harness {
            db,
            redis,
            signing,
            keys,
            clock,
            identity,
            server,
            mail,
            directory,
            _relay: relay,
        }
    }

    /// Another identity instance over the same database, e.g. with a different Redis.
    pub async fn second_instance(&self, redis_url: &str, extra: &[(&str, &str)]) -> Identity {
        let env = identity_env(
            &self.signing,
            &self.redis,
            redis_url,
            "http://127.0.0.1:1",
            extra,
        );
        build(&env, &self.db, &self.clock).await
    }

    pub fn client(&self) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(self.server.channel.clone())
    }

    pub fn service_token(&self) -> String {
        self.keys.service_token(SERVICE_CLIENT)
    }

    /// A user token acting as the service desk, for an account that need not exist.
    pub async fn desk_token(&self) -> String {
        let grant = ActiveGrant {
            organisation_id: Uuid::new_v4(),
            role: Role::ServiceDesk,
        };
        self.keys
            .user_token(&self.redis, Uuid::new_v4(), Some(grant))
            .await
    }

    /// A user token with `role` active, for an account that need not exist.
    pub async fn role_token(&self, account_id: Uuid, role: Option<Role>) -> String {
        let grant = role.map(|role| ActiveGrant {
            organisation_id: Uuid::new_v4(),
            role,
        });
        self.keys.user_token(&self.redis, account_id, grant).await
    }

    pub async fn create(
        &self,
        realm: pb::Realm,
        email: &str,
        first: &str,
        last: &str,
    ) -> Result<pb::Account, Status> {
        self.create_keyed(&Uuid::new_v4().to_string(), realm, email, first, last)
            .await
    }

    pub async fn create_keyed(
        &self,
        request_id: &str,
        realm: pb::Realm,
        email: &str,
        first: &str,
        last: &str,
    ) -> Result<pb::Account, Status> {
        self.client()
            .create_account(with_token(
                pb::CreateAccountRequest {
                    request_id: request_id.into(),
                    realm: realm as i32,
                    email: email.into(),
                    first_name: first.into(),
                    last_name: last.into(),
                },
                &self.service_token(),
            ))
            .await
            .map(|r| r.into_inner().account.unwrap())
    }

    /// The link token of the newest outbox mail of `template` to `account_id`.
    pub async fn outbox_token(&self, account_id: &str, template: &str) -> String {
        let payload = self
            .outbox_payload(account_id, template)
            .await
            .unwrap_or_else(|| {
                panic!("no {template} mail queued for {account_id}");
            });
        payload["params"]["token"].as_str().unwrap().to_owned()
    }

    pub async fn outbox_payload(
        &self,
        account_id: &str,
        template: &str,
    ) -> Option<serde_json::Value> {
        let row: Option<(serde_json::Value,)> = sqlx::query_as(
            "SELECT payload FROM outbox WHERE payload->>'account_id' = $1 \
               AND payload->>'template' = $2 ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(account_id)
        .bind(format!("EMAIL_TEMPLATE_{template}"))
        .fetch_optional(&self.db.pool)
        .await
        .unwrap();
        row.map(|(p,)| p)
    }

    pub async fn outbox_count(&self, template: &str) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM outbox WHERE payload->>'template' = $1")
                .bind(format!("EMAIL_TEMPLATE_{template}"))
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
        n
    }

    pub async fn complete(&self, token: &str, password: &str) -> Result<pb::Account, Status> {
        self.client()
            .complete_registration(pb::CompleteRegistrationRequest {
                token: token.into(),
                password: password.into(),
            })
            .await
            .map(|r| r.into_inner().account.unwrap())
    }

    /// A registered (ACTIVE) account with `password`.
    pub async fn active(&self, realm: pb::Realm, email: &str, password: &str) -> pb::Account {
        let account = self.create(realm, email, "Ann", "Smith").await.unwrap();
        let token = self.outbox_token(&account.id, "REGISTRATION_LINK").await;
        self.complete(&token, password).await.unwrap()
    }

    pub async fn sign_in(&self, login: &str, password: &str) -> Result<pb::SignInResponse, Status> {
        self.client()
            .sign_in(pb::SignInRequest {
                login: login.into(),
                password: password.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn get_account(&self, token: &str, id: &str) -> Result<pb::Account, Status> {
        self.client()
            .get_account(with_token(
                pb::GetAccountRequest {
                    account_id: id.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().account.unwrap())
    }

    pub async fn count(&self, table: &str) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
        n
    }

    /// Audit rows of `action` for `target_id`, as (outcome, details).
    pub async fn audit(&self, action: &str, target_id: &str) -> Vec<(String, serde_json::Value)> {
        sqlx::query_as(
            "SELECT outcome, details FROM audit_events WHERE action = $1 AND target_id = $2 \
             ORDER BY occurred_at, id",
        )
        .bind(action)
        .bind(target_id)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    pub fn directory(&self) -> &DirectoryPeer {
        self.directory
            .as_ref()
            .expect("harness started without the directory")
    }

    pub fn mail(&self) -> &Mail {
        self.mail.as_ref().expect("harness started without mail")
    }
}

async fn build(env: &Env, db: &TestDb, clock: &OffsetClock) -> Identity {
    let config = IdentityConfig::from_env(env).unwrap();
    let store = Store::new(db.pool.clone());
    store.ensure_outbox().await.unwrap();
    let redis = redis_connection(&config.redis_url).unwrap();
    let identity = Identity::new(config, store, redis, Arc::new(clock.clone())).unwrap();
    identity.api.hasher().warm_up().await.unwrap();
    identity
}

fn server_config() -> ServerConfig {
    // The verifier is replaced by identity's own keys in `Identity::server`.
    ServerConfig::for_tests(
        "identity",
        TokenVerifier::new(vec![SigningKey::generate("unused").verifying_key()]),
    )
}

/// A TCP proxy to Redis that can be taken down (connections cut, new ones refused) and
/// brought back, to watch the service fail closed and recover without a restart.
pub struct FlakyProxy {
    pub url: String,
    up: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl FlakyProxy {
    pub async fn start(target_url: &str) -> FlakyProxy {
        let target = target_url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, conns2) = (Arc::clone(&up), Arc::clone(&conns));
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let handle = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().unwrap().push(handle);
            }
        });
        FlakyProxy {
            url: format!("redis://{addr}"),
            up,
            conns,
        }
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for handle in self.conns.lock().unwrap().drain(..) {
                handle.abort();
            }
        }
    }
}

/// A fixed instant for the Redis store tests, which are given the time rather than read it.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000).unwrap()
}

/// A Redis connection to a port nothing listens on, with short timeouts and few retries, to
/// watch a store fail closed.
pub fn dead_redis() -> ConnectionManager {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client, config).unwrap()
}
