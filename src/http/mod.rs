//! The HTTP front ends: the API ([`api`]: `/get`, `/set`) and the admin
//! port ([`admin`]: the status page and its JSON ([`status`]), `/hotkeys`,
//! `/metrics`, `/healthz`, `/readyz`), and what they share:
//! the body type and the JSON answers.

pub mod admin;
pub mod api;
pub mod status;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use crate::error::Error;

pub type Body = Full<Bytes>;

pub fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `{"error": …}` with the status the error decides (see [`Error::http_status`]).
pub fn error_response(e: &Error) -> Response<Body> {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, json!({"error": e.to_string()}))
}

/// A flat JSON object written straight into its body: the answers on the
/// lookup path, built without an intermediate map or extra copies.
pub struct JsonObject(Vec<u8>);

impl Default for JsonObject {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonObject {
    pub fn new() -> Self {
        JsonObject(Vec::with_capacity(64))
    }

    /// Room for `n` more bytes of fields, so the body is allocated once.
    pub fn with_capacity(n: usize) -> Self {
        JsonObject(Vec::with_capacity(n + 32))
    }

    /// `"name":"text"` when the bytes are UTF-8, else `"name_base64":"…"`.
    pub fn bytes(mut self, name: &str, bytes: &[u8]) -> Self {
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

    pub fn response(mut self, status: StatusCode) -> Response<Body> {
        self.0.push(b'}');
        let mut r = Response::new(Full::new(Bytes::from(self.0)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}

/// `s` as a JSON string. Most keys and values need no escaping: they are
/// copied as they are, and only the others go through serde_json.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    let plain = s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, s).expect("writing JSON to a Vec cannot fail");
    }
}

/// `Age` for ages under this many seconds is one of these, made once.
const PREFORMATTED_AGES: u64 = 120;

/// The `Age` header for `secs` seconds, without formatting it for the
/// common ages (a TTL is usually a minute or two).
pub fn age_header(secs: u64) -> HeaderValue {
    static AGES: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    let ages = AGES.get_or_init(|| (0..PREFORMATTED_AGES).map(HeaderValue::from).collect());
    match ages.get(secs as usize) {
        Some(v) => v.clone(),
        None => HeaderValue::from(secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(value: &[u8]) -> serde_json::Value {
        let r = JsonObject::new().bytes("value", value).response(StatusCode::OK);
        let body = futures_body(r);
        serde_json::from_slice(&body).unwrap()
    }

    fn futures_body(r: Response<Body>) -> Vec<u8> {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(r.into_body().collect()).unwrap().to_bytes().to_vec()
    }

    #[test]
    fn json_strings_with_and_without_escapes() {
        assert_eq!(json(b"plain value"), serde_json::json!({"value": "plain value"}));
        assert_eq!(
            json(b"say \"hi\"\\\n\t"),
            serde_json::json!({"value": "say \"hi\"\\\n\t"})
        );
        assert_eq!(json("é😀".as_bytes()), serde_json::json!({"value": "é😀"}));
        assert_eq!(json(&[0xff, 0x00]), serde_json::json!({"value_base64": "/wA="}));
    }

    #[test]
    fn ages() {
        assert_eq!(age_header(0), "0");
        assert_eq!(age_header(59), "59");
        assert_eq!(age_header(3600), "3600");
    }
}
