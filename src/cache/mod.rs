//! The bounded store: exact LRU by read, expiry counted from insertion,
//! an optional bound on key+value bytes. Every operation is O(1).
//!
//! Layout: a `HashMap` from key to a slot in a `Vec` of nodes; each node is
//! linked into two lists (`list`): `by_read` (front = least recently read,
//! the eviction victim) and `by_insert` (front = oldest insertion). Because
//! the TTL is global, insertion order is expiry order, so expired entries are
//! always found at the front of `by_insert` and purged there. An entry whose
//! own expiry is earlier than the global one (Redis had a shorter PTTL) is
//! dropped when it is read or when it reaches that front.
//!
//! The store is plain data: no locks, no clock. Callers pass `now`, which is
//! what lets the property tests drive it with a fake clock.

mod list;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use list::{Links, List};

/// A cached value and how long ago it was inserted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub value: Bytes,
    pub age: Duration,
}

/// Entries dropped since the last [`Store::take_events`], for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    pub evicted: u64,
    pub expired: u64,
}

struct Node {
    key: Bytes,
    value: Bytes,
    inserted: Instant,
    expires: Instant,
    by_read: Links,
    by_insert: Links,
}

fn by_read(n: &mut Node) -> &mut Links {
    &mut n.by_read
}

fn by_insert(n: &mut Node) -> &mut Links {
    &mut n.by_insert
}

/// What bounds a store: its key capacity, its byte bound and its global
/// expiry. A flush makes a fresh store with the same bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub capacity: usize,
    pub max_bytes: Option<u64>,
    pub ttl: Duration,
}

pub struct Store {
    map: HashMap<Bytes, u32>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    by_read: List,
    by_insert: List,
    capacity: usize,
    max_bytes: Option<u64>,
    bytes: u64,
    ttl: Duration,
    events: Events,
}

impl Store {
    /// `capacity` keys at most, `max_bytes` of keys+values at most, each entry
    /// living at most `ttl` from its insertion.
    pub fn new(capacity: usize, max_bytes: Option<u64>, ttl: Duration) -> Self {
        // Slots are u32 indices with u32::MAX reserved.
        let capacity = capacity.min(u32::MAX as usize - 1);
        // `now + ttl` must not overflow an Instant; a century is forever here.
        let ttl = ttl.min(Duration::from_secs(100 * 365 * 24 * 3600));
        Store {
            map: HashMap::with_capacity(capacity.min(1 << 20)),
            nodes: Vec::new(),
            free: Vec::new(),
            by_read: List::default(),
            by_insert: List::default(),
            capacity,
            max_bytes,
            bytes: 0,
            ttl,
            events: Events::default(),
        }
    }

    pub fn with_bounds(bounds: Bounds) -> Self {
        Self::new(bounds.capacity, bounds.max_bytes, bounds.ttl)
    }

    pub fn bounds(&self) -> Bounds {
        Bounds {
            capacity: self.capacity,
            max_bytes: self.max_bytes,
            ttl: self.ttl,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Sum of key and value lengths of the entries held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The value for `key` if present and unexpired; marks it most recently
    /// read. Reading never extends its expiry.
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<Hit> {
        self.purge_expired(now);
        let i = *self.map.get(key)?;
        let node = &self.nodes[i as usize];
        if node.expires <= now {
            self.remove_slot(i);
            self.events.expired += 1;
            return None;
        }
        let hit = Hit {
            value: node.value.clone(),
            age: now.saturating_duration_since(node.inserted),
        };
        self.by_read.move_to_back(&mut self.nodes, i, by_read);
        Some(hit)
    }

    /// Inserts or replaces `key`, expiring at `now + min(ttl, global ttl)`.
    /// The entry becomes the most recently read and the newest insertion.
    /// An entry that could never fit (zero capacity, zero ttl, larger than
    /// the byte bound) is not stored, and an older value of it is dropped.
    pub fn insert(&mut self, key: Bytes, value: Bytes, now: Instant, ttl: Duration) {
        let ttl = ttl.min(self.ttl);
        let size = entry_size(&key, &value);
        if self.capacity == 0 || ttl.is_zero() || self.max_bytes.is_some_and(|max| size > max) {
            self.remove(&key);
            return;
        }
        self.purge_expired(now);
        let expires = now + ttl;
        if let Some(&i) = self.map.get(&key) {
            let node = &mut self.nodes[i as usize];
            self.bytes = self.bytes - entry_size(&node.key, &node.value) + size;
            node.value = value;
            node.inserted = now;
            node.expires = expires;
            self.by_read.move_to_back(&mut self.nodes, i, by_read);
            self.by_insert.move_to_back(&mut self.nodes, i, by_insert);
        } else {
            while self.map.len() >= self.capacity {
                self.evict_one();
            }
            let node = Node {
                key: key.clone(),
                value,
                inserted: now,
                expires,
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
            self.map.insert(key, i);
            self.bytes += size;
        }
        // The new entry is the most recently read, so it goes last; it fits
        // on its own (checked above), so this stops before reaching it.
        while self.max_bytes.is_some_and(|max| self.bytes > max) {
            self.evict_one();
        }
    }

    /// Drops `key`; true if it was held.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        match self.map.get(key) {
            Some(&i) => {
                self.remove_slot(i);
                true
            }
            None => false,
        }
    }

    /// What was evicted or expired since the last call.
    pub fn take_events(&mut self) -> Events {
        std::mem::take(&mut self.events)
    }

    /// Drops expired entries from the front of the insertion order. Each
    /// entry is dropped at most once, so this is O(1) amortised per insert.
    fn purge_expired(&mut self, now: Instant) {
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
        let node = &mut self.nodes[i as usize];
        let key = std::mem::take(&mut node.key);
        let value = std::mem::take(&mut node.value);
        self.bytes -= entry_size(&key, &value);
        self.map.remove(&key);
        self.free.push(i);
    }
}

fn entry_size(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}
