//! Redis going away and coming back, slow Redis, shutdown, bad configuration.
//! A Redis failure is a 503/504, never a 404.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{HttpConn, Proxy, RedisServer, free_port, run_with, wait_for};

#[test]
fn redis_stopped_in_ttl_mode_is_503_hits_still_served_and_restart_recovers() {
    let mut redis = RedisServer::start();
    redis.set("cached", "v");
    let args = ["--backend-timeout", "5s", "--invalidation", "ttl"];
    let proxy = Proxy::start_ready(&redis, &args);
    assert_eq!(proxy.get("/get/cached").status, 200);

    redis.stop();
    // A 503, not a 504: a Redis that is down fails at once instead of
    // waiting out the 5s backend timeout. And never a 404.
    let r = proxy.get("/get/uncached");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("backend unavailable")
    );
    let r = proxy.get("/get/cached");
    assert_eq!((r.status, r.cache()), (200, "HIT"));
    wait_for("/readyz to say 503", || {
        proxy.admin_get("/readyz").filter(|r| r.status == 503)
    });
    assert_eq!(proxy.admin_get("/healthz").unwrap().status, 200);
    assert!(proxy.metric("redis_proxy_backend_errors_total") >= 1.0);

    redis.restart();
    redis.set("uncached", "back");
    wait_for("misses to succeed after Redis restarts", || {
        (proxy.get("/get/uncached").status == 200).then_some(())
    });
    proxy.wait_ready();
}

#[test]
fn redis_down_at_start_is_not_fatal() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let proxy = Proxy::start_url(&url, &[]);
    assert_eq!(proxy.admin_get("/readyz").unwrap().status, 503);
    assert_eq!(proxy.get("/get/k").status, 503);

    let redis = RedisServer::start_on(port);
    redis.set("k", "v");
    proxy.wait_ready();
    wait_for("the first miss after Redis came up", || {
        (proxy.get("/get/k").status == 200).then_some(())
    });
}

#[test]
fn slow_redis_is_504() {
    let redis = RedisServer::start();
    let proxy = Proxy::start_ready(&redis, &["--backend-timeout", "200ms"]);
    redis.cmd(&["CLIENT", "PAUSE", "1500", "ALL"]);
    let r = proxy.get("/get/k");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("timed out"));
    // Once Redis answers again, so does the proxy.
    redis.set("k", "v");
    wait_for("the proxy to answer after the pause", || {
        (proxy.get("/get/k").status == 200).then_some(())
    });
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    let redis = RedisServer::start();
    redis.set("slow", "done");
    let mut proxy = Proxy::start_ready(&redis, &["--backend-timeout", "10s"]);
    redis.cmd(&["CLIENT", "PAUSE", "3000", "ALL"]);
    let mut in_flight = HttpConn::connect(proxy.http).unwrap();
    in_flight.send("GET", b"/get/slow", &[]).unwrap();
    proxy.wait_backend_requests(1, "the request to reach Redis");
    assert!(
        common::still_waiting(&in_flight.stream),
        "the pause ran out before SIGTERM"
    );
    proxy.signal("TERM");
    // It stops accepting...
    wait_for("the listener to close", || {
        HttpConn::connect(proxy.http).is_err().then_some(())
    });
    // ...but the request in flight completes.
    let r = in_flight.read_response(false).unwrap();
    assert_eq!((r.status, r.json()["value"].as_str()), (200, Some("done")));
    let status = proxy.wait_exit();
    assert_eq!(status.code(), Some(0));
}

/// SIGTERM first takes the proxy out of a load balancer (`/readyz` 503)
/// while it goes on serving, new connections included, for
/// `--shutdown-delay`; only then do the listeners close.
#[test]
fn sigterm_turns_readyz_503_and_serves_until_the_delay_is_over() {
    let redis = RedisServer::start();
    redis.set("k", "v");
    let mut proxy = Proxy::start_ready(&redis, &["--shutdown-delay", "3s"]);
    assert_eq!(proxy.admin_get("/readyz").unwrap().status, 200);
    let signalled = std::time::Instant::now();
    proxy.signal("TERM");
    let r = wait_for("/readyz to say 503", || {
        proxy.admin_get("/readyz").filter(|r| r.status == 503)
    });
    assert!(r.text().contains("shutting down"), "{}", r.text());
    // Still serving, on a connection opened after the signal.
    let r = proxy.get("/get/k");
    assert_eq!((r.status, r.json()["value"].as_str()), (200, Some("v")));
    wait_for("the listener to close", || {
        HttpConn::connect(proxy.http).is_err().then_some(())
    });
    assert!(
        signalled.elapsed() >= Duration::from_secs(3),
        "closed before the delay"
    );
    assert_eq!(proxy.wait_exit().code(), Some(0));
}

/// Once ready, one block says where each front end listens with a command
/// to try, where Redis is, whether writes are allowed, and what the cache
/// holds; without colour codes when the log is not a terminal.
#[test]
fn once_ready_the_log_says_how_to_connect() {
    let redis = RedisServer::start();
    let (http, resp, admin) = (free_port(), free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-proxy"))
        .args([
            "--redis-url",
            &redis.url(),
            "--cache-capacity",
            "500",
            "--cache-max-bytes",
            "64MiB",
        ])
        .args([
            "--http-listen",
            &format!("127.0.0.1:{http}"),
            "--resp-listen",
            &format!("127.0.0.1:{resp}"),
        ])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let deadline = std::time::Instant::now() + common::DEADLINE;
    while !log.contains("coherence") && std::time::Instant::now() < deadline {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stderr, &mut line).unwrap_or(0) == 0 {
            break;
        }
        log.push_str(&line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for want in [
        format!("curl -i http://127.0.0.1:{http}/get/foo"),
        format!("redis-cli -h 127.0.0.1 -p {resp} GET foo"),
        format!("status http://127.0.0.1:{admin}/ "),
        redis.url().trim_end_matches("/0").to_string(),
        "writes refused (start with --allow-writes".into(),
        "500 keys, 64 MiB at most, each for 1m".into(),
        "tracking".into(),
    ] {
        assert!(log.contains(&want), "no {want:?} in {log}");
    }
    assert!(!log.contains('\u{1b}'), "colour codes in a piped log: {log:?}");
}

#[test]
fn sigint_with_idle_keepalive_connections_exits_0() {
    let redis = RedisServer::start();
    let mut proxy = Proxy::start_ready(&redis, &[]);
    let mut idle = HttpConn::connect(proxy.http).unwrap();
    assert_eq!(idle.request("GET", b"/get/x", &[]).unwrap().status, 404);
    proxy.signal("INT");
    assert_eq!(proxy.wait_exit().code(), Some(0));
    assert!(idle.is_closed());
}

#[test]
fn bad_values_exit_2_with_one_line_naming_the_flag() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--cache-ttl", "soon"], &[], "--cache-ttl"),
        (&["--cache-capacity", "-1"], &[], "--cache-capacity"),
        (&["--cache-max-bytes", "12 parsecs"], &[], "--cache-max-bytes"),
        (
            &["--cache-max-value-bytes", "lots"],
            &[],
            "--cache-max-value-bytes",
        ),
        (&["--max-clients", "0"], &[], "--max-clients"),
        (&["--max-clients", "-5"], &[], "--max-clients"),
        (&["--max-parallel", "zero"], &[], "--max-parallel"),
        (&["--backend-timeout", "0s"], &[], "--backend-timeout"),
        (&["--redis-url", "http://localhost"], &[], "--redis-url"),
        (&["--redis-url", "redis://"], &[], "--redis-url"),
        (&["--http-listen", "nowhere"], &[], "--http-listen"),
        (&["--log-format", "xml"], &[], "--log-format"),
        (&["--invalidation", "push"], &[], "--invalidation"),
        (&[], &[("INVALIDATION", "never")], "--invalidation"),
        (&["--no-such-flag"], &[], "--no-such-flag"),
        (&[], &[("CACHE_TTL", "later")], "--cache-ttl"),
        (&[], &[("ALLOW_WRITES", "maybe")], "--allow-writes"),
        (&[], &[("REDIS_PORT", "70000")], "REDIS_PORT"),
        (&[], &[("REDIS_DB", "x")], "REDIS_DB"),
        (&["--resp-listen", "6380"], &[], "--resp-listen"),
        (&[], &[("CLIENT_PASSWORD", "")], "--client-password"),
        (&["--hotkeys-capacity", "2000000"], &[], "--hotkeys-capacity"),
        (&["--redis-cluster", "127.0.0.1:0"], &[], "--redis-cluster"),
        (&["--redis-cluster", "redis://h:7000/3"], &[], "--redis-cluster"),
        (
            &[
                "--redis-cluster",
                "127.0.0.1:7000",
                "--redis-url",
                "redis://127.0.0.1:1",
            ],
            &[],
            "--redis-cluster",
        ),
        (
            &["--redis-cluster", "127.0.0.1:7000"],
            &[("REDIS_HOST", "10.0.0.1")],
            "--redis-cluster cannot be given together with REDIS_HOST",
        ),
        (
            &["--resp-listen", "off", "--http-listen", "off"],
            &[],
            "all off: nothing would be served",
        ),
    ];
    for (args, env, flag) in cases {
        let (code, stderr) = run_with(args, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?} {env:?}: {stderr}");
    }
}

#[test]
fn flask_variables_choose_the_redis() {
    let redis = RedisServer::start();
    redis.cmd(&["SELECT", "0"]);
    let mut c = redis.conn();
    redis::cmd("SELECT").arg(3).exec(&mut c).unwrap();
    redis::cmd("SET").arg("in-db-3").arg("yes").exec(&mut c).unwrap();
    let (http, admin) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-proxy"))
        .env_remove("REDIS_URL")
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", redis.port.to_string())
        .env("REDIS_DB", "3")
        .env("HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env("ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("RESP_LISTEN", "off")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let r = wait_for("the proxy on REDIS_HOST/PORT/DB", || {
        common::try_request(http, "GET", b"/get/in-db-3", &[])
            .ok()
            .filter(|r| r.status == 200)
    });
    assert_eq!(r.json()["value"], "yes");
    let _ = child.kill();
    let _ = child.wait();
}
