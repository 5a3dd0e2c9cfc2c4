//! The connection's life, as a small state machine run by one task:
//! `Connecting` (retry with backoff until Redis answers and, in `tracking`
//! mode, turns tracking on) → `Up` (health-checked with PING) → back to
//! `Connecting` when the connection breaks. Requests never wait for a
//! reconnect: while there is no connection they fail at once.
//!
//! In `tracking` mode there are two connections: the one reads go on,
//! with `CLIENT TRACKING on REDIRECT <id>`, and the one whose id that is,
//! which carries nothing but invalidations and the PINGs that show they
//! have all arrived. So an invalidation never waits behind a large reply.
//! Either one failing, or Redis saying `tracking-redir-broken` (the
//! invalidation connection died while Redis kept tracking), retires both
//! and drops everything cached.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, Value};
use tokio_util::sync::CancellationToken;

use super::Backend;
use crate::config::Invalidation;
use crate::metrics::FlushReason;

/// How often the supervisor checks an idle connection, at most (with a
/// tracking lease, every quarter of it).
pub(super) const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// Consecutive PING timeouts after which a connection is replaced.
const MAX_PING_TIMEOUTS: u32 = 3;
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Backend {
    /// Keeps a connection to Redis until `shutdown`.
    pub async fn supervise(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        let mut last_error = None;
        while !shutdown.is_cancelled() {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.connect(id) => r,
            };
            match attempt {
                Ok(link) => {
                    let tracking = self.mode == Invalidation::Tracking;
                    tracing::info!(target: "backend", tracking, "connected to Redis");
                    backoff = BACKOFF_MIN;
                    last_error = None;
                    self.publish(id, &link);
                    self.watch(id, link, &shutdown).await;
                    self.retire(id, FlushReason::Disconnected);
                    if !shutdown.is_cancelled() {
                        tracing::warn!(target: "backend", "lost the connection to Redis; reconnecting");
                    }
                }
                Err(e) => {
                    // Once per kind of failure, not once per retry.
                    if last_error.as_ref() != Some(&e) {
                        tracing::warn!(target: "backend", error = %e, "cannot use Redis; retrying");
                        last_error = Some(e);
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Connections ready for requests: in `tracking` mode, RESP3 with
    /// tracking on (redirected to the invalidation connection) and
    /// everything cached before them dropped.
    async fn connect(self: &Arc<Self>, id: u64) -> Result<Link, String> {
        let tracking = self.mode == Invalidation::Tracking;
        let mut config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(None);
        if tracking {
            // Handled synchronously in the connection's reader, so that an
            // invalidation is applied before the replies that follow it are
            // delivered, and none is ever dropped by a full queue.
            let backend = Arc::downgrade(self);
            config = config.set_push_sender(move |push: PushInfo| {
                if let Some(backend) = backend.upgrade() {
                    backend.on_push(id, push);
                }
                Ok::<(), Infallible>(())
            });
        }
        let open = || async {
            self.client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| {
                    // A Redis too old for HELLO answers with an error; a
                    // refused connection or a failed TLS handshake is I/O.
                    let hint = if tracking && !e.is_io_error() {
                        " (--invalidation tracking needs Redis 7 or later)"
                    } else {
                        ""
                    };
                    format!("{e}{hint}")
                })
        };
        let mut invalidations = None;
        let mut conn = if tracking {
            // The invalidation connection first: tracking is redirected to it.
            let mut inval = open().await?;
            self.check_version(&mut inval).await.inspect_err(|_| {
                self.coherence.invalidate_all(FlushReason::TrackingRefused);
            })?;
            let target = self.client_id(&mut inval).await?;
            name(&mut inval, "redis-proxy:invalidations", self.timeout).await;
            invalidations = Some(inval);
            let mut conn = open().await?;
            self.start_tracking(&mut conn, target).await?;
            conn
        } else {
            open().await?
        };
        let atomic = match tokio::time::timeout(self.timeout, probe_transactions(&mut conn)).await {
            Ok(Ok(atomic)) => atomic,
            _ => return Err("the MULTI/EXEC probe failed".into()),
        };
        if !atomic {
            tracing::warn!(target: "backend", "Redis refuses MULTI/EXEC; reading without it");
        }
        name(&mut conn, "redis-proxy:tracked", self.timeout).await;
        if tracking {
            // Whatever was cached before this connection may have changed
            // while nothing was telling us.
            self.coherence.invalidate_all(FlushReason::Connected);
        }
        Ok(Link {
            reads: conn,
            invalidations,
            atomic,
        })
    }

    /// `CLIENT ID` of a connection.
    async fn client_id(&self, conn: &mut MultiplexedConnection) -> Result<i64, String> {
        let mut id = redis::cmd("CLIENT");
        id.arg("ID");
        match tokio::time::timeout(self.timeout, id.query_async::<Value>(conn)).await {
            Ok(Ok(Value::Int(n))) => Ok(n),
            Ok(Ok(other)) => Err(format!("CLIENT ID answered {other:?}")),
            Ok(Err(e)) => {
                self.coherence.invalidate_all(FlushReason::TrackingRefused);
                Err(format!(
                    "CLIENT ID failed ({e}): allow the CLIENT command for this user, or start with \
                     --invalidation ttl"
                ))
            }
            Err(_) => Err("CLIENT ID timed out".into()),
        }
    }

    /// `CLIENT TRACKING on REDIRECT target`. A refusal (a user without the
    /// CLIENT command) drops everything cached.
    async fn start_tracking(&self, conn: &mut MultiplexedConnection, target: i64) -> Result<(), String> {
        let refused = self.tracking_on(conn, target).await?;
        match refused {
            None => Ok(()),
            Some(refused) => {
                self.coherence.invalidate_all(FlushReason::TrackingRefused);
                Err(refused)
            }
        }
    }

    /// `CLIENT TRACKING ON`: `Ok(Some(why))` if Redis refused it, `Err` if
    /// the connection failed.
    async fn tracking_on(
        &self,
        conn: &mut MultiplexedConnection,
        target: i64,
    ) -> Result<Option<String>, String> {
        let mut on = redis::cmd("CLIENT");
        // Not NOLOOP: it would also hide the evictions Redis makes while
        // running our own commands (under maxmemory), and those keys would
        // stay cached.
        on.arg("TRACKING").arg("ON").arg("REDIRECT").arg(target);
        let why = match tokio::time::timeout(self.timeout, on.query_async::<Value>(conn)).await {
            Ok(Ok(Value::Okay)) => return Ok(None),
            Ok(Ok(other)) => format!("{other:?}"),
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() => {
                return Err(format!("CLIENT TRACKING failed: {e}"));
            }
            // An error reply: NOPERM, or an unknown command.
            Ok(Err(e)) => e.to_string(),
            Err(_) => return Err("CLIENT TRACKING timed out".into()),
        };
        Ok(Some(format!(
            "Redis refused CLIENT TRACKING ({why}): allow the CLIENT command for this user, or \
             start with --invalidation ttl"
        )))
    }

    /// Redis 7 or later. Before 7.0, Redis could write an invalidation in
    /// the middle of the reply to the command that caused it (a read that
    /// expired a key, a write in a transaction), which a client reading
    /// replies in order takes for part of the reply: every later reply on
    /// the connection would be matched to the wrong request.
    async fn check_version(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        // HELLO, not INFO: a user limited to reads may still say HELLO.
        let mut hello = redis::cmd("HELLO");
        hello.arg(3);
        let reply = match tokio::time::timeout(self.timeout, hello.query_async::<Value>(conn)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(format!("HELLO 3 failed: {e}")),
            Err(_) => return Err("HELLO 3 timed out".into()),
        };
        let version = hello_version(&reply);
        match version.as_deref().and_then(major_version) {
            Some(major) if major >= 7 => Ok(()),
            _ => Err(format!(
                "--invalidation tracking needs Redis 7 or later, found version {}; start with \
                 --invalidation ttl",
                version.as_deref().unwrap_or("unknown")
            )),
        }
    }

    /// Returns when the connection numbered `id` is broken, has been
    /// retired, or shutdown begins. Probes both connections at once, the
    /// first time at once and then every [`Backend::probe_every`]: an
    /// answer on the invalidation connection renews the tracking lease from
    /// when its probe was sent (see `lookup::lease`).
    async fn watch(&self, id: u64, link: Link, shutdown: &CancellationToken) {
        let Link {
            reads: mut conn,
            mut invalidations,
            ..
        } = link;
        let mut ping_timeouts = 0;
        let mut first = true;
        loop {
            let broken = self.broken.notified();
            tokio::pin!(broken);
            // Registered before the check, so a retirement between the two
            // still wakes us.
            broken.as_mut().enable();
            if !self.is_current(id) {
                return;
            }
            let wait = if std::mem::take(&mut first) {
                Duration::ZERO
            } else {
                self.probe_every
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut broken => continue,
                _ = tokio::time::sleep(wait) => {}
            }
            let ping = redis::cmd("PING");
            let sent = Instant::now();
            let reads = ping.query_async::<Value>(&mut conn);
            let heard = async {
                let Some(inval) = invalidations.as_mut() else {
                    return Ok(Value::SimpleString("PONG".into()));
                };
                if self.node {
                    return self.probe_node(inval, id, sent).await;
                }
                // Its own reply: a PONG on a connection nobody else uses.
                let pong = ping.query_async::<Value>(inval).await?;
                if matches!(&pong, Value::SimpleString(p) if p == "PONG") && self.is_current(id) {
                    self.coherence.heard_from(sent);
                }
                Ok::<Value, redis::RedisError>(pong)
            };
            let pings = async {
                let (reads, heard) = tokio::join!(reads, heard);
                match heard? {
                    Value::SimpleString(p) if p == "PONG" => reads,
                    other => Ok(other),
                }
            };
            match tokio::time::timeout(self.timeout, pings).await {
                Ok(Ok(Value::SimpleString(pong))) if pong == "PONG" => {
                    ping_timeouts = 0;
                    self.set_ready(self.is_current(id));
                }
                Ok(Err(e))
                    if !(e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()) =>
                {
                    // An error reply (LOADING, say): connected but not serving.
                    self.set_ready(false);
                }
                Ok(Err(_)) => return,
                Ok(Ok(other)) => {
                    // Replies matched to the wrong requests: nothing on this
                    // connection can be trusted.
                    tracing::error!(target: "backend", reply = ?other, "PING answered out of step; reconnecting");
                    return;
                }
                Err(_) => {
                    // A slow Redis is not a dead one: keep the connection a
                    // while so requests see 504s, not a reconnect storm.
                    self.set_ready(false);
                    ping_timeouts += 1;
                    if ping_timeouts >= MAX_PING_TIMEOUTS {
                        return;
                    }
                }
            }
        }
    }
}

impl Backend {
    /// A cluster master's probe, on its invalidation connection: ROLE and
    /// CLUSTER INFO in one round trip. Whether the node is still a master,
    /// its cluster ok, and its `cluster_current_epoch` go to the node's
    /// coherence, which renews its lease only if all hold and no other
    /// master has seen a later epoch (a master cut off from the rest of the
    /// cluster answers PING while its replica takes over). Answers PONG for
    /// the health check when the connection works.
    async fn probe_node(
        &self,
        inval: &mut MultiplexedConnection,
        id: u64,
        sent: Instant,
    ) -> redis::RedisResult<Value> {
        let mut pipe = redis::pipe();
        pipe.cmd("ROLE").cmd("CLUSTER").arg("INFO");
        pipe.ignore_errors();
        let replies: Vec<Value> = pipe.query_async(inval).await?;
        let master = matches!(replies.first(), Some(Value::Array(role))
            if matches!(role.first(), Some(Value::BulkString(r)) if r == b"master"));
        let info = match replies.get(1) {
            Some(Value::BulkString(text)) => String::from_utf8_lossy(text).into_owned(),
            Some(Value::VerbatimString { text, .. }) => text.clone(),
            _ => String::new(),
        };
        let ok = info.contains("cluster_state:ok");
        let epoch = info
            .lines()
            .find_map(|l| l.strip_prefix("cluster_current_epoch:"))
            .and_then(|e| e.trim().parse().ok());
        if self.is_current(id) {
            self.coherence.node_probe(sent, master && ok, epoch);
        }
        Ok(Value::SimpleString("PONG".into()))
    }
}

/// The connections of one attempt: reads (tracked, in `tracking` mode),
/// and where their invalidations go.
pub(super) struct Link {
    pub(super) reads: MultiplexedConnection,
    pub(super) invalidations: Option<MultiplexedConnection>,
    pub(super) atomic: bool,
}

/// Names a connection for operators, and keeps it out of
/// `maxmemory-clients` eviction: a client asking for a huge reply must not
/// get it evicted, which would drop the whole cache. Refused by an old
/// Redis or a user without CLIENT, which is fine.
async fn name(conn: &mut MultiplexedConnection, name: &str, timeout: Duration) {
    for args in [["SETNAME", name], ["NO-EVICT", "on"]] {
        let mut client = redis::cmd("CLIENT");
        client.arg(&args[..]);
        let _ = tokio::time::timeout(timeout, client.query_async::<Value>(conn)).await;
    }
}

/// The `version` field of a HELLO reply.
fn hello_version(reply: &Value) -> Option<String> {
    let Value::Map(fields) = reply else {
        return None;
    };
    fields.iter().find_map(|(k, v)| match (k, v) {
        (Value::BulkString(k), Value::BulkString(v)) if k == b"version" => {
            Some(String::from_utf8_lossy(v).into_owned())
        }
        (Value::SimpleString(k), Value::SimpleString(v)) if k == "version" => Some(v.clone()),
        _ => None,
    })
}

/// The major number of a version such as `7.0.15`.
fn major_version(version: &str) -> Option<u32> {
    version.trim().split('.').next()?.parse().ok()
}

/// Whether this connection may use MULTI/EXEC: MULTI then DISCARD, on a
/// connection nobody else uses yet. Probing beats finding out from a failed
/// read: redis-rs 1.8 mishandles an atomic pipeline whose MULTI is refused
/// (an arithmetic overflow in its reply bookkeeping). `Err`: the connection
/// was left inside a transaction and must not be used.
async fn probe_transactions(conn: &mut MultiplexedConnection) -> Result<bool, ()> {
    match redis::cmd("MULTI").query_async::<Value>(conn).await {
        Ok(Value::Okay) => {}
        _ => return Ok(false),
    }
    match redis::cmd("DISCARD").query_async::<Value>(conn).await {
        Ok(Value::Okay) => Ok(true),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_versions() {
        let hello = |v: &str| {
            Value::Map(vec![
                (
                    Value::BulkString(b"server".to_vec()),
                    Value::BulkString(b"redis".to_vec()),
                ),
                (
                    Value::BulkString(b"version".to_vec()),
                    Value::BulkString(v.as_bytes().to_vec()),
                ),
            ])
        };
        assert_eq!(hello_version(&hello("7.0.15")).as_deref(), Some("7.0.15"));
        assert_eq!(major_version("7.0.15"), Some(7));
        assert_eq!(major_version("6.2.14"), Some(6));
        assert_eq!(major_version("10.0.0"), Some(10));
        assert_eq!(major_version("x"), None);
        assert_eq!(hello_version(&Value::Nil), None);
    }
}
