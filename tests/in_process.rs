//! The server run in-process, as a library: `server::run(app, listeners,
//! shutdown)` serves until the future it was given completes, then drains.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use clap::Parser;
use common::{RedisServer, request};
use redis_proxy::app::App;
use redis_proxy::config::Config;
use redis_proxy::server::{self, Listeners};
use tokio::sync::oneshot;
use tokio::task::{block_in_place, spawn_blocking};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_until_its_shutdown_future_completes_then_drains() {
    let redis = block_in_place(RedisServer::start);
    block_in_place(|| redis.set("k", "v"));
    let url = redis.url();
    let args = [
        "redis-proxy",
        "--redis-url",
        &url,
        "--http-listen",
        "127.0.0.1:0",
        "--resp-listen",
        "off",
        "--admin-listen",
        "off",
    ];
    let config = Config::try_parse_from(args).unwrap();
    let app = App::build(&config).unwrap();
    let listeners = Listeners::bind(&config).await.unwrap();
    let port = listeners.http.as_ref().unwrap().local_addr().unwrap().port();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let serving = tokio::spawn(server::run(app.clone(), listeners, shutdown));

    let start = std::time::Instant::now();
    while !app.backend.is_ready() {
        assert!(start.elapsed() < common::DEADLINE, "the backend never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = spawn_blocking(move || request(port, "GET", b"/get/k", &[]))
        .await
        .unwrap();
    assert_eq!((r.status, r.json()["value"].as_str()), (200, Some("v")));

    stop.send(()).unwrap();
    tokio::time::timeout(common::DEADLINE, serving)
        .await
        .expect("run returned after its shutdown future completed")
        .unwrap();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening"
    );
}
