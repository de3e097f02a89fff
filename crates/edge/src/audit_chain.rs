//! Every service's `cqrs.audit.v1.AuditChainService` (its chain and the checkpoints it holds,
//! for `cqrsctl audit verify`) and the job that keeps its chain anchored: signing checkpoints
//! when due, fetching and keeping the other services' checkpoints, and purging what is past
//! retention. The rules are in `cqrs_audit_chain`; the storage in `cqrs_runtime::audit`.

use std::sync::Arc;
use std::time::Duration;

use cqrs_audit_chain::{PublicKey, checkpoint_from_proto, checkpoint_to_proto};
use cqrs_auth::{Principal, Role};
use cqrs_peers::AuditPeer;
use cqrs_proto::audit::v1::{self as pb, audit_chain_service_server::AuditChainService};
use cqrs_runtime::audit::{self, checkpoints, retention};
use cqrs_runtime::clock::Clock;
use cqrs_runtime::config::AuditConfig;
use sqlx::PgPool;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use crate::{ApiError, Denial, Refusal, ServiceReason, request::principal};

/// Events answered per page unless asked for fewer; the most per page.
const DEFAULT_PAGE_SIZE: i64 = 500;
const MAX_PAGE_SIZE: i64 = 1000;

/// The chain service has no refusals of its own.
#[derive(Debug)]
pub enum AuditReason {}

impl std::fmt::Display for AuditReason {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl ServiceReason for AuditReason {
    const DOMAIN: &'static str = "cqrs.audit";

    fn refusal(&self) -> Refusal {
        match *self {}
    }
}

type AuditError = ApiError<AuditReason>;

/// One service's audit chain: what it serves and what its job works on.
#[derive(Clone)]
pub struct AuditChain {
    service: &'static str,
    pool: PgPool,
    config: AuditConfig,
    clock: Arc<dyn Clock>,
}

impl AuditChain {
    pub fn new(
        service: &'static str,
        pool: PgPool,
        config: AuditConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        AuditChain {
            service,
            pool,
            config,
            clock,
        }
    }

    /// The gRPC service for this chain.
    pub fn service(
        &self,
    ) -> pb::audit_chain_service_server::AuditChainServiceServer<AuditChainApi> {
        pb::audit_chain_service_server::AuditChainServiceServer::new(AuditChainApi {
            chain: self.clone(),
        })
    }

    /// The job, fetching the checkpoints of the services in `witnessed`.
    pub fn keeper(&self, witnessed: Vec<AuditPeer>) -> ChainKeeper {
        ChainKeeper {
            chain: self.clone(),
            witnessed: witnessed
                .into_iter()
                .map(|peer| Witnessed {
                    peer,
                    known: Mutex::new(None),
                })
                .collect(),
        }
    }
}

/// Serves `pool`'s chain on `server` and runs its keeper there (the server's configuration
/// says how often to sign, with which key, for how long events are kept, and whose
/// checkpoints to keep: fetched with `tokens`; a service without credentials keeps none).
pub fn attach(
    server: cqrs_runtime::server::ServiceServer,
    pool: PgPool,
    clock: Arc<dyn Clock>,
    tokens: Option<&Arc<dyn cqrs_auth::TokenSource>>,
) -> cqrs_runtime::server::ServiceServer {
    let config = server.config();
    let witnessed = match (tokens, &config.audit.witness_urls) {
        (Some(tokens), Some(urls)) => witnesses(urls, tokens, config.request_timeout),
        _ => Vec::new(),
    };
    let chain = AuditChain::new(config.service, pool, config.audit.clone(), clock);
    let keeper = chain.keeper(witnessed);
    server
        .add_service(chain.service())
        .background(keeper.run(std::future::pending()))
}

/// Clients of the chains at `urls` (`CQRS_AUDIT_WITNESS_URLS`), called with `tokens`.
fn witnesses(
    urls: &[String],
    tokens: &Arc<dyn cqrs_auth::TokenSource>,
    timeout: Duration,
) -> Vec<AuditPeer> {
    urls.iter()
        .filter_map(|url| {
            let endpoint = tonic::transport::Endpoint::from_shared(url.clone()).ok()?;
            let channel = endpoint.connect_timeout(timeout).connect_lazy();
            Some(AuditPeer::new(channel, Arc::clone(tokens), timeout))
        })
        .collect()
}

/// Reads are for other services and the service desk.
fn authorise(principal: &Principal) -> Result<(), Denial> {
    if principal.is_service() || principal.active_role() == Some(Role::ServiceDesk) {
        Ok(())
    } else {
        Err(Denial::PermissionDenied(cqrs_auth::ROLE_LACKS_PERMISSION))
    }
}

pub struct AuditChainApi {
    chain: AuditChain,
}

impl AuditChainApi {
    async fn chain_info(
        &self,
        request: Request<pb::GetChainInfoRequest>,
    ) -> Result<pb::GetChainInfoResponse, AuditError> {
        authorise(&principal(&request)?)?;
        let (first, head, hash) = audit::chain_bounds(&self.chain.pool).await?;
        Ok(pb::GetChainInfoResponse {
            service: self.chain.service.to_owned(),
            public_keys: self
                .chain
                .config
                .public_keys()
                .iter()
                .map(PublicKey::to_text)
                .collect(),
            first_sequence: first,
            head_sequence: head,
            head_hash: if head == 0 { Vec::new() } else { hash.to_vec() },
        })
    }

    async fn chain_events(
        &self,
        request: Request<pb::ListChainEventsRequest>,
    ) -> Result<pb::ListChainEventsResponse, AuditError> {
        authorise(&principal(&request)?)?;
        let r = request.get_ref();
        let mut violations = cqrs_rules::FieldViolations::new();
        violations.check(r.page_size >= 0, "page_size", "must not be negative");
        violations.check(
            r.start_sequence >= 0,
            "start_sequence",
            "must not be negative",
        );
        let start = if r.page_token.is_empty() {
            Some(r.start_sequence.max(1))
        } else {
            let parsed = r.page_token.parse::<i64>().ok().filter(|s| *s > 0);
            violations.check(
                parsed.is_some(),
                "page_token",
                "is not a token this service gave",
            );
            parsed
        };
        violations.into_result()?;
        let start = start.unwrap_or(1);
        let size = match i64::from(r.page_size) {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let mut rows = audit::chain_page(&self.chain.pool, start, size + 1).await?;
        let next_page_token = if rows.len() as i64 > size {
            rows.pop()
                .map(|r| r.sequence.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListChainEventsResponse {
            events: rows.iter().map(crate::audit::audit_event).collect(),
            next_page_token,
        })
    }

    async fn checkpoints(
        &self,
        request: Request<pb::ListCheckpointsRequest>,
    ) -> Result<pb::ListCheckpointsResponse, AuditError> {
        authorise(&principal(&request)?)?;
        let r = request.get_ref();
        let service = (!r.service.is_empty() && r.service != self.chain.service)
            .then_some(r.service.as_str());
        let held = checkpoints::list(&self.chain.pool, service, r.start_sequence).await?;
        Ok(pb::ListCheckpointsResponse {
            checkpoints: held.iter().map(checkpoint_to_proto).collect(),
        })
    }
}

#[tonic::async_trait]
impl AuditChainService for AuditChainApi {
    async fn get_chain_info(
        &self,
        request: Request<pb::GetChainInfoRequest>,
    ) -> Result<Response<pb::GetChainInfoResponse>, Status> {
        Ok(Response::new(self.chain_info(request).await?))
    }

    async fn list_chain_events(
        &self,
        request: Request<pb::ListChainEventsRequest>,
    ) -> Result<Response<pb::ListChainEventsResponse>, Status> {
        Ok(Response::new(self.chain_events(request).await?))
    }

    async fn list_checkpoints(
        &self,
        request: Request<pb::ListCheckpointsRequest>,
    ) -> Result<Response<pb::ListCheckpointsResponse>, Status> {
        Ok(Response::new(self.checkpoints(request).await?))
    }
}

/// Another service whose checkpoints this one keeps, and what it said its name and keys are.
struct Witnessed {
    peer: AuditPeer,
    known: Mutex<Option<(String, Vec<PublicKey>)>>,
}

/// The job that keeps a chain anchored (see the module docs).
pub struct ChainKeeper {
    chain: AuditChain,
    witnessed: Vec<Witnessed>,
}

impl ChainKeeper {
    /// How often the job looks: often enough for the checkpoint period, at most every 30 s.
    pub fn interval(&self) -> Duration {
        (self.chain.config.checkpoint.period / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(30))
    }

    /// One round. Failures are logged and tried again next round.
    pub async fn tick(&self) {
        let now = self.chain.clock.now();
        if let Some(key) = &self.chain.config.signing_key {
            let made = checkpoints::make_if_due(
                &self.chain.pool,
                self.chain.service,
                key,
                self.chain.config.checkpoint,
                now,
            )
            .await;
            if let Err(err) = made {
                tracing::warn!(error = %err, "could not sign an audit checkpoint");
            }
            if let Some(period) = self.chain.config.retention {
                match retention::purge(&self.chain.pool, self.chain.service, key, period, now).await
                {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "audit events past retention purged"),
                    Err(err) => tracing::warn!(error = %err, "audit retention purge failed"),
                }
            }
        }
        for witnessed in &self.witnessed {
            if let Err(err) = self.keep(witnessed).await {
                tracing::warn!(error = %err, "could not fetch another service's audit checkpoints");
            }
        }
    }

    async fn keep(&self, witnessed: &Witnessed) -> Result<(), Box<dyn std::error::Error>> {
        let mut known = witnessed.known.lock().await;
        if known.is_none() {
            let info = witnessed.peer.chain_info().await?;
            let keys = info
                .public_keys
                .iter()
                .filter_map(|k| PublicKey::parse(k).ok())
                .collect();
            *known = Some((info.service, keys));
        }
        let Some((service, keys)) = known.as_ref() else {
            return Ok(());
        };
        // A list of every service's URL, shared by all, names this one too.
        if service == self.chain.service {
            return Ok(());
        }
        let from = checkpoints::last_held(&self.chain.pool, service).await? + 1;
        let now = self.chain.clock.now();
        let mut unverified = false;
        for received in witnessed.peer.own_checkpoints(from).await? {
            match checkpoint_from_proto(&received) {
                Some(c) if &c.service == service && c.verify(keys) => {
                    checkpoints::hold(&self.chain.pool, &c, now).await?;
                }
                _ => {
                    tracing::warn!(
                        service = %service,
                        sequence = received.sequence,
                        "ignored a checkpoint not signed by the service's key"
                    );
                    unverified = true;
                }
            }
        }
        // The service may have a new key: ask again next round.
        if unverified {
            *known = None;
        }
        Ok(())
    }

    /// Runs rounds until `stop` resolves.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut ticker = tokio::time::interval(self.interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = ticker.tick() => self.tick().await,
            }
        }
    }
}
