//! The hot keys: which keys are read most, in fixed memory, whatever the
//! number of distinct keys. [`crate::lookup::Local`] records every cached
//! read (hit or miss) into the sketch of the thread serving it
//! ([`PerThread`]); `/hotkeys`, `INFO hotkeys` and the status page merge
//! the threads' sketches.
//!
//! Each sketch is Metwally et al.'s *space-saving* with a randomised
//! admission (Ben Basat et al., "Randomized Admission Policy for
//! Efficient Top-k and Frequency Estimation", 2017): `capacity` counters,
//! each owned by one key. A read of an owned key adds one to its counter:
//! exact from then on. A read of another key, once every counter is owned,
//! takes over the counter with the least count `m` with probability
//! `w/(m + w)`, for a read that weighs `w` (1, or [`SAMPLE`] when sampled);
//! the new key starts at `m + w` with an error of `m` (reads that may be
//! other keys'). So, while every read is counted, `reads - error` never
//! exceeds a key's true reads, and a key read often is admitted after
//! about `m` reads and then counted exactly. Without the coin, a long tail of keys each read once
//! would churn the least counter on every read; with it, those reads cost
//! a table probe and a random number.
//!
//! The counters sit in a slab; a hash table maps a key to its counter
//! (hashed by the caller, once, with the store's hasher), and a binary
//! min-heap of counter indices by count finds the least. A read of an owned
//! key is O(1) for the table plus a sift down the heap, which for the hot
//! keys (at the heap's bottom, where counts are large) is no step at all:
//! O(log capacity) at worst. Reading the top is O(capacity log capacity)
//! per thread, for the status page, not for requests.
//!
//! Each counter also keeps the last minute in six buckets of ten seconds,
//! so "the last minute" is the last 50 to 60 seconds. Keys longer than
//! [`KEPT_KEY_BYTES`] are told apart by their hash, length and first
//! [`KEPT_KEY_BYTES`] bytes, and shown truncated.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hashbrown::HashTable;
use parking_lot::Mutex;

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
    /// (count, counter index), a min-heap by count. The count is kept here
    /// too, so that finding the least and sifting touch only this array.
    heap: Vec<(u64, u32)>,
    started: Instant,
    /// xorshift64* state: the admission's and the sampling's coin.
    rng: u64,
    /// The second (since `started`) `in_second` counts reads of.
    second: u64,
    in_second: u32,
    /// Sampled reads to pass over before the next one counted.
    skip: u32,
}

/// Reads a thread counts exactly in each second; past them, about one in
/// [`SAMPLE`] is counted, as [`SAMPLE`] reads: the gaps between counted
/// reads are drawn at random from 1 to 2 × [`SAMPLE`] - 1 (mean
/// [`SAMPLE`]), so no pattern of keys can line up with them, and a read
/// passed over costs a decrement. A sketch update costs 15 ns or more (in
/// a busy process, its cache misses), which a proxy serving a million
/// pipelined hits a second would feel.
pub const EXACT_PER_SECOND: u32 = 1_000;
pub const SAMPLE: u64 = 32;

struct Counter {
    /// Reused when another key takes the counter: no allocation once it
    /// has grown to the longest key kept.
    key: Vec<u8>,
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
    tick: u32,
    reads: u32,
    hits: u32,
}

/// One key's figures, as [`HotKeys::top`] reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotKey {
    /// The key, or its first [`KEPT_KEY_BYTES`] bytes.
    pub key: Vec<u8>,
    /// The key's whole length: more than `key.len()` when truncated.
    pub len: usize,
    /// The key's hash (the store's): with `key` and `len`, what tells
    /// truncated keys apart.
    pub hash: u64,
    /// Reads since start, as the sketches count them. While every read is
    /// counted (fewer than [`EXACT_PER_SECOND`] a second per thread),
    /// `reads - error` never exceeds the true number: `error` reads may be
    /// other keys', and reads on a thread whose sketch held no counter for
    /// the key are missing. Past that, an estimate (see [`SAMPLE`]).
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
            // Each sketch its own sequence.
            rng: 0x9e37_79b9_7f4a_7c15 ^ SEED.fetch_add(0x2545_f491_4f6c_dd1d, Ordering::Relaxed),
            second: 0,
            in_second: 0,
            skip: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Which ten seconds `now` is in, for [`HotKeys::record`]: a run of
    /// reads reads the clock once.
    pub fn tick(&self, now: Instant) -> u32 {
        (now.saturating_duration_since(self.started).as_secs() / BUCKET_SECS) as u32
    }

    /// Reads at `now` of (key, its hash by the caller, whether it hit):
    /// each counted, or, past [`EXACT_PER_SECOND`] reads in this second,
    /// sampled.
    pub fn record_run<'k>(&mut self, now: Instant, reads: impl IntoIterator<Item = (&'k [u8], u64, bool)>) {
        let since = now.saturating_duration_since(self.started).as_secs();
        let tick = (since / BUCKET_SECS) as u32;
        if since != self.second {
            self.second = since;
            self.in_second = 0;
        }
        for (key, hash, hit) in reads {
            if self.in_second < EXACT_PER_SECOND {
                self.in_second += 1;
                self.record(key, hash, hit, tick, 1);
            } else if self.skip > 0 {
                self.skip -= 1;
            } else {
                self.record(key, hash, hit, tick, SAMPLE);
                self.skip = (self.random() % (2 * SAMPLE - 1)) as u32;
            }
        }
    }

    /// `weight` reads of `key` (hashed by the caller), hits or not, in
    /// `tick`.
    pub fn record(&mut self, key: &[u8], hash: u64, hit: bool, tick: u32, weight: u64) {
        let counters = &self.counters;
        let found = self
            .table
            .find(hash, |&i| counters[i as usize].is(key, hash))
            .copied();
        let i = match found {
            Some(i) => {
                let c = &mut self.counters[i as usize];
                c.count += weight;
                c.hits += weight * hit as u64;
                self.heap[c.at as usize].0 = c.count;
                i
            }
            None if self.counters.len() < self.capacity => {
                let i = self.counters.len() as u32;
                self.counters.push(Counter::new(key, hash, 0, weight, hit, i));
                self.heap.push((weight, i));
                self.table
                    .insert_unique(hash, i, |&j| self.counters[j as usize].hash);
                // A new counter counts `weight`, likely the least there is:
                // sifted up from the bottom if not.
                self.sift_up(self.heap.len() - 1);
                i
            }
            None => {
                let (least, i) = self.heap[0];
                // Randomised admission, a sampled read weighing `weight`.
                if !self.chance(weight, least + weight) {
                    return;
                }
                let old_hash = self.counters[i as usize].hash;
                // The least counter's key is forgotten; the new one inherits
                // its count as error.
                if let Ok(entry) = self.table.find_entry(old_hash, |&j| j == i) {
                    entry.remove();
                }
                self.counters[i as usize].take_over(key, hash, least, weight, hit);
                self.heap[0].0 = least + weight;
                self.table
                    .insert_unique(hash, i, |&j| self.counters[j as usize].hash);
                i
            }
        };
        self.counters[i as usize].bucket(tick).add(weight, hit);
        self.sift_down(self.counters[i as usize].at as usize);
    }

    /// The `n` keys read most in the last minute, then since start.
    pub fn top(&self, n: usize, now: Instant) -> Vec<HotKey> {
        merged([self.reports(now)], n)
    }

    /// Every counter's figures at `now`, unranked.
    pub fn reports(&self, now: Instant) -> Vec<HotKey> {
        let tick = self.tick(now);
        self.counters.iter().map(|c| c.report(tick)).collect()
    }

    /// True with probability `w/n` (to within 2^-64): a random 64-bit
    /// number below 2^64 · w / n, tested with a multiplication, not a
    /// division.
    fn chance(&mut self, w: u64, n: u64) -> bool {
        (u128::from(self.random()) * u128::from(n)) >> 64 < u128::from(w)
    }

    /// xorshift64*.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
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
        self.heap[at].0
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.counters[self.heap[a].1 as usize].at = a as u32;
        self.counters[self.heap[b].1 as usize].at = b as u32;
    }
}

/// The `n` keys read most, from each sketch's [`HotKeys::reports`] (each
/// thread's), a key's figures added up across them: ranked by the last
/// minute, then since start, then by key.
pub fn merged(reports: impl IntoIterator<Item = Vec<HotKey>>, n: usize) -> Vec<HotKey> {
    let mut by_key: HashMap<(u64, usize, Vec<u8>), HotKey> = HashMap::new();
    for k in reports.into_iter().flatten() {
        match by_key.entry((k.hash, k.len, k.key.clone())) {
            Entry::Occupied(mut o) => {
                let sum = o.get_mut();
                sum.reads += k.reads;
                sum.error += k.error;
                sum.hits += k.hits;
                sum.minute_reads += k.minute_reads;
                sum.minute_hits += k.minute_hits;
            }
            Entry::Vacant(v) => {
                v.insert(k);
            }
        }
    }
    let mut keys: Vec<HotKey> = by_key.into_values().collect();
    keys.sort_by(|a, b| (b.minute_reads, b.reads, &a.key).cmp(&(a.minute_reads, a.reads, &b.key)));
    keys.truncate(n);
    keys
}

impl Counter {
    /// A counter newly taken by `key`, after `least` reads of others.
    fn new(key: &[u8], hash: u64, least: u64, weight: u64, hit: bool, at: u32) -> Counter {
        Counter {
            key: key[..key.len().min(KEPT_KEY_BYTES)].into(),
            len: key.len(),
            hash,
            count: least + weight,
            error: least,
            hits: weight * hit as u64,
            at,
            minute: [Bucket::default(); BUCKETS],
        }
    }

    /// This counter, taken by `key` (`weight` reads) after `least` reads of
    /// others; its place in the heap stays.
    fn take_over(&mut self, key: &[u8], hash: u64, least: u64, weight: u64, hit: bool) {
        self.key.clear();
        self.key.extend_from_slice(&key[..key.len().min(KEPT_KEY_BYTES)]);
        self.len = key.len();
        self.hash = hash;
        self.count = least + weight;
        self.error = least;
        self.hits = weight * hit as u64;
        self.minute = [Bucket::default(); BUCKETS];
    }

    fn is(&self, key: &[u8], hash: u64) -> bool {
        self.hash == hash && self.len == key.len() && *self.key == key[..self.key.len()]
    }

    /// The bucket of `tick`, emptied first if it last counted an older one.
    fn bucket(&mut self, tick: u32) -> &mut Bucket {
        let b = &mut self.minute[tick as usize % BUCKETS];
        if b.tick != tick {
            *b = Bucket {
                tick,
                ..Bucket::default()
            };
        }
        b
    }

    fn report(&self, tick: u32) -> HotKey {
        let recent = self
            .minute
            .iter()
            .filter(|b| tick - b.tick.min(tick) < BUCKETS as u32 && b.reads > 0);
        let (minute_reads, minute_hits) = recent.fold((0, 0), |(r, h), b| {
            (r + u64::from(b.reads), h + u64::from(b.hits))
        });
        HotKey {
            key: self.key.to_vec(),
            len: self.len,
            hash: self.hash,
            reads: self.count,
            error: self.error,
            hits: self.hits,
            minute_reads,
            minute_hits,
        }
    }
}

impl Bucket {
    fn add(&mut self, weight: u64, hit: bool) {
        // Ten seconds of one key on one thread stay far below 2^32 reads.
        let weight = weight as u32;
        self.reads = self.reads.saturating_add(weight);
        self.hits = self.hits.saturating_add(weight * hit as u32);
    }
}

/// One sketch per thread that records, so that a read costs no lock that
/// another thread holds and no cache line another core writes. Memory is
/// `capacity` counters per such thread (the Tokio workers: `--threads`).
pub struct PerThread {
    /// Tells apart the sketches of several caches on one thread (tests).
    id: u64,
    capacity: usize,
    started: Instant,
    all: Mutex<Vec<Arc<Mutex<HotKeys>>>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static SEED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's sketch of each [`PerThread`] it has recorded into.
    static MINE: RefCell<Vec<(u64, Arc<Mutex<HotKeys>>)>> = const { RefCell::new(Vec::new()) };
}

impl PerThread {
    pub fn new(capacity: usize) -> PerThread {
        PerThread {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            capacity,
            started: Instant::now(),
            all: Mutex::new(Vec::new()),
        }
    }

    /// Counters in each thread's sketch.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Runs `f` on this thread's sketch, made on first use. Its lock is
    /// only ever contended by a reader of the top.
    pub fn with_mine<R>(&self, f: impl FnOnce(&mut HotKeys) -> R) -> R {
        MINE.with(|mine| {
            let mut mine = mine.borrow_mut();
            let at = match mine.iter().position(|(id, _)| *id == self.id) {
                Some(at) => at,
                None => {
                    // Sketches whose cache is gone (only this thread holds
                    // them) go first.
                    mine.retain(|(_, sketch)| Arc::strong_count(sketch) > 1);
                    let sketch = Arc::new(Mutex::new(HotKeys::new(self.capacity, self.started)));
                    self.all.lock().push(sketch.clone());
                    mine.push((self.id, sketch));
                    mine.len() - 1
                }
            };
            let mut sketch = mine[at].1.lock();
            f(&mut sketch)
        })
    }

    /// The `n` keys read most, over every thread (see [`merged`]). Each
    /// thread's sketch is locked only while its figures are copied out.
    pub fn top(&self, n: usize, now: Instant) -> Vec<HotKey> {
        let all: Vec<Arc<Mutex<HotKeys>>> = self.all.lock().clone();
        merged(all.iter().map(|s| s.lock().reports(now)), n)
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
        let tick = h.tick(now);
        h.record(key, s.hash_one(key), hit, tick, 1);
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
        // Admitted on a coin of 1/2 (the least count is 1): within a few
        // reads, and then with that count as error.
        let mut tries = 0;
        let top = loop {
            read(&mut h, &s, b"new", false, now);
            tries += 1;
            let top = h.top(10, now);
            if top.iter().any(|k| k.key == b"new") {
                break top;
            }
            assert!(tries < 64, "never admitted");
        };
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
    fn a_counter_is_small() {
        // The README's "about 170 bytes" with its table and heap slots.
        assert!(
            std::mem::size_of::<Counter>() <= 144,
            "{}",
            std::mem::size_of::<Counter>()
        );
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

    #[test]
    fn a_skewed_stream_finds_its_heavy_keys_past_a_long_tail() {
        let (mut h, s, now) = sketch(64);
        // Keys 0-4 take 5%, 4%, 3%, 2%, 1% of 100,000 reads; 85% go to
        // 20,000 keys read a few times each.
        let mut x: u64 = 1;
        for _ in 0..100_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (x >> 33) % 100;
            let key = match r {
                0..5 => 0,
                5..9 => 1,
                9..12 => 2,
                12..14 => 3,
                14 => 4,
                _ => 5 + (x >> 20) % 20_000,
            };
            read(&mut h, &s, &key.to_be_bytes(), true, now);
        }
        let top: Vec<u64> = h
            .top(5, now)
            .iter()
            .map(|k| u64::from_be_bytes(k.key[..].try_into().unwrap()))
            .collect();
        assert_eq!(top, [0, 1, 2, 3, 4]);
        let first = &h.top(1, now)[0];
        assert!((4_000..=6_000).contains(&first.reads), "{first:?}");
        assert!(first.reads - first.error <= 5_100, "{first:?}");
    }

    #[test]
    fn threads_sketches_add_up() {
        let per = std::sync::Arc::new(PerThread::new(8));
        let s = RandomState::new();
        let now = Instant::now();
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let (per, s) = (per.clone(), s.clone());
                std::thread::spawn(move || {
                    for _ in 0..10 * (t + 1) {
                        per.with_mine(|h| h.record_run(now, [(&b"shared"[..], s.hash_one(b"shared"), true)]));
                    }
                    per.with_mine(|h| h.record_run(now, [(&b"own"[..], s.hash_one(b"own"), false)]));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let top = per.top(10, now);
        assert_eq!(top.len(), 2);
        assert_eq!(
            (
                top[0].key.as_slice(),
                top[0].reads,
                top[0].hits,
                top[0].minute_reads
            ),
            (&b"shared"[..], 60, 60, 60)
        );
        assert_eq!(
            (top[1].key.as_slice(), top[1].reads, top[1].hits),
            (&b"own"[..], 3, 0)
        );
    }

    #[test]
    fn past_the_exact_budget_reads_are_sampled_and_weighted() {
        let (mut h, s, now) = sketch(16);
        let (hot, cold) = (s.hash_one(b"hot"), s.hash_one(b"cold"));
        // 1,000 exact reads, then 319,000 more in the same second: 3 in 4
        // of them of "hot".
        let reads = (0..320_000u32).map(|i| {
            let (key, hash) = if i % 4 == 3 {
                (&b"cold"[..], cold)
            } else {
                (&b"hot"[..], hot)
            };
            (key, hash, true)
        });
        h.record_run(now, reads);
        let top = h.top(2, now);
        assert_eq!(top[0].key, b"hot");
        // 240,000 true reads; sampled at about 1 in 32, within 2%.
        assert!((235_000..=245_000).contains(&top[0].reads), "{:?}", top[0]);
        let cold = &top[1];
        assert!((78_000..=82_000).contains(&cold.reads), "{cold:?}");
        // The next second starts exact again.
        let next = now + Duration::from_secs(1);
        let before = h.top(1, next)[0].reads;
        h.record_run(next, [(&b"hot"[..], hot, false)]);
        assert_eq!(h.top(1, next)[0].reads, before + 1);
    }

    proptest! {
        /// Against an exact count: `reads - error` never exceeds the true
        /// reads (and hits never exceed them); with no more keys than
        /// counters, every count is exact.
        #[test]
        fn counts_are_bounded_and_exact_while_every_key_fits(
            reads in prop::collection::vec((0u8..40, any::<bool>()), 1..2000),
            capacity in 1usize..48,
        ) {
            let (mut h, s, now) = sketch(capacity);
            let mut exact: HashMap<u8, (u64, u64)> = HashMap::new();
            for &(k, hit) in &reads {
                read(&mut h, &s, &[k], hit, now);
                let e = exact.entry(k).or_default();
                e.0 += 1;
                e.1 += hit as u64;
            }
            let top = h.top(usize::MAX, now);
            prop_assert!(top.len() <= capacity);
            for k in &top {
                let (truth, hits) = exact[&k.key[0]];
                prop_assert!(k.reads - k.error <= truth, "{k:?} truth {truth}");
                prop_assert!(k.hits <= k.reads - k.error && k.hits <= hits);
                if exact.len() <= capacity {
                    prop_assert_eq!((k.reads, k.error, k.hits), (truth, 0, hits));
                }
            }
            if exact.len() <= capacity {
                prop_assert_eq!(top.len(), exact.len());
            }
            // The heap holds: every counter's parent counts no more.
            for at in 1..h.heap.len() {
                prop_assert!(h.count_at((at - 1) / 2) <= h.count_at(at));
                let (count, i) = h.heap[at];
                prop_assert_eq!(h.counters[i as usize].at as usize, at);
                prop_assert_eq!(h.counters[i as usize].count, count);
            }
        }
    }
}
