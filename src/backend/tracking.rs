//! CLIENT TRACKING: how Redis tells the proxy what changed, and why the
//! cache built on it never keeps a value Redis no longer holds.
//!
//! The proxy reads through one RESP3 connection with `CLIENT TRACKING on`. Redis remembers every key a read on it touched and, when
//! another client changes one (a write, an expiry, an eviction), pushes an
//! `invalidate` message naming it, once, on the same connection. Three
//! facts make this race-free:
//!
//! 1. Redis runs commands one at a time and writes a connection's replies
//!    and pushes in the order it produced them. A GET that ran before a
//!    write has its reply ahead of that write's invalidation; a GET that
//!    ran after it reads the new value.
//! 2. The redis crate hands a push to [`Backend::on_push`] synchronously,
//!    in the connection's reader, before it delivers any reply that came
//!    after it. So by the time a fetch sees its reply, every invalidation
//!    Redis sent before that reply has been applied.
//! 3. A read stamps its key's generation before it is sent, and inserts
//!    only if the stamp is still current (see `lookup::generation`); an
//!    invalidation bumps the generation before it removes the entry. A GET
//!    whose reply is handled after the invalidation of a later write does
//!    not insert; one that inserted before it is removed by it.
//!
//! Not NOLOOP: with it Redis also keeps quiet about the keys it evicts
//! while running this connection's own commands (under `maxmemory`, any
//! command may evict), and those would stay cached; the coherence test
//! found that. So the proxy's own writes are echoed back as invalidations
//! too, and a SET through the proxy accounts for its echo (see
//! [`Backend::set`]).
//!
//! Whatever means invalidations may have been missed drops everything: a
//! null invalidation (FLUSHALL, FLUSHDB), the connection failing or being
//! replaced, Redis refusing `CLIENT TRACKING`. A new connection is used
//! only after tracking is on and everything cached before it is dropped.
//! Pushes are never queued, so none can be lost to a full channel.

use bytes::Bytes;
use redis::{PushInfo, PushKind, Value};

use super::Backend;
use crate::metrics::FlushReason;

/// What Redis's invalidations act on: the proxy's cached copy.
pub trait Coherence: Send + Sync + 'static {
    /// `keys` changed in Redis.
    fn invalidate(&self, keys: &[Bytes]);
    /// Anything may have changed; `reason` says why we think so.
    fn invalidate_all(&self, reason: FlushReason);
}

impl Backend {
    /// A push from the connection numbered `id`, handled before any reply
    /// that arrived after it is delivered.
    pub(super) fn on_push(&self, id: u64, push: PushInfo) {
        match push.kind {
            PushKind::Invalidate => match push.data.first().and_then(keys_of) {
                Some(keys) => {
                    self.metrics.invalidations.inc_by(keys.len() as u64);
                    self.coherence.invalidate(&keys);
                }
                // A null list (FLUSHALL, FLUSHDB), or one we cannot read.
                None => self.coherence.invalidate_all(FlushReason::Flushall),
            },
            PushKind::Disconnection => self.retire(id, FlushReason::Disconnected),
            _ => {}
        }
    }
}

/// The key names of an invalidation, or None for a null list or anything
/// else that does not name keys one by one.
fn keys_of(data: &Value) -> Option<Vec<Bytes>> {
    let Value::Array(names) = data else {
        return None;
    };
    names
        .iter()
        .map(|name| match name {
            Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
            Value::SimpleString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_payloads() {
        let keys = Value::Array(vec![
            Value::BulkString(b"a".to_vec()),
            Value::BulkString(b"b".to_vec()),
        ]);
        assert_eq!(keys_of(&keys), Some(vec![Bytes::from("a"), Bytes::from("b")]));
        assert_eq!(keys_of(&Value::Nil), None, "null: everything");
        let odd = Value::Array(vec![Value::Int(1)]);
        assert_eq!(keys_of(&odd), None, "unreadable: everything");
    }
}
