//! The local copy of Redis's data: the store behind its lock, and the
//! generations that say whether a value fetched from Redis may still be
//! inserted. Reads insert through it; Redis's invalidations act on it
//! through [`Coherence`].
//!
//! Keys are hashed before the lock is taken, entries are built (allocated)
//! before it too, and a run of keys is looked up under one lock. A hit's
//! value is copied out of the store into a per-thread arena, so serving it
//! allocates nothing but, now and then, a new 64 KiB chunk.

use std::cell::RefCell;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

use super::Found;
use super::Source;
use super::generation::{Generations, Stamp};
use super::lease::Lease;
use crate::backend::Coherence;
use crate::cache::{Bounds, Entry, Hit, Store, Value};
use crate::error::Error;
use crate::hotkeys::{HotKey, PerThread};
use crate::metrics::{FlushReason, Metrics};

/// One key's answer from Redis, as the backend gives it.
pub(super) type Fetched = Result<Option<crate::backend::Fetched>, Error>;

pub struct Local {
    store: Mutex<Store>,
    bounds: Bounds,
    /// The store's hasher, so keys are hashed outside its lock; every
    /// fresh store swapped in keeps it.
    hasher: RandomState,
    pub(super) generations: Generations,
    /// Hits are served only while it holds (see `lease`).
    lease: Lease,
    /// The most-read keys, one sketch per thread (see [`PerThread`]).
    hot: Option<PerThread>,
    metrics: Arc<Metrics>,
}

/// Stores dropped by a flush larger than this are freed on a blocking
/// thread, not on the task that flushed (the Redis connection's).
const FREE_INLINE: usize = 4096;

impl Local {
    /// A local copy with no lease: its hits are served for as long as the
    /// store holds them.
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Self {
        Self::with_lease(store, Lease::unbounded(), metrics)
    }

    /// A local copy whose hits are served only while `lease` holds.
    pub fn with_lease(store: Store, lease: Lease, metrics: Arc<Metrics>) -> Self {
        Local {
            bounds: store.bounds(),
            hasher: store.hasher().clone(),
            store: Mutex::new(store),
            generations: Generations::new(),
            lease,
            hot: None,
            metrics,
        }
    }

    /// Keeps a hot-key sketch of `capacity` counters per thread (0: none).
    pub fn with_hot_keys(mut self, capacity: usize) -> Self {
        self.hot = (capacity > 0).then(|| PerThread::new(capacity));
        self
    }

    /// The `n` keys read most, and the counters each thread's sketch has;
    /// None without a sketch.
    pub fn hot_keys(&self, n: usize) -> Option<(Vec<HotKey>, usize)> {
        let hot = self.hot.as_ref()?;
        Some((hot.top(n, Instant::now()), hot.capacity()))
    }

    /// How much longer the lease holds: the single Redis's (`slot` None)
    /// or a cluster slot's. None without a lease (`ttl` mode).
    pub fn lease_left(&self, slot: Option<u16>) -> Option<Duration> {
        self.lease.left(slot.map_or(0, usize::from), Instant::now())
    }

    /// Whether the lease covering `key` holds at `now`; a lookup that
    /// finds it lapsed is counted, and misses.
    fn leased(&self, key: &[u8], now: Instant) -> bool {
        let holds = self.lease.holds(self.lease.index(key), now);
        if !holds {
            self.metrics.lease_lapsed.inc();
        }
        holds
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// A hit, counted; None on a miss.
    pub(super) fn cached(&self, key: &[u8]) -> Option<Found> {
        let hash = self.hash(key);
        // The clock is read under the lock: an entry that expired while
        // this thread waited for it is not served.
        let (found, now) = self.with_store(|s| {
            let now = Instant::now();
            if !self.leased(key, now) {
                return (None, now);
            }
            (s.get(key, hash, now).map(found), now)
        });
        // The sketch is recorded after the store's lock is released: it is
        // this thread's own.
        if let Some(hot) = &self.hot {
            hot.with_mine(|h| h.record_run(now, [(key, hash, found.is_some())]));
        }
        let found = found?;
        self.metrics.hits.inc();
        Some(found)
    }

    /// [`Local::cached`] for a run of keys, under one lock: a hit for each
    /// key held is pushed to `out`, a placeholder for each miss, and
    /// whether any key missed is returned. Runs of up to 64 keys hash on
    /// the stack, so a run of hits allocates nothing.
    pub(super) fn cached_each(&self, keys: &[Bytes], out: &mut Vec<Result<Found, Error>>) -> bool {
        const ON_STACK: usize = 64;
        let mut stack = [0u64; ON_STACK];
        let mut heap = Vec::new();
        let hashes: &mut [u64] = if keys.len() <= ON_STACK {
            &mut stack[..keys.len()]
        } else {
            heap.resize(keys.len(), 0);
            &mut heap
        };
        for (hash, key) in hashes.iter_mut().zip(keys) {
            *hash = self.hash(key);
        }
        let start = out.len();
        let now = self.with_store(|s| {
            let now = Instant::now();
            for (key, &hash) in keys.iter().zip(hashes.iter()) {
                let hit = if self.leased(key, now) {
                    s.get(key, hash, now).map_or(MISSING, found)
                } else {
                    MISSING
                };
                out.push(Ok(hit));
            }
            now
        });
        if let Some(hot) = &self.hot {
            let reads = keys.iter().zip(hashes.iter()).zip(&out[start..]);
            hot.with_mine(|h| h.record_run(now, reads.map(|((k, &hash), f)| (&k[..], hash, !is_missing(f)))));
        }
        let hits = out[start..].iter().filter(|f| !is_missing(f)).count();
        if hits > 0 {
            self.metrics.hits.inc_by(hits as u64);
        }
        hits < keys.len()
    }

    /// Inserts what a fetch sent at `sent` found, for the keys nothing
    /// changed since their stamps were taken.
    pub(super) fn insert_fetched(
        &self,
        keys: &[Bytes],
        stamps: &[Stamp],
        fetched: &[Fetched],
        sent: Instant,
    ) {
        let entries: Vec<Option<(u64, Entry, Option<Duration>)>> = keys
            .iter()
            .zip(fetched)
            .map(|(key, f)| match f {
                Ok(Some(f)) => Some((self.hash(key), Entry::new(key, f.value.clone())?, f.pttl)),
                _ => None,
            })
            .collect();
        let now = Instant::now();
        self.with_store(|s| {
            for ((key, entry), &stamp) in keys.iter().zip(entries).zip(stamps) {
                let Some((hash, entry, pttl)) = entry else {
                    continue;
                };
                if !self.generations.is_current(key, stamp) {
                    continue;
                }
                // Redis measured the PTTL somewhere between `sent` and
                // `now`; counting it from `sent` keeps our expiry no later
                // than Redis's.
                let ttl = pttl.map_or(Duration::MAX, |pttl| pttl.saturating_sub(now - sent));
                s.insert(entry, hash, now, ttl);
            }
        });
    }

    /// After a write of `key` sent at `sent`: its new value cached for `ttl`
    /// (counted from `sent`) if given and nothing changed the key since
    /// `stamp` (checked under the lock, as a fetch's insert is), else the
    /// key dropped.
    pub(super) fn written(
        &self,
        key: &Bytes,
        value: &[u8],
        stamp: Stamp,
        ttl: Option<Duration>,
        sent: Instant,
    ) {
        let hash = self.hash(key);
        let now = Instant::now();
        // A copy: the value may be a slice of a client's read buffer, which
        // a cached entry must not keep alive.
        let entry = ttl.and_then(|ttl| {
            let entry = Entry::new(key, Bytes::copy_from_slice(value))?;
            Some((entry, ttl.saturating_sub(now - sent)))
        });
        self.with_store(|s| match entry {
            Some((entry, ttl)) if self.generations.is_current(key, stamp) => s.insert(entry, hash, now, ttl),
            _ => {
                s.remove(key, hash);
            }
        });
    }

    /// Drops `keys`.
    pub(super) fn remove(&self, keys: &[Bytes]) {
        let hashes: Vec<u64> = keys.iter().map(|k| self.hash(k)).collect();
        self.with_store(|s| {
            for (key, &hash) in keys.iter().zip(&hashes) {
                s.remove(key, hash);
            }
        });
    }

    /// Runs `f` on the store under its lock and publishes what changed.
    fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = self.store.lock();
        let r = f(&mut store);
        let events = store.take_events();
        let (entries, bytes) = (store.len(), store.bytes());
        drop(store);
        if events.evicted > 0 {
            self.metrics.evictions.inc_by(events.evicted);
        }
        if events.expired > 0 {
            self.metrics.expirations.inc_by(events.expired);
        }
        // Read before writing: a hit changes neither, and a store to a
        // shared cache line on every hit would cost more than the load.
        if self.metrics.entries.get() != entries as i64 {
            self.metrics.entries.set(entries as i64);
        }
        if self.metrics.bytes.get() != bytes as i64 {
            self.metrics.bytes.set(bytes as i64);
        }
        r
    }
}

/// What [`Local::cached_each`] leaves for a key it did not hold.
pub(super) const MISSING: Found = Found {
    value: None,
    source: Source::Miss,
};

/// Whether `found` is [`MISSING`]'s placeholder (a hit always has a value).
pub(super) fn is_missing(found: &Result<Found, Error>) -> bool {
    matches!(found, Ok(Found { value: None, .. }))
}

/// A hit as the lookup answers it, its value out of the store.
fn found(hit: Hit<'_>) -> Found {
    let value = match hit.value {
        Value::Inline(v) => copy_out(v),
        Value::Shared(v) => v,
    };
    Found {
        value: Some(value),
        source: Source::Hit { age: hit.age },
    }
}

const ARENA_CHUNK: usize = 64 * 1024;

thread_local! {
    /// Where this thread copies hits' values: one allocation serves many
    /// hits, and is freed when the last of them is.
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

fn copy_out(value: &[u8]) -> Bytes {
    if value.len() > ARENA_CHUNK / 8 {
        return Bytes::copy_from_slice(value);
    }
    ARENA.with(|arena| {
        let mut arena = arena.borrow_mut();
        if arena.capacity() - arena.len() < value.len() {
            *arena = BytesMut::with_capacity(ARENA_CHUNK);
        }
        arena.extend_from_slice(value);
        arena.split().freeze()
    })
}

impl Coherence for Local {
    fn heard_from(&self, sent: Instant) {
        self.lease.renew(sent);
    }

    fn lost(&self) {
        self.lease.revoke();
    }

    fn invalidate_slots(&self, slots: &[u16], reason: FlushReason) {
        if slots.is_empty() {
            return;
        }
        let mut dropping = vec![false; crate::cluster::SLOTS];
        for &s in slots {
            dropping[s as usize] = true;
        }
        // Bump first, as for a key: a read in flight does not insert.
        self.generations.bump_all();
        let dropped = self.with_store(|s| s.retain(|key| !dropping[crate::cluster::slot_of(key) as usize]));
        self.metrics.flush(reason);
        tracing::debug!(target: "cache", slots = slots.len(), dropped, ?reason, "dropped the entries of some slots");
    }

    fn heard_from_slots(&self, slots: &[u16], sent: Instant) {
        self.lease.renew_slots(slots.iter().copied(), sent);
    }

    fn lost_slots(&self, slots: &[u16]) {
        self.lease.revoke_slots(slots.iter().copied());
    }

    fn invalidate(&self, keys: &[Bytes]) {
        // Bump first: a read that checks its stamp after this does not
        // insert, and one that inserted before is removed below.
        for key in keys {
            self.generations.bump(key);
        }
        self.remove(keys);
    }

    fn invalidate_all(&self, reason: FlushReason) {
        self.generations.bump_all();
        // O(1) under the lock: a fresh store is swapped in, and the old one
        // is freed outside it.
        let fresh = Store::with_hasher(self.bounds, self.hasher.clone());
        let old = std::mem::replace(&mut *self.store.lock(), fresh);
        self.metrics.flush(reason);
        self.metrics.entries.set(0);
        self.metrics.bytes.set(0);
        if old.len() > FREE_INLINE
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn_blocking(move || drop(old));
        }
    }
}
