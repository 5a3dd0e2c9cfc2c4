//! The connection commands, answered locally: PING, HELLO, AUTH, SELECT,
//! RESET, and CLIENT SETNAME|GETNAME|ID|SETINFO|INFO (ECHO and QUIT need no
//! code of their own). HELLO reports the backend's version; SELECT checks
//! the database exists in Redis.

use bytes::Bytes;

use super::command::printable;
use super::encode::{Proto, Reply};
use super::{Answer, Session, ok, refused};
use crate::app::App;
use crate::error::Error;

const WRONGPASS: &str = "invalid username-password pair or user is disabled.";

pub fn ping(message: Option<Bytes>) -> Answer {
    ok(message.map_or(Reply::simple("PONG"), Reply::Bulk))
}

/// `SELECT n`: later commands go to database n, over the connections
/// shared by the clients on it (GETs there are forwarded, not cached).
pub async fn select(app: &App, session: &mut Session, db: &[u8]) -> Answer {
    let Some(n) = std::str::from_utf8(db).ok().and_then(|s| s.parse::<i64>().ok()) else {
        return refused(&Error::redis("ERR", "value is not an integer or out of range"));
    };
    if n != app.forwarder.default_db()
        && let Err(e) = app.forwarder.check_db(session.protocol(), n).await
    {
        return refused(&e);
    }
    session.db = n;
    ok(Reply::ok())
}

/// `RESET`: as a new connection (its pinned connection closed).
pub fn reset(app: &App, session: &mut Session) -> Answer {
    session.pin = None;
    session.queued = None;
    session.watch_lost = false;
    session.proto = Proto::Resp2;
    session.db = app.forwarder.default_db();
    session.name = None;
    session.authed = !app.requires_password();
    ok(Reply::simple("RESET"))
}

/// `AUTH [user] password` against `--client-password`; the only user is
/// `default`.
pub fn auth(app: &App, session: &mut Session, user: Option<&[u8]>, password: &[u8]) -> Answer {
    if !app.requires_password() {
        return refused(&Error::redis(
            "ERR",
            "AUTH <password> called without any password configured for the default user. Are \
             you sure your configuration is correct?",
        ));
    }
    if user.unwrap_or(b"default") == b"default" && app.password_matches(password) {
        session.authed = true;
        ok(Reply::ok())
    } else {
        refused(&Error::redis("WRONGPASS", WRONGPASS))
    }
}

/// `HELLO [2|3] [AUTH user pass] [SETNAME name]`.
pub async fn hello(app: &App, session: &mut Session, args: &[Bytes]) -> Answer {
    let mut proto = session.proto;
    let mut rest = args;
    if let Some(v) = args.first() {
        proto = match &v[..] {
            b"2" => Proto::Resp2,
            b"3" => Proto::Resp3,
            _ => return refused(&Error::redis("NOPROTO", "unsupported protocol version")),
        };
        rest = &args[1..];
    }
    let mut name = None;
    let mut authed = session.authed;
    while let Some(opt) = rest.first() {
        if opt.eq_ignore_ascii_case(b"AUTH") && rest.len() >= 3 {
            let accepted =
                !app.requires_password() || (&rest[1][..] == b"default" && app.password_matches(&rest[2]));
            if !accepted {
                return refused(&Error::redis("WRONGPASS", WRONGPASS));
            }
            authed = true;
            rest = &rest[3..];
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && rest.len() >= 2 {
            name = Some(Bytes::copy_from_slice(&rest[1]));
            rest = &rest[2..];
        } else {
            let message = format!("Syntax error in HELLO option '{}'", printable(opt));
            return refused(&Error::redis("ERR", message));
        }
    }
    if !authed {
        return refused(&Error::redis(
            "NOAUTH",
            "HELLO must be called with the client already authenticated, otherwise the HELLO \
             <proto> AUTH <user> <pass> option can be used to authenticate the client and select \
             the RESP protocol version at the same time",
        ));
    }
    if proto != session.proto && session.pin.is_some() {
        return refused(&Error::redis(
            "ERR",
            "HELLO cannot change the protocol through this proxy while a transaction, WATCH, \
             subscription or WAIT holds a connection",
        ));
    }
    session.proto = proto;
    session.authed = authed;
    if name.is_some() {
        session.name = name;
    }
    let proto_num = if proto == Proto::Resp3 { 3 } else { 2 };
    // The backend's version: clients enable features by it. Connecting
    // reads it, if no connection has yet.
    if app.forwarder.server().version.is_empty() {
        let _ = app.forwarder.table().await;
    }
    let server = app.forwarder.server();
    let version = if server.version.is_empty() {
        "unknown".to_string()
    } else {
        server.version
    };
    ok(Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk(version)),
        (Reply::bulk("proto"), Reply::Int(proto_num)),
        (Reply::bulk("id"), Reply::Int(session.id as i64)),
        (Reply::bulk("mode"), Reply::bulk("standalone")),
        (Reply::bulk("role"), Reply::bulk("master")),
        (Reply::bulk("modules"), Reply::Array(Vec::new())),
    ]))
}

/// `CLIENT SETNAME|GETNAME|SETINFO|ID|INFO`; `CLIENT TRACKING` is refused.
pub fn client(session: &mut Session, args: &[Bytes]) -> Answer {
    let sub = &args[0];
    let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
    match args.len() {
        2 if is("SETNAME") => {
            if args[1].iter().any(|&b| b <= b' ' || b > b'~') {
                return refused(&Error::redis(
                    "ERR",
                    "Client names cannot contain spaces, newlines or special characters.",
                ));
            }
            session.name = (!args[1].is_empty()).then(|| Bytes::copy_from_slice(&args[1]));
            ok(Reply::ok())
        }
        1 if is("GETNAME") => ok(session.name.clone().map_or(Reply::Null, Reply::Bulk)),
        3 if is("SETINFO") => ok(Reply::ok()),
        1 if is("ID") => ok(Reply::Int(session.id as i64)),
        1 if is("INFO") => {
            let proto = if session.proto == Proto::Resp3 { 3 } else { 2 };
            let name = session.name.as_deref().map(printable).unwrap_or_default();
            let (multi, watch) = session.pin.as_ref().map_or((-1, 0), |p| p.info());
            ok(Reply::Bulk(
                format!(
                    "id={} name={name} db={} multi={multi} watch={watch} resp={proto} lib-name= lib-ver=\n",
                    session.id, session.db
                )
                .into(),
            ))
        }
        _ if is("TRACKING") => refused(&Error::redis(
            "ERR",
            "CLIENT TRACKING is not supported through this proxy",
        )),
        _ => refused(&Error::redis(
            "ERR",
            format!(
                "unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
                printable(sub)
            ),
        )),
    }
}
