//! The races between a read, a write, an invalidation and a reconnect, each
//! forced with a pause point against a real redis-server: the read's reply
//! has arrived but is not inserted yet, and the test makes the other event
//! happen right there. Each test fails if the check it names is removed.

#[path = "../../tests/common/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis_server::RedisServer;
use tokio::task::{JoinHandle, block_in_place};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::cache::Store;
use crate::config::Invalidation;
use crate::metrics::{FlushReason, ReasonLabels};

const DEADLINE: Duration = Duration::from_secs(10);

/// A real Redis, and a lookup in front of it whose backend is connected.
struct Harness {
    redis: RedisServer,
    lookup: Arc<Lookup>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn harness(mode: Invalidation, backend_timeout: Duration) -> Harness {
    let redis = block_in_place(RedisServer::start);
    let metrics = Arc::new(Metrics::new());
    let store = Store::new(1000, None, Duration::from_secs(3600));
    let local = Arc::new(Local::new(store, metrics.clone()));
    let backend = Backend::new(
        &redis.url(),
        None,
        backend_timeout,
        mode,
        local.clone(),
        metrics.clone(),
    );
    let backend = Arc::new(backend.unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(backend.clone().supervise(stop.clone()));
    let lookup = Arc::new(Lookup::new(local, Reads::Redis(backend), metrics.clone()));
    let h = Harness {
        redis,
        lookup,
        metrics,
        stop,
    };
    h.until("the backend to connect", || h.lookup.reads().is_ready())
        .await;
    h
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

impl Harness {
    /// A command on Redis directly, as another client.
    fn direct(&self, args: &[&str]) {
        block_in_place(|| self.redis.cmd(args));
    }

    async fn until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Reads `key` until it is `want`; panics after the deadline with what
    /// it read last.
    async fn until_value(&self, key: &str, want: Option<&str>) {
        let start = Instant::now();
        loop {
            let got = self.lookup.get(b(key)).await.map(|f| f.value);
            if got
                .as_ref()
                .is_ok_and(|v| v.as_deref() == want.map(str::as_bytes))
            {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{key} still reads {got:?}, not {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn value(&self, key: &str) -> Option<Bytes> {
        self.lookup.get(b(key)).await.unwrap().value
    }

    fn flushes(&self, reason: FlushReason) -> u64 {
        let labels = ReasonLabels {
            reason: reason.as_str(),
        };
        self.metrics.cache_flushes.get_or_create(&labels).get()
    }

    fn spawn_get(&self, key: &str) -> JoinHandle<Result<Found, Error>> {
        let (lookup, key) = (self.lookup.clone(), b(key));
        tokio::spawn(async move { lookup.get(key).await })
    }
}

fn value_of(found: Result<Found, Error>) -> Option<Bytes> {
    found.unwrap().value
}

/// How a test reads: one GET, an MGET, or a run of pipelined GETs. All
/// three must obey the same rules.
#[derive(Clone, Copy, Debug)]
enum Read {
    Get,
    Mget,
    Pipelined,
}

impl Read {
    const ALL: [Read; 3] = [Read::Get, Read::Mget, Read::Pipelined];

    /// Reads `key` (with `other` alongside, for the batched kinds) in a
    /// task; the answer for `key`.
    fn spawn(self, h: &Harness, key: &str, other: &str) -> JoinHandle<Option<Bytes>> {
        let lookup = h.lookup.clone();
        let keys = vec![b(key), b(other)];
        tokio::spawn(async move {
            match self {
                Read::Get => lookup.get(keys[0].clone()).await.unwrap().value,
                Read::Mget => lookup.get_many(&keys).await.unwrap()[0].value.clone(),
                Read::Pipelined => {
                    let mut each = lookup.get_each(&keys).await;
                    each.swap_remove(0).unwrap().value
                }
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_handled_after_the_invalidation_of_a_later_write_is_not_inserted() {
    let h = harness(Invalidation::Tracking, Duration::from_secs(5)).await;
    for (i, read) in Read::ALL.into_iter().enumerate() {
        let (key, other) = (format!("k{i}"), format!("other{i}"));
        h.direct(&["SET", &key, "old"]);
        h.direct(&["SET", &other, "x"]);
        let invalidations = h.metrics.invalidations.get();
        let gate = h.lookup.pauses.arm("fetched");
        let reader = read.spawn(&h, &key, &other);
        // The GET ran in Redis and its reply ("old") arrived; not inserted.
        gate.arrived().await;
        h.direct(&["SET", &key, "new"]);
        h.until("the invalidation", || {
            h.metrics.invalidations.get() > invalidations
        })
        .await;
        gate.release();
        // The read raced the write: its own answer may be either value.
        assert_eq!(reader.await.unwrap(), Some(b("old")), "{read:?}");
        // But "old" must not have been cached after the invalidation.
        assert_eq!(h.value(&key).await, Some(b("new")), "{read:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_starts_after_an_invalidation_does_not_join_an_older_flight() {
    let h = harness(Invalidation::Tracking, Duration::from_secs(5)).await;
    for (i, read) in Read::ALL.into_iter().enumerate() {
        let (key, other) = (format!("k{i}"), format!("other{i}"));
        h.direct(&["SET", &key, "old"]);
        let invalidations = h.metrics.invalidations.get();
        let gate = h.lookup.pauses.arm("fetched");
        let first = h.spawn_get(&key);
        gate.arrived().await;
        h.direct(&["SET", &key, "new"]);
        h.until("the invalidation", || {
            h.metrics.invalidations.get() > invalidations
        })
        .await;
        // Joining the paused flight would wait for it and answer "old".
        let second = read.spawn(&h, &key, &other);
        let second = tokio::time::timeout(DEADLINE, second)
            .await
            .expect("the read after the invalidation waited on the older flight");
        assert_eq!(second.unwrap(), Some(b("new")), "{read:?}");
        gate.release();
        assert_eq!(value_of(first.await.unwrap()), Some(b("old")));
    }
    assert_eq!(h.metrics.singleflight_joins.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_handled_after_a_flushall_is_not_inserted() {
    let h = harness(Invalidation::Tracking, Duration::from_secs(5)).await;
    for (i, read) in Read::ALL.into_iter().enumerate() {
        let (key, other) = (format!("k{i}"), format!("other{i}"));
        h.direct(&["SET", &key, "old"]);
        let flushes = h.flushes(FlushReason::Flushall);
        let gate = h.lookup.pauses.arm("fetched");
        let reader = read.spawn(&h, &key, &other);
        gate.arrived().await;
        h.direct(&["FLUSHALL"]);
        h.until("the null invalidation", || {
            h.flushes(FlushReason::Flushall) > flushes
        })
        .await;
        gate.release();
        assert_eq!(reader.await.unwrap(), Some(b("old")), "{read:?}");
        assert_eq!(
            h.value(&key).await,
            None,
            "{read:?}: a value from before FLUSHALL"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_from_a_connection_that_was_lost_is_not_inserted() {
    let h = harness(Invalidation::Tracking, Duration::from_secs(5)).await;
    for (i, read) in Read::ALL.into_iter().enumerate() {
        let (key, other) = (format!("k{i}"), format!("other{i}"));
        h.direct(&["SET", &key, "old"]);
        let flushes = h.flushes(FlushReason::Disconnected);
        let gate = h.lookup.pauses.arm("fetched");
        let reader = read.spawn(&h, &key, &other);
        gate.arrived().await;
        // Every client but this one: the proxy's connection, with what it
        // tracked. The write then reaches no one.
        h.direct(&["CLIENT", "KILL", "TYPE", "normal"]);
        h.until("the lost connection to drop everything", || {
            h.flushes(FlushReason::Disconnected) > flushes
        })
        .await;
        h.direct(&["SET", &key, "new"]);
        gate.release();
        assert_eq!(reader.await.unwrap(), Some(b("old")), "{read:?}");
        h.until("the reconnect", || h.lookup.reads().is_ready()).await;
        h.until_value(&key, Some("new")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_set_through_the_proxy_is_invalidated_by_a_later_direct_write() {
    let h = harness(Invalidation::Tracking, Duration::from_secs(5)).await;
    h.lookup.set(b("k"), b("v1")).await.unwrap();
    let found = h.lookup.get(b("k")).await.unwrap();
    assert!(matches!(found.source, Source::Hit { .. }), "fresh in the cache");
    assert_eq!(found.value, Some(b("v1")));
    h.direct(&["SET", "k", "v2"]);
    h.until_value("k", Some("v2")).await;
    h.lookup.set(b("k"), b("v3")).await.unwrap();
    h.direct(&["DEL", "k"]);
    h.until_value("k", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_between_a_writes_check_and_its_insert_wins() {
    let h = harness(Invalidation::Tracking, Duration::from_secs(5)).await;
    let gate = h.lookup.pauses.arm("write_checked");
    let writer = {
        let lookup = h.lookup.clone();
        tokio::spawn(async move { lookup.set(b("k"), b("mine")).await })
    };
    // The SET is done, its echo applied, and nothing else seen: the write
    // has decided its value may be cached, but has not inserted it yet.
    gate.arrived().await;
    let invalidations = h.metrics.invalidations.get();
    h.direct(&["SET", "k", "theirs"]);
    h.until("the invalidation", || {
        h.metrics.invalidations.get() > invalidations
    })
    .await;
    gate.release();
    writer.await.unwrap().unwrap();
    // Redis no longer tracks k for us: "mine" cached now would stay.
    assert_eq!(h.value("k").await, Some(b("theirs")));
}

/// A client that hangs up mid-write drops the write's future between its
/// two generation bumps, while a read that raced the write has inserted the
/// old value: the write must still finish, or the old value stays cached.
async fn a_write_abandoned_by_its_client_still_finishes(mode: Invalidation) {
    let h = harness(mode, Duration::from_secs(5)).await;
    h.direct(&["SET", "k", "old"]);
    let bumped = h.lookup.pauses.arm("write_bumped");
    let replied = h.lookup.pauses.arm("write_replied");
    let fetched = h.lookup.pauses.arm("fetched");
    let writer = {
        let lookup = h.lookup.clone();
        tokio::spawn(async move { lookup.set(b("k"), b("new")).await })
    };
    bumped.arrived().await;
    // A read stamped after the write's first bump, whose GET runs before
    // the SET: it reads "old" and may insert it.
    let reader = h.spawn_get("k");
    fetched.arrived().await;
    bumped.release();
    replied.arrived().await;
    // The client hangs up: its handler (this task) is dropped.
    writer.abort();
    assert!(writer.await.unwrap_err().is_cancelled());
    fetched.release();
    assert_eq!(value_of(reader.await.unwrap()), Some(b("old")));
    replied.release();
    if mode == Invalidation::Tracking {
        // Redis's invalidation of the write (applied before the write
        // replied) keeps the old value out; what only the write's own
        // bookkeeping does is cache the new value.
        h.until("the write to cache its value", || h.metrics.entries.get() == 1)
            .await;
        let misses = h.metrics.misses.get();
        assert_eq!(h.value("k").await, Some(b("new")));
        assert_eq!(h.metrics.misses.get(), misses, "served from the cache");
    } else {
        h.until_value("k", Some("new")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_abandoned_by_its_client_still_finishes_with_tracking() {
    a_write_abandoned_by_its_client_still_finishes(Invalidation::Tracking).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_abandoned_by_its_client_still_finishes_with_ttl() {
    a_write_abandoned_by_its_client_still_finishes(Invalidation::Ttl).await;
}

/// A write that times out may still happen in Redis: the key is dropped.
async fn a_write_that_times_out_drops_the_key(mode: Invalidation) {
    let h = harness(mode, Duration::from_millis(300)).await;
    h.direct(&["SET", "k", "old"]);
    assert_eq!(h.value("k").await, Some(b("old")));
    h.direct(&["CLIENT", "PAUSE", "1500", "WRITE"]);
    let err = h.lookup.set(b("k"), b("new")).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    // Dropped at once: Redis has not run the SET yet, so no invalidation
    // would have dropped it.
    assert_eq!(h.metrics.entries.get(), 0, "the key is still cached");
    // Once Redis runs the SET, the proxy must not still serve "old".
    h.until_value("k", Some("new")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_times_out_drops_the_key_with_tracking() {
    a_write_that_times_out_drops_the_key(Invalidation::Tracking).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_times_out_drops_the_key_with_ttl() {
    a_write_that_times_out_drops_the_key(Invalidation::Ttl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_mode_keeps_a_value_changed_in_redis_until_it_expires() {
    // The behaviour `tracking` exists to fix, kept on purpose in `ttl`.
    let h = harness(Invalidation::Ttl, Duration::from_secs(5)).await;
    h.direct(&["SET", "k", "old"]);
    assert_eq!(h.value("k").await, Some(b("old")));
    h.direct(&["SET", "k", "new"]);
    assert_eq!(h.value("k").await, Some(b("old")));
    assert_eq!(h.metrics.invalidations.get(), 0);
    assert_eq!(h.metrics.tracking.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_joined_a_flight_whose_client_hung_up_still_gets_its_answer() {
    let h = harness(Invalidation::Tracking, Duration::from_secs(5)).await;
    h.direct(&["SET", "k", "v"]);
    let gate = h.lookup.pauses.arm("fetched");
    // The first read fetches in its own task, and stops with the reply in hand.
    let leader = h.spawn_get("k");
    gate.arrived().await;
    let joiner = h.spawn_get("k");
    h.until("the second read to join", || {
        h.metrics.singleflight_joins.get() == 1
    })
    .await;
    // Its client hangs up: its task is dropped before it answers.
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    // The read that joined it neither fails nor reads a nil.
    let found = tokio::time::timeout(DEADLINE, joiner)
        .await
        .expect("the joiner waited forever");
    assert_eq!(value_of(found.unwrap()), Some(b("v")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_whose_clients_all_hang_up_still_caches_its_value() {
    // A Redis slower than its clients' patience: every client gives up,
    // yet the key must end up cached, or every request keeps reaching Redis.
    let h = harness(Invalidation::Tracking, Duration::from_secs(5)).await;
    h.direct(&["SET", "k", "v"]);
    let first = h.lookup.pauses.arm("fetched");
    let leader = h.spawn_get("k");
    first.arrived().await;
    let joiner = h.spawn_get("k");
    h.until("the second read to join", || {
        h.metrics.singleflight_joins.get() == 1
    })
    .await;
    let second = h.lookup.pauses.arm("fetched");
    leader.abort();
    // The fetch goes on without its client: it reaches the pause again.
    second.arrived().await;
    joiner.abort();
    second.release();
    h.until("the value to be cached", || h.lookup.local.cached(b"k").is_some())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_set_through_the_proxy_is_cached_as_a_copy_not_a_slice_of_the_request() {
    let h = harness(Invalidation::Tracking, Duration::from_secs(5)).await;
    // As a RESP SET's value is: a slice of the connection's read buffer.
    let buffer = Bytes::from(vec![b'x'; 1 << 20]);
    let value = buffer.slice(100..100 + crate::cache::INLINE_MAX + 1);
    h.lookup.set(b("k"), value.clone()).await.unwrap();
    let cached = h
        .lookup
        .local
        .cached(b"k")
        .expect("fresh in the cache")
        .value
        .unwrap();
    assert_eq!(cached, value);
    let inside = buffer.as_ptr_range().contains(&cached.as_ptr());
    assert!(!inside, "the cached value keeps the whole read buffer alive");
}
