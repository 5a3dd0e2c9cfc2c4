//! The cluster coherence run, included by `tests/cluster.rs` (one binary,
//! one test at a time): two proxies in front of one cluster, writers
//! straight to the cluster, readers through both proxies over RESP (GET,
//! MGET) and HTTP, while the cluster is resharded, failed over by hand,
//! has a master frozen until its replica takes over, has a master killed,
//! and is flushed. Every value read is checked against the values the key
//! held, and the staleness of each read (how long before it was sent the
//! value it returned had been replaced) is measured per proxy.
//!
//! A key's states come from its one writer: every write is `SET k v GET`,
//! whose reply is the value it replaced, so a write that a failover lost
//! (Redis replicates asynchronously) shows as the key going back to an
//! older value, which is then one of its states too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::common::cluster::Cluster;
use crate::common::{HttpConn, Proxy};

/// One value a key held (None: no key) from `from` (the send of the write
/// that made it) until `until` (the acknowledgement of the write that
/// replaced it), in µs since the start.
#[derive(Clone, Debug)]
struct State {
    value: Option<String>,
    from: u64,
    until: u64,
}

const OPEN: u64 = u64::MAX;

/// One key's answer: (key, value, send, recv).
type ReadOf = (usize, Option<String>, u64, u64);

struct Run {
    start: Instant,
    names: Vec<String>,
    histories: Vec<Mutex<Vec<State>>>,
    /// Writers hold it shared per write; FLUSHALL holds them still.
    writes: RwLock<()>,
    stop: AtomicBool,
    /// Per proxy: (key, value, send, recv) of every answered read.
    reads: Vec<Mutex<Vec<ReadOf>>>,
    errors: Vec<AtomicU64>,
    writes_done: AtomicU64,
    lost_writes: AtomicU64,
}

impl Run {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// What a run showed, per proxy.
pub struct Report {
    pub reads: Vec<usize>,
    pub errors: Vec<u64>,
    pub wrong: Vec<Vec<String>>,
    /// Staleness of the reads that returned a replaced value, µs, sorted.
    pub stale: Vec<Vec<u64>>,
    pub writes: u64,
    pub lost_writes: u64,
    /// Per proxy, for keys of the frozen master cached before the freeze:
    /// how long after the freeze began a read sent then still got the
    /// cached value (None: never after the freeze began).
    pub old_after_freeze: Vec<Option<Duration>>,
    /// Per proxy: reads sent after a write to the promoted replica was
    /// acknowledged that still got the value it replaced.
    pub stale_after_promotion: Vec<usize>,
    /// Faults made: a reshard, a failover, a freeze, a kill and a FLUSHALL
    /// per round.
    pub faults: u64,
}

fn writer(run: &Run, cluster_urls: Vec<String>, keys: Vec<usize>) {
    let client = redis::cluster::ClusterClientBuilder::new(cluster_urls)
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .retries(8)
        .build()
        .unwrap();
    let mut conn = None;
    let mut seq = 0u64;
    let mut last: HashMap<usize, Option<String>> = HashMap::new();
    while !run.stop.load(Ordering::Relaxed) {
        for &key in &keys {
            if run.stop.load(Ordering::Relaxed) {
                return;
            }
            let _held = run.writes.read().unwrap();
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match client.get_connection() {
                    Ok(c) => conn.insert(c),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                },
            };
            seq += 1;
            let value = format!("{}={seq}", run.names[key]);
            let send = run.now();
            // Recorded before it is sent: a reader may see it before the
            // writer has the reply; `until` is set when the next one is
            // acknowledged.
            run.histories[key].lock().unwrap().push(State {
                value: Some(value.clone()),
                from: send,
                until: OPEN,
            });
            let prior: redis::RedisResult<Option<String>> = redis::cmd("SET")
                .arg(&run.names[key])
                .arg(&value)
                .arg("GET")
                .query(c);
            let ack = run.now();
            match prior {
                Ok(prior) => {
                    run.writes_done.fetch_add(1, Ordering::Relaxed);
                    let mut h = run.histories[key].lock().unwrap();
                    let n = h.len();
                    // What it replaced ends now. If that is not what this
                    // writer wrote last, a failover lost writes and the key
                    // went back to `prior` meanwhile: a state of its own.
                    let expected = last.get(&key).cloned().flatten();
                    if prior.is_some() && prior != expected {
                        run.lost_writes.fetch_add(1, Ordering::Relaxed);
                        let from = h[..n - 1].iter().map(|s| s.from).min().unwrap_or(0);
                        h.insert(
                            n - 1,
                            State {
                                value: prior.clone(),
                                from,
                                until: ack,
                            },
                        );
                    }
                    let n = h.len();
                    for s in &mut h[..n - 1] {
                        if s.until == OPEN {
                            s.until = ack;
                        }
                    }
                    last.insert(key, Some(value));
                }
                Err(_) => {
                    // Maybe written, maybe not: its state stays open until a
                    // later write closes it.
                    conn = None;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A key's states allow `value` for a read sent at `send`, answered at
/// `recv`: Some(staleness in µs), or None if the key never held it then.
fn staleness(states: &[State], value: &Option<String>, send: u64, recv: u64) -> Option<u64> {
    states
        .iter()
        .filter(|s| s.value == *value && s.from <= recv)
        .map(|s| send.saturating_sub(s.until))
        .min()
}

fn reader(run: &Run, p: usize, proxy: &Proxy, kind: u8, seed: u64) {
    let mut x = seed | 1;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let url = format!("redis://127.0.0.1:{}/0", proxy.resp);
    let connect = || {
        let c = redis::Client::open(url.as_str())
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(5))
            .ok()?;
        c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        Some(c)
    };
    let mut resp = None;
    let mut http: Option<HttpConn> = None;
    while !run.stop.load(Ordering::Relaxed) {
        let keys: Vec<usize> = (0..if kind == 1 { 4 } else { 1 })
            .map(|_| next(run.names.len()))
            .collect();
        let send = run.now();
        let got: Result<Vec<Option<String>>, String> = match kind {
            0 | 1 => {
                if resp.is_none() {
                    resp = connect();
                }
                match resp.as_mut() {
                    None => Err("no connection".into()),
                    Some(c) => {
                        let r = if kind == 0 {
                            redis::cmd("GET")
                                .arg(&run.names[keys[0]])
                                .query::<Option<String>>(c)
                                .map(|v| vec![v])
                        } else {
                            let names: Vec<&String> = keys.iter().map(|&k| &run.names[k]).collect();
                            redis::cmd("MGET").arg(names).query::<Vec<Option<String>>>(c)
                        };
                        r.map_err(|e| {
                            if e.is_io_error() || e.is_connection_dropped() {
                                resp = None;
                            }
                            e.to_string()
                        })
                    }
                }
            }
            _ => {
                if http.is_none() {
                    http = HttpConn::connect(proxy.http).ok();
                }
                match http.as_mut() {
                    None => Err("no connection".into()),
                    Some(c) => {
                        let target = format!("/get/{}", run.names[keys[0]]);
                        match c.request(
                            "GET",
                            target.as_bytes(),
                            &[("Accept", "application/octet-stream")],
                        ) {
                            Ok(r) if r.status == 200 => Ok(vec![Some(String::from_utf8(r.body).unwrap())]),
                            Ok(r) if r.status == 404 => Ok(vec![None]),
                            Ok(r) => Err(format!("HTTP {}", r.status)),
                            Err(e) => {
                                http = None;
                                Err(e.to_string())
                            }
                        }
                    }
                }
            }
        };
        let recv = run.now();
        match got {
            Ok(values) => {
                let mut reads = run.reads[p].lock().unwrap();
                for (k, v) in keys.into_iter().zip(values) {
                    reads.push((k, v, send, recv));
                }
            }
            Err(_) => {
                run.errors[p].fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The run: `keys` keys, the faults in turn, then the reads checked.
pub fn run(
    cluster: &mut Cluster,
    proxies: &[&Proxy],
    keys: usize,
    rounds: usize,
    log: &mut dyn FnMut(&str),
) -> Report {
    let run = Arc::new(Run {
        start: Instant::now(),
        names: (0..keys).map(|i| format!("c:{i}")).collect(),
        histories: (0..keys)
            .map(|_| {
                Mutex::new(vec![State {
                    value: None,
                    from: 0,
                    until: OPEN,
                }])
            })
            .collect(),
        writes: RwLock::new(()),
        stop: AtomicBool::new(false),
        reads: proxies.iter().map(|_| Mutex::default()).collect(),
        errors: proxies.iter().map(|_| AtomicU64::new(0)).collect(),
        writes_done: AtomicU64::new(0),
        lost_writes: AtomicU64::new(0),
    });
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let mut old_after_freeze = vec![None; proxies.len()];
    let mut stale_after_promotion = vec![0; proxies.len()];
    let faults = AtomicU64::new(0);
    let mut threads = Vec::new();
    const WRITERS: usize = 3;
    for w in 0..WRITERS {
        let (run, urls) = (run.clone(), urls.clone());
        let mine: Vec<usize> = (w..keys).step_by(WRITERS).collect();
        threads.push(std::thread::spawn(move || writer(&run, urls, mine)));
    }
    std::thread::scope(|s| {
        for (p, proxy) in proxies.iter().enumerate() {
            for kind in 0..3u8 {
                let run = &run;
                s.spawn(move || reader(run, p, proxy, kind, (p * 3 + kind as usize + 1) as u64 * 7919));
            }
        }
        let settle = || std::thread::sleep(Duration::from_secs(2));
        settle();
        for round in 0..rounds {
            if rounds > 1 {
                log(&format!("round {} of {rounds}", round + 1));
            }

            // 1. Reshard: 1,000 slots from one master to another, keys moved
            //    with MIGRATE, the slots handed over with SETSLOT (no
            //    invalidation for that).
            let masters = cluster.masters();
            let id = |i: usize| cluster.node_id(i);
            let (from, to) = (id(masters[0]), id(masters[1]));
            log("resharding 1000 slots");
            cluster.cli(&[
                "reshard",
                &format!("127.0.0.1:{}", cluster.nodes[masters[0]].port),
                "--cluster-from",
                &from,
                "--cluster-to",
                &to,
                "--cluster-slots",
                "1000",
                "--cluster-yes",
            ]);
            cluster.wait_healthy();
            settle();

            // 2. A manual failover: a replica takes over its master.
            let masters = cluster.masters();
            let replica = cluster.replica_of(masters[2]);
            log("manual failover");
            cluster.nodes[replica].cmd(&["CLUSTER", "FAILOVER"]);
            cluster.wait_master(replica);
            cluster.wait_healthy();
            settle();

            // 3. A master frozen (SIGSTOP) until its replica is promoted. Keys
            //    of its own, cached by both proxies before, are read through
            //    both all along: the cached value must stop being served within
            //    the lease, and once the promoted replica has taken a write,
            //    never be served again.
            let masters = cluster.masters();
            let frozen = masters[0];
            let replica = cluster.replica_of(frozen);
            let watched: Vec<String> = (0..)
                .map(|i| format!("f:{i}"))
                .filter(|k| cluster.master_of(k) == frozen)
                .take(8)
                .collect();
            for k in &watched {
                let _: () = redis::cmd("SET")
                    .arg(k)
                    .arg("before")
                    .query(&mut cluster.nodes[frozen].conn())
                    .unwrap();
                for proxy in proxies {
                    let mut c = redis::Client::open(format!("redis://127.0.0.1:{}/0", proxy.resp))
                        .unwrap()
                        .get_connection()
                        .unwrap();
                    crate::common::wait_for("the key to be cached", || {
                        let _: Option<String> = redis::cmd("GET").arg(k).query(&mut c).ok()?;
                        (proxy.get(&format!("/get/{k}")).cache() == "HIT").then_some(())
                    });
                }
            }
            let promoted = Mutex::new(None::<Instant>);
            let watching = AtomicBool::new(true);
            log("freezing a master");
            cluster.signal(frozen, "STOP");
            // After kill(1) returned: the node is stopped by now (or within
            // a scheduling tick).
            let frozen_at = Instant::now();
            std::thread::scope(|w| {
                let watchers: Vec<_> = proxies
                    .iter()
                    .map(|proxy| {
                        let (watched, promoted, watching) = (&watched, &promoted, &watching);
                        w.spawn(move || {
                            let mut last_old = None;
                            let mut stale_after = 0;
                            let url = format!("redis://127.0.0.1:{}/0", proxy.resp);
                            let mut c = None;
                            while watching.load(Ordering::Relaxed) {
                                for k in watched {
                                    if c.is_none() {
                                        c = redis::Client::open(url.as_str())
                                            .unwrap()
                                            .get_connection_with_timeout(Duration::from_secs(5))
                                            .ok();
                                    }
                                    let Some(conn) = c.as_mut() else { continue };
                                    let sent = Instant::now();
                                    let got: redis::RedisResult<Option<String>> =
                                        redis::cmd("GET").arg(k).query(conn);
                                    match got {
                                        Ok(Some(v)) if v == "before" => {
                                            last_old = Some(sent - frozen_at);
                                            if promoted.lock().unwrap().is_some_and(|at| sent > at) {
                                                stale_after += 1;
                                            }
                                        }
                                        Ok(_) => {}
                                        Err(_) => c = None,
                                    }
                                }
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            (last_old, stale_after)
                        })
                    })
                    .collect();
                cluster.wait_master(replica);
                log("replica promoted: writing to it");
                for k in &watched {
                    let _: () = redis::cmd("SET")
                        .arg(k)
                        .arg("after")
                        .query(&mut cluster.nodes[replica].conn())
                        .unwrap();
                }
                *promoted.lock().unwrap() = Some(Instant::now());
                std::thread::sleep(Duration::from_millis(1500));
                watching.store(false, Ordering::Relaxed);
                for (p, w) in watchers.into_iter().enumerate() {
                    let (last_old, stale_after) = w.join().unwrap();
                    old_after_freeze[p] = old_after_freeze[p].max(last_old);
                    stale_after_promotion[p] += stale_after;
                }
            });
            log("resuming the old master");
            cluster.signal(frozen, "CONT");
            cluster.wait_healthy();
            settle();

            // 4. A master killed (SIGKILL), restarted empty once its replica
            //    took over: it comes back as a replica.
            let masters = cluster.masters();
            let killed = masters[1];
            let replica = cluster.replica_of(killed);
            log("killing a master");
            cluster.nodes[killed].stop();
            cluster.wait_master(replica);
            cluster.nodes[killed].spawn();
            cluster.wait_healthy();
            settle();

            // 5. FLUSHALL on every master, the writers held still.
            log("FLUSHALL");
            {
                let _still = run.writes.write().unwrap();
                let from = run.now();
                for m in cluster.masters() {
                    cluster.nodes[m].cmd(&["FLUSHALL"]);
                }
                let until = run.now();
                for h in &run.histories {
                    let mut h = h.lock().unwrap();
                    for s in h.iter_mut().filter(|s| s.until == OPEN) {
                        s.until = until;
                    }
                    h.push(State {
                        value: None,
                        from,
                        until: OPEN,
                    });
                }
            }
            settle();
            faults.fetch_add(5, Ordering::Relaxed);
        }
        run.stop.store(true, Ordering::Relaxed);
    });
    for t in threads {
        t.join().unwrap();
    }
    let mut report = Report {
        reads: Vec::new(),
        errors: Vec::new(),
        wrong: Vec::new(),
        stale: Vec::new(),
        writes: run.writes_done.load(Ordering::Relaxed),
        lost_writes: run.lost_writes.load(Ordering::Relaxed),
        old_after_freeze,
        stale_after_promotion,
        faults: faults.load(Ordering::Relaxed),
    };
    for p in 0..proxies.len() {
        let reads = run.reads[p].lock().unwrap();
        let mut wrong = Vec::new();
        let mut stale = Vec::new();
        for (k, v, send, recv) in reads.iter() {
            let h = run.histories[*k].lock().unwrap();
            match staleness(&h, v, *send, *recv) {
                Some(0) => {}
                Some(us) => stale.push(us),
                None => wrong.push(format!(
                    "{} read {v:?} at {send}-{recv}; states {:?}",
                    run.names[*k], &*h
                )),
            }
        }
        stale.sort_unstable();
        report.reads.push(reads.len());
        report.errors.push(run.errors[p].load(Ordering::Relaxed));
        report.wrong.push(wrong);
        report.stale.push(stale);
    }
    report
}
