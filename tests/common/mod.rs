//! Test harness: a real redis-server ([`redis_server`]), the proxy binary on
//! free ports, and a small raw HTTP/1.1 client so tests control every byte
//! they send.

#![allow(dead_code)]

#[allow(unused)] // used by the cluster tests only
pub mod cluster;
mod in_process;
mod redis_server;
mod relay;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};

#[allow(unused_imports)] // used by the in-process tests only
pub use in_process::InProcess;
#[allow(unused_imports)] // wait_up_to: used by some tests only
pub use redis_server::{DEADLINE, RedisServer, free_port, wait_for, wait_up_to};
#[allow(unused_imports)] // used by the partition tests only
pub use relay::Relay;

/// A fresh redis-server and a proxy in front of it, connected.
pub fn setup(args: &[&str]) -> (RedisServer, Proxy) {
    let redis = RedisServer::start();
    let proxy = Proxy::start_ready(&redis, args);
    (redis, proxy)
}

/// The proxy binary, on free ports, against `redis_url`.
pub struct Proxy {
    pub http: u16,
    pub resp: u16,
    pub admin: u16,
    child: Child,
}

impl Proxy {
    pub fn start(redis: &RedisServer, args: &[&str]) -> Proxy {
        Self::start_url(&redis.url(), args)
    }

    pub fn start_url(redis_url: &str, args: &[&str]) -> Proxy {
        Self::launch(Command::new(env!("CARGO_BIN_EXE_redis-proxy")), redis_url, args)
    }

    /// Started with a soft open-file limit of `open_files`.
    pub fn start_with_open_files(redis: &RedisServer, open_files: u64, args: &[&str]) -> Proxy {
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(format!("ulimit -Sn {open_files} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_redis-proxy"));
        Self::launch(shell, &redis.url(), args)
    }

    /// `command` (the binary, or a wrapper of it) on free ports.
    pub fn launch(command: Command, redis_url: &str, args: &[&str]) -> Proxy {
        Self::launch_for(command, &["--redis-url", redis_url], args)
    }

    /// In front of a cluster (`seeds` as `--redis-cluster` takes them).
    pub fn start_cluster(seeds: &str, args: &[&str]) -> Proxy {
        let command = Command::new(env!("CARGO_BIN_EXE_redis-proxy"));
        let proxy = Self::launch_for(command, &["--redis-cluster", seeds], args);
        proxy.wait_ready();
        proxy
    }

    /// `command` on free ports, with `backend` saying where Redis is.
    pub fn launch_for(mut command: Command, backend: &[&str], args: &[&str]) -> Proxy {
        let (http, resp, admin) = (free_port(), free_port(), free_port());
        command
            .args(backend)
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--resp-listen", &format!("127.0.0.1:{resp}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(args)
            .env_remove("REDIS_URL")
            .env_remove("REDIS_CLUSTER")
            .stdout(Stdio::null());
        if !command.get_envs().any(|(name, _)| name == "RUST_LOG") {
            command.env("RUST_LOG", "error");
        }
        let child = command.spawn().expect("the proxy binary");
        let proxy = Proxy {
            http,
            resp,
            admin,
            child,
        };
        wait_for("the proxy's /healthz", || {
            try_request(admin, "GET", b"/healthz", &[])
                .ok()
                .filter(|r| r.status == 200)
        });
        proxy
    }

    /// A proxy the test spawned itself (`command` configured by the test,
    /// the listen addresses it was given).
    pub fn spawned(mut command: Command, http: u16, resp: u16, admin: u16) -> Proxy {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the proxy");
        Proxy {
            http,
            resp,
            admin,
            child,
        }
    }

    /// Started and connected to Redis.
    pub fn start_ready(redis: &RedisServer, args: &[&str]) -> Proxy {
        let proxy = Self::start(redis, args);
        proxy.wait_ready();
        proxy
    }

    /// Waits until the proxy has sent `n` requests to Redis in all: how a
    /// test knows a request it sent is now waiting on Redis.
    pub fn wait_backend_requests(&self, n: u64, what: &str) {
        wait_for(what, || {
            (self.metric("redis_proxy_backend_requests_total") >= n as f64).then_some(())
        });
    }

    pub fn wait_ready(&self) {
        wait_for("the proxy's /readyz", || {
            self.admin_get("/readyz").filter(|r| r.status == 200)
        });
    }

    pub fn get(&self, target: &str) -> Response {
        request(self.http, "GET", target.as_bytes(), &[])
    }

    pub fn admin_get(&self, path: &str) -> Option<Response> {
        try_request(self.admin, "GET", path.as_bytes(), &[]).ok()
    }

    /// The value of a counter or gauge in /metrics (summed over its labels).
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.admin_get("/metrics").expect("metrics").text();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_for("the proxy to exit", || self.child.try_wait().unwrap())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn cache(&self) -> &str {
        self.header("x-cache").unwrap_or("-")
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct HttpConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    pub fn connect(port: u16) -> std::io::Result<HttpConn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(DEADLINE))?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn send(&mut self, method: &str, target: &[u8], headers: &[(&str, &str)]) -> std::io::Result<()> {
        let mut req = Vec::new();
        req.extend_from_slice(method.as_bytes());
        req.push(b' ');
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (n, v) in headers {
            req.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        self.stream.write_all(&req)
    }

    pub fn request(
        &mut self,
        method: &str,
        target: &[u8],
        headers: &[(&str, &str)],
    ) -> std::io::Result<Response> {
        self.send(method, target, headers)?;
        self.read_response(method == "HEAD")
    }

    pub fn read_response(&mut self, head: bool) -> std::io::Result<Response> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            self.fill()?;
        };
        let head_text = String::from_utf8(self.buf[..end].to_vec()).unwrap();
        let mut lines = head_text.split("\r\n");
        let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        self.buf.drain(..end + 4);
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
        let len = if head { 0 } else { len };
        while self.buf.len() < len {
            self.fill()?;
        }
        let body = self.buf.drain(..len).collect();
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "connection closed"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// True once the server has closed the connection (reads EOF or reset).
    pub fn is_closed(&mut self) -> bool {
        self.fill().is_err()
    }
}

pub fn try_request(
    port: u16,
    method: &str,
    target: &[u8],
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    HttpConn::connect(port)?.request(method, target, headers)
}

/// One request on a new connection.
pub fn request(port: u16, method: &str, target: &[u8], headers: &[(&str, &str)]) -> Response {
    try_request(port, method, target, headers).expect("HTTP request")
}

/// True if nothing has arrived on `stream` yet (and it is still open).
pub fn still_waiting(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let waiting = matches!(stream.peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    waiting
}

/// The binary run with `args` and `env` (HTTP and admin off, RESP on a
/// port of the system's choosing) to its exit: its status code and what it
/// wrote to stderr.
pub fn run_with(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redis-proxy"));
    for (flag, default) in [
        ("--http-listen", "off"),
        ("--admin-listen", "off"),
        ("--resp-listen", "127.0.0.1:0"),
    ] {
        if !args.contains(&flag) {
            cmd.args([flag, default]);
        }
    }
    cmd.args(args).env_remove("REDIS_URL").env_remove("REDIS_HOST");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
