//! All RESP connections together may hold only so much unanswered input:
//! past the budget, a connection holding a lot of it is closed with an
//! error, and small clients go on. In-process, over in-memory pipes, with a
//! budget of 3 MiB.

use std::time::{Duration, Instant};

use clap::Parser;
use redis_proxy::app::App;
use redis_proxy::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
use tokio_util::sync::CancellationToken;

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn past_the_input_budget_a_large_client_is_closed_and_small_ones_go_on() {
    // Never connected: nothing here needs Redis.
    let args = ["redis-proxy", "--redis-url", "redis://127.0.0.1:1/0"];
    let app = App::build(&Config::try_parse_from(args).unwrap()).unwrap();
    app.set_input_budget(3 << 20);
    let stop = CancellationToken::new();
    let connect = || {
        let (client, server) = duplex(8 << 20);
        tokio::spawn(redis_proxy::resp::serve(app.clone(), server, stop.clone()));
        client
    };
    // A GET of a 10 MiB key, of which 2 MiB has arrived.
    let mut half = format!("*2\r\n$3\r\nGET\r\n${}\r\n", 10 << 20).into_bytes();
    half.extend(vec![b'k'; 2 << 20]);
    let mut first = connect();
    first.write_all(&half).await.unwrap();
    until("the first to be held", || app.input_held() >= 2 << 20).await;
    let mut second = connect();
    second.write_all(&half).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), second.read_to_end(&mut reply))
        .await
        .expect("the large client over the budget was not closed")
        .unwrap();
    assert_eq!(
        reply,
        b"-ERR Protocol error: the proxy holds too much unanswered input\r\n"
    );
    until("the second's input to be let go", || app.input_held() < 3 << 20).await;
    let mut small = connect();
    small.write_all(b"PING\r\n").await.unwrap();
    let mut pong = [0u8; 7];
    small.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    drop(first);
    until("every connection's input to be let go", || app.input_held() == 0).await;
}
