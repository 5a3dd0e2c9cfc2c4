//! Many proxies in front of one Redis, behind a real load balancer:
//! haproxy (Debian's package; `make test` installs it) in TCP mode, with
//! `/readyz` as its health check, as `deploy/haproxy/haproxy.cfg` has it.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Proxy, RedisServer, free_port, wait_for};

/// haproxy in the foreground, on a free port, in front of `proxies`.
struct Haproxy {
    port: u16,
    stats: u16,
    child: Child,
    _dir: PathBuf,
}

impl Haproxy {
    /// `balance first`: every connection goes to the first proxy that is
    /// up, so the test knows where clients are before and after one leaves.
    fn start(proxies: &[&Proxy]) -> Haproxy {
        let (port, stats) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("redis-proxy-haproxy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let servers: String = proxies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "    server proxy{i} 127.0.0.1:{} check port {} inter 100ms fall 1 rise 2\n",
                    p.resp, p.admin
                )
            })
            .collect();
        let config = format!(
            "global\n    maxconn 1000\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n\
             frontend redis\n    bind 127.0.0.1:{port}\n    default_backend proxies\n\
             backend proxies\n    balance first\n    option httpchk GET /readyz\n    http-check expect status 200\n{servers}\
             frontend stats\n    mode http\n    bind 127.0.0.1:{stats}\n    http-request return status 200 content-type text/plain lf-string \"%[nbsrv(proxies)]\"\n"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(config.as_bytes())
            .unwrap();
        let bin = if std::path::Path::new("/usr/sbin/haproxy").exists() {
            "/usr/sbin/haproxy"
        } else {
            "haproxy"
        };
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (make test installs it)");
        let h = Haproxy {
            port,
            stats,
            child,
            _dir: dir,
        };
        wait_for("haproxy to see every proxy up", || {
            (h.servers_up() == Some(proxies.len())).then_some(())
        });
        h
    }

    /// How many proxies haproxy considers up.
    fn servers_up(&self) -> Option<usize> {
        let r = common::try_request(self.stats, "GET", b"/", &[]).ok()?;
        r.text().trim().parse().ok()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn connect(port: u16) -> redis::Connection {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let conn = c.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    conn
}

/// Which proxy a connection reached: its `proxy_run_id`.
fn served_by(c: &mut redis::Connection) -> String {
    let info: String = redis::cmd("INFO").arg("proxy").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("proxy_run_id:"))
        .unwrap_or("?")
        .trim()
        .to_string()
}

/// Per key, each version written and when its SET was acknowledged.
type Written = HashMap<u64, Vec<(u64, Option<Instant>)>>;

/// Two proxies behind haproxy, readers on both front ends' worth of
/// connections, a writer straight to Redis. The first proxy gets SIGTERM
/// while a request it received waits on a paused Redis: that request is
/// answered, `/readyz` takes the proxy out of haproxy, its clients move to
/// the other proxy when it closes their connections, and no reader ever
/// gets a value Redis did not hold, an error, or a nil.
#[test]
fn two_proxies_behind_haproxy_one_stopped_with_sigterm() {
    let redis = RedisServer::start();
    let args = [
        "--cache-ttl",
        "1h",
        "--backend-timeout",
        "10s",
        "--shutdown-delay",
        "1s",
    ];
    let mut first = Proxy::start_ready(&redis, &args);
    let second = Proxy::start_ready(&redis, &args);
    let lb = Haproxy::start(&[&first, &second]);

    const KEYS: u64 = 20;
    for k in 0..KEYS {
        redis.set(format!("k{k}"), 0);
    }
    // The writer: versions only grow; what each key held is kept with when
    // the write was acknowledged, to check every read against.
    // (version, when its SET was acknowledged), pushed before the SET is
    // sent with no time, then given its time: a reader may see a value
    // before the writer has its reply.
    let acked: Arc<Mutex<Written>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, mut c) = (acked.clone(), stop.clone(), redis.conn());
        std::thread::spawn(move || {
            let mut version = 0;
            while !stop.load(Ordering::Relaxed) && version < 200_000 {
                version += 1;
                let k = version % KEYS;
                acked.lock().unwrap().entry(k).or_default().push((version, None));
                let _: () = redis::cmd("SET")
                    .arg(format!("k{k}"))
                    .arg(version)
                    .query(&mut c)
                    .unwrap();
                let now = Instant::now();
                acked.lock().unwrap().get_mut(&k).unwrap().last_mut().unwrap().1 = Some(now);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let reads = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (acked, stop, reads, reconnects) =
                (acked.clone(), stop.clone(), reads.clone(), reconnects.clone());
            let port = lb.port;
            std::thread::spawn(move || {
                let mut c = connect(port);
                let mut seen_by = vec![served_by(&mut c)];
                let mut worst = Duration::ZERO;
                let mut i = r;
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    i += 1;
                    let k = i % KEYS;
                    let sent = Instant::now();
                    let got: redis::RedisResult<Option<u64>> =
                        redis::cmd("GET").arg(format!("k{k}")).query(&mut c);
                    let value = match got {
                        Ok(Some(v)) => v,
                        Ok(None) => panic!("nil for k{k}, which always exists"),
                        // The proxy closed the connection while draining:
                        // the GET did not reach it; ask again, anew.
                        Err(e)
                            if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() =>
                        {
                            reconnects.fetch_add(1, Ordering::Relaxed);
                            c = wait_for("a connection through haproxy", || {
                                redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
                                    .unwrap()
                                    .get_connection_with_timeout(Duration::from_secs(5))
                                    .ok()
                            });
                            seen_by.push(served_by(&mut c));
                            continue;
                        }
                        Err(e) => panic!("GET k{k}: {e}"),
                    };
                    reads.fetch_add(1, Ordering::Relaxed);
                    // The value is one Redis held; if a newer one was
                    // acknowledged before the GET was sent, this read is
                    // stale by the time since then.
                    let acked = acked.lock().unwrap();
                    let history = acked.get(&k).map(Vec::as_slice).unwrap_or(&[]);
                    assert!(
                        value == 0 || history.iter().any(|&(v, _)| v == value),
                        "k{k} read {value}, which was never written"
                    );
                    let newer =
                        |&&(v, at): &&(u64, Option<Instant>)| v > value && at.is_some_and(|at| at < sent);
                    if let Some(&(_, Some(at))) = history.iter().find(newer) {
                        worst = worst.max(sent - at);
                    }
                }
                (seen_by, worst)
            })
        })
        .collect();

    // Everyone starts on the first proxy (`balance first`).
    wait_for("reads through the first proxy", || {
        (reads.load(Ordering::Relaxed) > 500).then_some(())
    });
    let first_id = served_by(&mut connect(first.resp));
    let second_id = served_by(&mut connect(second.resp));
    assert_ne!(first_id, second_id);
    // A request the first proxy received and is waiting on Redis for.
    let mut in_flight = connect(lb.port);
    assert_eq!(served_by(&mut in_flight), first_id);
    redis.set("slow", "answered");
    // Everything waits meanwhile (the readers too: the lease lapses, and
    // their hits become misses); --backend-timeout is longer.
    redis.cmd(&["CLIENT", "PAUSE", "1500", "ALL"]);
    let backend_requests = first.metric("redis_proxy_backend_requests_total");
    let asked = std::thread::spawn(move || {
        let v: Option<String> = redis::cmd("GET").arg("slow").query(&mut in_flight).unwrap();
        v
    });
    wait_for("the miss to reach Redis", || {
        (first.metric("redis_proxy_backend_requests_total") > backend_requests).then_some(())
    });
    // Clients that connect while the first proxy leaves: haproxy must never
    // send one to a closed listener (it has seen /readyz say 503 first).
    let leaving = Arc::new(AtomicBool::new(true));
    let newcomers = {
        let (leaving, port) = (leaving.clone(), lb.port);
        std::thread::spawn(move || {
            let (mut served, mut refused) = (0, Vec::new());
            while leaving.load(Ordering::Relaxed) && served < 10_000 {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
                let pong = client
                    .get_connection_with_timeout(Duration::from_secs(5))
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
                match pong {
                    Ok(_) => served += 1,
                    Err(e) => refused.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (served, refused)
        })
    };
    first.signal("TERM");
    wait_for("haproxy to take the first proxy out", || {
        (lb.servers_up() == Some(1)).then_some(())
    });
    assert_eq!(asked.join().unwrap().as_deref(), Some("answered"));
    assert_eq!(first.wait_exit().code(), Some(0));
    leaving.store(false, Ordering::Relaxed);
    let (served, refused) = newcomers.join().unwrap();
    assert!(served > 0);
    assert!(refused.is_empty(), "new clients turned away: {refused:?}");
    let after_exit = reads.load(Ordering::Relaxed);
    wait_for("reads through the second proxy", || {
        (reads.load(Ordering::Relaxed) > after_exit + 500).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    for reader in readers {
        let (seen_by, worst) = reader.join().unwrap();
        assert_eq!(seen_by.first(), Some(&first_id), "{seen_by:?}");
        assert_eq!(seen_by.last(), Some(&second_id), "moved over: {seen_by:?}");
        // Bounded staleness across the move (generously: the lease).
        assert!(worst < Duration::from_secs(1), "a read stale by {worst:?}");
    }
    assert!(reconnects.load(Ordering::Relaxed) >= 4);
}
