//! The server run in-process, as a library: `server::run(app, listeners,
//! shutdown)` serves until the future it was given completes, then drains.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{InProcess, RedisServer, request};
use tokio::task::{block_in_place, spawn_blocking};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_until_its_shutdown_future_completes_then_drains() {
    let redis = block_in_place(RedisServer::start);
    block_in_place(|| redis.set("k", "v"));
    let server = InProcess::start(&redis.url(), "http", &[]).await;
    let (app, port) = (server.app.clone(), server.port);

    let start = std::time::Instant::now();
    while !app.reads.is_ready() {
        assert!(start.elapsed() < common::DEADLINE, "the backend never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = spawn_blocking(move || request(port, "GET", b"/get/k", &[]))
        .await
        .unwrap();
    assert_eq!((r.status, r.json()["value"].as_str()), (200, Some("v")));

    server.stop().await;
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_connections_do_not_hold_a_task_each() {
    let server = InProcess::start("redis://127.0.0.1:1/0", "resp", &["--max-clients", "1"]).await;
    let (app, port) = (server.app.clone(), server.port);
    let _held = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let open_files = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let files_before = open_files();
    // 300 clients over the limit that neither read nor close: each is told,
    // and a task each would keep 300 tasks alive for the second a rejected
    // connection is given to read why.
    let mut rejected = Vec::new();
    let alive_tasks = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let mut most_tasks = 0;
    for _ in 0..300 {
        rejected.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        most_tasks = most_tasks.max(alive_tasks());
    }
    let rejections = || {
        app.metrics
            .connections_rejected
            .get_or_create(&redis_proxy::metrics::FrontendLabels { frontend: "resp" })
            .get()
    };
    let start = std::time::Instant::now();
    while rejections() < 300 {
        assert!(start.elapsed() < common::DEADLINE, "{} rejected", rejections());
        most_tasks = most_tasks.max(alive_tasks());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    most_tasks = most_tasks.max(alive_tasks());
    assert!(most_tasks < 30, "{most_tasks} tasks alive");
    // Nor a socket each: past 32 lingering, the proxy closes its end at once
    // (the 300 client ends are in this process too, and the other test's
    // few files may come and go: hence the margin).
    let proxy_files = open_files().saturating_sub(files_before + 300);
    assert!(proxy_files < 100, "{proxy_files} rejected sockets held");
    // And every one of them was told why.
    for mut c in rejected {
        use tokio::io::AsyncReadExt;
        let mut told = Vec::new();
        tokio::time::timeout(common::DEADLINE, c.read_to_end(&mut told))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(told, b"-ERR max number of clients reached\r\n");
    }
    server.stop().await;
}
