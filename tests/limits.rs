//! --max-clients and --max-parallel.

mod common;

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
