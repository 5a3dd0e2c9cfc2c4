//! The connection to the backing Redis.
//!
//! One multiplexed connection carries every request; `supervise` keeps it
//! (connect, health-check, reconnect) and `tracking` explains how, in
//! `tracking` mode, the same connection carries Redis's invalidations and
//! why that keeps the cache coherent. Requests never wait for a reconnect:
//! while there is no connection they fail at once with
//! [`Error::Unavailable`], so a Redis that is down is a fast 503, and only
//! a Redis that is slow is a 504. Redis being down at start is just the
//! first attempt to connect failing.

mod supervise;
mod tracking;

pub use tracking::Coherence;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{Client, IntoConnectionInfo, ProtocolVersion, Value};
use tokio::sync::Notify;

use crate::config::Invalidation;
use crate::error::Error;
use crate::metrics::{FlushReason, Metrics};

/// A string value and, when Redis has one, its remaining time to live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub value: Bytes,
    pub pttl: Option<Duration>,
}

/// What a SET through the proxy leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Redis holds the value and will say when it changes (or, in `ttl`
    /// mode, nothing would anyway): it may be cached, for at most `ttl`, if
    /// nothing but the write's own `echoes` (invalidations of the key that
    /// the write itself caused, already applied) changed the key meanwhile.
    Cacheable { ttl: Option<Duration>, echoes: u64 },
    /// Written, but nothing would tell us when it changes: not cacheable.
    NotCacheable,
}

/// The connection requests use, and its number. Numbers only grow, so a
/// failure or a push from an old connection cannot retire a newer one.
struct Published {
    id: u64,
    conn: Option<MultiplexedConnection>,
    /// In `tracking` mode, the connection Redis sends the invalidations of
    /// `conn`'s reads to (`CLIENT TRACKING on REDIRECT`), so that they never
    /// wait behind a large reply.
    invalidations: Option<MultiplexedConnection>,
    /// Whether reads on it go in MULTI/EXEC: probed on each connection, and
    /// kept with it, so a request never uses another connection's answer.
    atomic: bool,
}

/// The backing Redis: requests on its connection, and the supervisor
/// ([`Backend::supervise`]) that keeps that connection.
pub struct Backend {
    client: Client,
    mode: Invalidation,
    timeout: Duration,
    conn: RwLock<Published>,
    next_id: AtomicU64,
    ready: AtomicBool,
    broken: Notify,
    coherence: Arc<dyn Coherence>,
    metrics: Arc<Metrics>,
    barrier: Barrier,
    /// How often the supervisor probes the connections.
    probe_every: Duration,
    /// One master of a cluster: its probe also asks ROLE and CLUSTER INFO,
    /// and the process-wide gauges are the cluster's to set.
    node: bool,
}

impl Backend {
    /// Validates the URL; connecting happens in [`Backend::supervise`]. In
    /// `tracking` mode Redis's invalidations go to `coherence`.
    pub fn new(
        url: &str,
        tls: Option<redis::TlsCertificates>,
        timeout: Duration,
        mode: Invalidation,
        coherence: Arc<dyn Coherence>,
        metrics: Arc<Metrics>,
    ) -> redis::RedisResult<Self> {
        let mut info = url.into_connection_info()?;
        if mode == Invalidation::Tracking {
            // Pushes need RESP3.
            let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        let client = match tls {
            Some(certificates) => Client::build_with_tls(info, certificates)?,
            None => Client::open(info)?,
        };
        Ok(Backend {
            client,
            mode,
            timeout,
            conn: RwLock::new(Published {
                id: 0,
                conn: None,
                invalidations: None,
                atomic: false,
            }),
            next_id: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            broken: Notify::new(),
            coherence,
            metrics,
            barrier: Barrier::default(),
            probe_every: supervise::HEALTH_INTERVAL,
            node: false,
        })
    }

    /// A master of a cluster: its probe also asks ROLE and CLUSTER INFO,
    /// and the process-wide gauges are the cluster's to set.
    pub fn as_cluster_node(mut self) -> Self {
        self.node = true;
        self
    }

    /// Probes often enough to keep a tracking lease of `lease` held: four
    /// probes per lease, so one slow answer does not lapse it.
    pub fn with_lease(mut self, lease: Option<Duration>) -> Self {
        if let Some(lease) = lease {
            self.probe_every = self.probe_every.min(lease / 4);
        }
        self
    }

    pub fn mode(&self) -> Invalidation {
        self.mode
    }

    /// True while Redis is connected, answered the last health check and,
    /// in `tracking` mode, tracking is on (a connection is only used once
    /// it is).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn set_ready(&self, up: bool) {
        self.ready.store(up, Ordering::Relaxed);
        if !self.node {
            self.metrics.backend_up.set(up as i64);
        }
    }

    fn connection(&self) -> Option<(u64, MultiplexedConnection, bool)> {
        let published = self.conn.read().expect("backend lock");
        published
            .conn
            .clone()
            .map(|c| (published.id, c, published.atomic))
    }

    fn is_current(&self, id: u64) -> bool {
        let published = self.conn.read().expect("backend lock");
        published.id == id && published.conn.is_some()
    }

    /// The connection invalidations arrive on (tracking mode, connected).
    fn invalidation_connection(&self) -> Option<MultiplexedConnection> {
        self.conn.read().expect("backend lock").invalidations.clone()
    }

    /// Makes connection `id` the one requests use.
    fn publish(&self, id: u64, link: &supervise::Link) {
        *self.conn.write().expect("backend lock") = Published {
            id,
            conn: Some(link.reads.clone()),
            invalidations: link.invalidations.clone(),
            atomic: link.atomic,
        };
        self.set_ready(true);
        if self.node {
            return;
        }
        self.metrics.backend_connections("reads").set(1);
        if self.mode == Invalidation::Tracking {
            self.metrics.tracking.set(1);
            self.metrics.backend_connections("invalidations").set(1);
        }
    }

    /// Stops requests from using connection `id`, if it is still the one
    /// they use. In `tracking` mode everything cached is dropped: the
    /// invalidations that connection would have brought may be lost. The
    /// connection is unpublished first, so a read stamped after the drop
    /// cannot be sent on it.
    fn retire(&self, id: u64, reason: FlushReason) {
        {
            let mut published = self.conn.write().expect("backend lock");
            if published.id != id || published.conn.is_none() {
                return;
            }
            published.conn = None;
            published.invalidations = None;
        }
        self.set_ready(false);
        if !self.node {
            self.metrics.backend_connections("reads").set(0);
            self.metrics.backend_connections("invalidations").set(0);
        }
        if self.mode == Invalidation::Tracking {
            if !self.node {
                self.metrics.tracking.set(0);
            }
            self.coherence.lost();
            self.coherence.invalidate_all(reason);
        }
        self.broken.notify_waiters();
    }

    /// Read commands in one round trip.
    ///
    /// With `tracking`, a plain pipeline: if the key changes between the
    /// GET and its PTTL, Redis pushes an invalidation ahead of the PTTL's
    /// reply, and the value is not cached; so a cached value's PTTL is its
    /// own. With `ttl`, nothing would tell us, so the reads go inside
    /// MULTI/EXEC where Redis allows it (an ACL user limited to `+@read`
    /// may not: then the PTTL may be a moment younger than the value, which
    /// costs at most a slightly early expiry).
    ///
    /// Returns the replies and whether they were read in a transaction.
    async fn read(&self, build: impl Fn(&mut redis::Pipeline)) -> Result<(Vec<Value>, bool), Error> {
        // Not on a cluster node: a MOVED inside MULTI aborts the whole
        // transaction, and the redirection would be lost in the abort.
        let transactions = self.mode == Invalidation::Ttl && !self.node;
        self.round_trip(|mut conn, atomic| {
            let atomic = atomic && transactions;
            let mut pipe = redis::pipe();
            if atomic {
                pipe.atomic();
            }
            build(&mut pipe);
            pipe.ignore_errors();
            async move { pipe.query_async(&mut conn).await.map(|r| (r, atomic)) }
        })
        .await
    }

    /// `GET key` and `PTTL key` in one round trip. `Ok(None)`: no such key.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Fetched>, Error> {
        self.get_each(&[key]).await?.pop().expect("one key")
    }

    /// `GET key` and `PTTL key` for each key, in one round trip: per key,
    /// its value, `Ok(None)` for no such key, or `WrongType`.
    pub async fn get_each(&self, keys: &[&[u8]]) -> Result<Vec<Result<Option<Fetched>, Error>>, Error> {
        let (replies, _) = self
            .read(|pipe| {
                for key in keys {
                    pipe.cmd("GET").arg(*key).cmd("PTTL").arg(*key);
                }
            })
            .await?;
        if replies.len() != 2 * keys.len() {
            let got = replies.len();
            return Err(Error::Reply(
                format!("expected {} replies to GET+PTTL, got {got}", 2 * keys.len()).into(),
            ));
        }
        let mut replies = replies.into_iter();
        let mut each = Vec::with_capacity(keys.len());
        while let (Some(value), Some(pttl)) = (replies.next(), replies.next()) {
            each.push(match value {
                Value::Nil => Ok(None),
                Value::BulkString(v) => Ok(Some(Fetched {
                    value: Bytes::from(v),
                    pttl: pttl_of(pttl),
                })),
                Value::ServerError(e) if e.code() == "WRONGTYPE" => {
                    Err(Error::WrongType(server_error_text(&e)))
                }
                other => Err(self.unexpected(other)),
            });
        }
        Ok(each)
    }

    /// `GET key` and `PTTL key`, each after ASKING: a cluster node that is
    /// importing the key's slot answers it (Redis said `-ASK`). On the
    /// tracked connection, so the key is tracked there.
    pub async fn get_asking(&self, key: &[u8]) -> Result<Option<Fetched>, Error> {
        // Never in MULTI (as `read` may put it in `ttl` mode): ASKING only
        // counts for the command right after it.
        let replies: Vec<Value> = self
            .round_trip(|mut conn, _| async move {
                let mut pipe = redis::pipe();
                pipe.cmd("ASKING")
                    .cmd("GET")
                    .arg(key)
                    .cmd("ASKING")
                    .cmd("PTTL")
                    .arg(key);
                pipe.ignore_errors();
                pipe.query_async(&mut conn).await
            })
            .await?;
        match <[Value; 4]>::try_from(replies) {
            Ok([_, Value::Nil, _, _]) => Ok(None),
            Ok([_, Value::BulkString(v), _, pttl]) => Ok(Some(Fetched {
                value: Bytes::from(v),
                pttl: pttl_of(pttl),
            })),
            Ok([_, Value::ServerError(e), _, _]) if e.code() == "WRONGTYPE" => {
                Err(Error::WrongType(server_error_text(&e)))
            }
            Ok([_, other, _, _]) => Err(self.unexpected(other)),
            Err(other) => Err(self.unexpected(Value::Array(other))),
        }
    }

    /// `MGET keys…` and `PTTL key` for each, in one round trip. Per key:
    /// `Ok(None)` for no such key, `WrongType` for a key that exists but is
    /// not a string (MGET says nil, PTTL says it exists). Outside a
    /// transaction that answer is ambiguous (the key may have been created
    /// between the two), so those keys, rare, are asked again with GET.
    pub async fn get_many(&self, keys: &[Bytes]) -> Result<Vec<Result<Option<Fetched>, Error>>, Error> {
        let (replies, atomic) = self
            .read(|pipe| {
                pipe.cmd("MGET");
                for key in keys {
                    pipe.arg(&key[..]);
                }
                for key in keys {
                    pipe.cmd("PTTL").arg(&key[..]);
                }
            })
            .await?;
        let mut replies = replies.into_iter();
        if replies.len() != keys.len() + 1 {
            return Err(self.unexpected(Value::Array(replies.collect())));
        }
        let values = match replies.next() {
            Some(Value::Array(values)) if values.len() == keys.len() => values,
            Some(other) => return Err(self.unexpected(other)),
            None => return Err(self.unexpected(Value::Nil)),
        };
        let mut found = Vec::with_capacity(keys.len());
        let mut ambiguous = Vec::new();
        for (i, (value, pttl)) in values.into_iter().zip(replies).enumerate() {
            found.push(match (value, pttl) {
                (Value::Nil, Value::Int(-2)) => Ok(None),
                (Value::Nil, Value::Int(_)) if !atomic => {
                    ambiguous.push(i);
                    Ok(None)
                }
                (Value::Nil, Value::Int(_)) => Err(Error::WrongType(
                    "WRONGTYPE Operation against a key holding the wrong kind of value".into(),
                )),
                (Value::Nil, other) => Err(self.unexpected(other)),
                (Value::BulkString(v), pttl) => Ok(Some(Fetched {
                    value: Bytes::from(v),
                    pttl: pttl_of(pttl),
                })),
                (other, _) => Err(self.unexpected(other)),
            });
        }
        if !ambiguous.is_empty() {
            let again: Vec<&[u8]> = ambiguous.iter().map(|&i| &keys[i][..]).collect();
            for (i, answer) in ambiguous.into_iter().zip(self.get_each(&again).await?) {
                found[i] = answer;
            }
        }
        Ok(found)
    }

    /// `SET key value`.
    ///
    /// In `tracking` mode a plain SET is not a read, so Redis would not
    /// track the key for us, and a value cached after it would never be
    /// invalidated. So the SET goes in a transaction that reads the key
    /// before (EXISTS) and after (PTTL) it: tracked before, the SET always
    /// invalidates it for us exactly once (Redis sends a connection the
    /// invalidations its own writes cause); tracked after, the next change
    /// is pushed. That invalidation goes to the invalidation connection;
    /// [`Backend::caught_up`] waits for it, so when this returns the echo
    /// has been applied.
    /// Where MULTI is refused, a plain SET, and the value is not cacheable.
    pub async fn set(self: &Arc<Self>, key: &[u8], value: &[u8]) -> Result<Written, Error> {
        let tracked = self.mode == Invalidation::Tracking;
        let (replies, in_transaction) = self
            .round_trip(|mut conn, atomic| {
                let in_transaction = tracked && atomic;
                let mut pipe = redis::pipe();
                if in_transaction {
                    pipe.cmd("MULTI")
                        .cmd("EXISTS")
                        .arg(key)
                        .cmd("SET")
                        .arg(key)
                        .arg(value)
                        .cmd("PTTL")
                        .arg(key)
                        .cmd("EXEC");
                } else {
                    pipe.cmd("SET").arg(key).arg(value);
                }
                pipe.ignore_errors();
                async move {
                    let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
                    Ok((replies, in_transaction))
                }
            })
            .await?;
        if in_transaction {
            // The write's own invalidation (the echo counted below) comes on
            // the invalidation connection: applied before we go on.
            self.caught_up().await;
        }
        let mut replies = replies.into_iter().rev();
        if !in_transaction {
            return match replies.next() {
                Some(Value::Okay | Value::SimpleString(_)) if tracked => Ok(Written::NotCacheable),
                Some(Value::Okay | Value::SimpleString(_)) => Ok(Written::Cacheable { ttl: None, echoes: 0 }),
                other => Err(self.unexpected(other.unwrap_or(Value::Nil))),
            };
        }
        match replies.next() {
            Some(Value::Array(exec)) => match <[Value; 3]>::try_from(exec) {
                Ok([_, Value::Okay, pttl]) => Ok(Written::Cacheable {
                    ttl: pttl_of(pttl),
                    echoes: 1,
                }),
                Ok([_, other, _]) => Err(self.unexpected(other)),
                Err(other) => Err(self.unexpected(Value::Array(other))),
            },
            other => Err(self.unexpected(other.unwrap_or(Value::Nil))),
        }
    }

    fn unexpected(&self, reply: Value) -> Error {
        self.metrics.backend_error("reply");
        match reply {
            Value::ServerError(e) => Error::Reply(server_error_text(&e)),
            other => Error::Reply(format!("unexpected reply {other:?}").into()),
        }
    }

    /// Runs one request on the current connection under the backend timeout
    /// and sorts its failure into unavailable / timeout / reply.
    async fn round_trip<T, F, Fut>(&self, request: F) -> Result<T, Error>
    where
        F: FnOnce(MultiplexedConnection, bool) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some((id, conn, atomic)) = self.connection() else {
            self.metrics.backend_error("unavailable");
            return Err(Error::unavailable("not connected to Redis"));
        };
        self.metrics.backend_requests.inc();
        match tokio::time::timeout(self.timeout, request(conn, atomic)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.classify(e, id)),
            Err(_) => {
                self.metrics.backend_error("timeout");
                Err(Error::Timeout(self.timeout))
            }
        }
    }

    fn classify(&self, e: redis::RedisError, id: u64) -> Error {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
        {
            self.metrics.backend_error("unavailable");
            self.retire(id, FlushReason::Disconnected);
            Error::unavailable(e.to_string())
        } else if e.is_timeout() {
            self.metrics.backend_error("timeout");
            Error::Timeout(self.timeout)
        } else {
            self.metrics.backend_error("reply");
            Error::Reply(e.to_string().into())
        }
    }
}

/// A PTTL reply as a time to live: -1 is none; -2 (gone since the GET) or
/// anything odd is zero, so the value is served but not cached.
fn pttl_of(reply: Value) -> Option<Duration> {
    match reply {
        Value::Int(-1) => None,
        Value::Int(ms) if ms >= 0 => Some(Duration::from_millis(ms as u64)),
        _ => Some(Duration::ZERO),
    }
}

/// `CODE detail`, as Redis wrote it.
fn server_error_text(e: &redis::ServerError) -> std::sync::Arc<str> {
    match e.details() {
        Some(details) => format!("{} {details}", e.code()).into(),
        None => e.code().into(),
    }
}

/// Writes waiting for the invalidations they caused to be applied, and
/// whether a task is sending the PINGs that release them.
#[derive(Default)]
pub(crate) struct Barrier {
    state: parking_lot::Mutex<(Vec<tokio::sync::oneshot::Sender<()>>, bool)>,
}

impl Backend {
    /// Returns once every invalidation Redis queued for the proxy before
    /// this call has been applied to the cache: a PING sent after the call
    /// on the tracked connection has been answered (its reply follows those
    /// pushes, and the reader applies pushes before it hands over later
    /// replies). One PING serves every caller waiting when it is sent. If
    /// the PING fails, everything cached is dropped instead, which is as
    /// safe: what a read sends after that runs after the writes that came
    /// before. Without a connection nothing is cached (it was dropped when
    /// the connection went, and a new one drops it again before use).
    pub async fn caught_up(self: &Arc<Self>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut state = self.barrier.state.lock();
            state.0.push(tx);
            !std::mem::replace(&mut state.1, true)
        };
        if start {
            let this = Arc::clone(self);
            tokio::spawn(async move { this.release_barriers().await });
        }
        let _ = rx.await;
    }

    async fn release_barriers(&self) {
        loop {
            let waiting = {
                let mut state = self.barrier.state.lock();
                if state.0.is_empty() {
                    state.1 = false;
                    return;
                }
                std::mem::take(&mut state.0)
            };
            self.metrics.write_barriers.inc();
            if let Some(mut conn) = self.invalidation_connection() {
                let ping = redis::cmd("PING");
                let sent = std::time::Instant::now();
                let answered = tokio::time::timeout(self.timeout, ping.query_async::<Value>(&mut conn)).await;
                if matches!(answered, Ok(Ok(_))) {
                    // As good a probe as the supervisor's (not in a
                    // cluster, where the probe must also show the node is
                    // still a master).
                    if !self.node {
                        self.coherence.heard_from(sent);
                    }
                } else {
                    self.coherence.invalidate_all(FlushReason::Write);
                }
            }
            for tx in waiting {
                let _ = tx.send(());
            }
        }
    }
}
