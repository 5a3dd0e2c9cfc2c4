//! Real applications' client libraries, through the proxy and straight to
//! Redis: redis-py, node-redis and ioredis (installed under `target/clients`
//! by `scripts/ensure-clients.sh`) each run an application's usual patterns
//! (pipelines and transactions, WATCH, pub/sub, a lock with a Lua release,
//! blocking pops, `db=1`, RESP3 where the library speaks it) and print a
//! transcript; the transcripts must be equal.

mod common;

use std::process::Command;

use common::setup;

#[test]
fn redis_py_node_redis_and_ioredis_get_through_the_proxy_what_they_get_from_redis() {
    let (redis, proxy) = setup(&["--allow-writes"]);
    let status = Command::new("bash")
        .arg("scripts/client-tests.sh")
        .arg(redis.port.to_string())
        .arg(proxy.resp.to_string())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("bash");
    assert!(status.success(), "see the diff above");
}
