//! `deploy/` kept true: the container file's user and environment run the
//! binary (no image is built: no registry is reachable here), the systemd
//! unit's `LimitNOFILE` is what the defaults need, and the haproxy example
//! is a valid configuration.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Proxy, RedisServer, free_port};

fn deploy(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The Dockerfile's instructions of the last stage, continuation lines
/// joined: (instruction, arguments).
fn final_stage(dockerfile: &str) -> Vec<(String, String)> {
    let joined = dockerfile.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    lines[last_from..]
        .iter()
        .map(|l| {
            let (i, rest) = l.split_once(' ').unwrap_or((l, ""));
            (i.to_string(), rest.trim().to_string())
        })
        .collect()
}

fn env_of(stage: &[(String, String)]) -> Vec<(String, String)> {
    stage
        .iter()
        .filter(|(i, _)| i == "ENV")
        .flat_map(|(_, args)| args.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("ENV KEY=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The binary where any user may run it (target/ may not be reachable).
fn public_binary() -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new();
    let bin = dir.path.join("redis-proxy");
    std::fs::copy(env!("CARGO_BIN_EXE_redis-proxy"), &bin).unwrap();
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

mod tempdir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }
    impl Dir {
        pub fn new() -> Dir {
            let path = std::env::temp_dir().join(format!(
                "redis-proxy-deploy-{}-{}",
                std::process::id(),
                super::free_port()
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

#[test]
fn the_container_user_and_environment_run_the_proxy() {
    let stage = final_stage(&deploy("container/Dockerfile"));
    let user = stage.iter().find(|(i, _)| i == "USER").expect("a USER").1.clone();
    let (uid, gid) = user.split_once(':').unwrap_or((&user, &user));
    assert_ne!(uid, "0", "the container runs as root");
    assert!(
        uid.parse::<u32>().is_ok(),
        "a numeric USER works without /etc/passwd: {user}"
    );
    let exposed: HashSet<String> = stage
        .iter()
        .filter(|(i, _)| i == "EXPOSE")
        .flat_map(|(_, a)| a.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let entrypoint = &stage
        .iter()
        .find(|(i, _)| i == "ENTRYPOINT")
        .expect("an ENTRYPOINT")
        .1;
    assert!(entrypoint.contains("/usr/local/bin/redis-proxy"), "{entrypoint}");

    // The ENV as the file sets it, with each listener moved to a free port
    // on 127.0.0.1 (after checking the file exposes its port).
    let redis = RedisServer::start();
    redis.set("k", "from the container's environment");
    let (mut http, mut resp, mut admin) = (0, 0, 0);
    let mut env = Vec::new();
    for (k, v) in env_of(&stage) {
        let slot = match k.as_str() {
            "HTTP_LISTEN" => Some(&mut http),
            "RESP_LISTEN" => Some(&mut resp),
            "ADMIN_LISTEN" => Some(&mut admin),
            _ => None,
        };
        let v = match slot {
            Some(port) => {
                let given = v.rsplit(':').next().unwrap();
                assert!(exposed.contains(given), "{k}={v} but EXPOSE {exposed:?}");
                *port = free_port();
                format!("127.0.0.1:{port}")
            }
            None => v,
        };
        env.push((k, v));
    }
    assert!(
        http != 0 && resp != 0 && admin != 0,
        "every listener set by ENV: {env:?}"
    );
    let (_dir, bin) = public_binary();
    let mut command = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
        ])
        .arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    // Only what the file sets, and what a deployment adds: REDIS_URL.
    command.env_clear().envs(env).env("REDIS_URL", redis.url());
    let mut proxy = Proxy::spawned(command, http, resp, admin);
    proxy.wait_ready();
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.pid())).unwrap();
    let running_as = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    if is_root() {
        assert_eq!(running_as.split_whitespace().next(), Some(uid), "{running_as}");
    }
    let r = proxy.get("/get/k");
    assert_eq!(r.json()["value"], "from the container's environment");
    // JSON logs, as LOG_FORMAT says; SIGTERM (STOPSIGNAL) drains and exits 0.
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit().code(), Some(0));
}

#[test]
fn the_systemd_unit_opens_as_many_files_as_the_defaults_need() {
    let unit = deploy("systemd/redis-proxy.service");
    let limit: u64 = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("LimitNOFILE="))
        .expect("LimitNOFILE")
        .trim()
        .parse()
        .unwrap();
    assert!(unit.contains("KillSignal=SIGTERM"));
    let hard = Command::new("sh").args(["-c", "ulimit -Hn"]).output().unwrap();
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_string();
    if !is_root() && hard != "unlimited" && hard.parse::<u64>().unwrap() < limit {
        eprintln!("skipped: the hard open-file limit ({hard}) is below {limit} and only root may raise it");
        return;
    }
    let redis = RedisServer::start();
    let with_limit = |n: u64, env: &[(&str, &str)]| {
        let (http, resp, admin) = (free_port(), free_port(), free_port());
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("ulimit -n {n} && exec \"$0\""))
            .arg(env!("CARGO_BIN_EXE_redis-proxy"))
            .env_clear()
            .env("REDIS_URL", redis.url())
            .env("HTTP_LISTEN", format!("127.0.0.1:{http}"))
            .env("RESP_LISTEN", format!("127.0.0.1:{resp}"))
            .env("ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .envs(env.iter().copied());
        Proxy::spawned(c, http, resp, admin)
    };
    // The defaults fit in the unit's limit...
    let proxy = with_limit(limit, &[]);
    proxy.wait_ready();
    drop(proxy);
    // ...and it is no larger than they need: one file fewer, and the
    // default --max-clients, asked for explicitly, cannot be honoured.
    let mut short = with_limit(limit - 1, &[("MAX_CLIENTS", "10000")]);
    assert_eq!(short.wait_exit().code(), Some(2));
}

#[test]
fn the_haproxy_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy/haproxy.cfg");
    let bin = if Path::new("/usr/sbin/haproxy").exists() {
        "/usr/sbin/haproxy"
    } else {
        "haproxy"
    };
    let out = Command::new(bin)
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .expect("haproxy (make test installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("GET /readyz"), "checks /readyz");
}
