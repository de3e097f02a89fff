//! Tokens already verified, so a caller presenting the same token again skips the Ed25519
//! check and the claim parsing (about half the cost of a small authenticated RPC).
//!
//! Rules this module keeps:
//! * The key is the SHA-256 of the token string; the token itself is never stored.
//! * Only successful verifications are remembered, with the token's `iat` and `exp`. An entry
//!   answers only while `iat - CLOCK_LEEWAY_SECS <= now < exp`: inside the window in which the
//!   full check would accept the token, and never past its `exp` (the leeway after `exp` is
//!   granted by the full check alone). Outside it the caller verifies in full.
//! * The cache belongs to one [`crate::TokenVerifier`] and its key set, so an entry can only
//!   exist for a kid that verifier accepts; a verifier built with other keys starts empty.
//! * Session liveness is not cached here: the auth layer checks it on every call.
//! * Bounded: each shard is a `cqrs_cache::Generations` of at most half its share per
//!   generation, so the bound holds with O(1) work per call and frequently used tokens stay.

use std::sync::{Mutex, PoisonError};

use cqrs_cache::Generations;

use sha2::{Digest, Sha256};

use crate::principal::Principal;
use crate::token::CLOCK_LEEWAY_SECS;

/// Entries kept per verifier.
pub(crate) const DEFAULT_CAPACITY: usize = 10_000;
const SHARDS: usize = 8;

type Key = [u8; 32];

#[derive(Clone)]
struct Entry {
    principal: Principal,
    iat: i64,
    exp: i64,
}

impl Entry {
    fn usable_at(&self, now: i64) -> bool {
        self.iat <= now.saturating_add(CLOCK_LEEWAY_SECS) && now < self.exp
    }
}

type Shard = Generations<Key, Entry>;

/// A bounded map from SHA-256(token) to the verified caller.
pub(crate) struct TokenCache {
    shards: Vec<Mutex<Shard>>,
    /// Entries per generation per shard (half a shard's share).
    generation_size: usize,
}

/// The cache key of a token.
pub(crate) fn key_of(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    /// A cache of about `capacity` entries (0: nothing is cached).
    pub(crate) fn new(capacity: usize) -> Self {
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            generation_size: capacity / SHARDS / 2,
        }
    }

    fn shard(&self, key: &Key) -> Option<&Mutex<Shard>> {
        if self.generation_size == 0 {
            return None;
        }
        // The key is a SHA-256 digest: any byte is evenly spread.
        self.shards.get(usize::from(key[0]) % SHARDS)
    }

    /// The caller of a token verified before, if its entry may answer at `now` (seconds).
    /// An entry that may not is removed.
    pub(crate) fn get(&self, key: &Key, now: i64) -> Option<Principal> {
        let mut shard = self
            .shard(key)?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Used again: kept through the next rotation; one that may no longer answer goes.
        let (entry, dropped) = shard.get_where(key, self.generation_size, |e| e.usable_at(now));
        let principal = entry.map(|entry| entry.principal);
        drop(shard);
        // Freed outside the lock.
        drop(dropped);
        principal
    }

    /// Remembers a successful verification of the token with this key.
    pub(crate) fn insert(&self, key: Key, principal: Principal, iat: i64, exp: i64) {
        let Some(shard) = self.shard(&key) else {
            return;
        };
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = Entry {
            principal,
            iat,
            exp,
        };
        let dropped = shard.insert(key, entry, self.generation_size);
        drop(shard);
        // Freed outside the lock.
        drop(dropped);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn service(name: &str) -> Principal {
        Principal::Service {
            client_id: name.into(),
        }
    }

    const NOW: i64 = 1_750_000_000;

    #[test]
    fn hit_until_exp_and_only_for_the_same_token() {
        let cache = TokenCache::new(100);
        let key = key_of("token-a");
        assert_eq!(cache.get(&key, NOW), None);
        cache.insert(key, service("a"), NOW, NOW + 60);
        assert_eq!(cache.get(&key, NOW), Some(service("a")));
        assert_eq!(cache.get(&key, NOW + 59), Some(service("a")));
        // Another token, even one differing by a character, misses.
        assert_eq!(cache.get(&key_of("token-b"), NOW), None);
        assert_eq!(cache.get(&key_of("token-a "), NOW), None);
        // At exp the entry no longer answers, and is gone.
        assert_eq!(cache.get(&key, NOW + 60), None);
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.get(&key, NOW), None);
    }

    #[test]
    fn not_before_its_iat_allows() {
        let cache = TokenCache::new(100);
        let key = key_of("t");
        cache.insert(key, service("a"), NOW, NOW + 60);
        assert_eq!(cache.get(&key, NOW - CLOCK_LEEWAY_SECS), Some(service("a")));
        assert_eq!(cache.get(&key, NOW - CLOCK_LEEWAY_SECS - 1), None);
    }

    #[test]
    fn bounded_and_keeps_what_is_used() {
        let capacity = 160;
        let cache = TokenCache::new(capacity);
        let hot = key_of("hot");
        cache.insert(hot, service("hot"), NOW, NOW + 60);
        for i in 0..10_000 {
            cache.insert(key_of(&format!("t{i}")), service("x"), NOW, NOW + 60);
            assert!(cache.len() <= capacity, "{} entries", cache.len());
            if i % 10 == 0 {
                assert_eq!(cache.get(&hot, NOW), Some(service("hot")), "after {i}");
            }
        }
        // Recent entries are still there.
        assert_eq!(cache.get(&key_of("t9999"), NOW), Some(service("x")));
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = TokenCache::new(0);
        let key = key_of("t");
        cache.insert(key, service("a"), NOW, NOW + 60);
        assert_eq!(cache.get(&key, NOW), None);
        assert_eq!(cache.len(), 0);
    }
}
