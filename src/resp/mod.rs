//! The Redis-protocol front end: any Redis client, pipelined, through the
//! same [`Lookup`](crate::lookup::Lookup) as HTTP.
//!
//! The connection loop reads into a buffer, parses every complete command in
//! it, answers them in order into one output buffer and writes that once
//! (pipelining). A malformed frame gets `-ERR Protocol error: …` and the
//! connection is closed, as Redis does.

pub mod encode;
pub mod parse;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::SemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::config::Invalidation;
use crate::error::Error;
use crate::lookup::{Found, Source};
use crate::metrics::{FrontendLabels, Outcome};
use crate::server::App;
use encode::{Proto, Reply, encode};
use parse::{Request, parse};

/// What HELLO and INFO say: clients check it to enable features.
pub const REDIS_VERSION: &str = "7.4.0";

/// Per-connection state.
struct Session {
    id: u64,
    proto: Proto,
    authed: bool,
    name: Option<Bytes>,
}

/// What a command asks of the connection after its reply.
#[derive(PartialEq, Eq)]
enum Then {
    Continue,
    /// The output buffer is full: write it, then answer what is still
    /// buffered before reading more.
    Flush,
    Close,
}

/// Unanswered input a client may have buffered, as Redis's
/// client-query-buffer-limit: beyond it the connection is closed.
const MAX_INPUT: usize = 1024 * 1024 * 1024;

/// Output written before answering more, so that a client pipelining
/// requests for large values without reading cannot grow it without bound.
const FLUSH_AT: usize = 64 * 1024;

/// Serves one client until QUIT, EOF, a protocol error or shutdown.
pub async fn serve(app: Arc<App>, mut stream: TcpStream, shutdown: CancellationToken) {
    let mut session = Session {
        id: app.next_client_id(),
        proto: Proto::Resp2,
        authed: app.client_password.is_none(),
        name: None,
    };
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut pending = Pending::default();
    let mut output = BytesMut::with_capacity(16 * 1024);
    loop {
        let then = answer_buffered(&app, &mut session, &mut input, &mut pending, &mut output).await;
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
        }
        match then {
            Then::Close => return,
            Then::Flush => continue,
            Then::Continue => {}
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            read = stream.read_buf(&mut input) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

/// Most commands taken from the buffer before they are answered.
const MAX_BATCH: usize = 1024;

/// Most pipelined GETs looked up together: bounds the answers produced
/// between two checks of the output's size.
const MAX_GET_RUN: usize = 64;

/// Commands taken from the input and not answered yet, and a protocol error
/// found after them.
#[derive(Default)]
struct Pending {
    requests: VecDeque<Request>,
    error: Option<String>,
}

/// Answers the complete commands in `input`, in order, into `output`, until
/// the input holds no complete command (`Continue`), the output is full
/// (`Flush`: write it and call again) or the connection must close.
async fn answer_buffered(
    app: &App,
    session: &mut Session,
    input: &mut BytesMut,
    pending: &mut Pending,
    output: &mut BytesMut,
) -> Then {
    // One --max-parallel slot for this stretch of work, taken at its first
    // command and given back before the (possibly slow) write to the client.
    let mut permit: Option<SemaphorePermit<'_>> = None;
    loop {
        if pending.requests.is_empty() && pending.error.is_none() {
            take_commands(input, pending);
        }
        if pending.requests.is_empty() {
            if let Some(e) = pending.error.take() {
                encode(
                    &Reply::error(format!("ERR Protocol error: {e}")),
                    session.proto,
                    output,
                );
                app.resp_metrics.record(Outcome::ClientError, Instant::now());
                return Then::Close;
            }
            return Then::Continue;
        }
        if permit.is_none() {
            permit = Some(crate::http::acquire_slot(app).await);
        }
        match answer(app, session, &mut pending.requests, output).await {
            Then::Continue => {}
            then => return then,
        }
    }
}

/// Moves up to MAX_BATCH complete commands from `input` to `pending`.
fn take_commands(input: &mut BytesMut, pending: &mut Pending) {
    while pending.requests.len() < MAX_BATCH {
        match parse(input) {
            Ok(Some((request, used))) => {
                input.advance(used);
                // An empty line or array is no command: Redis answers nothing.
                if !request.args.is_empty() {
                    pending.requests.push_back(request);
                }
            }
            Ok(None) => {
                if input.len() > MAX_INPUT {
                    pending.error = Some("query buffer over 1 GiB".to_string());
                }
                return;
            }
            Err(e) => {
                pending.error = Some(e.to_string());
                return;
            }
        }
    }
}

/// Answers pending commands in order until none are left or the output is
/// full. A run of pipelined GETs is looked up together, so their misses
/// cost one Redis round trip (an MGET), not one each.
async fn answer(
    app: &App,
    session: &mut Session,
    pending: &mut VecDeque<Request>,
    output: &mut BytesMut,
) -> Then {
    let is_get = |r: &Request| r.args.len() == 2 && is(&command_name(&r.args[0]), "GET");
    while let Some(request) = pending.pop_front() {
        let start = Instant::now();
        if session.authed && is_get(&request) && pending.front().is_some_and(is_get) {
            let mut keys = vec![request.args[1].clone()];
            while keys.len() < MAX_GET_RUN
                && let Some(next) = pending.pop_front_if(|r| is_get(r))
            {
                keys.push(next.args[1].clone());
            }
            for found in app.lookup.get_each(&keys).await {
                let (reply, outcome, _) = get_answer(found);
                encode(&reply, session.proto, output);
                app.resp_metrics.record(outcome, start);
            }
        } else {
            let (reply, outcome, then) = execute(app, session, request).await;
            encode(&reply, session.proto, output);
            app.resp_metrics.record(outcome, start);
            if then == Then::Close {
                return Then::Close;
            }
        }
        if output.len() >= FLUSH_AT {
            return Then::Flush;
        }
    }
    Then::Continue
}

/// Upper-cased command name, for matching; names longer than any we know
/// come back as they are (they are unknown either way).
fn command_name(arg: &[u8]) -> [u8; 16] {
    let mut name = [0u8; 16];
    if arg.len() <= 16 {
        for (n, b) in name.iter_mut().zip(arg) {
            *n = b.to_ascii_uppercase();
        }
    }
    name
}

fn is(name: &[u8; 16], want: &str) -> bool {
    name[..want.len()] == *want.as_bytes() && name.get(want.len()).is_none_or(|&b| b == 0)
}

type Answer = (Reply, Outcome, Then);

fn ok(reply: Reply) -> Answer {
    (reply, Outcome::Ok, Then::Continue)
}

fn client_error(msg: impl Into<String>) -> Answer {
    (Reply::error(msg), Outcome::ClientError, Then::Continue)
}

fn arity(cmd: &[u8]) -> Answer {
    client_error(format!(
        "ERR wrong number of arguments for '{}' command",
        String::from_utf8_lossy(cmd).to_lowercase()
    ))
}

async fn execute(app: &App, session: &mut Session, req: Request) -> Answer {
    let args = &req.args;
    let name = command_name(&args[0]);
    let n = args.len();
    let allowed_before_auth =
        is(&name, "AUTH") || is(&name, "HELLO") || is(&name, "PING") || is(&name, "QUIT");
    if !session.authed && !allowed_before_auth {
        return client_error("NOAUTH Authentication required.");
    }
    if is(&name, "GET") {
        if n != 2 {
            return arity(&args[0]);
        }
        return get(app, args[1].clone()).await;
    }
    if is(&name, "MGET") {
        if n < 2 {
            return arity(&args[0]);
        }
        return mget(app, &args[1..]).await;
    }
    if is(&name, "PING") {
        return match n {
            1 => ok(Reply::simple("PONG")),
            2 => ok(Reply::Bulk(args[1].clone())),
            _ => arity(&args[0]),
        };
    }
    if is(&name, "ECHO") {
        return if n == 2 {
            ok(Reply::Bulk(args[1].clone()))
        } else {
            arity(&args[0])
        };
    }
    if is(&name, "QUIT") {
        return (Reply::ok(), Outcome::Ok, Then::Close);
    }
    if is(&name, "HELLO") {
        return hello(app, session, &args[1..]);
    }
    if is(&name, "AUTH") {
        return match n {
            2 => auth(app, session, b"default", &args[1]),
            3 => auth(app, session, &args[1], &args[2]),
            _ => arity(&args[0]),
        };
    }
    if is(&name, "SELECT") {
        return match n {
            2 if &args[1][..] == b"0" => ok(Reply::ok()),
            2 => client_error("ERR DB index is out of range (this proxy serves database 0 of its Redis)"),
            _ => arity(&args[0]),
        };
    }
    if is(&name, "CLIENT") {
        return client(session, args);
    }
    if is(&name, "CONFIG") {
        return config(args);
    }
    if is(&name, "INFO") {
        return ok(Reply::Bulk(info(app, args.get(1)).into()));
    }
    if is(&name, "COMMAND") {
        return command(args);
    }
    if is(&name, "SET") || is(&name, "DEL") {
        if !app.allow_writes {
            return client_error(format!(
                "ERR {} is disabled: start the proxy with --allow-writes",
                String::from_utf8_lossy(&args[0]).to_uppercase()
            ));
        }
        return write(app, &name, args).await;
    }
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        printable(&args[0])
    );
    for a in args[1..].iter().take(8) {
        msg.push_str(&format!("'{}' ", printable(a)));
    }
    client_error(msg)
}

/// A client's bytes, made safe to quote in an error line.
fn printable(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(128)]);
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn backend_error(e: &Error) -> Answer {
    let reply = match e {
        Error::WrongType(msg) => Reply::error(msg.to_string()),
        Error::Unavailable(_) => Reply::error("ERR backend unavailable"),
        Error::Timeout(t) => Reply::error(format!("ERR backend timed out after {t:?}")),
        Error::Reply(msg) => Reply::error(format!("ERR backend error: {msg}")),
    };
    let outcome = if matches!(e, Error::WrongType(_)) {
        Outcome::WrongType
    } else {
        Outcome::BackendError
    };
    (reply, outcome, Then::Continue)
}

async fn get(app: &App, key: Bytes) -> Answer {
    get_answer(app.lookup.get(key).await)
}

fn get_answer(found: Result<Found, Error>) -> Answer {
    match found {
        Ok(Found {
            value: Some(v),
            source,
        }) => {
            let outcome = if matches!(source, Source::Hit { .. }) {
                Outcome::Hit
            } else {
                Outcome::Miss
            };
            (Reply::Bulk(v), outcome, Then::Continue)
        }
        Ok(Found { value: None, .. }) => (Reply::Null, Outcome::NotFound, Then::Continue),
        Err(e) => backend_error(&e),
    }
}

async fn mget(app: &App, keys: &[Bytes]) -> Answer {
    match app.lookup.get_many(keys).await {
        Ok(found) => {
            let all_hits = found.iter().all(|f| matches!(f.source, Source::Hit { .. }));
            let values = found
                .into_iter()
                .map(|f| f.value.map_or(Reply::Null, Reply::Bulk))
                .collect();
            (
                Reply::Array(values),
                if all_hits { Outcome::Hit } else { Outcome::Miss },
                Then::Continue,
            )
        }
        Err(e) => backend_error(&e),
    }
}

async fn write(app: &App, name: &[u8; 16], args: &[Bytes]) -> Answer {
    let result = if is(name, "SET") {
        if args.len() < 3 {
            return arity(&args[0]);
        }
        if args.len() == 3 {
            // Plain SET: the new value is fresh in the cache.
            return match app.lookup.set(args[1].clone(), args[2].clone()).await {
                Ok(()) => ok(Reply::ok()),
                Err(e) => backend_error(&e),
            };
        }
        // SET with options (EX, NX, GET, …): Redis decides; drop our copy.
        app.lookup.write_through(args.to_vec(), args[1..2].to_vec()).await
    } else {
        if args.len() < 2 {
            return arity(&args[0]);
        }
        app.lookup.write_through(args.to_vec(), args[1..].to_vec()).await
    };
    match result {
        Ok(value) => ok(from_redis(value)),
        Err(e) => backend_error(&e),
    }
}

/// A reply from Redis, passed on to the client.
fn from_redis(v: redis::Value) -> Reply {
    use redis::Value as V;
    match v {
        V::Nil => Reply::Null,
        V::Int(n) => Reply::Int(n),
        V::BulkString(b) => Reply::Bulk(b.into()),
        V::Okay => Reply::ok(),
        V::SimpleString(s) => Reply::Simple(s.into()),
        V::Array(items) | V::Set(items) => Reply::Array(items.into_iter().map(from_redis).collect()),
        V::Map(pairs) => Reply::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (from_redis(k), from_redis(v)))
                .collect(),
        ),
        V::ServerError(e) => Reply::error(match e.details() {
            Some(d) => format!("{} {d}", e.code()),
            None => e.code().to_string(),
        }),
        other => Reply::bulk(format!("{other:?}")),
    }
}

pub fn password_matches(app: &App, given: &[u8]) -> bool {
    app.client_password
        .as_ref()
        .is_some_and(|pw| bool::from(pw.as_bytes().ct_eq(given)))
}

fn auth(app: &App, session: &mut Session, user: &[u8], password: &[u8]) -> Answer {
    if app.client_password.is_none() {
        return client_error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        );
    }
    if user == b"default" && password_matches(app, password) {
        session.authed = true;
        ok(Reply::ok())
    } else {
        client_error("WRONGPASS invalid username-password pair or user is disabled.")
    }
}

fn hello(app: &App, session: &mut Session, args: &[Bytes]) -> Answer {
    let mut proto = session.proto;
    let mut rest = args;
    if let Some(v) = args.first() {
        proto = match &v[..] {
            b"2" => Proto::Resp2,
            b"3" => Proto::Resp3,
            _ => return client_error("NOPROTO unsupported protocol version"),
        };
        rest = &args[1..];
    }
    let mut name = None;
    let mut authed = session.authed;
    while let Some(opt) = rest.first() {
        let opt = command_name(opt);
        if is(&opt, "AUTH") && rest.len() >= 3 {
            let accepted = app.client_password.is_none()
                || (&rest[1][..] == b"default" && password_matches(app, &rest[2]));
            if !accepted {
                return client_error("WRONGPASS invalid username-password pair or user is disabled.");
            }
            authed = true;
            rest = &rest[3..];
        } else if is(&opt, "SETNAME") && rest.len() >= 2 {
            name = Some(rest[1].clone());
            rest = &rest[2..];
        } else {
            return client_error(format!(
                "ERR Syntax error in HELLO option '{}'",
                printable(&rest[0])
            ));
        }
    }
    if !authed {
        return client_error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time",
        );
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

fn client(session: &mut Session, args: &[Bytes]) -> Answer {
    let Some(sub) = args.get(1) else {
        return arity(&args[0]);
    };
    let sub_name = command_name(sub);
    if is(&sub_name, "SETNAME") && args.len() == 3 {
        if args[2].iter().any(|&b| b <= b' ' || b > b'~') {
            return client_error("ERR Client names cannot contain spaces, newlines or special characters.");
        }
        session.name = (!args[2].is_empty()).then(|| args[2].clone());
        return ok(Reply::ok());
    }
    if is(&sub_name, "GETNAME") && args.len() == 2 {
        return ok(session.name.clone().map_or(Reply::Null, Reply::Bulk));
    }
    if is(&sub_name, "SETINFO") && args.len() == 4 {
        return ok(Reply::ok());
    }
    if is(&sub_name, "ID") && args.len() == 2 {
        return ok(Reply::Int(session.id as i64));
    }
    client_error(format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
        printable(sub)
    ))
}

/// What CONFIG GET reports: enough for redis-benchmark and clients that
/// look before they leap; nothing here changes behaviour.
const CONFIG: &[(&str, &str)] = &[
    ("save", ""),
    ("appendonly", "no"),
    ("databases", "1"),
    ("maxmemory", "0"),
];

fn config(args: &[Bytes]) -> Answer {
    let sub = args.get(1).map(|s| command_name(s));
    match sub {
        Some(sub) if is(&sub, "GET") && args.len() >= 3 => {
            let mut pairs = Vec::new();
            for pattern in &args[2..] {
                for (k, v) in CONFIG {
                    if &pattern[..] == b"*" || pattern.eq_ignore_ascii_case(k.as_bytes()) {
                        pairs.push((Reply::bulk(*k), Reply::bulk(*v)));
                    }
                }
            }
            ok(Reply::Map(pairs))
        }
        _ => client_error("ERR only CONFIG GET is served by this proxy"),
    }
}

/// The commands this front end knows, for COMMAND.
const COMMANDS: &[(&str, i64)] = &[
    ("get", 2),
    ("mget", -2),
    ("set", -3),
    ("del", -2),
    ("ping", -1),
    ("echo", 2),
    ("quit", -1),
    ("hello", -1),
    ("auth", -2),
    ("select", 2),
    ("client", -2),
    ("config", -2),
    ("info", -1),
    ("command", -1),
];

fn command(args: &[Bytes]) -> Answer {
    let sub = args.get(1).map(|s| command_name(s));
    match sub {
        None => ok(Reply::Array(
            COMMANDS
                .iter()
                .map(|(name, arity)| {
                    let key_step = i64::from(matches!(*name, "get" | "mget" | "set" | "del"));
                    let last = match *name {
                        "get" | "set" => 1,
                        "mget" | "del" => -1,
                        _ => 0,
                    };
                    Reply::Array(vec![
                        Reply::bulk(*name),
                        Reply::Int(*arity),
                        Reply::Array(Vec::new()),
                        Reply::Int(key_step),
                        Reply::Int(last),
                        Reply::Int(key_step),
                    ])
                })
                .collect(),
        )),
        Some(sub) if is(&sub, "COUNT") => ok(Reply::Int(COMMANDS.len() as i64)),
        Some(sub) if is(&sub, "DOCS") => ok(Reply::Map(Vec::new())),
        Some(_) => client_error("ERR only COMMAND, COMMAND COUNT and COMMAND DOCS are served by this proxy"),
    }
}

fn info(app: &App, section: Option<&Bytes>) -> String {
    let everything = |w: &Bytes| {
        ["all", "everything", "default"]
            .iter()
            .any(|a| w.eq_ignore_ascii_case(a.as_bytes()))
    };
    let want = |s: &str| section.is_none_or(|w| w.eq_ignore_ascii_case(s.as_bytes()) || everything(w));
    let m = &app.metrics;
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
            .map(|f| m.connections.get_or_create(&FrontendLabels { frontend: f }).get())
            .sum();
        out.push_str(&format!("# Clients\r\nconnected_clients:{open}\r\n\r\n"));
    }
    if want("proxy") {
        out.push_str(&format!(
            "# Proxy\r\ncache_hits:{}\r\ncache_misses:{}\r\ncache_entries:{}\r\ncache_bytes:{}\r\n\
             cache_evictions:{}\r\ncache_expirations:{}\r\nsingleflight_joins:{}\r\nbackend:{}\r\n\
             invalidation_mode:{}\r\ntracking:{}\r\ninvalidations:{}\r\ncache_flushes:{}\r\n",
            m.hits.get(),
            m.misses.get(),
            m.entries.get(),
            m.bytes.get(),
            m.evictions.get(),
            m.expirations.get(),
            m.singleflight_joins.get(),
            if app.lookup.backend().is_ready() {
                "up"
            } else {
                "down"
            },
            match app.lookup.backend().mode() {
                Invalidation::Tracking => "tracking",
                Invalidation::Ttl => "ttl",
            },
            if m.tracking.get() == 1 { "on" } else { "off" },
            m.invalidations.get(),
            m.flushes(),
        ));
    }
    out
}
