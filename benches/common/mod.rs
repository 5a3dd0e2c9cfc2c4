//! What the front-end benchmarks share: an app over a store already
//! holding the keys, never connected to Redis (a hit does not need it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use redis_proxy::app::App;
use redis_proxy::cache::{Entry, Store};
use redis_proxy::config::Config;

pub const KEYS: usize = 10_000;

pub fn key(i: usize) -> String {
    format!("key:{i:012}")
}

/// An app whose cache holds `KEYS` keys of 64-byte values.
pub fn app() -> Arc<App> {
    let ttl = Duration::from_secs(3600);
    let mut store = Store::new(KEYS, None, ttl);
    let now = Instant::now();
    for i in 0..KEYS {
        let k = key(i);
        let hash = store.hash(k.as_bytes());
        let entry = Entry::new(k.as_bytes(), Bytes::from(vec![b'v'; 64])).unwrap();
        store.insert(entry, hash, now, ttl);
    }
    let args = [
        "redis-proxy",
        "--redis-url",
        "redis://127.0.0.1:1/0",
        "--cache-ttl",
        "1h",
    ];
    App::build_with(&Config::try_parse_from(args).unwrap(), store).unwrap()
}
