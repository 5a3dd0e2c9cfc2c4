//! CLIENT TRACKING: how Redis tells the proxy what changed, and why the
//! cache built on it never keeps a value Redis no longer holds.
//!
//! The proxy reads through one RESP3 connection with `CLIENT TRACKING on
//! REDIRECT <id>`: Redis remembers every key a read on it touched and,
//! when a client changes one (a write, an expiry, an eviction), pushes an
//! `invalidate` message naming it, once, on a second connection, the one
//! with that id, which carries nothing else. So an invalidation never
//! waits behind a large reply to a read. Three facts make this race-free:
//!
//! 1. A read stamps its key's generation before it is sent, and inserts
//!    only if the stamp is still current (see `lookup::generation`); an
//!    invalidation bumps the generation before it removes the entry.
//!    Whichever of a read's reply and a later write's invalidation the
//!    proxy handles first, the old value does not stay: handled after the
//!    invalidation, the reply is not inserted; inserted before it, it is
//!    removed by it. And the read made the key tracked before it ran, so
//!    every later change is invalidated.
//! 2. The redis crate hands a push to [`Backend::on_push`] synchronously,
//!    in the connection's reader, before it delivers any reply that came
//!    after it, and Redis queues a write's invalidation before it answers
//!    the writer. So once a PING on the invalidation connection, sent after
//!    some moment, is answered, every invalidation of a write acknowledged
//!    before that moment has been applied ([`Backend::caught_up`]): what
//!    read-your-writes and a SET through the proxy wait for.
//! 3. If the invalidation connection dies, Redis keeps tracking and only
//!    tells the read connection (`tracking-redir-broken`): that, or either
//!    connection failing, drops everything and reconnects both.
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
    /// A probe sent at `sent` on the invalidation connection was answered:
    /// every invalidation Redis queued before then has been applied.
    fn heard_from(&self, sent: std::time::Instant);
    /// The invalidation connection is gone: nothing renews the lease until
    /// another one answers.
    fn lost(&self);
    /// In a cluster: what may have changed is the keys of `slots` only.
    fn invalidate_slots(&self, slots: &[u16], reason: FlushReason);
    /// In a cluster: [`Coherence::heard_from`] for the lease of `slots`.
    fn heard_from_slots(&self, slots: &[u16], sent: std::time::Instant);
    /// In a cluster: [`Coherence::lost`] for the lease of `slots`.
    fn lost_slots(&self, slots: &[u16]);
    /// A cluster master's probe, sent at `sent`, was answered: `healthy` if
    /// the node said it is a master and its cluster is ok, with the
    /// node's `cluster_current_epoch`. Without a cluster to compare with,
    /// a healthy answer is [`Coherence::heard_from`].
    fn node_probe(&self, sent: std::time::Instant, healthy: bool, epoch: Option<u64>) {
        let _ = epoch;
        if healthy {
            self.heard_from(sent);
        }
    }
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
            // The invalidation connection is gone, and Redis kept tracking:
            // invalidations are being lost.
            PushKind::Other(kind) if kind == "tracking-redir-broken" => {
                self.retire(id, FlushReason::Disconnected)
            }
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
