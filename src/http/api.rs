//! The HTTP API: `GET /get/{key}`, `/set/{key}/{value}`, `GET /`. A request
//! is routed by [`parse_route`], a pure function of its method and target,
//! then answered through the [`Lookup`](crate::lookup::Lookup). Keys are
//! taken from the raw path, percent-decoded strictly, and treated as bytes
//! throughout.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{Body, JsonObject, error_response, json_response};
use crate::app::{self, App};
use crate::error::Error;
use crate::lookup::{Found, Source};
use crate::metrics::Outcome;

/// Longest request target served; longer ones get 414.
pub const MAX_PATH: usize = 8 * 1024;

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: the description of the routes.
    Root,
    /// `GET|HEAD /get/{key}`.
    Get { key: Bytes },
    /// `GET|PUT|POST /set/{key}/{value}`.
    Set { key: Bytes, value: Bytes },
}

/// The route for `method` and `target` (the path and query as sent), or
/// the client error that answers it.
pub fn parse_route(method: &Method, target: &str) -> Result<Route, Error> {
    if target.len() > MAX_PATH {
        return Err(Error::client(414, "request path longer than 8 KiB"));
    }
    let path = target.split('?').next().unwrap_or("").as_bytes();
    let allow = |methods: &[Method]| {
        if methods.contains(method) {
            Ok(())
        } else {
            Err(Error::client(405, "method not allowed"))
        }
    };
    if path == b"/" {
        allow(&[Method::GET, Method::HEAD])?;
        return Ok(Route::Root);
    }
    if let Some(raw) = path.strip_prefix(b"/get/") {
        allow(&[Method::GET, Method::HEAD])?;
        let key = percent_decode(raw).ok_or_else(|| Error::client(400, "bad percent-encoding in key"))?;
        if key.is_empty() {
            return Err(Error::client(400, "empty key"));
        }
        return Ok(Route::Get { key: key.into() });
    }
    if let Some(raw) = path.strip_prefix(b"/set/") {
        allow(&[Method::GET, Method::PUT, Method::POST])?;
        let split = raw
            .iter()
            .rposition(|&b| b == b'/')
            .ok_or_else(|| Error::client(400, "expected /set/{key}/{value}"))?;
        let (Some(key), Some(value)) = (percent_decode(&raw[..split]), percent_decode(&raw[split + 1..]))
        else {
            return Err(Error::client(400, "bad percent-encoding in key or value"));
        };
        if key.is_empty() {
            return Err(Error::client(400, "empty key"));
        }
        return Ok(Route::Set {
            key: key.into(),
            value: value.into(),
        });
    }
    Err(Error::client(404, "not found"))
}

/// The methods a path's route takes, for `Allow` on a 405.
fn allowed_methods(path: &str) -> &'static str {
    if path.starts_with("/set/") {
        "GET, PUT, POST"
    } else {
        "GET, HEAD"
    }
}

/// hyper's entry point: every request on every HTTP connection.
pub async fn serve(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let (response, outcome) = {
        // Held for the whole request: with --max-parallel 1 requests are
        // worked on one at a time, in the order they arrived.
        let _slot = app.slot().await;
        answer(&app, &req).await
    };
    app.http_metrics.record(outcome, start);
    Ok(response)
}

async fn answer(app: &App, req: &Request<Incoming>) -> (Response<Body>, Outcome) {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let route = if app.requires_password() && !bearer_ok(app, req) {
        Err(Error::client(401, "missing or wrong Authorization: Bearer"))
    } else {
        parse_route(req.method(), target)
    };
    match route {
        Ok(Route::Root) => (json_response(StatusCode::OK, describe(app)), Outcome::Ok),
        Ok(Route::Get { key }) => get(app, key, wants_octets(req)).await,
        Ok(Route::Set { .. }) if !app.allow_writes => refused(
            &Error::client(403, "writes are disabled; start the proxy with --allow-writes"),
            target,
        ),
        Ok(Route::Set { key, value }) => set(app, key, value).await,
        Err(e) => refused(&e, target),
    }
}

/// The answer to an error, with the headers its status calls for.
fn refused(e: &Error, target: &str) -> (Response<Body>, Outcome) {
    let mut r = match e.http_status() {
        404 => json_response(
            StatusCode::NOT_FOUND,
            json!({"error": "not found", "routes": "GET /"}),
        ),
        _ => error_response(e),
    };
    let headers = r.headers_mut();
    match e.http_status() {
        401 => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        405 => {
            headers.insert(header::ALLOW, HeaderValue::from_static(allowed_methods(target)));
        }
        _ => {}
    }
    (r, app::error_outcome(e))
}

async fn get(app: &App, key: Bytes, raw_body: bool) -> (Response<Body>, Outcome) {
    let result = app.lookup.get(key.clone()).await;
    let outcome = app::outcome(&result);
    let mut response = match &result {
        Ok(Found {
            value: Some(value), ..
        }) if raw_body => {
            // A copy: the value may share a 64 KiB arena chunk, which a
            // response queued to a slow reader must not keep alive.
            let mut r = Response::new(Full::new(Bytes::copy_from_slice(value)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        Ok(Found {
            value: Some(value), ..
        }) => JsonObject::new()
            .bytes("key", &key)
            .bytes("value", value)
            .response(StatusCode::OK),
        Ok(Found { value: None, .. }) => JsonObject::new()
            .bytes("error", b"key not found")
            .bytes("key", &key)
            .response(StatusCode::NOT_FOUND),
        Err(e) => error_response(e),
    };
    let headers = response.headers_mut();
    match result {
        Ok(Found {
            source: Source::Hit { age },
            ..
        }) => {
            headers.insert("x-cache", HeaderValue::from_static("HIT"));
            headers.insert(header::AGE, super::age_header(age.as_secs()));
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
        Err(e) => (error_response(&e), app::error_outcome(&e)),
    }
}

fn bearer_ok(app: &App, req: &Request<Incoming>) -> bool {
    let given = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let token = given.and_then(|v| {
        let (scheme, token) = v.split_at(v.len().min(7));
        scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
    });
    token.is_some_and(|t| app.password_matches(t))
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

/// Strict percent-decoding: `%` must be followed by two hex digits. A key
/// with no `%` is copied as it is.
pub fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    if !s.contains(&b'%') {
        return Some(s.to_vec());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, target: &str) -> Result<Route, u16> {
        parse_route(&method, target).map_err(|e| e.http_status())
    }

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn strict_percent_decoding() {
        assert_eq!(percent_decode(b"a%2Fb").unwrap(), b"a/b");
        assert_eq!(percent_decode(b"%00%ff").unwrap(), [0, 255]);
        assert_eq!(percent_decode(b"a+b").unwrap(), b"a+b");
        assert!(percent_decode(b"%zz").is_none());
        assert!(percent_decode(b"%4").is_none());
        assert!(percent_decode(b"%").is_none());
    }

    #[test]
    fn get_routes_take_everything_after_get_as_the_key() {
        assert_eq!(route(Method::GET, "/"), Ok(Route::Root));
        assert_eq!(route(Method::GET, "/get/k"), Ok(Route::Get { key: b(b"k") }));
        assert_eq!(route(Method::HEAD, "/get/a/b"), Ok(Route::Get { key: b(b"a/b") }));
        assert_eq!(
            route(Method::GET, "/get/a%2Fb?x=1"),
            Ok(Route::Get { key: b(b"a/b") })
        );
        assert_eq!(
            route(Method::GET, "/get/%00%ff"),
            Ok(Route::Get { key: b(&[0, 255]) })
        );
    }

    #[test]
    fn set_routes_split_at_the_last_slash_then_decode() {
        let set = |k: &[u8], v: &[u8]| {
            Ok(Route::Set {
                key: b(k),
                value: b(v),
            })
        };
        assert_eq!(route(Method::PUT, "/set/k/v"), set(b"k", b"v"));
        assert_eq!(route(Method::POST, "/set/a/b%20c/x%2Fy"), set(b"a/b c", b"x/y"));
        assert_eq!(route(Method::GET, "/set/e/"), set(b"e", b""));
    }

    #[test]
    fn refusals_carry_their_status() {
        assert_eq!(route(Method::GET, "/get/"), Err(400));
        assert_eq!(route(Method::GET, "/get/a%zz"), Err(400));
        assert_eq!(route(Method::GET, "/set//v"), Err(400));
        assert_eq!(route(Method::GET, "/set/novalue"), Err(400));
        assert_eq!(route(Method::GET, "/nope"), Err(404));
        assert_eq!(route(Method::GET, "/get"), Err(404));
        assert_eq!(route(Method::DELETE, "/get/k"), Err(405));
        assert_eq!(route(Method::POST, "/"), Err(405));
        assert_eq!(
            route(Method::GET, &format!("/get/{}", "k".repeat(MAX_PATH))),
            Err(414)
        );
        assert_eq!(
            (allowed_methods("/set/k/v"), allowed_methods("/get/k")),
            ("GET, PUT, POST", "GET, HEAD")
        );
    }
}
