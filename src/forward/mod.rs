//! Everything that is not a cached read: commands forwarded to Redis as
//! the client sent them, their replies passed back as Redis wrote them.
//!
//! - `shared`: one connection per protocol and database, shared by every
//!   client on it, pipelined. Redis shapes some replies per protocol
//!   (ZRANGE WITHSCORES, HGETALL, XREAD, CONFIG GET), so a RESP3 client's
//!   commands go on a RESP3 connection and a RESP2 client's on a RESP2 one.
//! - [`Pinned`]: a connection of one client's own, for the state a shared
//!   connection cannot carry (a transaction or WATCH, a blocking command,
//!   subscriptions, WAIT), bounded by `--max-pinned-connections`.
//! - the command table ([`crate::commands`]), loaded from Redis on every new
//!   shared connection.
//! - read-your-writes: [`Forwarder::after_write`].
//!
//! # Read-your-writes
//!
//! When a client has the reply to a write sent through the proxy, no later
//! read through this proxy returns what the write replaced. Before the
//! reply is passed on:
//!
//! - **Keys known from the command** (its key specs: INCR, HSET, RENAME,
//!   a transaction of such commands, EVAL's declared keys are not enough):
//!   each key's generation is bumped and its entry dropped. The write has
//!   run in Redis, so a read sent from now on reads the new value; a read
//!   already in flight may carry the old one, but it was stamped before the
//!   bump, so it does not insert, and one that inserted before the bump was
//!   dropped by it. No round trip, in either invalidation mode.
//! - **Keys not knowable** (a script may touch keys it did not declare;
//!   FLUSHDB, MIGRATE…), with tracking: every cached key was read on the
//!   tracked connection, so Redis invalidates it for the proxy whenever it
//!   changes, whoever changes it, and queues that invalidation before it
//!   answers the writer. The reply is held until a PING, sent on the
//!   invalidation connection *after* the reply arrived, has been answered:
//!   the connection's reader applies pushes before it hands over the
//!   replies that follow them (see
//!   [`crate::backend::Backend::caught_up`]). One PING serves every write
//!   waiting when it is sent. Without tracking, the whole cache is dropped.
//! - **SWAPDB**, which Redis does not report at all: the whole cache is
//!   dropped.

mod cluster;
mod link;
mod pinned;
pub mod reply;
pub mod route;
mod shared;

pub use link::{Server, Target, pack};
pub use pinned::Pinned;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use redis::ProtocolVersion;
use tokio::sync::Semaphore;

use crate::backend::Coherence;
use crate::cluster::{Seeds, Topology};
use crate::commands::Table;
use crate::config::Invalidation;
use crate::error::Error;
use crate::lookup::Reads;
use crate::metrics::{FlushReason, Metrics};
use shared::Shared;

/// Which Redis a connection goes to: empty for `--redis-url`, else a
/// cluster master's `host:port`.
pub type Node = Arc<str>;

/// Which connection: the Redis, the protocol (RESP3 or not) and the
/// database.
type Key = (Node, bool, i64);

/// Where forwarded commands can go.
pub enum Targets {
    /// `--redis-url`.
    One(Arc<Target>),
    /// The masters of a cluster, each reached as the seeds say.
    Cluster {
        seeds: Seeds,
        tls: Option<redis::TlsCertificates>,
        timeout: Duration,
        topology: Arc<Topology>,
        made: Mutex<HashMap<Node, Arc<Target>>>,
    },
}

impl Targets {
    pub fn cluster(
        seeds: Seeds,
        tls: Option<redis::TlsCertificates>,
        timeout: Duration,
        topology: Arc<Topology>,
    ) -> Targets {
        Targets::Cluster {
            seeds,
            tls,
            timeout,
            topology,
            made: Mutex::default(),
        }
    }

    fn get(&self, node: &Node) -> Result<Arc<Target>, Error> {
        match self {
            Targets::One(target) => Ok(target.clone()),
            Targets::Cluster {
                seeds,
                tls,
                timeout,
                made,
                ..
            } => {
                if let Some(target) = made.lock().get(node) {
                    return Ok(target.clone());
                }
                let target = Target::new(&seeds.url(node), tls.as_ref(), *timeout)
                    .map(Arc::new)
                    .map_err(|e| Error::unavailable(format!("{node}: {e}")))?;
                made.lock().insert(node.clone(), target.clone());
                Ok(target)
            }
        }
    }
}

/// Idle connections kept for pinning again, all protocols and databases
/// together (within the open files' headroom).
const IDLE_MAX: usize = 32;

pub struct Forwarder {
    targets: Targets,
    shared: Mutex<HashMap<Key, Shared>>,
    /// Held while connecting, per connection, so that clients arriving
    /// together open one connection, not one each; and a master that is
    /// slow to answer holds up only its own clients.
    connecting: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    table: RwLock<Option<Arc<Table>>>,
    server: RwLock<Server>,
    idle: Mutex<HashMap<Key, Vec<link::Link>>>,
    pins: Arc<Semaphore>,
    max_pinned: usize,
    /// `--forward-timeout`; None: no limit.
    pub timeout: Option<Duration>,
    reads: Reads,
    coherence: Arc<dyn Coherence>,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    pub fn new(
        targets: Targets,
        max_pinned: usize,
        timeout: Option<Duration>,
        reads: Reads,
        coherence: Arc<dyn Coherence>,
        metrics: Arc<Metrics>,
    ) -> Forwarder {
        Forwarder {
            targets,
            shared: Mutex::default(),
            connecting: Mutex::default(),
            table: RwLock::new(None),
            server: RwLock::new(Server::default()),
            idle: Mutex::default(),
            pins: Arc::new(Semaphore::new(max_pinned)),
            max_pinned,
            timeout,
            reads,
            coherence,
            metrics,
        }
    }

    /// The database of `--redis-url`: the one the cache holds (a cluster
    /// has only 0).
    pub fn default_db(&self) -> i64 {
        match &self.targets {
            Targets::One(target) => target.db,
            Targets::Cluster { .. } => 0,
        }
    }

    /// Where a command with nowhere in particular to go goes: the Redis, or
    /// a cluster's first master (its first seed before the map is known).
    pub fn default_node(&self) -> Node {
        match &self.targets {
            Targets::One(_) => Node::from(""),
            Targets::Cluster { topology, seeds, .. } => {
                let map = topology.map();
                let first = map.masters().first().unwrap_or(&seeds.nodes[0]);
                Node::from(first.as_str())
            }
        }
    }

    /// The slot map, in front of a cluster.
    pub fn topology(&self) -> Option<&Arc<Topology>> {
        match &self.targets {
            Targets::One(_) => None,
            Targets::Cluster { topology, .. } => Some(topology),
        }
    }

    /// The command table, loading it (connecting) if it never was.
    pub async fn table(&self) -> Result<Arc<Table>, Error> {
        if let Some(table) = self.table_now() {
            return Ok(table);
        }
        self.shared(&self.default_node(), ProtocolVersion::RESP2, self.default_db())
            .await?;
        self.table_now()
            .ok_or_else(|| Error::unavailable("the command table could not be read from Redis"))
    }

    pub fn table_now(&self) -> Option<Arc<Table>> {
        self.table.read().clone()
    }

    /// What Redis said of itself on the last connection.
    pub fn server(&self) -> Server {
        self.server.read().clone()
    }

    /// Sends `bytes` (`count` commands) on the shared connection of `proto`
    /// and `db`, and returns their replies, under `--forward-timeout`.
    pub async fn send(
        &self,
        proto: ProtocolVersion,
        db: i64,
        bytes: Bytes,
        count: usize,
    ) -> Result<Vec<Bytes>, Error> {
        self.send_to(&self.default_node(), proto, db, bytes, count).await
    }

    /// [`Forwarder::send`] to `node`.
    pub async fn send_to(
        &self,
        node: &Node,
        proto: ProtocolVersion,
        db: i64,
        bytes: Bytes,
        count: usize,
    ) -> Result<Vec<Bytes>, Error> {
        let shared = self.shared(node, proto, db).await?;
        self.metrics.backend_requests.inc();
        let replies = match self.timeout {
            Some(limit) => match tokio::time::timeout(limit, shared.send(bytes, count)).await {
                Ok(replies) => replies,
                Err(_) => {
                    self.metrics.backend_error("timeout");
                    return Err(Error::ForwardTimeout(limit));
                }
            },
            None => shared.send(bytes, count).await,
        };
        if replies.is_err() {
            self.metrics.backend_error("unavailable");
        }
        replies
    }

    async fn shared(&self, node: &Node, proto: ProtocolVersion, db: i64) -> Result<Shared, Error> {
        let key = (node.clone(), proto == ProtocolVersion::RESP3, db);
        if let Some(shared) = self.shared.lock().get(&key).filter(|s| s.is_alive()) {
            return Ok(shared.clone());
        }
        let lock = self.connecting.lock().entry(key.clone()).or_default().clone();
        let _connecting = lock.lock().await;
        if let Some(shared) = self.shared.lock().get(&key).filter(|s| s.is_alive()) {
            return Ok(shared.clone());
        }
        let target = self.targets.get(node)?;
        let (mut link, server) = target.connect(proto, db, "redis-proxy:shared").await?;
        // The table may differ after Redis restarted (an upgrade, a module
        // loaded): read it again on every new connection.
        let reply = link.call(&[b"COMMAND"]).await?;
        match redis::parse_redis_value(&reply)
            .map_err(|e| e.to_string())
            .and_then(|v| Table::from_reply(&v))
        {
            Ok(table) => *self.table.write() = Some(Arc::new(table)),
            Err(e) => tracing::warn!(target: "forward", error = %e, "cannot read the command table"),
        }
        *self.server.write() = server;
        let shared = Shared::start(link, self.metrics.backend_connections("shared"));
        self.shared.lock().insert(key, shared.clone());
        Ok(shared)
    }

    /// Checks that database `db` exists, by opening its shared connection.
    pub async fn check_db(&self, proto: ProtocolVersion, db: i64) -> Result<(), Error> {
        self.shared(&self.default_node(), proto, db).await.map(drop)
    }

    /// A connection of the client's own, in `proto` on `db`; an error past
    /// `--max-pinned-connections`.
    pub async fn pin(&self, proto: ProtocolVersion, db: i64) -> Result<Pinned, Error> {
        self.pin_to(&self.default_node(), proto, db).await
    }

    /// [`Forwarder::pin`] to `node`.
    pub async fn pin_to(&self, node: &Node, proto: ProtocolVersion, db: i64) -> Result<Pinned, Error> {
        let Ok(permit) = self.pins.clone().try_acquire_owned() else {
            return Err(Error::redis(
                "ERR",
                "max pinned connections reached (--max-pinned-connections)",
            ));
        };
        let key = (node.clone(), proto == ProtocolVersion::RESP3, db);
        let idle = self.idle.lock().get_mut(&key).and_then(Vec::pop);
        let link = match idle {
            Some(link) => {
                self.metrics.backend_connections("idle").dec();
                link
            }
            None => {
                let target = self.targets.get(node)?;
                target.connect(proto, db, "redis-proxy:pinned").await?.0
            }
        };
        Ok(Pinned::new(link, permit, key, &self.metrics))
    }

    /// Gives back a pinned connection: kept for the next client if its
    /// state is clean (nothing watched, queued, subscribed or blocked),
    /// else closed.
    pub fn unpin(&self, pinned: Pinned, clean: bool) {
        let (link, key) = pinned.into_parts();
        if !clean {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.values().map(Vec::len).sum::<usize>() < IDLE_MAX {
            idle.entry(key).or_default().push(link);
            self.metrics.backend_connections("idle").inc();
        }
    }

    pub fn max_pinned(&self) -> usize {
        self.max_pinned
    }

    /// Before a write's reply is passed on: makes sure the cache can no
    /// longer serve what the write replaced (see the module doc). `keys`:
    /// the keys the command names, None when they cannot be known;
    /// `swapdb`: the write swapped databases, which Redis does not report.
    pub async fn after_write(&self, keys: Option<Vec<Bytes>>, swapdb: bool) {
        match keys {
            _ if swapdb => self.coherence.invalidate_all(FlushReason::Write),
            Some(keys) if !keys.is_empty() => self.coherence.invalidate(&keys),
            _ => match self.reads.mode() {
                Invalidation::Tracking => self.reads.caught_up().await,
                Invalidation::Ttl => self.coherence.invalidate_all(FlushReason::Write),
            },
        }
    }
}
