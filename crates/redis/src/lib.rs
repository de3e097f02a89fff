//! One Redis connection type for the three deployments the suite runs on — a single server,
//! Sentinel, Cluster — chosen by `REDIS_URL` ([`RedisTarget`]).
//!
//! Every connection connects on first use and recovers by itself, with short timeouts: while
//! Redis is down calls fail fast (callers answer `Unavailable`; session checks fail closed)
//! and the service recovers without a restart. A Sentinel connection asks the Sentinels for
//! the master again whenever its connection breaks or the node it reaches has become a
//! replica; a Cluster connection follows the cluster's slot moves and failovers.
//!
//! Keys a command, script or transaction touches together must share a hash tag (`{…}`) so
//! that a cluster holds them on one node; the stores build every key outside their scripts.
//!
//! Writes that security rests on go through [`RedisConnection::exec_replicated`]: a
//! MULTI/EXEC followed, on the same connection, by `WAIT replica_acks`, so an acknowledged
//! write is on a replica before anyone acts on it, and a failover cannot undo it.
//!
//! [`RedisConnection::subscribe`] listens to a pub/sub channel on a connection of its own
//! (a cluster forwards every message to every node, so any node serves), made again whenever
//! it breaks, and says when it is listening and when it stopped.

mod target;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection, PubSub,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ErrorKind, FromRedisValue, IntoConnectionInfo,
    Pipeline, RedisConnectionInfo, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
};
use tokio::sync::{Mutex, OnceCell};

pub use target::{RedisTarget, Topology};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a write waits for its replicas; below the response timeout, so a missing replica
/// answers "not confirmed" rather than a timeout.
const WAIT_TIMEOUT_MS: u64 = 1000;

/// A pause before a broken subscription is made again.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(250);

/// A Redis connection of any deployment; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct RedisConnection {
    inner: Inner,
    replica_acks: u32,
    /// Where a subscription connects.
    listen: Arc<Listen>,
}

enum Listen {
    Single(redis::Client),
    Sentinel,
    Cluster(Vec<redis::Client>),
}

/// What a subscription reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Listening from now on (first, or again after [`Heard::Lost`]).
    Subscribed,
    /// A message on the channel.
    Message(String),
    /// Not listening any more: messages may be missed until the next [`Heard::Subscribed`].
    Lost,
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Sentinel(Arc<SentinelMaster>),
    Cluster(Arc<LazyCluster>),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::Single(_) => "standalone",
            Inner::Sentinel(_) => "sentinel",
            Inner::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisConnection")
            .field("kind", &kind)
            .field("replica_acks", &self.replica_acks)
            .finish()
    }
}

impl RedisConnection {
    /// A connection to `target`; nothing is contacted until the first command.
    pub fn open(target: &RedisTarget) -> RedisResult<RedisConnection> {
        let mut listen = Listen::Sentinel;
        let inner = match &target.topology {
            Topology::Standalone { url } => {
                let client = redis::Client::open(url.as_str())?;
                listen = Listen::Single(client.clone());
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Inner::Single(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            Topology::Sentinel {
                sentinels,
                master,
                db,
            } => {
                let addrs = sentinels
                    .iter()
                    .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
                let mut builder =
                    SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
                        .set_client_to_redis_db(*db);
                if let Some(user) = &target.username {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(password) = &target.password {
                    builder = builder.set_client_to_redis_password(password);
                }
                Inner::Sentinel(Arc::new(SentinelMaster {
                    state: Mutex::new(SentinelState {
                        sentinels: builder.build()?,
                        current: None,
                        generation: 0,
                    }),
                }))
            }
            Topology::Cluster { nodes } => {
                let mut settings = RedisConnectionInfo::default();
                if let Some(user) = &target.username {
                    settings = settings.set_username(user);
                }
                if let Some(password) = &target.password {
                    settings = settings.set_password(password);
                }
                listen = Listen::Cluster(
                    nodes
                        .iter()
                        .map(|(host, port)| {
                            let info = ConnectionAddr::Tcp(host.clone(), *port)
                                .into_connection_info()?
                                .set_redis_settings(settings.clone());
                            redis::Client::open(info)
                        })
                        .collect::<RedisResult<_>>()?,
                );
                let urls = nodes
                    .iter()
                    .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
                let mut builder = ClusterClient::builder(urls)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(3)
                    .min_retry_wait(50)
                    .max_retry_wait(500);
                if let Some(user) = &target.username {
                    builder = builder.username(user);
                }
                if let Some(password) = &target.password {
                    builder = builder.password(password);
                }
                Inner::Cluster(Arc::new(LazyCluster {
                    client: builder.build()?,
                    conn: OnceCell::new(),
                }))
            }
        };
        Ok(RedisConnection {
            inner,
            replica_acks: target.replica_acks,
            listen: Arc::new(listen),
        })
    }

    /// Parses `url` (see [`RedisTarget`]) and opens it.
    pub fn open_url(url: &str) -> RedisResult<RedisConnection> {
        let target: RedisTarget = url.parse().map_err(|e: String| {
            RedisError::from((ErrorKind::InvalidClientConfig, "REDIS_URL", e))
        })?;
        Self::open(&target)
    }

    /// Replicas a security-relevant write must reach (see [`exec_replicated`](Self::exec_replicated)).
    pub fn replica_acks(&self) -> u32 {
        self.replica_acks
    }

    /// The same connection, with writes confirmed by `acks` replicas.
    #[must_use]
    pub fn with_replica_acks(mut self, acks: u32) -> Self {
        self.replica_acks = acks;
        self
    }

    /// Runs `transaction`'s commands as one MULTI/EXEC (their keys must share a hash tag) and
    /// answers EXEC's replies as `T` — once `replica_acks` replicas have them. Fewer in time
    /// is an error: the write may or may not have been applied, so callers fail closed.
    pub async fn exec_replicated<T: FromRedisValue>(
        &mut self,
        transaction: &Pipeline,
    ) -> RedisResult<T> {
        let mut pipe = redis::pipe();
        pipe.cmd("MULTI");
        for cmd in transaction.cmd_iter() {
            pipe.add_command(cmd.clone());
        }
        pipe.cmd("EXEC");
        if self.replica_acks > 0 {
            pipe.cmd("WAIT").arg(self.replica_acks).arg(WAIT_TIMEOUT_MS);
        }
        let mut replies: Vec<Value> = pipe.query_async(self).await?;
        let exec_at = transaction.len() + 1;
        if self.replica_acks > 0 {
            let acked: i64 = FromRedisValue::from_redis_value(
                replies.pop().unwrap_or(Value::Nil).extract_error()?,
            )?;
            if acked < i64::from(self.replica_acks) {
                return Err(RedisError::from((
                    ErrorKind::Io,
                    "write not confirmed by enough replicas",
                    format!("{acked} of {}", self.replica_acks),
                )));
            }
        }
        let exec = replies
            .into_iter()
            .nth(exec_at)
            .ok_or_else(|| RedisError::from((ErrorKind::UnexpectedReturnType, "no EXEC reply")))?
            .extract_error()?;
        Ok(T::from_redis_value(exec)?)
    }
}

impl RedisConnection {
    /// Listens to `channel` until the returned task is aborted, telling `heard` what it hears
    /// (see [`Heard`]); a broken connection is reported [`Heard::Lost`] and made again.
    pub fn subscribe(
        &self,
        channel: String,
        mut heard: impl FnMut(Heard) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut attempt = 0usize;
            loop {
                attempt += 1;
                if let Ok(mut pubsub) = this.pubsub(attempt).await
                    && pubsub.subscribe(&channel).await.is_ok()
                {
                    heard(Heard::Subscribed);
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        if let Ok(payload) = message.get_payload::<String>() {
                            heard(Heard::Message(payload));
                        }
                    }
                    heard(Heard::Lost);
                }
                tokio::time::sleep(RESUBSCRIBE_DELAY).await;
            }
        })
    }

    /// A pub/sub connection: to the server, the Sentinels' master, or (by turns, `attempt`)
    /// a cluster node.
    async fn pubsub(&self, attempt: usize) -> RedisResult<PubSub> {
        let client = match (&*self.listen, &self.inner) {
            (Listen::Single(client), _) => client.clone(),
            (Listen::Cluster(nodes), _) if !nodes.is_empty() => {
                nodes[attempt % nodes.len()].clone()
            }
            (Listen::Sentinel, Inner::Sentinel(master)) => {
                let mut state = master.state.lock().await;
                tokio::time::timeout(CONNECT_TIMEOUT * 2, state.sentinels.async_get_client())
                    .await
                    .map_err(|_| timed_out())??
            }
            _ => {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "no node to subscribe on",
                )));
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| timed_out())?
    }
}

fn timed_out() -> RedisError {
    RedisError::from((ErrorKind::Io, "timed out connecting to Redis"))
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.inner {
            Inner::Single(conn) => conn.req_packed_command(cmd),
            Inner::Sentinel(master) => {
                let master = Arc::clone(master);
                Box::pin(async move {
                    let (generation, mut conn) = master.connection().await?;
                    let reply = conn.req_packed_command(cmd).await;
                    master
                        .after(generation, reply.as_ref().map(std::slice::from_ref))
                        .await;
                    reply
                })
            }
            Inner::Cluster(cluster) => {
                let cluster = Arc::clone(cluster);
                Box::pin(async move { cluster.connection().await?.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.inner {
            Inner::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Inner::Sentinel(master) => {
                let master = Arc::clone(master);
                Box::pin(async move {
                    let (generation, mut conn) = master.connection().await?;
                    let reply = conn.req_packed_commands(cmd, offset, count).await;
                    master.after(generation, reply.as_deref()).await;
                    reply
                })
            }
            Inner::Cluster(cluster) => {
                let cluster = Arc::clone(cluster);
                Box::pin(async move {
                    cluster
                        .connection()
                        .await?
                        .req_packed_commands(cmd, offset, count)
                        .await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(conn) => conn.get_db(),
            Inner::Sentinel(_) | Inner::Cluster(_) => 0,
        }
    }
}

/// The master a set of Sentinels names, asked for again when the one we reach stops being it.
struct SentinelMaster {
    state: Mutex<SentinelState>,
}

struct SentinelState {
    sentinels: SentinelClient,
    /// The connection to the master, numbered so a late failure of an old one does not drop a
    /// newer one.
    current: Option<(u64, MultiplexedConnection)>,
    generation: u64,
}

impl SentinelMaster {
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let mut state = self.state.lock().await;
        if let Some((generation, conn)) = &state.current {
            return Ok((*generation, conn.clone()));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        // The Sentinels' answer itself may hang on a partitioned Sentinel: bounded too.
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            state.sentinels.get_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| timed_out())??;
        state.generation += 1;
        let generation = state.generation;
        state.current = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Forgets connection `generation` when `reply` shows it no longer reaches the master.
    async fn after(&self, generation: u64, reply: Result<&[Value], &RedisError>) {
        let stale = match reply {
            Err(e) => is_stale(e),
            Ok(values) => values.iter().any(|value| {
                matches!(value, Value::ServerError(e) if matches!(e.kind(), Some(ServerErrorKind::ReadOnly)))
            }),
        };
        if !stale {
            return;
        }
        let mut state = self.state.lock().await;
        if state
            .current
            .as_ref()
            .is_some_and(|(g, _)| *g == generation)
        {
            tracing::warn!("redis: master connection lost; asking the Sentinels again");
            state.current = None;
        }
    }
}

fn is_stale(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly))
}

/// A cluster connection made on first use (the cluster may not be up when a service starts).
struct LazyCluster {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}
