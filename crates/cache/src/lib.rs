//! The suite's one bounded cache: a map kept in two generations. New entries go into the
//! current generation; when it holds `size` entries it becomes the previous one and the old
//! previous one is dropped whole. An entry read from the previous generation moves back into
//! the current one, so entries in use survive every rotation while the bound (at most
//! `2 * size` entries) holds with O(1) work per call and no background task.
//!
//! Used by the token cache (`cqrs-auth`) and the directory's permission cache, each behind
//! its own locks and shards. A general-purpose cache crate (moka, quick_cache) was weighed
//! and not taken: neither caller needs more than this, the directory needs generation-guarded
//! inserts on top anyway, and this is dependency-free.
//!
//! Rotations hand back the dropped generation so the caller can free it after releasing
//! its lock.

use std::collections::HashMap;
use std::hash::Hash;

/// A map of at most `2 * size` entries (see the crate docs).
#[derive(Debug)]
pub struct Generations<K, V> {
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
}

/// A generation dropped by a rotation, to be freed outside the caller's lock.
pub type Dropped<K, V> = Option<HashMap<K, V>>;

impl<K, V> Default for Generations<K, V> {
    fn default() -> Self {
        Generations {
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Generations<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry for `key`, if any (moved into the current generation when found in the
    /// previous one), and what that move's rotation dropped.
    pub fn get(&mut self, key: &K, size: usize) -> (Option<V>, Dropped<K, V>) {
        self.get_where(key, size, |_| true)
    }

    /// Like [`Generations::get`], but an entry that fails `keep` is removed instead of
    /// answered (or moved): one lookup for callers whose entries expire.
    pub fn get_where(
        &mut self,
        key: &K,
        size: usize,
        keep: impl Fn(&V) -> bool,
    ) -> (Option<V>, Dropped<K, V>) {
        if let Some(v) = self.current.get(key) {
            if keep(v) {
                return (Some(v.clone()), None);
            }
            self.current.remove(key);
            return (None, None);
        }
        match self.previous.remove(key) {
            Some(v) if keep(&v) => {
                let dropped = self.insert(key.clone(), v.clone(), size);
                (Some(v), dropped)
            }
            _ => (None, None),
        }
    }

    /// The entry for `key` without moving it.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    /// Adds or replaces an entry; rotates when the current generation reaches `size`.
    pub fn insert(&mut self, key: K, value: V, size: usize) -> Dropped<K, V> {
        self.previous.remove(&key);
        self.current.insert(key, value);
        if self.current.len() < size {
            return None;
        }
        let full = std::mem::take(&mut self.current);
        Some(std::mem::replace(&mut self.previous, full))
    }

    /// Removes `key` from both generations; the value it had, if any.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let current = self.current.remove(key);
        let previous = self.previous.remove(key);
        current.or(previous)
    }

    /// Empties the map; both generations, to be freed outside the caller's lock.
    pub fn take(&mut self) -> (HashMap<K, V>, HashMap<K, V>) {
        (
            std::mem::take(&mut self.current),
            std::mem::take(&mut self.previous),
        )
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty() && self.previous.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_keeps_what_is_used() {
        let size = 10;
        let mut map = Generations::new();
        map.insert(0u32, "hot", size);
        for i in 1..10_000u32 {
            map.insert(i, "x", size);
            assert!(map.len() <= 2 * size, "{} entries", map.len());
            if i % 5 == 0 {
                assert_eq!(map.get(&0, size).0, Some("hot"), "after {i}");
            }
        }
        assert_eq!(map.get(&9_999, size).0, Some("x"));
        assert_eq!(map.get(&1, size).0, None);
    }

    #[test]
    fn rotation_hands_back_what_it_dropped() {
        let mut map = Generations::new();
        assert!(map.insert(1u8, 1, 2).is_none());
        let first = map.insert(2, 2, 2).unwrap();
        assert!(
            first.is_empty(),
            "the first rotation drops the empty previous one"
        );
        assert_eq!(map.len(), 2);
        assert!(map.insert(3, 3, 2).is_none());
        let dropped = map.insert(4, 4, 2).unwrap();
        assert_eq!(dropped.len(), 2);
        assert_eq!(map.peek(&1), None);
        assert_eq!(map.peek(&3), Some(&3));
    }

    #[test]
    fn entries_that_fail_the_check_are_removed_not_moved() {
        let mut map = Generations::new();
        map.insert(1u8, 10, 2);
        map.insert(2, 20, 2);
        // Both now in the previous generation.
        assert_eq!(map.get_where(&1, 2, |v| *v > 15), (None, None));
        assert_eq!(map.peek(&1), None, "removed");
        assert_eq!(map.get_where(&2, 2, |v| *v > 15).0, Some(20));
        map.insert(3, 30, 100);
        assert_eq!(map.get_where(&3, 100, |_| false), (None, None));
        assert_eq!(map.peek(&3), None);
    }

    #[test]
    fn replace_remove_and_take() {
        let mut map = Generations::new();
        map.insert("a", 1, 100);
        map.insert("a", 2, 100);
        assert_eq!(map.len(), 1);
        assert_eq!(map.get(&"a", 100).0, Some(2));
        assert_eq!(map.remove(&"a"), Some(2));
        assert!(map.is_empty());
        map.insert("b", 1, 100);
        let (current, previous) = map.take();
        assert_eq!(current.len() + previous.len(), 1);
        assert!(map.is_empty());
    }

    #[test]
    fn zero_size_keeps_only_the_previous_generation() {
        let mut map = Generations::new();
        map.insert(1u8, 1, 0);
        assert_eq!(map.len(), 1);
        map.insert(2, 2, 0);
        assert_eq!(map.len(), 1);
    }
}
