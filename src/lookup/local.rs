//! The local copy of Redis's data: the store behind its lock, and the
//! generations that say whether a value fetched from Redis may still be
//! inserted. Reads insert through it; Redis's invalidations act on it
//! through [`Coherence`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use super::Found;
use super::Source;
use super::generation::{Generations, Stamp};
use crate::backend::Coherence;
use crate::cache::{Bounds, Store};
use crate::error::Error;
use crate::metrics::{FlushReason, Metrics};

/// One key's answer from Redis, as the backend gives it.
pub(super) type Fetched = Result<Option<crate::backend::Fetched>, Error>;

/// The local copy of Redis's data: the store behind its lock, and the
/// generations that say whether a value fetched from Redis may still be
/// inserted. Redis's invalidations act on it through [`Coherence`].
pub struct Local {
    store: Mutex<Store>,
    bounds: Bounds,
    pub(super) generations: Generations,
    metrics: Arc<Metrics>,
}

/// Stores dropped by a flush larger than this are freed on a blocking
/// thread, not on the task that flushed (the Redis connection's).
const FREE_INLINE: usize = 4096;

impl Local {
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Self {
        Local {
            bounds: store.bounds(),
            store: Mutex::new(store),
            generations: Generations::new(),
            metrics,
        }
    }

    /// A hit, counted; None on a miss.
    pub(super) fn cached(&self, key: &[u8]) -> Option<Found> {
        let hit = self.with_store(|s| s.get(key, Instant::now()))?;
        self.metrics.hits.inc();
        Some(Found {
            value: Some(hit.value),
            source: Source::Hit { age: hit.age },
        })
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
        let now = Instant::now();
        self.with_store(|s| {
            for ((key, f), &stamp) in keys.iter().zip(fetched).zip(stamps) {
                if !self.generations.is_current(key, stamp) {
                    continue;
                }
                if let Ok(Some(f)) = f {
                    // Redis measured the PTTL somewhere between `sent` and
                    // `now`; counting it from `sent` keeps our expiry no
                    // later than Redis's.
                    let ttl = match f.pttl {
                        Some(pttl) => pttl.saturating_sub(now - sent),
                        None => Duration::MAX,
                    };
                    s.insert(key.clone(), f.value.clone(), now, ttl);
                }
            }
        });
    }

    /// Runs `f` on the store under its lock and publishes what changed.
    pub(super) fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
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

impl Coherence for Local {
    fn invalidate(&self, keys: &[Bytes]) {
        // Bump first: a read that checks its stamp after this does not
        // insert, and one that inserted before is removed below.
        for key in keys {
            self.generations.bump(key);
        }
        self.with_store(|s| {
            for key in keys {
                s.remove(key);
            }
        });
    }

    fn invalidate_all(&self, reason: FlushReason) {
        self.generations.bump_all();
        // O(1) under the lock: a fresh store is swapped in, and the old one
        // is freed outside it.
        let fresh = Store::with_bounds(self.bounds);
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
