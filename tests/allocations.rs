//! A RESP cache hit allocates nothing but its share of the reply's bytes:
//! the key is a slice of the read buffer, the value is copied into a
//! per-thread arena (a 64 KiB allocation serves about a thousand 64-byte
//! hits), the metrics are atomics. Counted with a counting global
//! allocator over thousands of hits, pipelined and one at a time, with the
//! server running in this process.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{InProcess, RedisServer};
use tokio::task::{block_in_place, spawn_blocking};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting.
struct Counting;

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const KEYS: usize = 64;

fn get(i: usize) -> Vec<u8> {
    let key = format!("key:{i:02}");
    format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).into_bytes()
}

/// Sends `request` and reads exactly `reply_len` bytes back, `rounds`
/// times, into buffers made beforehand: the client allocates nothing.
fn exchange(c: &mut TcpStream, request: &[u8], reply: &mut [u8], rounds: usize) {
    for _ in 0..rounds {
        c.write_all(request).unwrap();
        c.read_exact(reply).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resp_cache_hit_allocates_nothing_beyond_its_share_of_the_reply() {
    let redis = block_in_place(RedisServer::start);
    let value = "v".repeat(64);
    for i in 0..KEYS {
        block_in_place(|| redis.set(format!("key:{i:02}"), &value));
    }
    let server = InProcess::start(&redis.url(), "resp", &[]).await;
    let (app, port) = (server.app.clone(), server.port);
    while !app.reads.is_ready() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (pipelined, single) = spawn_blocking(move || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_nodelay(true).unwrap();
        let one_reply = format!("$64\r\n{}\r\n", "v".repeat(64)).len();
        // Sixteen pipelined GETs, and one alone.
        let batch: Vec<u8> = (0..16).flat_map(get).collect();
        let alone = get(0);
        let mut batch_reply = vec![0u8; 16 * one_reply];
        let mut alone_reply = vec![0u8; one_reply];
        // Warm up: every key cached, every buffer grown.
        let all: Vec<u8> = (0..KEYS).flat_map(get).collect();
        let mut all_reply = vec![0u8; KEYS * one_reply];
        exchange(&mut c, &all, &mut all_reply, 20);
        exchange(&mut c, &batch, &mut batch_reply, 200);
        exchange(&mut c, &alone, &mut alone_reply, 200);
        assert_eq!(&alone_reply[..5], b"$64\r\n", "a hit, not an error");

        let per_get = |request: &[u8], reply: &mut [u8], gets: usize, c: &mut TcpStream| {
            let rounds = 20_000 / gets;
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            exchange(c, request, reply, rounds);
            (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / (rounds * gets) as f64
        };
        let pipelined = per_get(&batch, &mut batch_reply, 16, &mut c);
        let single = per_get(&alone, &mut alone_reply, 1, &mut c);
        (pipelined, single)
    })
    .await
    .unwrap();
    println!("allocations per GET hit: {pipelined:.4} pipelined, {single:.4} one at a time");
    // A 64 KiB arena chunk per ~1,000 hits is 0.001 a hit; the rest of the
    // budget is for the process's background work (health checks, timers).
    assert!(pipelined < 0.02, "{pipelined} allocations per pipelined GET hit");
    assert!(single < 0.02, "{single} allocations per GET hit");

    server.stop().await;
}
