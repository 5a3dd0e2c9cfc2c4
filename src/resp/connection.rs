//! The connection commands, answered locally: PING, HELLO, AUTH, SELECT,
//! CLIENT (ECHO and QUIT need no code of their own).

use bytes::Bytes;

use super::command::printable;
use super::encode::{Proto, Reply};
use super::{Answer, REDIS_VERSION, Session, ok, refused};
use crate::app::App;
use crate::error::Error;

const WRONGPASS: &str = "invalid username-password pair or user is disabled.";

pub fn ping(message: Option<Bytes>) -> Answer {
    ok(message.map_or(Reply::simple("PONG"), Reply::Bulk))
}

pub fn select(db: &[u8]) -> Answer {
    if db == b"0" {
        ok(Reply::ok())
    } else {
        refused(&Error::redis(
            "ERR",
            "DB index is out of range (this proxy serves database 0 of its Redis)",
        ))
    }
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
pub fn hello(app: &App, session: &mut Session, args: &[Bytes]) -> Answer {
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
    session.proto = proto;
    session.authed = authed;
    if name.is_some() {
        session.name = name;
    }
    let proto_num = if proto == Proto::Resp3 { 3 } else { 2 };
    ok(Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk(REDIS_VERSION)),
        (Reply::bulk("proto"), Reply::Int(proto_num)),
        (Reply::bulk("id"), Reply::Int(session.id as i64)),
        (Reply::bulk("mode"), Reply::bulk("standalone")),
        (Reply::bulk("role"), Reply::bulk("master")),
        (Reply::bulk("modules"), Reply::Array(Vec::new())),
    ]))
}

/// `CLIENT SETNAME|GETNAME|SETINFO|ID`.
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
        _ => refused(&Error::redis(
            "ERR",
            format!(
                "unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
                printable(sub)
            ),
        )),
    }
}
