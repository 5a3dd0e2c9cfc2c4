//! Feeds arbitrary request targets to the HTTP router and key decoding. It
//! must never panic; a key or value it decodes is what the target spelled
//! (percent-encoding every byte of it and routing again gives it back);
//! decoding never grows its input; and a target over the 8 KiB bound is a
//! 414 whatever it holds.
#![no_main]

use hyper::Method;
use libfuzzer_sys::fuzz_target;
use redis_proxy::http::api::{MAX_PATH, Route, parse_route, percent_decode};

const METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::PUT,
    Method::POST,
    Method::DELETE,
    Method::OPTIONS,
];

fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fuzz_target!(|input: &[u8]| {
    let Some((&m, raw)) = input.split_first() else {
        return;
    };
    if let Some(decoded) = percent_decode(raw) {
        assert!(decoded.len() <= raw.len());
    }
    let Ok(target) = std::str::from_utf8(raw) else {
        return;
    };
    let method = &METHODS[usize::from(m) % METHODS.len()];
    let route = parse_route(method, target);
    if target.len() > MAX_PATH {
        assert_eq!(route.map_err(|e| e.http_status()).err(), Some(414));
        return;
    }
    match route {
        Ok(Route::Get { key }) => {
            assert!(!key.is_empty());
            let again = parse_route(method, &format!("/get/{}", encode(&key)));
            assert_eq!(again.ok(), Some(Route::Get { key }));
        }
        Ok(Route::Set { key, value }) => {
            assert!(!key.is_empty());
            let target = format!("/set/{}/{}", encode(&key), encode(&value));
            if target.len() <= MAX_PATH {
                let again = parse_route(method, &target);
                assert_eq!(again.ok(), Some(Route::Set { key, value }));
            }
        }
        Ok(Route::Root) | Err(_) => {}
    }
});
