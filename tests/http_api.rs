//! Every row of the DESIGN's HTTP table, against a real redis-server.

mod common;

use std::io::Write;

use common::{HttpConn, request, setup};

#[test]
fn get_returns_json_then_hits() {
    let (redis, proxy) = setup(&[]);
    redis.set("foo", "bar");
    let r = proxy.get("/get/foo");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), serde_json::json!({"key": "foo", "value": "bar"}));
    assert_eq!(r.cache(), "MISS");
    assert_eq!(r.header("age"), None);
    let r = proxy.get("/get/foo");
    assert_eq!((r.status, r.cache()), (200, "HIT"));
    assert_eq!(r.header("age"), Some("0"));
    assert_eq!(r.json()["value"], "bar");
}

#[test]
fn octet_stream_gives_raw_bytes() {
    let (redis, proxy) = setup(&[]);
    redis.set("bin", &[0u8, 159, 146, 150, 255][..]);
    let r = request(
        proxy.http,
        "GET",
        b"/get/bin",
        &[("Accept", "application/octet-stream")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.body, [0u8, 159, 146, 150, 255]);
    // Same value as JSON: not UTF-8, so base64.
    let r = proxy.get("/get/bin");
    assert_eq!(
        r.json(),
        serde_json::json!({"key": "bin", "value_base64": "AJ+Slv8="})
    );
}

#[test]
fn missing_key_is_404_json() {
    let (_redis, proxy) = setup(&[]);
    let r = proxy.get("/get/nope");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "key not found", "key": "nope"})
    );
    assert_eq!(r.cache(), "MISS");
}

#[test]
fn wrong_type_is_409() {
    let (redis, proxy) = setup(&[]);
    redis.cmd(&["RPUSH", "alist", "x"]);
    let r = proxy.get("/get/alist");
    assert_eq!(r.status, 409);
    assert!(
        r.json()["error"].as_str().unwrap().starts_with("WRONGTYPE"),
        "{}",
        r.text()
    );
}

#[test]
fn head_is_get_without_body() {
    let (redis, proxy) = setup(&[]);
    redis.set("h", "12345");
    let mut c = HttpConn::connect(proxy.http).unwrap();
    let r = c.request("HEAD", b"/get/h", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("27"));
    assert!(r.body.is_empty());
    // The connection is still in step: no body bytes were sent.
    let r = c.request("HEAD", b"/get/h", &[]).unwrap();
    assert_eq!((r.status, r.cache()), (200, "HIT"));
    let r = c.request("HEAD", b"/get/missing", &[]).unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn set_is_forbidden_without_allow_writes() {
    let (redis, proxy) = setup(&[]);
    for method in ["GET", "PUT", "POST"] {
        let r = request(proxy.http, method, b"/set/k/v", &[]);
        assert_eq!(r.status, 403, "{method}");
        assert!(r.text().contains("--allow-writes"));
    }
    assert_eq!(redis.cmd(&["EXISTS", "k"]), redis::Value::Int(0));
}

#[test]
fn set_writes_through_and_is_fresh_in_cache() {
    let (redis, proxy) = setup(&["--allow-writes"]);
    redis.set("k", "old");
    assert_eq!(proxy.get("/get/k").json()["value"], "old");
    for (method, value) in [("GET", "v1"), ("PUT", "v2"), ("POST", "v3")] {
        let r = request(proxy.http, method, format!("/set/k/{value}").as_bytes(), &[]);
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        assert_eq!(r.json(), serde_json::json!({"key": "k", "value": value}));
        let got: String = redis::cmd("GET").arg("k").query(&mut redis.conn()).unwrap();
        assert_eq!(got, value);
        let r = proxy.get("/get/k");
        assert_eq!((r.cache(), r.json()["value"].as_str()), ("HIT", Some(value)));
    }
    // Key is everything up to the last segment; both are percent-decoded.
    let r = proxy.get("/set/a/b%20c/x%2Fy");
    assert_eq!(r.json(), serde_json::json!({"key": "a/b c", "value": "x/y"}));
    let got: String = redis::cmd("GET").arg("a/b c").query(&mut redis.conn()).unwrap();
    assert_eq!(got, "x/y");
    // An empty value is a value.
    assert_eq!(proxy.get("/set/e/").status, 200);
    assert_eq!(proxy.get("/get/e").json()["value"], "");
    assert_eq!(proxy.get("/set//v").status, 400);
    assert_eq!(proxy.get("/set/novalue").status, 400);
}

#[test]
fn root_describes_routes() {
    let (_redis, proxy) = setup(&[]);
    let r = proxy.get("/");
    assert_eq!(r.status, 200);
    assert!(r.json()["routes"]["GET /get/{key}"].is_string());
}

#[test]
fn unknown_paths_404_and_wrong_methods_405() {
    let (_redis, proxy) = setup(&[]);
    assert_eq!(proxy.get("/nope").status, 404);
    assert_eq!(proxy.get("/get").status, 404);
    let r = request(proxy.http, "DELETE", b"/get/k", &[]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = request(proxy.http, "DELETE", b"/set/k/v", &[]);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, PUT, POST")));
    let r = request(proxy.http, "POST", b"/", &[]);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
}

#[test]
fn bad_keys_are_400_and_long_paths_414() {
    let (_redis, proxy) = setup(&[]);
    assert_eq!(proxy.get("/get/").status, 400);
    assert_eq!(proxy.get("/get/a%zz").status, 400);
    assert_eq!(proxy.get("/get/a%4").status, 400);
    let long = format!("/get/{}", "k".repeat(9 * 1024));
    let r = proxy.get(&long);
    assert_eq!(r.status, 414);
    assert_eq!(proxy.get("/get/still-serving").status, 404);
}

#[test]
fn keys_are_binary_safe_and_may_hold_slashes_spaces_and_nul() {
    let (redis, proxy) = setup(&[]);
    redis.set("a/b", "slash");
    redis.set("a b", "space");
    redis.set(&[0u8, 0xff][..], "nul-ff");
    redis.set("k\0x", "inner-nul");
    redis.set("100%", "percent");
    assert_eq!(proxy.get("/get/a/b").json()["value"], "slash");
    assert_eq!(proxy.get("/get/a%2Fb").json()["value"], "slash");
    assert_eq!(proxy.get("/get/a%20b").json()["value"], "space");
    let r = proxy.get("/get/%00%ff");
    assert_eq!(
        r.json(),
        serde_json::json!({"key_base64": "AP8=", "value": "nul-ff"})
    );
    assert_eq!(proxy.get("/get/k%00x").json()["value"], "inner-nul");
    assert_eq!(proxy.get("/get/100%25").json()["value"], "percent");
}

#[test]
fn empty_value_is_200_not_404() {
    let (redis, proxy) = setup(&[]);
    redis.set("empty", "");
    let r = proxy.get("/get/empty");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"key": "empty", "value": ""}));
    assert_eq!(proxy.get("/get/empty").cache(), "HIT");
}

#[test]
fn huge_and_garbage_requests_get_4xx_and_the_server_keeps_serving() {
    let (redis, proxy) = setup(&[]);
    redis.set("ok", "fine");
    // A 1 MiB path: refused with 431 before routing (the head is larger
    // than hyper's read buffer). Written from another thread: the server
    // may stop reading before all of it is sent.
    let mut c = HttpConn::connect(proxy.http).unwrap();
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let path = format!("/get/{}", "x".repeat(1 << 20));
        let _ = writer.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    });
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 431);
    sender.join().unwrap();
    // A 70 kB path: over the longest URI hyper parses.
    let r = proxy.get(&format!("/get/{}", "y".repeat(70_000)));
    assert_eq!(r.status, 414);
    // Garbage request lines and paths.
    let garbage: [&[u8]; 6] = [
        b"\x00\x01\x02 \xff\xfe HTTP/1.1\r\n\r\n",
        b"GET /get/\x7f\x80 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"NOT-HTTP\r\n\r\n",
        b"GET /%%%%/get HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /get/%G0 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    ];
    for g in garbage {
        let mut c = HttpConn::connect(proxy.http).unwrap();
        c.stream.write_all(g).unwrap();
        let r = c.read_response(false).unwrap();
        assert!(
            (400..500).contains(&r.status),
            "{:?} -> {}",
            String::from_utf8_lossy(g),
            r.status
        );
    }
    // An absolute-form target is valid HTTP/1.1: its path is used.
    let mut c = HttpConn::connect(proxy.http).unwrap();
    c.stream
        .write_all(b"GET http://example.com/get/ok HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 200);
    let r = proxy.get("/get/ok");
    assert_eq!((r.status, r.json()["value"].as_str()), (200, Some("fine")));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (redis, proxy) = setup(&[]);
    for i in 0..20 {
        redis.set(format!("p{i}"), format!("v{i}"));
    }
    let mut c = HttpConn::connect(proxy.http).unwrap();
    let mut all = Vec::new();
    for i in 0..20 {
        all.extend_from_slice(format!("GET /get/p{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    std::io::Write::write_all(&mut c.stream, &all).unwrap();
    for i in 0..20 {
        let r = c.read_response(false).unwrap();
        assert_eq!(r.json()["value"], format!("v{i}"));
    }
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (_redis, proxy) = setup(&["--client-idle-timeout", "1s"]);
    let mut c = common::HttpConn::connect(proxy.http).unwrap();
    assert_eq!(c.request("GET", b"/get/k", &[]).unwrap().status, 404);
    // wait_for's deadline (15 s) is far beyond the idle timeout.
    common::wait_for("the idle connection to be closed", || c.is_closed().then_some(()));
    let idle = "redis_proxy_clients_disconnected_total{reason=\"idle\"}";
    common::wait_for("the close to be counted", || {
        (proxy.metric(idle) == 1.0).then_some(())
    });
}

#[test]
fn a_client_that_does_not_read_its_responses_is_closed_after_30_s() {
    use std::io::{ErrorKind, Read};
    let (redis, proxy) = setup(&[]);
    redis.set("big", vec![b'x'; 1 << 20]);
    let mut c = std::net::TcpStream::connect(("127.0.0.1", proxy.http)).unwrap();
    // 64 MiB of responses asked for and not read: far more than the
    // sockets' buffers hold, so the proxy's write waits on the client.
    let get = b"GET /get/big HTTP/1.1\r\nHost: x\r\nAccept: application/octet-stream\r\n\r\n";
    for _ in 0..64 {
        c.write_all(get).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_secs(32));
    // Now read: what was buffered, then the end. A proxy without a write
    // deadline would still be waiting, write all 64 MiB as this reads, and
    // keep the connection open.
    c.set_read_timeout(Some(common::DEADLINE)).unwrap();
    let (mut total, mut buf) = (0, vec![0u8; 1 << 16]);
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("still open after {total} bytes: {e}"),
        }
    }
    assert!(total < 64 << 20, "all {total} bytes were written");
    assert_eq!(proxy.get("/get/big").status, 200);
    let write_timeouts = "redis_proxy_clients_disconnected_total{reason=\"write_timeout\"}";
    assert_eq!(proxy.metric(write_timeouts), 1.0);
}
