//! The bounded store: exact LRU by read, expiry counted from insertion,
//! a bound on the memory entries take. Every operation is O(1).
//!
//! Layout, for a small footprint (about 140 bytes an entry for a 9-byte key
//! and a 64-byte value, all told):
//! - a `Vec` of 48-byte nodes, each linked into two lists (`list`) by
//!   `u32` indices: `by_read` (front = least recently read, the eviction
//!   victim) and `by_insert` (front = oldest insertion);
//! - a `hashbrown::HashTable` of node indices (4 bytes a slot): the key is
//!   stored once, in its node, and compared there;
//! - one allocation per entry holding key and value together; a value
//!   larger than [`INLINE_MAX`] is kept as shared `Bytes` instead, so a hit
//!   on it copies a reference count, not the value.
//!
//! Because the TTL is global, insertion order is expiry order, so expired
//! entries are always found at the front of `by_insert` and purged there.
//! An entry whose own expiry is earlier (Redis had a shorter PTTL) is
//! dropped when it is read or when it reaches that front.
//!
//! Keys are hashed with SipHash under a random key ([`Store::hash`]), by the
//! caller and before taking whatever lock guards the store: keys come from
//! clients, so the hash must resist collision flooding, and it need not be
//! computed inside the critical section. The store is plain data: no locks,
//! no clock. Callers pass `now`, which is what lets the property tests drive
//! it with a fake clock. Times are kept as milliseconds since the store's
//! first operation, rounded down, so an entry can expire up to 1 ms early,
//! never late.

mod list;
#[cfg(test)]
mod tests;

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashbrown::HashTable;

use list::{Links, List};

/// Values up to this size are stored inline with their key and copied out
/// on a hit; larger ones are shared.
pub const INLINE_MAX: usize = 4096;

/// What an entry costs beyond its key and value bytes: its node, its slot
/// in the hash table, the allocator's rounding. Counted by `--cache-max-bytes`.
pub const ENTRY_OVERHEAD: u64 = 72;

/// The longest a TTL may be: `u32` milliseconds, about 49 days.
pub const MAX_TTL: Duration = Duration::from_millis(u32::MAX as u64);

/// A cached value and how long ago it was inserted.
#[derive(Debug, PartialEq, Eq)]
pub struct Hit<'a> {
    pub value: Value<'a>,
    pub age: Duration,
}

/// A hit's value: borrowed from the store (copy it before letting go of
/// the store), or shared.
#[derive(Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Inline(&'a [u8]),
    Shared(Bytes),
}

impl Value<'_> {
    /// The value as `Bytes`, copying an inline one.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Value::Inline(v) => Bytes::copy_from_slice(v),
            Value::Shared(b) => b.clone(),
        }
    }
}

/// A key and its value, ready to be inserted: built before taking the
/// store's lock, since it allocates.
pub struct Entry {
    data: Data,
    key_len: u32,
}

enum Data {
    /// Key then value, one allocation.
    Inline(Box<[u8]>),
    /// The key, and a value too large to copy on every hit.
    Shared(Box<(Box<[u8]>, Bytes)>),
}

impl Entry {
    /// None for a key longer than 4 GiB (it is served, not cached).
    pub fn new(key: &[u8], value: Bytes) -> Option<Entry> {
        let key_len = u32::try_from(key.len()).ok()?;
        let data = if value.len() <= INLINE_MAX {
            let mut data = Vec::with_capacity(key.len() + value.len());
            data.extend_from_slice(key);
            data.extend_from_slice(&value);
            Data::Inline(data.into_boxed_slice())
        } else {
            Data::Shared(Box::new((key.into(), value)))
        };
        Some(Entry { data, key_len })
    }

    fn key(&self) -> &[u8] {
        self.data.key(self.key_len)
    }

    fn size(&self) -> u64 {
        self.data.size(self.key_len)
    }

    fn value_len(&self) -> usize {
        (self.size() - self.key_len as u64 - ENTRY_OVERHEAD) as usize
    }
}

impl Data {
    fn key(&self, key_len: u32) -> &[u8] {
        match self {
            Data::Inline(d) => &d[..key_len as usize],
            Data::Shared(s) => &s.0,
        }
    }

    fn value(&self, key_len: u32) -> Value<'_> {
        match self {
            Data::Inline(d) => Value::Inline(&d[key_len as usize..]),
            Data::Shared(s) => Value::Shared(s.1.clone()),
        }
    }

    /// Key and value bytes plus [`ENTRY_OVERHEAD`].
    fn size(&self, key_len: u32) -> u64 {
        let value_len = match self {
            Data::Inline(d) => d.len() - key_len as usize,
            Data::Shared(s) => s.1.len(),
        };
        key_len as u64 + value_len as u64 + ENTRY_OVERHEAD
    }
}

/// Entries dropped since the last [`Store::take_events`], for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    pub evicted: u64,
    pub expired: u64,
}

/// 48 bytes: the entry's fields are kept here rather than as an `Entry`,
/// whose padding would make it 56.
struct Node {
    data: Data,
    key_len: u32,
    /// When it expires, in ms since the store's origin.
    expires: u64,
    /// How long it was given, in ms: it was inserted at `expires - ttl`.
    ttl: u32,
    by_read: Links,
    by_insert: Links,
}

impl Node {
    fn key(&self) -> &[u8] {
        self.data.key(self.key_len)
    }

    fn size(&self) -> u64 {
        self.data.size(self.key_len)
    }
}

fn by_read(n: &mut Node) -> &mut Links {
    &mut n.by_read
}

fn by_insert(n: &mut Node) -> &mut Links {
    &mut n.by_insert
}

/// What bounds a store: its key capacity, its byte bound, the largest
/// value it keeps and its global expiry. A flush makes a fresh store with
/// the same bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub capacity: usize,
    pub max_bytes: Option<u64>,
    pub max_value: usize,
    pub ttl: Duration,
}

pub struct Store {
    table: HashTable<u32>,
    hasher: RandomState,
    nodes: Vec<Node>,
    free: Vec<u32>,
    by_read: List,
    by_insert: List,
    bounds: Bounds,
    bytes: u64,
    events: Events,
    /// The instant times are counted from: the first `now` seen.
    origin: Option<Instant>,
}

impl Store {
    /// `capacity` keys at most, `max_bytes` of entries at most, each entry
    /// living at most `ttl` (capped at [`MAX_TTL`]) from its insertion.
    pub fn new(capacity: usize, max_bytes: Option<u64>, ttl: Duration) -> Self {
        let bounds = Bounds {
            capacity,
            max_bytes,
            max_value: usize::MAX,
            ttl,
        };
        Self::with_hasher(bounds, RandomState::new())
    }

    pub fn with_bounds(bounds: Bounds) -> Self {
        Self::with_hasher(bounds, RandomState::new())
    }

    /// An empty store hashing as `hasher` does: a fresh store swapped in
    /// for an old one keeps the hashes callers computed for the old valid.
    pub fn with_hasher(bounds: Bounds, hasher: RandomState) -> Self {
        let bounds = Bounds {
            // Slots are u32 indices with u32::MAX reserved.
            capacity: bounds.capacity.min(u32::MAX as usize - 1),
            ttl: bounds.ttl.min(MAX_TTL),
            ..bounds
        };
        // Room for the whole capacity up to a million keys: memory that is
        // reserved but not yet written is not resident.
        let reserve = bounds.capacity.min(1 << 20);
        Store {
            table: HashTable::with_capacity(reserve),
            hasher,
            nodes: Vec::with_capacity(reserve),
            free: Vec::new(),
            by_read: List::default(),
            by_insert: List::default(),
            bounds,
            bytes: 0,
            events: Events::default(),
            origin: None,
        }
    }

    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    pub fn hasher(&self) -> &RandomState {
        &self.hasher
    }

    /// The hash the other operations take for `key`.
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// What the entries held take, by [`Entry`]'s measure.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Milliseconds since the store's origin, rounded down.
    fn millis(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        now.saturating_duration_since(origin).as_millis() as u64
    }

    fn find(&self, key: &[u8], hash: u64) -> Option<u32> {
        let nodes = &self.nodes;
        self.table
            .find(hash, |&i| nodes[i as usize].key() == key)
            .copied()
    }

    /// The value for `key` (hashed by [`Store::hash`]) if present and
    /// unexpired; marks it most recently read. Reading never extends its
    /// expiry.
    pub fn get(&mut self, key: &[u8], hash: u64, now: Instant) -> Option<Hit<'_>> {
        let now = self.millis(now);
        self.purge_expired(now);
        let i = self.find(key, hash)?;
        if self.nodes[i as usize].expires <= now {
            self.remove_slot(i);
            self.events.expired += 1;
            return None;
        }
        self.by_read.move_to_back(&mut self.nodes, i, by_read);
        let node = &self.nodes[i as usize];
        let inserted = node.expires.saturating_sub(node.ttl as u64);
        Some(Hit {
            value: node.data.value(node.key_len),
            age: Duration::from_millis(now.saturating_sub(inserted)),
        })
    }

    /// Inserts or replaces the entry's key, expiring at `now + min(ttl,
    /// global ttl)`. The entry becomes the most recently read and the newest
    /// insertion. An entry that could never fit (zero capacity, zero ttl,
    /// larger than the byte bound, a value over the largest kept) is not
    /// stored, and an older value of its key is dropped.
    pub fn insert(&mut self, entry: Entry, hash: u64, now: Instant, ttl: Duration) {
        let ttl = ttl.min(self.bounds.ttl);
        let size = entry.size();
        let fits =
            self.bounds.max_bytes.is_none_or(|max| size <= max) && entry.value_len() <= self.bounds.max_value;
        if self.bounds.capacity == 0 || ttl.as_millis() == 0 || !fits {
            self.remove(entry.key(), hash);
            return;
        }
        // The expiry is `now + ttl` rounded down: never later than the
        // caller asked, even for a `now` from before the store's origin.
        let start = self.millis(now);
        let expires = self.millis(now + ttl);
        let now = start;
        let ttl = expires - now;
        self.purge_expired(now);
        if let Some(i) = self.find(entry.key(), hash) {
            let node = &mut self.nodes[i as usize];
            self.bytes = self.bytes - node.size() + size;
            node.data = entry.data;
            node.key_len = entry.key_len;
            node.expires = expires;
            node.ttl = ttl as u32;
            self.by_read.move_to_back(&mut self.nodes, i, by_read);
            self.by_insert.move_to_back(&mut self.nodes, i, by_insert);
        } else {
            while self.table.len() >= self.bounds.capacity {
                self.evict_one();
            }
            let node = Node {
                data: entry.data,
                key_len: entry.key_len,
                expires,
                ttl: ttl as u32,
                by_read: Links::UNLINKED,
                by_insert: Links::UNLINKED,
            };
            let i = match self.free.pop() {
                Some(i) => {
                    self.nodes[i as usize] = node;
                    i
                }
                None => {
                    self.nodes.push(node);
                    (self.nodes.len() - 1) as u32
                }
            };
            self.by_read.push_back(&mut self.nodes, i, by_read);
            self.by_insert.push_back(&mut self.nodes, i, by_insert);
            let (nodes, hasher) = (&self.nodes, &self.hasher);
            self.table
                .insert_unique(hash, i, |&j| hasher.hash_one(nodes[j as usize].key()));
            self.bytes += size;
        }
        // The new entry is the most recently read, so it goes last; it fits
        // on its own (checked above), so this stops before reaching it.
        while self.bounds.max_bytes.is_some_and(|max| self.bytes > max) {
            self.evict_one();
        }
    }

    /// Drops `key`; true if it was held.
    pub fn remove(&mut self, key: &[u8], hash: u64) -> bool {
        match self.find(key, hash) {
            Some(i) => {
                self.remove_slot(i);
                true
            }
            None => false,
        }
    }

    /// Drops every entry whose key `keep` refuses; returns how many. O(n):
    /// for rare events (a cluster node lost, a slot moved), not requests.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) -> usize {
        let dropped: Vec<u32> = self
            .table
            .iter()
            .copied()
            .filter(|&i| !keep(self.nodes[i as usize].key()))
            .collect();
        for &i in &dropped {
            self.remove_slot(i);
        }
        dropped.len()
    }

    /// What was evicted or expired since the last call.
    pub fn take_events(&mut self) -> Events {
        std::mem::take(&mut self.events)
    }

    /// Drops expired entries from the front of the insertion order. Each
    /// entry is dropped at most once, so this is O(1) amortised per insert.
    fn purge_expired(&mut self, now: u64) {
        while let Some(i) = self.by_insert.front() {
            if self.nodes[i as usize].expires > now {
                break;
            }
            self.remove_slot(i);
            self.events.expired += 1;
        }
    }

    fn evict_one(&mut self) {
        if let Some(i) = self.by_read.front() {
            self.remove_slot(i);
            self.events.evicted += 1;
        }
    }

    fn remove_slot(&mut self, i: u32) {
        self.by_read.unlink(&mut self.nodes, i, by_read);
        self.by_insert.unlink(&mut self.nodes, i, by_insert);
        let hash = self.hasher.hash_one(self.nodes[i as usize].key());
        if let Ok(slot) = self.table.find_entry(hash, |&j| j == i) {
            slot.remove();
        }
        let node = &mut self.nodes[i as usize];
        self.bytes -= node.size();
        // Dropped here, freeing its memory now rather than on reuse.
        node.data = Data::Inline(Box::default());
        node.key_len = 0;
        self.free.push(i);
    }
}
