//! Where a forwarded command goes in a cluster, and how the replies of a
//! command split over several masters are put back together. Pure: a
//! command and the slot map in, a [`Plan`] out; replies in, one reply out.
//!
//! - A command whose keys are all in one slot goes to that slot's master;
//!   keys in several slots get Redis's own `-CROSSSLOT` error, except:
//! - `MGET`, `DEL`, `UNLINK`, `EXISTS`, `TOUCH`, `MSET`: split per slot
//!   (keys of different slots get CROSSSLOT even on one node), and the
//!   answers put back in order (MGET), summed (DEL…), or `+OK` (MSET).
//! - `KEYS`, `DBSIZE`, `FLUSHALL`, `FLUSHDB`, `SCRIPT LOAD|FLUSH`,
//!   `FUNCTION LOAD|DELETE|FLUSH|RESTORE`: to every master, merged.
//! - `SCAN`: one master after the other; the cursor the client sees is
//!   the master's cursor × 1024 + the master's place in the map.
//! - A command without keys (PUBLISH, EVAL with none, …) or whose keys
//!   cannot be known: to any master (a MOVED then says where).

use bytes::{BufMut, Bytes, BytesMut};

use super::reply::reply_len;
use crate::cluster::{Addr, Map, slot_of};
use crate::commands::Class;

/// Masters a SCAN cursor can name (its low bits).
const SCAN_NODES: u64 = 1024;

pub const CROSSSLOT: &str = "-CROSSSLOT Keys in request don't hash to the same slot\r\n";

/// One command sent to one master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub node: Addr,
    pub args: Vec<Bytes>,
}

/// How the parts' replies make the client's one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// One part: its reply as it is.
    One,
    /// MGET: each part's array elements go to these positions.
    Positions { each: Vec<Vec<usize>>, total: usize },
    /// Integer replies added up (DEL, UNLINK, EXISTS, TOUCH, DBSIZE).
    Sum,
    /// The first error, else the first reply (MSET, FLUSHALL, SCRIPT LOAD…).
    First,
    /// Arrays concatenated (KEYS).
    Concat,
    /// A SCAN on the master at `index` of `masters`.
    Scan { index: usize, masters: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Answered without asking Redis (a whole RESP reply).
    Answer(Bytes),
    Parts {
        parts: Vec<Part>,
        merge: Merge,
    },
}

/// The plan for `args` (classified as `class`) under `map`.
pub fn plan(args: &[Bytes], class: &Class<'_>, map: &Map) -> Plan {
    let Some(any) = map.masters().first() else {
        return Plan::Answer(Bytes::from_static(b"-CLUSTERDOWN no master is known yet\r\n"));
    };
    let one = |node: &Addr| Plan::Parts {
        parts: vec![Part {
            node: node.clone(),
            args: args.to_vec(),
        }],
        merge: Merge::One,
    };
    let Some(info) = class.info else {
        return one(any);
    };
    let to_all = |merge: Merge| Plan::Parts {
        parts: map
            .masters()
            .iter()
            .map(|m| Part {
                node: m.clone(),
                args: args.to_vec(),
            })
            .collect(),
        merge,
    };
    match info.name.as_str() {
        "keys" => return to_all(Merge::Concat),
        "dbsize" => return to_all(Merge::Sum),
        "flushall" | "flushdb" | "script|load" | "script|flush" | "function|load" | "function|delete"
        | "function|flush" | "function|restore" => return to_all(Merge::First),
        "scan" => return scan(args, map),
        "mget" | "del" | "unlink" | "exists" | "touch" if args.len() > 2 => {
            let merge = if info.name == "mget" {
                None
            } else {
                Some(Merge::Sum)
            };
            return split(args, 1, map, merge);
        }
        "mset" if args.len() > 3 && args.len() % 2 == 1 => return split(args, 2, map, Some(Merge::First)),
        _ => {}
    }
    let Some(keys) = info.keys(args).filter(|k| !k.is_empty()) else {
        return one(any);
    };
    let slot = slot_of(keys[0]);
    if keys.iter().any(|k| slot_of(k) != slot) {
        return Plan::Answer(Bytes::from_static(CROSSSLOT.as_bytes()));
    }
    match map.owner(slot) {
        Some(node) => one(node),
        None => Plan::Answer(Bytes::from_static(b"-CLUSTERDOWN Hash slot not served\r\n")),
    }
}

/// A command over keys (`step` 1) or key-value pairs (`step` 2) after its
/// name, split into one command per slot. `merge` None: MGET's positions.
fn split(args: &[Bytes], step: usize, map: &Map, merge: Option<Merge>) -> Plan {
    let mut slots: Vec<(u16, Vec<usize>)> = Vec::new();
    for (n, i) in (1..args.len()).step_by(step).enumerate() {
        let slot = slot_of(&args[i]);
        match slots.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, items)) => items.push(n),
            None => slots.push((slot, vec![n])),
        }
    }
    let mut parts = Vec::with_capacity(slots.len());
    for (slot, items) in &slots {
        let Some(node) = map.owner(*slot) else {
            return Plan::Answer(Bytes::from_static(b"-CLUSTERDOWN Hash slot not served\r\n"));
        };
        let mut part = vec![args[0].clone()];
        for &n in items {
            let at = 1 + n * step;
            part.extend(args[at..at + step].iter().cloned());
        }
        parts.push(Part {
            node: node.clone(),
            args: part,
        });
    }
    let merge = match merge {
        _ if parts.len() == 1 => Merge::One,
        Some(merge) => merge,
        None => Merge::Positions {
            each: slots.into_iter().map(|(_, items)| items).collect(),
            total: (args.len() - 1) / step,
        },
    };
    Plan::Parts { parts, merge }
}

/// `SCAN cursor …`: the master the cursor names, with its own cursor.
fn scan(args: &[Bytes], map: &Map) -> Plan {
    let cursor = args
        .get(1)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u64>().ok());
    let Some(cursor) = cursor else {
        return Plan::Answer(Bytes::from_static(b"-ERR invalid cursor\r\n"));
    };
    let (index, theirs) = ((cursor % SCAN_NODES) as usize, cursor / SCAN_NODES);
    let Some(node) = map.masters().get(index) else {
        // The map lost a master since: the scan is over.
        return Plan::Answer(Bytes::from_static(b"*2\r\n$1\r\n0\r\n*0\r\n"));
    };
    let mut part = args.to_vec();
    part[1] = Bytes::from(theirs.to_string());
    Plan::Parts {
        parts: vec![Part {
            node: node.clone(),
            args: part,
        }],
        merge: Merge::Scan {
            index,
            masters: map.masters().len(),
        },
    }
}

/// The client's one reply from its parts' replies (in the parts' order).
pub fn merge(merge: &Merge, replies: &[Bytes]) -> Bytes {
    if let Some(error) = replies.iter().find(|r| super::reply::is_error(r)) {
        return error.clone();
    }
    let odd = || Bytes::from_static(b"-ERR the cluster's replies could not be merged\r\n");
    match merge {
        Merge::One | Merge::First => replies.first().cloned().unwrap_or_else(odd),
        Merge::Sum => {
            let total: Option<i64> = replies.iter().map(|r| integer(r)).sum();
            total.map_or_else(odd, |n| Bytes::from(format!(":{n}\r\n")))
        }
        Merge::Concat => {
            let Some(all) = replies.iter().map(elements).collect::<Option<Vec<_>>>() else {
                return odd();
            };
            array(all.into_iter().flatten())
        }
        Merge::Positions { each, total } => {
            let mut out: Vec<Option<Bytes>> = vec![None; *total];
            for (reply, positions) in replies.iter().zip(each) {
                let Some(items) = elements(reply).filter(|e| e.len() == positions.len()) else {
                    return odd();
                };
                for (item, &at) in items.into_iter().zip(positions) {
                    out[at] = Some(item);
                }
            }
            match out.into_iter().collect::<Option<Vec<_>>>() {
                Some(items) => array(items),
                None => odd(),
            }
        }
        Merge::Scan { index, masters } => {
            let Some([cursor, keys]) = replies
                .first()
                .and_then(elements)
                .and_then(|e| <[Bytes; 2]>::try_from(e).ok())
            else {
                return odd();
            };
            let Some(theirs) = bulk(&cursor).and_then(|c| std::str::from_utf8(c).ok()?.parse::<u64>().ok())
            else {
                return odd();
            };
            let next = match theirs {
                0 if index + 1 < *masters => (index + 1) as u64,
                0 => 0,
                c => c * SCAN_NODES + *index as u64,
            };
            let next = next.to_string();
            let mut out = BytesMut::new();
            out.put_slice(format!("*2\r\n${}\r\n{next}\r\n", next.len()).as_bytes());
            out.put_slice(&keys);
            out.freeze()
        }
    }
}

/// `:n` as a number.
fn integer(reply: &[u8]) -> Option<i64> {
    let line = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(line).ok()?.parse().ok()
}

/// A bulk string's bytes.
fn bulk(reply: &[u8]) -> Option<&[u8]> {
    let rest = reply.strip_prefix(b"$")?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    rest.get(end + 2..end + 2 + len)
}

/// An array's (or RESP3 set's) elements, each a whole reply.
pub fn elements(reply: &Bytes) -> Option<Vec<Bytes>> {
    if !matches!(reply.first(), Some(b'*' | b'~')) {
        return None;
    }
    let header = reply.iter().position(|&b| b == b'\n')? + 1;
    let n: usize = std::str::from_utf8(&reply[1..header - 2]).ok()?.parse().ok()?;
    let mut at = header;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = reply_len(&reply[at..]).ok()??;
        out.push(reply.slice(at..at + len));
        at += len;
    }
    (at == reply.len()).then_some(out)
}

fn array(items: impl IntoIterator<Item = Bytes>) -> Bytes {
    let items: Vec<Bytes> = items.into_iter().collect();
    let mut out = BytesMut::new();
    out.put_slice(format!("*{}\r\n", items.len()).as_bytes());
    for item in items {
        out.put_slice(&item);
    }
    out.freeze()
}

/// Where Redis sent the command instead: `-MOVED slot addr` or
/// `-ASK slot addr`, with `true` for ASK.
pub fn redirected(reply: &[u8]) -> Option<(bool, Addr)> {
    let line = reply.strip_prefix(b"-")?.strip_suffix(b"\r\n")?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    let ask = match words.next()? {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let _slot = words.next()?;
    Some((ask, words.next()?.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Table;
    use redis::Value;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ').map(b).collect()
    }

    /// Three masters: slots 0-5460, 5461-10922, 10923-16383.
    fn map() -> Map {
        let node = |port: i64| Value::Array(vec![Value::BulkString(b"h".to_vec()), Value::Int(port)]);
        let range = |a: i64, z: i64, port: i64| Value::Array(vec![Value::Int(a), Value::Int(z), node(port)]);
        Map::from_cluster_slots(
            &Value::Array(vec![
                range(0, 5460, 1),
                range(5461, 10922, 2),
                range(10923, 16383, 3),
            ]),
            "h",
        )
        .unwrap()
    }

    /// The table of the commands these tests route, from Redis 7.0.15's
    /// own `COMMAND INFO` reply (the raw bytes it sent).
    fn table() -> Table {
        let raw = include_bytes!("fixtures/command-info-7.0.resp");
        Table::from_reply(&redis::parse_redis_value(raw).unwrap()).unwrap()
    }

    fn plan_of(cmd: &str) -> Plan {
        let (table, map) = (table(), map());
        let a = args(cmd);
        plan(&a, &table.classify(&a), &map)
    }

    fn node(key: &str) -> String {
        map().owner(slot_of(key.as_bytes())).unwrap().clone()
    }

    #[test]
    fn one_slot_goes_to_its_master() {
        let Plan::Parts { parts, merge } = plan_of("GET foo") else {
            panic!()
        };
        assert_eq!(
            (parts.len(), &parts[0].node, merge),
            (1, &node("foo"), Merge::One)
        );
        let Plan::Parts { parts, .. } = plan_of("RENAME {u}a {u}b") else {
            panic!()
        };
        assert_eq!(parts[0].node, node("u"));
        assert_eq!(
            plan_of("RENAME foo bar"),
            Plan::Answer(Bytes::from_static(CROSSSLOT.as_bytes()))
        );
        let Plan::Parts { parts, .. } = plan_of("PUBLISH ch hello") else {
            panic!()
        };
        assert_eq!(parts.len(), 1, "keyless: any master");
    }

    #[test]
    fn multi_key_commands_split_per_slot_and_merge_back() {
        // foo (12182) and bar (5061) are on different masters.
        let Plan::Parts { parts, merge } = plan_of("MGET foo bar foo") else {
            panic!()
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].args, args("MGET foo foo"));
        assert_eq!(parts[1].args, args("MGET bar"));
        let replies = [b("*2\r\n$1\r\n1\r\n$1\r\n3\r\n"), b("*1\r\n$-1\r\n")];
        assert_eq!(
            merge_replies(&merge, &replies),
            b("*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n3\r\n")
        );

        let Plan::Parts { parts, merge } = plan_of("DEL foo bar") else {
            panic!()
        };
        assert_eq!((parts.len(), &merge), (2, &Merge::Sum));
        assert_eq!(merge_replies(&merge, &[b(":1\r\n"), b(":0\r\n")]), b(":1\r\n"));
        assert_eq!(
            merge_replies(&merge, &[b(":1\r\n"), b("-ERR no\r\n")]),
            b("-ERR no\r\n"),
            "an error wins"
        );

        let Plan::Parts { parts, merge } = plan_of("MSET foo 1 bar 2") else {
            panic!()
        };
        assert_eq!(parts[0].args, args("MSET foo 1"));
        assert_eq!(parts[1].args, args("MSET bar 2"));
        assert_eq!(merge_replies(&merge, &[b("+OK\r\n"), b("+OK\r\n")]), b("+OK\r\n"));

        let Plan::Parts { parts, merge } = plan_of("MGET {a}1 {a}2") else {
            panic!()
        };
        assert_eq!((parts.len(), merge), (1, Merge::One), "one slot: sent whole");
    }

    #[test]
    fn keys_and_dbsize_go_to_every_master() {
        let Plan::Parts { parts, merge } = plan_of("KEYS *") else {
            panic!()
        };
        assert_eq!(parts.len(), 3);
        let keys = [
            b("*1\r\n$1\r\na\r\n"),
            b("*0\r\n"),
            b("*2\r\n$1\r\nb\r\n$1\r\nc\r\n"),
        ];
        assert_eq!(
            merge_replies(&merge, &keys),
            b("*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n")
        );
        let Plan::Parts { merge, .. } = plan_of("DBSIZE") else {
            panic!()
        };
        assert_eq!(
            merge_replies(&merge, &[b(":1\r\n"), b(":2\r\n"), b(":3\r\n")]),
            b(":6\r\n")
        );
    }

    #[test]
    fn a_scan_walks_the_masters_in_turn() {
        let Plan::Parts { parts, merge } = plan_of("SCAN 0 COUNT 10") else {
            panic!()
        };
        assert_eq!(parts[0].args, args("SCAN 0 COUNT 10"));
        assert_eq!(parts[0].node, map().masters()[0]);
        // The first master has more: its cursor, tagged with its place.
        let more = merge_replies(&merge, &[b("*2\r\n$2\r\n17\r\n*1\r\n$1\r\na\r\n")]);
        assert_eq!(more, b("*2\r\n$5\r\n17408\r\n*1\r\n$1\r\na\r\n"));
        let Plan::Parts { parts, .. } = plan_of("SCAN 17408") else {
            panic!()
        };
        assert_eq!(
            (parts[0].args[1].as_ref(), &parts[0].node),
            (&b"17"[..], &map().masters()[0])
        );
        // It is done: the next master, from its start.
        let next = merge_replies(&merge, &[b("*2\r\n$1\r\n0\r\n*0\r\n")]);
        assert_eq!(next, b("*2\r\n$1\r\n1\r\n*0\r\n"));
        let Plan::Parts { parts, merge } = plan_of("SCAN 2") else {
            panic!()
        };
        assert_eq!(
            (parts[0].args[1].as_ref(), &parts[0].node),
            (&b"0"[..], &map().masters()[2])
        );
        assert_eq!(
            merge_replies(&merge, &[b("*2\r\n$1\r\n0\r\n*0\r\n")]),
            b("*2\r\n$1\r\n0\r\n*0\r\n"),
            "all done"
        );
        assert!(matches!(plan_of("SCAN x"), Plan::Answer(_)));
    }

    #[test]
    fn redirections_are_read() {
        assert_eq!(
            redirected(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some((false, "127.0.0.1:6381".into()))
        );
        assert_eq!(
            redirected(b"-ASK 3999 127.0.0.1:6381\r\n"),
            Some((true, "127.0.0.1:6381".into()))
        );
        assert_eq!(redirected(b"-ERR MOVED\r\n"), None);
        assert_eq!(redirected(b"+OK\r\n"), None);
    }

    fn merge_replies(m: &Merge, replies: &[Bytes]) -> Bytes {
        merge(m, replies)
    }
}
