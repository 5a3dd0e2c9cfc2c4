//! The hot path without I/O: the store's operations at 10,000 and
//! 1,000,000 entries, and a cache hit through `Lookup::get` (the code both
//! front ends call). `make bench` runs these.
//!
//! Last run (2026-12-02, `make bench` from a clean clone, 2 shared cores,
//! the system allocator): store get hit, SipHash of the key included,
//! 73 ns at 10,000 entries, 669 ns at 1,000,000 (three dependent cache
//! misses: table, node, entry); insert with eviction 111 ns / 626 ns; a
//! hit through `Lookup::get` 760 ns, of which the runtime's `block_on` is
//! about a fifth. These machines are noisy: the same benches gave 76, 624,
//! 106, 443 and 596 ns an hour earlier.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use redis_proxy::backend::Backend;
use redis_proxy::cache::{Entry, Store};
use redis_proxy::config::Invalidation;
use redis_proxy::lookup::lease::Lease;
use redis_proxy::lookup::{Local, Lookup, Reads};
use redis_proxy::metrics::Metrics;

const TTL: Duration = Duration::from_secs(3600);

fn keys(n: usize) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(format!("key:{i:08}"))).collect()
}

const VALUE: &[u8; 64] = &[b'v'; 64];

fn put(s: &mut Store, key: &Bytes, now: Instant) {
    let hash = s.hash(key);
    s.insert(
        Entry::new(key, Bytes::from_static(VALUE)).unwrap(),
        hash,
        now,
        TTL,
    );
}

fn filled(n: usize, keys: &[Bytes], now: Instant) -> Store {
    let mut s = Store::new(n, None, TTL);
    for k in keys {
        put(&mut s, k, now);
    }
    s
}

fn store_ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    for n in [10_000usize, 1_000_000] {
        let ks = keys(n);
        let now = Instant::now();
        g.bench_with_input(BenchmarkId::new("get_hit", n), &n, |b, _| {
            let mut s = filled(n, &ks, now);
            let mut i = 0;
            b.iter(|| {
                i = (i + 7919) % n;
                let hash = s.hash(&ks[i]);
                black_box(s.get(&ks[i], hash, now).is_some())
            })
        });
        g.bench_with_input(BenchmarkId::new("insert_evict", n), &n, |b, _| {
            let mut s = filled(n, &ks, now);
            let fresh = keys(2 * n);
            let mut i = n;
            b.iter(|| {
                i = if i + 1 == 2 * n { 0 } else { i + 1 };
                put(&mut s, &fresh[i], now);
            })
        });
    }
    g.finish();
}

/// Hits through `Lookup::get` on 10,000 cached keys, read in turn, each
/// variant's `Local` made by `local` from the filled store.
fn lookup_hits(c: &mut Criterion, name: &str, local: impl FnOnce(Store, Arc<Metrics>) -> Local) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = 10_000;
    let ks = keys(n);
    let metrics = Arc::new(Metrics::new());
    let local = Arc::new(local(filled(n, &ks, Instant::now()), metrics.clone()));
    // Never connected: a hit must not need Redis.
    let backend = Backend::new(
        "redis://127.0.0.1:1/0",
        None,
        Duration::from_secs(1),
        Invalidation::Tracking,
        local.clone(),
        metrics.clone(),
    )
    .unwrap();
    let lookup = Arc::new(Lookup::new(local, Reads::Redis(Arc::new(backend)), metrics));
    let mut i = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            let found = rt.block_on(lookup.get(ks[i].clone())).unwrap();
            black_box(found)
        })
    });
}

fn lookup_hit(c: &mut Criterion) {
    lookup_hits(c, "lookup/get_hit", Local::new);
}

/// A hit under a held tracking lease (the default `tracking` mode's path:
/// one more atomic load and a clock comparison than `lookup/get_hit`),
/// without and with the hot-key sketch (1,024 counters, the default; reads
/// spread evenly over 10,000 keys, its worst case).
fn lookup_hit_leased(c: &mut Criterion) {
    for (name, hot_keys) in [
        ("lookup/get_hit_leased", 0),
        ("lookup/get_hit_leased_hotkeys", 1024),
    ] {
        lookup_hits(c, name, |store, metrics| {
            let lease = Lease::new(Duration::from_secs(3600));
            lease.renew(Instant::now());
            Local::with_lease(store, lease, metrics).with_hot_keys(hot_keys)
        });
    }
}

/// The hot-key sketch on its own: reads of 100 keys (every one holds a
/// counter: the common case of a hot set), and reads spread evenly over
/// 10,000 keys with 1,024 counters (most reads take over the least
/// counter: the worst case).
fn hot_keys(c: &mut Criterion) {
    use redis_proxy::hotkeys::HotKeys;
    use std::hash::{BuildHasher, RandomState};
    let mut g = c.benchmark_group("hotkeys");
    let hasher = RandomState::new();
    for n in [100usize, 10_000] {
        let ks = keys(n);
        let hashes: Vec<u64> = ks.iter().map(|k| hasher.hash_one(&k[..])).collect();
        let now = Instant::now();
        g.bench_with_input(BenchmarkId::new("record", n), &n, |b, _| {
            let mut h = HotKeys::new(1024, now);
            let tick = h.tick(now);
            let mut i = 0;
            b.iter(|| {
                i = (i + 7919) % n;
                h.record(&ks[i], hashes[i], true, tick, 1);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, store_ops, lookup_hit, lookup_hit_leased, hot_keys);
criterion_main!(benches);
