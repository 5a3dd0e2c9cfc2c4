//! --max-clients, the admin port's own limit, the open-file limit, and
//! --max-parallel.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{HttpConn, Proxy, RedisServer, wait_for};

#[test]
fn connection_over_max_clients_gets_503_and_is_closed() {
    let redis = RedisServer::start();
    redis.set("k", "v");
    let proxy = Proxy::start_ready(&redis, &["--max-clients", "2"]);
    let mut first = HttpConn::connect(proxy.http).unwrap();
    let mut second = HttpConn::connect(proxy.http).unwrap();
    assert_eq!(first.request("GET", b"/get/k", &[]).unwrap().status, 200);
    assert_eq!(second.request("GET", b"/get/k", &[]).unwrap().status, 200);

    let mut third = HttpConn::connect(proxy.http).unwrap();
    let r = third.request("GET", b"/get/k", &[]).unwrap();
    assert_eq!(r.status, 503);
    assert!(r.text().contains("max number of clients"));
    assert!(third.is_closed());

    // The first two keep working.
    assert_eq!(first.request("GET", b"/get/k", &[]).unwrap().status, 200);
    assert_eq!(second.request("GET", b"/get/k", &[]).unwrap().status, 200);
    assert!(proxy.metric("redis_proxy_connections_rejected_total") >= 1.0);

    // A slot frees when one leaves.
    drop(first);
    wait_for("a freed slot", || {
        let r = HttpConn::connect(proxy.http)
            .ok()?
            .request("GET", b"/get/k", &[])
            .ok()?;
        (r.status == 200).then_some(())
    });
}

/// Sends a GET and returns the connection, to read the answer later.
fn send(port: u16, target: &str) -> HttpConn {
    let mut c = HttpConn::connect(port).unwrap();
    c.send("GET", target.as_bytes(), &[]).unwrap();
    c
}

/// True if the connection has bytes to read within `wait`.
fn answered_within(c: &mut HttpConn, wait: Duration) -> bool {
    c.stream.set_nonblocking(false).unwrap();
    c.stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    let answered = matches!(c.stream.peek(&mut byte), Ok(n) if n > 0);
    c.stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
    answered
}

#[test]
fn max_parallel_1_works_on_one_request_at_a_time_in_arrival_order() {
    let redis = RedisServer::start();
    redis.set("cached", "hit");
    let proxy = Proxy::start_ready(
        &redis,
        &[
            "--max-parallel",
            "1",
            "--allow-writes",
            "--backend-timeout",
            "20s",
            // The pause below holds the lease's probes too: a lease shorter
            // than it would turn the queued hit into a miss.
            "--tracking-lease",
            "30s",
        ],
    );
    assert_eq!(proxy.get("/get/cached").status, 200);

    // A miss that waits on a paused Redis holds the one slot. (The pause
    // runs out by itself: CLIENT UNPAUSE does not wake a postponed command
    // on the redis-server 7.0 this was written against.)
    redis.cmd(&["CLIENT", "PAUSE", "5000", "ALL"]);
    let mut slow = send(proxy.http, "/get/slow");
    proxy.wait_backend_requests(2, "the miss to reach Redis");

    // A hit arriving after it waits its turn instead of being answered.
    let mut hit = send(proxy.http, "/get/cached");
    wait_for("the hit to queue", || {
        (proxy.metric("redis_proxy_requests_queued") == 1.0).then_some(())
    });
    // Writes arriving in order 1, 2, 3 must be applied in that order.
    let mut writes = Vec::new();
    for (i, v) in ["1", "2", "3"].iter().enumerate() {
        writes.push(send(proxy.http, &format!("/set/order/{v}")));
        wait_for("the write to queue", || {
            (proxy.metric("redis_proxy_requests_queued") == (i + 2) as f64).then_some(())
        });
    }
    assert!(
        !answered_within(&mut hit, Duration::from_millis(300)),
        "hit answered out of turn"
    );

    assert_eq!(slow.read_response(false).unwrap().status, 404);
    assert_eq!(hit.read_response(false).unwrap().cache(), "HIT");
    for mut w in writes {
        assert_eq!(w.read_response(false).unwrap().status, 200);
    }
    let value: String = redis::cmd("GET").arg("order").query(&mut redis.conn()).unwrap();
    assert_eq!(value, "3");
}

#[test]
fn with_more_slots_a_hit_does_not_wait_for_a_slow_miss() {
    let redis = RedisServer::start();
    redis.set("cached", "hit");
    let proxy = Proxy::start_ready(&redis, &["--max-parallel", "4", "--backend-timeout", "20s"]);
    assert_eq!(proxy.get("/get/cached").status, 200);
    redis.cmd(&["CLIENT", "PAUSE", "5000", "ALL"]);
    let mut slow = send(proxy.http, "/get/slow");
    proxy.wait_backend_requests(2, "the miss to reach Redis");
    let r = proxy.get("/get/cached");
    assert_eq!(r.cache(), "HIT");
    assert!(
        common::still_waiting(&slow.stream),
        "the miss is still waiting on Redis"
    );
    assert_eq!(slow.read_response(false).unwrap().status, 404);
}

/// The soft "Max open files" of a running process.
fn open_files(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn the_open_file_limit_is_raised_to_fit_max_clients() {
    let redis = RedisServer::start();
    let proxy = Proxy::start_with_open_files(
        &redis,
        300,
        &["--max-clients", "600", "--max-pinned-connections", "100"],
    );
    // 600 clients, 100 pinned connections, and the headroom (256).
    assert_eq!(open_files(proxy.pid()), 956);
    // 500 clients at once: more than the 300 it was started with.
    let mut clients: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(("127.0.0.1", proxy.resp)).unwrap())
        .collect();
    for c in &mut clients {
        c.set_read_timeout(Some(common::DEADLINE)).unwrap();
        c.write_all(b"PING\r\n").unwrap();
    }
    for c in &mut clients {
        let mut pong = [0u8; 7];
        c.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"+PONG\r\n");
    }
}

#[test]
fn a_hard_open_file_limit_below_max_clients_exits_2_with_one_line() {
    let mut out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 300 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_redis-proxy"))
        .args(["--max-clients", "1000", "--redis-url", "redis://127.0.0.1:1"])
        .args([
            "--http-listen",
            "off",
            "--resp-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
        ])
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a proxy that does not check the limit would run for ever.
    let start = std::time::Instant::now();
    let exited = loop {
        if let Some(status) = out.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > common::DEADLINE {
            out.kill().unwrap();
            out.wait().unwrap();
            panic!("the proxy did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    out.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(exited.code(), Some(2));
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(
            "--max-clients 1000 with --max-pinned-connections 1000 needs 2256 open files but the \
             limit is 300"
        ) && stderr.contains("ulimit -n 2256"),
        "{stderr}"
    );
}

/// The default --max-clients (10,000) needs 11,256 open files. Where the
/// hard limit is lower and the figure was not asked for, it is lowered to
/// fit, as Redis does, with one warning naming the new figure.
#[test]
fn a_default_max_clients_is_lowered_to_fit_the_open_file_limit() {
    let redis = RedisServer::start();
    let admin = common::free_port();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 2000 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_redis-proxy"))
        .args([
            "--redis-url",
            &redis.url(),
            "--http-listen",
            "off",
            "--resp-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .env_remove("MAX_CLIENTS")
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for("the proxy to be ready", || {
        common::try_request(admin, "GET", b"/readyz", &[])
            .ok()
            .filter(|r| r.status == 200)
    });
    // 2,000 files: 1,000 pinned connections, 256 of headroom, 744 clients.
    assert_eq!(open_files(child.id()), 2000);
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a log that is not a terminal: {stderr:?}"
    );
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("fits --max-clients 744, not the default 10000")
            && warnings[0].contains("ulimit -n 11256"),
        "{stderr}"
    );
}

#[test]
fn the_admin_port_has_its_own_limit_of_16_connections() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, &[]);
    // 16 held and answered (one refused while the proxy has yet to see the
    // start-up health check's connection close is tried again).
    let mut held: Vec<HttpConn> = (0..16)
        .map(|_| {
            wait_for("an admin slot", || {
                let mut c = HttpConn::connect(proxy.admin).unwrap();
                (c.request("GET", b"/healthz", &[]).unwrap().status == 200).then_some(c)
            })
        })
        .collect();
    let mut over = HttpConn::connect(proxy.admin).unwrap();
    let r = over.request("GET", b"/healthz", &[]).unwrap();
    assert_eq!(r.status, 503);
    assert!(over.is_closed());
    // Client ports are not affected.
    assert_eq!(
        HttpConn::connect(proxy.http)
            .unwrap()
            .request("GET", b"/get/k", &[])
            .unwrap()
            .status,
        404
    );
    held.pop();
    // A freed slot serves again. Scrapes sent before the proxy saw the
    // close are refused too, and counted: hence at least one.
    let metrics = wait_for("a freed admin slot", || {
        proxy.admin_get("/metrics").filter(|r| r.status == 200)
    });
    let rejected = metrics
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("redis_proxy_connections_rejected_total{frontend=\"admin\"} "))
        .map(|n| n.parse::<f64>().unwrap());
    assert!(rejected >= Some(1.0), "{rejected:?}");
}
