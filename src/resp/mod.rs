//! The Redis-protocol front end: any Redis client, pipelined, through the
//! same [`Lookup`](crate::lookup::Lookup) as HTTP.
//!
//! - `parse`: bytes → requests (pure, fuzzed); `encode`: replies → bytes
//! - `command`: requests → commands, with the table of what is answered
//!   here; everything else is forwarded
//! - `conn`: one connection's loop, buffers and pipelining
//! - `forwarding`: commands sent to Redis, on shared connections in
//!   batches or on the client's pinned connection (transactions, WATCH,
//!   blocking commands, subscriptions, WAIT); what is refused and why
//! - `data` (GET, MGET, SET), `connection` (HELLO, AUTH, CLIENT, SELECT,
//!   PING, ECHO, QUIT, RESET), `introspection` (INFO): the answers, by kind

mod command;
mod conn;
mod connection;
mod data;
pub mod encode;
mod forwarding;
mod introspection;
pub mod parse;

pub use conn::serve;

use bytes::Bytes;

use crate::app::{self, App};
use crate::error::Error;
use crate::metrics::Outcome;
use command::Command;
use encode::{Proto, Reply};

/// What a connection's commands read and change.
struct Session {
    id: u64,
    proto: Proto,
    authed: bool,
    name: Option<Bytes>,
    /// The database SELECTed (the cache holds `--redis-url`'s only).
    db: i64,
    /// A backend connection of this client's own, while it needs one.
    pin: Option<forwarding::Pin>,
    /// In front of a cluster, a transaction whose master is not known yet
    /// (no keyed command since MULTI): what it queued meanwhile.
    queued: Option<forwarding::Queued>,
    /// The connection holding this client's WATCH was lost: its next
    /// transaction aborts.
    watch_lost: bool,
}

impl Session {
    /// Whether GET and MGET may be answered from the cache: on the cached
    /// database, and not inside a transaction, WATCH or subscription
    /// (whose reads must reach Redis, in order).
    fn reads_cache(&self, app: &App) -> bool {
        self.authed
            && self.db == app.forwarder.default_db()
            && self.pin.as_ref().is_none_or(|p| !p.holds_reads())
            && self.queued.is_none()
    }

    fn protocol(&self) -> redis::ProtocolVersion {
        match self.proto {
            Proto::Resp2 => redis::ProtocolVersion::RESP2,
            Proto::Resp3 => redis::ProtocolVersion::RESP3,
        }
    }
}

/// What a command asks of the connection after its reply.
#[derive(Debug, PartialEq, Eq)]
enum Then {
    Continue,
    /// The output buffer is full: write it, then answer what is still
    /// buffered before reading more.
    Flush,
    Close,
}

/// A command's reply, how it ended (for the metrics), and what next.
type Answer = (Reply, Outcome, Then);

fn ok(reply: Reply) -> Answer {
    (reply, Outcome::Ok, Then::Continue)
}

/// The answer to an error: its RESP line (see [`Error::resp_line`]).
fn refused(e: &Error) -> Answer {
    (Reply::error(e.resp_line()), app::error_outcome(e), Then::Continue)
}

/// Runs one parsed command.
async fn execute(app: &App, session: &mut Session, command: Command) -> Answer {
    if !session.authed && command.needs_auth() {
        return refused(&Error::redis("NOAUTH", "Authentication required."));
    }
    match command {
        Command::Get(key) => data::get(app, key).await,
        Command::Mget(keys) => match data::mget_each(app, &keys).await {
            Ok((values, outcome)) => (Reply::Array(values), outcome, Then::Continue),
            Err(answer) => answer,
        },
        Command::Ping(message) => connection::ping(message),
        Command::Echo(message) => ok(Reply::Bulk(message)),
        Command::Quit => (Reply::ok(), Outcome::Ok, Then::Close),
        Command::Hello(args) => connection::hello(app, session, &args).await,
        Command::Auth { user, password } => connection::auth(app, session, user.as_deref(), &password),
        Command::Select(db) => connection::select(app, session, &db).await,
        Command::Client(args) => connection::client(session, &args),
        Command::Reset => connection::reset(app, session),
        Command::Info(sections) => introspection::info(app, session, &sections).await,
        Command::Forward(_) => unreachable!("forwarded commands are answered by forwarding"),
    }
}
