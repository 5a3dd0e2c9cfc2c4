//! What the status page draws over time: a fixed ring of one-second
//! samples, taken from the same counters `/metrics` exports, and the
//! histogram arithmetic the page's latency figures use. The page itself
//! (`page.html`, self-contained) and its JSON (`/status`) are served by
//! [`crate::http::admin`].

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::metrics::{FrontendMetrics, Metrics, Outcome};

/// The status page, as served at `/`: no external assets.
pub const PAGE: &str = include_str!("page.html");

/// Samples kept: fifteen minutes of seconds.
pub const RING_SECONDS: usize = 15 * 60;

/// The front ends, in the order samples keep them.
pub const FRONT_ENDS: [&str; 2] = ["http", "resp"];

const OUTCOMES: usize = Outcome::ALL.len();

/// One second of the proxy's life.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Unix seconds at its end.
    pub t: u64,
    /// How long it covers: a second, or more when its tick came late.
    pub seconds: f64,
    /// Requests answered in this second, by front end and outcome.
    pub requests: [[u64; OUTCOMES]; 2],
    pub hits: u64,
    pub misses: u64,
    /// Of the requests answered in this second, both front ends together;
    /// None without any.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub entries: i64,
    pub bytes: i64,
    pub clients: i64,
    pub pinned: i64,
    pub evictions: u64,
    pub expirations: u64,
    pub invalidations: u64,
    pub flushes: u64,
}

/// The counters a sample is the difference of.
#[derive(Default, Clone)]
struct Totals {
    requests: [[u64; OUTCOMES]; 2],
    latency: Vec<u64>,
    hits: u64,
    misses: u64,
    evictions: u64,
    expirations: u64,
    invalidations: u64,
    flushes: u64,
}

/// The ring, and the totals its last sample was taken at.
#[derive(Default)]
pub struct Ring {
    inner: Mutex<Inner>,
}

struct Inner {
    samples: VecDeque<Sample>,
    /// The totals the last sample was taken at (zero at first: the first
    /// sample holds everything since start), and when.
    last: Totals,
    at: Instant,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            samples: VecDeque::new(),
            last: Totals::default(),
            at: Instant::now(),
        }
    }
}

impl Ring {
    /// Takes a sample: what changed since the last call (or, the first
    /// time, since the ring was made).
    pub fn sample(&self, metrics: &Metrics, front_ends: [&FrontendMetrics; 2]) {
        let bounds: Vec<Duration> = front_ends[0].latency().counts().iter().map(|b| b.0).collect();
        let now = totals(metrics, front_ends);
        let mut inner = self.inner.lock();
        let last = std::mem::replace(&mut inner.last, now.clone());
        let at = std::mem::replace(&mut inner.at, Instant::now());
        let latency: Vec<(Duration, u64)> = bounds
            .into_iter()
            .enumerate()
            .map(|(i, b)| (b, now.latency[i] - last.latency.get(i).copied().unwrap_or(0)))
            .collect();
        let sample = Sample {
            t: unix_now(),
            seconds: at.elapsed().as_secs_f64(),
            requests: std::array::from_fn(|f| {
                std::array::from_fn(|o| now.requests[f][o] - last.requests[f][o])
            }),
            hits: now.hits - last.hits,
            misses: now.misses - last.misses,
            p50: quantile(&latency, 0.5),
            p99: quantile(&latency, 0.99),
            entries: metrics.entries.get(),
            bytes: metrics.bytes.get(),
            clients: FRONT_ENDS.iter().map(|f| metrics.clients(f)).sum(),
            pinned: metrics.pinned.get(),
            evictions: now.evictions - last.evictions,
            expirations: now.expirations - last.expirations,
            invalidations: now.invalidations - last.invalidations,
            flushes: now.flushes - last.flushes,
        };
        if inner.samples.len() == RING_SECONDS {
            inner.samples.pop_front();
        }
        inner.samples.push_back(sample);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.inner.lock().samples.iter().cloned().collect()
    }
}

fn totals(metrics: &Metrics, front_ends: [&FrontendMetrics; 2]) -> Totals {
    let mut latency: Vec<u64> = Vec::new();
    for f in front_ends {
        let counts = f.latency().counts();
        latency.resize(counts.len(), 0);
        for (sum, (_, n)) in latency.iter_mut().zip(counts) {
            *sum += n;
        }
    }
    Totals {
        requests: front_ends.map(|f| f.totals()),
        latency,
        hits: metrics.hits.get(),
        misses: metrics.misses.get(),
        evictions: metrics.evictions.get(),
        expirations: metrics.expirations.get(),
        invalidations: metrics.invalidations.get(),
        flushes: metrics.flushes(),
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `q` quantile of a histogram given as (upper bound, count) buckets,
/// interpolated within its bucket as Prometheus's `histogram_quantile`
/// does (the first bucket starts at 0; a quantile in the unbounded last
/// bucket is the last finite bound). None for an empty histogram.
pub fn quantile(buckets: &[(Duration, u64)], q: f64) -> Option<Duration> {
    let total: u64 = buckets.iter().map(|b| b.1).sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    let mut lower = Duration::ZERO;
    for &(upper, n) in buckets {
        if n > 0 && (below + n) as f64 >= rank {
            if upper == Duration::MAX {
                return Some(lower);
            }
            let within = (rank - below as f64) / n as f64;
            return Some(lower + (upper - lower).mul_f64(within));
        }
        below += n;
        if upper != Duration::MAX {
            lower = upper;
        }
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let h = [(ms(1), 50), (ms(2), 40), (ms(4), 10), (Duration::MAX, 0)];
        assert_eq!(quantile(&h, 0.5), Some(ms(1)));
        assert_eq!(quantile(&h, 0.7), Some(Duration::from_micros(1500)));
        assert_eq!(quantile(&h, 0.99), Some(Duration::from_micros(3800)));
        assert_eq!(quantile(&[(ms(1), 0), (Duration::MAX, 0)], 0.5), None);
        // In the unbounded bucket: the last finite bound.
        assert_eq!(quantile(&[(ms(1), 1), (Duration::MAX, 9)], 0.99), Some(ms(1)));
    }

    #[test]
    fn a_sample_is_what_changed_in_its_second_and_the_ring_is_bounded() {
        let metrics = Metrics::new();
        let (http, resp) = (metrics.frontend("http"), metrics.frontend("resp"));
        let ring = Ring::default();
        http.record(Outcome::Hit, std::time::Instant::now());
        ring.sample(&metrics, [&http, &resp]);
        // The first sample holds everything since the ring was made.
        assert_eq!(ring.samples()[0].requests[0][Outcome::Hit as usize], 1);
        http.record(Outcome::Hit, std::time::Instant::now());
        resp.record(Outcome::NotFound, std::time::Instant::now());
        metrics.hits.inc();
        ring.sample(&metrics, [&http, &resp]);
        let s = &ring.samples()[1];
        assert!(s.seconds >= 0.0);
        assert_eq!(s.requests[0][Outcome::Hit as usize], 1);
        assert_eq!(s.requests[1][Outcome::NotFound as usize], 1);
        assert_eq!((s.hits, s.misses), (1, 0));
        assert!(s.p50.is_some());
        for _ in 0..RING_SECONDS + 5 {
            ring.sample(&metrics, [&http, &resp]);
        }
        let samples = ring.samples();
        assert_eq!(samples.len(), RING_SECONDS);
        assert_eq!(samples.last().unwrap().requests, [[0; OUTCOMES]; 2]);
        assert_eq!(samples.last().unwrap().p50, None);
    }
}
