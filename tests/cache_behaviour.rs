//! Cache semantics seen through the HTTP API: hits and misses, TTL from
//! insertion, LRU by read, single flight.

mod common;

use std::sync::{Arc, Barrier};

use common::{Proxy, RedisServer, wait_for};

#[test]
fn miss_then_hit() {
    let redis = RedisServer::start();
    let proxy = Proxy::start_ready(&redis, &[]);
    redis.set("k", "v");
    assert_eq!(proxy.get("/get/k").cache(), "MISS");
    assert_eq!(proxy.get("/get/k").cache(), "HIT");
    assert_eq!(proxy.metric("redis_proxy_cache_hits_total"), 1.0);
    assert_eq!(proxy.metric("redis_proxy_cache_misses_total"), 1.0);
}

#[test]
fn a_value_changed_in_redis_is_served_from_cache_until_ttl_then_refreshed() {
    let redis = RedisServer::start();
    let proxy = Proxy::start_ready(&redis, &["--cache-ttl", "2s", "--invalidation", "ttl"]);
    redis.set("k", "v1");
    assert_eq!(proxy.get("/get/k").json()["value"], "v1");
    redis.set("k", "v2");
    let r = proxy.get("/get/k");
    assert_eq!((r.cache(), r.json()["value"].as_str()), ("HIT", Some("v1")));
    wait_for("the TTL to expire and v2 to be fetched", || {
        let r = proxy.get("/get/k");
        (r.json()["value"] == "v2").then_some(r)
    });
    assert_eq!(proxy.get("/get/k").cache(), "HIT");
    assert!(proxy.metric("redis_proxy_cache_expirations_total") >= 1.0);
}

#[test]
fn a_key_read_repeatedly_still_expires_at_ttl() {
    let redis = RedisServer::start();
    let proxy = Proxy::start_ready(&redis, &["--cache-ttl", "1s"]);
    redis.set("k", "v");
    assert_eq!(proxy.get("/get/k").cache(), "MISS");
    // Reading every 20ms would keep the key forever if reads extended it.
    wait_for("a MISS while reading continuously", || {
        (proxy.get("/get/k").cache() == "MISS").then_some(())
    });
}

#[test]
fn a_shorter_redis_expiry_wins_over_the_cache_ttl() {
    let redis = RedisServer::start();
    let proxy = Proxy::start_ready(&redis, &["--cache-ttl", "1h"]);
    redis.cmd(&["SET", "k", "v", "PX", "400"]);
    assert_eq!(proxy.get("/get/k").status, 200);
    // Redis expires the key; the proxy must not serve it longer than Redis.
    wait_for("the key to expire in Redis and in the proxy", || {
        (proxy.get("/get/k").status == 404).then_some(())
    });
}

#[test]
fn lru_evicts_the_least_recently_read_key_at_capacity() {
    let redis = RedisServer::start();
    let proxy = Proxy::start_ready(&redis, &["--cache-capacity", "3"]);
    for k in ["a", "b", "c", "d"] {
        redis.set(k, k);
    }
    for k in ["a", "b", "c"] {
        assert_eq!(proxy.get(&format!("/get/{k}")).cache(), "MISS");
    }
    assert_eq!(proxy.get("/get/a").cache(), "HIT"); // b is now least recently read
    assert_eq!(proxy.get("/get/d").cache(), "MISS"); // evicts b
    for k in ["a", "c", "d"] {
        assert_eq!(proxy.get(&format!("/get/{k}")).cache(), "HIT", "{k}");
    }
    assert_eq!(proxy.get("/get/b").cache(), "MISS");
    assert_eq!(proxy.metric("redis_proxy_cache_evictions_total"), 2.0);
    assert_eq!(proxy.metric("redis_proxy_cache_entries"), 3.0);
}

#[test]
fn missing_keys_are_not_cached() {
    let redis = RedisServer::start();
    let proxy = Proxy::start_ready(&redis, &[]);
    assert_eq!(proxy.get("/get/later").status, 404);
    assert_eq!(proxy.get("/get/later").status, 404);
    redis.set("later", "now");
    let r = proxy.get("/get/later");
    assert_eq!((r.status, r.cache()), (200, "MISS"));
}

#[test]
fn fifty_concurrent_cold_gets_cost_one_redis_get() {
    let redis = RedisServer::start();
    // Enough --max-parallel slots for all fifty to be worked on at once.
    let proxy = Proxy::start_ready(&redis, &["--backend-timeout", "10s", "--max-parallel", "64"]);
    redis.set("hot", "value");
    redis.cmd(&["CONFIG", "RESETSTAT"]);
    // Hold Redis still so that all fifty arrive while the first GET waits.
    redis.cmd(&["CLIENT", "PAUSE", "3000", "ALL"]);
    let barrier = Arc::new(Barrier::new(50));
    let port = proxy.http;
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = common::HttpConn::connect(port).unwrap();
                barrier.wait();
                c.request("GET", b"/get/hot", &[]).unwrap()
            })
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!((r.status, r.json()["value"].as_str()), (200, Some("value")));
    }
    assert_eq!(redis.calls("get"), 1);
    assert_eq!(proxy.metric("redis_proxy_singleflight_joins_total"), 49.0);
}

/// A proxy with writes on and room for concurrent requests, in front of a
/// Redis paused for 3 s, so that requests sent now wait on Redis.
fn paused_writable_proxy(redis: &RedisServer) -> Proxy {
    let args = [
        "--allow-writes",
        "--max-parallel",
        "16",
        "--backend-timeout",
        "10s",
    ];
    let proxy = Proxy::start_ready(redis, &args);
    redis.cmd(&["CLIENT", "PAUSE", "3000", "ALL"]);
    proxy
}

/// Sends `GET target` on a new connection and waits until the proxy has
/// sent its `n`-th request to Redis: this one, now held by the pause.
fn send_to_redis(proxy: &Proxy, target: &str, n: u64) -> common::HttpConn {
    let mut c = common::HttpConn::connect(proxy.http).unwrap();
    c.send("GET", target.as_bytes(), &[]).unwrap();
    proxy.wait_backend_requests(n, &format!("{target} to reach Redis"));
    c
}

#[test]
fn a_read_sent_after_a_write_does_not_join_a_read_from_before_it() {
    let redis = RedisServer::start();
    redis.set("k", "v0");
    let proxy = paused_writable_proxy(&redis);
    // A: a read, held by the pause.
    let mut a = send_to_redis(&proxy, "/get/k", 1);
    // B: a write, queued behind A's read at Redis.
    let mut b = send_to_redis(&proxy, "/set/k/v1", 2);
    // C: a read sent after the write. Joining A's flight would answer v0;
    // it must ask Redis itself, after B's SET.
    let mut c = send_to_redis(&proxy, "/get/k", 3);
    assert!(common::still_waiting(&a.stream), "the pause ran out too early");
    assert_eq!(a.read_response(false).unwrap().json()["value"], "v0");
    assert_eq!(b.read_response(false).unwrap().status, 200);
    assert_eq!(c.read_response(false).unwrap().json()["value"], "v1");
    assert_eq!(proxy.metric("redis_proxy_singleflight_joins_total"), 0.0);
    assert_eq!(proxy.get("/get/k").json()["value"], "v1");
}

#[test]
fn a_write_to_one_key_does_not_stop_a_miss_on_another_from_being_cached() {
    let redis = RedisServer::start();
    redis.set("k1", "v1");
    let proxy = paused_writable_proxy(&redis);
    let mut read = send_to_redis(&proxy, "/get/k1", 1);
    let mut write = send_to_redis(&proxy, "/set/k2/x", 2);
    assert!(common::still_waiting(&read.stream), "the pause ran out too early");
    assert_eq!(read.read_response(false).unwrap().cache(), "MISS");
    assert_eq!(write.read_response(false).unwrap().status, 200);
    assert_eq!(proxy.get("/get/k1").cache(), "HIT");
}

#[test]
fn a_value_over_cache_max_value_bytes_is_served_but_not_cached() {
    let redis = RedisServer::start();
    let proxy = Proxy::start_ready(&redis, &["--cache-max-value-bytes", "1KiB"]);
    redis.set("small", "x".repeat(1024));
    redis.set("big", "x".repeat(1025));
    for (key, second) in [("small", "HIT"), ("big", "MISS")] {
        let r = proxy.get(&format!("/get/{key}"));
        assert_eq!((r.status, r.cache()), (200, "MISS"), "{key}");
        assert_eq!(proxy.get(&format!("/get/{key}")).cache(), second, "{key}");
    }
}
