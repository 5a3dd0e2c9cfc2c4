//! The differential test: seeded, generated command sequences over a small
//! key space (strings, counters, expiry, hashes, lists, sets, sorted sets,
//! streams, scripts, transactions, renames), sent to one Redis directly
//! and, through the proxy, to a second Redis that starts equally empty,
//! over RESP2 and over RESP3. Every reply and the final data must be equal.
//! Each redis-server has its own hash seed, so replies whose order Redis
//! does not define are compared as sets.

mod common;

use common::{Proxy, RedisServer};
use redis::{Connection, Value};

/// A small deterministic generator (xorshift), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const STRINGS: &[&str] = &["s0", "s1", "s2", "h0", "l0"];
const HASHES: &[&str] = &["h0", "h1", "s0"];
const LISTS: &[&str] = &["l0", "l1", "s1"];
const SETS: &[&str] = &["t0", "t1"];
const ZSETS: &[&str] = &["z0", "z1"];
const FIELDS: &[&str] = &["f0", "f1", "f2"];
const SCRIPT_INCR: &str = "return redis.call('INCR', KEYS[1])";
const SCRIPT_UNDECLARED: &str = "redis.call('SET', 's2', ARGV[1]); return redis.call('GET', 's2')";

/// One generated command. `stream` numbers stream entries so both Redises
/// get the same IDs.
fn command(rng: &mut Rng, step: usize) -> Vec<String> {
    let n = (rng.below(20) as i64 - 5).to_string();
    let v = format!("v{}", rng.below(6));
    let s = |x: &str| x.to_string();
    let args: Vec<String> = match rng.below(38) {
        0..=2 => vec![s("GET"), s(rng.pick(STRINGS))],
        3 => vec![s("SET"), s(rng.pick(STRINGS)), v],
        4 => vec![s("SET"), s(rng.pick(STRINGS)), v, s("NX")],
        5 => vec![s("SET"), s(rng.pick(STRINGS)), v, s("GET")],
        6 => vec![
            s("MGET"),
            s(rng.pick(STRINGS)),
            s(rng.pick(STRINGS)),
            s(rng.pick(HASHES)),
        ],
        7 => vec![s("INCR"), s(rng.pick(STRINGS))],
        8 => vec![s("INCRBY"), s(rng.pick(STRINGS)), n],
        9 => vec![s("APPEND"), s(rng.pick(STRINGS)), v],
        10 => vec![s("EXPIRE"), s(rng.pick(STRINGS)), s("100")],
        11 => vec![s("TTL"), s(rng.pick(STRINGS))],
        12 => vec![s("PERSIST"), s(rng.pick(STRINGS))],
        13 => vec![s("DEL"), s(rng.pick(STRINGS)), s(rng.pick(LISTS))],
        14 => vec![s("EXISTS"), s(rng.pick(STRINGS)), s(rng.pick(HASHES))],
        15 => vec![s("HSET"), s(rng.pick(HASHES)), s(rng.pick(FIELDS)), v],
        16 => vec![s("HGET"), s(rng.pick(HASHES)), s(rng.pick(FIELDS))],
        17 => vec![s("HGETALL"), s(rng.pick(HASHES))],
        18 => vec![s("HINCRBY"), s(rng.pick(HASHES)), s(rng.pick(FIELDS)), n],
        19 => vec![s("HDEL"), s(rng.pick(HASHES)), s(rng.pick(FIELDS))],
        20 => vec![s("LPUSH"), s(rng.pick(LISTS)), v],
        21 => vec![s("RPUSH"), s(rng.pick(LISTS)), v, s("w")],
        22 => vec![s("LRANGE"), s(rng.pick(LISTS)), s("0"), s("-1")],
        23 => vec![s("LPOP"), s(rng.pick(LISTS))],
        24 => vec![s("SADD"), s(rng.pick(SETS)), v],
        25 => vec![s("SMEMBERS"), s(rng.pick(SETS))],
        26 => vec![s("SINTER"), s("t0"), s("t1")],
        27 => vec![s("ZADD"), s(rng.pick(ZSETS)), n, v],
        28 => vec![s("ZRANGE"), s(rng.pick(ZSETS)), s("0"), s("-1"), s("WITHSCORES")],
        29 => vec![s("ZINCRBY"), s(rng.pick(ZSETS)), s("1.5"), v],
        30 => vec![s("XADD"), s("x0"), format!("{}-1", step + 1), s("f"), v],
        31 => vec![s("XRANGE"), s("x0"), s("-"), s("+")],
        32 => vec![s("XLEN"), s("x0")],
        33 => vec![s("EVAL"), s(SCRIPT_INCR), s("1"), s(rng.pick(STRINGS))],
        34 => vec![s("EVAL"), s(SCRIPT_UNDECLARED), s("0"), v],
        35 => vec![s("RENAME"), s(rng.pick(STRINGS)), s(rng.pick(STRINGS))],
        36 => vec![s("KEYS"), s("*")],
        _ => vec![s("TYPE"), s(rng.pick(&["s0", "h0", "l0", "t0", "z0", "x0"]))],
    };
    args
}

/// A reply made comparable: unordered replies sorted, TTLs reduced to
/// "has one".
fn normal(args: &[String], reply: redis::RedisResult<Value>) -> String {
    let reply = match reply {
        Ok(v) => v,
        Err(e) => return format!("error: {}", e.code().unwrap_or("?")),
    };
    let name = args[0].to_ascii_uppercase();
    let reply = match (name.as_str(), reply) {
        ("TTL", Value::Int(t)) if t > 0 => Value::Int(1),
        ("KEYS" | "SMEMBERS" | "SINTER", Value::Array(mut items) | Value::Set(mut items)) => {
            items.sort_by_key(|v| format!("{v:?}"));
            Value::Array(items)
        }
        ("HGETALL", Value::Map(mut pairs)) => {
            pairs.sort_by_key(|(k, _)| format!("{k:?}"));
            Value::Map(pairs)
        }
        ("HGETALL", Value::Array(items)) => {
            let mut pairs: Vec<_> = items.chunks(2).map(|p| format!("{p:?}")).collect();
            pairs.sort();
            return format!("{pairs:?}");
        }
        (_, v) => v,
    };
    format!("{reply:?}")
}

fn query(conn: &mut Connection, args: &[String]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(&args[0]);
    for a in &args[1..] {
        cmd.arg(a);
    }
    cmd.query(conn)
}

fn connect(port: u16, protocol: &str) -> Connection {
    let url = format!("redis://127.0.0.1:{port}/0?protocol={protocol}");
    let conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    conn.set_read_timeout(Some(common::DEADLINE)).unwrap();
    conn
}

/// Everything a database holds, comparable.
fn contents(conn: &mut Connection) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).unwrap();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(conn).unwrap();
        let read: &[&str] = match kind.as_str() {
            "string" => &["GET"],
            "hash" => &["HGETALL"],
            "list" => &["LRANGE", "0", "-1"],
            "set" => &["SMEMBERS"],
            "zset" => &["ZRANGE", "0", "-1", "WITHSCORES"],
            "stream" => &["XRANGE", "-", "+"],
            other => panic!("{other}"),
        };
        let mut args: Vec<String> = vec![read[0].to_string(), key.clone()];
        args.extend(read[1..].iter().map(|a| a.to_string()));
        let value = normal(&args, query(conn, &args));
        let ttl: i64 = redis::cmd("TTL").arg(&key).query(conn).unwrap();
        out.push(format!("{key} {kind} {value} ttl:{}", ttl > 0));
    }
    out
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
                        command(&mut rng, step)
                    })
                    .collect();
                let mut pipe = redis::pipe();
                if atomic {
                    pipe.atomic();
                }
                for args in &commands {
                    let mut cmd = redis::cmd(&args[0]);
                    for x in &args[1..] {
                        cmd.arg(x);
                    }
                    pipe.add_command(cmd);
                }
                let ra: redis::RedisResult<Vec<Value>> = pipe.query(&mut a);
                let rb: redis::RedisResult<Vec<Value>> = pipe.query(&mut b);
                let show = |r: redis::RedisResult<Vec<Value>>| match r {
                    Ok(values) => values
                        .into_iter()
                        .zip(&commands)
                        .map(|(v, args)| normal(args, Ok(v)))
                        .collect::<Vec<_>>(),
                    Err(e) => vec![format!("error: {}", e.code().unwrap_or("?"))],
                };
                assert_eq!(
                    show(rb),
                    show(ra),
                    "RESP{protocol} seed {seed} step {step}: {} {commands:?}",
                    if atomic { "MULTI" } else { "pipeline" }
                );
            }
            _ => {
                step += 1;
                let args = command(&mut rng, step);
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
