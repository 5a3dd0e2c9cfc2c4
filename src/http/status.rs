//! The JSON behind the status page (`/status`) and the hot keys
//! (`/hotkeys`). Every figure comes from the counters `/metrics` exports
//! (totals since start) or from the ring of one-second samples
//! ([`crate::status::Ring`]); nothing is counted twice.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::config::Invalidation;
use crate::hotkeys::HotKey;
use crate::lookup::Reads;
use crate::metrics::Outcome;
use crate::status::{FRONT_ENDS, Sample, quantile, unix_now};

/// Hot keys on the status page, and `/hotkeys` without `?n=`.
pub const PAGE_HOT_KEYS: usize = 20;
pub const DEFAULT_HOT_KEYS: usize = 100;

/// Seconds the "now" rates are averaged over.
const RATE_SECONDS: usize = 10;

/// Top commands listed.
const TOP_COMMANDS: usize = 10;

/// `/hotkeys?n=N`: the `n` keys read most.
pub fn hot_keys(app: &App, n: usize) -> Value {
    match app.local.hot_keys(n) {
        Some((keys, capacity)) => json!({
            "capacity": capacity,
            "keys": keys.iter().map(hot_key).collect::<Vec<_>>(),
        }),
        None => json!({
            "capacity": 0,
            "keys": [],
            "note": "the hot-key sketch is off (--hotkeys-capacity 0)",
        }),
    }
}

/// One hot key: `key`, or `key_base64` when it is not UTF-8 (as `/get`
/// answers); its figures over the last minute and since start.
fn hot_key(k: &HotKey) -> Value {
    let mut o = Map::new();
    match std::str::from_utf8(&k.key) {
        Ok(text) => o.insert("key".into(), text.into()),
        // Truncated in the middle of a character: the text before it.
        Err(e) if k.len > k.key.len() && e.error_len().is_none() => {
            let text = std::str::from_utf8(&k.key[..e.valid_up_to()]).expect("valid up to there");
            o.insert("key".into(), text.into())
        }
        Err(_) => o.insert("key_base64".into(), BASE64.encode(&k.key).into()),
    };
    if k.len > k.key.len() {
        o.insert("truncated".into(), true.into());
        o.insert("length".into(), k.len.into());
    }
    o.insert(
        "last_minute".into(),
        json!({"reads": k.minute_reads, "hits": k.minute_hits, "hit_ratio": k.minute_hit_ratio()}),
    );
    o.insert(
        "since_start".into(),
        json!({
            "reads": k.reads,
            "reads_error": k.error,
            "hits": k.hits,
            "hit_ratio": k.hit_ratio(),
        }),
    );
    Value::Object(o)
}

fn ms(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!((d.as_secs_f64() * 1e6).round() / 1e3))
}

/// `{"hit": …, "miss": …, …}`: one figure per outcome.
fn by_outcome<T: Into<Value> + Copy>(figures: &[T; Outcome::ALL.len()]) -> Value {
    let map: Map<String, Value> = Outcome::ALL
        .iter()
        .map(|o| (o.as_str().to_string(), figures[*o as usize].into()))
        .collect();
    Value::Object(map)
}

/// `/status`: everything the page shows, now and over the ring.
pub fn status(app: &App) -> Value {
    let m = &app.metrics;
    let front_ends = [&app.http_metrics, &app.resp_metrics];
    let samples = app.ring.samples();
    let recent = &samples[samples.len().saturating_sub(RATE_SECONDS)..];
    let seconds: f64 = recent.iter().map(|s| s.seconds).sum();
    let mut requests = Map::new();
    for (i, (name, f)) in FRONT_ENDS.iter().zip(front_ends).enumerate() {
        let latency = f.latency().counts();
        let rates: [f64; Outcome::ALL.len()] = std::array::from_fn(|o| {
            let n: u64 = recent.iter().map(|s| s.requests[i][o]).sum();
            if seconds > 0.0 { n as f64 / seconds } else { 0.0 }
        });
        requests.insert(
            (*name).into(),
            json!({
                "total": by_outcome(&f.totals()),
                "per_second": by_outcome(&rates),
                "connections": m.clients(name),
                "p50_ms": ms(quantile(&latency, 0.5)),
                "p99_ms": ms(quantile(&latency, 0.99)),
            }),
        );
    }
    let (hits, misses) = (m.hits.get(), m.misses.get());
    let mut commands: Vec<(String, u64, u64)> = Vec::new();
    for (command, outcome, n) in m.command_counts() {
        let at = match commands.iter().position(|c| c.0 == command) {
            Some(at) => at,
            None => {
                commands.push((command, 0, 0));
                commands.len() - 1
            }
        };
        commands[at].1 += n;
        if outcome != "ok" {
            commands[at].2 += n;
        }
    }
    commands.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    commands.truncate(TOP_COMMANDS);
    let limits = &m.limits;
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "run_id": app.run_id,
        "now_unix": unix_now(),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "ready": app.is_ready(),
        "draining": app.is_draining(),
        "flags": app.flags.iter().map(|(f, v)| json!([f, v])).collect::<Vec<_>>(),
        "redis": redis(app),
        "requests": requests,
        "cache": {
            "hits": hits,
            "misses": misses,
            "hit_ratio": if hits + misses > 0 { json!(hits as f64 / (hits + misses) as f64) } else { Value::Null },
            "entries": m.entries.get(),
            "capacity": limits.cache_capacity.get(),
            "bytes": m.bytes.get(),
            "max_bytes": limits.cache_max_bytes.get(),
            "evictions": m.evictions.get(),
            "expirations": m.expirations.get(),
            "invalidations": m.invalidations.get(),
            "flushes": m.flushes(),
            "singleflight_joins": m.singleflight_joins.get(),
        },
        "clients": {
            "connections": FRONT_ENDS.iter().map(|f| m.clients(f)).sum::<i64>(),
            "max_clients": limits.max_clients.get(),
            "pinned": m.pinned.get(),
            "max_pinned": limits.max_pinned.get(),
        },
        "commands": commands.iter().map(|(c, n, e)| json!({"command": c, "total": n, "not_ok": e})).collect::<Vec<_>>(),
        "hot_keys": hot_keys(app, PAGE_HOT_KEYS),
        "series": series(&samples),
    })
}

/// Redis, or each master of a cluster: up or down, tracking, the lease.
fn redis(app: &App) -> Value {
    let tracking = app.reads.mode() == Invalidation::Tracking;
    let nodes: Vec<Value> = match &app.reads {
        Reads::Redis(b) => {
            let address = app
                .flags
                .iter()
                .find(|f| f.0 == "--redis-url")
                .map(|f| f.1.clone());
            vec![json!({
                "address": address,
                "up": b.is_ready(),
                "tracking": tracking && b.is_ready(),
                "lease_left_ms": ms(app.local.lease_left(None)),
            })]
        }
        Reads::Cluster(c) => {
            let map = c.topology().map();
            let backends = c.backends();
            map.masters()
                .iter()
                .map(|addr| {
                    let up = backends.iter().any(|(a, b)| a == addr && b.is_ready());
                    let slots = map.slots_of(addr);
                    // The least of its slots' leases: how long all of them
                    // are served for.
                    let lease = slots.iter().filter_map(|&s| app.local.lease_left(Some(s))).min();
                    json!({
                        "address": addr,
                        "up": up,
                        "tracking": tracking && up,
                        "slots": slots.len(),
                        "lease_left_ms": ms(lease),
                    })
                })
                .collect()
        }
    };
    json!({
        "kind": match app.reads { Reads::Redis(_) => "redis", Reads::Cluster(_) => "cluster" },
        "invalidation": if tracking { "tracking" } else { "ttl" },
        "tracking": app.metrics.tracking.get() == 1,
        "lease_ms": ms(app.lease),
        "up": app.metrics.backend_up.get() == 1,
        "nodes": nodes,
    })
}

/// The ring as columns, oldest first: one array per figure.
fn series(samples: &[Sample]) -> Value {
    let col = |f: &dyn Fn(&Sample) -> Value| samples.iter().map(f).collect::<Vec<_>>();
    let total = |s: &Sample, i: usize| s.requests[i].iter().sum::<u64>();
    let errors = |s: &Sample| {
        let bad = [
            Outcome::BackendError,
            Outcome::InternalError,
            Outcome::ClientError,
            Outcome::WrongType,
        ];
        s.requests
            .iter()
            .flat_map(|r| bad.map(|o| r[o as usize]))
            .sum::<u64>()
    };
    json!({
        "interval_seconds": 1,
        "t": col(&|s| json!(s.t)),
        "seconds": col(&|s| json!((s.seconds * 1e3).round() / 1e3)),
        "http": col(&|s| json!(total(s, 0))),
        "resp": col(&|s| json!(total(s, 1))),
        "errors": col(&|s| json!(errors(s))),
        "hit_ratio": col(&|s| if s.hits + s.misses > 0 { json!(s.hits as f64 / (s.hits + s.misses) as f64) } else { Value::Null }),
        "p50_ms": col(&|s| ms(s.p50)),
        "p99_ms": col(&|s| ms(s.p99)),
        "entries": col(&|s| json!(s.entries)),
        "bytes": col(&|s| json!(s.bytes)),
        "clients": col(&|s| json!(s.clients)),
        "pinned": col(&|s| json!(s.pinned)),
        "evictions": col(&|s| json!(s.evictions)),
        "invalidations": col(&|s| json!(s.invalidations)),
        "flushes": col(&|s| json!(s.flushes)),
    })
}
