//! The HTTP front end: a cache hit (`GET /get/{key}`, JSON) through hyper's
//! HTTP/1 connection and the API's handler, over an in-memory pipe, so the
//! kernel's TCP stack is not in the figure.
//!
//! Last run (2026-12-02, `make bench` from a clean clone, 2 shared cores):
//! a hit 3.9 µs.

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn through_front_end(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = common::app();
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let service = service_fn(move |req| redis_proxy::http::api::serve(app.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(server), service);
    rt.spawn(conn);
    let mut buf = vec![0u8; 64 * 1024];
    let mut i = 0;
    c.bench_function("http_front_end/hit", |b| {
        b.iter(|| {
            i = (i + 7919) % common::KEYS;
            let request = format!("GET /get/{} HTTP/1.1\r\nHost: bench\r\n\r\n", common::key(i));
            rt.block_on(async {
                client.write_all(request.as_bytes()).await.unwrap();
                let mut have = 0;
                loop {
                    have += client.read(&mut buf[have..]).await.unwrap();
                    if let Some(end) = response_end(&buf[..have]) {
                        assert!(buf.starts_with(b"HTTP/1.1 200"));
                        assert_eq!(end, have, "one response at a time");
                        break;
                    }
                }
            });
        })
    });
}

/// Where a response with a Content-Length ends, once it is all in `buf`.
fn response_end(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&buf[..head]).ok()?;
    let len: usize = text.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().parse().unwrap())
    })?;
    (buf.len() >= head + len).then_some(head + len)
}

criterion_group!(benches, through_front_end);
criterion_main!(benches);
