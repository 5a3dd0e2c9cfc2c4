//! The cluster as the proxy keeps it: the slot map, refreshed every second
//! and at once when Redis redirects a request or a node's probe fails; and
//! per master a [`Backend`], built as the single Redis's is (a read
//! connection with `CLIENT TRACKING on REDIRECT` to an invalidation
//! connection of its own), so that each node's invalidations reach the
//! cache before any reply that node sent after them, and are known to come
//! from that node.
//!
//! What a node's events drop ([`NodeCoherence`]): an invalidated key; every
//! entry of the node's slots on a null invalidation, a lost connection or a
//! reconnect; and, when the map changes, the entries of every slot whose
//! master changed, before any key of those slots is served again (the map
//! is swapped, those slots' leases revoked and their entries dropped under
//! the map's write lock). A node's lease covers the slots the map gives it
//! when its probe (ROLE and CLUSTER INFO) is answered "master" and
//! "cluster_state:ok".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use redis::Value;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::Seeds;
use super::slot::slot_of;
use super::topology::{Addr, Map};
use crate::backend::{Backend, Coherence, Fetched, Written};
use crate::config::Invalidation;
use crate::error::Error;
use crate::metrics::{FlushReason, Metrics};

/// How often the slot map is read when nothing asks for it sooner.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// The least time between two reads of the map, however many ask.
const REFRESH_GAP: Duration = Duration::from_millis(50);
/// Redirections followed for one key before giving up.
const MAX_REDIRECTS: usize = 4;

/// The slot map and the means to ask for a fresher one.
pub struct Topology {
    map: RwLock<Arc<Map>>,
    /// Each master's `cluster_current_epoch`, from its last probe.
    epochs: Mutex<HashMap<Addr, u64>>,
    refresh: Notify,
    /// Counts the maps applied, for those waiting on a refresh.
    applied: watch::Sender<u64>,
}

impl Topology {
    pub fn map(&self) -> Arc<Map> {
        self.map.read().clone()
    }

    /// Asks for the map to be read again soon.
    pub fn refresh_soon(&self) {
        self.refresh.notify_one();
    }

    /// Asks for a fresh map and waits (at most `limit`) until one is applied.
    async fn refreshed(&self, limit: Duration) {
        let mut applied = self.applied.subscribe();
        applied.mark_unchanged();
        self.refresh_soon();
        let _ = tokio::time::timeout(limit, applied.changed()).await;
    }
}

struct Node {
    backend: Arc<Backend>,
    stop: CancellationToken,
}

pub struct Cluster {
    seeds: Seeds,
    tls: Option<redis::TlsCertificates>,
    timeout: Duration,
    mode: Invalidation,
    lease: Option<Duration>,
    topology: Arc<Topology>,
    nodes: Mutex<HashMap<Addr, Node>>,
    coherence: Arc<dyn Coherence>,
    metrics: Arc<Metrics>,
}

impl Cluster {
    pub fn new(
        seeds: Seeds,
        tls: Option<redis::TlsCertificates>,
        timeout: Duration,
        mode: Invalidation,
        lease: Option<Duration>,
        coherence: Arc<dyn Coherence>,
        metrics: Arc<Metrics>,
    ) -> Cluster {
        Cluster {
            seeds,
            tls,
            timeout,
            mode,
            lease,
            topology: Arc::new(Topology {
                map: RwLock::new(Arc::new(Map::default())),
                epochs: Mutex::default(),
                refresh: Notify::new(),
                applied: watch::Sender::new(0),
            }),
            nodes: Mutex::default(),
            coherence,
            metrics,
        }
    }

    pub fn mode(&self) -> Invalidation {
        self.mode
    }

    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    /// Ready while the map is known and a master is usable: one master
    /// down makes its keys fail, not the whole proxy leave a balancer.
    pub fn is_ready(&self) -> bool {
        !self.topology.map().masters().is_empty() && self.nodes.lock().values().any(|n| n.backend.is_ready())
    }

    /// The masters' backends, by address.
    pub fn backends(&self) -> Vec<(Addr, Arc<Backend>)> {
        let nodes = self.nodes.lock();
        nodes
            .iter()
            .map(|(a, n)| (a.clone(), n.backend.clone()))
            .collect()
    }

    fn backend(&self, addr: &str) -> Option<Arc<Backend>> {
        self.nodes.lock().get(addr).map(|n| n.backend.clone())
    }

    /// The backend serving `slot` now, or why there is none.
    fn backend_for(&self, slot: u16) -> Result<Arc<Backend>, Error> {
        let map = self.topology.map();
        let addr = map
            .owner(slot)
            .ok_or_else(|| Error::unavailable(format!("no master serves slot {slot}")))?;
        self.backend(addr)
            .ok_or_else(|| Error::unavailable(format!("not connected to {addr}")))
    }

    /// Reads the map until `shutdown`; keeps a backend per master.
    pub async fn supervise(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_error: Option<String> = None;
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            match self.read_map().await {
                Ok(map) => {
                    if last_error.take().is_some() {
                        tracing::info!(target: "cluster", "read the slot map again");
                    }
                    self.apply(map, &shutdown);
                }
                Err(e) => {
                    if last_error.as_ref() != Some(&e) {
                        tracing::warn!(target: "cluster", error = %e, "cannot read the slot map; retrying");
                        last_error = Some(e);
                    }
                }
            }
            let rest = REFRESH_GAP.saturating_sub(started.elapsed());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(rest) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.topology.refresh.notified() => {}
                _ = tokio::time::sleep(REFRESH_EVERY) => {}
            }
        }
        for node in self.nodes.lock().values() {
            node.stop.cancel();
        }
    }

    /// The slot map as the most up-to-date node sees it: every known
    /// master and seed is asked, at once, for `CLUSTER INFO` and `CLUSTER
    /// SLOTS` in one round trip, and the map of the one with the highest
    /// `cluster_current_epoch` wins. A master cut off from the cluster
    /// still answers, with the map from before its replica took over;
    /// asking it alone would hand its slots back to it.
    async fn read_map(&self) -> Result<Map, String> {
        let map = self.topology.map();
        let mut candidates: Vec<Addr> = map.masters().to_vec();
        for seed in &self.seeds.nodes {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        let asks = candidates
            .iter()
            .map(|addr| async move { (addr, self.ask_slots(addr).await) });
        let mut best: Option<(u64, Map)> = None;
        let mut why = String::from("no node to ask");
        for (addr, answer) in futures_util::future::join_all(asks).await {
            match answer {
                Ok((epoch, map)) if !map.masters().is_empty() => {
                    if best.as_ref().is_none_or(|(e, _)| epoch > *e) {
                        best = Some((epoch, map));
                    }
                }
                Ok(_) => why = format!("{addr}: no slot is served"),
                Err(e) => why = format!("{addr}: {e}"),
            }
        }
        best.map(|(_, map)| map).ok_or(why)
    }

    /// `CLUSTER INFO`'s current epoch and `CLUSTER SLOTS` from `addr`.
    async fn ask_slots(&self, addr: &str) -> Result<(u64, Map), String> {
        let client = node_client(&self.seeds, self.tls.as_ref(), addr)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let ask = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let mut pipe = redis::pipe();
            pipe.cmd("CLUSTER").arg("INFO").cmd("CLUSTER").arg("SLOTS");
            pipe.query_async::<(String, Value)>(&mut conn).await
        };
        let (info, reply) = tokio::time::timeout(self.timeout * 2, ask)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let epoch = info
            .lines()
            .find_map(|l| l.strip_prefix("cluster_current_epoch:"))
            .and_then(|e| e.trim().parse().ok())
            .unwrap_or(0);
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let map = Map::from_cluster_slots(&reply, host.trim_start_matches('[').trim_end_matches(']'))?;
        Ok((epoch, map))
    }

    /// Makes `map` the one requests use: the slots whose master changed are
    /// revoked and dropped first (under the map's lock, so that no probe of
    /// their old master renews them after), backends start for new masters
    /// and stop for masters that left.
    fn apply(self: &Arc<Self>, map: Map, shutdown: &CancellationToken) {
        {
            let mut current = self.topology.map.write();
            if **current != map {
                let moved = current.moved(&map);
                if !current.masters().is_empty() {
                    tracing::info!(target: "cluster", moved = moved.len(), masters = ?map.masters(), "the slot map changed");
                }
                *current = Arc::new(map);
                if !moved.is_empty() {
                    self.coherence.lost_slots(&moved);
                    self.coherence.invalidate_slots(&moved, FlushReason::SlotMoved);
                }
            }
        }
        let map = self.topology.map();
        self.topology
            .epochs
            .lock()
            .retain(|addr, _| map.masters().contains(addr));
        let mut nodes = self.nodes.lock();
        nodes.retain(|addr, node| {
            let keep = map.masters().contains(addr);
            if !keep {
                node.stop.cancel();
            }
            keep
        });
        for addr in map.masters() {
            if nodes.contains_key(addr) {
                continue;
            }
            match self.start_node(addr, shutdown) {
                Ok(node) => {
                    nodes.insert(addr.clone(), node);
                }
                Err(e) => tracing::warn!(target: "cluster", node = %addr, error = %e, "cannot use this node"),
            }
        }
        let ready = nodes.values().filter(|n| n.backend.is_ready()).count();
        drop(nodes);
        self.metrics.backend_up.set((ready == map.masters().len()) as i64);
        self.metrics
            .tracking
            .set((self.mode == Invalidation::Tracking && ready == map.masters().len()) as i64);
        self.metrics.backend_connections("reads").set(ready as i64);
        if self.mode == Invalidation::Tracking {
            self.metrics
                .backend_connections("invalidations")
                .set(ready as i64);
        }
        self.topology.applied.send_modify(|n| *n += 1);
    }

    fn start_node(&self, addr: &str, shutdown: &CancellationToken) -> Result<Node, String> {
        let coherence = Arc::new(NodeCoherence {
            inner: self.coherence.clone(),
            topology: self.topology.clone(),
            addr: addr.to_string(),
        });
        let backend = Backend::new(
            &self.seeds.url(addr),
            self.tls.clone(),
            self.timeout,
            self.mode,
            coherence,
            self.metrics.clone(),
        )
        .map_err(|e| e.to_string())?
        .with_lease(self.lease)
        .as_cluster_node();
        let backend = Arc::new(backend);
        let stop = shutdown.child_token();
        tokio::spawn(backend.clone().supervise(stop.clone()));
        Ok(Node { backend, stop })
    }

    /// GET and PTTL for each key, from the master of its slot: the keys of
    /// one master in one round trip, the masters at once. `MOVED` reads the
    /// map again and retries; `ASK` asks the importing node, after ASKING.
    pub async fn get_each(&self, keys: &[Bytes]) -> Vec<Result<Option<Fetched>, Error>> {
        let mut out: Vec<Option<Result<Option<Fetched>, Error>>> = vec![None; keys.len()];
        let mut pending: Vec<usize> = (0..keys.len()).collect();
        for round in 0..MAX_REDIRECTS {
            let map = self.topology.map();
            let mut by_node: HashMap<&Addr, (Arc<Backend>, Vec<usize>)> = HashMap::new();
            for &i in &pending {
                let slot = slot_of(&keys[i]);
                let Some(addr) = map.owner(slot) else {
                    out[i] = Some(Err(Error::unavailable(format!("no master serves slot {slot}"))));
                    continue;
                };
                if let Some((_, idx)) = by_node.get_mut(addr) {
                    idx.push(i);
                    continue;
                }
                match self.backend(addr) {
                    Some(backend) => {
                        by_node.insert(addr, (backend, vec![i]));
                    }
                    None => out[i] = Some(Err(Error::unavailable(format!("not connected to {addr}")))),
                }
            }
            let asks = by_node.into_values().map(|(backend, idx)| async move {
                let ks: Vec<&[u8]> = idx.iter().map(|&i| &keys[i][..]).collect();
                let answers = match backend.get_each(&ks).await {
                    Ok(each) => each,
                    Err(e) => vec![Err(e); idx.len()],
                };
                (idx, answers)
            });
            let mut moved = Vec::new();
            for (idx, answers) in futures_util::future::join_all(asks).await {
                for (i, answer) in idx.into_iter().zip(answers) {
                    match redirect(&answer) {
                        Some(Redirect::Moved) => moved.push(i),
                        Some(Redirect::Ask(addr)) => {
                            // Served, not cached: the slot is still the
                            // old master's in the map (and under its
                            // lease), so nothing would drop the key if the
                            // importing node's connection were lost.
                            let asked = match self.backend(&addr) {
                                Some(b) => b.get_asking(&keys[i]).await,
                                None => Err(Error::unavailable(format!("not connected to {addr}"))),
                            };
                            out[i] = Some(asked.map(|f| {
                                f.map(|f| Fetched {
                                    pttl: Some(Duration::ZERO),
                                    ..f
                                })
                            }));
                        }
                        None => out[i] = Some(answer),
                    }
                }
            }
            if moved.is_empty() {
                break;
            }
            if round + 1 == MAX_REDIRECTS {
                for i in moved {
                    out[i] = Some(Err(Error::unavailable("the cluster kept redirecting the key")));
                }
                break;
            }
            self.topology.refreshed(self.timeout).await;
            pending = moved;
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Error::internal("a key was not answered"))))
            .collect()
    }

    /// `SET key value` on the master of its slot (see [`Backend::set`]).
    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<Written, Error> {
        for _ in 0..MAX_REDIRECTS {
            let backend = self.backend_for(slot_of(key))?;
            let written = backend.set(key, value).await;
            // Inside its MULTI a redirection shows as EXECABORT: nothing
            // ran, so it is sent again after the map is read.
            let aborted =
                matches!(&written, Err(Error::Reply(e)) if e.contains("EXECABORT") || e.contains("MOVED"));
            if aborted || redirect(&written).is_some() {
                self.topology.refreshed(self.timeout).await;
                continue;
            }
            return written;
        }
        Err(Error::unavailable("the cluster kept redirecting the key"))
    }

    /// [`Backend::caught_up`] on every master.
    pub async fn caught_up(&self) {
        let backends = self.backends();
        futures_util::future::join_all(backends.iter().map(|(_, b)| b.caught_up())).await;
    }
}

/// A client for the node at `addr`, reached as the seeds say (scheme,
/// user, TLS files).
fn node_client(
    seeds: &Seeds,
    tls: Option<&redis::TlsCertificates>,
    addr: &str,
) -> Result<redis::Client, String> {
    let info = redis::IntoConnectionInfo::into_connection_info(seeds.url(addr)).map_err(|e| e.to_string())?;
    match tls {
        Some(tls) => redis::Client::build_with_tls(info, tls.clone()),
        None => redis::Client::open(info),
    }
    .map_err(|e| e.to_string())
}

/// At start: `--tracking-lease` must be shorter than the cluster's
/// `cluster-node-timeout`, or a frozen master's cached values could still be
/// served after its replica took over. Asked of the seeds with `CONFIG GET`
/// where that command is allowed; a cluster that cannot be asked (down,
/// or CONFIG refused) is let be, with a warning.
pub async fn check_lease(
    seeds: &Seeds,
    tls: Option<redis::TlsCertificates>,
    lease: Duration,
    timeout: Duration,
) -> Result<(), String> {
    for addr in &seeds.nodes {
        let Ok(client) = node_client(seeds, tls.as_ref(), addr) else {
            continue;
        };
        let ask = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("cluster-node-timeout")
                .query_async::<Vec<String>>(&mut conn)
                .await
        };
        let Ok(Ok(reply)) = tokio::time::timeout(timeout, ask).await else {
            continue;
        };
        let Some(ms) = reply.get(1).and_then(|v| v.parse::<u64>().ok()) else {
            continue;
        };
        let node_timeout = Duration::from_millis(ms);
        if lease >= node_timeout {
            return Err(format!(
                "--tracking-lease {} must be shorter than the cluster's cluster-node-timeout ({}): a frozen \
                 master's cached values would be served after its replica took over",
                humantime::format_duration(lease),
                humantime::format_duration(node_timeout)
            ));
        }
        return Ok(());
    }
    tracing::warn!(target: "cluster", "could not read cluster-node-timeout from the seeds: --tracking-lease is not checked against it");
    Ok(())
}

enum Redirect {
    Moved,
    Ask(Addr),
}

/// Whether Redis redirected the request: `MOVED`, `ASK`, or a slot that
/// is briefly unavailable (`TRYAGAIN`, `CLUSTERDOWN`), read as a move.
fn redirect<T>(answer: &Result<T, Error>) -> Option<Redirect> {
    let Err(Error::Reply(text)) = answer else {
        return None;
    };
    let mut words = text.split_whitespace();
    match words.next()? {
        "MOVED" | "TRYAGAIN" | "CLUSTERDOWN" => Some(Redirect::Moved),
        "ASK" => Some(Redirect::Ask(words.nth(1)?.to_string())),
        _ => None,
    }
}

/// One master's view of the cache: what its invalidations, probes and
/// connection losses mean for the slots the map gives it.
struct NodeCoherence {
    inner: Arc<dyn Coherence>,
    topology: Arc<Topology>,
    addr: Addr,
}

impl Coherence for NodeCoherence {
    fn invalidate(&self, keys: &[Bytes]) {
        self.inner.invalidate(keys);
    }

    fn invalidate_all(&self, reason: FlushReason) {
        let map = self.topology.map.read();
        self.inner.invalidate_slots(&map.slots_of(&self.addr), reason);
    }

    fn heard_from(&self, sent: Instant) {
        // Under the map's read lock: a move of one of these slots waits,
        // and revokes after this renewal.
        let map = self.topology.map.read();
        self.inner.heard_from_slots(&map.slots_of(&self.addr), sent);
    }

    fn lost(&self) {
        let map = self.topology.map.read();
        self.inner.lost_slots(&map.slots_of(&self.addr));
    }

    fn invalidate_slots(&self, slots: &[u16], reason: FlushReason) {
        self.inner.invalidate_slots(slots, reason);
    }

    fn heard_from_slots(&self, slots: &[u16], sent: Instant) {
        self.inner.heard_from_slots(slots, sent);
    }

    fn lost_slots(&self, slots: &[u16]) {
        self.inner.lost_slots(slots);
    }

    /// Renews this master's lease only if it says it is a master of an ok
    /// cluster and no other master has reported a later epoch: a failover
    /// elsewhere (votes bump the voters' epoch) that this node has not
    /// heard of means it may be cut off, its slots served by another
    /// master. A later epoch than the others' revokes theirs at once; each
    /// is renewed again when its own probe shows it caught up.
    fn node_probe(&self, sent: Instant, healthy: bool, epoch: Option<u64>) {
        let map = self.topology.map.read();
        let mut epochs = self.topology.epochs.lock();
        if let Some(epoch) = epoch {
            let before = epochs.values().copied().max().unwrap_or(0);
            epochs.insert(self.addr.clone(), epoch);
            if epoch > before {
                for (addr, &theirs) in epochs.iter() {
                    if theirs < epoch {
                        self.inner.lost_slots(&map.slots_of(addr));
                    }
                }
            }
        }
        let latest = epochs.values().copied().max().unwrap_or(0);
        let behind = epoch.is_none_or(|e| e < latest);
        // Still under the epochs' lock: a later epoch reported by another
        // master meanwhile cannot revoke before this renews.
        if healthy && !behind {
            self.inner.heard_from_slots(&map.slots_of(&self.addr), sent);
        } else {
            self.inner.lost_slots(&map.slots_of(&self.addr));
            self.topology.refresh_soon();
        }
        drop(epochs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirections() {
        let e = |s: &str| Err::<(), _>(Error::Reply(s.into()));
        assert!(matches!(
            redirect(&e("MOVED 3999 127.0.0.1:6381")),
            Some(Redirect::Moved)
        ));
        assert!(
            matches!(redirect(&e("ASK 3999 127.0.0.1:6381")), Some(Redirect::Ask(a)) if a == "127.0.0.1:6381")
        );
        assert!(matches!(
            redirect(&e("TRYAGAIN Multiple keys request during rehashing")),
            Some(Redirect::Moved)
        ));
        assert!(redirect(&e("ERR other")).is_none());
        assert!(redirect(&Ok::<(), Error>(())).is_none());
    }
}
