//! Write generations: how a read knows that what it fetched may already be
//! stale.
//!
//! One counter per shard of the key space, and one global epoch. A read
//! takes a [`Stamp`] of its key before it sends anything to Redis, and
//! inserts what it fetched only if the stamp is still current, checked
//! under the store's lock. Everything that can make a fetched value stale
//! moves a counter first:
//! - a write through the proxy bumps its key's shard before it is sent and
//!   again when it completes;
//! - an invalidation from Redis bumps the shards of the keys it names;
//! - dropping everything (a null invalidation, a lost connection) bumps the
//!   epoch, which every stamp includes.
//!
//! Because the bump happens before the entry is removed, and the check and
//! the insert happen together under the store's lock, a read and an
//! invalidation can interleave in only two ways: the read inserts first and
//! the invalidation removes it, or the invalidation bumps first and the
//! read does not insert. Sharding keeps an invalidation of one key from
//! stopping misses on most others from being cached; a collision only
//! costs a miss that is not cached.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// A key's generation as a read saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    epoch: u64,
    shard: u64,
}

impl Stamp {
    /// True if `later` is this stamp's key after exactly `bumps` more bumps
    /// and no epoch change: nothing but the bumps the caller expects touched
    /// the key's shard in between.
    pub fn is_followed_by(self, later: Stamp, bumps: u64) -> bool {
        later.epoch == self.epoch && later.shard == self.shard + bumps
    }
}

pub struct Generations {
    epoch: AtomicU64,
    shards: Box<[AtomicU64]>,
}

impl Default for Generations {
    fn default() -> Self {
        Self::new()
    }
}

impl Generations {
    pub const SHARDS: usize = 1024;

    pub fn new() -> Self {
        Generations {
            epoch: AtomicU64::new(0),
            shards: (0..Self::SHARDS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn shard(&self, key: &[u8]) -> &AtomicU64 {
        // A fixed hash: a client that makes its keys collide only makes its
        // own misses less often cached.
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[h.finish() as usize % Self::SHARDS]
    }

    /// The key's generation now.
    pub fn stamp(&self, key: &[u8]) -> Stamp {
        Stamp {
            epoch: self.epoch.load(Ordering::Acquire),
            shard: self.shard(key).load(Ordering::Acquire),
        }
    }

    /// True if nothing that could make `key` stale happened since `stamp`.
    pub fn is_current(&self, key: &[u8], stamp: Stamp) -> bool {
        self.stamp(key) == stamp
    }

    /// Marks `key` changed; returns its new generation.
    pub fn bump(&self, key: &[u8]) -> Stamp {
        let shard = self.shard(key).fetch_add(1, Ordering::AcqRel) + 1;
        Stamp {
            epoch: self.epoch.load(Ordering::Acquire),
            shard,
        }
    }

    /// Marks every key changed.
    pub fn bump_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_stays_current_until_its_key_is_bumped() {
        let g = Generations::new();
        let s = g.stamp(b"k");
        assert!(g.is_current(b"k", s));
        g.bump(b"k");
        assert!(!g.is_current(b"k", s));
        assert!(g.is_current(b"k", g.stamp(b"k")));
    }

    #[test]
    fn bump_all_makes_every_stamp_stale() {
        let g = Generations::new();
        let stamps: Vec<_> = (0..100)
            .map(|i| (i, g.stamp(format!("k{i}").as_bytes())))
            .collect();
        g.bump_all();
        for (i, s) in stamps {
            assert!(!g.is_current(format!("k{i}").as_bytes(), s));
        }
    }

    #[test]
    fn most_keys_do_not_share_a_shard() {
        let g = Generations::new();
        let s = g.stamp(b"other");
        g.bump(b"k");
        // 1 in 1024 keys shares k's shard; "other" does not (a fixed hash).
        assert!(g.is_current(b"other", s));
        let stale = (0..10_000)
            .filter(|i| {
                let key = format!("key:{i}");
                let before = g.stamp(key.as_bytes());
                g.bump(b"k");
                !g.is_current(key.as_bytes(), before)
            })
            .count();
        assert!(stale < 50, "{stale} of 10000 keys made stale by another key");
    }

    #[test]
    fn is_followed_by_means_exactly_the_expected_bumps_in_between() {
        let g = Generations::new();
        let before = g.bump(b"k");
        let after = g.bump(b"k");
        assert!(before.is_followed_by(after, 1));
        let before = g.bump(b"k");
        g.bump(b"k");
        let after = g.bump(b"k");
        assert!(!before.is_followed_by(after, 1), "another write overlapped");
        assert!(before.is_followed_by(after, 2), "an expected echo of the write");
        let before = g.bump(b"k");
        g.bump_all();
        let after = g.bump(b"k");
        assert!(
            !before.is_followed_by(after, 1),
            "everything was dropped in between"
        );
    }
}
