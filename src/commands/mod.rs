//! The command table: per command, its arity, its flags and where its keys
//! are. Taken from the backend's own `COMMAND` reply when the proxy first
//! connects (and again on every reconnect), so that module commands and
//! the differences between Redis versions are right without a table of
//! our own to keep up to date. Pure: [`Table::from_reply`] reads a reply,
//! [`Table::classify`] reads a request; both are unit-tested.
//!
//! What the proxy decides from it:
//! - a write (Redis's `write` flag; EVAL, EVALSHA, FCALL and the SCRIPT and
//!   FUNCTION subcommands that change what is loaded) needs
//!   `--allow-writes`, and its reply waits for the invalidations it caused;
//! - a command the table does not know (a module's, say) is forwarded,
//!   never cached, and counts as a write;
//! - blocking, pub/sub and WAIT commands need a connection of the client's
//!   own (see `forward`);
//! - key positions: the fixed ones, and the `numkeys` (EVAL, FCALL,
//!   ZUNIONSTORE…) and keyword (XREAD … STREAMS) forms of Redis 7's key
//!   specifications.

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use bytes::Bytes;
use redis::Value;

/// What Redis says of a command, and what the proxy adds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    /// Lower case, `container|sub` for a subcommand.
    pub name: String,
    pub arity: i64,
    pub write: bool,
    pub readonly: bool,
    pub blocking: bool,
    pub pubsub: bool,
    pub admin: bool,
    pub noscript: bool,
    /// Where the keys are; empty for a command without keys.
    pub keys: Vec<KeySpec>,
    /// Keys that no spec can find (a module's `movablekeys` without specs).
    pub movable: bool,
}

/// One of Redis 7's key specifications: where to start looking, and how
/// to find the keys from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub begin: Begin,
    pub find: Find,
    /// Redis's `incomplete` flag: the spec may miss some keys (MIGRATE).
    pub incomplete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// At this argument (the name is 0).
    Index(usize),
    /// After the first argument equal to `keyword`, searching from
    /// `start` (negative: from the end, backwards).
    Keyword { keyword: String, start: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Find {
    /// From the beginning to `last` (negative: from the end; -1 the last
    /// argument), every `step`; `limit` > 1: only 1/limit of what is left.
    Range { last: i64, step: usize, limit: usize },
    /// The argument at `keynum` (relative to the beginning) says how many
    /// keys follow, starting at `first`, every `step`.
    Keynum {
        keynum: usize,
        first: usize,
        step: usize,
    },
}

/// The table, by lower-case name.
#[derive(Debug, Default)]
pub struct Table {
    commands: HashMap<Vec<u8>, Info>,
    subcommands: HashMap<Vec<u8>, HashMap<Vec<u8>, Info>>,
}

/// What the proxy needs to know of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class<'a> {
    /// None for a command the table does not know.
    pub info: Option<&'a Info>,
    /// Needs `--allow-writes`, and its reply waits for its invalidations.
    pub write: bool,
    /// Needs a backend connection of the client's own while it runs.
    pub blocking: bool,
}

impl Table {
    /// The table from a `COMMAND` (or `COMMAND INFO`) reply.
    pub fn from_reply(reply: &Value) -> Result<Table, String> {
        let Value::Array(entries) = reply else {
            return Err(format!("COMMAND answered {reply:?}"));
        };
        let mut table = Table::default();
        for entry in entries {
            let Some((info, subs)) = parse_entry(entry) else {
                continue;
            };
            let name = info.name.clone().into_bytes();
            if !subs.is_empty() {
                let mut by_sub = HashMap::new();
                for sub in subs {
                    let short = sub
                        .name
                        .rsplit('|')
                        .next()
                        .unwrap_or_default()
                        .as_bytes()
                        .to_vec();
                    by_sub.insert(short, sub);
                }
                table.subcommands.insert(name.clone(), by_sub);
            }
            table.commands.insert(name, info);
        }
        if table.commands.is_empty() {
            return Err("COMMAND listed no commands".into());
        }
        Ok(table)
    }

    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The entry for `args` (name first): the subcommand's when the
    /// command has subcommands and the second argument names one.
    pub fn lookup(&self, args: &[Bytes]) -> Option<&Info> {
        let name = args.first()?.to_ascii_lowercase();
        if let Some(subs) = self.subcommands.get(&name)
            && let Some(sub) = args.get(1)
            && let Some(info) = subs.get(&sub.to_ascii_lowercase())
        {
            return Some(info);
        }
        self.commands.get(&name)
    }

    /// Every entry: the commands, and the subcommands (`config|set`).
    pub fn entries(&self) -> impl Iterator<Item = &Info> {
        self.commands
            .values()
            .chain(self.subcommands.values().flat_map(|subs| subs.values()))
    }

    /// What `args` (name first) asks of the proxy.
    pub fn classify<'a>(&'a self, args: &[Bytes]) -> Class<'a> {
        let info = self.lookup(args);
        let Some(info) = info else {
            return Class {
                info: None,
                write: true,
                blocking: false,
            };
        };
        let write = info.write || writes_despite_flags(&info.name);
        let blocking = info.blocking && blocks_with(info, args);
        Class {
            info: Some(info),
            write,
            blocking,
        }
    }
}

/// Scripts and functions may write though Redis does not flag them (it
/// cannot know), and so do the subcommands that change what is loaded.
fn writes_despite_flags(name: &str) -> bool {
    matches!(
        name,
        "eval"
            | "evalsha"
            | "fcall"
            | "script|load"
            | "script|flush"
            | "function|load"
            | "function|delete"
            | "function|flush"
            | "function|restore"
    )
}

/// Whether a command Redis flags blocking blocks as sent: XREAD and
/// XREADGROUP only with a BLOCK option (before STREAMS); the others always.
fn blocks_with(info: &Info, args: &[Bytes]) -> bool {
    if info.name != "xread" && info.name != "xreadgroup" {
        return true;
    }
    args.iter()
        .skip(1)
        .take_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"))
        .any(|a| a.eq_ignore_ascii_case(b"BLOCK"))
}

impl Info {
    /// The keys of `args` (name first), in order; None if they cannot be
    /// known from the arguments (a command without specs whose keys move,
    /// or one whose specs Redis says may miss some).
    pub fn keys<'a>(&self, args: &'a [Bytes]) -> Option<Vec<&'a Bytes>> {
        if (self.movable && self.keys.is_empty()) || self.keys.iter().any(|k| k.incomplete) {
            return None;
        }
        let mut keys = Vec::new();
        for spec in &self.keys {
            spec.find_in(args, &mut keys)?;
        }
        Some(keys)
    }
}

impl KeySpec {
    fn find_in<'a>(&self, args: &'a [Bytes], keys: &mut Vec<&'a Bytes>) -> Option<()> {
        let n = args.len() as i64;
        let begin = match &self.begin {
            Begin::Index(i) => *i as i64,
            Begin::Keyword { keyword, start } => {
                let found = if *start >= 0 {
                    (*start..n).find(|&i| args[i as usize].eq_ignore_ascii_case(keyword.as_bytes()))
                } else {
                    (1..=(n + start))
                        .rev()
                        .find(|&i| args[i as usize].eq_ignore_ascii_case(keyword.as_bytes()))
                };
                match found {
                    Some(i) => i + 1,
                    // No keyword, no keys of this spec (an optional clause).
                    None => return Some(()),
                }
            }
        };
        if begin >= n {
            return Some(());
        }
        match self.find {
            Find::Range { last, step, limit } => {
                let end = if last >= 0 {
                    (begin + last).min(n - 1)
                } else if limit > 1 {
                    begin + (n - begin) / limit as i64 - 1
                } else {
                    n + last
                };
                let mut i = begin;
                while i <= end {
                    keys.push(&args[i as usize]);
                    i += step.max(1) as i64;
                }
            }
            Find::Keynum { keynum, first, step } => {
                let at = begin + keynum as i64;
                let count: i64 = std::str::from_utf8(args.get(at as usize)?).ok()?.parse().ok()?;
                if count < 0 {
                    return None;
                }
                let start = begin + first as i64;
                for k in 0..count {
                    let i = start + k * step.max(1) as i64;
                    keys.push(args.get(usize::try_from(i).ok()?)?);
                }
            }
        }
        Some(())
    }
}

/// One entry of a COMMAND reply: the command and its subcommands.
fn parse_entry(entry: &Value) -> Option<(Info, Vec<Info>)> {
    let Value::Array(fields) = entry else {
        return None;
    };
    let name = text(fields.first()?)?.to_ascii_lowercase();
    let arity = match fields.get(1)? {
        Value::Int(n) => *n,
        _ => return None,
    };
    let mut info = Info {
        name,
        arity,
        ..Info::default()
    };
    if let Some(Value::Array(flags) | Value::Set(flags)) = fields.get(2) {
        for flag in flags.iter().filter_map(text) {
            match flag.as_str() {
                "write" => info.write = true,
                "readonly" => info.readonly = true,
                "blocking" => info.blocking = true,
                "pubsub" => info.pubsub = true,
                "admin" => info.admin = true,
                "noscript" => info.noscript = true,
                "movablekeys" => info.movable = true,
                _ => {}
            }
        }
    }
    let legacy = (int(fields.get(3)), int(fields.get(4)), int(fields.get(5)));
    info.keys = match fields.get(8) {
        Some(Value::Array(specs)) if !specs.is_empty() => specs.iter().filter_map(parse_key_spec).collect(),
        // Redis 6 and older: only the first, last and step positions.
        _ => match legacy {
            (Some(first), Some(last), Some(step)) if first > 0 => vec![KeySpec {
                begin: Begin::Index(first as usize),
                find: Find::Range {
                    last: if last < 0 { last } else { last - first },
                    step: step.max(1) as usize,
                    limit: 0,
                },
                incomplete: false,
            }],
            _ => Vec::new(),
        },
    };
    let subs = match fields.get(9) {
        Some(Value::Array(subs)) => subs
            .iter()
            .filter_map(|s| parse_entry(s).map(|(i, _)| i))
            .collect(),
        _ => Vec::new(),
    };
    Some((info, subs))
}

/// A key spec, as a map (RESP3) or a flat list of pairs (RESP2).
fn parse_key_spec(spec: &Value) -> Option<KeySpec> {
    let fields = pairs(spec)?;
    let begin = pairs(field(&fields, "begin_search")?)?;
    let begin_spec = pairs(field(&begin, "spec")?)?;
    let begin = match text(field(&begin, "type")?)?.as_str() {
        "index" => Begin::Index(usize::try_from(int(field(&begin_spec, "index"))?).ok()?),
        "keyword" => Begin::Keyword {
            keyword: text(field(&begin_spec, "keyword")?)?,
            start: int(field(&begin_spec, "startfrom"))?,
        },
        _ => return None,
    };
    let find = pairs(field(&fields, "find_keys")?)?;
    let find_spec = pairs(field(&find, "spec")?)?;
    let count = |name| int(field(&find_spec, name)).and_then(|n| usize::try_from(n).ok());
    let find = match text(field(&find, "type")?)?.as_str() {
        "range" => Find::Range {
            last: int(field(&find_spec, "lastkey"))?,
            step: count("keystep")?,
            limit: count("limit")?,
        },
        "keynum" => Find::Keynum {
            keynum: count("keynumidx")?,
            first: count("firstkey")?,
            step: count("keystep")?,
        },
        _ => return None,
    };
    let incomplete = match field(&fields, "flags") {
        Some(Value::Array(flags) | Value::Set(flags)) => flags
            .iter()
            .filter_map(text)
            .any(|f| f.eq_ignore_ascii_case("incomplete")),
        _ => false,
    };
    Some(KeySpec {
        begin,
        find,
        incomplete,
    })
}

fn pairs(v: &Value) -> Option<Vec<(String, &Value)>> {
    match v {
        Value::Map(m) => m.iter().map(|(k, v)| Some((text(k)?, v))).collect(),
        Value::Array(a) if a.len() % 2 == 0 => a.chunks(2).map(|kv| Some((text(&kv[0])?, &kv[1]))).collect(),
        _ => None,
    }
}

fn field<'a>(pairs: &[(String, &'a Value)], name: &str) -> Option<&'a Value> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

/// `--deny-commands`: commands, or `COMMAND|SUBCOMMAND`s, refused by name.
#[derive(Debug, Default, Clone)]
pub struct Deny {
    /// Lower case; a subcommand as `container|sub`.
    names: std::collections::HashSet<String>,
}

impl Deny {
    pub fn parse(list: &str) -> Deny {
        Deny {
            names: list
                .split(',')
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect(),
        }
    }

    /// The name under which `args` is denied (`CONFIG|SET`), if it is.
    pub fn denies(&self, args: &[Bytes]) -> Option<String> {
        if self.names.is_empty() {
            return None;
        }
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        if self.names.contains(&name) {
            return Some(name.to_ascii_uppercase());
        }
        let sub = args.get(1)?;
        let full = format!("{name}|{}", String::from_utf8_lossy(sub).to_ascii_lowercase());
        self.names.contains(&full).then(|| full.to_ascii_uppercase())
    }
}
