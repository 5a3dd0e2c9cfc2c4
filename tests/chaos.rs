//! The chaos test: readers read through the proxy without pause (HTTP GET;
//! RESP GET, MGET and pipelined GETs) and writers change the same keys
//! directly on Redis, while Redis is killed (SIGKILL) and restarted,
//! stopped (SIGSTOP) for longer than `--backend-timeout` and resumed, and
//! has its clients' connections dropped (`CLIENT KILL TYPE normal`), in
//! turn, several times each.
//!
//! What must hold:
//! - No wrong value. Each value names its key and a sequence number; writes
//!   go through a script that never lowers a key's number, and Redis keeps
//!   an append-only file synced on every write (so nothing it acknowledged
//!   or answered with is lost to SIGKILL): a key's number in Redis never
//!   goes down. A read may not return another key's value, a number no
//!   writer had sent yet, or a number lower than one a read that finished
//!   before it was sent returned. With each writer reading every write
//!   back through the proxy, that also catches a value the proxy kept after
//!   Redis changed it.
//! - No false "not found": every key exists before the readers start and
//!   Redis never loses it, so a 404 or a nil is wrong; a failure must be a
//!   503/504 or `-ERR backend …`.
//! - Each fault is felt: while Redis is killed a read of a never-cached key
//!   is a 503, and while it is stopped such a read is a 504 (the readers'
//!   keys are mostly cached, so they meet the faults only by chance).
//! - Every reader's connection stays usable: a reader never reconnects.
//! - The proxy serves again within 2 s of Redis answering again.
//!
//! `make test` runs two rounds of the three faults; `bench/chaos.sh` runs
//! more (`CHAOS_ROUNDS`) with the release build and keeps the figures.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{HttpConn, Proxy, RedisServer, free_port, wait_for};

const KEYS: usize = 32;
const WRITERS: usize = 2;
const BACKEND_TIMEOUT: &str = "300ms";
/// How long Redis stays stopped: longer than `--backend-timeout`, and than
/// the proxy's health check takes to give up on it.
const STOPPED: Duration = Duration::from_millis(1200);
/// Steady load between faults.
const CALM: Duration = Duration::from_millis(700);
const RECOVERY: Duration = Duration::from_secs(2);
/// Far above any answer's time: a reader whose request takes longer has
/// lost its connection.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// SET, unless the key already holds a number at least as high (a write
/// that timed out may still be carried out after a later one).
const SET_IF_NEWER: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local seq = tonumber(string.match(current, ':(%d+)$'))
  if seq and seq >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1";

fn key(i: usize) -> String {
    format!("chaos:{i}")
}

fn value(i: usize, seq: u64) -> String {
    format!("chaos:{i}:{seq}")
}

/// A read's answer for one key.
enum Answer {
    Value(Vec<u8>),
    Missing,
    /// 503 / `-ERR backend unavailable`, or an error reply from Redis.
    Unavailable,
    /// 504 / `-ERR backend timed out`.
    TimedOut,
    /// Anything else: a status or error the proxy must not give.
    Odd(String),
}

#[derive(Default)]
struct Tally {
    values: AtomicU64,
    unavailable: AtomicU64,
    timed_out: AtomicU64,
    wrong: AtomicU64,
    false_missing: AtomicU64,
    odd: AtomicU64,
    broken: AtomicU64,
}

struct Run {
    /// Per key, the highest number a writer has sent.
    sent: Vec<AtomicU64>,
    /// Per key, the highest number a read through the proxy has returned.
    served: Vec<AtomicU64>,
    tally: Tally,
    stop: AtomicBool,
    problems: Mutex<Vec<String>>,
}

impl Run {
    fn new() -> Run {
        Run {
            sent: (0..KEYS).map(|_| AtomicU64::new(0)).collect(),
            served: (0..KEYS).map(|_| AtomicU64::new(0)).collect(),
            tally: Tally::default(),
            stop: AtomicBool::new(false),
            problems: Mutex::new(Vec::new()),
        }
    }

    fn problem(&self, what: String) {
        let mut problems = self.problems.lock().unwrap();
        if problems.len() < 20 {
            problems.push(what);
        }
    }

    /// What a read of key `i` sent when its served number was `floor`
    /// may answer; returns the number it read.
    fn check(&self, i: usize, floor: u64, answer: Answer, how: &str) -> Option<u64> {
        let t = &self.tally;
        match answer {
            Answer::Value(v) => {
                t.values.fetch_add(1, Relaxed);
                let text = String::from_utf8_lossy(&v);
                let seq = text
                    .strip_prefix(&format!("{}:", key(i)))
                    .and_then(|n| n.parse::<u64>().ok());
                let sent = self.sent[i].load(Relaxed);
                match seq {
                    Some(seq) if seq <= sent && seq >= floor => {
                        self.served[i].fetch_max(seq, Relaxed);
                        return Some(seq);
                    }
                    _ => {
                        t.wrong.fetch_add(1, Relaxed);
                        self.problem(format!(
                            "{how} {}: {text:?}, when {floor} had been served and {sent} sent",
                            key(i)
                        ));
                    }
                }
            }
            Answer::Missing => {
                t.false_missing.fetch_add(1, Relaxed);
                self.problem(format!("{how} {}: not found", key(i)));
            }
            Answer::Unavailable => drop(t.unavailable.fetch_add(1, Relaxed)),
            Answer::TimedOut => drop(t.timed_out.fetch_add(1, Relaxed)),
            Answer::Odd(what) => {
                t.odd.fetch_add(1, Relaxed);
                self.problem(format!("{how} {}: {what}", key(i)));
            }
        }
        None
    }

    fn floor(&self, i: usize) -> u64 {
        self.served[i].load(Relaxed)
    }
}

fn http_answer(r: &common::Response) -> Answer {
    match r.status {
        200 => Answer::Value(r.json()["value"].as_str().unwrap_or_default().as_bytes().to_vec()),
        404 => Answer::Missing,
        503 => Answer::Unavailable,
        504 => Answer::TimedOut,
        other => Answer::Odd(format!("HTTP {other} {}", r.text())),
    }
}

fn resp_answer(r: Result<Option<Vec<u8>>, &redis::RedisError>) -> Answer {
    match r {
        Ok(Some(v)) => Answer::Value(v),
        Ok(None) => Answer::Missing,
        Err(e) => {
            let text = e.to_string();
            if text.contains("backend timed out") {
                Answer::TimedOut
            } else if text.contains("backend unavailable") || text.contains("backend error") {
                Answer::Unavailable
            } else {
                Answer::Odd(text)
            }
        }
    }
}

/// Reads key `i` over HTTP on `c`; false when the connection failed.
fn http_read(run: &Run, c: &mut HttpConn, i: usize, how: &str) -> Option<Option<u64>> {
    let floor = run.floor(i);
    match c.request("GET", format!("/get/{}", key(i)).as_bytes(), &[]) {
        Ok(r) => Some(run.check(i, floor, http_answer(&r), how)),
        Err(e) => {
            run.tally.broken.fetch_add(1, Relaxed);
            run.problem(format!("{how}: the connection failed: {e}"));
            None
        }
    }
}

fn http_reader(run: &Run, port: u16, seed: usize) {
    let mut c = HttpConn::connect(port).unwrap();
    let mut i = seed;
    while !run.stop.load(Relaxed) {
        i = (i * 7 + 3) % KEYS;
        if http_read(run, &mut c, i, "HTTP GET").is_none() {
            return;
        }
    }
}

/// Kind 0: GET; 1: MGET of 4 keys; 2: 4 pipelined GETs.
fn resp_reader(run: &Run, port: u16, kind: usize) {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .unwrap()
        .get_connection()
        .unwrap();
    c.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    let mut next = kind;
    while !run.stop.load(Relaxed) {
        let keys: Vec<usize> = (0..if kind == 0 { 1 } else { 4 })
            .map(|_| {
                next = (next * 5 + 1) % KEYS;
                next
            })
            .collect();
        let floors: Vec<u64> = keys.iter().map(|&i| run.floor(i)).collect();
        let names: Vec<String> = keys.iter().map(|&i| key(i)).collect();
        let (how, answers): (&str, redis::RedisResult<Vec<Option<Vec<u8>>>>) = match kind {
            0 => (
                "RESP GET",
                redis::cmd("GET").arg(&names[0]).query(&mut c).map(|v| vec![v]),
            ),
            1 => ("RESP MGET", redis::cmd("MGET").arg(&names).query(&mut c)),
            _ => {
                let mut pipe = redis::pipe();
                for name in &names {
                    pipe.cmd("GET").arg(name);
                }
                ("RESP pipelined GET", pipe.query(&mut c))
            }
        };
        match answers {
            Ok(values) => {
                for ((&i, floor), v) in keys.iter().zip(floors).zip(values) {
                    run.check(i, floor, resp_answer(Ok(v)), how);
                }
            }
            Err(e) if e.is_io_error() || e.is_unrecoverable_error() => {
                run.tally.broken.fetch_add(1, Relaxed);
                run.problem(format!("{how}: the connection failed: {e}"));
                return;
            }
            // An error reply answers the whole MGET (or the pipeline's
            // first failed GET, the others' answers unread): one per key.
            Err(e) => {
                for (&i, floor) in keys.iter().zip(floors) {
                    run.check(i, floor, resp_answer(Err(&e)), how);
                }
            }
        }
    }
}

/// Writes its keys in turn directly on Redis, and after each acknowledged
/// write reads the key through the proxy until it serves that number or a
/// higher one.
fn writer(run: &Run, redis_url: &str, proxy: &Proxy, keys: Vec<usize>) {
    let mut redis: Option<redis::Connection> = None;
    let mut check = HttpConn::connect(proxy.http).unwrap();
    for &i in keys.iter().cycle() {
        if run.stop.load(Relaxed) {
            return;
        }
        let seq = run.sent[i].load(Relaxed) + 1;
        run.sent[i].store(seq, Relaxed);
        let c = match &mut redis {
            Some(c) => c,
            None => {
                let client = redis::Client::open(redis_url).unwrap();
                match client.get_connection_with_timeout(Duration::from_millis(300)) {
                    Ok(c) => {
                        c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
                        redis.insert(c)
                    }
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                }
            }
        };
        // A failed write may or may not have been carried out (or may be
        // carried out later): the number stays sent either way.
        let write = redis::cmd("EVAL")
            .arg(SET_IF_NEWER)
            .arg(1)
            .arg(key(i))
            .arg(seq)
            .arg(value(i, seq))
            .query::<i64>(c);
        if write.is_err() {
            redis = None;
            continue;
        }
        let start = Instant::now();
        loop {
            let Some(read) = http_read(run, &mut check, i, "HTTP GET after a write") else {
                return;
            };
            if read.is_some_and(|n| n >= seq) || run.stop.load(Relaxed) {
                break;
            }
            if start.elapsed() > common::DEADLINE {
                run.problem(format!("{} = {seq} was never served", key(i)));
                run.tally.wrong.fetch_add(1, Relaxed);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    Stop,
    ClientKill,
}

/// Injects `fault`; returns when Redis answers again. While Redis is
/// down or stopped, `probe` asks for a key never read before (so never
/// cached): the fault must be felt as a 503 (killed) or a 504 (stopped
/// past `--backend-timeout`), never as a value or a "not found". The
/// readers meet the faults too, but only by chance: what they read is
/// mostly cached.
fn inject(redis: &mut RedisServer, fault: Fault, probe: &mut HttpConn, tally: &Tally) {
    static FRESH: AtomicU64 = AtomicU64::new(0);
    let mut felt = |expected: u16| {
        let path = format!("/get/chaos:fresh:{}", FRESH.fetch_add(1, Relaxed));
        let r = probe.request("GET", path.as_bytes(), &[]).unwrap();
        assert_eq!(r.status, expected, "{fault:?}: {path}: {}", r.text());
        let counter = if expected == 503 {
            &tally.unavailable
        } else {
            &tally.timed_out
        };
        counter.fetch_add(1, Relaxed);
    };
    match fault {
        Fault::Kill => {
            redis.stop();
            felt(503);
            // spawn() waits for PING, which Redis refuses while it loads.
            redis.spawn();
        }
        Fault::Stop => {
            let pid = redis.pid().to_string();
            let signal = |sig: &str| {
                let ok = std::process::Command::new("kill")
                    .args([sig, &pid])
                    .status()
                    .unwrap();
                assert!(ok.success(), "kill {sig} {pid}");
            };
            let stopped = Instant::now();
            signal("-STOP");
            // The connection is up and a PING or two timing out does not
            // drop it: the read is sent and waits out the backend timeout.
            felt(504);
            std::thread::sleep(STOPPED.saturating_sub(stopped.elapsed()));
            signal("-CONT");
        }
        Fault::ClientKill => {
            let killed = redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
            assert!(matches!(killed, redis::Value::Int(n) if n >= 1), "{killed:?}");
        }
    }
    wait_for("Redis to answer", || {
        let client = redis::Client::open(redis.url()).ok()?;
        let mut c = client
            .get_connection_with_timeout(Duration::from_millis(200))
            .ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()
    });
}

/// From Redis answering again until the proxy serves a read from Redis.
fn recovery(probe: &mut HttpConn, n: usize) -> Duration {
    let back = Instant::now();
    let path = format!("/get/chaos:probe:{n}");
    loop {
        // A key read by no one before: never cached, so the read goes to
        // Redis.
        let r = probe.request("GET", path.as_bytes(), &[]).unwrap();
        if r.status == 200 {
            return back.elapsed();
        }
        assert!(matches!(r.status, 503 | 504), "probe: {} {}", r.status, r.text());
        assert!(back.elapsed() < common::DEADLINE, "the proxy never served again");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn through_kills_stops_and_dropped_connections_nothing_wrong_is_served() {
    let rounds: usize = std::env::var("CHAOS_ROUNDS").map_or(2, |v| v.parse().expect("CHAOS_ROUNDS"));
    let aof = ["--appendonly", "yes", "--appendfsync", "always"].map(String::from);
    let mut redis = RedisServer::start_with(free_port(), &aof);
    let mut setup = redis.conn();
    for i in 0..KEYS {
        redis::cmd("SET")
            .arg(key(i))
            .arg(value(i, 0))
            .exec(&mut setup)
            .unwrap();
    }
    for n in 0..rounds * 3 {
        redis.set(format!("chaos:probe:{n}"), "probe");
    }
    // Synced on every write, so that every restart finds every key.
    let appendfsync: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query(&mut setup)
        .unwrap();
    assert_eq!(appendfsync[1], "always");
    drop(setup);
    let proxy = Proxy::start_ready(&redis, &["--backend-timeout", BACKEND_TIMEOUT]);

    let run = Run::new();
    let mut recoveries: Vec<(Fault, Duration)> = Vec::new();
    let started = Instant::now();
    std::thread::scope(|s| {
        // Should the fault injector fail, the others still stop (a scope
        // waits for its threads before the panic goes on).
        let _stop = StopOnDrop(&run.stop);
        for n in 0..2 {
            let run = &run;
            s.spawn(move || http_reader(run, proxy.http, n));
        }
        for kind in 0..3 {
            let run = &run;
            s.spawn(move || resp_reader(run, proxy.resp, kind));
        }
        let url = redis.url();
        for w in 0..WRITERS {
            let (run, url, proxy) = (&run, url.clone(), &proxy);
            let keys = (w..KEYS).step_by(WRITERS).collect();
            s.spawn(move || writer(run, &url, proxy, keys));
        }
        let mut probe = HttpConn::connect(proxy.http).unwrap();
        std::thread::sleep(CALM);
        for _ in 0..rounds {
            for fault in [Fault::Kill, Fault::Stop, Fault::ClientKill] {
                inject(&mut redis, fault, &mut probe, &run.tally);
                recoveries.push((fault, recovery(&mut probe, recoveries.len())));
                std::thread::sleep(CALM);
            }
        }
    });

    // Once the faults are over, every key reads what Redis holds, over
    // both front ends: a value the proxy kept after Redis changed it would
    // stay until --cache-ttl.
    let mut direct = redis.conn();
    let mut resp = redis::Client::open(format!("redis://127.0.0.1:{}/0", proxy.resp))
        .unwrap()
        .get_connection()
        .unwrap();
    for i in 0..KEYS {
        let truth: String = redis::cmd("GET").arg(key(i)).query(&mut direct).unwrap();
        wait_for("the proxy to serve what Redis holds", || {
            let http = proxy.get(&format!("/get/{}", key(i)));
            let over_resp: Option<String> = redis::cmd("GET").arg(key(i)).query(&mut resp).ok()?;
            (http.status == 200 && http.json()["value"] == truth.as_str() && over_resp == Some(truth.clone()))
                .then_some(())
        });
    }

    let t = &run.tally;
    let sent: u64 = run.sent.iter().map(|s| s.load(Relaxed)).sum();
    let slowest = recoveries.iter().map(|r| r.1).max().unwrap();
    let mut report = format!(
        "{} faults ({rounds} rounds of SIGKILL + restart, SIGSTOP for {STOPPED:?} \
         with --backend-timeout {BACKEND_TIMEOUT}, CLIENT KILL TYPE normal) in {:.1} s, \
         {KEYS} keys, 2 HTTP readers, 3 RESP readers (GET, MGET of 4, 4 pipelined GETs), \
         {WRITERS} writers.\n\n\
         | reads answered with a value | 503 / -ERR backend unavailable | 504 / -ERR backend timed out \
         | writes sent | wrong values | false 404 / nil | other answers | reader connections broken |\n\
         |---|---|---|---|---|---|---|---|\n\
         | {} | {} | {} | {sent} | {} | {} | {} | {} |\n\n\
         | fault | recoveries | median | slowest |\n|---|---|---|---|\n",
        recoveries.len(),
        started.elapsed().as_secs_f64(),
        t.values.load(Relaxed),
        t.unavailable.load(Relaxed),
        t.timed_out.load(Relaxed),
        t.wrong.load(Relaxed),
        t.false_missing.load(Relaxed),
        t.odd.load(Relaxed),
        t.broken.load(Relaxed),
    );
    for fault in [Fault::Kill, Fault::Stop, Fault::ClientKill] {
        let mut times: Vec<Duration> = recoveries.iter().filter(|r| r.0 == fault).map(|r| r.1).collect();
        times.sort();
        report += &format!(
            "| {fault:?} | {} | {:.1} ms | {:.1} ms |\n",
            times.len(),
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
        );
    }
    report +=
        "\nRecovery: from Redis answering PING again to the proxy's first 200 for a key read from Redis.\n";
    eprintln!("{report}");
    if let Ok(path) = std::env::var("CHAOS_REPORT") {
        std::fs::write(path, &report).unwrap();
    }
    let problems = run.problems.lock().unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(t.values.load(Relaxed) > 0);
    assert!(slowest < RECOVERY, "{recoveries:?}");
}
