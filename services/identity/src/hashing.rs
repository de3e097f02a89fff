//! Password hashing: argon2id with at least the OWASP baseline (m=19456 KiB, t=2, p=1), the
//! parameters kept in the PHC string so they can be raised later without breaking old hashes
//! (SECURITY 10).
//!
//! Each hash holds ~19 MiB and a core for tens of milliseconds, so the work is bounded: a
//! semaphore with one permit per core, a short wait for a permit (`queue_timeout`), then
//! `HashError::Busy`, which the API answers with `ResourceExhausted`. A flood therefore costs
//! at most `permits` hashes' worth of memory instead of growing without bound. The hashing
//! itself runs on tokio's blocking pool so it never stalls the async workers.
//!
//! Unknown logins verify against a dummy hash made with the same parameters so they cost the
//! same as real ones (SECURITY 9), and a moving average of the verify time lets the service pad
//! answers that skip hashing (locked accounts) to the same duration.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use thiserror::Error;
use tokio::sync::{OnceCell, Semaphore};

use crate::domain::password::NormalisedPassword;

/// OWASP Password Storage Cheat Sheet baseline for argon2id; weaker settings are refused.
pub const MIN_M_COST_KIB: u32 = 19_456;
pub const MIN_T_COST: u32 = 2;
pub const MIN_P_COST: u32 = 1;
/// Upper limits, for configuration and for stored hashes alike: a corrupted or planted PHC
/// string must not make one verify allocate gigabytes or run for minutes.
pub const MAX_M_COST_KIB: u32 = 1024 * 1024;
pub const MAX_T_COST: u32 = 64;
pub const MAX_P_COST: u32 = 64;
const SALT_LEN: usize = 16;
/// Fixed input of the dummy hash; what it is does not matter, only that it is never a real
/// account's hash.
const DUMMY_PASSWORD: &[u8] = b"cqrs-identity dummy password for unknown logins";
/// Weight of a new sample in the moving average of verify time (1/8): smooth enough that one
/// slow verify does not move it much, quick enough to follow a change of machine load.
const EWMA_SHIFT: u32 = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashingConfig {
    /// Memory in KiB (at least 19456).
    pub m_cost_kib: u32,
    /// Iterations (at least 2).
    pub t_cost: u32,
    /// Lanes (at least 1).
    pub p_cost: u32,
    /// Hashes that may run at once; defaults to the number of cores.
    pub max_concurrency: usize,
    /// Longest wait for a free slot before `HashError::Busy`.
    pub queue_timeout: Duration,
}

impl Default for HashingConfig {
    fn default() -> Self {
        HashingConfig {
            m_cost_kib: MIN_M_COST_KIB,
            t_cost: MIN_T_COST,
            p_cost: MIN_P_COST,
            max_concurrency: std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            queue_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Error)]
pub enum HashError {
    /// Every hashing slot stayed taken for `queue_timeout`.
    #[error("password hashing is at capacity")]
    Busy,
    #[error("argon2 settings refused: {0}")]
    WeakParams(String),
    /// A stored hash that is not a PHC string we can verify.
    #[error("stored password hash is malformed")]
    InvalidHash,
    #[error("password hashing failed: {0}")]
    Internal(String),
}

/// Cheap to clone: clones share the pool, the dummy hash and the timing estimate.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    params: Params,
    permits: usize,
    semaphore: Arc<Semaphore>,
    queue_timeout: Duration,
    dummy: OnceCell<String>,
    /// Moving average of hash/verify time in microseconds; 0 until the first sample.
    ewma_micros: AtomicU64,
    /// Hashes running right now, and the most ever seen at once (for tests and metrics).
    running: AtomicUsize,
    peak_running: AtomicUsize,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("m_cost_kib", &self.inner.params.m_cost())
            .field("t_cost", &self.inner.params.t_cost())
            .field("p_cost", &self.inner.params.p_cost())
            .field("permits", &self.inner.permits)
            .field("queue_timeout", &self.inner.queue_timeout)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Refuses parameters below the baseline and a pool of zero.
    pub fn new(config: HashingConfig) -> Result<Self, HashError> {
        if config.m_cost_kib < MIN_M_COST_KIB
            || config.t_cost < MIN_T_COST
            || config.p_cost < MIN_P_COST
        {
            return Err(HashError::WeakParams(format!(
                "m={},t={},p={} is below the minimum m={MIN_M_COST_KIB},t={MIN_T_COST},p={MIN_P_COST}",
                config.m_cost_kib, config.t_cost, config.p_cost
            )));
        }
        if !within_limits(config.m_cost_kib, config.t_cost, config.p_cost) {
            return Err(HashError::WeakParams(format!(
                "m={},t={},p={} is above the limits m={MAX_M_COST_KIB},t={MAX_T_COST},p={MAX_P_COST}",
                config.m_cost_kib, config.t_cost, config.p_cost
            )));
        }
        if config.max_concurrency == 0 {
            return Err(HashError::WeakParams(
                "max_concurrency must be at least 1".to_owned(),
            ));
        }
        let params = Params::new(config.m_cost_kib, config.t_cost, config.p_cost, None)
            .map_err(|e| HashError::WeakParams(e.to_string()))?;
        Ok(PasswordHasher {
            inner: Arc::new(Inner {
                params,
                permits: config.max_concurrency,
                semaphore: Arc::new(Semaphore::new(config.max_concurrency)),
                queue_timeout: config.queue_timeout,
                dummy: OnceCell::new(),
                ewma_micros: AtomicU64::new(0),
                running: AtomicUsize::new(0),
                peak_running: AtomicUsize::new(0),
            }),
        })
    }

    /// How many hashes may run at once.
    pub fn permits(&self) -> usize {
        self.inner.permits
    }

    /// Hashes running right now.
    pub fn in_flight(&self) -> usize {
        self.inner.running.load(Ordering::Relaxed)
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) with a fresh random salt.
    pub async fn hash(&self, password: &NormalisedPassword) -> Result<String, HashError> {
        self.hash_bytes(password.as_bytes().to_vec()).await
    }

    /// Whether `password` matches the stored PHC string. The parameters come from the string,
    /// so hashes made with older settings still verify (see [`Self::needs_rehash`]).
    pub async fn verify(
        &self,
        password: &NormalisedPassword,
        phc: &str,
    ) -> Result<bool, HashError> {
        let (parsed, _) = parse_stored(phc).ok_or(HashError::InvalidHash)?;
        let password = password.as_bytes().to_vec();
        self.run(move || {
            // A missing salt or output, a bad version or unknown parameters are all a
            // non-matching password to argon2; a malformed hash was refused above already.
            Ok(Argon2::default()
                .verify_password(&password, &parsed)
                .is_ok())
        })
        .await
    }

    /// Verifies against a dummy hash with the configured parameters and always answers
    /// "no match": an unknown login costs what a known one does. The dummy is made on first
    /// use; call [`Self::warm_up`] at start-up so no request pays for it.
    pub async fn verify_dummy(&self, password: &NormalisedPassword) -> Result<(), HashError> {
        let dummy = self.dummy_hash().await?;
        // The result is meaningless; only the work matters.
        let _ = self.verify(password, &dummy).await?;
        Ok(())
    }

    /// Makes the dummy hash now (and seeds the timing estimate with its duration).
    pub async fn warm_up(&self) -> Result<(), HashError> {
        self.dummy_hash().await.map(|_| ())
    }

    /// Whether a stored hash was made with other settings than the current ones (or is not a
    /// hash we understand), so it should be replaced after the next successful verify. Any
    /// difference counts, not only weaker: uniform cost keeps timing uniform.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Some((parsed, stored)) = parse_stored(phc) else {
            return true;
        };
        let current = &self.inner.params;
        Algorithm::try_from(parsed.algorithm.as_str()) != Ok(Algorithm::Argon2id)
            || parsed.version != Some(Version::V0x13.into())
            || stored.m_cost() != current.m_cost()
            || stored.t_cost() != current.t_cost()
            || stored.p_cost() != current.p_cost()
            || stored.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)
                != Params::DEFAULT_OUTPUT_LEN
    }

    /// Typical time of one verify (moving average of recent hashes and verifies), for padding
    /// answers that skip hashing. Zero until the first hash: call [`Self::warm_up`] at start.
    pub fn typical_verify_duration(&self) -> Duration {
        Duration::from_micros(self.inner.ewma_micros.load(Ordering::Relaxed))
    }

    async fn dummy_hash(&self) -> Result<String, HashError> {
        self.inner
            .dummy
            .get_or_try_init(|| self.hash_bytes(DUMMY_PASSWORD.to_vec()))
            .await
            .cloned()
    }

    async fn hash_bytes(&self, password: Vec<u8>) -> Result<String, HashError> {
        let params = self.inner.params.clone();
        self.run(move || {
            let salt: [u8; SALT_LEN] = rand::random();
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password_with_salt(&password, &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| HashError::Internal(e.to_string()))
        })
        .await
    }

    /// Runs argon2 work under the pool's limits and times it.
    async fn run<T, F>(&self, work: F) -> Result<T, HashError>
    where
        F: FnOnce() -> Result<T, HashError> + Send + 'static,
        T: Send + 'static,
    {
        let permit = tokio::time::timeout(
            self.inner.queue_timeout,
            Arc::clone(&self.inner.semaphore).acquire_owned(),
        )
        .await
        .map_err(|_| HashError::Busy)?
        .map_err(|_| HashError::Busy)?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // The permit moves into the blocking task: if the caller gives up (deadline,
            // disconnect) the hash still runs to the end, and its slot stays taken until then,
            // so the bound is on work actually running, not on callers waiting.
            let _permit = permit;
            let now_running = inner.running.fetch_add(1, Ordering::SeqCst) + 1;
            inner.peak_running.fetch_max(now_running, Ordering::SeqCst);
            let started = Instant::now();
            let result = work();
            inner.record(started.elapsed());
            inner.running.fetch_sub(1, Ordering::SeqCst);
            result
        })
        .await
        .map_err(|e| HashError::Internal(e.to_string()))?
    }
}

/// A stored PHC string we are willing to verify: an argon2 variant, salt and output present,
/// parameters readable and within the limits.
fn parse_stored(phc: &str) -> Option<(PasswordHash, Params)> {
    let parsed = PasswordHash::new(phc).ok()?;
    let params = Params::try_from(&parsed).ok()?;
    let usable = Algorithm::try_from(parsed.algorithm.as_str()).is_ok()
        && parsed.salt.is_some()
        && parsed.hash.is_some()
        && within_limits(params.m_cost(), params.t_cost(), params.p_cost());
    usable.then_some((parsed, params))
}

fn within_limits(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> bool {
    m_cost_kib <= MAX_M_COST_KIB && t_cost <= MAX_T_COST && p_cost <= MAX_P_COST
}

impl Inner {
    fn record(&self, elapsed: Duration) {
        let sample = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        // fetch_update only fails when the closure returns None, which it never does.
        let _ = self
            .ewma_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    sample
                } else if sample >= old {
                    old + ((sample - old) >> EWMA_SHIFT)
                } else {
                    old - ((old - sample) >> EWMA_SHIFT)
                })
            });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn pw(s: &str) -> NormalisedPassword {
        NormalisedPassword::from_presented(s)
    }

    fn hasher(permits: usize, queue_timeout: Duration) -> PasswordHasher {
        PasswordHasher::new(HashingConfig {
            max_concurrency: permits,
            queue_timeout,
            ..HashingConfig::default()
        })
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn hash_verify_roundtrip_and_phc_format() {
        let h = hasher(2, Duration::from_secs(30));
        let phc = h.hash(&pw("Kx7#pLm2")).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify(&pw("Kx7#pLm2"), &phc).await.unwrap());
        assert!(!h.verify(&pw("Kx7#pLm3"), &phc).await.unwrap());
        // The NFKC form is what is hashed: full-width input verifies.
        assert!(h.verify(&pw("Ｋｘ７＃ｐＬｍ２"), &phc).await.unwrap());
        // Fresh salt every time.
        let again = h.hash(&pw("Kx7#pLm2")).await.unwrap();
        assert_ne!(phc, again);
        assert!(!h.needs_rehash(&phc));
        assert!(h.typical_verify_duration() > Duration::ZERO);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn malformed_hashes_are_errors_not_matches() {
        let h = hasher(1, Duration::from_secs(30));
        for bad in [
            "",
            "plain",
            "$2b$12$abcdefghijklmnopqrstuv",
            "$argon2id$v=19$m=19456",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0",
            "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0$\
             1EuwiiPAgEsdu03L8+QudHsbzM1r8kwqK6ECdOMiR7k",
        ] {
            assert!(
                matches!(h.verify(&pw("x"), bad).await, Err(HashError::InvalidHash)),
                "{bad}"
            );
            assert!(h.needs_rehash(bad));
        }
        // A hash of another argon2 variant verifies and asks to be replaced.
        let params = Params::new(MIN_M_COST_KIB, 2, 1, None).unwrap();
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, params)
            .hash_password_with_salt(b"legacy", &[7u8; 16])
            .unwrap()
            .to_string();
        assert!(argon2i.starts_with("$argon2i$"));
        assert!(h.verify(&pw("legacy"), &argon2i).await.unwrap());
        assert!(h.needs_rehash(&argon2i));
    }

    #[test]
    fn weaker_params_are_refused() {
        for (m, t, p) in [(19_455, 2, 1), (19_456, 1, 1), (19_456, 2, 0), (4096, 3, 1)] {
            let config = HashingConfig {
                m_cost_kib: m,
                t_cost: t,
                p_cost: p,
                ..HashingConfig::default()
            };
            assert!(
                matches!(PasswordHasher::new(config), Err(HashError::WeakParams(_))),
                "m={m},t={t},p={p}"
            );
        }
        let absurd = HashingConfig {
            m_cost_kib: MAX_M_COST_KIB + 1,
            ..HashingConfig::default()
        };
        assert!(PasswordHasher::new(absurd).is_err());
        let no_pool = HashingConfig {
            max_concurrency: 0,
            ..HashingConfig::default()
        };
        assert!(PasswordHasher::new(no_pool).is_err());
        let stronger = HashingConfig {
            m_cost_kib: 65_536,
            t_cost: 3,
            p_cost: 2,
            ..HashingConfig::default()
        };
        assert!(PasswordHasher::new(stronger).is_ok());
        assert!(HashingConfig::default().max_concurrency >= 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn needs_rehash_when_settings_change() {
        let baseline = hasher(1, Duration::from_secs(30));
        let old = baseline.hash(&pw("Kx7#pLm2")).await.unwrap();
        let stronger = PasswordHasher::new(HashingConfig {
            m_cost_kib: 24_576,
            ..HashingConfig::default()
        })
        .unwrap();
        assert!(stronger.needs_rehash(&old));
        // Old hashes keep working after the settings are raised.
        assert!(stronger.verify(&pw("Kx7#pLm2"), &old).await.unwrap());
        let new = stronger.hash(&pw("Kx7#pLm2")).await.unwrap();
        assert!(new.contains("$m=24576,t=2,p=1$"), "{new}");
        assert!(!stronger.needs_rehash(&new));
        assert!(baseline.needs_rehash(&new));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dummy_verify_costs_a_verify_and_is_made_once() {
        let h = hasher(2, Duration::from_secs(30));
        assert_eq!(h.typical_verify_duration(), Duration::ZERO);
        h.warm_up().await.unwrap();
        let first = h.inner.dummy.get().cloned().unwrap();
        assert!(first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(h.typical_verify_duration() > Duration::ZERO);
        h.verify_dummy(&pw("anything")).await.unwrap();
        h.clone().verify_dummy(&pw("else")).await.unwrap();
        assert_eq!(h.inner.dummy.get(), Some(&first));
    }

    /// A flood: 50 hashes against one slot and a tiny queue time. Some are turned away with
    /// Busy, the rest succeed, and never more than one runs at once.
    #[tokio::test(flavor = "multi_thread")]
    async fn flood_is_bounded_and_turned_away() {
        let h = hasher(1, Duration::from_millis(5));
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move { h.hash(&pw(&format!("flood-{i}"))).await })
            })
            .collect();
        let mut ok = 0;
        let mut busy = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(HashError::Busy) => busy += 1,
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert!(ok >= 1, "ok {ok}, busy {busy}");
        assert!(busy >= 1, "ok {ok}, busy {busy}");
        assert_eq!(ok + busy, 50);
        assert_eq!(h.inner.peak_running.load(Ordering::SeqCst), 1);
        assert_eq!(h.in_flight(), 0);
    }

    /// With more slots, concurrency reaches but never exceeds the bound.
    #[tokio::test(flavor = "multi_thread")]
    async fn concurrency_never_exceeds_permits() {
        let h = hasher(2, Duration::from_secs(60));
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move { h.hash(&pw(&format!("p-{i}"))).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert!(h.inner.peak_running.load(Ordering::SeqCst) <= 2);
        assert_eq!(h.permits(), 2);
    }

    #[test]
    fn ewma_moves_by_an_eighth() {
        let h = hasher(1, Duration::from_secs(1));
        h.inner.record(Duration::from_millis(80));
        assert_eq!(h.typical_verify_duration(), Duration::from_millis(80));
        h.inner.record(Duration::from_millis(160));
        assert_eq!(h.typical_verify_duration(), Duration::from_millis(90));
        h.inner.record(Duration::from_millis(10));
        assert_eq!(h.typical_verify_duration(), Duration::from_millis(80));
    }
}
