//! The differential test: seeded, generated command sequences over a small
//! key space (strings, counters, expiry, hashes, lists, sets, sorted sets,
//! streams, scripts, transactions, renames), sent to one Redis directly
//! and, through the proxy, to a second Redis that starts equally empty,
//! over RESP2 and over RESP3. Every reply and the final data must be equal.
//! Each redis-server has its own hash seed, so replies whose order Redis
//! does not define are compared as sets.

mod common;
#[path = "differential/generated.rs"]
mod generated;

use common::{Proxy, RedisServer};
use generated::{Rng, command, contents, normal, pipeline, query, shown};
use redis::{Connection, Value};

fn connect(port: u16, protocol: &str) -> Connection {
    let url = format!("redis://127.0.0.1:{port}/0?protocol={protocol}");
    let conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    conn.set_read_timeout(Some(common::DEADLINE)).unwrap();
    conn
}

fn run(protocol: &str, seed: u64, steps: usize, flags: &[&str]) {
    let direct = RedisServer::start();
    let behind = RedisServer::start();
    let mut args = vec!["--allow-writes"];
    args.extend(flags);
    let proxy = Proxy::start_ready(&behind, &args);
    let mut a = connect(direct.port, protocol);
    let mut b = connect(proxy.resp, protocol);
    let mut rng = Rng(seed);
    let mut step = 0;
    while step < steps {
        match rng.below(10) {
            // A pipeline, or a transaction, of a few commands.
            0 | 1 => {
                let atomic = rng.below(2) == 0;
                let commands: Vec<Vec<String>> = (0..2 + rng.below(4))
                    .map(|_| {
                        step += 1;
                        command(&mut rng, step, false)
                    })
                    .collect();
                let pipe = pipeline(&commands, atomic);
                let ra: redis::RedisResult<Vec<Value>> = pipe.query(&mut a);
                let rb: redis::RedisResult<Vec<Value>> = pipe.query(&mut b);
                assert_eq!(
                    shown(rb, &commands),
                    shown(ra, &commands),
                    "RESP{protocol} seed {seed} step {step}: {} {commands:?}",
                    if atomic { "MULTI" } else { "pipeline" }
                );
            }
            _ => {
                step += 1;
                let args = command(&mut rng, step, false);
                let ra = normal(&args, query(&mut a, &args));
                let rb = normal(&args, query(&mut b, &args));
                assert_eq!(rb, ra, "RESP{protocol} seed {seed} step {step}: {args:?}");
            }
        }
    }
    let mut plain_a = connect(direct.port, "resp2");
    let mut plain_b = connect(behind.port, "resp2");
    assert_eq!(
        contents(&mut plain_b),
        contents(&mut plain_a),
        "final data, seed {seed}"
    );
}

#[test]
fn replies_and_data_through_the_proxy_equal_redis_direct_over_resp2() {
    for seed in [0x9E37_79B9_7F4A_7C15, 42, 7] {
        run("resp2", seed, 700, &[]);
    }
}

/// Without tracking, the proxy must drop what its own writes touch: the
/// keys a command names, everything for a script or a keyless write.
#[test]
fn replies_and_data_through_the_proxy_equal_redis_direct_without_tracking() {
    for seed in [0x2545_F491_4F6C_DD1D, 44] {
        run("resp2", seed, 700, &["--invalidation", "ttl"]);
    }
}

#[test]
fn replies_and_data_through_the_proxy_equal_redis_direct_over_resp3() {
    for seed in [0xD1B5_4A32_D192_ED03, 43, 8] {
        run("resp3", seed, 700, &[]);
    }
}
