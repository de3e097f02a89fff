//! Readiness checks behind `grpc.health.v1`.
//!
//! The server polls every check each second and reports SERVING for "" and every service only
//! while all pass; a store outage therefore shows as NOT_SERVING within about a second and
//! clears by itself when the store returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// A boxed, sendable future (the shape `ReadinessCheck` returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Time one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// Time between polls.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Something the service needs in order to answer (a database, a cache).
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Short name for logs, e.g. "postgres".
    fn name(&self) -> &str;
    /// Whether the dependency answers right now. Callers bound it with [`CHECK_TIMEOUT`].
    fn check(&self) -> BoxFuture<'_, bool>;
}

/// `SELECT 1` on the pool.
#[derive(Debug, Clone)]
pub struct PgReadiness(pub sqlx::PgPool);

impl PgReadiness {
    /// Checks `pool`.
    pub fn new(pool: sqlx::PgPool) -> Self {
        PgReadiness(pool)
    }
}

impl ReadinessCheck for PgReadiness {
    fn name(&self) -> &str {
        "postgres"
    }

    fn check(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { sqlx::query("SELECT 1").execute(&self.0).await.is_ok() })
    }
}

/// `PING` on the connection.
#[derive(Clone)]
pub struct RedisReadiness(pub cqrs_redis::RedisConnection);

impl RedisReadiness {
    /// Checks `conn`.
    pub fn new(conn: cqrs_redis::RedisConnection) -> Self {
        RedisReadiness(conn)
    }
}

impl ReadinessCheck for RedisReadiness {
    fn name(&self) -> &str {
        "redis"
    }

    fn check(&self) -> BoxFuture<'_, bool> {
        let mut conn = self.0.clone();
        Box::pin(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        })
    }
}

/// The session store user tokens are checked against ([`cqrs_auth::SessionCheck`]): for
/// services that answer no user call without it (directory, access). Sign-ins and service
/// calls may still work, but a load balancer should send people to a replica that can.
#[derive(Clone)]
pub struct SessionStoreReadiness(pub Arc<dyn cqrs_auth::SessionCheck>);

impl ReadinessCheck for SessionStoreReadiness {
    fn name(&self) -> &str {
        "session store"
    }

    fn check(&self) -> BoxFuture<'_, bool> {
        self.0.reachable()
    }
}

/// A check whose answer is set by hand: for tests, and for services that want to report a
/// condition of their own (e.g. "warming up").
#[derive(Debug, Clone)]
pub struct ReadinessFlag {
    name: String,
    ready: Arc<AtomicBool>,
}

impl ReadinessFlag {
    /// A flag named `name`, initially `ready`.
    pub fn new(name: impl Into<String>, ready: bool) -> Self {
        ReadinessFlag {
            name: name.into(),
            ready: Arc::new(AtomicBool::new(ready)),
        }
    }

    /// Changes the answer (shared by every clone).
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

impl ReadinessCheck for ReadinessFlag {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> BoxFuture<'_, bool> {
        let ready = self.ready.load(Ordering::SeqCst);
        Box::pin(async move { ready })
    }
}

/// The health statuses of one server, driven by its readiness checks.
pub(crate) struct HealthState {
    reporter: HealthReporter,
    /// "" plus every served service.
    names: Vec<String>,
    checks: Vec<Arc<dyn ReadinessCheck>>,
    /// Last result per check, to log only changes.
    last: std::sync::Mutex<Vec<Option<bool>>>,
    stopping: AtomicBool,
}

impl HealthState {
    pub(crate) fn new(
        reporter: HealthReporter,
        services: &[&'static str],
        checks: Vec<Arc<dyn ReadinessCheck>>,
    ) -> Self {
        let mut names = vec![String::new()];
        names.extend(services.iter().map(|s| (*s).to_owned()));
        let last = std::sync::Mutex::new(vec![None; checks.len()]);
        HealthState {
            reporter,
            names,
            checks,
            last,
            stopping: AtomicBool::new(false),
        }
    }

    /// Runs every check once (concurrently, each bounded by [`CHECK_TIMEOUT`]) and publishes
    /// the result. Returns whether all passed.
    pub(crate) async fn poll_once(&self) -> bool {
        let mut set = tokio::task::JoinSet::new();
        for (i, check) in self.checks.iter().enumerate() {
            let check = Arc::clone(check);
            set.spawn(async move {
                let ok = tokio::time::timeout(CHECK_TIMEOUT, check.check())
                    .await
                    .unwrap_or(false);
                (i, ok)
            });
        }
        let mut results = vec![false; self.checks.len()];
        while let Some(joined) = set.join_next().await {
            // A panicking check counts as failing (its slot stays false).
            if let Ok((i, ok)) = joined
                && let Some(slot) = results.get_mut(i)
            {
                *slot = ok;
            }
        }
        self.log_changes(&results);
        let all_ok = results.iter().all(|ok| *ok);
        // A poll that was running when shutdown began must not flip statuses back to SERVING.
        if !self.stopping.load(Ordering::SeqCst) {
            self.publish(if all_ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            })
            .await;
        }
        all_ok
    }

    fn log_changes(&self, results: &[bool]) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        for ((check, ok), prev) in self.checks.iter().zip(results).zip(last.iter_mut()) {
            if *prev != Some(*ok) {
                if *ok {
                    tracing::info!(check = check.name(), "readiness check passing");
                } else {
                    tracing::warn!(check = check.name(), "readiness check failing");
                }
                *prev = Some(*ok);
            }
        }
    }

    async fn publish(&self, status: ServingStatus) {
        for name in &self.names {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// Marks everything NOT_SERVING for good (shutdown).
    pub(crate) async fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.publish(ServingStatus::NotServing).await;
    }

    /// Polls every [`POLL_INTERVAL`] until [`HealthState::stop`].
    pub(crate) async fn run(self: Arc<Self>) {
        let mut interval = tokio::time::interval(POLL_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate and the caller already polled once.
        interval.tick().await;
        while !self.stopping.load(Ordering::SeqCst) {
            interval.tick().await;
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            self.poll_once().await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_server::Health;
    use tonic_health::server::HealthService;

    struct Slow;
    impl ReadinessCheck for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        fn check(&self) -> BoxFuture<'_, bool> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                true
            })
        }
    }

    async fn status_of(reporter: &HealthReporter, name: &str) -> ServingStatus {
        let svc = HealthService::from_health_reporter(reporter.clone());
        let resp = svc
            .check(tonic::Request::new(HealthCheckRequest {
                service: name.to_owned(),
            }))
            .await
            .unwrap()
            .into_inner();
        match resp.status() {
            tonic_health::pb::health_check_response::ServingStatus::Serving => {
                ServingStatus::Serving
            }
            _ => ServingStatus::NotServing,
        }
    }

    #[tokio::test]
    async fn statuses_follow_checks_until_stopped() {
        let reporter = HealthReporter::new();
        let flag = ReadinessFlag::new("flag", true);
        let other = ReadinessFlag::new("other", true);
        let state = HealthState::new(
            reporter.clone(),
            &["a.v1.A"],
            vec![Arc::new(flag.clone()), Arc::new(other)],
        );
        assert!(state.poll_once().await);
        for name in ["", "a.v1.A"] {
            assert_eq!(status_of(&reporter, name).await, ServingStatus::Serving);
        }
        flag.set(false);
        assert!(!state.poll_once().await);
        for name in ["", "a.v1.A"] {
            assert_eq!(status_of(&reporter, name).await, ServingStatus::NotServing);
        }
        flag.set(true);
        assert!(state.poll_once().await);
        assert_eq!(status_of(&reporter, "").await, ServingStatus::Serving);

        state.stop().await;
        assert_eq!(status_of(&reporter, "").await, ServingStatus::NotServing);
        // Checks still pass, but a stopping server stays NOT_SERVING.
        state.poll_once().await;
        assert_eq!(
            status_of(&reporter, "a.v1.A").await,
            ServingStatus::NotServing
        );
    }

    #[tokio::test]
    async fn slow_check_counts_as_failing() {
        let reporter = HealthReporter::new();
        let state = HealthState::new(reporter.clone(), &[], vec![Arc::new(Slow)]);
        let started = std::time::Instant::now();
        assert!(!state.poll_once().await);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(status_of(&reporter, "").await, ServingStatus::NotServing);
    }

    #[tokio::test]
    async fn postgres_readiness() {
        let url = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let check = PgReadiness::new(pool.clone());
        assert_eq!(check.name(), "postgres");
        assert!(check.check().await);
        pool.close().await;
        assert!(!check.check().await, "a closed pool is not ready");

        let unreachable = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://postgres@127.0.0.1:1/postgres")
            .unwrap();
        assert!(!PgReadiness::new(unreachable).check().await);
    }

    #[tokio::test]
    async fn redis_readiness() {
        let url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let check = RedisReadiness::new(cqrs_redis::RedisConnection::open_url(&url).unwrap());
        assert_eq!(check.name(), "redis");
        assert!(check.check().await);
    }

    #[tokio::test]
    async fn no_checks_means_ready() {
        let state = HealthState::new(HealthReporter::new(), &[], vec![]);
        assert!(state.poll_once().await);
    }
}
