//! The hot keys: which keys are read most, in fixed memory, whatever the
//! number of distinct keys. Pure; [`crate::lookup::Local`] records every
//! cached read into it under the lock it already holds for the store.
//!
//! It is Metwally et al.'s *space-saving* sketch: `capacity` counters,
//! each owned by one key. A read of an owned key adds one to its counter.
//! A read of any other key, once every counter is owned, takes over the
//! counter with the least count `m`: the new key starts at `m + 1`, with an
//! error of `m` (at most `m` of its reads may be another key's). So a
//! count is never below the key's true reads, never above them by more
//! than its error, and every key read more than `reads / capacity` times
//! holds a counter. Keys that were never displaced have an error of 0 and
//! an exact count.
//!
//! The counters sit in a slab; a hash table maps a key to its counter
//! (hashed by the caller, once, with the store's hasher), and a binary
//! min-heap of counter indices by count finds the least. A read is O(1)
//! for the table plus a sift down the heap, which for the hot keys (at the
//! heap's bottom, where counts are large) is no step at all: O(log
//! capacity) at worst. Reading the top is O(capacity log capacity), for
//! the status page, not for requests.
//!
//! Each counter also keeps the last minute in six buckets of ten seconds,
//! so "the last minute" is the last 50 to 60 seconds. Keys longer than
//! [`KEPT_KEY_BYTES`] are told apart by their hash, length and first
//! [`KEPT_KEY_BYTES`] bytes, and shown truncated.

use std::time::Instant;

use hashbrown::HashTable;

/// The most bytes of a key a counter keeps, so that memory stays fixed.
pub const KEPT_KEY_BYTES: usize = 256;

/// Buckets of the last minute, and the seconds each covers.
const BUCKETS: usize = 6;
const BUCKET_SECS: u64 = 10;

pub struct HotKeys {
    capacity: usize,
    counters: Vec<Counter>,
    /// Counter indices, by key.
    table: HashTable<u32>,
    /// Counter indices, a min-heap by count.
    heap: Vec<u32>,
    started: Instant,
}

struct Counter {
    key: Box<[u8]>,
    /// The key's whole length (`key` may hold only its start).
    len: usize,
    hash: u64,
    count: u64,
    error: u64,
    /// Hits among the reads counted since this key took the counter.
    hits: u64,
    /// Where this counter sits in the heap.
    at: u32,
    minute: [Bucket; BUCKETS],
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Which ten seconds since the start it counts.
    tick: u64,
    reads: u64,
    hits: u64,
}

/// One key's figures, as [`HotKeys::top`] reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotKey {
    /// The key, or its first [`KEPT_KEY_BYTES`] bytes.
    pub key: Vec<u8>,
    /// The key's whole length: more than `key.len()` when truncated.
    pub len: usize,
    /// Reads since start, as the sketch counts them: at least the true
    /// number, at most `error` more.
    pub reads: u64,
    pub error: u64,
    /// Hits among the `reads - error` reads seen since the key took its
    /// counter.
    pub hits: u64,
    /// Reads and hits in the last minute (50 to 60 s).
    pub minute_reads: u64,
    pub minute_hits: u64,
}

impl HotKey {
    /// Hits over the reads seen since the key took its counter; None before
    /// any.
    pub fn hit_ratio(&self) -> Option<f64> {
        ratio(self.hits, self.reads - self.error)
    }

    pub fn minute_hit_ratio(&self) -> Option<f64> {
        ratio(self.minute_hits, self.minute_reads)
    }
}

fn ratio(hits: u64, reads: u64) -> Option<f64> {
    (reads > 0).then(|| hits as f64 / reads as f64)
}

impl HotKeys {
    /// A sketch of `capacity` counters (at least one), its minute counted
    /// from `started`.
    pub fn new(capacity: usize, started: Instant) -> HotKeys {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        HotKeys {
            capacity,
            counters: Vec::with_capacity(capacity),
            table: HashTable::with_capacity(capacity),
            heap: Vec::with_capacity(capacity),
            started,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn tick(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_secs() / BUCKET_SECS
    }

    /// One read of `key` (hashed by the caller), a hit or not, at `now`.
    pub fn record(&mut self, key: &[u8], hash: u64, hit: bool, now: Instant) {
        let tick = self.tick(now);
        let counters = &self.counters;
        let found = self
            .table
            .find(hash, |&i| counters[i as usize].is(key, hash))
            .copied();
        let i = match found {
            Some(i) => {
                let c = &mut self.counters[i as usize];
                c.count += 1;
                c.hits += hit as u64;
                i
            }
            None if self.counters.len() < self.capacity => {
                let i = self.counters.len() as u32;
                self.counters.push(Counter::new(key, hash, 0, hit, i));
                self.heap.push(i);
                self.table
                    .insert_unique(hash, i, |&j| self.counters[j as usize].hash);
                // A new counter's count (1) is the least there is: the heap
                // holds with it at the bottom, as it is.
                self.sift_up(self.heap.len() - 1);
                i
            }
            None => {
                let i = self.heap[0];
                let old = &self.counters[i as usize];
                let (old_hash, least) = (old.hash, old.count);
                // The least counter's key is forgotten; the new one inherits
                // its count as error.
                if let Ok(entry) = self.table.find_entry(old_hash, |&j| j == i) {
                    entry.remove();
                }
                self.counters[i as usize] = Counter::new(key, hash, least, hit, 0);
                self.table
                    .insert_unique(hash, i, |&j| self.counters[j as usize].hash);
                i
            }
        };
        self.counters[i as usize].bucket(tick).add(hit);
        self.sift_down(self.counters[i as usize].at as usize);
    }

    /// The `n` keys read most in the last minute, then since start.
    pub fn top(&self, n: usize, now: Instant) -> Vec<HotKey> {
        let tick = self.tick(now);
        let mut keys: Vec<HotKey> = self.counters.iter().map(|c| c.report(tick)).collect();
        keys.sort_by(|a, b| (b.minute_reads, b.reads, &a.key).cmp(&(a.minute_reads, a.reads, &b.key)));
        keys.truncate(n);
        keys
    }

    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.count_at(parent) <= self.count_at(at) {
                break;
            }
            self.swap(parent, at);
            at = parent;
        }
    }

    fn sift_down(&mut self, mut at: usize) {
        loop {
            let (left, right) = (2 * at + 1, 2 * at + 2);
            let mut least = at;
            if left < self.heap.len() && self.count_at(left) < self.count_at(least) {
                least = left;
            }
            if right < self.heap.len() && self.count_at(right) < self.count_at(least) {
                least = right;
            }
            if least == at {
                return;
            }
            self.swap(least, at);
            at = least;
        }
    }

    fn count_at(&self, at: usize) -> u64 {
        self.counters[self.heap[at] as usize].count
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.counters[self.heap[a] as usize].at = a as u32;
        self.counters[self.heap[b] as usize].at = b as u32;
    }
}

impl Counter {
    /// A counter newly taken by `key`, after `least` reads of others.
    fn new(key: &[u8], hash: u64, least: u64, hit: bool, at: u32) -> Counter {
        Counter {
            key: key[..key.len().min(KEPT_KEY_BYTES)].into(),
            len: key.len(),
            hash,
            count: least + 1,
            error: least,
            hits: hit as u64,
            at,
            minute: [Bucket::default(); BUCKETS],
        }
    }

    fn is(&self, key: &[u8], hash: u64) -> bool {
        self.hash == hash && self.len == key.len() && *self.key == key[..self.key.len()]
    }

    /// The bucket of `tick`, emptied first if it last counted an older one.
    fn bucket(&mut self, tick: u64) -> &mut Bucket {
        let b = &mut self.minute[(tick % BUCKETS as u64) as usize];
        if b.tick != tick {
            *b = Bucket {
                tick,
                ..Bucket::default()
            };
        }
        b
    }

    fn report(&self, tick: u64) -> HotKey {
        let recent = self
            .minute
            .iter()
            .filter(|b| tick - b.tick.min(tick) < BUCKETS as u64 && b.reads > 0);
        let (minute_reads, minute_hits) = recent.fold((0, 0), |(r, h), b| (r + b.reads, h + b.hits));
        HotKey {
            key: self.key.to_vec(),
            len: self.len,
            reads: self.count,
            error: self.error,
            hits: self.hits,
            minute_reads,
            minute_hits,
        }
    }
}

impl Bucket {
    fn add(&mut self, hit: bool) {
        self.reads += 1;
        self.hits += hit as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::{BuildHasher, RandomState};
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn sketch(capacity: usize) -> (HotKeys, RandomState, Instant) {
        let now = Instant::now();
        (HotKeys::new(capacity, now), RandomState::new(), now)
    }

    fn read(h: &mut HotKeys, s: &RandomState, key: &[u8], hit: bool, now: Instant) {
        h.record(key, s.hash_one(key), hit, now);
    }

    #[test]
    fn counts_are_exact_while_every_key_has_a_counter() {
        let (mut h, s, now) = sketch(4);
        for _ in 0..5 {
            read(&mut h, &s, b"a", true, now);
        }
        read(&mut h, &s, b"b", false, now);
        read(&mut h, &s, b"b", true, now);
        let top = h.top(10, now);
        assert_eq!(top.len(), 2);
        assert_eq!(
            (top[0].key.as_slice(), top[0].reads, top[0].error, top[0].hits),
            (&b"a"[..], 5, 0, 5)
        );
        assert_eq!(
            (top[1].key.as_slice(), top[1].reads, top[1].hits),
            (&b"b"[..], 2, 1)
        );
        assert_eq!(top[1].hit_ratio(), Some(0.5));
        assert_eq!(top[0].minute_reads, 5);
    }

    #[test]
    fn a_new_key_takes_the_least_counter_with_its_count_as_error() {
        let (mut h, s, now) = sketch(2);
        for _ in 0..3 {
            read(&mut h, &s, b"hot", true, now);
        }
        read(&mut h, &s, b"cold", true, now);
        read(&mut h, &s, b"new", false, now);
        let top = h.top(10, now);
        let keys: Vec<&[u8]> = top.iter().map(|k| k.key.as_slice()).collect();
        assert_eq!(keys, [&b"hot"[..], b"new"]);
        assert_eq!((top[1].reads, top[1].error, top[1].hits), (2, 1, 0));
        assert_eq!(top[1].hit_ratio(), Some(0.0));
    }

    #[test]
    fn the_minute_forgets_reads_older_than_sixty_seconds() {
        let (mut h, s, start) = sketch(4);
        read(&mut h, &s, b"k", true, start);
        read(&mut h, &s, b"k", false, start + Duration::from_secs(30));
        let k = &h.top(1, start + Duration::from_secs(55))[0];
        assert_eq!((k.minute_reads, k.minute_hits, k.reads), (2, 1, 2));
        let k = &h.top(1, start + Duration::from_secs(65))[0];
        assert_eq!((k.minute_reads, k.minute_hits), (1, 0));
        let k = &h.top(1, start + Duration::from_secs(120))[0];
        assert_eq!((k.minute_reads, k.reads), (0, 2));
        // Ranked by the last minute first.
        read(&mut h, &s, b"now", true, start + Duration::from_secs(120));
        assert_eq!(h.top(1, start + Duration::from_secs(120))[0].key, b"now");
    }

    #[test]
    fn long_keys_are_kept_truncated_and_told_apart() {
        let (mut h, s, now) = sketch(4);
        let mut a = vec![b'x'; KEPT_KEY_BYTES + 10];
        let b = a.clone();
        a.push(b'a');
        read(&mut h, &s, &a, true, now);
        read(&mut h, &s, &a, true, now);
        read(&mut h, &s, &b, true, now);
        let top = h.top(10, now);
        assert_eq!(top.len(), 2);
        assert_eq!(
            (top[0].key.len(), top[0].len, top[0].reads),
            (KEPT_KEY_BYTES, a.len(), 2)
        );
        assert_eq!((top[1].len, top[1].reads), (b.len(), 1));
    }

    proptest! {
        /// Space-saving's guarantees, against an exact count: each
        /// reported count is within [true, true + error], and every key
        /// read more than reads / capacity times is reported.
        #[test]
        fn counts_are_bounded_and_frequent_keys_are_kept(
            reads in prop::collection::vec((0u8..40, any::<bool>()), 1..2000),
            capacity in 1usize..16,
        ) {
            let (mut h, s, now) = sketch(capacity);
            let mut exact: HashMap<u8, u64> = HashMap::new();
            for &(k, hit) in &reads {
                read(&mut h, &s, &[k], hit, now);
                *exact.entry(k).or_default() += 1;
            }
            let top = h.top(usize::MAX, now);
            prop_assert!(top.len() <= capacity);
            for k in &top {
                let truth = exact[&k.key[0]];
                prop_assert!(k.reads >= truth && k.reads - k.error <= truth, "{k:?} truth {truth}");
                prop_assert!(k.hits <= k.reads - k.error);
            }
            let total = reads.len() as u64;
            for (key, &n) in &exact {
                if n > total / capacity as u64 {
                    prop_assert!(top.iter().any(|k| k.key == [*key]), "key {key} read {n} of {total} is missing");
                }
            }
            // The heap holds: every counter's parent counts no more.
            for at in 1..h.heap.len() {
                prop_assert!(h.count_at((at - 1) / 2) <= h.count_at(at));
                prop_assert_eq!(h.counters[h.heap[at] as usize].at as usize, at);
            }
        }
    }
}
