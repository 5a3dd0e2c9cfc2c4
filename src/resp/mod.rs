//! The Redis-protocol front end: any Redis client, pipelined, through the
//! same [`Lookup`](crate::lookup::Lookup) as HTTP.
//!
//! - `parse`: bytes → requests (pure, fuzzed); `encode`: replies → bytes
//! - `command`: requests → commands, with the table of what is served
//! - `conn`: one connection's loop, buffers and pipelining
//! - `data` (GET, MGET, SET, DEL), `connection` (HELLO, AUTH, CLIENT,
//!   SELECT, PING, ECHO, QUIT), `introspection` (INFO, CONFIG, COMMAND):
//!   the answers, by kind

mod command;
mod conn;
mod connection;
mod data;
pub mod encode;
mod introspection;
pub mod parse;

pub use conn::serve;

use bytes::Bytes;

use crate::app::{self, App};
use crate::error::Error;
use crate::metrics::Outcome;
use command::Command;
use encode::{Proto, Reply};

/// What HELLO and INFO say: clients check it to enable features.
pub const REDIS_VERSION: &str = "7.4.0";

/// What a connection's commands read and change.
struct Session {
    id: u64,
    proto: Proto,
    authed: bool,
    name: Option<Bytes>,
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
        Command::Set(args) => data::set(app, args).await,
        Command::Del(args) => data::del(app, args).await,
        Command::Ping(message) => connection::ping(message),
        Command::Echo(message) => ok(Reply::Bulk(message)),
        Command::Quit => (Reply::ok(), Outcome::Ok, Then::Close),
        Command::Hello(args) => connection::hello(app, session, &args),
        Command::Auth { user, password } => connection::auth(app, session, user.as_deref(), &password),
        Command::Select(db) => connection::select(&db),
        Command::Client(args) => connection::client(session, &args),
        Command::Info(section) => introspection::info(app, section.as_ref()),
        Command::Config(args) => introspection::config(&args),
        Command::Commands(sub) => introspection::command(sub.as_deref()),
    }
}
