//! Feeds arbitrary bytes to the RESP parser. It must never panic, must never
//! claim more bytes than it was given, and parsing a buffer command by
//! command must make progress (no zero-length command). The same bytes fed
//! a few at a time, as reads deliver them, with the parser keeping its
//! place between calls (`Progress`), must give the same commands, and an
//! error exactly when the whole buffer gives one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_proxy::resp::parse::{Frame, Limits, Progress, parse, parse_frame};

fuzz_target!(|input: &[u8]| {
    let Some((&step, data)) = input.split_first() else {
        return;
    };

    let mut whole = Vec::new();
    let mut rest = data;
    let whole_failed = loop {
        match parse(rest) {
            Ok(Some((request, used))) => {
                assert!(used > 0 && used <= rest.len());
                whole.push(request.args);
                rest = &rest[used..];
            }
            Ok(None) => break false,
            Err(_) => break true,
        }
    };

    let step = usize::from(step % 64) + 1;
    let (mut start, mut end) = (0, 0);
    let mut ranges = Vec::new();
    let mut progress = Progress::default();
    let mut pieces = Vec::new();
    let pieces_failed = loop {
        let buf = &data[start..end];
        match parse_frame(buf, &mut ranges, &mut progress, Limits::AUTHENTICATED) {
            Ok(Some(Frame::Array { len })) => {
                assert!(len > 0 && len <= buf.len());
                pieces.push(ranges.iter().map(|r| buf[r.clone()].to_vec()).collect::<Vec<_>>());
                start += len;
            }
            Ok(Some(Frame::Inline { len, args })) => {
                assert!(len > 0 && len <= buf.len());
                pieces.push(args.iter().map(|a| a.to_vec()).collect());
                start += len;
            }
            Ok(None) if end == data.len() => break false,
            Ok(None) => end = (end + step).min(data.len()),
            Err(_) => break true,
        }
    };

    let whole: Vec<Vec<Vec<u8>>> = whole
        .iter()
        .map(|args| args.iter().map(|a| a.to_vec()).collect())
        .collect();
    assert_eq!(pieces, whole);
    assert_eq!(pieces_failed, whole_failed);
});
