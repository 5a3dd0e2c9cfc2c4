//! The admin port: health, readiness, Prometheus metrics.

mod common;

use common::{Proxy, RedisServer};

#[test]
fn metrics_export_every_documented_family() {
    let redis = RedisServer::start();
    redis.set("k", "v");
    let proxy = Proxy::start_ready(&redis, &["--cache-capacity", "1"]);
    proxy.get("/get/k");
    proxy.get("/get/k");
    proxy.get("/get/missing");
    let r = proxy.admin_get("/metrics").unwrap();
    assert_eq!(r.status, 200);
    let text = r.text();
    for name in [
        "redis_proxy_requests_total{frontend=\"http\",outcome=\"hit\"} 1",
        "redis_proxy_requests_total{frontend=\"http\",outcome=\"miss\"} 1",
        "redis_proxy_requests_total{frontend=\"http\",outcome=\"not_found\"} 1",
        "redis_proxy_cache_hits_total 1",
        "redis_proxy_cache_misses_total 2",
        "redis_proxy_cache_evictions_total",
        "redis_proxy_cache_expirations_total",
        "redis_proxy_singleflight_joins_total",
        "redis_proxy_backend_requests_total 2",
        "redis_proxy_backend_up 1",
        "redis_proxy_request_duration_seconds_bucket",
        "redis_proxy_cache_entries 1",
        "redis_proxy_cache_bytes 74", // "k" and "v" and the entry's overhead, 72
        "redis_proxy_connections{frontend=\"http\"}",
        "redis_proxy_requests_queued 0",
        "redis_proxy_invalidations_total 0",
        "redis_proxy_cache_flushes_total{reason=\"connected\"} 1",
        "redis_proxy_cache_flushes_total{reason=\"flushall\"} 0",
        "redis_proxy_cache_flushes_total{reason=\"disconnected\"} 0",
        "redis_proxy_cache_flushes_total{reason=\"tracking_refused\"} 0",
        "redis_proxy_tracking 1",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    assert_eq!(proxy.admin_get("/healthz").unwrap().status, 200);
    assert_eq!(proxy.admin_get("/readyz").unwrap().status, 200);
    assert_eq!(proxy.admin_get("/nope").unwrap().status, 404);
}

#[test]
fn byte_bound_evicts_to_stay_under_it() {
    let redis = RedisServer::start();
    // An entry counts its key, its value and 72 bytes of overhead.
    let proxy = Proxy::start_ready(&redis, &["--cache-max-bytes", "260"]);
    for k in ["a", "b", "c"] {
        redis.set(k, "x".repeat(39)); // 112 bytes with the key and overhead
        assert_eq!(proxy.get(&format!("/get/{k}")).status, 200);
    }
    assert_eq!(proxy.metric("redis_proxy_cache_entries"), 2.0);
    assert_eq!(proxy.metric("redis_proxy_cache_bytes"), 224.0);
    assert_eq!(proxy.get("/get/a").cache(), "MISS"); // the least recently read went
    // A value larger than the bound is served but not cached.
    redis.set("big", "x".repeat(200));
    assert_eq!(proxy.get("/get/big").status, 200);
    assert_eq!(proxy.get("/get/big").cache(), "MISS");
}
