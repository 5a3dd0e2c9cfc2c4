//! The proxy in front of a real Redis Cluster (3 masters, 3 replicas,
//! started by `common::cluster` on free ports). One test at a time: each
//! starts its own cluster, and a busy machine must not cause failovers
//! nobody asked for (`.cargo/config` cannot say it per binary, so the
//! tests share one lock).

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::cluster::Cluster;
use common::{Proxy, wait_for};

/// Held by each test for its whole run.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keys spread over every master: one per master, found by asking.
fn keys_on_each_master(cluster: &Cluster) -> Vec<String> {
    let mut found: Vec<(usize, String)> = Vec::new();
    for i in 0..1000 {
        let key = format!("key:{i}");
        let owner = cluster.master_of(&key);
        if !found.iter().any(|(o, _)| *o == owner) {
            found.push((owner, key));
        }
        if found.len() == 3 {
            break;
        }
    }
    found.into_iter().map(|(_, k)| k).collect()
}

fn resp(proxy: &Proxy) -> redis::Connection {
    let c = redis::Client::open(format!("redis://127.0.0.1:{}/0", proxy.resp)).unwrap();
    c.get_connection_with_timeout(Duration::from_secs(5)).unwrap()
}

/// Reads of keys on every master are served over HTTP and RESP, cached,
/// and a write made directly on the cluster is seen at once: each master's
/// invalidations come on its own tracked connection.
#[test]
fn reads_from_every_master_are_cached_and_kept_coherent() {
    let _one = serial();
    let cluster = Cluster::start();
    // A lease as long as the node timeout (2 s) is refused at start.
    let (code, stderr) = common::run_with(
        &["--redis-cluster", &cluster.seeds(), "--tracking-lease", "2s"],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cluster-node-timeout"), "{stderr}");
    let proxy = Proxy::start_cluster(&cluster.seeds(), &["--cache-ttl", "1h"]);
    let mut direct = cluster.client();
    let mut c = resp(&proxy);
    for key in keys_on_each_master(&cluster) {
        let _: () = redis::cmd("SET").arg(&key).arg("v1").query(&mut direct).unwrap();
        let r = proxy.get(&format!("/get/{key}"));
        assert_eq!(r.json()["value"], "v1", "{key}");
        wait_for("a hit", || {
            (proxy.get(&format!("/get/{key}")).cache() == "HIT").then_some(())
        });
        let got: Option<String> = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
        assert_eq!(got.as_deref(), Some("v1"));
        let _: () = redis::cmd("SET").arg(&key).arg("v2").query(&mut direct).unwrap();
        wait_for("the direct write to be seen", || {
            let r = proxy.get(&format!("/get/{key}"));
            (r.json()["value"] == "v2").then_some(())
        });
        let got: Option<String> = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
        assert_eq!(got.as_deref(), Some("v2"));
    }
    assert_eq!(proxy.get("/get/never-set").status, 404);
    assert!(proxy.metric("redis_proxy_invalidations_total") >= 3.0);
    assert_eq!(proxy.admin_get("/readyz").unwrap().status, 200);
    // The status page's JSON lists each master: up, tracking, its slots,
    // and a lease that holds.
    let status = proxy.admin_get("/status").unwrap().json();
    let redis = &status["redis"];
    assert_eq!(redis["kind"], "cluster", "{redis}");
    let nodes = redis["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{redis}");
    assert!(
        nodes.iter().all(|n| n["up"] == true && n["tracking"] == true),
        "{redis}"
    );
    assert!(
        nodes
            .iter()
            .all(|n| n["lease_left_ms"].as_f64().is_some_and(|ms| ms > 0.0)),
        "{redis}"
    );
    let slots: u64 = nodes.iter().map(|n| n["slots"].as_u64().unwrap()).sum();
    assert_eq!(slots, 16384);
}

/// Forwarded commands reach the master of their slot, multi-key commands
/// are split and put back together, KEYS/DBSIZE/SCAN cover every master,
/// and no MOVED or ASK ever reaches the client.
#[test]
fn forwarded_commands_are_routed_split_and_merged() {
    let _one = serial();
    let cluster = Cluster::start();
    let proxy = Proxy::start_cluster(&cluster.seeds(), &["--allow-writes"]);
    let mut c = resp(&proxy);
    let keys = keys_on_each_master(&cluster);
    for (i, key) in keys.iter().enumerate() {
        let n: i64 = redis::cmd("INCRBY").arg(key).arg(i + 1).query(&mut c).unwrap();
        assert_eq!(n, i as i64 + 1);
    }
    // Split per slot, answered in order.
    let values: Vec<Option<i64>> = redis::cmd("MGET")
        .arg(&keys)
        .arg("missing")
        .query(&mut c)
        .unwrap();
    assert_eq!(values, [Some(1), Some(2), Some(3), None]);
    let _: () = redis::cmd("MSET")
        .arg("{a}x")
        .arg(1)
        .arg("{b}y")
        .arg(2)
        .arg("{c}z")
        .arg(3)
        .query(&mut c)
        .unwrap();
    let n: i64 = redis::cmd("EXISTS")
        .arg("{a}x")
        .arg("{b}y")
        .arg("{c}z")
        .arg("nope")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 3);
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 6);
    let mut all: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    all.sort();
    let mut want: Vec<String> = keys.clone();
    want.extend(["{a}x", "{b}y", "{c}z"].map(String::from));
    want.sort();
    assert_eq!(all, want);
    // SCAN visits every master in turn, with cursors the client just echoes.
    let mut cursor = 0u64;
    let mut scanned = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(2)
            .query(&mut c)
            .unwrap();
        scanned.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    scanned.sort();
    scanned.dedup();
    assert_eq!(scanned, want);
    // Keys of different slots in one command: Redis's own error.
    let e = redis::cmd("RENAME")
        .arg("{a}x")
        .arg("{b}x")
        .query::<()>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("CROSSSLOT"), "{e}");
    let n: i64 = redis::cmd("DEL")
        .arg("{a}x")
        .arg("{b}y")
        .arg("{c}z")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 3);
    // A script on its key's master.
    let v: i64 = redis::cmd("EVAL")
        .arg("return redis.call('INCR', KEYS[1])")
        .arg(1)
        .arg(&keys[2])
        .query(&mut c)
        .unwrap();
    assert_eq!(v, 4);
    // Written through the proxy, read through its cache: the new value.
    let v: i64 = redis::cmd("GET").arg(&keys[2]).query(&mut c).unwrap();
    assert_eq!(v, 4);
}

/// Transactions, WATCH and blocking commands run on the master of their
/// keys; INFO is a standalone Redis's, with the masters' keyspace summed.
#[test]
fn pinned_states_follow_their_keys_master() {
    let _one = serial();
    let cluster = Cluster::start();
    let proxy = Proxy::start_cluster(&cluster.seeds(), &["--allow-writes"]);
    let keys = keys_on_each_master(&cluster);
    let mut c = resp(&proxy);
    for key in &keys {
        // MULTI alone first (as redis-cli sends it), then keyed commands.
        let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
        let q: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(q, "QUEUED");
        let q: String = redis::cmd("INCR").arg(key).query(&mut c).unwrap();
        assert_eq!(q, "QUEUED");
        let q: String = redis::cmd("INCR")
            .arg(format!("{{{key}}}:other"))
            .query(&mut c)
            .unwrap();
        assert_eq!(q, "QUEUED");
        let (pong, a, b): (String, i64, i64) = redis::cmd("EXEC").query(&mut c).unwrap();
        assert_eq!((pong.as_str(), a, b), ("PONG", 1, 1));
    }
    // A key of another master inside a transaction: CROSSSLOT, and EXEC
    // aborts with nothing applied.
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: String = redis::cmd("SET").arg(&keys[0]).arg("x").query(&mut c).unwrap();
    let e = redis::cmd("SET")
        .arg(&keys[1])
        .arg("x")
        .query::<()>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("CROSSSLOT"), "{e}");
    let e = redis::cmd("EXEC").query::<()>(&mut c).unwrap_err();
    assert_eq!(e.code(), Some("EXECABORT"), "{e}");
    let v: i64 = redis::cmd("GET")
        .arg(&keys[0])
        .query(&mut cluster.client())
        .unwrap();
    assert_eq!(v, 1, "nothing applied");

    // WATCH on the key's master: a change by another client aborts EXEC.
    let _: () = redis::cmd("WATCH").arg(&keys[2]).query(&mut c).unwrap();
    let _: () = redis::cmd("SET")
        .arg(&keys[2])
        .arg(100)
        .query(&mut cluster.client())
        .unwrap();
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: String = redis::cmd("INCR").arg(&keys[2]).query(&mut c).unwrap();
    let aborted: Option<Vec<i64>> = redis::cmd("EXEC").query(&mut c).unwrap();
    assert_eq!(aborted, None);

    // BLPOP on a list of a master other than the first.
    let list = keys[1].clone() + ":list";
    let port = proxy.resp;
    let waiter = std::thread::spawn(move || {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
            .unwrap()
            .get_connection()
            .unwrap();
        let got: Option<(String, String)> = redis::cmd("BLPOP").arg(&list).arg(10).query(&mut c).unwrap();
        got
    });
    wait_for("the BLPOP to block", || {
        (proxy.metric("redis_proxy_pinned_connections") >= 1.0).then_some(())
    });
    let _: () = redis::cmd("RPUSH")
        .arg(keys[1].clone() + ":list")
        .arg("item")
        .query(&mut c)
        .unwrap();
    assert_eq!(waiter.join().unwrap().map(|(_, v)| v).as_deref(), Some("item"));

    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    assert!(info.contains("cluster_enabled:0"), "{info}");
    let keys_line = info.lines().find(|l| l.starts_with("db0:")).unwrap();
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert!(
        keys_line.starts_with(&format!("db0:keys={dbsize},")),
        "{keys_line} vs DBSIZE {dbsize}"
    );
}

#[path = "cluster/faults.rs"]
mod faults;

/// The coherence run with two proxies through a reshard of 1,000 slots, a
/// manual failover, a master frozen until its replica took over, a master
/// killed, and FLUSHALL: no value a key never held, no false nil, and no
/// read staler than the lease.
#[test]
fn two_proxies_stay_coherent_through_resharding_and_failovers() {
    let _one = serial();
    let mut cluster = Cluster::start();
    let args = ["--cache-ttl", "1h", "--tracking-lease", "1s"];
    let first = Proxy::start_cluster(&cluster.seeds(), &args);
    let second = Proxy::start_cluster(&cluster.seeds(), &args);
    let started = std::time::Instant::now();
    let mut log = |what: &str| eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
    // `bench/cluster_coherence.sh` runs more rounds of the faults.
    let rounds = std::env::var("CLUSTER_FAULT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let report = faults::run(&mut cluster, &[&first, &second], 120, rounds, &mut log);
    eprintln!(
        "{} faults in {:.0} s",
        report.faults,
        started.elapsed().as_secs_f64()
    );
    for p in 0..2 {
        let stale = &report.stale[p];
        let pct = |q: f64| {
            stale
                .get(((stale.len() as f64 * q) as usize).min(stale.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        eprintln!(
            "proxy {p}: {} reads, {} errors, {} wrong, {} stale (p50 {} µs, p99 {} µs, max {} µs); {} writes, {} lost by failovers",
            report.reads[p],
            report.errors[p],
            report.wrong[p].len(),
            stale.len(),
            pct(0.5),
            pct(0.99),
            stale.last().copied().unwrap_or(0),
            report.writes,
            report.lost_writes,
        );
        assert!(
            report.wrong[p].is_empty(),
            "proxy {p}: {:#?}",
            &report.wrong[p][..report.wrong[p].len().min(5)]
        );
        assert!(report.reads[p] > 1000, "proxy {p} read too little");
        // Bounded staleness (generously: the lease), through every fault.
        let max = stale.last().copied().unwrap_or(0);
        assert!(max < 1_000_000, "proxy {p}: a read {max} µs stale");
        // The frozen master's cached keys: served no longer than the lease
        // after the freeze, and never once its replica took a write.
        eprintln!(
            "proxy {p}: the frozen master's cached value was last served to a read sent {:?} after the freeze (lease 1s); {} reads after the promoted replica's write got it",
            report.old_after_freeze[p], report.stale_after_promotion[p]
        );
        assert!(
            // The lease (1 s), and a probe's interval of slack for when the
            // stop took effect.
            report.old_after_freeze[p].is_none_or(|d| d < Duration::from_millis(1250)),
            "proxy {p}: served {:?} after the freeze",
            report.old_after_freeze[p]
        );
        assert_eq!(report.stale_after_promotion[p], 0, "proxy {p}");
    }
}

#[path = "differential/generated.rs"]
mod generated;

/// The drop-in issue's differential test against the cluster: the same
/// generated commands to one Redis directly and, through the proxy, to the
/// cluster (keys tagged by kind, so kinds spread over the masters and
/// MGET/DEL/EXISTS split across them; pipelines, no transactions, which
/// would cross slots); every reply and the final data equal.
#[test]
fn replies_and_data_through_the_proxy_equal_redis_direct_on_a_cluster() {
    use generated::{Rng, command, contents, normal, pipeline, query, shown};
    let _one = serial();
    let cluster = Cluster::start();
    let proxy = Proxy::start_cluster(&cluster.seeds(), &["--allow-writes"]);
    let direct = common::RedisServer::start();
    for (protocol, seed) in [("resp2", 0x9E37_79B9_7F4A_7C15u64), ("resp3", 43)] {
        let connect = |port: u16| {
            let url = format!("redis://127.0.0.1:{port}/0?protocol={protocol}");
            let c = redis::Client::open(url).unwrap().get_connection().unwrap();
            c.set_read_timeout(Some(common::DEADLINE)).unwrap();
            c
        };
        let (mut a, mut b) = (connect(direct.port), connect(proxy.resp));
        let mut rng = Rng(seed);
        let mut step = 0;
        while step < 600 {
            if rng.below(10) < 2 {
                let commands: Vec<Vec<String>> = (0..2 + rng.below(4))
                    .map(|_| {
                        step += 1;
                        command(&mut rng, step, true)
                    })
                    .collect();
                let pipe = pipeline(&commands, false);
                let (ra, rb) = (
                    shown(pipe.query(&mut a), &commands),
                    shown(pipe.query(&mut b), &commands),
                );
                assert_eq!(
                    rb, ra,
                    "{protocol} seed {seed} step {step}: pipeline {commands:?}"
                );
            } else {
                step += 1;
                let args = command(&mut rng, step, true);
                let (ra, rb) = (
                    normal(&args, query(&mut a, &args)),
                    normal(&args, query(&mut b, &args)),
                );
                assert_eq!(rb, ra, "{protocol} seed {seed} step {step}: {args:?}");
            }
        }
        assert_eq!(contents(&mut b), contents(&mut a), "final data, seed {seed}");
        let _: () = redis::cmd("FLUSHALL").query(&mut a).unwrap();
        let _: () = redis::cmd("FLUSHALL").query(&mut b).unwrap();
    }
}

/// A master cut off from the rest of the cluster, but not from the proxy,
/// still answers PING, and for a while still says it is master of an ok
/// cluster, while its replica is promoted and takes writes. The proxy
/// stops trusting it when the other masters report the failover's later
/// epoch (they voted), and reads the map from the node with the latest
/// epoch, not from the cut-off one: a read sent after the promoted replica
/// acknowledged a write gets the old value for at most a moment.
#[test]
fn a_master_cut_off_from_the_cluster_but_not_from_the_proxy_stops_being_trusted() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;
    let _one = serial();
    let cluster = Cluster::start_relayed();
    let proxy = Proxy::start_cluster(&cluster.seeds(), &["--cache-ttl", "1h", "--tracking-lease", "1s"]);
    let cut = cluster.masters()[0];
    let replica = cluster.replica_of(cut);
    let keys: Vec<String> = (0..)
        .map(|i| format!("p:{i}"))
        .filter(|k| cluster.master_of(k) == cut)
        .take(8)
        .collect();
    let mut c = resp(&proxy);
    for k in &keys {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg("before")
            .query(&mut cluster.nodes[cut].conn())
            .unwrap();
        wait_for("the key to be cached", || {
            let _: Option<String> = redis::cmd("GET").arg(k).query(&mut c).ok()?;
            (proxy.get(&format!("/get/{k}")).cache() == "HIT").then_some(())
        });
    }
    let reads = std::sync::Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let cut_at = Instant::now();
    cluster.cut_off(Some(cut));
    let written = std::thread::scope(|s| {
        s.spawn(|| {
            let mut c = None;
            while !stop.load(Ordering::Relaxed) {
                for k in &keys {
                    if c.is_none() {
                        c = redis::Client::open(format!("redis://127.0.0.1:{}/0", proxy.resp))
                            .unwrap()
                            .get_connection_with_timeout(Duration::from_secs(5))
                            .ok();
                    }
                    let Some(conn) = c.as_mut() else { continue };
                    let sent = Instant::now();
                    match redis::cmd("GET").arg(k).query::<Option<String>>(conn) {
                        Ok(v) => reads.lock().unwrap().push((sent, v)),
                        Err(_) => c = None,
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        cluster.wait_master(replica);
        for k in &keys {
            let _: () = redis::cmd("SET")
                .arg(k)
                .arg("after")
                .query(&mut cluster.nodes[replica].conn())
                .unwrap();
        }
        let written = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        written
    });
    cluster.cut_off(None);
    let reads = reads.into_inner().unwrap();
    let stale = reads
        .iter()
        .filter(|(sent, v)| *sent > written && v.as_deref() == Some("before"))
        .map(|(sent, _)| *sent - written)
        .max();
    let last_before = reads
        .iter()
        .filter(|(_, v)| v.as_deref() == Some("before"))
        .map(|(sent, _)| *sent - cut_at)
        .max();
    eprintln!(
        "cut off; replica promoted and written {:?} after; the old value last served to a read sent {last_before:?} after the cut, {stale:?} after the write",
        written - cut_at
    );
    assert!(
        stale.is_none_or(|d| d < Duration::from_millis(500)),
        "the cut-off master's value served {stale:?} after its replica took a write"
    );
    let late = reads
        .iter()
        .filter(|(sent, _)| *sent > written + Duration::from_secs(1))
        .collect::<Vec<_>>();
    assert!(
        !late.is_empty() && late.iter().all(|(_, v)| v.as_deref() == Some("after")),
        "{late:?}"
    );
}
