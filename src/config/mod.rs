//! Command line and environment. Every flag has an environment variable of
//! the same name in upper case; the original Flask service's `REDIS_HOST`,
//! `REDIS_PORT` and `REDIS_DB` are honoured when no `--redis-url` is given.
//! A bad value ends the process with status 2 and one line naming the flag.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

pub mod seeds;

/// A caching read proxy in front of Redis.
#[derive(Parser, Debug, Clone)]
#[command(name = "redis-proxy", version, about)]
pub struct Config {
    /// Backing Redis: `redis://[user:pass@]host:port[/db]`. Without it,
    /// REDIS_HOST / REDIS_PORT / REDIS_DB, then redis://127.0.0.1:6379/0.
    #[arg(long, env = "REDIS_URL", value_parser = parse_redis_url)]
    pub redis_url: Option<String>,

    /// Seed nodes of a Redis Cluster, instead of --redis-url:
    /// `redis[s]://[user:pass@]host:port[,host:port…]` or `host:port,…`.
    /// Clients still see a standalone Redis.
    #[arg(long, env = "REDIS_CLUSTER", value_parser = parse_seeds, conflicts_with = "redis_url")]
    pub redis_cluster: Option<seeds::Seeds>,

    /// HTTP front end address, or `off`.
    #[arg(long, env = "HTTP_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub http_listen: Listen,

    /// Redis-protocol front end address, or `off`.
    #[arg(long, env = "RESP_LISTEN", default_value = "127.0.0.1:6380", value_parser = parse_listen)]
    pub resp_listen: Listen,

    /// Admin address (the status page /, /status, /hotkeys, /metrics,
    /// /healthz, /readyz), or `off`.
    #[arg(long, env = "ADMIN_LISTEN", default_value = "127.0.0.1:9090", value_parser = parse_listen)]
    pub admin_listen: Listen,

    /// Global expiry of a cached key, counted from insertion (500ms, 60s, 2m).
    #[arg(long, env = "CACHE_TTL", default_value = "60s", value_parser = parse_duration)]
    pub cache_ttl: Duration,

    /// Maximum number of keys held; 0 turns caching off (every GET goes to
    /// Redis).
    #[arg(
        long,
        env = "CACHE_CAPACITY",
        default_value_t = 10_000,
        allow_negative_numbers = true
    )]
    pub cache_capacity: usize,

    /// Counters of the hot-key sketch (`/hotkeys`, `INFO hotkeys`, the
    /// status page), per worker thread: the most-read keys, in fixed
    /// memory; 0 turns it off; at most 1048576.
    #[arg(long, env = "HOTKEYS_CAPACITY", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub hotkeys_capacity: u32,

    /// Bound on the memory entries take: key + value + 72 bytes of overhead
    /// each (bytes, or with a KiB/MiB/GiB suffix).
    #[arg(long, env = "CACHE_MAX_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub cache_max_bytes: u64,

    /// Larger values are served but not cached (bytes, or with a suffix).
    #[arg(long, env = "CACHE_MAX_VALUE_BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    pub cache_max_value_bytes: u64,

    /// Client connections held at once, HTTP and RESP together. The
    /// open-file limit is raised to fit it; where the hard limit is lower,
    /// the default is lowered to fit (with a warning) and a figure given
    /// here exits 2.
    #[arg(long, env = "MAX_CLIENTS", default_value_t = 10_000, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_clients: u32,

    /// An idle RESP connection, or an HTTP keep-alive one waiting for its
    /// next request (or for its headers), is closed after this; 0 = never.
    #[arg(long, env = "CLIENT_IDLE_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub client_idle_timeout: Duration,

    /// A client whose unread replies pass this (bytes, or with a suffix), or
    /// do not drain for 30 s, is disconnected.
    #[arg(long, env = "CLIENT_OUTPUT_LIMIT", default_value = "64MiB", value_parser = parse_bytes)]
    pub client_output_limit: u64,

    /// Requests worked on at once, including their wait on Redis; 1 = one
    /// at a time, in arrival order.
    #[arg(long, env = "MAX_PARALLEL", default_value_t = 1024, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_parallel: u32,

    /// How the cache stays coherent with Redis: `tracking` (CLIENT TRACKING:
    /// Redis says which keys changed; needs Redis 7+) or `ttl` (expiry only).
    #[arg(long, env = "INVALIDATION", default_value = "tracking")]
    pub invalidation: Invalidation,

    /// With `tracking`: cached values are served only while a probe of the
    /// invalidation connection sent this recently has been answered, so a
    /// Redis gone silent (a partition, a freeze) is not trusted longer. In a
    /// cluster, per master; it must be shorter than cluster-node-timeout.
    #[arg(long, env = "TRACKING_LEASE", default_value = "1s", value_parser = parse_duration_nonzero)]
    pub tracking_lease: Duration,

    /// Time allowed for one Redis round trip.
    #[arg(long, env = "BACKEND_TIMEOUT", default_value = "1s", value_parser = parse_duration_nonzero)]
    pub backend_timeout: Duration,

    /// PEM file of the CA (or CAs) that signed a `rediss://` Redis's
    /// certificate, trusted instead of the system's roots.
    #[arg(long, env = "REDIS_CA_CERT")]
    pub redis_ca_cert: Option<PathBuf>,

    /// PEM certificate (chain) the proxy shows a `rediss://` Redis that
    /// asks for one (mutual TLS); needs --redis-client-key.
    #[arg(long, env = "REDIS_CLIENT_CERT")]
    pub redis_client_cert: Option<PathBuf>,

    /// PEM private key of --redis-client-cert.
    #[arg(long, env = "REDIS_CLIENT_KEY")]
    pub redis_client_key: Option<PathBuf>,

    /// Drain time on SIGTERM/SIGINT.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// On SIGTERM, /readyz answers 503 and the proxy goes on serving for
    /// this long before it closes its listeners, so a load balancer sees it
    /// leave before its connections are refused; 0 = close at once.
    /// SIGINT (Ctrl-C) does not wait.
    #[arg(long, env = "SHUTDOWN_DELAY", default_value = "2s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// Time allowed for a forwarded command's reply (0 = none). Blocking
    /// commands (BLPOP, XREAD BLOCK, WAIT…) have only their own timeout.
    #[arg(long, env = "FORWARD_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub forward_timeout: Duration,

    /// Backend connections held for one client each (a transaction or
    /// WATCH, a blocking command, subscriptions, WAIT); past it such a
    /// command gets an error and the client's connection stays usable.
    #[arg(long, env = "MAX_PINNED_CONNECTIONS", default_value_t = 1000)]
    pub max_pinned_connections: u32,

    /// Commands refused by name (`CONFIG|SET` for a subcommand), comma
    /// separated; '' denies nothing.
    #[arg(long, env = "DENY_COMMANDS", default_value = DEFAULT_DENY)]
    pub deny_commands: String,

    /// Enable /set/{key}/{value} and every RESP command that writes
    /// (SET, INCR, DEL, EVAL, FLUSHDB, MULTI/EXEC with writes…), forwarded
    /// to Redis.
    #[arg(long, env = "ALLOW_WRITES", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", value_parser = parse_switch)]
    pub allow_writes: bool,

    /// When set, RESP clients must AUTH and HTTP clients must send
    /// `Authorization: Bearer <password>`. The admin port never asks.
    #[arg(long, env = "CLIENT_PASSWORD", hide_env_values = true, value_parser = parse_password)]
    pub client_password: Option<String>,

    /// Tokio worker threads. Default: the number of cores.
    #[arg(long, env = "THREADS", allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,

    /// Log format: text or json. The level comes from RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Whether `--max-clients` (or MAX_CLIENTS) was given, rather than its
    /// default: only a figure the user chose is worth refusing to start
    /// over (see `server::fit_open_files`).
    #[arg(skip)]
    pub max_clients_given: bool,
}

/// Administrative commands refused unless `--deny-commands` says otherwise.
pub const DEFAULT_DENY: &str = "SHUTDOWN,DEBUG,MONITOR,SYNC,PSYNC,REPLICAOF,SLAVEOF,FAILOVER,MODULE,SAVE,\
BGSAVE,BGREWRITEAOF,CLUSTER,CONFIG|SET,CONFIG|REWRITE,CONFIG|RESETSTAT,ACL|SETUSER,ACL|DELUSER,ACL|LOAD,\
ACL|SAVE,CLIENT|KILL,CLIENT|PAUSE,CLIENT|UNPAUSE,SCRIPT|KILL,FUNCTION|KILL";

/// How the cache learns that Redis changed.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// One RESP3 connection with `CLIENT TRACKING on`: Redis pushes the
    /// names of changed keys, and the proxy drops them.
    Tracking,
    /// Nothing is pushed: a cached value lives until `--cache-ttl` (or its
    /// key's own expiry in Redis).
    Ttl,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A listen address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Off,
    On(SocketAddr),
}

impl Config {
    /// Parses the process arguments and environment; on a bad value prints
    /// one line and exits 2 (help and version exit 0 as usual).
    pub fn from_env_or_exit() -> Config {
        use clap::{CommandFactory, FromArgMatches};
        let parsed = Config::command().try_get_matches().and_then(|matches| {
            let mut config = Config::from_arg_matches(&matches)?;
            config.max_clients_given =
                matches.value_source("max_clients") != Some(clap::parser::ValueSource::DefaultValue);
            Ok(config)
        });
        match parsed {
            Ok(mut config) => match config.resolve_redis_url().and_then(|()| config.check_listeners()) {
                Ok(()) => config,
                Err(msg) => exit_bad_value(&msg),
            },
            Err(err) if !err.use_stderr() => err.exit(),
            Err(err) => {
                let text = err.to_string();
                let line = text
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("bad arguments");
                exit_bad_value(line.trim_start_matches("error: "))
            }
        }
    }

    /// At least one front end: a proxy that listens nowhere serves nothing.
    pub fn check_listeners(&self) -> Result<(), String> {
        let off = [self.http_listen, self.resp_listen, self.admin_listen]
            .iter()
            .all(|l| *l == Listen::Off);
        if off {
            return Err(
                "--http-listen, --resp-listen and --admin-listen are all off: nothing would be served".into(),
            );
        }
        Ok(())
    }

    /// Fills `redis_url` from the Flask-era variables when it was not given,
    /// and checks the TLS files against it.
    pub fn resolve_redis_url(&mut self) -> Result<(), String> {
        if self.redis_cluster.is_some() {
            for var in ["REDIS_HOST", "REDIS_PORT"] {
                if std::env::var(var).is_ok_and(|v| !v.is_empty()) {
                    return Err(format!("--redis-cluster cannot be given together with {var}"));
                }
            }
            return self.redis_tls().map(drop);
        }
        if self.redis_url.is_none() {
            let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
            self.redis_url = Some(flask_url(var("REDIS_HOST"), var("REDIS_PORT"), var("REDIS_DB"))?);
        }
        self.redis_tls().map(drop)
    }

    /// The certificates for a `rediss://` URL, read from the files the
    /// `--redis-*-cert`/`-key` flags name: `None` when there are none to
    /// give. An error names the flag: a file that cannot be read or holds
    /// no PEM certificate (or key), or files given for a `redis://` URL,
    /// which would otherwise be ignored in silence.
    pub fn redis_tls(&self) -> Result<Option<redis::TlsCertificates>, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let files = [
            ("--redis-ca-cert", &self.redis_ca_cert),
            ("--redis-client-cert", &self.redis_client_cert),
            ("--redis-client-key", &self.redis_client_key),
        ];
        let Some((flag, _)) = files.iter().find(|(_, f)| f.is_some()) else {
            return Ok(None);
        };
        let tls = match &self.redis_cluster {
            Some(seeds) => seeds.tls,
            None => self.redis_url().starts_with("rediss://"),
        };
        if !tls {
            return Err(format!("{flag} is for TLS: it needs a rediss:// URL"));
        }
        let read = |flag: &str, path: &Path| {
            std::fs::read(path).map_err(|e| format!("{flag}: cannot read {}: {e}", path.display()))
        };
        let certificates = |flag: &str, path: &Path| {
            let pem = read(flag, path)?;
            match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
                Ok(certs) if !certs.is_empty() => Ok(pem),
                Ok(_) => Err(format!("{flag}: no PEM certificate in {}", path.display())),
                Err(e) => Err(format!("{flag}: {}: {e}", path.display())),
            }
        };
        let root_cert = match &self.redis_ca_cert {
            Some(path) => Some(certificates("--redis-ca-cert", path)?),
            None => None,
        };
        let client_tls = match (&self.redis_client_cert, &self.redis_client_key) {
            (Some(cert), Some(key)) => {
                let client_cert = certificates("--redis-client-cert", cert)?;
                let client_key = read("--redis-client-key", key)?;
                PrivateKeyDer::from_pem_slice(&client_key)
                    .map_err(|e| format!("--redis-client-key: {}: {e}", key.display()))?;
                Some(redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                })
            }
            (None, None) => None,
            _ => return Err("--redis-client-cert and --redis-client-key go together".into()),
        };
        Ok(Some(redis::TlsCertificates {
            client_tls,
            root_cert,
        }))
    }

    /// Every flag and the value in force, as the status page shows them:
    /// passwords hidden, the open-file fitted `--max-clients` as run.
    pub fn shown(&self) -> Vec<(&'static str, String)> {
        let listen = |l: &Listen| match l {
            Listen::Off => "off".to_string(),
            Listen::On(a) => a.to_string(),
        };
        let time = |d: Duration| humantime::format_duration(d).to_string();
        let path = |p: &Option<PathBuf>| p.as_ref().map_or("none".into(), |p| p.display().to_string());
        vec![
            (
                "--redis-url",
                match &self.redis_cluster {
                    Some(_) => "none".into(),
                    None => redacted_url(self.redis_url()),
                },
            ),
            (
                "--redis-cluster",
                self.redis_cluster
                    .as_ref()
                    .map_or("none".into(), |s| s.redacted()),
            ),
            ("--http-listen", listen(&self.http_listen)),
            ("--resp-listen", listen(&self.resp_listen)),
            ("--admin-listen", listen(&self.admin_listen)),
            ("--cache-ttl", time(self.cache_ttl)),
            ("--cache-capacity", self.cache_capacity.to_string()),
            ("--hotkeys-capacity", self.hotkeys_capacity.to_string()),
            ("--cache-max-bytes", self.cache_max_bytes.to_string()),
            ("--cache-max-value-bytes", self.cache_max_value_bytes.to_string()),
            ("--max-clients", self.max_clients.to_string()),
            ("--client-idle-timeout", time(self.client_idle_timeout)),
            ("--client-output-limit", self.client_output_limit.to_string()),
            ("--max-parallel", self.max_parallel.to_string()),
            (
                "--invalidation",
                format!("{:?}", self.invalidation).to_lowercase(),
            ),
            ("--tracking-lease", time(self.tracking_lease)),
            ("--backend-timeout", time(self.backend_timeout)),
            ("--redis-ca-cert", path(&self.redis_ca_cert)),
            ("--redis-client-cert", path(&self.redis_client_cert)),
            ("--redis-client-key", path(&self.redis_client_key)),
            ("--shutdown-timeout", time(self.shutdown_timeout)),
            ("--shutdown-delay", time(self.shutdown_delay)),
            ("--forward-timeout", time(self.forward_timeout)),
            (
                "--max-pinned-connections",
                self.max_pinned_connections.to_string(),
            ),
            ("--deny-commands", self.deny_commands.clone()),
            ("--allow-writes", self.allow_writes.to_string()),
            (
                "--client-password",
                if self.client_password.is_some() {
                    "(set)"
                } else {
                    "none"
                }
                .into(),
            ),
            ("--threads", self.threads().to_string()),
            ("--log-format", format!("{:?}", self.log_format).to_lowercase()),
        ]
    }

    pub fn redis_url(&self) -> &str {
        self.redis_url.as_deref().unwrap_or("redis://127.0.0.1:6379/0")
    }

    /// The tracking lease, or None when nothing needs one (`ttl` mode).
    pub fn lease(&self) -> Option<Duration> {
        (self.invalidation == Invalidation::Tracking).then_some(self.tracking_lease)
    }

    pub fn max_parallel(&self) -> usize {
        self.max_parallel as usize
    }

    pub fn threads(&self) -> usize {
        self.threads.map(|n| n as usize).unwrap_or_else(cores)
    }
}

/// `url` with any user and password replaced by `***`.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

fn parse_seeds(s: &str) -> Result<seeds::Seeds, String> {
    seeds::Seeds::parse(s)
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn exit_bad_value(msg: &str) -> ! {
    eprintln!("redis-proxy: {msg}");
    std::process::exit(2)
}

fn flask_url(host: Option<String>, port: Option<String>, db: Option<String>) -> Result<String, String> {
    let host = host.unwrap_or_else(|| "127.0.0.1".to_string());
    if host.is_empty() || host.contains(['/', '@', ' ', '?', '#']) {
        return Err(format!("invalid value '{host}' for REDIS_HOST: not a host name"));
    }
    let port = match port {
        None => 6379,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("invalid value '{p}' for REDIS_PORT: expected a port 1-65535"))?,
    };
    let db = match db {
        None => 0,
        Some(d) => d
            .parse::<u32>()
            .map_err(|_| format!("invalid value '{d}' for REDIS_DB: expected a database number"))?,
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("redis://{host}:{port}/{db}");
    parse_redis_url(&url).map_err(|e| format!("invalid value for REDIS_HOST: {e}"))
}

fn parse_redis_url(s: &str) -> Result<String, String> {
    use redis::IntoConnectionInfo;
    let scheme = s.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("redis" | "rediss") => {}
        Some(other) => return Err(format!("scheme '{other}' is not redis:// or rediss://")),
        None => return Err("expected redis://host:port[/db] or rediss://…".into()),
    }
    let info = s.into_connection_info().map_err(|e| e.to_string())?;
    if let redis::ConnectionAddr::TcpTls { insecure: true, .. } = info.addr() {
        return Err("rediss://…#insecure (no certificate check) is not supported: \
                    give the CA with --redis-ca-cert"
            .into());
    }
    Ok(s.to_string())
}

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Listen::Off);
    }
    s.parse::<SocketAddr>()
        .map(Listen::On)
        .map_err(|_| "expected host:port (an IP address and a port) or 'off'".into())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 60s, 2m)"))
}

fn parse_duration_nonzero(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// `1048576`, `512KiB`, `64MiB`, `1GiB` (also `KB`/`MB`/`GB` as powers of 1024,
/// as Redis's own config does).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| "expected a number of bytes, e.g. 64MiB".to_string())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit '{other}' (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| "too large".to_string())
}

fn parse_password(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty (unset it to turn authentication off)".into());
    }
    Ok(s.to_string())
}

fn parse_switch(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true|false|1|0|yes|no".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_page_shows_every_flag() {
        use clap::CommandFactory;
        let config = Config::try_parse_from(["redis-proxy", "--client-password", "sesame"]).unwrap();
        let shown: Vec<&str> = config.shown().iter().map(|f| f.0).collect();
        for arg in Config::command().get_arguments() {
            if let Some(long) = arg.get_long() {
                assert!(
                    shown.contains(&format!("--{long}").as_str()),
                    "--{long} is not shown"
                );
            }
        }
        assert!(!format!("{:?}", config.shown()).contains("sesame"));
    }

    #[test]
    fn bytes_with_units() {
        assert_eq!(parse_bytes("100"), Ok(100));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("MiB").is_err());
    }

    #[test]
    fn flask_variables() {
        assert_eq!(flask_url(None, None, None).unwrap(), "redis://127.0.0.1:6379/0");
        assert_eq!(
            flask_url(Some("cache".into()), Some("6390".into()), Some("2".into())).unwrap(),
            "redis://cache:6390/2"
        );
        assert!(
            flask_url(None, Some("x".into()), None)
                .unwrap_err()
                .contains("REDIS_PORT")
        );
        assert!(
            flask_url(None, None, Some("-1".into()))
                .unwrap_err()
                .contains("REDIS_DB")
        );
        assert!(
            flask_url(Some("a/b".into()), None, None)
                .unwrap_err()
                .contains("REDIS_HOST")
        );
    }

    #[test]
    fn redis_urls() {
        assert!(parse_redis_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(parse_redis_url("redis://:pw@localhost:1/3").is_ok());
        assert!(parse_redis_url("http://localhost").is_err());
        assert!(parse_redis_url("rediss://localhost").is_ok());
        assert!(parse_redis_url("rediss://localhost/#insecure").is_err());
        assert!(parse_redis_url("localhost:6379").is_err());
    }
}
