//! The slot map: which master serves each hash slot, as `CLUSTER SLOTS`
//! says. Pure: built from a reply, compared with the previous map to find
//! the slots whose owner changed.

use redis::Value;

use super::slot::SLOTS;

pub use crate::config::seeds::{Addr, join};

/// No master serves the slot.
const NONE: u16 = u16::MAX;

#[derive(Clone, PartialEq, Eq)]
pub struct Map {
    /// Per slot, an index into `masters`, or [`NONE`].
    owner: Box<[u16]>,
    masters: Vec<Addr>,
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let served = self.owner.iter().filter(|&&o| o != NONE).count();
        f.debug_struct("Map")
            .field("masters", &self.masters)
            .field("slots_served", &served)
            .finish()
    }
}

impl Default for Map {
    /// No slot served.
    fn default() -> Self {
        Map {
            owner: vec![NONE; SLOTS].into_boxed_slice(),
            masters: Vec::new(),
        }
    }
}

impl Map {
    /// From a `CLUSTER SLOTS` reply. `asked` is the host of the node that
    /// answered: an empty host in the reply means that one.
    pub fn from_cluster_slots(reply: &Value, asked: &str) -> Result<Map, String> {
        let Value::Array(ranges) = reply else {
            return Err(format!("CLUSTER SLOTS answered {reply:?}"));
        };
        let mut map = Map::default();
        for range in ranges {
            let Value::Array(fields) = range else {
                return Err(format!("a CLUSTER SLOTS range is {range:?}"));
            };
            let (start, end, master) = match fields.as_slice() {
                [Value::Int(start), Value::Int(end), master, ..] => (*start, *end, master),
                other => return Err(format!("a CLUSTER SLOTS range is {other:?}")),
            };
            if !(0..SLOTS as i64).contains(&start) || !(start..SLOTS as i64).contains(&end) {
                return Err(format!("CLUSTER SLOTS range {start}-{end} is out of bounds"));
            }
            let addr = node_addr(master, asked)?;
            let index = match map.masters.iter().position(|m| *m == addr) {
                Some(i) => i,
                None => {
                    map.masters.push(addr);
                    map.masters.len() - 1
                }
            } as u16;
            for slot in start..=end {
                map.owner[slot as usize] = index;
            }
        }
        Ok(map)
    }

    /// The master serving `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<&Addr> {
        match self.owner.get(slot as usize) {
            Some(&i) if i != NONE => self.masters.get(i as usize),
            _ => None,
        }
    }

    pub fn masters(&self) -> &[Addr] {
        &self.masters
    }

    /// The slots `master` serves.
    pub fn slots_of(&self, master: &str) -> Vec<u16> {
        let Some(index) = self.masters.iter().position(|m| m == master) else {
            return Vec::new();
        };
        (0..SLOTS as u16)
            .filter(|&s| self.owner[s as usize] == index as u16)
            .collect()
    }

    /// Whether every slot is served.
    pub fn is_complete(&self) -> bool {
        self.owner.iter().all(|&o| o != NONE)
    }

    /// The slots whose master differs between `self` and `newer`.
    pub fn moved(&self, newer: &Map) -> Vec<u16> {
        (0..SLOTS as u16)
            .filter(|&s| self.owner(s) != newer.owner(s))
            .collect()
    }
}

/// `host:port` of a node entry `[host, port, id, …]`.
fn node_addr(node: &Value, asked: &str) -> Result<Addr, String> {
    let Value::Array(fields) = node else {
        return Err(format!("a CLUSTER SLOTS node is {node:?}"));
    };
    let host = match fields.first() {
        Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
        Some(Value::SimpleString(h)) => h.clone(),
        Some(Value::Nil) => String::new(),
        other => return Err(format!("a CLUSTER SLOTS node host is {other:?}")),
    };
    let port = match fields.get(1) {
        Some(Value::Int(p)) if (1..=65535).contains(p) => *p,
        other => return Err(format!("a CLUSTER SLOTS node port is {other:?}")),
    };
    // `?` (unknown endpoint) or empty: the node that answered.
    let host = if host.is_empty() || host == "?" {
        asked.to_string()
    } else {
        host
    };
    Ok(join(&host, port as u16))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"0123".to_vec()),
        ])
    }

    fn range(start: i64, end: i64, master: Value, replica: Option<Value>) -> Value {
        let mut v = vec![Value::Int(start), Value::Int(end), master];
        v.extend(replica);
        Value::Array(v)
    }

    #[test]
    fn a_map_from_cluster_slots() {
        let reply = Value::Array(vec![
            range(0, 5460, node("127.0.0.1", 7000), Some(node("127.0.0.1", 7003))),
            range(5461, 10922, node("", 7001), None),
            range(10923, 16383, node("127.0.0.1", 7002), None),
        ]);
        let map = Map::from_cluster_slots(&reply, "10.0.0.9").unwrap();
        assert!(map.is_complete());
        assert_eq!(map.owner(0).unwrap(), "127.0.0.1:7000");
        assert_eq!(
            map.owner(5461).unwrap(),
            "10.0.0.9:7001",
            "empty host: the one asked"
        );
        assert_eq!(map.owner(16383).unwrap(), "127.0.0.1:7002");
        assert_eq!(map.masters().len(), 3);
        assert_eq!(map.slots_of("127.0.0.1:7000").len(), 5461);

        // Slots 0-999 move to 7001; 16000-16383 lose their master.
        let reply = Value::Array(vec![
            range(0, 999, node("10.0.0.9", 7001), None),
            range(1000, 5460, node("127.0.0.1", 7000), None),
            range(5461, 10922, node("10.0.0.9", 7001), None),
            range(10923, 15999, node("127.0.0.1", 7002), None),
        ]);
        let newer = Map::from_cluster_slots(&reply, "x").unwrap();
        assert!(!newer.is_complete());
        let moved = map.moved(&newer);
        assert_eq!(moved.len(), 1000 + 384);
        assert_eq!(moved.first(), Some(&0));
        assert_eq!(newer.owner(16000), None);
        assert!(map.moved(&map).is_empty());
    }

    #[test]
    fn bad_replies_are_errors() {
        assert!(Map::from_cluster_slots(&Value::Nil, "h").is_err());
        let out_of_bounds = Value::Array(vec![range(0, 16384, node("h", 1), None)]);
        assert!(Map::from_cluster_slots(&out_of_bounds, "h").is_err());
        let bad_port = Value::Array(vec![range(0, 1, node("h", 0), None)]);
        assert!(Map::from_cluster_slots(&bad_port, "h").is_err());
        assert_eq!(join("::1", 7000), "[::1]:7000");
    }
}
