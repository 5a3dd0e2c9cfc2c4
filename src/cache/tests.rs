use super::*;
use proptest::prelude::*;

const TTL: Duration = Duration::from_secs(10);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn get(store: &mut Store, key: &str, now: Instant) -> Option<Bytes> {
    hit(store, key.as_bytes(), now).map(|(value, _)| value)
}

/// A hit's value and age.
fn hit(store: &mut Store, key: &[u8], now: Instant) -> Option<(Bytes, Duration)> {
    let hash = store.hash(key);
    store.get(key, hash, now).map(|h| (h.value.to_bytes(), h.age))
}

fn put(store: &mut Store, key: Bytes, value: Bytes, now: Instant, ttl: Duration) {
    let hash = store.hash(&key);
    store.insert(Entry::new(&key, value).unwrap(), hash, now, ttl);
}

fn remove(store: &mut Store, key: &[u8]) -> bool {
    let hash = store.hash(key);
    store.remove(key, hash)
}

fn entry_size(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64 + ENTRY_OVERHEAD
}

#[test]
fn exactly_capacity_keys_fit() {
    let t0 = Instant::now();
    let mut s = Store::new(3, None, TTL);
    for k in ["a", "b", "c"] {
        put(&mut s, b(k), b(k), t0, TTL);
    }
    assert_eq!(s.len(), 3);
    for k in ["a", "b", "c"] {
        assert_eq!(get(&mut s, k, t0), Some(b(k)));
    }
    put(&mut s, b("d"), b("d"), t0, TTL);
    assert_eq!(s.len(), 3);
    assert_eq!(s.take_events().evicted, 1);
}

#[test]
fn least_recently_read_goes_first() {
    let t0 = Instant::now();
    let mut s = Store::new(3, None, TTL);
    for k in ["a", "b", "c"] {
        put(&mut s, b(k), b(k), t0, TTL);
    }
    // "a" was inserted first but read last, so "b" is the victim.
    get(&mut s, "a", t0);
    put(&mut s, b("d"), b("d"), t0, TTL);
    assert_eq!(get(&mut s, "b", t0), None);
    for k in ["a", "c", "d"] {
        assert_eq!(get(&mut s, k, t0), Some(b(k)), "{k}");
    }
}

#[test]
fn reads_do_not_extend_expiry() {
    let t0 = Instant::now();
    let mut s = Store::new(10, None, TTL);
    put(&mut s, b("k"), b("v"), t0, TTL);
    let read_at = t0 + TTL.mul_f64(0.9);
    let (_, age) = hit(&mut s, b"k", read_at).unwrap();
    assert_eq!(age, TTL.mul_f64(0.9));
    assert_eq!(
        get(&mut s, "k", t0 + TTL - Duration::from_millis(1)),
        Some(b("v"))
    );
    assert_eq!(get(&mut s, "k", t0 + TTL), None);
    assert_eq!(s.take_events().expired, 1);
    assert!(s.is_empty());
}

#[test]
fn shorter_ttl_than_global_is_kept() {
    let t0 = Instant::now();
    let mut s = Store::new(10, None, TTL);
    put(&mut s, b("short"), b("v"), t0, Duration::from_secs(1));
    put(&mut s, b("long"), b("v"), t0, Duration::from_secs(3600));
    assert_eq!(get(&mut s, "short", t0 + Duration::from_secs(1)), None);
    assert_eq!(
        get(&mut s, "long", t0 + TTL - Duration::from_millis(1)),
        Some(b("v"))
    );
    assert_eq!(
        get(&mut s, "long", t0 + TTL),
        None,
        "global ttl caps a longer one"
    );
}

#[test]
fn expired_entries_are_purged_before_evicting_live_ones() {
    let t0 = Instant::now();
    let mut s = Store::new(2, None, TTL);
    put(&mut s, b("old"), b("v"), t0, TTL);
    put(&mut s, b("live"), b("v"), t0 + Duration::from_secs(5), TTL);
    put(&mut s, b("new"), b("v"), t0 + TTL, TTL);
    assert_eq!(
        s.take_events(),
        Events {
            evicted: 0,
            expired: 1
        }
    );
    assert_eq!(get(&mut s, "live", t0 + TTL), Some(b("v")));
}

#[test]
fn replacing_a_key_renews_it() {
    let t0 = Instant::now();
    let mut s = Store::new(2, None, TTL);
    put(&mut s, b("a"), b("1"), t0, TTL);
    put(&mut s, b("b"), b("1"), t0, TTL);
    put(&mut s, b("a"), b("22"), t0 + Duration::from_secs(5), TTL);
    assert_eq!(s.len(), 2);
    assert_eq!(s.bytes(), 2 * ENTRY_OVERHEAD + 2 + 3);
    put(&mut s, b("c"), b("1"), t0 + Duration::from_secs(5), TTL);
    assert_eq!(get(&mut s, "b", t0 + Duration::from_secs(5)), None);
    assert_eq!(get(&mut s, "a", t0 + Duration::from_secs(14)), Some(b("22")));
}

#[test]
fn byte_bound_evicts_least_recently_read() {
    let t0 = Instant::now();
    let max = 2 * ENTRY_OVERHEAD + 10;
    let mut s = Store::new(100, Some(max), TTL);
    put(&mut s, b("a"), b("1234"), t0, TTL); // 5 bytes + overhead
    put(&mut s, b("b"), b("1234"), t0, TTL); // max
    get(&mut s, "a", t0);
    put(&mut s, b("c"), b("1"), t0, TTL); // over max: "b" goes
    assert_eq!(get(&mut s, "b", t0), None);
    assert_eq!(s.bytes(), 2 * ENTRY_OVERHEAD + 7);
    // Too big to ever fit: not stored, and nothing else is evicted for it.
    put(&mut s, b("huge"), Bytes::from(vec![0; 200]), t0, TTL);
    assert_eq!(get(&mut s, "huge", t0), None);
    assert_eq!(s.len(), 2);
}

#[test]
fn zero_capacity_stores_nothing() {
    let t0 = Instant::now();
    let mut s = Store::new(0, None, TTL);
    put(&mut s, b("a"), b("1"), t0, TTL);
    assert!(s.is_empty());
}

#[test]
fn remove_and_a_fresh_store_with_the_same_bounds() {
    let t0 = Instant::now();
    let mut s = Store::new(4, Some(1000), TTL);
    put(&mut s, b("a"), b("1"), t0, TTL);
    put(&mut s, b("b"), b("1"), t0, TTL);
    assert!(remove(&mut s, b"a"));
    assert!(!remove(&mut s, b"a"));
    assert_eq!(s.len(), 1);
    let mut fresh = Store::with_bounds(s.bounds());
    assert!(fresh.is_empty());
    assert_eq!(fresh.bytes(), 0);
    assert_eq!(fresh.bounds(), s.bounds());
    put(&mut fresh, b("c"), b("1"), t0, TTL);
    assert_eq!(get(&mut fresh, "c", t0), Some(b("1")));
}

/// The specification of the store, written as plainly as possible: a vector
/// scanned on every operation.
#[derive(Default)]
struct Model {
    entries: Vec<ModelEntry>,
    tick: u64,
}

struct ModelEntry {
    key: Bytes,
    value: Bytes,
    inserted: Instant,
    expires: Instant,
    insert_seq: u64,
    read_seq: u64,
}

impl Model {
    fn purge_front(&mut self, now: Instant) {
        loop {
            let oldest = self.entries.iter().enumerate().min_by_key(|(_, e)| e.insert_seq);
            match oldest {
                Some((i, e)) if e.expires <= now => {
                    self.entries.remove(i);
                }
                _ => break,
            }
        }
    }

    fn evict_lru(&mut self) {
        let (i, _) = self
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.read_seq)
            .unwrap();
        self.entries.remove(i);
    }

    fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| entry_size(&e.key, &e.value)).sum()
    }

    fn get(&mut self, key: &[u8], now: Instant) -> Option<(Bytes, Duration)> {
        self.purge_front(now);
        self.tick += 1;
        let i = self.entries.iter().position(|e| e.key == key)?;
        if self.entries[i].expires <= now {
            self.entries.remove(i);
            return None;
        }
        let e = &mut self.entries[i];
        e.read_seq = self.tick;
        Some((e.value.clone(), now - e.inserted))
    }

    fn insert(
        &mut self,
        cap: usize,
        max: Option<u64>,
        key: Bytes,
        value: Bytes,
        now: Instant,
        ttl: Duration,
    ) {
        let ttl = ttl.min(TTL);
        self.tick += 1;
        let pos = self.entries.iter().position(|e| e.key == key);
        if cap == 0 || ttl.is_zero() || max.is_some_and(|m| entry_size(&key, &value) > m) {
            if let Some(i) = pos {
                self.entries.remove(i);
            }
            return;
        }
        self.purge_front(now);
        match self.entries.iter_mut().find(|e| e.key == key) {
            Some(e) => {
                e.value = value;
                e.inserted = now;
                e.expires = now + ttl;
                e.insert_seq = self.tick;
                e.read_seq = self.tick;
            }
            None => {
                while self.entries.len() >= cap {
                    self.evict_lru();
                }
                self.entries.push(ModelEntry {
                    key,
                    value,
                    inserted: now,
                    expires: now + ttl,
                    insert_seq: self.tick,
                    read_seq: self.tick,
                });
            }
        }
        while max.is_some_and(|m| self.bytes() > m) {
            self.evict_lru();
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Get(u8),
    Insert(u8, u8, u64),
    Remove(u8),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12).prop_map(Op::Get),
        4 => (0u8..12, 0u8..6, 0u64..15_000).prop_map(|(k, v, ttl)| Op::Insert(k, v, ttl)),
        1 => (0u8..12).prop_map(Op::Remove),
        2 => (0u64..4_000).prop_map(Op::Advance),
    ]
}

proptest! {
    #[test]
    fn store_matches_model(
        cap in 0usize..6,
        max in proptest::option::of(ENTRY_OVERHEAD..4 * ENTRY_OVERHEAD),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let mut now = Instant::now();
        let mut store = Store::new(cap, max, TTL);
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Get(k) => {
                    let key = [k];
                    prop_assert_eq!(hit(&mut store, &key, now), model.get(&key, now), "get {}", k);
                }
                Op::Insert(k, v, ttl) => {
                    let key = Bytes::copy_from_slice(&[k]);
                    let value = Bytes::from(vec![b'v'; v as usize]);
                    let ttl = Duration::from_millis(ttl);
                    put(&mut store, key.clone(), value.clone(), now, ttl);
                    model.insert(cap, max, key, value, now, ttl);
                }
                Op::Remove(k) => {
                    let held = model.entries.iter().position(|e| e.key[..] == [k]);
                    if let Some(i) = held {
                        model.entries.remove(i);
                    }
                    prop_assert_eq!(remove(&mut store, &[k]), held.is_some());
                }
                Op::Advance(ms) => now += Duration::from_millis(ms),
            }
            prop_assert_eq!(store.len(), model.entries.len());
            prop_assert_eq!(store.bytes(), model.bytes());
            prop_assert!(store.len() <= cap);
            prop_assert!(max.is_none_or(|m| store.bytes() <= m));
        }
    }
}

#[test]
fn an_enormous_ttl_is_capped_and_does_not_overflow_the_clock() {
    let t0 = Instant::now();
    let mut s = Store::new(2, None, Duration::MAX);
    put(&mut s, b("k"), b("v"), t0, Duration::MAX);
    let day = Duration::from_secs(3600 * 24);
    assert_eq!(get(&mut s, "k", t0 + 40 * day), Some(b("v")));
    assert_eq!(get(&mut s, "k", t0 + MAX_TTL), None);
}

#[test]
fn a_node_is_48_bytes() {
    assert_eq!(std::mem::size_of::<Node>(), 48);
}

#[test]
fn large_values_are_shared_not_copied() {
    let t0 = Instant::now();
    let mut s = Store::new(4, None, TTL);
    let big = Bytes::from(vec![7u8; INLINE_MAX + 1]);
    put(&mut s, b("big"), big.clone(), t0, TTL);
    put(&mut s, b("small"), b("v"), t0, TTL);
    let hash = s.hash(b"big");
    match s.get(b"big", hash, t0).unwrap().value {
        Value::Shared(v) => assert_eq!(v.as_ptr(), big.as_ptr(), "the same bytes, not a copy"),
        Value::Inline(_) => panic!("a large value was stored inline"),
    }
    let hash = s.hash(b"small");
    assert_eq!(s.get(b"small", hash, t0).unwrap().value, Value::Inline(b"v"));
    assert_eq!(s.bytes(), entry_size(b"big", &big) + entry_size(b"small", b"v"));
}

#[test]
fn a_value_over_the_largest_kept_is_not_stored_and_drops_the_old_one() {
    let t0 = Instant::now();
    let bounds = Bounds {
        capacity: 4,
        max_bytes: None,
        max_value: 10,
        ttl: TTL,
    };
    let mut s = Store::with_bounds(bounds);
    put(&mut s, b("k"), b("0123456789"), t0, TTL);
    assert_eq!(
        get(&mut s, "k", t0),
        Some(b("0123456789")),
        "exactly the largest fits"
    );
    put(&mut s, b("k"), b("0123456789!"), t0, TTL);
    assert_eq!(get(&mut s, "k", t0), None, "neither the new value nor the old");
    assert!(s.is_empty());
}

#[test]
fn retain_drops_what_it_refuses_and_keeps_the_rest_in_order() {
    let t0 = Instant::now();
    let mut s = Store::new(10, None, TTL);
    for k in ["a1", "b1", "a2", "b2", "a3"] {
        put(&mut s, b(k), b(k), t0, TTL);
    }
    let bytes = s.bytes();
    assert_eq!(s.retain(|k| !k.starts_with(b"b")), 2);
    assert_eq!(s.len(), 3);
    assert_eq!(s.bytes(), bytes - 2 * entry_size(b"b1", b"b1"));
    assert_eq!(get(&mut s, "b1", t0), None);
    // The LRU order of what stayed is intact: a2 and a3 read, a1 goes next.
    get(&mut s, "a2", t0);
    get(&mut s, "a3", t0);
    let mut small = s;
    for k in ["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"] {
        put(&mut small, b(k), b(k), t0, TTL);
    }
    assert_eq!(get(&mut small, "a1", t0), None, "evicted first");
    assert_eq!(get(&mut small, "a3", t0), Some(b("a3")));
}
