//! The HTTP front ends: the API ([`api`]: `/get`, `/set`) and the admin
//! port ([`admin`]: `/metrics`, `/healthz`, `/readyz`), and what they share:
//! the body type and the JSON answers.

pub mod admin;
pub mod api;

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

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("writing JSON to a Vec cannot fail");
}
