//! The HTTP front end: routes → [`Lookup`](crate::lookup::Lookup). Keys are taken from the raw
//! path, percent-decoded strictly, and treated as bytes throughout.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::error::Error;
use crate::lookup::{Found, Source};
use crate::metrics::Outcome;
use crate::server::App;

pub type Body = Full<Bytes>;

/// Longest request target served; longer ones get 414.
pub const MAX_PATH: usize = 8 * 1024;

/// hyper's entry point: every request on every HTTP connection.
pub async fn serve(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let (response, outcome) = {
        // Held for the whole request: with --max-parallel 1 requests are
        // worked on one at a time, in the order they arrived.
        let _permit = acquire_slot(&app).await;
        route(&app, &req).await
    };
    app.http_metrics.record(outcome, start);
    Ok(response)
}

/// A `--max-parallel` slot. The semaphore is fair, so slots are handed out
/// in the order they were asked for.
pub async fn acquire_slot(app: &App) -> tokio::sync::SemaphorePermit<'_> {
    match app.parallel.try_acquire() {
        Ok(permit) => permit,
        Err(_) => {
            app.metrics.requests_queued.inc();
            let permit = app.parallel.acquire().await;
            app.metrics.requests_queued.dec();
            permit.expect("the semaphore is never closed")
        }
    }
}

async fn route(app: &App, req: &Request<Incoming>) -> (Response<Body>, Outcome) {
    if app.client_password.is_some() && !bearer_ok(app, req) {
        let (mut r, outcome) =
            client_error(StatusCode::UNAUTHORIZED, "missing or wrong Authorization: Bearer");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return (r, outcome);
    }
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > MAX_PATH {
        return client_error(StatusCode::URI_TOO_LONG, "request path longer than 8 KiB");
    }
    let path = req.uri().path().as_bytes();
    let method = req.method();
    if path == b"/" {
        if method != Method::GET && method != Method::HEAD {
            return method_not_allowed("GET, HEAD");
        }
        return (json_response(StatusCode::OK, describe(app)), Outcome::Ok);
    }
    if let Some(raw) = path.strip_prefix(b"/get/") {
        if method != Method::GET && method != Method::HEAD {
            return method_not_allowed("GET, HEAD");
        }
        let Some(key) = percent_decode(raw) else {
            return client_error(StatusCode::BAD_REQUEST, "bad percent-encoding in key");
        };
        if key.is_empty() {
            return client_error(StatusCode::BAD_REQUEST, "empty key");
        }
        let raw_body = wants_octets(req);
        return get(app, Bytes::from(key), raw_body).await;
    }
    if let Some(raw) = path.strip_prefix(b"/set/") {
        if method != Method::GET && method != Method::PUT && method != Method::POST {
            return method_not_allowed("GET, PUT, POST");
        }
        if !app.allow_writes {
            return client_error(
                StatusCode::FORBIDDEN,
                "writes are disabled; start the proxy with --allow-writes",
            );
        }
        let Some(split) = raw.iter().rposition(|&b| b == b'/') else {
            return client_error(StatusCode::BAD_REQUEST, "expected /set/{key}/{value}");
        };
        let (Some(key), Some(value)) = (percent_decode(&raw[..split]), percent_decode(&raw[split + 1..]))
        else {
            return client_error(StatusCode::BAD_REQUEST, "bad percent-encoding in key or value");
        };
        if key.is_empty() {
            return client_error(StatusCode::BAD_REQUEST, "empty key");
        }
        return set(app, Bytes::from(key), Bytes::from(value)).await;
    }
    (
        json_response(
            StatusCode::NOT_FOUND,
            json!({"error": "not found", "routes": "GET /"}),
        ),
        Outcome::ClientError,
    )
}

async fn get(app: &App, key: Bytes, raw_body: bool) -> (Response<Body>, Outcome) {
    let result = app.lookup.get(key.clone()).await;
    let (mut response, outcome) = match &result {
        Ok(Found {
            value: Some(value),
            source,
        }) => {
            let response = if raw_body {
                let mut r = Response::new(Full::new(value.clone()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                r
            } else {
                let body = JsonObject::new().bytes("key", &key).bytes("value", value);
                body.response(StatusCode::OK)
            };
            let outcome = if matches!(source, Source::Hit { .. }) {
                Outcome::Hit
            } else {
                Outcome::Miss
            };
            (response, outcome)
        }
        Ok(Found { value: None, .. }) => {
            let body = JsonObject::new()
                .bytes("error", b"key not found")
                .bytes("key", &key);
            (body.response(StatusCode::NOT_FOUND), Outcome::NotFound)
        }
        Err(e) => error_response(e),
    };
    let headers = response.headers_mut();
    match result {
        Ok(Found {
            source: Source::Hit { age },
            ..
        }) => {
            headers.insert("x-cache", HeaderValue::from_static("HIT"));
            headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
        }
        _ => {
            headers.insert("x-cache", HeaderValue::from_static("MISS"));
        }
    }
    (response, outcome)
}

async fn set(app: &App, key: Bytes, value: Bytes) -> (Response<Body>, Outcome) {
    match app.lookup.set(key.clone(), value.clone()).await {
        Ok(()) => {
            let body = JsonObject::new().bytes("key", &key).bytes("value", &value);
            (body.response(StatusCode::OK), Outcome::Ok)
        }
        Err(e) => error_response(&e),
    }
}

fn error_response(e: &Error) -> (Response<Body>, Outcome) {
    let status = match e {
        Error::WrongType(_) => StatusCode::CONFLICT,
        Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        Error::Unavailable(_) | Error::Reply(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let outcome = match e {
        Error::WrongType(_) => Outcome::WrongType,
        _ => Outcome::BackendError,
    };
    (json_response(status, json!({"error": e.to_string()})), outcome)
}

/// A flat JSON object written straight into its body: the answers on the
/// lookup path, built without an intermediate map or extra copies.
struct JsonObject(Vec<u8>);

impl JsonObject {
    fn new() -> Self {
        JsonObject(Vec::with_capacity(64))
    }

    /// `"name":"text"` when the bytes are UTF-8, else `"name_base64":"…"`.
    fn bytes(mut self, name: &str, bytes: &[u8]) -> Self {
        self.0.push(if self.0.is_empty() { b'{' } else { b',' });
        let out = &mut self.0;
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                write_json_str(out, name);
                out.push(b':');
                write_json_str(out, text);
            }
            Err(_) => {
                write_json_str(out, &format!("{name}_base64"));
                out.push(b':');
                write_json_str(out, &BASE64.encode(bytes));
            }
        }
        self
    }

    fn response(mut self, status: StatusCode) -> Response<Body> {
        self.0.push(b'}');
        let mut r = Response::new(Full::new(Bytes::from(self.0)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("writing JSON to a Vec cannot fail");
}

fn bearer_ok(app: &App, req: &Request<Incoming>) -> bool {
    let given = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let token = given.and_then(|v| {
        let (scheme, token) = v.split_at(v.len().min(7));
        scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
    });
    token.is_some_and(|t| crate::resp::password_matches(app, t))
}

fn wants_octets(req: &Request<Incoming>) -> bool {
    req.headers().get_all(header::ACCEPT).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/octet-stream")
            })
        })
    })
}

/// Strict percent-decoding: `%` must be followed by two hex digits.
pub fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hi = hex(*s.get(i + 1)?)?;
            let lo = hex(*s.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

fn describe(app: &App) -> Value {
    json!({
        "service": "redis-proxy",
        "version": env!("CARGO_PKG_VERSION"),
        "routes": {
            "GET /get/{key}": "the key's value as JSON {\"key\",\"value\"}; raw bytes with Accept: application/octet-stream; 404 if missing",
            "HEAD /get/{key}": "as GET, without a body",
            "GET|PUT|POST /set/{key}/{value}": if app.allow_writes {
                "SET on Redis, fresh in the cache"
            } else {
                "disabled (403): start with --allow-writes"
            },
        },
        "cache": "X-Cache: HIT|MISS on every lookup, Age on hits",
    })
}

pub fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn client_error(status: StatusCode, msg: &str) -> (Response<Body>, Outcome) {
    (json_response(status, json!({"error": msg})), Outcome::ClientError)
}

fn method_not_allowed(allow: &'static str) -> (Response<Body>, Outcome) {
    let (mut r, outcome) = client_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    (r, outcome)
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn strict_percent_decoding() {
        assert_eq!(percent_decode(b"a%2Fb").unwrap(), b"a/b");
        assert_eq!(percent_decode(b"%00%ff").unwrap(), [0, 255]);
        assert_eq!(percent_decode(b"a+b").unwrap(), b"a+b");
        assert!(percent_decode(b"%zz").is_none());
        assert!(percent_decode(b"%4").is_none());
        assert!(percent_decode(b"%").is_none());
    }
}
