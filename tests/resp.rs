//! The Redis-protocol front end: raw bytes in, raw bytes out, and real
//! clients (redis-cli, redis-benchmark, the redis crate).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use common::{Proxy, RedisServer, setup};

struct Resp {
    stream: TcpStream,
}

impl Resp {
    fn connect(port: u16) -> Resp {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Resp { stream }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.stream.read_exact(&mut buf).unwrap();
        buf
    }

    /// Sends `request` and checks the reply is exactly `reply`.
    fn expect(&mut self, request: &[u8], reply: &[u8]) {
        self.send(request);
        let got = self.read_exact(reply.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(reply),
            "reply to {:?}",
            String::from_utf8_lossy(request)
        );
    }

    /// Sends `request`; the reply is one line starting with `prefix`.
    fn expect_line(&mut self, request: &[u8], prefix: &str) -> String {
        self.send(request);
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            self.stream.read_exact(&mut byte).unwrap();
            line.push(byte[0]);
        }
        let line = String::from_utf8(line).unwrap();
        assert!(
            line.starts_with(prefix),
            "{line:?} does not start with {prefix:?}"
        );
        line
    }

    fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[test]
fn get_and_mget_go_through_the_cache() {
    let (redis, proxy) = setup(&[]);
    redis.set("k", "v");
    redis.cmd(&["RPUSH", "list", "x"]);
    let mut c = Resp::connect(proxy.resp);
    c.expect(&cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    c.expect(&cmd(&[b"get", b"k"]), b"$1\r\nv\r\n");
    c.expect(&cmd(&[b"GET", b"missing"]), b"$-1\r\n");
    c.expect_line(&cmd(&[b"GET", b"list"]), "-WRONGTYPE Operation against a key");
    c.expect(
        &cmd(&[b"MGET", b"k", b"missing", b"list"]),
        b"*3\r\n$1\r\nv\r\n$-1\r\n$-1\r\n",
    );
    c.expect_line(
        &cmd(&[b"GET"]),
        "-ERR wrong number of arguments for 'get' command",
    );
    c.expect_line(
        &cmd(&[b"MGET"]),
        "-ERR wrong number of arguments for 'mget' command",
    );
    assert!(proxy.metric("redis_proxy_cache_hits_total") >= 2.0);
    let requests = proxy.admin_get("/metrics").unwrap().text();
    assert!(requests.contains("redis_proxy_requests_total{frontend=\"resp\",outcome=\"hit\"}"));
}

#[test]
fn mget_with_hits_and_misses_costs_one_redis_mget() {
    let (redis, proxy) = setup(&[]);
    for k in ["a", "b", "c", "d"] {
        redis.set(k, k);
    }
    let mut c = Resp::connect(proxy.resp);
    c.expect(&cmd(&[b"GET", b"a"]), b"$1\r\na\r\n");
    c.expect(&cmd(&[b"GET", b"c"]), b"$1\r\nc\r\n");
    redis.cmd(&["CONFIG", "RESETSTAT"]);
    c.expect(
        &cmd(&[b"MGET", b"a", b"b", b"c", b"d", b"nope", b"b"]),
        b"*6\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n$-1\r\n$1\r\nb\r\n",
    );
    assert_eq!(redis.calls("mget"), 1);
    assert_eq!(redis.calls("get"), 0);
    // The fetched keys are cached now.
    redis.cmd(&["CONFIG", "RESETSTAT"]);
    c.expect(&cmd(&[b"MGET", b"b", b"d"]), b"*2\r\n$1\r\nb\r\n$1\r\nd\r\n");
    assert_eq!(redis.calls("mget") + redis.calls("get"), 0);
}

#[test]
fn connection_commands_are_answered_locally() {
    let (redis, proxy) = setup(&[]);
    let version = backend_version(&redis);
    let mut c = Resp::connect(proxy.resp);
    c.expect(&cmd(&[b"PING"]), b"+PONG\r\n");
    c.expect(&cmd(&[b"PING", b"hi"]), b"$2\r\nhi\r\n");
    c.expect(&cmd(&[b"ECHO", b"a\r\nb"]), b"$4\r\na\r\nb\r\n");
    c.expect(&cmd(&[b"SELECT", b"0"]), b"+OK\r\n");
    c.expect_line(&cmd(&[b"SELECT", b"99"]), "-ERR DB index is out of range");
    c.expect_line(&cmd(&[b"SELECT", b"x"]), "-ERR value is not an integer");
    c.expect(&cmd(&[b"CLIENT", b"GETNAME"]), b"$-1\r\n");
    c.expect(&cmd(&[b"CLIENT", b"SETNAME", b"me"]), b"+OK\r\n");
    c.expect(&cmd(&[b"CLIENT", b"GETNAME"]), b"$2\r\nme\r\n");
    c.expect_line(
        &cmd(&[b"CLIENT", b"SETNAME", b"a b"]),
        "-ERR Client names cannot contain spaces",
    );
    c.expect(&cmd(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"x"]), b"+OK\r\n");
    c.expect_line(&cmd(&[b"CLIENT", b"ID"]), ":");
    c.expect_line(
        &cmd(&[b"CLIENT", b"TRACKING", b"on"]),
        "-ERR CLIENT TRACKING is not supported",
    );
    c.expect_line(
        &cmd(&[b"CLIENT", b"KILL", b"x"]),
        "-ERR 'CLIENT|KILL' is denied by this proxy",
    );
    // CONFIG GET and COMMAND are the backend's.
    c.expect(&cmd(&[b"CONFIG", b"GET", b"nothing"]), b"*0\r\n");
    c.expect_line(
        &cmd(&[b"CONFIG", b"SET", b"save", b""]),
        "-ERR 'CONFIG|SET' is denied",
    );
    let count = match redis.cmd(&["COMMAND", "COUNT"]) {
        redis::Value::Int(n) => n,
        other => panic!("{other:?}"),
    };
    c.expect_line(&cmd(&[b"COMMAND", b"COUNT"]), &format!(":{count}"));
    c.expect_line(
        &cmd(&[b"AUTH", b"pw"]),
        "-ERR AUTH <password> called without any password",
    );
    c.expect_line(&cmd(&[b"HELLO", b"4"]), "-NOPROTO");

    Resp::connect(proxy.resp).expect_line(&cmd(&[b"COMMAND"]), &format!("*{count}"));

    let mut i = Resp::connect(proxy.resp);
    i.send(&cmd(&[b"INFO"]));
    let header = i.expect_line(b"", "$");
    let len: usize = header[1..header.len() - 2].parse().unwrap();
    let info = String::from_utf8(i.read_exact(len + 2)).unwrap();
    assert!(info.contains(&format!("redis_version:{version}")), "{info}");
    assert!(info.contains("# Proxy\r\nproxy:redis-proxy\r\n"), "{info}");
    assert!(info.contains("backend:up"), "{info}");

    c.expect(&cmd(&[b"QUIT"]), b"+OK\r\n");
    assert!(c.is_closed());
}

#[test]
fn hello_3_switches_to_resp3() {
    let (redis, proxy) = setup(&[]);
    redis.set("k", "v");
    let version = backend_version(&redis);
    let mut c = Resp::connect(proxy.resp);
    c.send(&cmd(&[b"HELLO", b"3", b"SETNAME", b"three"]));
    let expected_start = format!(
        "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n${}\r\n{version}\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:",
        version.len()
    );
    let expected_start = expected_start.as_bytes();
    assert_eq!(c.read_exact(expected_start.len()), expected_start);
    let rest =
        b"\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
    // Skip the id's digits.
    let mut byte = [0u8; 1];
    loop {
        c.stream.read_exact(&mut byte).unwrap();
        if byte[0] == b'\r' {
            break;
        }
    }
    assert_eq!(c.read_exact(rest.len() - 1), &rest[1..]);
    c.expect(&cmd(&[b"GET", b"missing"]), b"_\r\n");
    c.expect(&cmd(&[b"MGET", b"k", b"missing"]), b"*2\r\n$1\r\nv\r\n_\r\n");
    c.expect(
        &cmd(&[b"CONFIG", b"GET", b"appendonly"]),
        b"%1\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
    );
    c.expect(&cmd(&[b"CLIENT", b"GETNAME"]), b"$5\r\nthree\r\n");
    // INFO is a verbatim string in RESP3, as Redis sends it.
    c.send(&cmd(&[b"INFO", b"proxy"]));
    let header = c.expect_line(b"", "=");
    let len: usize = header[1..header.len() - 2].parse().unwrap();
    let info = c.read_exact(len + 2);
    assert!(
        info.starts_with(b"txt:# Proxy\r\n"),
        "{}",
        String::from_utf8_lossy(&info)
    );
    c.send(&cmd(&[b"HELLO", b"2"]));
    assert_eq!(c.read_exact(4), b"*14\r");
}

#[test]
fn inline_commands_work() {
    let (redis, proxy) = setup(&[]);
    redis.set("a b", "spaced");
    let mut c = Resp::connect(proxy.resp);
    c.expect(b"PING\r\n", b"+PONG\r\n");
    c.expect(b"get \"a b\"\r\n", b"$6\r\nspaced\r\n");
    // An empty line is no command and gets no answer.
    c.expect(b"\r\nPING\r\n", b"+PONG\r\n");
    c.expect(b"ECHO 'it\\'s'\n", b"$4\r\nit's\r\n");
    c.expect_line(
        b"GET \"unterminated\r\n",
        "-ERR Protocol error: unbalanced quotes",
    );
    assert!(c.is_closed());
}

#[test]
fn a_thousand_pipelined_gets_in_one_write_are_answered_in_order() {
    let (redis, proxy) = setup(&["--cache-capacity", "600"]);
    let mut c = redis.conn();
    for i in 0..500 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("v{i}"))
            .exec(&mut c)
            .unwrap();
    }
    let mut request = Vec::new();
    let mut expected = Vec::new();
    for i in 0..1000 {
        // k0..k499 exist; k500..k999 do not; every key twice, out of order.
        let key = format!("k{}", (i * 7) % 1000);
        request.extend_from_slice(&cmd(&[b"GET", key.as_bytes()]));
        let n = (i * 7) % 1000;
        if n < 500 {
            let v = format!("v{n}");
            expected.extend_from_slice(format!("${}\r\n{v}\r\n", v.len()).as_bytes());
        } else {
            expected.extend_from_slice(b"$-1\r\n");
        }
    }
    let mut r = Resp::connect(proxy.resp);
    r.expect(&request, &expected);
    r.expect(&cmd(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn a_frame_split_across_many_writes_is_one_command() {
    let (redis, proxy) = setup(&[]);
    redis.set("split", "ok");
    let mut c = Resp::connect(proxy.resp);
    let request = cmd(&[b"GET", b"split"]);
    for byte in &request {
        c.send(&[*byte]);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(c.read_exact(8), b"$2\r\nok\r\n");
}

#[test]
fn a_protocol_error_closes_that_connection_only() {
    let (redis, proxy) = setup(&[]);
    redis.set("k", "v");
    let mut good = Resp::connect(proxy.resp);
    good.expect(&cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    for bad in [
        &b"*1\r\n:5\r\n"[..],
        b"*x\r\n",
        b"*1\r\n$-5\r\n",
        b"*2\r\n$3\r\nGET\r\n$1\r\nkXX",
    ] {
        let mut c = Resp::connect(proxy.resp);
        c.expect_line(bad, "-ERR Protocol error: ");
        assert!(c.is_closed());
    }
    // A bulk string over 512 MiB and an array over 1M elements.
    let mut c = Resp::connect(proxy.resp);
    c.expect_line(
        b"*1\r\n$536870913\r\n",
        "-ERR Protocol error: invalid bulk length",
    );
    let mut c = Resp::connect(proxy.resp);
    c.expect_line(b"*1048577\r\n", "-ERR Protocol error: invalid multibulk length");
    good.expect(&cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
}

#[test]
fn unknown_commands_leave_the_connection_usable() {
    let (redis, proxy) = setup(&[]);
    let mut c = Resp::connect(proxy.resp);
    // A command the table (Redis's own) does not know counts as a write.
    c.expect_line(
        &cmd(&[b"NOSUCHCOMMAND", b"h"]),
        "-ERR NOSUCHCOMMAND is disabled: start the proxy with --allow-writes",
    );
    c.expect_line(
        &cmd(&[b"FLUSHALL"]),
        "-ERR FLUSHALL is disabled: start the proxy with --allow-writes",
    );
    c.expect(&cmd(&[b"HGETALL", b"h"]), b"*0\r\n");
    c.expect_line(
        &cmd(&[b"SET", b"k", b"v"]),
        "-ERR SET is disabled: start the proxy with --allow-writes",
    );
    c.expect_line(&cmd(&[b"DEL", b"k"]), "-ERR DEL is disabled");
    c.expect(&cmd(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(redis.cmd(&["EXISTS", "k"]), redis::Value::Int(0));
}

#[test]
fn set_and_del_write_through_with_allow_writes() {
    let (redis, proxy) = setup(&["--allow-writes"]);
    let mut c = Resp::connect(proxy.resp);
    c.expect(&cmd(&[b"GET", b"k"]), b"$-1\r\n");
    c.expect(&cmd(&[b"SET", b"k", b"v1"]), b"+OK\r\n");
    let got: String = redis::cmd("GET").arg("k").query(&mut redis.conn()).unwrap();
    assert_eq!(got, "v1");
    c.expect(&cmd(&[b"GET", b"k"]), b"$2\r\nv1\r\n");
    // SET with options is Redis's to decide; the cached copy is dropped.
    c.expect(&cmd(&[b"SET", b"k", b"v2", b"GET"]), b"$2\r\nv1\r\n");
    c.expect(&cmd(&[b"SET", b"k", b"v3", b"NX"]), b"$-1\r\n");
    c.expect(&cmd(&[b"GET", b"k"]), b"$2\r\nv2\r\n");
    c.expect(&cmd(&[b"DEL", b"k", b"other"]), b":1\r\n");
    c.expect(&cmd(&[b"GET", b"k"]), b"$-1\r\n");
    c.expect_line(&cmd(&[b"SET", b"k", b"v", b"BOGUS"]), "-ERR syntax error");
}

#[test]
fn client_password_is_required_on_both_front_ends() {
    let (redis, proxy) = setup(&["--client-password", "s3cret"]);
    redis.set("k", "v");
    let mut c = Resp::connect(proxy.resp);
    c.expect(&cmd(&[b"GET", b"k"]), b"-NOAUTH Authentication required.\r\n");
    c.expect(&cmd(&[b"PING"]), b"+PONG\r\n");
    c.expect_line(
        &cmd(&[b"HELLO", b"3"]),
        "-NOAUTH HELLO must be called with the client already authenticated",
    );
    c.expect_line(&cmd(&[b"AUTH", b"wrong"]), "-WRONGPASS");
    c.expect_line(&cmd(&[b"AUTH", b"someone", b"s3cret"]), "-WRONGPASS");
    c.expect(&cmd(&[b"GET", b"k"]), b"-NOAUTH Authentication required.\r\n");
    c.expect(&cmd(&[b"AUTH", b"s3cret"]), b"+OK\r\n");
    c.expect(&cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");

    let mut h = Resp::connect(proxy.resp);
    h.expect_line(
        &cmd(&[b"HELLO", b"3", b"AUTH", b"default", b"nope"]),
        "-WRONGPASS",
    );
    h.expect_line(&cmd(&[b"HELLO", b"3", b"AUTH", b"default", b"s3cret"]), "%7");

    let r = common::request(proxy.http, "GET", b"/get/k", &[]);
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer")));
    let r = common::request(proxy.http, "GET", b"/get/k", &[("Authorization", "Bearer nope")]);
    assert_eq!(r.status, 401);
    let r = common::request(
        proxy.http,
        "GET",
        b"/get/k",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(r.status, 200);
    // The admin port never asks.
    assert_eq!(proxy.admin_get("/metrics").unwrap().status, 200);
}

#[test]
fn over_max_clients_gets_the_redis_error_and_is_closed() {
    let (_redis, proxy) = setup(&["--max-clients", "1"]);
    let mut first = Resp::connect(proxy.resp);
    first.expect(&cmd(&[b"PING"]), b"+PONG\r\n");
    let mut second = Resp::connect(proxy.resp);
    second.expect(&cmd(&[b"PING"]), b"-ERR max number of clients reached\r\n");
    assert!(second.is_closed());
    first.expect(&cmd(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn redis_down_is_an_error_never_nil() {
    let (mut redis, proxy) = setup(&[]);
    let mut c = Resp::connect(proxy.resp);
    redis.stop();
    c.expect(&cmd(&[b"GET", b"k"]), b"-ERR backend unavailable\r\n");
    c.expect(&cmd(&[b"MGET", b"a", b"b"]), b"-ERR backend unavailable\r\n");
}

#[test]
fn sigterm_lets_a_resp_request_in_flight_finish() {
    let (redis, mut proxy) = setup(&["--backend-timeout", "10s"]);
    redis.set("slow", "done");
    let mut c = Resp::connect(proxy.resp);
    redis.cmd(&["CLIENT", "PAUSE", "3000", "ALL"]);
    c.send(&cmd(&[b"GET", b"slow"]));
    proxy.wait_backend_requests(1, "the GET to reach Redis");
    assert!(
        common::still_waiting(&c.stream),
        "the pause ran out before SIGTERM"
    );
    proxy.signal("TERM");
    assert_eq!(c.read_exact(10), b"$4\r\ndone\r\n");
    assert!(c.is_closed());
    assert_eq!(proxy.wait_exit().code(), Some(0));
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (make test installs redis-tools)");
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn redis_cli_works_in_resp2_and_resp3() {
    let (redis, proxy) = setup(&[]);
    redis.set("k", "from redis");
    assert_eq!(redis_cli(proxy.resp, &["GET", "k"]), "from redis\n");
    assert_eq!(redis_cli(proxy.resp, &["-3", "GET", "k"]), "from redis\n");
    assert_eq!(redis_cli(proxy.resp, &["-3", "GET", "nope"]), "\n");
    assert_eq!(redis_cli(proxy.resp, &["MGET", "k", "nope"]), "from redis\n\n");
    let version = format!("redis_version:{}", backend_version(&redis));
    assert!(redis_cli(proxy.resp, &["INFO", "server"]).contains(&version));
}

/// The backing Redis's version, as its INFO says.
fn backend_version(redis: &RedisServer) -> String {
    let info = match redis.cmd(&["INFO", "server"]) {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("{other:?}"),
    };
    let line = info.lines().find(|l| l.starts_with("redis_version:")).unwrap();
    line["redis_version:".len()..].trim().to_string()
}

#[test]
fn redis_benchmark_runs_against_the_proxy() {
    let (redis, proxy) = setup(&[]);
    let status = Command::new("redis-benchmark")
        .args(["-p", &proxy.resp.to_string()])
        .args(["-t", "get", "-r", "1000", "-n", "20000", "-q"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("redis-benchmark (make test installs redis-tools)");
    assert!(status.success());
    assert!(redis.calls("get") > 0);
}

#[test]
fn the_redis_crate_sync_client_works_in_resp2_and_resp3() {
    let (redis, proxy) = setup(&["--allow-writes"]);
    redis.set("k", "v");
    for url in [
        format!("redis://127.0.0.1:{}/0", proxy.resp),
        format!("redis://127.0.0.1:{}/0?protocol=resp3", proxy.resp),
    ] {
        let mut c = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let v: Option<String> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
        assert_eq!(v.as_deref(), Some("v"), "{url}");
        let v: Option<String> = redis::cmd("GET").arg("nope").query(&mut c).unwrap();
        assert_eq!(v, None, "{url}");
        let vs: Vec<Option<String>> = redis::cmd("MGET").arg("k").arg("nope").query(&mut c).unwrap();
        assert_eq!(vs, [Some("v".to_string()), None], "{url}");
        redis::cmd("SET").arg("w").arg(&url).exec(&mut c).unwrap();
        let v: String = redis::cmd("GET").arg("w").query(&mut c).unwrap();
        assert_eq!(v, url);
    }
}

#[test]
fn the_redis_crate_async_client_works_in_resp2_and_resp3() {
    let (redis, proxy) = setup(&[]);
    redis.set("k", "v");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for url in [
            format!("redis://127.0.0.1:{}/0", proxy.resp),
            format!("redis://127.0.0.1:{}/0?protocol=resp3", proxy.resp),
        ] {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let v: Option<String> = redis::cmd("GET").arg("k").query_async(&mut c).await.unwrap();
            assert_eq!(v.as_deref(), Some("v"), "{url}");
            let mut pipe = redis::pipe();
            for _ in 0..50 {
                pipe.cmd("GET").arg("k").cmd("GET").arg("nope");
            }
            let vs: Vec<Option<String>> = pipe.query_async(&mut c).await.unwrap();
            assert_eq!(vs.len(), 100);
            assert!(
                vs.chunks(2)
                    .all(|p| p[0].as_deref() == Some("v") && p[1].is_none())
            );
        }
    });
}

#[test]
fn a_client_that_does_not_read_is_not_answered_without_bound() {
    let (redis, proxy) = setup(&[]);
    let value = "x".repeat(1 << 20);
    redis.set("big", &value);
    let one = format!("$1048576\r\n{value}\r\n").into_bytes();
    let mut c = Resp::connect(proxy.resp);
    c.send(&cmd(&[b"GET", b"big"]));
    assert!(c.read_exact(one.len()) == one);
    // 300 GETs of a 1 MiB value, and no reading: answering them all at once
    // would buffer 300 MiB. The proxy answers a few MiB ahead, then waits
    // for the client to read.
    let request: Vec<u8> = (0..300).flat_map(|_| cmd(&[b"GET", b"big"])).collect();
    c.send(&request);
    let answered = || proxy.metric("redis_proxy_cache_hits_total");
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            answered() < 150.0,
            "{} answered while the client read nothing",
            answered()
        );
    }
    for _ in 0..300 {
        assert!(c.read_exact(one.len()) == one);
    }
    c.expect(&cmd(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn pipelined_gets_that_miss_cost_one_redis_round_trip() {
    let (redis, proxy) = setup(&[]);
    let mut c = redis.conn();
    for i in 0..50 {
        redis::cmd("SET")
            .arg(format!("p{i}"))
            .arg(i)
            .exec(&mut c)
            .unwrap();
    }
    redis.cmd(&["RPUSH", "list", "x"]);
    redis.cmd(&["CONFIG", "RESETSTAT"]);
    let mut request = Vec::new();
    let mut expected = Vec::new();
    for i in 0..50 {
        request.extend_from_slice(&cmd(&[b"GET", format!("p{i}").as_bytes()]));
        expected.extend_from_slice(format!("${}\r\n{i}\r\n", i.to_string().len()).as_bytes());
    }
    request.extend_from_slice(&cmd(&[b"GET", b"absent"]));
    expected.extend_from_slice(b"$-1\r\n");
    request.extend_from_slice(&cmd(&[b"GET", b"list"]));
    expected.extend_from_slice(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    let mut r = Resp::connect(proxy.resp);
    r.expect(&request, &expected);
    // One write of 52 commands is normally one read, so one MGET; a slow
    // machine may split it into a few reads, each its own round trip.
    let round_trips = redis.calls("get") + redis.calls("mget");
    assert!(
        (1..=3).contains(&round_trips),
        "{round_trips} round trips for 52 pipelined GETs"
    );
}

#[test]
fn a_read_only_redis_user_that_may_not_use_multi_still_works() {
    let redis = RedisServer::start();
    redis.set("k", "v");
    redis.set("k2", "v2");
    redis.cmd(&["RPUSH", "list", "x"]);
    redis.cmd(&[
        "ACL",
        "SETUSER",
        "reader",
        "on",
        ">pw",
        "~*",
        "+@read",
        "+@connection",
        "-@transaction",
    ]);
    let url = format!("redis://reader:pw@127.0.0.1:{}/0", redis.port);
    let proxy = Proxy::start_url(&url, &[]);
    proxy.wait_ready();
    let r = proxy.get("/get/k");
    assert_eq!(
        (r.status, r.json()["value"].as_str()),
        (200, Some("v")),
        "{}",
        r.text()
    );
    assert_eq!(proxy.get("/get/list").status, 409);
    assert_eq!(proxy.get("/get/absent").status, 404);
    let mut c = Resp::connect(proxy.resp);
    c.expect(
        &cmd(&[b"MGET", b"k2", b"absent", b"list"]),
        b"*3\r\n$2\r\nv2\r\n$-1\r\n$-1\r\n",
    );
}

#[test]
fn pipelined_gets_of_a_list_answer_wrongtype_and_mget_answers_nil() {
    let (redis, proxy) = setup(&[]);
    redis.set("k", "v");
    redis.cmd(&["RPUSH", "list", "x"]);
    let mut c = Resp::connect(proxy.resp);
    let mut batch = cmd(&[b"GET", b"k"]);
    batch.extend(cmd(&[b"GET", b"list"]));
    batch.extend(cmd(&[b"GET", b"absent"]));
    c.send(&batch);
    let wrongtype = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
    let mut expected = b"$1\r\nv\r\n".to_vec();
    expected.extend_from_slice(wrongtype);
    expected.extend_from_slice(b"$-1\r\n");
    assert_eq!(c.read_exact(expected.len()), expected);
    c.expect(&cmd(&[b"MGET", b"list", b"k"]), b"*2\r\n$-1\r\n$1\r\nv\r\n");
}

#[test]
fn before_auth_a_large_frame_is_a_protocol_error_and_after_it_is_not() {
    let (_redis, proxy) = setup(&["--client-password", "s3cret", "--allow-writes"]);
    let eleven: Vec<&[u8]> = std::iter::once(&b"MGET"[..]).chain([&b"k"[..]; 10]).collect();
    let mut c = Resp::connect(proxy.resp);
    c.expect(
        &cmd(&eleven),
        b"-ERR Protocol error: unauthenticated multibulk length\r\n",
    );
    assert!(c.is_closed());
    let big = vec![b'x'; 16 * 1024 + 1];
    let mut c = Resp::connect(proxy.resp);
    c.expect(
        &cmd(&[b"SET", b"k", &big]),
        b"-ERR Protocol error: unauthenticated bulk length\r\n",
    );
    assert!(c.is_closed());
    // An AUTH pipelined with a large command: the command is judged after
    // the AUTH has run, as Redis does.
    let mut c = Resp::connect(proxy.resp);
    let mut both = cmd(&[b"AUTH", b"s3cret"]);
    both.extend(cmd(&[b"SET", b"big", &big]));
    c.send(&both);
    assert_eq!(c.read_exact(10), b"+OK\r\n+OK\r\n");
    c.expect(
        &cmd(&eleven),
        b"*10\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n",
    );
}

#[test]
fn a_query_buffer_over_64_mib_closes_that_connection_only() {
    let (redis, proxy) = setup(&[]);
    redis.set("k", "v");
    let mut c = Resp::connect(proxy.resp);
    // A bulk the protocol allows (under 512 MiB) that never completes.
    c.send(format!("*2\r\n$3\r\nGET\r\n${}\r\n", 100 << 20).as_bytes());
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    while sent < 70 {
        if c.stream.write_all(&chunk).is_err() {
            break; // closed by the proxy
        }
        sent += 1;
    }
    let mut reply = Vec::new();
    let _ = c.stream.read_to_end(&mut reply);
    assert!(
        String::from_utf8_lossy(&reply).starts_with("-ERR Protocol error: query buffer over 64 MiB"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let mut other = Resp::connect(proxy.resp);
    other.expect(&cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
}

#[test]
fn an_mget_of_2500_keys_is_three_redis_mgets_of_at_most_1000() {
    let (redis, proxy) = setup(&[]);
    let mut c = redis.conn();
    // Every third key is absent.
    for i in (0..2500).filter(|i| i % 3 != 0) {
        redis::cmd("SET")
            .arg(format!("m{i}"))
            .arg(i)
            .exec(&mut c)
            .unwrap();
    }
    redis.cmd(&["CONFIG", "RESETSTAT"]);
    let keys: Vec<Vec<u8>> = (0..2500).map(|i| format!("m{i}").into_bytes()).collect();
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(keys.iter().map(Vec::as_slice));
    let mut expected = b"*2500\r\n".to_vec();
    for i in 0..2500 {
        if i % 3 == 0 {
            expected.extend_from_slice(b"$-1\r\n");
        } else {
            expected.extend_from_slice(format!("${}\r\n{i}\r\n", i.to_string().len()).as_bytes());
        }
    }
    let mut r = Resp::connect(proxy.resp);
    r.expect(&cmd(&args), &expected);
    assert_eq!(redis.calls("mget"), 3);
    assert_eq!(redis.calls("get"), 0);
    // The values are cached now; only the 834 absent keys (misses are not
    // cached) go to Redis again, in one MGET.
    r.expect(&cmd(&args), &expected);
    assert_eq!(redis.calls("mget"), 4);
}

#[test]
fn a_large_mget_reply_is_written_as_the_client_reads_it_not_built_whole() {
    // 24 values of 1 MiB: 24 MiB of reply against a 4 MiB output limit.
    // Built whole, it would pass the limit and close the connection; written
    // a piece at a time as the client reads, it never holds more than a
    // little of it.
    let (redis, proxy) = setup(&["--client-output-limit", "4MiB"]);
    let value = "y".repeat(1 << 20);
    redis.set("big", &value);
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(std::iter::repeat_n(&b"big"[..], 24));
    let mut c = Resp::connect(proxy.resp);
    c.send(&cmd(&args));
    assert_eq!(c.read_exact(6), b"*24\r\n$");
    let one = format!("1048576\r\n{value}\r\n").into_bytes();
    assert!(c.read_exact(one.len()) == one);
    let one = format!("$1048576\r\n{value}\r\n").into_bytes();
    for _ in 1..24 {
        assert!(c.read_exact(one.len()) == one);
    }
    c.expect(&cmd(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(
        proxy.metric("redis_proxy_clients_disconnected_total{reason=\"output_limit\"}"),
        0.0
    );
}
