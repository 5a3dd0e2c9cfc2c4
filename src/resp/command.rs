//! RESP commands as data. A request's arguments are parsed once into a
//! [`Command`]: the commands the front end answers itself (or through the
//! cache) are looked up in [`SPECS`], their arity checked there (worded as
//! Redis words it), their arguments put where the command wants them.
//! Every other command is [`Command::Forward`]: Redis checks it, and the
//! command table from Redis (`crate::commands`) says what it does.

use std::ops::Range;

use bytes::Bytes;

use crate::error::Error;

/// One command the front end serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    // Data, through the cache.
    Get(Bytes),
    Mget(Vec<Bytes>),
    /// Any other command, whole, to be forwarded to Redis.
    Forward(Vec<Bytes>),
    // The connection, answered locally.
    Ping(Option<Bytes>),
    Echo(Bytes),
    Quit,
    /// The arguments after `HELLO`.
    Hello(Vec<Bytes>),
    Auth {
        user: Option<Bytes>,
        password: Bytes,
    },
    Select(Bytes),
    /// The arguments after `CLIENT`, the subcommand first (only the
    /// subcommands answered locally; the others are forwarded).
    Client(Vec<Bytes>),
    Reset,
    /// `INFO [section …]`: the backend's, with the proxy's section.
    Info(Vec<Bytes>),
}

/// What the table says of a command: Redis's arity (n: exactly n
/// arguments, name included; -n: at least n), and the most it takes where
/// the command itself limits it.
pub struct Spec {
    pub name: &'static str,
    pub arity: i64,
    pub max_args: Option<usize>,
}

const fn spec(name: &'static str, arity: i64) -> Spec {
    Spec {
        name,
        arity,
        max_args: None,
    }
}

/// Every command answered here (or through the cache).
pub const SPECS: &[Spec] = &[
    spec("get", 2),
    spec("mget", -2),
    Spec {
        max_args: Some(2),
        ..spec("ping", -1)
    },
    spec("echo", 2),
    spec("quit", -1),
    spec("hello", -1),
    Spec {
        max_args: Some(3),
        ..spec("auth", -2)
    },
    spec("select", 2),
    spec("client", -2),
    spec("info", -1),
    spec("reset", 1),
];

/// The CLIENT subcommands answered locally; the rest are forwarded.
const LOCAL_CLIENT: &[&str] = &["setname", "getname", "id", "setinfo", "info", "tracking", "help"];

/// The table entry for a command name, whatever its case.
pub fn spec_of(name: &[u8]) -> Option<&'static Spec> {
    SPECS
        .iter()
        .find(|s| name.eq_ignore_ascii_case(s.name.as_bytes()))
}

impl Command {
    /// The command in `frame`, its arguments at `ranges` (the name first,
    /// at least one), sliced out of the frame rather than copied. GET, the
    /// command that matters, is recognised without building a list.
    pub fn from_frame(frame: &Bytes, ranges: &[Range<usize>]) -> Result<Command, Error> {
        if let [name, key] = ranges
            && frame[name.clone()].eq_ignore_ascii_case(b"GET")
        {
            return Ok(Command::Get(frame.slice(key.clone())));
        }
        Command::parse(ranges.iter().map(|r| frame.slice(r.clone())).collect())
    }

    /// The command `args` (name first, at least one) ask for, or the error
    /// Redis would answer: an unknown command, or the wrong number of
    /// arguments.
    pub fn parse(mut args: Vec<Bytes>) -> Result<Command, Error> {
        let Some(spec) = spec_of(&args[0]) else {
            return Ok(Command::Forward(args));
        };
        if spec.name == "client"
            && let Some(sub) = args.get(1)
            && !LOCAL_CLIENT
                .iter()
                .any(|l| sub.eq_ignore_ascii_case(l.as_bytes()))
        {
            return Ok(Command::Forward(args));
        }
        let n = args.len();
        let fits = if spec.arity >= 0 {
            n == spec.arity as usize
        } else {
            n >= spec.arity.unsigned_abs() as usize
        };
        if !fits || spec.max_args.is_some_and(|max| n > max) {
            return Err(Error::redis(
                "ERR",
                format!("wrong number of arguments for '{}' command", spec.name),
            ));
        }

        args.remove(0);
        let rest = args;
        let first = || rest[0].clone();
        Ok(match spec.name {
            "get" => Command::Get(first()),
            "mget" => Command::Mget(rest),
            "ping" => Command::Ping(rest.into_iter().next()),
            "echo" => Command::Echo(first()),
            "quit" => Command::Quit,
            "hello" => Command::Hello(rest),
            "auth" if n == 2 => Command::Auth {
                user: None,
                password: first(),
            },
            "auth" => Command::Auth {
                user: Some(first()),
                password: rest[1].clone(),
            },
            "select" => Command::Select(first()),
            "client" => Command::Client(rest),
            "info" => Command::Info(rest),
            "reset" => Command::Reset,
            other => unreachable!("{other} is in SPECS but not parsed"),
        })
    }

    /// Whether it needs an authenticated client (with `--client-password`):
    /// all but what sets a connection up, as in Redis.
    pub fn needs_auth(&self) -> bool {
        !matches!(
            self,
            Command::Ping(_) | Command::Quit | Command::Hello(_) | Command::Auth { .. } | Command::Reset
        )
    }

    /// The command as a client would send it, to be forwarded (a cached or
    /// local command, when the client's state sends it to Redis instead).
    pub fn into_args(self) -> Option<Vec<Bytes>> {
        let name = |n: &'static str| Bytes::from_static(n.as_bytes());
        Some(match self {
            Command::Get(key) => vec![name("GET"), key],
            Command::Mget(keys) => std::iter::once(name("MGET")).chain(keys).collect(),
            Command::Forward(args) => args,
            Command::Ping(message) => std::iter::once(name("PING")).chain(message).collect(),
            Command::Echo(message) => vec![name("ECHO"), message],
            Command::Info(sections) => std::iter::once(name("INFO")).chain(sections).collect(),
            _ => return None,
        })
    }
}

/// A client's bytes, made safe to quote in an error line.
pub fn printable(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(128)]);
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        let args = args
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        Command::parse(args).map_err(|e| e.resp_line())
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn names_in_any_case_and_arguments_in_place() {
        assert_eq!(parse(&["get", "k"]), Ok(Command::Get(b("k"))));
        assert_eq!(
            parse(&["MGet", "a", "b"]),
            Ok(Command::Mget(vec![b("a"), b("b")]))
        );
        assert_eq!(
            parse(&["SET", "k", "v", "EX", "1"]).unwrap(),
            Command::Forward(["SET", "k", "v", "EX", "1"].map(b).to_vec())
        );
        assert_eq!(parse(&["PING"]), Ok(Command::Ping(None)));
        assert_eq!(
            parse(&["AUTH", "u", "p"]),
            Ok(Command::Auth {
                user: Some(b("u")),
                password: b("p")
            })
        );
        assert_eq!(parse(&["info"]), Ok(Command::Info(Vec::new())));
        assert_eq!(
            parse(&["client", "list"]),
            Ok(Command::Forward(vec![b("client"), b("list")]))
        );
    }

    #[test]
    fn arity_is_checked_in_one_place_as_redis_words_it() {
        let wrong = |name: &str| Err(format!("ERR wrong number of arguments for '{name}' command"));
        assert_eq!(parse(&["GET"]), wrong("get"));
        assert_eq!(parse(&["GET", "a", "b"]), wrong("get"));
        assert_eq!(parse(&["MGET"]), wrong("mget"));
        assert_eq!(parse(&["PING", "a", "b"]), wrong("ping"));
        assert_eq!(parse(&["AUTH", "a", "b", "c"]), wrong("auth"));
        assert_eq!(parse(&["SELECT"]), wrong("select"));
        assert_eq!(parse(&["RESET", "x"]), wrong("reset"));
    }

    #[test]
    fn other_commands_are_forwarded_whole() {
        assert_eq!(
            parse(&["HGETALL", "h"]),
            Ok(Command::Forward(vec![b("HGETALL"), b("h")]))
        );
    }

    #[test]
    fn only_connection_set_up_runs_before_auth() {
        let mut before = Vec::new();
        for s in SPECS {
            let mut args = vec![b(s.name)];
            while Command::parse(args.clone()).is_err() {
                args.push(b("x"));
            }
            if !Command::parse(args).unwrap().needs_auth() {
                before.push(s.name);
            }
        }
        assert_eq!(before, ["ping", "quit", "hello", "auth", "reset"]);
    }
}
