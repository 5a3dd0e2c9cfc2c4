//! Every command through the proxy: forwarded on shared connections,
//! pinned for the state a shared connection cannot carry, writes gated by
//! --allow-writes and --deny-commands, and read-your-writes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use common::{Proxy, RedisServer, setup, wait_for};
use redis::{Connection, Value};
use redis_proxy::commands::Table;
use redis_proxy::forward::reply::reply_len;

fn connect(port: u16) -> Connection {
    connect_db(port, 0)
}

fn connect_db(port: u16, db: i64) -> Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/{db}")).unwrap();
    let conn = client.get_connection().unwrap();
    conn.set_read_timeout(Some(common::DEADLINE)).unwrap();
    conn
}

fn query(conn: &mut Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(conn)
}

fn ok(conn: &mut Connection, args: &[&str]) -> Value {
    query(conn, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn err(conn: &mut Connection, args: &[&str]) -> String {
    match query(conn, args) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("{args:?} answered {v:?}, not an error"),
    }
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

/// Waits until the proxy's pinned-connections gauge reads `n`.
fn wait_pinned(proxy: &Proxy, n: u32) {
    wait_for(&format!("{n} pinned connections"), || {
        (proxy.metric("redis_proxy_pinned_connections") == f64::from(n)).then_some(())
    });
}

/// Backend connections the proxy holds pinned, as Redis lists them.
fn pinned_on_redis(redis: &RedisServer) -> usize {
    match redis.cmd(&["CLIENT", "LIST"]) {
        Value::BulkString(b) => String::from_utf8(b)
            .unwrap()
            .matches("name=redis-proxy:pinned")
            .count(),
        Value::VerbatimString { text, .. } => text.matches("name=redis-proxy:pinned").count(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_transaction_runs_whole_and_its_writes_are_read_back() {
    let (redis, proxy) = setup(&["--allow-writes"]);
    redis.set("t:a", "old");
    let mut c = connect(proxy.resp);
    assert_eq!(ok(&mut c, &["GET", "t:a"]), bulk("old"));
    let replies: Vec<Value> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("t:a")
        .arg("new")
        .cmd("INCR")
        .arg("t:n")
        .cmd("GET")
        .arg("t:a")
        .query(&mut c)
        .unwrap();
    assert_eq!(replies, vec![Value::Okay, Value::Int(1), bulk("new")]);
    assert_eq!(ok(&mut connect(proxy.resp), &["GET", "t:a"]), bulk("new"));
    assert_eq!(redis.cmd(&["GET", "t:n"]), bulk("1"));
    wait_pinned(&proxy, 0);
}

#[test]
fn a_watch_is_aborted_by_a_direct_write() {
    let (redis, proxy) = setup(&["--allow-writes"]);
    redis.set("w:k", "1");
    let mut c = connect(proxy.resp);
    ok(&mut c, &["WATCH", "w:k"]);
    assert_eq!(ok(&mut c, &["GET", "w:k"]), bulk("1"));
    redis.set("w:k", "direct");
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["SET", "w:k", "2"]);
    assert_eq!(ok(&mut c, &["EXEC"]), Value::Nil);
    assert_eq!(redis.cmd(&["GET", "w:k"]), bulk("direct"));
    // And one nobody disturbs goes through.
    ok(&mut c, &["WATCH", "w:k"]);
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["SET", "w:k", "3"]);
    assert_eq!(ok(&mut c, &["EXEC"]), Value::Array(vec![Value::Okay]));
    assert_eq!(ok(&mut c, &["GET", "w:k"]), bulk("3"));
}

/// Kills the proxy's pinned connections on Redis (as a failover or a
/// network fault would).
fn kill_pinned(redis: &RedisServer) {
    let list = match redis.cmd(&["CLIENT", "LIST"]) {
        Value::BulkString(b) => String::from_utf8(b).unwrap(),
        Value::VerbatimString { text, .. } => text,
        other => panic!("{other:?}"),
    };
    for line in list.lines().filter(|l| l.contains("name=redis-proxy:pinned")) {
        let id = line.split(' ').find_map(|f| f.strip_prefix("id=")).unwrap();
        redis.cmd(&["CLIENT", "KILL", "ID", id]);
    }
}

/// A transaction whose pinned connection is lost goes on aborted: the
/// commands after the loss are not run on their own, and EXEC aborts.
/// A WATCH whose connection is lost makes the next transaction abort.
#[test]
fn a_lost_pinned_connection_never_lets_a_transaction_run_in_part() {
    let (redis, proxy) = setup(&["--allow-writes"]);
    let mut c = connect(proxy.resp);
    ok(&mut c, &["MULTI"]);
    assert_eq!(
        ok(&mut c, &["SET", "t:k", "1"]),
        Value::SimpleString("QUEUED".into())
    );
    kill_pinned(&redis);
    let lost = err(&mut c, &["INCR", "t:k"]);
    assert!(lost.contains("backend"), "{lost}");
    assert_eq!(ok(&mut c, &["INCR", "t:k"]), Value::SimpleString("QUEUED".into()));
    assert_eq!(ok(&mut c, &["GET", "t:k"]), Value::SimpleString("QUEUED".into()));
    let aborted = err(&mut c, &["EXEC"]);
    assert!(aborted.contains("Transaction discarded"), "{aborted}");
    assert_eq!(redis.cmd(&["EXISTS", "t:k"]), Value::Int(0), "nothing applied");

    ok(&mut c, &["WATCH", "t:w"]);
    kill_pinned(&redis);
    let lost = err(&mut c, &["GET", "t:w"]);
    assert!(lost.contains("backend"), "{lost}");
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["SET", "t:w", "x"]);
    let aborted = err(&mut c, &["EXEC"]);
    assert!(aborted.contains("Transaction discarded"), "{aborted}");
    assert_eq!(redis.cmd(&["EXISTS", "t:w"]), Value::Int(0), "nothing applied");
    // And the client goes on.
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["SET", "t:w", "y"]);
    assert_eq!(ok(&mut c, &["EXEC"]), Value::Array(vec![Value::Okay]));
}

#[test]
fn discard_drops_what_was_queued() {
    let (redis, proxy) = setup(&["--allow-writes"]);
    let mut c = connect(proxy.resp);
    ok(&mut c, &["MULTI"]);
    assert_eq!(
        ok(&mut c, &["SET", "d:k", "v"]),
        Value::SimpleString("QUEUED".into())
    );
    ok(&mut c, &["DISCARD"]);
    assert_eq!(redis.cmd(&["EXISTS", "d:k"]), Value::Int(0));
    assert!(err(&mut c, &["EXEC"]).contains("EXEC without MULTI"));
    wait_pinned(&proxy, 0);
}

#[test]
fn a_command_refused_inside_multi_aborts_exec_and_nothing_is_applied() {
    // A write without --allow-writes.
    let (redis, proxy) = setup(&[]);
    redis.set("r:k", "before");
    let mut c = connect(proxy.resp);
    ok(&mut c, &["MULTI"]);
    assert_eq!(ok(&mut c, &["GET", "r:k"]), Value::SimpleString("QUEUED".into()));
    assert!(err(&mut c, &["INCR", "r:n"]).contains("INCR is disabled"));
    let e = err(&mut c, &["EXEC"]);
    assert!(e.contains("EXECABORT") || e.contains("ExecAbort"), "{e}");
    assert_eq!(redis.cmd(&["EXISTS", "r:n"]), Value::Int(0));
    assert_eq!(ok(&mut c, &["PING"]), Value::SimpleString("PONG".into()));

    // A denied command, with writes allowed.
    let (redis, proxy) = setup(&["--allow-writes"]);
    let mut c = connect(proxy.resp);
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["SET", "r:k", "queued"]);
    assert!(err(&mut c, &["CONFIG", "SET", "maxmemory", "1"]).contains("is denied by this proxy"));
    let e = err(&mut c, &["EXEC"]);
    assert!(e.contains("EXECABORT") || e.contains("ExecAbort"), "{e}");
    assert_eq!(redis.cmd(&["EXISTS", "r:k"]), Value::Int(0));
    assert_eq!(
        redis.cmd(&["CONFIG", "GET", "maxmemory"]),
        Value::Array(vec![bulk("maxmemory"), bulk("0")])
    );
}

#[test]
fn blpop_waits_past_every_proxy_timeout_and_a_direct_lpush_serves_it() {
    let (redis, proxy) = setup(&[
        "--allow-writes",
        "--backend-timeout",
        "200ms",
        "--forward-timeout",
        "300ms",
    ]);
    let port = proxy.resp;
    let popper = thread::spawn(move || {
        let mut c = connect(port);
        ok(&mut c, &["BLPOP", "b:q", "0"])
    });
    wait_for("BLPOP to reach Redis", || {
        (pinned_on_redis(&redis) == 1).then_some(())
    });
    // Three times the backend timeout, and twice the forward timeout.
    thread::sleep(Duration::from_millis(600));
    assert!(!popper.is_finished());
    redis.cmd(&["LPUSH", "b:q", "hello"]);
    assert_eq!(
        popper.join().unwrap(),
        Value::Array(vec![bulk("b:q"), bulk("hello")])
    );
    wait_pinned(&proxy, 0);
}

#[test]
fn a_client_that_hangs_up_in_blpop_leaves_no_backend_connection() {
    let (redis, proxy) = setup(&["--allow-writes"]);
    let mut raw = TcpStream::connect(("127.0.0.1", proxy.resp)).unwrap();
    raw.write_all(b"*3\r\n$5\r\nBLPOP\r\n$3\r\nh:q\r\n$1\r\n0\r\n")
        .unwrap();
    wait_for("BLPOP to reach Redis", || {
        (pinned_on_redis(&redis) == 1).then_some(())
    });
    wait_pinned(&proxy, 1);
    drop(raw);
    wait_for("the pinned connection closed", || {
        (pinned_on_redis(&redis) == 0).then_some(())
    });
    wait_pinned(&proxy, 0);
    // Nothing was popped by a connection nobody reads.
    redis.cmd(&["LPUSH", "h:q", "kept"]);
    assert_eq!(redis.cmd(&["LLEN", "h:q"]), Value::Int(1));
}

/// A raw connection, and what has been read of the next reply.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Reads one reply (or push) from a raw connection.
fn read_value(raw: &mut Raw) -> Value {
    loop {
        if let Some(len) = reply_len(&raw.buf).unwrap() {
            let value = redis::parse_redis_value(&raw.buf[..len]).unwrap();
            raw.buf.drain(..len);
            return value;
        }
        let mut chunk = [0u8; 4096];
        let n = raw.stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed");
        raw.buf.extend_from_slice(&chunk[..n]);
    }
}

/// SUBSCRIBE, a direct PUBLISH, a PING, UNSUBSCRIBE: what a client sees
/// through `port`, in `proto`.
fn pubsub_transcript(redis: &RedisServer, port: u16, proto: &str) -> Vec<Value> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = Raw {
        stream,
        buf: Vec::new(),
    };
    let mut seen = Vec::new();
    if proto == "3" {
        writer.write_all(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n").unwrap();
        read_value(&mut reader);
    }
    writer
        .write_all(
            b"*3\r\n$9\r\nSUBSCRIBE\r\n$2\r\nc1\r\n$2\r\nc2\r\n*2\r\n$10\r\nPSUBSCRIBE\r\n$2\r\np*\r\n",
        )
        .unwrap();
    for _ in 0..3 {
        seen.push(read_value(&mut reader));
    }
    for (channel, message) in [("c1", "one"), ("c2", "two"), ("px", "three")] {
        redis.cmd(&["PUBLISH", channel, message]);
    }
    for _ in 0..3 {
        seen.push(read_value(&mut reader));
    }
    writer.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    seen.push(read_value(&mut reader));
    writer
        .write_all(b"*1\r\n$11\r\nUNSUBSCRIBE\r\n*1\r\n$12\r\nPUNSUBSCRIBE\r\n")
        .unwrap();
    for _ in 0..3 {
        seen.push(read_value(&mut reader));
    }
    // Out of subscribed mode: an ordinary command.
    writer.write_all(b"*2\r\n$6\r\nEXISTS\r\n$2\r\nc1\r\n").unwrap();
    seen.push(read_value(&mut reader));
    seen
}

#[test]
fn pubsub_in_resp2_and_resp3_is_as_redis_gives_it() {
    let (redis, proxy) = setup(&[]);
    for proto in ["2", "3"] {
        let direct = pubsub_transcript(&redis, redis.port, proto);
        let through = pubsub_transcript(&redis, proxy.resp, proto);
        assert_eq!(through, direct, "RESP{proto}");
        assert!(through.len() == 11);
    }
    wait_pinned(&proxy, 0);
}

#[test]
fn a_client_on_database_1_never_sees_database_0s_values() {
    let (redis, proxy) = setup(&["--allow-writes"]);
    redis.set("s:k", "zero");
    let mut db1 = redis::Client::open(format!("redis://127.0.0.1:{}/1", redis.port))
        .unwrap()
        .get_connection()
        .unwrap();
    ok(&mut db1, &["SET", "s:k", "one"]);
    let mut c = connect(proxy.resp);
    assert_eq!(ok(&mut c, &["GET", "s:k"]), bulk("zero"));
    assert_eq!(ok(&mut c, &["GET", "s:k"]), bulk("zero"), "cached");
    ok(&mut c, &["SELECT", "1"]);
    assert_eq!(ok(&mut c, &["GET", "s:k"]), bulk("one"));
    assert_eq!(
        ok(&mut c, &["MGET", "s:k", "s:none"]),
        Value::Array(vec![bulk("one"), Value::Nil])
    );
    ok(&mut c, &["SET", "s:k", "one-b"]);
    ok(&mut c, &["SELECT", "0"]);
    assert_eq!(ok(&mut c, &["GET", "s:k"]), bulk("zero"));
    // A client whose pool says db=1 from the start.
    let mut pool = connect_db(proxy.resp, 1);
    assert_eq!(ok(&mut pool, &["GET", "s:k"]), bulk("one-b"));
    assert_eq!(ok(&mut db1, &["GET", "s:k"]), bulk("one-b"));
}

#[test]
fn past_max_pinned_connections_the_command_is_refused_and_the_client_goes_on() {
    let (_redis, proxy) = setup(&["--allow-writes", "--max-pinned-connections", "1"]);
    let mut a = connect(proxy.resp);
    let mut b = connect(proxy.resp);
    ok(&mut a, &["MULTI"]);
    let e = err(&mut b, &["MULTI"]);
    assert!(
        e.contains("max pinned connections reached (--max-pinned-connections)"),
        "{e}"
    );
    assert_eq!(ok(&mut b, &["PING"]), Value::SimpleString("PONG".into()));
    ok(&mut b, &["SET", "m:k", "v"]);
    ok(&mut a, &["EXEC"]);
    ok(&mut b, &["MULTI"]);
    ok(&mut b, &["EXEC"]);
}

/// Arguments that satisfy a command's arity: the name (or container and
/// subcommand), then placeholder keys.
fn args_for(name: &str, arity: i64) -> Vec<String> {
    let mut args: Vec<String> = name.split('|').map(str::to_uppercase).collect();
    let want = arity.unsigned_abs() as usize;
    while args.len() < want {
        args.push(format!("wk{}", args.len()));
    }
    args
}

#[test]
fn without_allow_writes_every_write_the_table_names_is_refused_and_changes_nothing() {
    let (redis, proxy) = setup(&["--deny-commands", ""]);
    redis.set("wk1", "1");
    let table = Table::from_reply(&redis.cmd(&["COMMAND"])).unwrap();
    let mut writes: Vec<_> = table
        .entries()
        .filter(|info| {
            table
                .classify(
                    &args_for(&info.name, info.arity)
                        .iter()
                        .map(|a| Bytes::from(a.clone()))
                        .collect::<Vec<_>>(),
                )
                .write
        })
        .map(|info| (info.name.clone(), info.arity))
        .collect();
    writes.sort();
    for expected in [
        "set",
        "del",
        "flushall",
        "eval",
        "evalsha",
        "fcall",
        "script|load",
        "function|load",
        "swapdb",
        "blpop",
    ] {
        assert!(
            writes.iter().any(|(n, _)| n == expected),
            "{expected} missing from {writes:?}"
        );
    }
    let before = redis.cmd(&["DBSIZE"]);
    redis.cmd(&["CONFIG", "RESETSTAT"]);
    let mut c = connect(proxy.resp);
    for (name, arity) in &writes {
        let args = args_for(name, *arity);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = err(&mut c, &refs);
        let shown = name.split('|').next().unwrap().to_uppercase();
        assert!(
            e.contains(&format!(
                "{shown} is disabled: start the proxy with --allow-writes"
            )),
            "{name}: {e}"
        );
    }
    assert_eq!(redis.cmd(&["DBSIZE"]), before);
    assert_eq!(redis.cmd(&["GET", "wk1"]), bulk("1"));
    for (name, _) in &writes {
        assert_eq!(redis.calls(name), 0, "{name} reached Redis");
    }
    assert!(writes.len() > 100, "only {} writes in the table", writes.len());
}

/// `rounds` times: a read through one connection caches the key, a write
/// through another, then at once a read through the first: never the old
/// value.
fn read_your_writes(
    proxy: &Proxy,
    redis: &RedisServer,
    rounds: usize,
    write: impl Fn(&mut Connection, &str, usize),
    read: impl Fn(&mut Connection, &str) -> Value,
    expected: impl Fn(usize) -> Value,
) {
    let mut reader = connect(proxy.resp);
    let mut writer = connect(proxy.resp);
    let key = "ryw:k";
    redis.cmd(&["DEL", key]);
    let mut stale = 0;
    for i in 0..rounds {
        let _ = read(&mut reader, key);
        write(&mut writer, key, i);
        if read(&mut reader, key) != expected(i) {
            stale += 1;
        }
    }
    assert_eq!(stale, 0, "{stale} stale reads in {rounds}");
}

#[test]
fn a_write_through_the_proxy_is_seen_by_the_next_read_on_another_connection() {
    let (redis, proxy) = setup(&["--allow-writes"]);
    let get = |c: &mut Connection, k: &str| ok(c, &["GET", k]);
    let rounds = 4000;
    // Writes whose keys the command names: the keys are dropped before the
    // reply is passed on; EVAL writing a key it did not declare: the reply
    // waits for Redis's invalidation (the barrier).
    read_your_writes(
        &proxy,
        &redis,
        rounds,
        |c, k, i| {
            ok(c, &["SET", k, &i.to_string()]);
        },
        get,
        |i| bulk(&i.to_string()),
    );
    read_your_writes(
        &proxy,
        &redis,
        rounds,
        |c, k, _| {
            ok(c, &["INCR", k]);
        },
        get,
        |i| bulk(&(i + 1).to_string()),
    );
    read_your_writes(
        &proxy,
        &redis,
        rounds,
        |c, _, i| {
            ok(
                c,
                &[
                    "EVAL",
                    "return redis.call('SET', 'ryw:k', ARGV[1])",
                    "0",
                    &i.to_string(),
                ],
            );
        },
        get,
        |i| bulk(&i.to_string()),
    );
    read_your_writes(
        &proxy,
        &redis,
        rounds,
        |c, k, i| {
            let _: Value = redis::pipe().atomic().cmd("SET").arg(k).arg(i).query(c).unwrap();
        },
        get,
        |i| bulk(&i.to_string()),
    );
    read_your_writes(
        &proxy,
        &redis,
        rounds,
        |c, k, i| {
            ok(c, &["SET", "ryw:src", &i.to_string(), "KEEPTTL"]);
            ok(c, &["RENAME", "ryw:src", k]);
        },
        get,
        |i| bulk(&i.to_string()),
    );
    read_your_writes(
        &proxy,
        &redis,
        rounds,
        |c, _, i| {
            ok(c, &["HSET", "ryw:h", "f", &i.to_string()]);
        },
        |c, _| ok(c, &["HGET", "ryw:h", "f"]),
        |i| bulk(&i.to_string()),
    );
}

#[test]
fn the_proxys_own_connections_are_not_evicted_for_client_memory() {
    let (redis, proxy) = setup(&["--allow-writes"]);
    let mut c = connect(proxy.resp);
    ok(&mut c, &["INCR", "e:n"]);
    ok(&mut c, &["MULTI"]);
    let list = match redis.cmd(&["CLIENT", "LIST"]) {
        Value::BulkString(b) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    let ours: Vec<&str> = list.lines().filter(|l| l.contains("name=redis-proxy:")).collect();
    for kind in ["tracked", "shared", "pinned"] {
        assert!(
            ours.iter()
                .any(|l| l.contains(&format!("name=redis-proxy:{kind}"))),
            "{list}"
        );
    }
    for kind in ["reads", "invalidations", "shared", "pinned"] {
        let gauge = format!("redis_proxy_backend_connections{{kind=\"{kind}\"}}");
        assert_eq!(proxy.metric(&gauge), 1.0, "{kind}");
    }
    for line in ours {
        let flags = line.split(' ').find_map(|f| f.strip_prefix("flags=")).unwrap();
        assert!(flags.contains('e'), "not no-evict: {line}");
    }
    ok(&mut c, &["DISCARD"]);
}

#[test]
fn a_swapdb_through_the_proxy_drops_the_cache() {
    // Redis sends no invalidation for SWAPDB (7.0): the proxy must drop
    // what it holds itself.
    let (redis, proxy) = setup(&["--allow-writes", "--cache-ttl", "1h"]);
    redis.set("x:k", "zero");
    let mut db1 = connect_db(redis.port, 1);
    ok(&mut db1, &["SET", "x:k", "one"]);
    let mut c = connect(proxy.resp);
    assert_eq!(ok(&mut c, &["GET", "x:k"]), bulk("zero"));
    assert_eq!(ok(&mut c, &["GET", "x:k"]), bulk("zero"), "cached");
    ok(&mut c, &["SWAPDB", "0", "1"]);
    assert_eq!(ok(&mut connect(proxy.resp), &["GET", "x:k"]), bulk("one"));
}

#[test]
fn many_clients_pipelining_on_one_shared_connection_each_get_their_own_replies() {
    // Clients that find the shared connection busy queue their batches for
    // the writer task; those that find it free write themselves. Each
    // batch must still get its own replies, in order.
    let (redis, proxy) = setup(&["--allow-writes"]);
    let port = proxy.resp;
    let clients: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = connect(port);
                let key = format!("many:{t}");
                for round in 0..100i64 {
                    let mut pipe = redis::pipe();
                    for _ in 0..10 {
                        pipe.cmd("INCR").arg(&key);
                    }
                    let got: Vec<i64> = pipe.query(&mut c).unwrap();
                    let want: Vec<i64> = (round * 10 + 1..=round * 10 + 10).collect();
                    assert_eq!(got, want, "client {t}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    for t in 0..8 {
        assert_eq!(redis.cmd(&["GET", &format!("many:{t}")]), bulk("1000"));
    }
}

#[test]
fn a_client_blocked_in_blpop_holds_no_max_parallel_slot() {
    // With --max-parallel 1 (one request at a time), a BLPOP that waits
    // must not stop every other client.
    let (redis, proxy) = setup(&["--allow-writes", "--max-parallel", "1"]);
    redis.set("p:k", "v");
    let port = proxy.resp;
    let popper = thread::spawn(move || ok(&mut connect(port), &["BLPOP", "p:q", "0"]));
    wait_for("BLPOP to reach Redis", || {
        (pinned_on_redis(&redis) == 1).then_some(())
    });
    assert_eq!(ok(&mut connect(proxy.resp), &["GET", "p:k"]), bulk("v"));
    assert_eq!(proxy.get("/get/p:k").status, 200);
    redis.cmd(&["LPUSH", "p:q", "x"]);
    assert_eq!(popper.join().unwrap(), Value::Array(vec![bulk("p:q"), bulk("x")]));
}
