//! The connection to the backing Redis.
//!
//! One multiplexed connection carries every request. A supervisor task owns
//! its life as a small state machine: `Connecting` (retry with backoff until
//! Redis answers) → `Up` (health-checked with PING) → back to `Connecting`
//! when the connection breaks. Requests never wait for a reconnect: while
//! there is no connection they fail at once with [`Error::Unavailable`], so
//! a Redis that is down is a fast 503, and only a Redis that is slow is a
//! 504. Redis being down at start is just the first `Connecting`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::metrics::Metrics;

/// How often the supervisor checks an idle connection.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// Consecutive PING timeouts after which a connection is replaced.
const MAX_PING_TIMEOUTS: u32 = 3;
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A string value and, when Redis has one, its remaining time to live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub value: Bytes,
    pub pttl: Option<Duration>,
}

pub struct Backend {
    client: Client,
    timeout: Duration,
    /// The live connection and its epoch (bumped on every new connection),
    /// so that a failure seen on an old connection cannot tear down a newer
    /// one.
    conn: RwLock<(u64, Option<MultiplexedConnection>)>,
    ready: AtomicBool,
    /// Whether reads go in MULTI/EXEC; cleared if Redis refuses it.
    atomic_reads: AtomicBool,
    broken: Notify,
    metrics: Arc<Metrics>,
}

impl Backend {
    /// Validates the URL; connecting happens in [`Backend::supervise`].
    pub fn new(url: &str, timeout: Duration, metrics: Arc<Metrics>) -> redis::RedisResult<Self> {
        Ok(Backend {
            client: Client::open(url)?,
            timeout,
            conn: RwLock::new((0, None)),
            ready: AtomicBool::new(false),
            atomic_reads: AtomicBool::new(true),
            broken: Notify::new(),
            metrics,
        })
    }

    /// True while Redis is connected and answered the last health check.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn set_ready(&self, up: bool) {
        self.ready.store(up, Ordering::Relaxed);
        self.metrics.backend_up.set(up as i64);
    }

    fn connection(&self) -> Option<(u64, MultiplexedConnection)> {
        let guard = self.conn.read().expect("backend lock");
        guard.1.clone().map(|c| (guard.0, c))
    }

    /// Installs a new connection (or none) under a new epoch.
    fn set_connection(&self, conn: Option<MultiplexedConnection>) {
        let mut guard = self.conn.write().expect("backend lock");
        guard.0 += 1;
        guard.1 = conn;
    }

    fn current_epoch(&self) -> u64 {
        self.conn.read().expect("backend lock").0
    }

    /// Read commands in one round trip: inside MULTI/EXEC where Redis
    /// allows it (see [`probe_transactions`]), so that each PTTL describes
    /// the value (or the nil) read with it, and "MGET says nil but PTTL says
    /// it exists" really means "not a string". Without it (an ACL user
    /// limited to `+@read`, say) the PTTL may be a moment younger than the
    /// value, which costs at most a slightly early expiry.
    ///
    /// Returns the replies and whether they were read in a transaction.
    async fn read(&self, build: impl Fn(&mut redis::Pipeline)) -> Result<(Vec<Value>, bool), Error> {
        let atomic = self.atomic_reads.load(Ordering::Relaxed);
        let mut pipe = redis::pipe();
        if atomic {
            pipe.atomic();
        }
        build(&mut pipe);
        pipe.ignore_errors();
        let replies = self
            .round_trip(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await?;
        Ok((replies, atomic))
    }

    /// `GET key` and `PTTL key` in one round trip. `Ok(None)`: no such key.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Fetched>, Error> {
        let (replies, _) = self
            .read(|pipe| {
                pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
            })
            .await?;
        let [value, pttl] = <[Value; 2]>::try_from(replies)
            .map_err(|r| Error::Reply(format!("expected 2 replies to GET+PTTL, got {}", r.len()).into()))?;
        let value = match value {
            Value::Nil => return Ok(None),
            Value::BulkString(v) => Bytes::from(v),
            Value::ServerError(e) if e.code() == "WRONGTYPE" => {
                return Err(Error::WrongType(server_error_text(&e)));
            }
            other => return Err(self.unexpected(other)),
        };
        Ok(Some(Fetched {
            value,
            pttl: pttl_of(pttl),
        }))
    }

    /// `MGET keys…` and `PTTL key` for each, in one round trip. Per key:
    /// `Ok(None)` for no such key, `WrongType` for a key that exists but is
    /// not a string (MGET says nil, PTTL says it exists).
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
        Ok(values
            .into_iter()
            .zip(replies)
            .map(|(value, pttl)| match (value, pttl) {
                (Value::Nil, Value::Int(-2)) => Ok(None),
                // Outside a transaction the key may have been created
                // between the two reads: nil is all MGET said.
                (Value::Nil, Value::Int(_)) if !atomic => Ok(None),
                (Value::Nil, Value::Int(_)) => Err(Error::WrongType(
                    "WRONGTYPE Operation against a key holding the wrong kind of value".into(),
                )),
                (Value::Nil, other) => Err(self.unexpected(other)),
                (Value::BulkString(v), pttl) => Ok(Some(Fetched {
                    value: Bytes::from(v),
                    pttl: pttl_of(pttl),
                })),
                (other, _) => Err(self.unexpected(other)),
            })
            .collect())
    }

    /// Any command, as the client sent it; Redis's reply as it came,
    /// error replies included.
    pub async fn forward(&self, args: &[Bytes]) -> Result<Value, Error> {
        let mut pipe = redis::pipe();
        let mut cmd = redis::cmd(std::str::from_utf8(&args[0]).unwrap_or("INVALID"));
        for arg in &args[1..] {
            cmd.arg(&arg[..]);
        }
        pipe.add_command(cmd).ignore_errors();
        let replies: Vec<Value> = self
            .round_trip(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await?;
        replies
            .into_iter()
            .next()
            .ok_or_else(|| self.unexpected(Value::Nil))
    }

    /// `SET key value`.
    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        let reply: Value = self
            .round_trip(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await?;
        match reply {
            Value::Okay | Value::SimpleString(_) => Ok(()),
            other => Err(self.unexpected(other)),
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
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some((epoch, conn)) = self.connection() else {
            self.metrics.backend_error("unavailable");
            return Err(Error::unavailable("not connected to Redis"));
        };
        self.metrics.backend_requests.inc();
        match tokio::time::timeout(self.timeout, request(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.classify(e, epoch)),
            Err(_) => {
                self.metrics.backend_error("timeout");
                Err(Error::Timeout(self.timeout))
            }
        }
    }

    fn classify(&self, e: redis::RedisError, epoch: u64) -> Error {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
        {
            self.metrics.backend_error("unavailable");
            if epoch == self.current_epoch() {
                self.set_ready(false);
                // notify_waiters stores no permit: a failure reported while
                // the supervisor is between connections is not held against
                // the next one.
                self.broken.notify_waiters();
            }
            Error::unavailable(e.to_string())
        } else if e.is_timeout() {
            self.metrics.backend_error("timeout");
            Error::Timeout(self.timeout)
        } else {
            self.metrics.backend_error("reply");
            Error::Reply(e.to_string().into())
        }
    }

    /// Keeps a connection to Redis until `shutdown`.
    pub async fn supervise(self: Arc<Self>, shutdown: CancellationToken) {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(None);
        let mut backoff = BACKOFF_MIN;
        let mut was_down_logged = false;
        while !shutdown.is_cancelled() {
            let attempt = self.client.get_multiplexed_async_connection_with_config(&config);
            let conn = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = attempt => r,
            };
            let conn = match conn {
                Ok(mut conn) => match tokio::time::timeout(self.timeout, probe_transactions(&mut conn)).await
                {
                    Ok(Ok(atomic)) => {
                        if !atomic {
                            tracing::warn!(target: "backend", "Redis refuses MULTI/EXEC; reading without it");
                        }
                        self.atomic_reads.store(atomic, Ordering::Relaxed);
                        Ok(conn)
                    }
                    _ => Err("the MULTI/EXEC probe failed".to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            match conn {
                Ok(conn) => {
                    tracing::info!(target: "backend", "connected to Redis");
                    backoff = BACKOFF_MIN;
                    was_down_logged = false;
                    self.set_connection(Some(conn.clone()));
                    self.set_ready(true);
                    self.watch(conn, &shutdown).await;
                    self.set_connection(None);
                    self.set_ready(false);
                    if !shutdown.is_cancelled() {
                        tracing::warn!(target: "backend", "lost the connection to Redis; reconnecting");
                    }
                }
                Err(e) => {
                    if !was_down_logged {
                        tracing::warn!(target: "backend", error = %e, "Redis unreachable; retrying");
                        was_down_logged = true;
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

    /// Returns when the connection is broken or shutdown begins.
    async fn watch(&self, mut conn: MultiplexedConnection, shutdown: &CancellationToken) {
        let mut ping_timeouts = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.broken.notified() => return,
                _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
            }
            let ping = redis::cmd("PING");
            match tokio::time::timeout(self.timeout, ping.query_async::<Value>(&mut conn)).await {
                Ok(Ok(_)) => {
                    ping_timeouts = 0;
                    self.set_ready(true);
                }
                Ok(Err(e))
                    if !(e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()) =>
                {
                    // An error reply (LOADING, say): connected but not serving.
                    self.set_ready(false);
                }
                Ok(Err(_)) => return,
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
