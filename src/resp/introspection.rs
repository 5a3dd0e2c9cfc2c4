//! `INFO`: the backend's, so `redis_version`, `arch_bits` and the rest are
//! the backend's truth, with a `# Proxy` section added. (COMMAND and
//! CONFIG GET are forwarded: their replies are the backend's too.)

use bytes::{Bytes, BytesMut};

use super::encode::Reply;
use super::{Answer, Session, ok, refused};
use crate::app::App;
use crate::config::Invalidation;
use crate::error::Error;
use crate::forward::pack;

/// `INFO [section …]`.
pub async fn info(app: &App, session: &Session, sections: &[Bytes]) -> Answer {
    // The proxy's own section needs no Redis.
    if !sections.is_empty() && sections.iter().all(|s| s.eq_ignore_ascii_case(b"hotkeys")) {
        return ok(Reply::Verbatim(hotkeys_section(app).into()));
    }
    let mut args: Vec<Bytes> = vec![Bytes::from_static(b"INFO")];
    args.extend(sections.iter().cloned());
    let mut packed = BytesMut::new();
    pack(&args, &mut packed);
    let reply = match app
        .forwarder
        .send(session.protocol(), session.db, packed.freeze(), 1)
        .await
    {
        Ok(mut replies) => replies.pop().unwrap_or_default(),
        Err(e) => return refused(&e),
    };
    let Ok(value) = redis::parse_redis_value(&reply) else {
        return refused(&Error::Reply("INFO: a reply that is not RESP".into()));
    };
    let mut text = match value {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        redis::Value::VerbatimString { text, .. } => text,
        redis::Value::ServerError(e) => {
            let line = match e.details() {
                Some(d) => format!("{} {d}", e.code()),
                None => e.code().to_string(),
            };
            return (
                Reply::error(line),
                crate::metrics::Outcome::Ok,
                super::Then::Continue,
            );
        }
        other => return refused(&Error::Reply(format!("INFO answered {other:?}").into())),
    };
    if let Some(topology) = app.forwarder.topology() {
        // To clients the proxy is a standalone Redis.
        text = text.replace("cluster_enabled:1", "cluster_enabled:0");
        if text.contains("# Keyspace") {
            let masters = topology.map().masters().to_vec();
            let mut all = Vec::new();
            for master in masters {
                let mut packed = BytesMut::new();
                pack(&[&b"INFO"[..], b"keyspace"], &mut packed);
                let node = crate::forward::Node::from(master.as_str());
                match app
                    .forwarder
                    .send_to(&node, session.protocol(), 0, packed.freeze(), 1)
                    .await
                {
                    Ok(replies) => {
                        all.extend(replies.iter().map(|r| String::from_utf8_lossy(r).into_owned()))
                    }
                    Err(e) => return refused(&e),
                }
            }
            text = with_keyspace(&text, &summed_keyspace(&all));
        }
    }
    let wanted = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|s| {
                ["all", "everything", "default", name]
                    .iter()
                    .any(|w| s.eq_ignore_ascii_case(w.as_bytes()))
            })
    };
    if wanted("proxy") {
        push_section(&mut text, &proxy_section(app));
    }
    // Not in the default INFO: only when asked for, by name or with all.
    let asked = |names: &[&str]| {
        sections
            .iter()
            .any(|s| names.iter().any(|w| s.eq_ignore_ascii_case(w.as_bytes())))
    };
    if asked(&["hotkeys", "all", "everything"]) {
        push_section(&mut text, &hotkeys_section(app));
    }
    ok(Reply::Verbatim(text.into()))
}

/// `section` after `text`, an empty line between them as INFO has it.
fn push_section(text: &mut String, section: &str) {
    if !text.is_empty() && !text.ends_with("\r\n\r\n") {
        text.push_str("\r\n");
    }
    text.push_str(section);
}

/// Keys `INFO hotkeys` lists.
const INFO_HOT_KEYS: usize = 16;

/// `# Hotkeys`: the sketch's capacity, then one line per key, the most
/// read first: `hotkey_0:reads=…,reads_error=…,hits=…,minute_reads=…,
/// minute_hits=…,key="…"`. The key comes last and quoted as redis-cli
/// quotes (`\"`, `\\`, `\n`, `\xNN`), so any byte in it stays on its line
/// and a parser can take the rest of the line.
fn hotkeys_section(app: &App) -> String {
    let mut out = String::from("# Hotkeys\r\n");
    match app.local.hot_keys(INFO_HOT_KEYS) {
        None => out.push_str("hotkeys_capacity:0\r\n"),
        Some((keys, capacity)) => {
            out.push_str(&format!("hotkeys_capacity:{capacity}\r\n"));
            for (i, k) in keys.iter().enumerate() {
                out.push_str(&format!(
                    "hotkey_{i}:reads={},reads_error={},hits={},minute_reads={},minute_hits={},{}key={}\r\n",
                    k.reads,
                    k.error,
                    k.hits,
                    k.minute_reads,
                    k.minute_hits,
                    if k.len > k.key.len() {
                        format!("length={},truncated=1,", k.len)
                    } else {
                        String::new()
                    },
                    quoted(&k.key)
                ));
            }
        }
    }
    out
}

/// `bytes` as redis-cli prints a string: in double quotes, with `"`, `\`
/// and control characters escaped, and other non-printable bytes as `\xNN`.
fn quoted(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

fn proxy_section(app: &App) -> String {
    let m = &app.metrics;
    let fields: [(&str, String); 16] = [
        ("proxy", "redis-proxy".into()),
        ("proxy_version", env!("CARGO_PKG_VERSION").into()),
        ("proxy_run_id", app.run_id.clone()),
        ("cache_hits", m.hits.get().to_string()),
        ("cache_misses", m.misses.get().to_string()),
        ("cache_entries", m.entries.get().to_string()),
        ("cache_bytes", m.bytes.get().to_string()),
        ("cache_evictions", m.evictions.get().to_string()),
        ("cache_expirations", m.expirations.get().to_string()),
        ("singleflight_joins", m.singleflight_joins.get().to_string()),
        ("backend", if app.reads.is_ready() { "up" } else { "down" }.into()),
        (
            "invalidation_mode",
            match app.reads.mode() {
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
        ("pinned_connections", m.pinned.get().to_string()),
    ];
    let mut out = String::from("# Proxy\r\n");
    for (name, value) in fields {
        out.push_str(&format!("{name}:{value}\r\n"));
    }
    out
}

/// The `dbN:keys=…,expires=…,avg_ttl=…` lines of several masters' INFO
/// keyspace replies, added up (avg_ttl weighted by expires).
fn summed_keyspace(replies: &[String]) -> String {
    let mut dbs: std::collections::BTreeMap<u32, (u64, u64, u128)> = Default::default();
    for reply in replies {
        for line in reply.lines() {
            let Some((db, fields)) = line.trim().split_once(':') else {
                continue;
            };
            let Some(n) = db.strip_prefix("db").and_then(|n| n.parse().ok()) else {
                continue;
            };
            let field = |name: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let (keys, expires, ttl) = (field("keys"), field("expires"), field("avg_ttl"));
            let e = dbs.entry(n).or_default();
            e.0 += keys;
            e.1 += expires;
            e.2 += ttl as u128 * expires as u128;
        }
    }
    dbs.into_iter()
        .map(|(n, (keys, expires, ttl))| {
            let avg = if expires == 0 { 0 } else { ttl / expires as u128 };
            format!("db{n}:keys={keys},expires={expires},avg_ttl={avg}\r\n")
        })
        .collect()
}

/// `info` with its Keyspace section's lines replaced by `keyspace`.
fn with_keyspace(info: &str, keyspace: &str) -> String {
    let Some(at) = info.find("# Keyspace") else {
        return info.to_string();
    };
    let body = at + info[at..].find('\n').map_or(info.len() - at, |i| i + 1);
    let end = info[body..].find("\r\n\r\n").map_or(info.len(), |i| body + i + 2);
    let end = if info[body..].starts_with("\r\n") {
        body
    } else {
        end
    };
    format!("{}{}{}", &info[..body], keyspace, &info[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_quoted_onto_one_line() {
        assert_eq!(quoted(b"user:1"), r#""user:1""#);
        assert_eq!(quoted(b"a\"b\\c\r\n\xff,d=e"), r#""a\"b\\c\r\n\xff,d=e""#);
    }

    #[test]
    fn keyspaces_add_up() {
        let a = "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=1000\r\n".to_string();
        let b = "# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=3000\r\n".to_string();
        let c = "# Keyspace\r\n".to_string();
        let sum = summed_keyspace(&[a, b, c]);
        assert_eq!(sum, "db0:keys=5,expires=2,avg_ttl=2000\r\n");
        let info = "# Server\r\nx:1\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=1000\r\n";
        assert_eq!(
            with_keyspace(info, &sum),
            "# Server\r\nx:1\r\n\r\n# Keyspace\r\ndb0:keys=5,expires=2,avg_ttl=2000\r\n"
        );
        let then = "# Keyspace\r\ndb0:keys=3\r\n\r\n# Proxy\r\n";
        assert_eq!(
            with_keyspace(then, "db0:keys=9\r\n"),
            "# Keyspace\r\ndb0:keys=9\r\n\r\n# Proxy\r\n"
        );
        let empty = "# Keyspace\r\n";
        assert_eq!(
            with_keyspace(empty, "db0:keys=1\r\n"),
            "# Keyspace\r\ndb0:keys=1\r\n"
        );
    }
}
