//! The RESP front end's deadlines and output bound, in-process over
//! in-memory pipes, with Tokio's clock paused so that 10 s and 30 s
//! deadlines pass at once: an idle client, one that never authenticates,
//! one that never reads its replies, one whose replies pass
//! `--client-output-limit`. Each is closed and counted by reason; a client
//! that behaves is not. Nothing here needs Redis.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use redis_proxy::app::App;
use redis_proxy::config::Config;
use redis_proxy::metrics::ReasonLabels;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio_util::sync::CancellationToken;

fn app(flags: &[&str]) -> Arc<App> {
    let args = ["redis-proxy", "--redis-url", "redis://127.0.0.1:1/0"];
    let config = Config::try_parse_from(args.iter().chain(flags)).unwrap();
    App::build(&config).unwrap()
}

/// A client on a pipe that buffers `buffer` bytes each way.
fn connect(app: &Arc<App>, buffer: usize) -> DuplexStream {
    let (client, server) = duplex(buffer);
    tokio::spawn(redis_proxy::resp::serve(
        app.clone(),
        server,
        CancellationToken::new(),
    ));
    client
}

fn disconnected(app: &App, reason: &'static str) -> u64 {
    app.metrics
        .clients_disconnected
        .get_or_create(&ReasonLabels { reason })
        .get()
}

/// Reads until the proxy closes the connection; what it sent last. Fails
/// if it is still open after a (virtual) hour.
async fn closed(c: &mut DuplexStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3600), c.read_to_end(&mut rest))
        .await
        .expect("the proxy never closed the connection")
        .unwrap();
    rest
}

/// `PING message` as a RESP array (an inline line may not be this long).
fn ping_with(message: &str) -> Vec<u8> {
    format!("*2\r\n$4\r\nPING\r\n${}\r\n{message}\r\n", message.len()).into_bytes()
}

async fn ping(c: &mut DuplexStream) {
    c.write_all(b"PING\r\n").await.unwrap();
    let mut pong = [0u8; 7];
    c.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_is_closed_after_the_idle_timeout_and_a_talking_one_is_not() {
    let app = app(&["--client-idle-timeout", "60s"]);
    let mut idle = connect(&app, 1 << 16);
    let mut talking = connect(&app, 1 << 16);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(50)).await;
        ping(&mut talking).await;
    }
    // 250 s without a word: the idle one went at 60 s.
    closed(&mut idle).await;
    assert_eq!(disconnected(&app, "idle"), 1);
    ping(&mut talking).await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_timeout_of_zero_is_never() {
    let app = app(&["--client-idle-timeout", "0"]);
    let mut c = connect(&app, 1 << 16);
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    ping(&mut c).await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_authenticate_within_10_s_is_closed() {
    let app = app(&["--client-password", "s3cret"]);
    let mut silent = connect(&app, 1 << 16);
    let mut pinging = connect(&app, 1 << 16);
    let mut authed = connect(&app, 1 << 16);
    authed.write_all(b"AUTH s3cret\r\n").await.unwrap();
    let mut ok = [0u8; 5];
    authed.read_exact(&mut ok).await.unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    // PING is served before AUTH, but does not buy time.
    for _ in 0..3 {
        ping(&mut pinging).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    closed(&mut silent).await;
    closed(&mut pinging).await;
    assert_eq!(disconnected(&app, "auth_timeout"), 2);
    tokio::time::sleep(Duration::from_secs(60)).await;
    ping(&mut authed).await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_read_its_replies_is_closed_after_30_s() {
    let app = app(&[]);
    // A pipe that holds 1 KiB, and 100 KiB of reply that nobody reads.
    let mut c = connect(&app, 1024);
    let message = "x".repeat(100 * 1024);
    c.write_all(&ping_with(&message)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    // What fitted in the pipe before the deadline, then the end.
    let rest = closed(&mut c).await;
    assert!(
        rest.len() < message.len(),
        "all {} bytes were written",
        rest.len()
    );
    assert_eq!(disconnected(&app, "write_timeout"), 1);
}

#[tokio::test(start_paused = true)]
async fn replies_over_the_output_limit_close_the_client() {
    let app = app(&["--client-output-limit", "64KiB"]);
    let mut c = connect(&app, 1 << 20);
    let small = "x".repeat(32 * 1024);
    c.write_all(&ping_with(&small)).await.unwrap();
    let mut reply = vec![0u8; format!("${}\r\n{small}\r\n", small.len()).len()];
    c.read_exact(&mut reply).await.unwrap();
    c.write_all(&ping_with(&"x".repeat(65 * 1024))).await.unwrap();
    assert!(closed(&mut c).await.is_empty(), "nothing of the reply is sent");
    assert_eq!(disconnected(&app, "output_limit"), 1);
}
