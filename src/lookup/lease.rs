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

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Until when cached values may be served, as nanoseconds after `base`.
#[derive(Debug)]
pub struct Lease {
    /// None: no lease (`ttl` mode, or tests that do not probe): always held.
    length: Option<Duration>,
    base: Instant,
    until: AtomicU64,
}

impl Lease {
    /// A lease that is always held.
    pub fn unbounded() -> Lease {
        Lease {
            length: None,
            base: Instant::now(),
            until: AtomicU64::new(u64::MAX),
        }
    }

    /// A lease of `length`, not held until the first probe is answered.
    pub fn new(length: Duration) -> Lease {
        Lease {
            length: Some(length),
            base: Instant::now(),
            until: AtomicU64::new(0),
        }
    }

    pub fn length(&self) -> Option<Duration> {
        self.length
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether cached values may be served at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        self.nanos(now) < self.until.load(Ordering::Acquire)
    }

    /// A probe sent at `sent` was answered: held until `sent + length`
    /// (never shortened by an answer that arrives out of order).
    pub fn renew(&self, sent: Instant) {
        if let Some(length) = self.length {
            self.until.fetch_max(self.nanos(sent + length), Ordering::AcqRel);
        }
    }

    /// Not held until the next renewal (the connection was replaced).
    pub fn revoke(&self) {
        if self.length.is_some() {
            self.until.store(0, Ordering::Release);
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
        assert!(!lease.holds(t0), "not held before a probe is answered");
        lease.renew(t0);
        assert!(lease.holds(t0 + Duration::from_millis(999)));
        assert!(!lease.holds(t0 + Duration::from_millis(1000)));
        // An older probe answered late does not shorten it.
        lease.renew(t0 + Duration::from_millis(500));
        lease.renew(t0);
        assert!(lease.holds(t0 + Duration::from_millis(1499)));
        assert!(!lease.holds(t0 + Duration::from_millis(1500)));
        lease.revoke();
        assert!(!lease.holds(t0 + Duration::from_millis(1)));
    }

    #[test]
    fn unbounded_is_always_held() {
        let lease = Lease::unbounded();
        lease.revoke();
        lease.renew(Instant::now());
        assert!(lease.holds(Instant::now() + Duration::from_secs(86_400 * 365)));
    }
}
