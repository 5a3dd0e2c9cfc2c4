//! A latency histogram that takes no lock: one atomic counter per bucket,
//! and the sum and count as atomics too. prometheus-client's `Histogram`
//! takes a mutex on every observation, which a cache hit cannot afford.
//! Readers may see a count and a sum a moment apart; Prometheus's rate()
//! over a scrape interval does not mind.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

#[derive(Clone, Debug)]
pub struct Latency {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds in nanoseconds, ascending; observations above the
    /// last go to the extra, unbounded bucket.
    bounds: Box<[u64]>,
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Latency {
    /// Buckets from 10 µs, each 2.5 times the last, 15 of them (to ~4.6 s).
    pub fn new() -> Self {
        let bounds: Box<[u64]> = (0..15).map(|i| (10_000.0 * 2.5f64.powi(i)) as u64).collect();
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Latency {
            inner: Arc::new(Inner {
                bounds,
                buckets,
                sum_nanos: AtomicU64::new(0),
                count: AtomicU64::new(0),
            }),
        }
    }

    /// `n` requests that each took `took`: a pipelined batch, answered at
    /// once, records them together.
    pub fn observe_n(&self, took: Duration, n: u64) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let inner = &self.inner;
        let i = inner
            .bounds
            .iter()
            .position(|&b| nanos <= b)
            .unwrap_or(inner.bounds.len());
        inner.buckets[i].fetch_add(n, Ordering::Relaxed);
        inner
            .sum_nanos
            .fetch_add(nanos.saturating_mul(n), Ordering::Relaxed);
        inner.count.fetch_add(n, Ordering::Relaxed);
    }

    pub fn observe(&self, took: Duration) {
        self.observe_n(took, 1);
    }

    /// Each bucket's upper bound and count (not cumulative), the last
    /// bucket's bound infinite: what `/metrics` shows, for the status page.
    pub fn counts(&self) -> Vec<(Duration, u64)> {
        let inner = &self.inner;
        let bounds = inner.bounds.iter().map(|&b| Duration::from_nanos(b));
        bounds
            .chain(std::iter::once(Duration::MAX))
            .zip(inner.buckets.iter())
            .map(|(b, n)| (b, n.load(Ordering::Relaxed)))
            .collect()
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &self.inner;
        let mut buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .zip(inner.buckets.iter())
            .map(|(&b, n)| (b as f64 / 1e9, n.load(Ordering::Relaxed)))
            .collect();
        let last = inner.buckets[inner.bounds.len()].load(Ordering::Relaxed);
        buckets.push((f64::INFINITY, last));
        // The count the buckets add up to, so the two always agree.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    #[test]
    fn observations_land_in_their_buckets_and_encode_cumulatively() {
        let l = Latency::new();
        l.observe(Duration::from_micros(5));
        l.observe_n(Duration::from_micros(20), 2);
        l.observe(Duration::from_secs(60));
        let mut registry = Registry::default();
        registry.register("took", "test", l.clone());
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        assert!(out.contains("took_count 4\n"), "{out}");
        assert!(out.contains("took_bucket{le=\"0.00001\"} 1\n"), "{out}");
        assert!(out.contains("took_bucket{le=\"0.000025\"} 3\n"), "{out}");
        assert!(out.contains("took_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("took_sum 60.000045\n"), "{out}");
    }
}
