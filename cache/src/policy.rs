//! Which cached image to evict: S3-FIFO, sized in bytes.
//!
//! Why S3-FIFO (Yang et al., SOSP 2023) rather than LRU: a compute fleet's
//! downloads are a few popular base images read again and again, plus a long
//! tail of images read once (snapshots, one-off uploads). Under LRU every
//! one-off image pushes a popular base image toward eviction; S3-FIFO admits
//! new images into a small FIFO (10% of the bytes) and promotes only those
//! read again, so a burst of one-off images washes through the small queue
//! and the popular ones stay in the main queue. A ghost list remembers
//! recently evicted one-off images, so an image that does come back goes
//! straight to the main queue. Hits only bump a 2-bit counter: no list
//! reordering on the read path. `cargo bench -p glance-cache --bench
//! hit_ratio` measures it against LRU on a Zipf trace.
//!
//! Entries that a reader holds (a lease while a response streams) are never
//! evicted: the caller's `evictable` predicate says which may go.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;

/// Share of the capacity given to the small (admission) queue, in percent.
const SMALL_PERCENT: u64 = 10;
/// Highest access count kept.
const MAX_FREQ: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Small,
    Main,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    size: u64,
    freq: u8,
    queue: Where,
}

/// Why an insert could not be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmitError {
    /// Larger than the whole cache.
    #[error("object of {0} bytes is larger than the cache")]
    TooLarge(u64),
    /// Already cached.
    #[error("already cached")]
    Present,
}

/// The outcome of an insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission<K> {
    /// Whether the key was admitted.
    pub admitted: bool,
    /// Keys evicted to make room (their data must be removed).
    pub evicted: Vec<K>,
}

/// The S3-FIFO policy over keys `K` with byte sizes.
#[derive(Debug)]
pub struct S3Fifo<K> {
    capacity: u64,
    small: VecDeque<K>,
    main: VecDeque<K>,
    ghost: VecDeque<K>,
    ghost_set: HashSet<K>,
    entries: HashMap<K, Meta>,
    small_bytes: u64,
    main_bytes: u64,
}

impl<K: Clone + Eq + Hash> S3Fifo<K> {
    /// An empty policy for `capacity` bytes.
    pub fn new(capacity: u64) -> S3Fifo<K> {
        S3Fifo {
            capacity,
            small: VecDeque::new(),
            main: VecDeque::new(),
            ghost: VecDeque::new(),
            ghost_set: HashSet::new(),
            entries: HashMap::new(),
            small_bytes: 0,
            main_bytes: 0,
        }
    }

    /// Bytes held by admitted entries.
    pub fn used(&self) -> u64 {
        self.small_bytes + self.main_bytes
    }

    /// The byte limit.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether `key` is admitted.
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Records a read of `key`; `true` if it is cached.
    pub fn access(&mut self, key: &K) -> bool {
        match self.entries.get_mut(key) {
            Some(m) => {
                m.freq = (m.freq + 1).min(MAX_FREQ);
                true
            }
            None => false,
        }
    }

    /// Admits `key` of `size` bytes, evicting what must go to make room.
    ///
    /// The returned [`Admission`] lists the evicted keys (the caller removes
    /// their data) and says whether `key` got in: it does not when the only
    /// entries left to evict are ones `evictable` refuses (held by readers);
    /// the caller then streams the image through without caching it.
    pub fn insert(
        &mut self,
        key: K,
        size: u64,
        mut evictable: impl FnMut(&K) -> bool,
    ) -> Result<Admission<K>, AdmitError> {
        if self.entries.contains_key(&key) {
            return Err(AdmitError::Present);
        }
        if size > self.capacity {
            return Err(AdmitError::TooLarge(size));
        }
        let (evicted, fits) = self.shrink_to(self.capacity - size, &mut evictable);
        if !fits {
            return Ok(Admission {
                admitted: false,
                evicted,
            });
        }
        let queue = if self.ghost_set.remove(&key) {
            self.ghost.retain(|g| g != &key);
            Where::Main
        } else {
            Where::Small
        };
        self.push(key, size, 0, queue);
        Ok(Admission {
            admitted: true,
            evicted,
        })
    }

    /// Evicts, in policy order, until at most `target` bytes are admitted.
    /// Returns the evicted keys and whether the target was reached (it is
    /// not when what is left is refused by `evictable`).
    pub fn shrink_to(
        &mut self,
        target: u64,
        evictable: &mut impl FnMut(&K) -> bool,
    ) -> (Vec<K>, bool) {
        let mut evicted = Vec::new();
        // Each entry is looked at a bounded number of times (at most MAX_FREQ
        // reinsertions, plus passes over pinned ones), so this ends.
        let mut budget = self.entries.len() * (usize::from(MAX_FREQ) + 2) * 2 + 1;
        let mut misses = 0usize;
        while self.used() > target {
            if budget == 0 {
                return (evicted, false);
            }
            budget -= 1;
            let small_full = self.small_bytes >= self.capacity / 100 * SMALL_PERCENT;
            let main_stuck = misses > self.main.len();
            let from_small =
                !self.small.is_empty() && (small_full || self.main.is_empty() || main_stuck);
            let victim = if from_small {
                self.evict_small(evictable)
            } else {
                self.evict_main(evictable)
            };
            match victim {
                Some(k) => {
                    evicted.push(k);
                    misses = 0;
                }
                None => misses += 1,
            }
        }
        (evicted, true)
    }

    /// Removes `key` (an explicit eviction or an invalid entry).
    pub fn remove(&mut self, key: &K) -> bool {
        let Some(m) = self.entries.remove(key) else {
            return false;
        };
        match m.queue {
            Where::Small => {
                self.small.retain(|k| k != key);
                self.small_bytes -= m.size;
            }
            Where::Main => {
                self.main.retain(|k| k != key);
                self.main_bytes -= m.size;
            }
        }
        true
    }

    fn push(&mut self, key: K, size: u64, freq: u8, queue: Where) {
        match queue {
            Where::Small => {
                self.small.push_back(key.clone());
                self.small_bytes += size;
            }
            Where::Main => {
                self.main.push_back(key.clone());
                self.main_bytes += size;
            }
        }
        self.entries.insert(key, Meta { size, freq, queue });
    }

    /// Takes the oldest small-queue entry: promoted to main if read since it
    /// came in, else evicted (and remembered in the ghost list).
    fn evict_small(&mut self, evictable: &mut impl FnMut(&K) -> bool) -> Option<K> {
        let key = self.small.pop_front()?;
        let meta = self.entries.remove(&key)?;
        self.small_bytes -= meta.size;
        if meta.freq > 0 {
            self.push(key, meta.size, 0, Where::Main);
            return None;
        }
        if !evictable(&key) {
            self.push(key, meta.size, meta.freq, Where::Small);
            return None;
        }
        self.remember(key.clone());
        Some(key)
    }

    /// Takes the oldest main-queue entry: reinserted with one less count if
    /// read, else evicted.
    fn evict_main(&mut self, evictable: &mut impl FnMut(&K) -> bool) -> Option<K> {
        let key = self.main.pop_front()?;
        let meta = self.entries.remove(&key)?;
        self.main_bytes -= meta.size;
        if meta.freq > 0 || !evictable(&key) {
            self.push(key, meta.size, meta.freq.saturating_sub(1), Where::Main);
            return None;
        }
        Some(key)
    }

    fn remember(&mut self, key: K) {
        // The ghost list holds about as many keys as the main queue entries.
        let limit = self.main.len().max(16);
        self.ghost_set.insert(key.clone());
        self.ghost.push_back(key);
        while self.ghost.len() > limit {
            if let Some(old) = self.ghost.pop_front() {
                self.ghost_set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evict_never_exceeds_the_byte_limit() {
        let mut p = S3Fifo::new(100);
        for k in 0..1000u32 {
            let _ = p.insert(k, u64::from(k % 37 + 1), |_| true);
            assert!(p.used() <= 100, "{} after {k}", p.used());
        }
    }

    #[test]
    fn evict_keeps_a_reread_image_through_a_burst_of_one_off_images() {
        let mut p = S3Fifo::new(100);
        p.insert(0u32, 20, |_| true).unwrap();
        p.access(&0);
        for k in 1..200u32 {
            p.insert(k, 10, |_| true).unwrap();
        }
        assert!(p.contains(&0), "the popular image was washed out");
    }

    #[test]
    fn evict_never_removes_a_pinned_entry() {
        let mut p = S3Fifo::new(30);
        for k in 0..3u32 {
            p.insert(k, 10, |_| true).unwrap();
        }
        // Everything pinned: not admitted, nothing evicted.
        let a = p.insert(9, 10, |_| false).unwrap();
        assert_eq!(
            a,
            Admission {
                admitted: false,
                evicted: vec![]
            }
        );
        assert!((0..3).all(|k| p.contains(&k)) && !p.contains(&9));
        // Only key 1 may go.
        let a = p.insert(9, 10, |k| *k == 1).unwrap();
        assert_eq!(
            a,
            Admission {
                admitted: true,
                evicted: vec![1]
            }
        );
        assert!(p.contains(&0) && p.contains(&2) && p.contains(&9));
    }

    #[test]
    fn evict_refuses_what_can_never_fit() {
        let mut p = S3Fifo::<u32>::new(10);
        assert_eq!(p.insert(1, 11, |_| true), Err(AdmitError::TooLarge(11)));
        p.insert(1, 10, |_| true).unwrap();
        assert_eq!(p.insert(1, 1, |_| true), Err(AdmitError::Present));
    }

    #[test]
    fn evict_ghost_hit_goes_straight_to_main() {
        let mut p = S3Fifo::new(50);
        for k in 0..10u32 {
            p.insert(k, 10, |_| true).unwrap();
        }
        assert!(!p.contains(&0));
        p.insert(0, 10, |_| true).unwrap();
        assert_eq!(p.entries[&0].queue, Where::Main);
    }

    #[test]
    fn remove_frees_its_bytes() {
        let mut p = S3Fifo::new(50);
        p.insert(1u32, 30, |_| true).unwrap();
        assert!(p.remove(&1));
        assert!(!p.remove(&1));
        assert_eq!(p.used(), 0);
    }
}
