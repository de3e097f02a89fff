//! What CheckPermission decides on and ListGrants answers from, kept in memory: every
//! organisation's ancestry, and each account's grants (with their organisations). A check or
//! a list answered from here costs no database round trip.
//!
//! Rules, and the consistency they give:
//!
//! 1. **Organisations never go stale.** Once created, an organisation's ancestry (`path`),
//!    name, ODS code and kind never change and it is never removed (0001_init.sql), so an
//!    entry is kept until evicted for space. Only organisations that exist are cached. If
//!    organisations ever become renamable or movable, they must be invalidated like grants.
//! 2. **Grants change only by insert and delete** (GrantRole, RevokeRole, RevokeAllRoles), and
//!    an account's entry is dropped:
//!    - by the instance that made the change, after its commit and before it answers
//!      ([`DecisionCache::invalidate`]), so that instance's next check sees the change;
//!    - on every instance when Postgres delivers the `directory_grants` notification that a
//!      trigger (0002_grants_notify.sql) sends with the commit of any change to `grants`,
//!      however it was made. Between a commit elsewhere and its delivery here (normally
//!      milliseconds) this instance may still answer from the grants it had.
//! 3. **No listener, no cached grants.** The grants cache answers only while this instance
//!    listens on `directory_grants` ([`DecisionCache::listen`]). Notifications sent while
//!    nobody listens are lost, so each (re)subscription starts from an empty cache, and from
//!    the moment the listening connection is found broken until it listens again every check
//!    reads Postgres. A connection that dies silently is found by a ping every
//!    [`LISTENER_PING_EVERY`] (answer within [`LISTENER_PING_TIMEOUT`]): that bounds how long
//!    lost notifications can go unnoticed (about 8 s). Likewise, when Postgres goes away the
//!    cached answers last until the loss is noticed; checks then answer `Unavailable`.
//! 4. **A load never puts back what an invalidation removed.** Each shard of the grants cache
//!    has a generation, bumped by every invalidation in it and by clearing. A load notes the
//!    generation before it reads Postgres and stores its answer only if the generation is
//!    unchanged (and the listener is still up): a read that may predate a change is used for
//!    the one answer it was made for, never cached.
//! 5. **Bounded.** Each shard is a `cqrs_cache::Generations` of at most half its share per
//!    generation: O(1) per call, and accounts in use stay.
//! 6. **Warm from the start.** Each subscription, once listening, loads every organisation
//!    and the grants of up to half as many accounts as the cache holds in two bulk reads
//!    ([`DecisionCache::is_warm`] once done), under the same generation rule as a single
//!    load; meanwhile checks load what they need. So a check rarely pays a round trip, even
//!    for an account not seen since start-up, at the cost of holding those grants in memory
//!    (about 20 MB for 100k accounts with 300k grants).
//!
//! Anything that needs a grant to be current at the instant of a change (revoking it, checking
//! the caller's own grant before a change) reads Postgres, not this cache.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_auth::Role;
use cqrs_cache::Generations;
use cqrs_rules::backoff::Backoff;
use futures::TryStreamExt;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use uuid::Uuid;

use super::{GrantRow, OrganisationRow, StoreError, grants, organisations};
use crate::domain::OrganisationKind;

/// The channel the grants trigger notifies, with an account id (or `*`: every account).
pub const CHANNEL: &str = "directory_grants";
/// `application_name` of the listening connection.
pub const LISTENER_APPLICATION_NAME: &str = "cqrs-directory-grants-listener";
/// How often the listening connection is checked while no notification arrives.
pub const LISTENER_PING_EVERY: Duration = Duration::from_secs(5);
/// A ping not answered within this means the listening connection is lost.
pub const LISTENER_PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Waits between attempts to listen again after a failure.
const RELISTEN_FIRST_WAIT: Duration = Duration::from_millis(200);
const RELISTEN_MAX_WAIT: Duration = Duration::from_secs(5);
const SHARDS: usize = 16;

/// How much the cache keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// Accounts whose grants are kept (0: grants are not cached). An account with three
    /// grants takes about 200 bytes, so the default is about 40 MB when full.
    pub accounts: usize,
    /// Organisations kept (0: not cached); about 150 bytes each.
    pub organisations: usize,
    /// Whether each subscription starts by loading grants and organisations in bulk (rule 6).
    pub preload: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            accounts: 200_000,
            organisations: 50_000,
            preload: true,
        }
    }
}

/// An organisation as decisions and grant answers need it.
#[derive(Debug, PartialEq, Eq)]
pub struct Organisation {
    pub id: Uuid,
    /// Itself first, then its parent, … the root.
    pub path: Box<[Uuid]>,
    pub name: Box<str>,
    pub ods_code: Box<str>,
    pub kind: Option<OrganisationKind>,
}

impl Organisation {
    fn of_row(row: &OrganisationRow) -> Self {
        Organisation {
            id: row.id,
            path: row.path.clone().into_boxed_slice(),
            name: row.name.as_str().into(),
            ods_code: row.ods_code.as_str().into(),
            kind: row.kind(),
        }
    }

    fn of_grant(row: &GrantRow) -> Self {
        Organisation {
            id: row.organisation_id,
            path: row.organisation_path.clone().into_boxed_slice(),
            name: row.organisation_name.as_str().into(),
            ods_code: row.ods_code.as_str().into(),
            kind: row.organisation_kind(),
        }
    }
}

/// One grant of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountGrant {
    pub id: Uuid,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub organisation: Arc<Organisation>,
}

impl AccountGrant {
    pub fn organisation_id(&self) -> Uuid {
        self.organisation.id
    }
}

/// An account's grants, newest first.
pub type Grants = Arc<[AccountGrant]>;

struct GrantShard {
    entries: Generations<Uuid, Grants>,
    /// Bumped by every invalidation in this shard (rule 4).
    generation: u64,
}

struct Inner {
    grants: Vec<Mutex<GrantShard>>,
    organisations: Vec<Mutex<Generations<Uuid, Arc<Organisation>>>>,
    /// Per shard and generation: 0 turns that cache off.
    grants_size: usize,
    organisations_size: usize,
    /// Whether this instance is subscribed to [`CHANNEL`] (rule 3).
    listening: AtomicBool,
    /// Whether this subscription's bulk load is done (rule 6).
    warm: AtomicBool,
    settings: CacheSettings,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; if something did, the maps are still whole.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Spreads ids over shards. v7 ids start with a timestamp, so both halves are mixed.
fn shard_of(id: &Uuid) -> usize {
    let v = id.as_u128();
    let mixed = (v as u64) ^ ((v >> 64) as u64);
    (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS
}

/// Aborts a background task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The in-memory view CheckPermission decides on. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct DecisionCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("listening", &self.is_listening())
            .finish_non_exhaustive()
    }
}

impl DecisionCache {
    pub fn new(settings: CacheSettings) -> Self {
        DecisionCache {
            inner: Arc::new(Inner {
                grants: (0..SHARDS)
                    .map(|_| {
                        Mutex::new(GrantShard {
                            entries: Generations::new(),
                            generation: 0,
                        })
                    })
                    .collect(),
                organisations: (0..SHARDS)
                    .map(|_| Mutex::new(Generations::new()))
                    .collect(),
                grants_size: settings.accounts / SHARDS / 2,
                organisations_size: settings.organisations / SHARDS / 2,
                listening: AtomicBool::new(false),
                warm: AtomicBool::new(false),
                settings,
            }),
        }
    }

    /// Whether cached grants are in use: this instance listens for changes (rule 3).
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::Acquire)
    }

    /// Whether the current subscription's bulk load is done (rule 6).
    pub fn is_warm(&self) -> bool {
        self.inner.warm.load(Ordering::Acquire)
    }

    fn grant_shard(&self, account: &Uuid) -> Option<&Mutex<GrantShard>> {
        self.inner.grants.get(shard_of(account))
    }

    /// The cached grants of `account`, or the shard generation a load must present to store
    /// its answer.
    fn cached_grants(&self, account: &Uuid) -> Result<Grants, u64> {
        let size = self.inner.grants_size;
        let Some(shard) = self.grant_shard(account) else {
            return Err(0);
        };
        let mut shard = lock(shard);
        let (found, dropped) = shard.entries.get(account, size);
        let generation = shard.generation;
        drop(shard);
        drop(dropped);
        count_lookup("grants", found.is_some());
        found.ok_or(generation)
    }

    /// Stores a load's answer unless an invalidation happened since it began (rule 4) or the
    /// listener is down (rule 3).
    fn store_grants(&self, account: Uuid, grants: Grants, seen: u64) {
        let size = self.inner.grants_size;
        if size == 0 {
            return;
        }
        let Some(shard) = self.grant_shard(&account) else {
            return;
        };
        let mut shard = lock(shard);
        if shard.generation != seen || !self.is_listening() {
            return;
        }
        let dropped = shard.entries.insert(account, grants, size);
        drop(shard);
        drop(dropped);
    }

    fn cached_organisation(&self, id: &Uuid) -> Option<Arc<Organisation>> {
        let size = self.inner.organisations_size;
        if size == 0 {
            return None;
        }
        let mut shard = lock(self.inner.organisations.get(shard_of(id))?);
        let (found, dropped) = shard.get(id, size);
        drop(shard);
        drop(dropped);
        count_lookup("organisations", found.is_some());
        found
    }

    fn store_organisation(&self, organisation: Arc<Organisation>) {
        let size = self.inner.organisations_size;
        if size == 0 {
            return;
        }
        let Some(shard) = self.inner.organisations.get(shard_of(&organisation.id)) else {
            return;
        };
        let mut shard = lock(shard);
        let dropped = shard.insert(organisation.id, organisation, size);
        drop(shard);
        drop(dropped);
    }

    /// The organisation of a grant row, shared with the organisation cache.
    fn organisation_of(&self, row: &GrantRow) -> Arc<Organisation> {
        if let Some(cached) = self.cached_organisation(&row.organisation_id) {
            return cached;
        }
        let organisation = Arc::new(Organisation::of_grant(row));
        self.store_organisation(organisation.clone());
        organisation
    }

    fn to_grants(&self, rows: &[GrantRow]) -> Grants {
        rows.iter()
            .filter_map(|row| {
                Some(AccountGrant {
                    id: row.id,
                    // The table only admits known roles.
                    role: row.role()?,
                    created_at: row.created_at,
                    organisation: self.organisation_of(row),
                })
            })
            .collect()
    }

    /// Every grant of `account`, newest first.
    pub async fn grants(&self, pool: &PgPool, account: Uuid) -> Result<Grants, StoreError> {
        match self.cached_grants(&account) {
            Ok(grants) => Ok(grants),
            Err(seen) => {
                let rows = grants::all_for_account(pool, account).await?;
                let grants = self.to_grants(&rows);
                self.store_grants(account, grants.clone(), seen);
                Ok(grants)
            }
        }
    }

    /// The organisation, `None` if it does not exist.
    pub async fn organisation(
        &self,
        pool: &PgPool,
        id: Uuid,
    ) -> Result<Option<Arc<Organisation>>, StoreError> {
        if let Some(found) = self.cached_organisation(&id) {
            return Ok(Some(found));
        }
        let Some(row) = organisations::get(pool, id).await? else {
            return Ok(None);
        };
        let organisation = Arc::new(Organisation::of_row(&row));
        self.store_organisation(organisation.clone());
        Ok(Some(organisation))
    }

    /// The target organisation and the account's grants, from memory where possible and in
    /// one round trip otherwise. `None` when the target does not exist.
    pub async fn for_decision(
        &self,
        pool: &PgPool,
        account: Uuid,
        target: Uuid,
    ) -> Result<Option<(Arc<Organisation>, Grants)>, StoreError> {
        match (
            self.cached_organisation(&target),
            self.cached_grants(&account),
        ) {
            (Some(organisation), Ok(grants)) => Ok(Some((organisation, grants))),
            (Some(organisation), Err(seen)) => {
                let rows = grants::all_for_account(pool, account).await?;
                let grants = self.to_grants(&rows);
                self.store_grants(account, grants.clone(), seen);
                Ok(Some((organisation, grants)))
            }
            (None, Ok(grants)) => Ok(self
                .organisation(pool, target)
                .await?
                .map(|organisation| (organisation, grants))),
            (None, Err(seen)) => {
                let Some((row, rows)) = grants::for_decision(pool, account, target).await? else {
                    return Ok(None);
                };
                let organisation = Arc::new(Organisation::of_row(&row));
                self.store_organisation(organisation.clone());
                let grants = self.to_grants(&rows);
                self.store_grants(account, grants.clone(), seen);
                Ok(Some((organisation, grants)))
            }
        }
    }

    /// Forgets `account`'s grants (rule 2); call after the commit of a change to them.
    pub fn invalidate(&self, account: Uuid) {
        let Some(shard) = self.grant_shard(&account) else {
            return;
        };
        let mut shard = lock(shard);
        shard.generation = shard.generation.wrapping_add(1);
        shard.entries.remove(&account);
    }

    /// Forgets every account's grants. Organisations stay: they never change (rule 1).
    pub fn clear(&self) {
        for shard in &self.inner.grants {
            let mut shard = lock(shard);
            shard.generation = shard.generation.wrapping_add(1);
            let dropped = shard.entries.take();
            drop(shard);
            drop(dropped);
        }
    }

    /// Accounts whose grants are cached.
    pub fn cached_accounts(&self) -> usize {
        self.inner
            .grants
            .iter()
            .map(|s| lock(s).entries.len())
            .sum()
    }

    fn set_listening(&self, listening: bool) {
        if listening {
            // Whatever was cached before may have missed notifications (rule 3).
            self.clear();
            self.inner.listening.store(true, Ordering::Release);
        } else {
            self.inner.listening.store(false, Ordering::Release);
            self.inner.warm.store(false, Ordering::Release);
            self.clear();
        }
    }

    /// Rule 6: every organisation (up to the bound), then the grants of up to half as many
    /// accounts as the cache holds (the rest of the room is for accounts loaded on demand;
    /// half also keeps every shard below the size at which it would drop entries). Returns
    /// the number of accounts stored.
    async fn preload(&self, pool: &PgPool) -> Result<usize, StoreError> {
        // Noted before reading, as a single load does (rule 4).
        let seen: Vec<u64> = self
            .inner
            .grants
            .iter()
            .map(|s| lock(s).generation)
            .collect();
        let limit = i64::try_from(self.inner.settings.organisations).unwrap_or(i64::MAX);
        let mut organisations = sqlx::query_as::<_, OrganisationRow>(
            "SELECT id, kind, ods_code, name, parent_id, path, multi_level_approval, \
                    created_at, updated_at \
             FROM organisations LIMIT $1",
        )
        .bind(limit)
        .fetch(pool);
        while let Some(row) = organisations.try_next().await? {
            self.store_organisation(Arc::new(Organisation::of_row(&row)));
        }
        drop(organisations);

        // In account order (the unique index's), so each account's grants arrive together and
        // are stored as soon as they are complete: no second copy of the whole table.
        let most = self.inner.settings.accounts / 2;
        let mut rows = sqlx::query_as::<_, (Uuid, Uuid, Uuid, String, DateTime<Utc>)>(
            "SELECT id, account_id, organisation_id, role, created_at FROM grants \
             ORDER BY account_id",
        )
        .fetch(pool);
        let mut stored = 0;
        // The account being read, its grants, and whether all of them could be built.
        let mut current: Option<(Uuid, Vec<AccountGrant>, bool)> = None;
        while let Some((id, account, organisation, role, created_at)) = rows.try_next().await? {
            if current.as_ref().is_some_and(|(a, _, _)| *a != account) {
                if let Some((done, grants, complete)) = current.take()
                    && complete
                    && self.store_preloaded(done, grants, &seen)
                {
                    stored += 1;
                }
                if stored >= most {
                    return Ok(stored);
                }
            }
            let (_, grants, complete) = current.get_or_insert_with(|| (account, Vec::new(), true));
            // A grant whose organisation is not cached leaves the account to on-demand loads.
            match (self.cached_organisation(&organisation), Role::parse(&role)) {
                (Some(organisation), Some(role)) => grants.push(AccountGrant {
                    id,
                    role,
                    created_at,
                    organisation,
                }),
                _ => *complete = false,
            }
        }
        if let Some((done, grants, true)) = current
            && self.store_preloaded(done, grants, &seen)
        {
            stored += 1;
        }
        Ok(stored)
    }

    /// Stores one account's preloaded grants under rule 4, unless an on-demand load stored it
    /// meanwhile (from a read as recent). Returns whether it was stored.
    fn store_preloaded(&self, account: Uuid, mut grants: Vec<AccountGrant>, seen: &[u64]) -> bool {
        // Newest first, as `grants::all_for_account` answers.
        grants.sort_unstable_by_key(|g| std::cmp::Reverse((g.created_at, g.id)));
        let index = shard_of(&account);
        let (Some(shard), Some(seen)) = (self.inner.grants.get(index), seen.get(index)) else {
            return false;
        };
        let mut shard = lock(shard);
        // A change in this shard since the read began, or the listener lost (rule 3).
        if shard.generation != *seen || !self.is_listening() {
            return false;
        }
        if shard.entries.peek(&account).is_some() {
            return false;
        }
        let dropped = shard
            .entries
            .insert(account, grants.into(), self.inner.grants_size);
        drop(shard);
        drop(dropped);
        true
    }

    /// Handles one notification's payload: an account id, or anything else meaning "every
    /// account".
    fn notified(&self, payload: &str) {
        match Uuid::parse_str(payload) {
            Ok(account) => self.invalidate(account),
            Err(_) => self.clear(),
        }
    }

    /// Listens for changes to grants on a connection of its own (not one of `pool`'s, which
    /// stays whole for queries) with `pool`'s settings, and evicts what they name. Grants are
    /// cached only while this runs and its connection is healthy; it reconnects by itself and
    /// runs until the task is dropped or aborted.
    pub async fn listen(self, pool: PgPool) {
        let queries = pool.clone();
        if self.inner.grants_size == 0 {
            return;
        }
        // However this future ends (aborted, its runtime shutting down), nobody listens any
        // more: stop answering from cached grants (rule 3).
        struct Unsubscribed(DecisionCache);
        impl Drop for Unsubscribed {
            fn drop(&mut self) {
                self.0.set_listening(false);
            }
        }
        let _unsubscribed = Unsubscribed(self.clone());
        // Named, so operators (and tests) can tell it apart in `pg_stat_activity`.
        let options = (*pool.connect_options())
            .clone()
            .application_name(LISTENER_APPLICATION_NAME);
        let own = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(LISTENER_PING_TIMEOUT)
            .connect_lazy_with(options);
        let backoff = Backoff::new(RELISTEN_FIRST_WAIT, RELISTEN_MAX_WAIT);
        let mut failures = 0;
        loop {
            let error = self.listen_once(&own, &queries).await;
            if self.is_listening() {
                // It had worked: start again from the shortest wait.
                failures = 0;
            }
            failures += 1;
            self.set_listening(false);
            tracing::warn!(error = %error, "not listening for grant changes; permission checks read the database until listening again");
            tokio::time::sleep(backoff.delay(failures)).await;
        }
    }

    /// One subscription; returns why it ended.
    async fn listen_once(&self, own: &PgPool, queries: &PgPool) -> sqlx::Error {
        let mut listener = match PgListener::connect_with(own).await {
            Ok(listener) => listener,
            Err(e) => return e,
        };
        // Reconnecting is ours to do, so that the cache is cleared in between (rule 3).
        listener.eager_reconnect(false);
        if let Err(e) = listener.listen(CHANNEL).await {
            return e;
        }
        self.set_listening(true);
        tracing::debug!(channel = CHANNEL, "listening for grant changes");
        // The bulk load runs beside the listening (so invalidations keep arriving) and stops
        // with it.
        let _preload = self.inner.settings.preload.then(|| {
            let (cache, pool) = (self.clone(), queries.clone());
            let task = tokio::spawn(async move {
                let started = std::time::Instant::now();
                match cache.preload(&pool).await {
                    Ok(accounts) => {
                        cache.inner.warm.store(true, Ordering::Release);
                        tracing::info!(
                            accounts,
                            elapsed_ms = started.elapsed().as_millis(),
                            "permission cache loaded"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot preload the permission cache; it fills as checks need it")
                    }
                }
            });
            AbortOnDrop(task.abort_handle())
        });
        loop {
            match tokio::time::timeout(LISTENER_PING_EVERY, listener.try_recv()).await {
                Ok(Ok(Some(notification))) => self.notified(notification.payload()),
                Ok(Ok(None)) => {
                    return sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "listening connection lost",
                    ));
                }
                Ok(Err(e)) => return e,
                // Quiet for a while: make sure the connection still carries notifications.
                // `try_recv` is cancel-safe, and notifications arriving during the ping are
                // buffered for the next call.
                Err(_) => {
                    let ping = sqlx::query("SELECT 1").execute(&mut listener);
                    match tokio::time::timeout(LISTENER_PING_TIMEOUT, ping).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return e,
                        Err(_) => {
                            return sqlx::Error::Io(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "listening connection did not answer a ping",
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// Counts a lookup in one of the caches (`directory.cache.lookups`, by cache and hit/miss):
/// the hit rate says whether the caches are sized right.
fn count_lookup(cache: &'static str, hit: bool) {
    static LOOKUPS: std::sync::OnceLock<cqrs_runtime::metrics::Counter<u64>> =
        std::sync::OnceLock::new();
    LOOKUPS
        .get_or_init(|| {
            cqrs_runtime::metrics::counter(
                "directory.cache.lookups",
                "Lookups in the grant and organisation caches, by cache and result (hit, miss)",
            )
        })
        .add(
            1,
            &[
                cqrs_runtime::metrics::KeyValue::new("cache", cache),
                cqrs_runtime::metrics::KeyValue::new("result", if hit { "hit" } else { "miss" }),
            ],
        );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn org(id: u128) -> Arc<Organisation> {
        Arc::new(Organisation {
            id: Uuid::from_u128(id),
            path: vec![Uuid::from_u128(id)].into_boxed_slice(),
            name: "Org".into(),
            ods_code: "A1".into(),
            kind: None,
        })
    }

    fn grants_of(id: u128) -> Grants {
        vec![AccountGrant {
            id: Uuid::from_u128(id),
            role: Role::PracticeUser,
            created_at: DateTime::from_timestamp(1_750_000_000, 0).unwrap(),
            organisation: org(1),
        }]
        .into()
    }

    fn listening(settings: CacheSettings) -> DecisionCache {
        let cache = DecisionCache::new(settings);
        cache.set_listening(true);
        cache
    }

    #[test]
    fn a_load_that_began_before_an_invalidation_is_not_stored() {
        let cache = listening(CacheSettings::default());
        let account = Uuid::new_v4();
        let seen = cache.cached_grants(&account).unwrap_err();
        // A change commits and is invalidated while the load is reading.
        cache.invalidate(account);
        cache.store_grants(account, grants_of(1), seen);
        assert!(cache.cached_grants(&account).is_err());
        // A load that began afterwards is stored.
        let seen = cache.cached_grants(&account).unwrap_err();
        cache.store_grants(account, grants_of(2), seen);
        assert_eq!(cache.cached_grants(&account).unwrap(), grants_of(2));
        // Invalidating another account in the same shard also refuses (conservatively).
        let seen = cache.cached_grants(&Uuid::new_v4()).unwrap_err();
        cache.clear();
        cache.store_grants(account, grants_of(3), seen);
        assert!(cache.cached_grants(&account).is_err());
    }

    #[test]
    fn nothing_is_cached_while_not_listening() {
        let cache = DecisionCache::new(CacheSettings::default());
        let account = Uuid::new_v4();
        let seen = cache.cached_grants(&account).unwrap_err();
        cache.store_grants(account, grants_of(1), seen);
        assert!(cache.cached_grants(&account).is_err());

        cache.set_listening(true);
        let seen = cache.cached_grants(&account).unwrap_err();
        cache.store_grants(account, grants_of(1), seen);
        assert!(cache.cached_grants(&account).is_ok());
        // Losing the listener empties the cache, and a load begun before cannot refill it.
        let seen = cache.cached_grants(&Uuid::new_v4()).unwrap_err();
        cache.set_listening(false);
        assert!(cache.cached_grants(&account).is_err());
        cache.store_grants(account, grants_of(1), seen);
        assert_eq!(cache.cached_accounts(), 0);
    }

    #[test]
    fn notifications_name_an_account_or_everything() {
        let cache = listening(CacheSettings::default());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for account in [a, b] {
            let seen = cache.cached_grants(&account).unwrap_err();
            cache.store_grants(account, grants_of(1), seen);
        }
        cache.notified(&a.to_string());
        assert!(cache.cached_grants(&a).is_err());
        assert!(cache.cached_grants(&b).is_ok());
        cache.notified("*");
        assert_eq!(cache.cached_accounts(), 0);
    }

    #[test]
    fn bounded_and_keeps_what_is_used() {
        let settings = CacheSettings {
            accounts: 320,
            organisations: 320,
            preload: false,
        };
        let cache = listening(settings);
        let hot = Uuid::new_v4();
        let seen = cache.cached_grants(&hot).unwrap_err();
        cache.store_grants(hot, grants_of(1), seen);
        for i in 0..20_000u128 {
            let account =
                Uuid::from_u128(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835));
            let seen = cache.cached_grants(&account).unwrap_err();
            cache.store_grants(account, grants_of(i), seen);
            cache.store_organisation(org(i));
            assert!(cache.cached_accounts() <= settings.accounts);
            if i % 10 == 0 {
                assert!(cache.cached_grants(&hot).is_ok(), "after {i}");
            }
        }
        let organisations: usize = cache
            .inner
            .organisations
            .iter()
            .map(|s| lock(s).len())
            .sum();
        assert!(organisations <= settings.organisations);
    }

    #[test]
    fn zero_sizes_cache_nothing() {
        let cache = listening(CacheSettings {
            accounts: 0,
            organisations: 0,
            preload: false,
        });
        let account = Uuid::new_v4();
        let seen = cache.cached_grants(&account).unwrap_err();
        cache.store_grants(account, grants_of(1), seen);
        cache.store_organisation(org(1));
        assert!(cache.cached_grants(&account).is_err());
        assert!(cache.cached_organisation(&Uuid::from_u128(1)).is_none());
    }
}
