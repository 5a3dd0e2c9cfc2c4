//! A real Redis Cluster on free ports: 3 masters and 3 replicas of the
//! same redis-server binary, `cluster-node-timeout` 2 s, created with
//! `redis-cli --cluster create`, replicas in sync before it is handed over.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::redis_server::{RedisServer, free_port, wait_up_to};

/// How long the cluster may take to converge (a busy machine).
const CONVERGE: Duration = Duration::from_secs(90);

fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_up_to(CONVERGE, what, f)
}

pub const NODE_TIMEOUT_MS: u64 = 2000;

pub struct Cluster {
    pub nodes: Vec<RedisServer>,
    /// With [`Cluster::start_relayed`]: the node cut off from the others.
    cut: Option<Arc<Cut>>,
}

/// Which node's cluster bus is cut, shared by every node's bus relay.
#[derive(Default)]
struct Cut {
    node: Mutex<Option<String>>,
    stop: AtomicBool,
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(None)
    }

    /// A cluster whose nodes reach each other's bus through relays, so
    /// that [`Cluster::cut_off`] can partition one node from the others
    /// while its clients (the proxy) still reach it.
    pub fn start_relayed() -> Cluster {
        Self::start_with(Some(Arc::new(Cut::default())))
    }

    fn start_with(cut: Option<Arc<Cut>>) -> Cluster {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                let port = free_port();
                // Its bus on a port checked free too (not port + 10000).
                let bus = free_port();
                let mut args = vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-port".into(),
                    bus.to_string(),
                    "--cluster-config-file".into(),
                    format!("nodes-{port}.conf"),
                    "--cluster-node-timeout".into(),
                    NODE_TIMEOUT_MS.to_string(),
                ];
                let owner = Arc::new(Mutex::new(String::new()));
                if let Some(cut) = &cut {
                    let relayed = bus_relay(bus, owner.clone(), cut.clone());
                    args.extend(["--cluster-announce-bus-port".into(), relayed.to_string()]);
                }
                let node = RedisServer::start_with(port, &args);
                *owner.lock().unwrap() = info(&node, &["CLUSTER", "MYID"]).trim().to_string();
                node
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = create
            .output()
            .expect("redis-cli (make test installs redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster { nodes, cut };
        cluster.wait_healthy();
        cluster
    }

    /// Cuts node `i` off from every other node's bus (both ways; held, not
    /// reset), or heals with None. Its clients still reach it.
    pub fn cut_off(&self, i: Option<usize>) {
        let cut = self.cut.as_ref().expect("a cluster started with start_relayed");
        *cut.node.lock().unwrap() = i.map(|i| self.node_id(i));
    }

    /// Every node says `cluster_state:ok`, three masters each have their
    /// replica online, and every node agrees on who serves what.
    pub fn wait_healthy(&self) {
        wait_for("the cluster to be ok on every node", || {
            self.up()
                .all(|n| info(n, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                .then_some(())
        });
        wait_for("every master's replica to be online", || {
            let masters = self.masters();
            (masters.len() == 3
                && masters.iter().all(|&i| {
                    let r = info(&self.nodes[i], &["INFO", "replication"]);
                    r.contains("connected_slaves:1") && r.contains("state=online")
                }))
            .then_some(())
        });
        wait_for("the nodes to agree on the slots", || {
            let views: Vec<String> = self.up().map(slots_view).collect();
            views.windows(2).all(|w| w[0] == w[1]).then_some(())
        });
    }

    fn up(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| ping(n))
    }

    /// Indexes of the nodes that say they are masters with slots.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| ping(&self.nodes[i]) && info(&self.nodes[i], &["ROLE"]).starts_with("master"))
            .filter(|&i| !slots_view(&self.nodes[i]).is_empty())
            .filter(|&i| {
                let id = info(&self.nodes[i], &["CLUSTER", "MYID"]);
                slots_view(&self.nodes[i]).contains(id.trim())
            })
            .collect()
    }

    /// The node serving `key`'s slot now.
    pub fn master_of(&self, key: &str) -> usize {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.any().conn())
            .unwrap();
        let slots: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.any().conn())
            .unwrap();
        let redis::Value::Array(ranges) = slots else {
            panic!()
        };
        for r in ranges {
            let redis::Value::Array(f) = r else { continue };
            if let (redis::Value::Int(a), redis::Value::Int(b), redis::Value::Array(m)) =
                (&f[0], &f[1], &f[2])
                && (*a..=*b).contains(&slot)
                && let redis::Value::Int(port) = m[1]
            {
                return self.nodes.iter().position(|n| n.port as i64 == port).unwrap();
            }
        }
        panic!("no master for {key}");
    }

    /// A node that answers.
    pub fn any(&self) -> &RedisServer {
        self.up().next().expect("a node up")
    }

    /// `redis://127.0.0.1:p1,127.0.0.1:p2`: two seeds.
    pub fn seeds(&self) -> String {
        format!(
            "redis://127.0.0.1:{},127.0.0.1:{}",
            self.nodes[0].port, self.nodes[1].port
        )
    }

    /// A cluster-aware client (it follows MOVED and ASK).
    pub fn client(&self) -> redis::cluster::ClusterConnection {
        let urls: Vec<String> = self.nodes.iter().map(|n| n.url()).collect();
        redis::cluster::ClusterClientBuilder::new(urls)
            .connection_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// The node's id (`CLUSTER MYID`).
    pub fn node_id(&self, i: usize) -> String {
        info(&self.nodes[i], &["CLUSTER", "MYID"]).trim().to_string()
    }

    /// The node replicating master `i`.
    pub fn replica_of(&self, i: usize) -> usize {
        let id = self.node_id(i);
        wait_for("the master's replica", || {
            (0..self.nodes.len()).find(|&r| {
                r != i && ping(&self.nodes[r]) && {
                    let role = role(&self.nodes[r]);
                    role.first().map(String::as_str) == Some("slave")
                        && info(&self.nodes[r], &["CLUSTER", "MYID"]) != id
                        && master_id_of(&self.nodes[r]) == id
                }
            })
        })
    }

    /// Waits until node `i` says it is a master serving slots.
    pub fn wait_master(&self, i: usize) {
        wait_for("the replica to become master", || {
            (ping(&self.nodes[i]) && self.masters().contains(&i)).then_some(())
        });
    }

    /// `kill -<sig>` to node `i`'s redis-server.
    pub fn signal(&self, i: usize, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.nodes[i].pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// `redis-cli --cluster <args…>` against the first node up.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn ping(n: &RedisServer) -> bool {
    let Ok(client) = redis::Client::open(n.url()) else {
        return false;
    };
    let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(300)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_millis(300)));
    redis::cmd("PING").query::<String>(&mut c).is_ok()
}

/// A command's reply as text (a ROLE's first field, INFO's text).
fn info(n: &RedisServer, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let Ok(mut c) = redis::Client::open(n.url()).unwrap().get_connection() else {
        return String::new();
    };
    match cmd.query::<redis::Value>(&mut c) {
        Ok(redis::Value::Array(v)) => match v.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        },
        Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(redis::Value::VerbatimString { text, .. }) => text,
        Ok(other) => format!("{other:?}"),
        Err(e) => e.to_string(),
    }
}

/// CLUSTER SLOTS as one comparable string of ranges and master ids.
fn slots_view(n: &RedisServer) -> String {
    let Ok(mut c) = redis::Client::open(n.url()).unwrap().get_connection() else {
        return String::new();
    };
    let Ok(redis::Value::Array(ranges)) = redis::cmd("CLUSTER").arg("SLOTS").query::<redis::Value>(&mut c)
    else {
        return String::new();
    };
    let mut parts: Vec<String> = ranges
        .iter()
        .filter_map(|r| {
            let redis::Value::Array(f) = r else { return None };
            let (redis::Value::Int(a), redis::Value::Int(b), redis::Value::Array(m)) = (&f[0], &f[1], &f[2])
            else {
                return None;
            };
            let id = match m.get(2) {
                Some(redis::Value::BulkString(id)) => String::from_utf8_lossy(id).into_owned(),
                _ => String::new(),
            };
            Some(format!("{a}-{b}:{id}"))
        })
        .collect();
    parts.sort();
    parts.join(",")
}

/// ROLE's reply as strings (its first fields).
fn role(n: &RedisServer) -> Vec<String> {
    let Ok(mut c) = redis::Client::open(n.url()).unwrap().get_connection() else {
        return Vec::new();
    };
    match redis::cmd("ROLE").query::<redis::Value>(&mut c) {
        Ok(redis::Value::Array(v)) => v
            .iter()
            .map(|f| match f {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                other => format!("{other:?}"),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The id of the master a replica follows, from CLUSTER NODES' `myself` line.
fn master_id_of(n: &RedisServer) -> String {
    let nodes = info(n, &["CLUSTER", "NODES"]);
    nodes
        .lines()
        .find(|l| l.contains("myself"))
        .and_then(|l| l.split(' ').nth(3))
        .unwrap_or("")
        .to_string()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(cut) = &self.cut {
            cut.stop.store(true, Ordering::SeqCst);
            *cut.node.lock().unwrap() = None;
        }
    }
}

/// A relay in front of a node's cluster bus port: every connection to the
/// node's bus comes through it. A connection is held still (not reset)
/// while the cut node is the relay's node (traffic to it) or the node that
/// opened the connection (traffic from it): a cluster-bus connection's
/// first message names its sender at bytes 40..80 of its header.
fn bus_relay(target: u16, owner: Arc<Mutex<String>>, cut: Arc<Cut>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bus relay bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            if cut.stop.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut client) = client else { continue };
            let (owner, cut) = (owner.clone(), cut.clone());
            std::thread::spawn(move || {
                let mut header = [0u8; 80];
                if client.read_exact(&mut header).is_err() {
                    return;
                }
                let sender = String::from_utf8_lossy(&header[40..80]).to_string();
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                if server.write_all(&header).is_err() {
                    return;
                }
                let frozen = {
                    let (owner, cut) = (owner.clone(), cut.clone());
                    let sender = sender.clone();
                    move || {
                        let node = cut.node.lock().unwrap();
                        !cut.stop.load(Ordering::Relaxed)
                            && node
                                .as_ref()
                                .is_some_and(|n| *n == sender || *n == *owner.lock().unwrap())
                    }
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let back = frozen.clone();
                std::thread::spawn(move || pump(s2, c2, back));
                pump(client, server, frozen);
            });
        }
    });
    port
}

fn pump(mut from: TcpStream, mut to: TcpStream, frozen: impl Fn() -> bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while frozen() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
