//! The protocol-agnostic read path: cache → single flight → backend →
//! insert. Both front ends call [`Lookup::get`]; neither sees the cache.
//!
//! A hit takes one short mutex section and copies its value out; nothing
//! is held across an await. A miss registers a flight for its key
//! (`flight`); later misses on that key wait on the same flight, so any
//! number of concurrent misses cost one Redis round trip. The lookup that
//! started a flight fetches it in its own task; if its client hangs up, the
//! others ask again.
//!
//! What keeps the cache coherent is in [`generation`]: a fetched value is
//! inserted only if nothing changed its key (a write through the proxy, an
//! invalidation from Redis, a dropped connection) between the moment the
//! read was stamped, before it was sent, and the insert. Writes run in
//! tasks of their own, so that their bookkeeping always finishes.

mod flight;
pub mod generation;
pub mod lease;
mod local;
#[cfg(test)]
mod pause;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::backend::{Backend, Written};
use crate::cluster::Cluster;
use crate::config::Invalidation;
use crate::error::Error;
use crate::metrics::Metrics;
use flight::{Batch, Begun, Flights, NewFlights, Outcome};
use generation::Stamp;
use local::Fetched;
pub use local::Local;

/// Most keys in one MGET sent to Redis.
pub const MGET_CHUNK: usize = 1000;

/// Stops at a named point when a test armed it; nothing outside tests.
macro_rules! pause_point {
    ($lookup:expr, $point:literal) => {
        #[cfg(test)]
        $lookup.pauses.reach($point).await;
    };
}

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

/// Where cached reads come from: one Redis, or the masters of a cluster.
#[derive(Clone)]
pub enum Reads {
    Redis(Arc<Backend>),
    Cluster(Arc<Cluster>),
}

impl Reads {
    /// Whether the proxy can serve (see [`Backend::is_ready`],
    /// [`Cluster::is_ready`]).
    pub fn is_ready(&self) -> bool {
        match self {
            Reads::Redis(b) => b.is_ready(),
            Reads::Cluster(c) => c.is_ready(),
        }
    }

    pub fn mode(&self) -> Invalidation {
        match self {
            Reads::Redis(b) => b.mode(),
            Reads::Cluster(c) => c.mode(),
        }
    }

    /// Every invalidation Redis queued before this call has been applied
    /// (see [`Backend::caught_up`]).
    pub async fn caught_up(&self) {
        match self {
            Reads::Redis(b) => b.caught_up().await,
            Reads::Cluster(c) => c.caught_up().await,
        }
    }

    /// Keeps the connections (and, for a cluster, the slot map) until
    /// `shutdown`.
    pub fn supervise(&self, shutdown: tokio_util::sync::CancellationToken) {
        match self {
            Reads::Redis(b) => drop(tokio::spawn(b.clone().supervise(shutdown))),
            Reads::Cluster(c) => drop(tokio::spawn(c.clone().supervise(shutdown))),
        }
    }
}

/// The read path shared by every front end. Reads go cache → single
/// flight → Redis → insert; writes go to Redis and leave the cache as
/// coherent as the invalidation mode allows (see the module doc).
pub struct Lookup {
    local: Arc<Local>,
    flights: Flights,
    reads: Reads,
    metrics: Arc<Metrics>,
    #[cfg(test)]
    pauses: pause::Pauses,
}

impl Lookup {
    /// The read path over `local`, fetching from `backend` (which must have
    /// been given the same `local` to invalidate).
    pub fn new(local: Arc<Local>, reads: Reads, metrics: Arc<Metrics>) -> Self {
        Lookup {
            local,
            flights: Flights::default(),
            reads,
            metrics,
            #[cfg(test)]
            pauses: pause::Pauses::default(),
        }
    }

    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// The value of `key`, from the cache if held, else from Redis.
    pub async fn get(self: &Arc<Self>, key: Bytes) -> Result<Found, Error> {
        loop {
            if let Some(found) = self.local.cached(&key) {
                return Ok(found);
            }
            let mut new = NewFlights::default();
            let begun = self.begin_misses(std::iter::once(key.clone()), &mut new).pop();
            let mine = new.batch();
            self.fly(new).await;
            if let Some(found) = answer(begun.expect("one key"), mine.as_ref()).await {
                return found;
            }
        }
    }

    /// The values of `keys` in order, each with its own outcome (pipelined
    /// GETs). Hits come from the cache; the missing keys that no one is
    /// fetching yet are fetched together, in one round trip; those already
    /// in flight are waited on.
    pub async fn get_each(self: &Arc<Self>, keys: &[Bytes]) -> Vec<Result<Found, Error>> {
        let mut out = Vec::with_capacity(keys.len());
        self.get_each_into(keys, &mut out).await;
        out
    }

    /// [`Lookup::get_each`] into `out` (cleared first): a caller that keeps
    /// `out` between runs makes a run of hits allocate nothing.
    pub async fn get_each_into(self: &Arc<Self>, keys: &[Bytes], out: &mut Vec<Result<Found, Error>>) {
        out.clear();
        // The hits under one lock, then the misses as one batch.
        if !self.local.cached_each(keys, out) {
            return;
        }
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| local::is_missing(&out[i])).collect();
        let mut new = NewFlights::default();
        let begun = self.begin_misses(missing.iter().map(|&i| keys[i].clone()), &mut new);
        let mine = new.batch();
        self.fly(new).await;
        for (i, begun) in missing.into_iter().zip(begun) {
            out[i] = match answer(begun, mine.as_ref()).await {
                Some(found) => found,
                None => self.get(keys[i].clone()).await,
            };
        }
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

    /// Keys just found missing: each joins a flight in progress or goes into
    /// `new`, for [`Lookup::fly`] to fetch.
    fn begin_misses(&self, keys: impl Iterator<Item = Bytes>, new: &mut NewFlights) -> Vec<Begun> {
        // Stamped before anything is sent: whatever changes a key from here
        // on keeps this read's answer out of the cache.
        let stamped = keys.map(|key| {
            let stamp = self.local.generations.stamp(&key);
            (key, stamp)
        });
        let begun = self.flights.begin(stamped, new);
        let joined = begun.iter().filter(|b| matches!(b, Begun::Joined(..))).count();
        self.metrics.misses.inc_by(begun.len() as u64);
        if joined > 0 {
            self.metrics.singleflight_joins.inc_by(joined as u64);
        }
        begun
    }

    /// Fetches the keys this lookup must fetch, as one batch, and answers
    /// everyone waiting on them. It runs in the lookup's own task: a task of
    /// its own would cost a wake-up and a hand-over on every miss. If the
    /// lookup is dropped meanwhile (its client hung up), the [`Fetching`]
    /// guard finishes the fetch in a task of its own when others are
    /// waiting on it, and otherwise abandons it.
    async fn fly(self: &Arc<Self>, new: NewFlights) {
        let Some(batch) = new.batch() else {
            return;
        };
        let fetching = Fetching {
            lookup: Arc::clone(self),
            keys: new.keys,
            stamps: new.stamps,
            batch,
        };
        fetching.run().await;
    }

    /// One outcome per key: GET+PTTL for one key, MGET+PTTLs for several
    /// (one round trip for each [`MGET_CHUNK`] of them). Values are inserted unless something
    /// changed their key since it was stamped.
    async fn fetch(&self, keys: &[Bytes], stamps: &[Stamp]) -> Vec<Outcome> {
        let sent = Instant::now();
        let fetched: Vec<Fetched> = match (&self.reads, keys) {
            (Reads::Cluster(cluster), _) => cluster.get_each(keys).await,
            (Reads::Redis(backend), [key]) => vec![backend.get(key).await],
            (Reads::Redis(backend), _) => {
                // In chunks: one MGET of a million keys would hold Redis,
                // and everyone else's requests, for as long as it takes.
                let mut fetched = Vec::with_capacity(keys.len());
                for chunk in keys.chunks(MGET_CHUNK) {
                    match backend.get_many(chunk).await {
                        Ok(each) => fetched.extend(each),
                        Err(e) => fetched.extend(std::iter::repeat_n(Err(e), chunk.len())),
                    }
                }
                fetched
            }
        };
        pause_point!(self, "fetched");
        self.local.insert_fetched(keys, stamps, &fetched, sent);
        fetched
            .into_iter()
            .map(|f| f.map(|found| found.map(|f| f.value)))
            .collect()
    }

    /// `SET key value` on Redis, then the fresh value in the cache — if
    /// Redis will say when it changes (see [`Backend::set`]), no other
    /// write or invalidation of the key happened meanwhile (Redis may have
    /// applied them in either order), and the write succeeded. Otherwise
    /// the key is dropped, and the next read asks Redis.
    ///
    /// Runs in a task of its own: a client that hangs up mid-write must not
    /// leave the bookkeeping half done (a read that raced the write could
    /// otherwise leave the old value cached).
    pub async fn set(self: &Arc<Self>, key: Bytes, value: Bytes) -> Result<(), Error> {
        let this = Arc::clone(self);
        detached(async move { this.set_now(key, value).await }).await
    }

    async fn set_now(&self, key: Bytes, value: Bytes) -> Result<(), Error> {
        let before = self.local.generations.bump(&key);
        pause_point!(self, "write_bumped");
        let sent = Instant::now();
        let result = match &self.reads {
            Reads::Redis(backend) => backend.set(&key, &value).await,
            Reads::Cluster(cluster) => cluster.set(&key, &value).await,
        };
        pause_point!(self, "write_replied");
        let after = self.local.generations.bump(&key);
        // Our own bump, plus the invalidations the write itself caused:
        // anything more is another write or invalidation that overlapped.
        let ttl = match result {
            Ok(Written::Cacheable { ttl, echoes }) if before.is_followed_by(after, echoes + 1) => Some(ttl),
            _ => None,
        };
        pause_point!(self, "write_checked");
        // Checked again under the lock: an invalidation since `after` has
        // already done its remove.
        let ttl = ttl.map(|ttl| ttl.unwrap_or(Duration::MAX));
        self.local.written(&key, &value, after, ttl, sent);
        result.map(|_| ())
    }
}

/// A batch being fetched. Dropped before it answered, it hands the fetch
/// to a task of its own if anyone joined it, so that a hot key whose
/// clients keep hanging up (a Redis slower than their patience) is still
/// fetched and cached once, instead of never.
struct Fetching {
    lookup: Arc<Lookup>,
    keys: Vec<Bytes>,
    stamps: Vec<Stamp>,
    batch: Arc<Batch>,
}

impl Fetching {
    async fn run(&self) {
        let mut outcomes = self.lookup.fetch(&self.keys, &self.stamps).await;
        outcomes.resize_with(self.keys.len(), || {
            Err(Error::Reply("Redis sent fewer replies than keys".into()))
        });
        self.batch.answer(outcomes);
    }
}

impl Drop for Fetching {
    fn drop(&mut self) {
        let flights = &self.lookup.flights;
        if self.batch.is_answered() {
            flights.finish(&self.keys, &self.batch);
            return;
        }
        if !flights.abandon(&self.keys, &self.batch) {
            return;
        }
        let rest = Fetching {
            lookup: Arc::clone(&self.lookup),
            keys: std::mem::take(&mut self.keys),
            stamps: std::mem::take(&mut self.stamps),
            batch: Arc::clone(&self.batch),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { rest.run().await });
            }
            // No runtime to finish it on (shutting down): give up.
            Err(_) => {
                flights.finish(&rest.keys, &rest.batch);
                rest.batch
                    .answer(vec![Err(Error::unavailable("shutting down")); rest.keys.len()]);
            }
        }
    }
}

/// A missing key's answer: from this lookup's own batch, or from the one it
/// joined; None if that one was abandoned.
async fn answer(begun: Begun, mine: Option<&Arc<Batch>>) -> Option<Result<Found, Error>> {
    let outcome = match begun {
        Begun::Started(i) => mine.and_then(|batch| batch.outcome(i)),
        Begun::Joined(batch, i) => batch.wait(i).await,
    }?;
    Some(outcome.map(|value| Found {
        value,
        source: Source::Miss,
    }))
}

/// Runs `work` to completion in a task of its own, whether or not the
/// caller waits for it.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(work)
        .await
        .unwrap_or_else(|e| Err(Error::internal(format!("the write task failed: {e}"))))
}
