//! RESP commands as data. A request's arguments are parsed once into a
//! [`Command`]: the name is looked up in [`SPECS`], the arity checked there
//! (worded as Redis words it), the arguments put where the command wants
//! them. `COMMAND` and `COMMAND COUNT` are read from the same table.

use std::ops::Range;

use bytes::Bytes;

use crate::error::Error;

/// One command the front end serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    // Data, through the cache.
    Get(Bytes),
    Mget(Vec<Bytes>),
    /// The whole command (`SET key value [options]`), as it may be forwarded.
    Set(Vec<Bytes>),
    /// The whole command (`DEL key …`).
    Del(Vec<Bytes>),
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
    /// The arguments after `CLIENT`, the subcommand first.
    Client(Vec<Bytes>),
    // Introspection, answered locally.
    Info(Option<Bytes>),
    /// The arguments after `CONFIG`, the subcommand first.
    Config(Vec<Bytes>),
    /// `COMMAND [subcommand]`.
    Commands(Option<Bytes>),
}

/// What the table says of a command: Redis's arity (n: exactly n
/// arguments, name included; -n: at least n), the most it takes where the
/// command itself limits it, and its key positions for `COMMAND`.
pub struct Spec {
    pub name: &'static str,
    pub arity: i64,
    pub max_args: Option<usize>,
    /// First key, last key (-1: the last argument), step; 0 for none.
    pub keys: (i64, i64, i64),
}

const fn spec(name: &'static str, arity: i64, keys: (i64, i64, i64)) -> Spec {
    Spec {
        name,
        arity,
        max_args: None,
        keys,
    }
}

const NONE: (i64, i64, i64) = (0, 0, 0);

/// Every command served, in the order `COMMAND` lists them.
pub const SPECS: &[Spec] = &[
    spec("get", 2, (1, 1, 1)),
    spec("mget", -2, (1, -1, 1)),
    spec("set", -3, (1, 1, 1)),
    spec("del", -2, (1, -1, 1)),
    Spec {
        max_args: Some(2),
        ..spec("ping", -1, NONE)
    },
    spec("echo", 2, NONE),
    spec("quit", -1, NONE),
    spec("hello", -1, NONE),
    Spec {
        max_args: Some(3),
        ..spec("auth", -2, NONE)
    },
    spec("select", 2, NONE),
    spec("client", -2, NONE),
    spec("config", -2, NONE),
    spec("info", -1, NONE),
    spec("command", -1, NONE),
];

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
            return Err(unknown(&args));
        };
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
        if matches!(spec.name, "set" | "del") {
            // Kept whole: a write may be forwarded as it came.
            return Ok(if spec.name == "set" {
                Command::Set(args)
            } else {
                Command::Del(args)
            });
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
            "config" => Command::Config(rest),
            "info" => Command::Info(rest.into_iter().next()),
            "command" => Command::Commands(rest.into_iter().next()),
            other => unreachable!("{other} is in SPECS but not parsed"),
        })
    }

    /// Whether it needs an authenticated client (with `--client-password`):
    /// all but what sets a connection up, as in Redis.
    pub fn needs_auth(&self) -> bool {
        !matches!(
            self,
            Command::Ping(_) | Command::Quit | Command::Hello(_) | Command::Auth { .. }
        )
    }
}

/// `ERR unknown command 'NAME', with args beginning with: 'a' 'b' `, as
/// Redis says it.
fn unknown(args: &[Bytes]) -> Error {
    let mut msg = format!(
        "unknown command '{}', with args beginning with: ",
        printable(&args[0])
    );
    for a in args[1..].iter().take(8) {
        msg.push_str(&format!("'{}' ", printable(a)));
    }
    Error::redis("ERR", msg)
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
            Command::Set(["SET", "k", "v", "EX", "1"].map(b).to_vec())
        );
        assert_eq!(parse(&["PING"]), Ok(Command::Ping(None)));
        assert_eq!(
            parse(&["AUTH", "u", "p"]),
            Ok(Command::Auth {
                user: Some(b("u")),
                password: b("p")
            })
        );
        assert_eq!(parse(&["info"]), Ok(Command::Info(None)));
    }

    #[test]
    fn arity_is_checked_in_one_place_as_redis_words_it() {
        let wrong = |name: &str| Err(format!("ERR wrong number of arguments for '{name}' command"));
        assert_eq!(parse(&["GET"]), wrong("get"));
        assert_eq!(parse(&["GET", "a", "b"]), wrong("get"));
        assert_eq!(parse(&["MGET"]), wrong("mget"));
        assert_eq!(parse(&["SET", "k"]), wrong("set"));
        assert_eq!(parse(&["PING", "a", "b"]), wrong("ping"));
        assert_eq!(parse(&["AUTH", "a", "b", "c"]), wrong("auth"));
        assert_eq!(parse(&["SELECT"]), wrong("select"));
        assert_eq!(parse(&["CONFIG"]), wrong("config"));
    }

    #[test]
    fn unknown_commands_quote_their_first_arguments() {
        assert_eq!(
            parse(&["HGETALL", "h\r\n"]),
            Err("ERR unknown command 'HGETALL', with args beginning with: 'h??' ".into())
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
        assert_eq!(before, ["ping", "quit", "hello", "auth"]);
    }
}
