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
    let wanted = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|s| {
                ["all", "everything", "default", name]
                    .iter()
                    .any(|w| s.eq_ignore_ascii_case(w.as_bytes()))
            })
    };
    if wanted("proxy") {
        if !text.is_empty() && !text.ends_with("\r\n\r\n") {
            text.push_str("\r\n");
        }
        text.push_str(&proxy_section(app));
    }
    ok(Reply::Verbatim(text.into()))
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
