//! The protocol-agnostic read path: cache → single flight → backend →
//! insert. Both front ends call [`Lookup::get`]; neither sees the cache.
//!
//! A hit takes one short mutex section and clones a `Bytes` (a reference
//! count); nothing is held across an await. A miss registers a flight for
//! its key; later misses on that key wait on the same flight, so any number
//! of concurrent misses cost one Redis round trip. The flight runs in its
//! own task, so a client that hangs up does not cancel it for the others.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::backend::Backend;
use crate::cache::Store;
use crate::error::Error;
use crate::metrics::Metrics;

/// What a lookup found: the value (None: Redis has no such key) and
/// whether it came from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub value: Option<Bytes>,
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Served from the cache; `age` since it was inserted.
    Hit { age: Duration },
    /// Asked Redis (or waited on a request to Redis already in flight).
    Miss,
}

type Outcome = Result<Option<Bytes>, Error>;
type Flight = watch::Receiver<Option<Outcome>>;

/// A Redis GET in progress for one key, and the generation it started
/// under: only lookups that start under the same generation join it, so a
/// read that follows a write never gets an answer read before that write.
struct InFlight {
    generation: u64,
    flight: Flight,
}

/// The flights one lookup started and must launch: their keys, the
/// generation each was registered under, and their senders.
#[derive(Default)]
struct NewFlights {
    keys: Vec<Bytes>,
    generations: Vec<u64>,
    senders: Vec<watch::Sender<Option<Outcome>>>,
}

/// Write generations, one counter per shard of the key space. A write bumps
/// its key's counter before it is sent and after it completes; a fetch that
/// saw an older value of its key's counter does not insert, so a GET that
/// raced a write cannot put the old value back. Sharding keeps a write to
/// one key from stopping misses on all the others from being cached.
struct Generations {
    shards: Box<[AtomicU64]>,
}

impl Generations {
    const SHARDS: usize = 1024;

    fn new() -> Self {
        Generations {
            shards: (0..Self::SHARDS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn of(&self, key: &[u8]) -> &AtomicU64 {
        // A fixed hash: a client that makes its keys collide only makes its
        // own misses less often cached.
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[h.finish() as usize % Self::SHARDS]
    }

    fn get(&self, key: &[u8]) -> u64 {
        self.of(key).load(Ordering::Acquire)
    }

    /// Bumps `key`'s counter and returns its new value.
    fn bump(&self, key: &[u8]) -> u64 {
        self.of(key).fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// One key of a lookup: answered already, or waiting on a flight.
enum Slot {
    Ready(Found),
    Waiting(Flight),
}

/// Removes a task's flights however the task ends, panics included, so a
/// key is never left joined to a flight that will not answer. Only its own:
/// a newer flight for the same key may have replaced one of them.
struct FlightGuard {
    lookup: Arc<Lookup>,
    keys: Vec<Bytes>,
    flights: Vec<Flight>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut flights = self.lookup.flights.lock();
        for (key, mine) in self.keys.iter().zip(&self.flights) {
            if flights.get(key).is_some_and(|f| f.flight.same_channel(mine)) {
                flights.remove(key);
            }
        }
    }
}

impl Slot {
    async fn wait(self) -> Result<Found, Error> {
        match self {
            Slot::Ready(found) => Ok(found),
            Slot::Waiting(mut flight) => {
                let outcome = match flight.wait_for(Option::is_some).await {
                    Ok(done) => done.clone().expect("waited for Some"),
                    Err(_) => Err(Error::unavailable("the request to Redis was abandoned")),
                };
                outcome.map(|value| Found {
                    value,
                    source: Source::Miss,
                })
            }
        }
    }
}

pub struct Lookup {
    store: Mutex<Store>,
    flights: Mutex<HashMap<Bytes, InFlight>>,
    generations: Generations,
    backend: Arc<Backend>,
    metrics: Arc<Metrics>,
}

impl Lookup {
    pub fn new(store: Store, backend: Arc<Backend>, metrics: Arc<Metrics>) -> Self {
        Lookup {
            store: Mutex::new(store),
            flights: Mutex::new(HashMap::new()),
            generations: Generations::new(),
            backend,
            metrics,
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The value of `key`, from the cache if held, else from Redis.
    pub async fn get(self: &Arc<Self>, key: Bytes) -> Result<Found, Error> {
        let mut new = NewFlights::default();
        let slot = self.begin(key, &mut new);
        self.launch(new);
        slot.wait().await
    }

    /// The values of `keys` in order, each with its own outcome (pipelined
    /// GETs). Hits come from the cache; the missing keys that no one is
    /// fetching yet are fetched together, in one round trip; those already
    /// in flight are waited on.
    pub async fn get_each(self: &Arc<Self>, keys: &[Bytes]) -> Vec<Result<Found, Error>> {
        let mut new = NewFlights::default();
        let slots: Vec<Slot> = keys.iter().map(|k| self.begin(k.clone(), &mut new)).collect();
        self.launch(new);
        let mut found = Vec::with_capacity(slots.len());
        for slot in slots {
            found.push(slot.wait().await);
        }
        found
    }

    /// MGET: as [`Lookup::get_each`], but one failure fails it all, and a
    /// key holding a non-string is `None`, as Redis's MGET has it.
    pub async fn get_many(self: &Arc<Self>, keys: &[Bytes]) -> Result<Vec<Found>, Error> {
        self.get_each(keys)
            .await
            .into_iter()
            .map(|found| match found {
                Err(Error::WrongType(_)) => Ok(Found {
                    value: None,
                    source: Source::Miss,
                }),
                other => other,
            })
            .collect()
    }

    /// A hit, a flight to join, or a new flight (added to `new`, for
    /// [`Lookup::launch`] to start).
    fn begin(&self, key: Bytes, new: &mut NewFlights) -> Slot {
        if let Some(found) = self.cached(&key) {
            return Slot::Ready(found);
        }
        let generation = self.generations.get(&key);
        let mut flights = self.flights.lock();
        if let Some(f) = flights.get(&key)
            && f.generation == generation
        {
            self.metrics.singleflight_joins.inc();
            self.metrics.misses.inc();
            return Slot::Waiting(f.flight.clone());
        }
        if let Some(found) = self.cached(&key) {
            // A flight for this key finished between our two looks.
            return Slot::Ready(found);
        }
        self.metrics.misses.inc();
        let (tx, rx) = watch::channel(None);
        let entry = InFlight {
            generation,
            flight: rx.clone(),
        };
        flights.insert(key.clone(), entry);
        new.keys.push(key);
        new.generations.push(generation);
        new.senders.push(tx);
        Slot::Waiting(rx)
    }

    /// Starts the Redis round trip for new flights, in a task of its own so
    /// that a client hanging up does not cancel it for the others.
    fn launch(self: &Arc<Self>, new: NewFlights) {
        if new.keys.is_empty() {
            return;
        }
        let guard = FlightGuard {
            lookup: Arc::clone(self),
            flights: new.senders.iter().map(|tx| tx.subscribe()).collect(),
            keys: new.keys,
        };
        let generations = new.generations;
        let senders = new.senders;
        tokio::spawn(async move {
            let mut outcomes = guard.lookup.fetch(&guard.keys, &generations).await.into_iter();
            for tx in senders {
                let outcome = outcomes
                    .next()
                    .unwrap_or_else(|| Err(Error::Reply("Redis sent fewer replies than keys".into())));
                let _ = tx.send(Some(outcome));
            }
            drop(guard);
        });
    }

    fn cached(&self, key: &[u8]) -> Option<Found> {
        let hit = self.with_store(|s| s.get(key, Instant::now()))?;
        self.metrics.hits.inc();
        Some(Found {
            value: Some(hit.value),
            source: Source::Hit { age: hit.age },
        })
    }

    /// One outcome per key: GET+PTTL for one key, MGET+PTTLs for several,
    /// one round trip either way. Values are inserted unless a write or
    /// invalidation of that key happened since its generation was read.
    async fn fetch(&self, keys: &[Bytes], generations: &[u64]) -> Vec<Outcome> {
        let sent = Instant::now();
        let fetched = match keys {
            [key] => vec![self.backend.get(key).await],
            _ => match self.backend.get_many(keys).await {
                Ok(each) => each,
                Err(e) => vec![Err(e); keys.len()],
            },
        };
        let now = Instant::now();
        self.with_store(|s| {
            for ((key, f), &generation) in keys.iter().zip(&fetched).zip(generations) {
                if self.generations.get(key) != generation {
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
        fetched
            .into_iter()
            .map(|f| f.map(|found| found.map(|f| f.value)))
            .collect()
    }

    /// `SET key value` on Redis, then the fresh value in the cache — unless
    /// another write or invalidation happened meanwhile (Redis may have
    /// applied them in either order) or the write failed (Redis may or may
    /// not have it): then the key is dropped, and the next read asks Redis.
    pub async fn set(&self, key: Bytes, value: Bytes) -> Result<(), Error> {
        let before = self.generations.bump(&key);
        let result = self.backend.set(&key, &value).await;
        self.with_store(|s| {
            let alone = self.generations.bump(&key) == before + 1;
            if alone && result.is_ok() {
                s.insert(key, value, Instant::now(), Duration::MAX);
            } else {
                s.remove(&key);
            }
        });
        result
    }

    /// A write command sent through to Redis as it is (SET with options,
    /// DEL, …). `keys` are dropped from the cache whatever the outcome, and
    /// reads or writes in flight meanwhile do not insert.
    pub async fn write_through(&self, args: &[Bytes], keys: &[Bytes]) -> Result<redis::Value, Error> {
        for key in keys {
            self.generations.bump(key);
        }
        let result = self.backend.forward(args).await;
        self.with_store(|s| {
            for key in keys {
                self.generations.bump(key);
                s.remove(key);
            }
        });
        result
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
