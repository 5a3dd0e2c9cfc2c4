//! The tracking lease: how long a cached value may be served after the
//! proxy last heard, in order, from the Redis that would invalidate it.
//!
//! Tracking keeps the cache coherent only while its invalidations arrive.
//! A connection that goes silent without breaking (a partition, a relay
//! that stops forwarding, a frozen Redis) brings none, and nothing on the
//! proxy's side notices for as long as TCP keeps the connection open. So a
//! probe goes out on the invalidation connection every quarter of the
//! lease; its answer comes after every invalidation Redis queued before it,
//! and those are applied before the answer is handed over. An answered
//! probe sent at `t` therefore proves that every write Redis acknowledged
//! before `t` has been applied to the cache, and cached values are served
//! until `t + lease`, no longer. Counting from the *send* (not the answer)
//! is what bounds staleness: a value served at `now` was current at `t`,
//! and `now - t < lease`. Only the proxy's own monotonic clock is read, so
//! the bound assumes its rate, not clock sync with Redis.
//!
//! When the lease lapses, lookups miss and ask Redis, which answers if it
//! can; the entries stay, and are served again once a later probe is
//! answered (its answer brings the invalidations that were held back).

//! In a cluster each master has its own lease, kept per hash slot: a probe
//! answered by a master renews the slots the map says it serves, and a
//! slot whose owner changes is revoked until its new owner answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cluster::{SLOTS, slot_of};

/// Until when cached values may be served, as nanoseconds after `base`:
/// one deadline for a single Redis, one per hash slot for a cluster.
#[derive(Debug)]
pub struct Lease {
    /// None: no lease (`ttl` mode, or tests that do not probe): always held.
    length: Option<Duration>,
    base: Instant,
    until: Box<[AtomicU64]>,
}

impl Lease {
    /// A lease that is always held.
    pub fn unbounded() -> Lease {
        Lease {
            length: None,
            base: Instant::now(),
            until: Box::new([AtomicU64::new(u64::MAX)]),
        }
    }

    /// A lease of `length`, not held until the first probe is answered.
    pub fn new(length: Duration) -> Lease {
        Self::with_deadlines(length, 1)
    }

    /// A lease of `length` per hash slot, for a cluster.
    pub fn per_slot(length: Duration) -> Lease {
        Self::with_deadlines(length, SLOTS)
    }

    fn with_deadlines(length: Duration, n: usize) -> Lease {
        Lease {
            length: Some(length),
            base: Instant::now(),
            until: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Which deadline covers `key`: its slot in a cluster, else the one.
    pub fn index(&self, key: &[u8]) -> usize {
        if self.until.len() == 1 {
            0
        } else {
            slot_of(key) as usize
        }
    }

    /// Whether cached values under deadline `index` may be served at `now`.
    pub fn holds(&self, index: usize, now: Instant) -> bool {
        let until = self.until[index].load(Ordering::Acquire);
        // No lease (u64::MAX): no clock arithmetic on the hit path.
        until == u64::MAX || self.nanos(now) < until
    }

    /// How much longer deadline `index` holds at `now`: None for no lease,
    /// zero when lapsed.
    pub fn left(&self, index: usize, now: Instant) -> Option<Duration> {
        self.length?;
        let until = self.until[index].load(Ordering::Acquire);
        Some(Duration::from_nanos(until.saturating_sub(self.nanos(now))))
    }

    /// A probe sent at `sent` was answered: held until `sent + length`
    /// (never shortened by an answer that arrives out of order).
    pub fn renew(&self, sent: Instant) {
        self.renew_slots(0..self.until.len() as u16, sent);
    }

    /// [`Lease::renew`] for some slots only.
    pub fn renew_slots(&self, slots: impl IntoIterator<Item = u16>, sent: Instant) {
        if let Some(length) = self.length {
            let until = self.nanos(sent + length);
            for slot in slots {
                self.until[slot as usize].fetch_max(until, Ordering::AcqRel);
            }
        }
    }

    /// Not held until the next renewal (the connection was replaced).
    pub fn revoke(&self) {
        self.revoke_slots(0..self.until.len() as u16);
    }

    /// [`Lease::revoke`] for some slots only (their owner changed).
    pub fn revoke_slots(&self, slots: impl IntoIterator<Item = u16>) {
        if self.length.is_some() {
            for slot in slots {
                self.until[slot as usize].store(0, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_the_send() {
        let lease = Lease::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert!(!lease.holds(0, t0), "not held before a probe is answered");
        lease.renew(t0);
        assert!(lease.holds(0, t0 + Duration::from_millis(999)));
        assert!(!lease.holds(0, t0 + Duration::from_millis(1000)));
        // An older probe answered late does not shorten it.
        lease.renew(t0 + Duration::from_millis(500));
        lease.renew(t0);
        assert!(lease.holds(0, t0 + Duration::from_millis(1499)));
        assert!(!lease.holds(0, t0 + Duration::from_millis(1500)));
        lease.revoke();
        assert!(!lease.holds(0, t0 + Duration::from_millis(1)));
    }

    #[test]
    fn unbounded_is_always_held() {
        let lease = Lease::unbounded();
        lease.revoke();
        lease.renew(Instant::now());
        assert!(lease.holds(0, Instant::now() + Duration::from_secs(86_400 * 365)));
    }

    #[test]
    fn per_slot_leases_are_renewed_and_revoked_apart() {
        let lease = Lease::per_slot(Duration::from_secs(1));
        let t0 = Instant::now();
        let foo = lease.index(b"foo");
        assert_eq!(foo, crate::cluster::slot_of(b"foo") as usize);
        lease.renew_slots([foo as u16], t0);
        assert!(lease.holds(foo, t0));
        assert!(!lease.holds(lease.index(b"bar"), t0));
        lease.revoke_slots([foo as u16]);
        assert!(!lease.holds(foo, t0));
        assert_eq!(Lease::new(Duration::from_secs(1)).index(b"foo"), 0);
    }
}
