//! Feeds arbitrary bytes to the RESP parser. It must never panic, must never
//! claim more bytes than it was given, and parsing a buffer command by
//! command must make progress (no zero-length command).
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_proxy::resp::parse::parse;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((_request, used))) = parse(rest) {
        assert!(used > 0 && used <= rest.len());
        rest = &rest[used..];
    }
});
