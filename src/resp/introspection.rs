//! What a client may ask about the server: INFO, CONFIG GET, COMMAND.
//! Enough for redis-cli, redis-benchmark and clients that look before they
//! leap; nothing here changes behaviour.

use bytes::Bytes;

use super::command::SPECS;
use super::encode::Reply;
use super::{Answer, REDIS_VERSION, ok, refused};
use crate::app::App;
use crate::config::Invalidation;
use crate::error::Error;
use crate::metrics::FrontendLabels;

/// What CONFIG GET reports.
const CONFIG: &[(&str, &str)] = &[
    ("save", ""),
    ("appendonly", "no"),
    ("databases", "1"),
    ("maxmemory", "0"),
];

/// `CONFIG GET pattern …` (patterns: a name, or `*`).
pub fn config(args: &[Bytes]) -> Answer {
    if !(args[0].eq_ignore_ascii_case(b"GET") && args.len() >= 2) {
        return refused(&Error::redis("ERR", "only CONFIG GET is served by this proxy"));
    }
    let mut pairs = Vec::new();
    for pattern in &args[1..] {
        for (k, v) in CONFIG {
            if &pattern[..] == b"*" || pattern.eq_ignore_ascii_case(k.as_bytes()) {
                pairs.push((Reply::bulk(*k), Reply::bulk(*v)));
            }
        }
    }
    ok(Reply::Map(pairs))
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND DOCS`, from the command table.
pub fn command(sub: Option<&[u8]>) -> Answer {
    match sub {
        None => ok(Reply::Array(
            SPECS
                .iter()
                .map(|s| {
                    let (first, last, step) = s.keys;
                    Reply::Array(vec![
                        Reply::bulk(s.name),
                        Reply::Int(s.arity),
                        Reply::Array(Vec::new()),
                        Reply::Int(first),
                        Reply::Int(last),
                        Reply::Int(step),
                    ])
                })
                .collect(),
        )),
        Some(sub) if sub.eq_ignore_ascii_case(b"COUNT") => ok(Reply::Int(SPECS.len() as i64)),
        Some(sub) if sub.eq_ignore_ascii_case(b"DOCS") => ok(Reply::Map(Vec::new())),
        Some(_) => refused(&Error::redis(
            "ERR",
            "only COMMAND, COMMAND COUNT and COMMAND DOCS are served by this proxy",
        )),
    }
}

/// `INFO [section]`: `# Server`, `# Clients`, `# Proxy`.
pub fn info(app: &App, section: Option<&Bytes>) -> Answer {
    let everything = |w: &Bytes| {
        ["all", "everything", "default"]
            .iter()
            .any(|a| w.eq_ignore_ascii_case(a.as_bytes()))
    };
    let want = |s: &str| section.is_none_or(|w| w.eq_ignore_ascii_case(s.as_bytes()) || everything(w));
    let mut out = String::new();
    if want("server") {
        out.push_str(&format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\n\
             proxy:redis-proxy\r\nproxy_version:{}\r\nprocess_id:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            app.started.elapsed().as_secs(),
        ));
    }
    if want("clients") {
        let open: i64 = ["http", "resp"]
            .iter()
            .map(|f| {
                let labels = FrontendLabels { frontend: f };
                app.metrics.connections.get_or_create(&labels).get()
            })
            .sum();
        out.push_str(&format!("# Clients\r\nconnected_clients:{open}\r\n\r\n"));
    }
    if want("proxy") {
        out.push_str(&proxy_section(app));
    }
    ok(Reply::Bulk(out.into()))
}

fn proxy_section(app: &App) -> String {
    let m = &app.metrics;
    let fields: [(&str, String); 12] = [
        ("cache_hits", m.hits.get().to_string()),
        ("cache_misses", m.misses.get().to_string()),
        ("cache_entries", m.entries.get().to_string()),
        ("cache_bytes", m.bytes.get().to_string()),
        ("cache_evictions", m.evictions.get().to_string()),
        ("cache_expirations", m.expirations.get().to_string()),
        ("singleflight_joins", m.singleflight_joins.get().to_string()),
        (
            "backend",
            if app.backend.is_ready() { "up" } else { "down" }.into(),
        ),
        (
            "invalidation_mode",
            match app.backend.mode() {
                Invalidation::Tracking => "tracking",
                Invalidation::Ttl => "ttl",
            }
            .into(),
        ),
        (
            "tracking",
            if m.tracking.get() == 1 { "on" } else { "off" }.into(),
        ),
        ("invalidations", m.invalidations.get().to_string()),
        ("cache_flushes", m.flushes().to_string()),
    ];
    let mut out = String::from("# Proxy\r\n");
    for (name, value) in fields {
        out.push_str(&format!("{name}:{value}\r\n"));
    }
    out
}
