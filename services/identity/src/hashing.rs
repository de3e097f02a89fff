//! Password hashing: argon2id with at least the OWASP baseline (m=19456 KiB, t=2, p=1), the
//! parameters kept in the PHC string so they can be raised later without breaking old hashes
//! (SECURITY 10).
//!
//! Each hash holds ~19 MiB and a core for tens of milliseconds, so the work is bounded: it runs
//! on dedicated threads, one per core by default (the pool's "permits"), never on the async
//! workers. Work first takes a place ([`Slot`]): there are [`PLACES_PER_THREAD`] per thread,
//! for the hash running and those next, already waiting when the thread finishes. Work that
//! found no place within `queue_timeout` is answered `HashError::Busy` (the API says
//! `ResourceExhausted`) without being hashed; work holding a place is always hashed, after at
//! most the few hashes ahead of it, unless its caller is gone. A flood therefore costs at most
//! `permits` hashes' worth of memory and CPU instead of growing without bound.
//!
//! Three things keep the pool as fast as the bare algorithm on the same cores (measured by
//! `benches/signin.rs`):
//! * a thread that finishes takes the next queued hash itself, so a core never idles waiting
//!   for the async side to hand it work;
//! * more than one place per thread: a sign-in takes its place, then counts the attempt in
//!   Redis (the lock-out), then queues the hash. With one place per thread, the thread waited
//!   idle while its caller counted (~6% of the time under load); now the next check is counted
//!   while the one before it hashes;
//! * hashes and verifies reuse their thread's argon2 memory: allocating 19 MiB per hash (what
//!   `Argon2::verify_password` does) costs page faults and zeroing that the algorithm does
//!   not need (it writes every block before reading it), and left the allocator holding a
//!   freed block per hash. The memory is freed once hashing has been idle for
//!   [`IDLE_RELEASE`], so an idle service does not keep it.
//!
//! Memory is therefore bounded by the pool: at most one block per hashing thread. Work that
//! would wait past `queue_timeout` anyway is refused before it waits
//! ([`PasswordHasher::would_wait_too_long`]).
//!
//! Unknown logins verify against a dummy hash made with the same parameters so they cost the
//! same as real ones (SECURITY 9). Answers that skip hashing (locked accounts) wait their turn
//! in the same queue (at once when a thread is free) and then as long as a recent verify took,
//! one of the last [`RECENT_TIMES`] drawn at random ([`Slot::wait_like_verify`]), so they take
//! as long as a check would under any load, and vary as checks do. (Waiting the average was
//! alike only on average: verify times are skewed by the odd preempted hash, so padded answers
//! sat above the checks' median, and varied less.)

use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use cqrs_runtime::metrics::{self, Counter, UpDownCounter};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rand::seq::IndexedRandom as _;
use subtle::ConstantTimeEq;
use thiserror::Error;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore, oneshot};

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
/// Hash and verify times kept for answers that skip hashing to draw from: about half a
/// second of a busy pool's, a handful of its sign-ins.
const RECENT_TIMES: usize = 64;
/// Places per hashing thread: the hash it runs, the next one (counted and queued while that
/// runs), and two more. Two would keep the threads busy; the others are for answers that
/// skip hashing (a locked account), which hold a place while the lock-out is asked and then
/// only until their turn at a thread: with two, places alone held a flood of them on two
/// cores to 3,500-3,700 answers a second (four: 3,400-4,300; eight: 4,200-4,600, on a noisy
/// machine). Work let in waits behind at most three hashes on its thread, time it would
/// otherwise spend waiting for a place.
pub const PLACES_PER_THREAD: usize = 4;
/// Argon2 memory is reserved in at least this many blocks (32 MiB and one block), so that the
/// system allocator (glibc) gives each buffer a mapping of its own and unmaps it when it is
/// freed. glibc maps allocations above its mmap threshold, but raises the threshold to the
/// size of any mapped chunk freed below 32 MiB (mallopt(3), M_MMAP_THRESHOLD): a 19 MiB
/// buffer, once freed, would make the next ones come from the thread's heap, which keeps
/// freed memory. Pages past the blocks a hash uses are never touched, so they cost address
/// space, not memory.
const MAPPED_BLOCKS: usize = (32 << 20) / Block::SIZE + 1;
/// Hashing idle this long frees the argon2 memory kept between verifies.
/// Short, because it is what an idle service holds beyond its baseline; allocating it again
/// costs a few milliseconds once, against tens for the hash itself.
pub const IDLE_RELEASE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashingConfig {
    /// Memory in KiB (at least 19456).
    pub m_cost_kib: u32,
    /// Iterations (at least 2).
    pub t_cost: u32,
    /// Lanes (at least 1).
    pub p_cost: u32,
    /// Hashes that may run at once (the hashing threads); defaults to the number of cores.
    pub max_concurrency: usize,
    /// Longest wait for a place in the pool before `HashError::Busy`.
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
    /// Every place in the pool stayed taken for `queue_timeout`.
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
    queue_timeout: Duration,
    dummy: OnceCell<String>,
    /// Moving average of hash/verify time on its thread, in microseconds; 0 until the first
    /// sample.
    ewma_micros: AtomicU64,
    /// The last hash/verify times, for padding to draw from.
    recent: Mutex<RecentTimes>,
    /// Moving average of how much longer than asked a padding sleep lasts (timer granularity
    /// and wake-up), in microseconds, subtracted from the next ones.
    overshoot_micros: AtomicU64,
    /// Moving average of how long a place is held, from taking it until it is let go, in
    /// microseconds; 0 until the first. A check holds its place for about two hashes when
    /// the pool is busy (the one ahead, then its own); an answer that skips hashing, a moment.
    hold_micros: AtomicU64,
    /// Places: [`PLACES_PER_THREAD`] per thread.
    places: Arc<Semaphore>,
    /// Work waiting for a place.
    queued: AtomicUsize,
    /// Hashes running right now, and the most ever seen at once (for tests and metrics).
    running: AtomicUsize,
    peak_running: AtomicUsize,
    /// Work for the hashing threads. Dropping the last hasher closes it and the threads end.
    jobs: Sender<Job>,
    /// Jobs sent to the threads and not yet finished (waiting or running).
    jobs_pending: AtomicUsize,
    /// Moving average of a job's way to a free thread and back (sent, the thread woken, the
    /// answer back with its caller), beyond the work itself, in microseconds; 0 until the
    /// first job that found a thread free.
    hop_micros: AtomicU64,
}

/// A unit of hashing work, given the thread's scratch memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Argon2 memory not in use, at most one buffer per hashing thread, each exactly the size the
/// configured parameters need (larger ones, from hashes with stronger old settings, are not
/// kept).
struct Scratch {
    blocks: usize,
    kept: Mutex<Kept>,
}

struct Kept {
    free: Vec<Vec<Block>>,
    /// When a job last ended.
    last_used: Instant,
}

impl Scratch {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Vec<Block> {
        self.kept().free.pop().unwrap_or_default()
    }

    fn give_back(&self, memory: Option<Vec<Block>>) {
        let mut kept = self.kept();
        kept.last_used = Instant::now();
        if let Some(memory) = memory.filter(|m| m.len() == self.blocks) {
            kept.free.push(memory);
        }
    }

    /// Frees the kept memory if no job has ended for [`IDLE_RELEASE`] (a thread that waited
    /// that long for a job may have waited while another was busy); answers how long to wait
    /// for a job before asking again.
    fn release_if_idle(&self) -> Duration {
        let mut kept = self.kept();
        let idle = kept.last_used.elapsed();
        if idle >= IDLE_RELEASE {
            kept.free.clear();
            IDLE_RELEASE
        } else {
            IDLE_RELEASE - idle
        }
    }
}

/// One hashing thread: runs jobs with scratch memory until every hasher is gone, and frees
/// the kept memory once the pool has had no job for [`IDLE_RELEASE`].
///
/// The threads share a multi-consumer channel, so a job wakes one idle thread. (Sharing a
/// single-consumer one behind a mutex woke two: the thread holding the mutex took the job, and
/// letting the mutex go woke the next, only for it to wait on the channel in its place. On a
/// flood of answers that skip hashing, whose turn is a job, that was a context switch each.)
fn hashing_thread(queue: &Receiver<Job>, scratch: &Scratch) {
    let mut wait = IDLE_RELEASE;
    loop {
        match queue.recv_timeout(wait) {
            Ok(job) => {
                let mut memory = scratch.take();
                // A panicking job only loses its own answer (its caller sees the reply
                // channel close); the thread, and the pool's size, survive.
                let finished = catch_unwind(AssertUnwindSafe(|| job(&mut memory))).is_ok();
                scratch.give_back(finished.then_some(memory));
                wait = IDLE_RELEASE;
            }
            Err(RecvTimeoutError::Timeout) => wait = scratch.release_if_idle(),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
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
    pub fn new(config: &HashingConfig) -> Result<Self, HashError> {
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
        let scratch = Arc::new(Scratch {
            blocks: params.block_count(),
            kept: Mutex::new(Kept {
                free: Vec::new(),
                last_used: Instant::now(),
            }),
        });
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for n in 0..config.max_concurrency {
            let (queue, scratch) = (queue.clone(), Arc::clone(&scratch));
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || hashing_thread(&queue, &scratch))
                .map_err(|e| HashError::Internal(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(PasswordHasher {
            inner: Arc::new(Inner {
                params,
                permits: config.max_concurrency,
                queue_timeout: config.queue_timeout,
                dummy: OnceCell::new(),
                ewma_micros: AtomicU64::new(0),
                recent: Mutex::new(RecentTimes::default()),
                overshoot_micros: AtomicU64::new(0),
                hold_micros: AtomicU64::new(0),
                places: Arc::new(Semaphore::new(config.max_concurrency * PLACES_PER_THREAD)),
                queued: AtomicUsize::new(0),
                running: AtomicUsize::new(0),
                peak_running: AtomicUsize::new(0),
                jobs,
                jobs_pending: AtomicUsize::new(0),
                hop_micros: AtomicU64::new(0),
            }),
        })
    }

    /// How many hashes may run at once (the hashing threads).
    pub fn permits(&self) -> usize {
        self.inner.permits
    }

    /// Places in the pool: work that may hold one at once, running or next.
    pub fn places(&self) -> usize {
        self.inner.permits * PLACES_PER_THREAD
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
        // Parsed before a place is taken: a malformed hash costs none.
        let (parsed, params) = parse_stored(phc).ok_or(HashError::InvalidHash)?;
        self.slot()
            .await?
            .verify_parsed(password, parsed, params)
            .await
    }

    /// Verifies against a dummy hash with the configured parameters and always answers
    /// "no match": an unknown login costs what a known one does. The dummy is made on first
    /// use; call [`Self::warm_up`] at start-up so no request pays for it.
    pub async fn verify_dummy(&self, password: &NormalisedPassword) -> Result<(), HashError> {
        self.reserve().await?.verify_dummy(password).await
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

    /// Typical time of one hash or verify on its thread (moving average of recent ones), for
    /// padding answers that skip hashing and for telling how fast places come free. Zero
    /// until the first hash: call [`Self::warm_up`] at start.
    pub fn typical_verify_duration(&self) -> Duration {
        self.inner.typical()
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
        self.slot()
            .await?
            .run(move |memory| hash_with(memory, &password, params))
            .await
    }

    /// A place in the pool for the caller: waits for one, and answers Busy when none came
    /// free within `queue_timeout` (or none would, see [`Self::would_wait_too_long`]).
    async fn slot(&self) -> Result<Slot, HashError> {
        let inner = &self.inner;
        if self.would_wait_too_long() {
            pool_metrics().refused.add(1, &[]);
            return Err(HashError::Busy);
        }
        let place = {
            let _waiting = Waiting::new(inner);
            let acquire = Arc::clone(&inner.places).acquire_owned();
            tokio::time::timeout(inner.queue_timeout, acquire).await
        };
        match place {
            Ok(Ok(permit)) => Ok(Slot {
                place: Place {
                    inner: Arc::clone(inner),
                    _permit: permit,
                    taken: Instant::now(),
                },
            }),
            Ok(Err(_closed)) => Err(HashError::Internal(
                "the hashing pool has stopped".to_owned(),
            )),
            Err(_elapsed) => {
                pool_metrics().refused.add(1, &[]);
                Err(HashError::Busy)
            }
        }
    }

    /// Whether work asking for a place now would typically still be waiting when its
    /// `queue_timeout` is over: every place comes free once per typical hold, so every
    /// `places` waiters ahead of it cost one hold. Such work is refused before it waits, so a
    /// flood holds no queue of requests that will be refused anyway (each holding its
    /// connection's buffers) and its callers hear at once rather than after the timeout.
    /// The estimate is of holds, not hashes: a flood of answers that skip hashing (a locked
    /// account) turns places over in moments, and is no reason to refuse anyone. Until the
    /// first place is let go nothing is refused here.
    fn would_wait_too_long(&self) -> bool {
        let ahead = self.inner.queued.load(Ordering::Relaxed) / self.places();
        Duration::from_micros(self.inner.hold_micros.load(Ordering::Relaxed))
            .saturating_mul(u32::try_from(ahead).unwrap_or(u32::MAX))
            > self.inner.queue_timeout
    }

    /// A place in the pool for one password check, taken before anything about the check is
    /// decided: a caller that must know the check will run before it counts an attempt (the
    /// lock-out) reserves first, so a check refused for load is refused before it counts,
    /// and whatever the account's state. A check holding a place is never refused for load.
    pub async fn reserve(&self) -> Result<Slot, HashError> {
        self.dummy_hash().await?;
        self.slot().await
    }
}

/// What operators watch of the pool: work waiting for a place, hashes running, work turned
/// away for load.
struct PoolMetrics {
    queued: UpDownCounter<i64>,
    running: UpDownCounter<i64>,
    refused: Counter<u64>,
}

fn pool_metrics() -> &'static PoolMetrics {
    static METRICS: std::sync::OnceLock<PoolMetrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| PoolMetrics {
        queued: metrics::up_down(
            "identity.hashing.queued",
            "Password checks and hashes waiting for a place in the hashing pool",
        ),
        running: metrics::up_down("identity.hashing.running", "Hashes running now"),
        refused: metrics::counter(
            "identity.hashing.refused",
            "Password checks refused because no place in the hashing pool came free in time",
        ),
    })
}

/// Counts a caller among those waiting for a place for as long as it waits, however the
/// wait ends (a place, the timeout, the caller gone).
struct Waiting<'a>(&'a Inner);

impl<'a> Waiting<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner.queued.fetch_add(1, Ordering::Relaxed);
        pool_metrics().queued.add(1, &[]);
        Waiting(inner)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
        pool_metrics().queued.add(-1, &[]);
    }
}

/// A place in the pool, taken by [`PasswordHasher::reserve`]: its work will be hashed.
/// Dropping it unused frees the place.
pub struct Slot {
    place: Place,
}

/// A place held; letting it go (its work run or skipped, or its slot dropped unused) frees
/// it and times how long it was held.
struct Place {
    inner: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
    taken: Instant,
}

impl Drop for Place {
    fn drop(&mut self) {
        ewma_update(&self.inner.hold_micros, micros(self.taken.elapsed()).max(1));
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").finish_non_exhaustive()
    }
}

impl Slot {
    /// [`PasswordHasher::verify`] on this slot's thread.
    pub async fn verify(self, password: &NormalisedPassword, phc: &str) -> Result<bool, HashError> {
        let (parsed, params) = parse_stored(phc).ok_or(HashError::InvalidHash)?;
        self.verify_parsed(password, parsed, params).await
    }

    async fn verify_parsed(
        self,
        password: &NormalisedPassword,
        parsed: PasswordHash,
        params: Params,
    ) -> Result<bool, HashError> {
        let password = password.as_bytes().to_vec();
        self.run(move |memory| Ok(verify_with(memory, &password, &parsed, params)))
            .await
    }

    /// [`PasswordHasher::verify_dummy`] on this slot's thread.
    pub async fn verify_dummy(self, password: &NormalisedPassword) -> Result<(), HashError> {
        let dummy = self
            .place
            .inner
            .dummy
            .get()
            .cloned()
            .ok_or_else(|| HashError::Internal("the dummy hash is not made".to_owned()))?;
        // The result is meaningless; only the work matters.
        let _ = self.verify(password, &dummy).await?;
        Ok(())
    }

    /// Answers as late as a verify on this place would, without hashing (SECURITY 4): waits
    /// its turn at a hashing thread as a verify does (behind the same queue; when a thread is
    /// free the turn is now, and the way to a thread and back that a verify makes is waited
    /// instead), then as long as a recent verify took (drawn at random from the last
    /// [`RECENT_TIMES`]). Sleeping costs no CPU, so a flood of answers that skip hashing stays
    /// cheap; the place is let go once the turn comes. The timer wakes late (granularity,
    /// scheduling); how late is learnt from earlier waits and asked for less, so the wait
    /// itself, not only the request, lasts as long as the verify drawn.
    pub async fn wait_like_verify(self) -> Result<(), HashError> {
        let inner = Arc::clone(&self.place.inner);
        let hop = if inner.thread_free_with(inner.jobs_pending.load(Ordering::SeqCst)) {
            // A thread is free, so a verify sent now would start at once: the turn is now.
            // Waking a thread only to hand the turn back cost two context switches an answer,
            // a good part of a flood of them; the way there and back a verify makes is waited
            // instead.
            drop(self);
            Duration::from_micros(inner.hop_micros.load(Ordering::Relaxed))
        } else {
            self.on_thread(|_, _| ()).await?;
            Duration::ZERO
        };
        let target = inner.drawn_verify().saturating_add(hop);
        let early = Duration::from_micros(inner.overshoot_micros.load(Ordering::Relaxed));
        let asked = target.saturating_sub(early);
        let started = Instant::now();
        tokio::time::sleep(asked).await;
        let late = started.elapsed().saturating_sub(asked);
        if !target.is_zero() {
            ewma_update(&inner.overshoot_micros, micros(late));
        }
        Ok(())
    }

    /// Runs argon2 work on the next free thread, counted and timed as hashing.
    async fn run<T, F>(self, work: F) -> Result<T, HashError>
    where
        F: FnOnce(&mut Vec<Block>) -> Result<T, HashError> + Send + 'static,
        T: Send + 'static,
    {
        self.on_thread(move |inner, memory| {
            let now_running = inner.running.fetch_add(1, Ordering::SeqCst) + 1;
            inner.peak_running.fetch_max(now_running, Ordering::SeqCst);
            pool_metrics().running.add(1, &[]);
            let started = Instant::now();
            let result = work(memory);
            inner.record(started.elapsed());
            pool_metrics().running.add(-1, &[]);
            inner.running.fetch_sub(1, Ordering::SeqCst);
            result
        })
        .await?
    }

    /// Queues `work` for the next free hashing thread and waits for its answer. The place is
    /// kept until the work has run or been skipped, so queued work never exceeds the places.
    async fn on_thread<T, F>(self, work: F) -> Result<T, HashError>
    where
        F: FnOnce(&Inner, &mut Vec<Block>) -> T + Send + 'static,
        T: Send + 'static,
    {
        let Slot { place } = self;
        let inner = Arc::clone(&place.inner);
        let (reply, answer) = oneshot::channel();
        let sent = Instant::now();
        let pending = PendingJob::new(&inner);
        let found_free = pending.found_free;
        // The place goes with the job, and is let go when the job has run or been skipped.
        let job: Job = Box::new(move |memory| {
            // The caller gave up (deadline, disconnect) before its turn: nothing to do.
            if reply.is_closed() {
                return;
            }
            let began = Instant::now();
            let out = work(&place.inner, memory);
            let worked = began.elapsed();
            // Counted out before the answer leaves: its caller finds the thread free.
            drop(pending);
            // The caller may be gone by now; then nobody wants the answer.
            let _ = reply.send((out, worked));
        });
        inner
            .jobs
            .send(job)
            .map_err(|_| HashError::Internal("the hashing threads have stopped".to_owned()))?;
        let (out, worked) = answer
            .await
            .map_err(|_| HashError::Internal("a hashing thread failed".to_owned()))?;
        if found_free {
            ewma_update(
                &inner.hop_micros,
                micros(sent.elapsed().saturating_sub(worked)).max(1),
            );
        }
        Ok(out)
    }
}

/// A job counted among those sent to the threads until it has run, been skipped, or been
/// dropped unrun.
struct PendingJob {
    inner: Arc<Inner>,
    /// Fewer jobs than threads were pending when it was sent: it started at once.
    found_free: bool,
}

impl PendingJob {
    fn new(inner: &Arc<Inner>) -> Self {
        let before = inner.jobs_pending.fetch_add(1, Ordering::SeqCst);
        PendingJob {
            inner: Arc::clone(inner),
            found_free: inner.thread_free_with(before),
        }
    }
}

impl Drop for PendingJob {
    fn drop(&mut self) {
        self.inner.jobs_pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether `password` matches `parsed` (whose `params` were read from it), computed in
/// `memory`, which is grown as needed. Mirrors `Argon2::verify_password`: a missing salt or
/// output, a bad version or unusable parameters are a non-match, as are argon2 errors.
fn verify_with(
    memory: &mut Vec<Block>,
    password: &[u8],
    parsed: &PasswordHash,
    params: Params,
) -> bool {
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Some(memory) = blocks_for(memory, &params) else {
        return false;
    };
    let mut buffer = [0u8; Output::MAX_LENGTH];
    let Some(out) = buffer.get_mut(..expected.len()) else {
        return false;
    };
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, out, memory)
        .is_ok()
        && bool::from(out.ct_eq(expected.as_bytes()))
}

/// A new argon2id hash of `password` with a fresh salt, computed in `memory` (the hashing
/// thread's scratch memory, as verifies use), as a PHC string.
fn hash_with(
    memory: &mut Vec<Block>,
    password: &[u8],
    params: Params,
) -> Result<String, HashError> {
    let internal = |e: &dyn std::fmt::Display| HashError::Internal(e.to_string());
    let salt_bytes: [u8; SALT_LEN] = rand::random();
    let salt = Salt::new(&salt_bytes).map_err(|e| internal(&e))?;
    let settings = ParamsString::try_from(&params).map_err(|e| internal(&e))?;
    let memory = blocks_for(memory, &params)
        .ok_or_else(|| HashError::Internal("no memory for a password hash".to_owned()))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into_with_memory(password, &salt, &mut out, memory)
        .map_err(|e| internal(&e))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: settings,
        salt: Some(salt),
        hash: Some(Output::new(&out).map_err(|e| internal(&e))?),
    };
    Ok(hash.to_string())
}

/// The first `params.block_count()` blocks of `memory`, grown if it is smaller; `None` when
/// that much memory cannot be had (sizes are bounded by the parameter limits, but a failed
/// allocation is refused rather than aborting). Every block is written before it is read, so
/// what an earlier hash left there does not matter.
fn blocks_for<'m>(memory: &'m mut Vec<Block>, params: &Params) -> Option<&'m mut [Block]> {
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.clear();
        memory.try_reserve_exact(blocks.max(MAPPED_BLOCKS)).ok()?;
        memory.resize(blocks, Block::new());
    }
    memory.get_mut(..blocks)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Moves a moving average (0 = no sample yet) by 1/2^EWMA_SHIFT towards `sample`.
fn ewma_update(average: &AtomicU64, sample: u64) {
    // fetch_update only fails when the closure returns None, which it never does.
    let _ = average.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        Some(if old == 0 {
            sample
        } else if sample >= old {
            old + ((sample - old) >> EWMA_SHIFT)
        } else {
            old - ((old - sample) >> EWMA_SHIFT)
        })
    });
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
        let micros = micros(elapsed).max(1);
        ewma_update(&self.ewma_micros, micros);
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(micros);
    }

    /// Whether a job sent with `pending` others not yet finished starts at once.
    fn thread_free_with(&self, pending: usize) -> bool {
        pending < self.permits
    }

    fn typical(&self) -> Duration {
        Duration::from_micros(self.ewma_micros.load(Ordering::Relaxed))
    }

    /// One of the recent hash/verify times, at random (zero before the first).
    fn drawn_verify(&self) -> Duration {
        let drawn = self
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .draw();
        Duration::from_micros(drawn.unwrap_or(0))
    }
}

/// The last [`RECENT_TIMES`] hash/verify times, in microseconds.
#[derive(Debug, Default)]
struct RecentTimes {
    micros: Vec<u64>,
    /// Where the next one goes once all are kept.
    next: usize,
}

impl RecentTimes {
    fn push(&mut self, micros: u64) {
        if self.micros.len() < RECENT_TIMES {
            self.micros.push(micros);
        } else if let Some(oldest) = self.micros.get_mut(self.next) {
            *oldest = micros;
        }
        self.next = (self.next + 1) % RECENT_TIMES;
    }

    fn draw(&self) -> Option<u64> {
        self.micros.choose(&mut rand::rng()).copied()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordHasher as _;

    fn pw(s: &str) -> NormalisedPassword {
        NormalisedPassword::from_presented(s)
    }

    fn hasher(permits: usize, queue_timeout: Duration) -> PasswordHasher {
        PasswordHasher::new(&HashingConfig {
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
        // Made in the pool's scratch memory, the hash is still the argon2 crate's own.
        use argon2::password_hash::PasswordVerifier as _;
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"Kx7#pLm2", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"Kx7#pLm3", &parsed)
                .is_err()
        );
    }

    /// Every place taken and a hash typically 100 ms on the one thread: work with 4 waiters
    /// ahead of it would wait ~400 ms, past its 300 ms, so it is refused at once rather than
    /// waiting for nothing. Work that can have a place in time still waits.
    #[tokio::test(flavor = "multi_thread")]
    async fn work_that_would_wait_too_long_is_refused_before_it_queues() {
        let h = hasher(1, Duration::from_millis(300));
        // Places held 400 ms each: a waiter for every place ahead costs one hold, 400 ms.
        ewma_update(&h.inner.hold_micros, 400_000);
        let mut held = Vec::new();
        for _ in 0..h.places() {
            held.push(h.slot().await.unwrap());
        }
        let waiters: Vec<_> = (0..h.places())
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.slot().await.map(drop) })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.inner.queued.load(Ordering::Relaxed) < h.places() {
            assert!(Instant::now() < deadline, "the waiters never queued");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        assert!(matches!(h.slot().await, Err(HashError::Busy)));
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(h.inner.queued.load(Ordering::Relaxed), h.places());
        drop(held);
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        assert_eq!(h.inner.queued.load(Ordering::Relaxed), 0);
        assert!(h.slot().await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn places_let_go_quickly_turn_nobody_away_early() {
        let h = hasher(1, Duration::from_millis(300));
        // Hashes take 100 ms, but places have been let go at once (answers that skip hashing):
        // four waiters ahead are no reason to refuse a newcomer.
        h.inner.record(Duration::from_millis(100));
        for _ in 0..4 {
            drop(h.slot().await.unwrap());
        }
        let mut held = Vec::new();
        for _ in 0..h.places() {
            held.push(h.slot().await.unwrap());
        }
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.slot().await.map(drop) })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.inner.queued.load(Ordering::Relaxed) < 4 {
            assert!(Instant::now() < deadline, "the waiters never queued");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let newcomer = {
            let h = h.clone();
            tokio::spawn(async move { h.slot().await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        newcomer.await.unwrap().unwrap();
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
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

    /// Verifies reuse one thread's memory across hashes of different settings and variants;
    /// the answers must be the argon2 crate's own.
    #[tokio::test(flavor = "multi_thread")]
    async fn reused_memory_answers_like_the_argon2_crate() {
        use argon2::password_hash::PasswordVerifier as _;
        let h = hasher(1, Duration::from_secs(30));
        let salt = [9u8; 16];
        let make = |algorithm, m_cost, password: &[u8]| {
            let params = Params::new(m_cost, 2, 1, None).unwrap();
            Argon2::new(algorithm, Version::V0x13, params)
                .hash_password_with_salt(password, &salt)
                .unwrap()
                .to_string()
        };
        let hashes = [
            h.hash(&pw("Kx7#pLm2")).await.unwrap(),
            make(Algorithm::Argon2id, 24_576, b"Kx7#pLm2"),
            make(Algorithm::Argon2i, MIN_M_COST_KIB, b"Kx7#pLm2"),
            make(Algorithm::Argon2d, MIN_M_COST_KIB, b"other"),
        ];
        for _round in 0..2 {
            for phc in &hashes {
                for candidate in ["Kx7#pLm2", "other", "Kx7#pLm3", ""] {
                    let expected = Argon2::default()
                        .verify_password(candidate.as_bytes(), &PasswordHash::new(phc).unwrap())
                        .is_ok();
                    let got = h.verify(&pw(candidate), phc).await.unwrap();
                    assert_eq!(got, expected, "{phc} / {candidate:?}");
                }
            }
        }
        // The configured size is kept between verifies (the last hash verified has it), in a
        // reservation past glibc's mmap-threshold ceiling, so it is unmapped when freed.
        let (kept, reserved) = {
            let (reply, answer) = oneshot::channel();
            h.inner
                .jobs
                .send(Box::new(move |memory: &mut Vec<Block>| {
                    let _ = reply.send((memory.len(), memory.capacity()));
                }))
                .unwrap();
            answer.await.unwrap()
        };
        assert_eq!(kept, h.inner.params.block_count());
        assert!(reserved * Block::SIZE > 32 << 20, "{reserved} blocks");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn padding_waits_like_a_verify() {
        let h = hasher(1, Duration::from_secs(30));
        h.warm_up().await.unwrap();
        let typical = h.typical_verify_duration();
        for _ in 0..20 {
            h.reserve().await.unwrap().wait_like_verify().await.unwrap();
        }
        let slot = h.reserve().await.unwrap();
        let started = Instant::now();
        slot.wait_like_verify().await.unwrap();
        let waited = started.elapsed();
        // The timer's lateness is learnt and subtracted: the wait lands near the estimate,
        // not a tick after it. Loose upper bound: CI machines are noisy.
        assert!(waited >= typical / 2, "{waited:?} vs {typical:?}");
        assert!(
            waited <= typical + Duration::from_millis(20),
            "{waited:?} vs {typical:?}"
        );
    }

    /// An answer that skips hashing waits behind work a thread is busy with, as a verify
    /// would; with a thread free it sends no job, and waits the way there and back a verify
    /// makes instead.
    #[tokio::test(flavor = "multi_thread")]
    async fn padding_takes_its_turn_behind_busy_threads_only() {
        let h = hasher(1, Duration::from_secs(30));
        h.warm_up().await.unwrap();
        // The dummy's hash found the thread free: its way there and back is known.
        assert!(h.inner.hop_micros.load(Ordering::Relaxed) > 0);

        let (release, released) = std::sync::mpsc::channel::<()>();
        let blocker = h.reserve().await.unwrap();
        let busy = tokio::spawn(blocker.on_thread(move |_, _| {
            let _ = released.recv();
        }));
        while h.inner.jobs_pending.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let behind = tokio::spawn(h.reserve().await.unwrap().wait_like_verify());
        tokio::time::sleep(h.typical_verify_duration() * 3).await;
        assert!(!behind.is_finished(), "the padding did not wait its turn");
        assert_eq!(h.inner.jobs_pending.load(Ordering::SeqCst), 2);
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        behind.await.unwrap().unwrap();
        assert_eq!(h.inner.jobs_pending.load(Ordering::SeqCst), 0);

        // A thread free: the turn is now, and no job is sent.
        let slot = h.reserve().await.unwrap();
        let free = tokio::spawn(slot.wait_like_verify());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(h.inner.jobs_pending.load(Ordering::SeqCst), 0);
        assert_eq!(h.inner.places.available_permits(), h.places());
        free.await.unwrap().unwrap();
    }

    #[test]
    fn padding_draws_from_the_last_times_only() {
        let mut recent = RecentTimes::default();
        assert_eq!(recent.draw(), None);
        for micros in 1..=u64::try_from(RECENT_TIMES).unwrap() + 10 {
            recent.push(micros);
        }
        assert_eq!(recent.micros.len(), RECENT_TIMES);
        // The ten oldest are gone; every draw is one of the others, and they all come up.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 * RECENT_TIMES {
            let drawn = recent.draw().unwrap();
            assert!(drawn > 10, "{drawn}");
            seen.insert(drawn);
        }
        assert_eq!(seen.len(), RECENT_TIMES);
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
                matches!(PasswordHasher::new(&config), Err(HashError::WeakParams(_))),
                "m={m},t={t},p={p}"
            );
        }
        let absurd = HashingConfig {
            m_cost_kib: MAX_M_COST_KIB + 1,
            ..HashingConfig::default()
        };
        assert!(PasswordHasher::new(&absurd).is_err());
        let no_pool = HashingConfig {
            max_concurrency: 0,
            ..HashingConfig::default()
        };
        assert!(PasswordHasher::new(&no_pool).is_err());
        let stronger = HashingConfig {
            m_cost_kib: 65_536,
            t_cost: 3,
            p_cost: 2,
            ..HashingConfig::default()
        };
        assert!(PasswordHasher::new(&stronger).is_ok());
        assert!(HashingConfig::default().max_concurrency >= 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn needs_rehash_when_settings_change() {
        let baseline = hasher(1, Duration::from_secs(30));
        let old = baseline.hash(&pw("Kx7#pLm2")).await.unwrap();
        let stronger = PasswordHasher::new(&HashingConfig {
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

    /// Places are bounded: with every place held, others wait (and are turned away past
    /// their queue time); a place let go unused is free at once, and work holding one is
    /// hashed after at most the hash ahead of it, however long that one takes.
    #[tokio::test(flavor = "multi_thread")]
    async fn places_are_bounded_and_work_holding_one_is_hashed() {
        let h = hasher(1, Duration::from_millis(200));
        h.warm_up().await.unwrap();
        assert_eq!(h.places(), PLACES_PER_THREAD);
        let mut held: Vec<_> = Vec::new();
        for _ in 0..h.places() {
            held.push(h.reserve().await.unwrap());
        }
        assert!(matches!(h.reserve().await, Err(HashError::Busy)));
        drop(held.pop());
        let dummy = h.inner.dummy.get().cloned().unwrap();
        assert!(
            !h.reserve()
                .await
                .unwrap()
                .verify(&pw("wrong"), &dummy)
                .await
                .unwrap()
        );

        // A verify three queue timeouts long (t_cost/2 typical verifies) holds the thread; the
        // next place's work waits behind it and is still hashed, not refused.
        let typical = h.typical_verify_duration().as_micros().max(1);
        let t_cost = u32::try_from((2 * 600_000 / typical + 1).clamp(8, 64)).unwrap();
        let slow = {
            let params = Params::new(MIN_M_COST_KIB, t_cost, 1, None).unwrap();
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password_with_salt(b"slow", &[3u8; 16])
                .unwrap()
                .to_string()
        };
        let first = held.pop().unwrap();
        let long = tokio::spawn(async move { first.verify(&pw("slow"), &slow).await });
        while h.in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let phc = h.hash(&pw("Kx7#pLm2")).await.unwrap();
        assert!(long.await.unwrap().unwrap());
        assert!(
            h.reserve()
                .await
                .unwrap()
                .verify(&pw("Kx7#pLm2"), &phc)
                .await
                .unwrap()
        );
        h.reserve()
            .await
            .unwrap()
            .verify_dummy(&pw("x"))
            .await
            .unwrap();
        assert_eq!(h.inner.peak_running.load(Ordering::SeqCst), 1);
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
