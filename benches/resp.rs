//! The RESP front end's pure parts: parsing a pipelined batch of commands
//! and encoding the replies.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redis_proxy::resp::encode::{Proto, Reply, encode};
use redis_proxy::resp::parse::parse;

fn batch(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let key = format!("key:{i:012}");
        out.extend_from_slice(format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes());
    }
    out
}

fn resp(c: &mut Criterion) {
    let mut g = c.benchmark_group("resp");
    let buf = batch(16);
    g.throughput(Throughput::Elements(16));
    g.bench_function("parse_16_pipelined_gets", |b| {
        b.iter(|| {
            let mut rest = &buf[..];
            while let Ok(Some((req, used))) = parse(rest) {
                black_box(req);
                rest = &rest[used..];
            }
        })
    });
    let value = Bytes::from(vec![b'x'; 100]);
    let mut out = BytesMut::with_capacity(4096);
    g.bench_function("encode_16_bulk_replies", |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..16 {
                encode(&Reply::Bulk(value.clone()), Proto::Resp2, &mut out);
            }
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group!(benches, resp);
criterion_main!(benches);
