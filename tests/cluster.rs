//! The proxy in front of a real Redis Cluster (3 masters, 3 replicas,
//! started by `common::cluster` on free ports). One test at a time: each
//! starts its own cluster, and a busy machine must not cause failovers
//! nobody asked for (`.cargo/config` cannot say it per binary, so the
//! tests share one lock).

mod common;

use std::sync::Mutex;

use common::cluster::Cluster;

/// Held by each test for its whole run.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn the_harness_starts_a_healthy_cluster() {
    let _one = serial();
    let cluster = Cluster::start();
    assert_eq!(cluster.masters().len(), 3);
    let mut c = cluster.client();
    let _: () = redis::cmd("SET").arg("foo").arg("bar").query(&mut c).unwrap();
    let owner = cluster.master_of("foo");
    let v: String = redis::cmd("GET")
        .arg("foo")
        .query(&mut cluster.nodes[owner].conn())
        .unwrap();
    assert_eq!(v, "bar");
}
