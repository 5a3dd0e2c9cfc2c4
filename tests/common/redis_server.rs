//! A real redis-server on a free port (start, stop, restart on the same
//! port, cleaned up on drop), and waiting on conditions. Shared by the
//! system tests (`tests/`) and the in-process race tests of the library
//! (`src/lookup/tests.rs`), which include this file by path.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// How long any wait-on-condition in the tests may take before failing.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Waits until `f` returns Some, polling; panics with `what` after DEADLINE.
pub fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_up_to(DEADLINE, what, f)
}

/// [`wait_for`] with a deadline of its own (a cluster converging).
pub fn wait_up_to<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port nothing listens on, from a range below the ephemeral ports so that
/// outgoing connections cannot take it between our check and its use.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 20;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 10_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> RedisServer {
        Self::start_with(port, &[])
    }

    /// With more configuration (`--tls-port …`); `port` stays plain TCP,
    /// which the harness uses.
    pub fn start_with(port: u16, args: &[String]) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("redis-proxy-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            port,
            dir,
            args: args.to_vec(),
            child: None,
        };
        server.spawn();
        server
    }

    /// Starts redis-server, and waits for it to answer: also to start it
    /// again after [`stop`](Self::stop), on the same port and directory.
    pub fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (make test installs it)");
        self.child = Some(child);
        wait_for("redis-server to answer PING", || {
            let mut c = redis::Client::open(self.url()).ok()?.get_connection().ok()?;
            redis::cmd("PING").query::<String>(&mut c).ok()
        });
    }

    /// The running redis-server's process id (to stop it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server running").id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }

    pub fn set(&self, key: impl redis::ToRedisArgs, value: impl redis::ToRedisArgs) {
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .exec(&mut self.conn())
            .unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> redis::Value {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.conn()).unwrap()
    }

    /// How many times Redis has run `command` since the last CONFIG RESETSTAT.
    pub fn calls(&self, command: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.conn())
            .unwrap();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
            .unwrap_or(0)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Killed (SIGKILL) and started again on the same port: empty, unless
    /// it was started with an append-only file.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
