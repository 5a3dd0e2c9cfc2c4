//! What the differential tests share (`tests/differential.rs` against one
//! Redis, `tests/cluster.rs` against a cluster): the generated commands,
//! and replies and data made comparable.

use redis::{Connection, Value};

/// A small deterministic generator (xorshift), so a failure names its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
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
/// get the same IDs. For a cluster (`cluster`), each key is tagged by its
/// first letter, so keys of one kind share a slot and kinds spread over
/// the masters; commands Redis Cluster refuses across slots (RENAME of two
/// kinds, a script's undeclared key) are left out.
pub fn command(rng: &mut Rng, step: usize, cluster: bool) -> Vec<String> {
    let args = generated(rng, step, cluster);
    if !cluster {
        return args;
    }
    let keyed = |i: usize| match args[0].as_str() {
        "EVAL" => i == 3,
        "SINTER" | "MGET" | "DEL" | "EXISTS" => i >= 1,
        "RENAME" => i == 1 || i == 2,
        _ => i == 1,
    };
    args.iter()
        .enumerate()
        .map(|(i, a)| if i > 0 && keyed(i) { tagged(a) } else { a.clone() })
        .collect()
}

/// `s0` → `{s}s0`: a key's slot in a cluster is its kind's.
pub fn tagged(key: &str) -> String {
    format!("{{{}}}{key}", &key[..1])
}

fn generated(rng: &mut Rng, step: usize, cluster: bool) -> Vec<String> {
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
        34 if !cluster => vec![s("EVAL"), s(SCRIPT_UNDECLARED), s("0"), v],
        34 => vec![s("STRLEN"), s(rng.pick(STRINGS))],
        35 if cluster => vec![
            s("RENAME"),
            s(rng.pick(&["s0", "s1", "s2"])),
            s(rng.pick(&["s0", "s1", "s2"])),
        ],
        35 => vec![s("RENAME"), s(rng.pick(STRINGS)), s(rng.pick(STRINGS))],
        36 => vec![s("KEYS"), s("*")],
        _ => vec![s("TYPE"), s(rng.pick(&["s0", "h0", "l0", "t0", "z0", "x0"]))],
    };
    args
}

/// A reply made comparable: unordered replies sorted, TTLs reduced to
/// "has one".
pub fn normal(args: &[String], reply: redis::RedisResult<Value>) -> String {
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

pub fn query(conn: &mut Connection, args: &[String]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(&args[0]);
    for a in &args[1..] {
        cmd.arg(a);
    }
    cmd.query(conn)
}

/// Everything a database holds, comparable.
pub fn contents(conn: &mut Connection) -> Vec<String> {
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

/// `commands` as one pipeline, or a transaction when `atomic`.
pub fn pipeline(commands: &[Vec<String>], atomic: bool) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    if atomic {
        pipe.atomic();
    }
    for args in commands {
        let mut cmd = redis::cmd(&args[0]);
        for x in &args[1..] {
            cmd.arg(x);
        }
        pipe.add_command(cmd);
    }
    pipe
}

/// A pipeline's replies made comparable, one per command.
pub fn shown(replies: redis::RedisResult<Vec<Value>>, commands: &[Vec<String>]) -> Vec<String> {
    match replies {
        Ok(values) => values
            .into_iter()
            .zip(commands)
            .map(|(v, args)| normal(args, Ok(v)))
            .collect(),
        Err(e) => vec![format!("error: {}", e.code().unwrap_or("?"))],
    }
}
