//! The admin port: the status page `/` and its JSON `/status`, `/hotkeys`,
//! `/metrics`, `/healthz`, `/readyz`. It never asks for a client password;
//! bind it to a private address.

use std::convert::Infallible;
use std::sync::{Arc, LazyLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::Body;
use crate::app::App;
use crate::status::PAGE;

pub async fn serve(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (status, content_type, body) = match req.uri().path() {
        "/" => (StatusCode::OK, "text/html; charset=utf-8", PAGE.to_string()),
        "/status" => (
            StatusCode::OK,
            "application/json",
            super::status::status(&app).to_string(),
        ),
        "/hotkeys" => match hot_keys_wanted(req.uri().query()) {
            Ok(n) => (
                StatusCode::OK,
                "application/json",
                super::status::hot_keys(&app, n).to_string(),
            ),
            Err(e) => (
                StatusCode::BAD_REQUEST,
                "application/json",
                serde_json::json!({ "error": e }).to_string(),
            ),
        },
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            app.metrics.encode(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if app.is_ready() => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        "/readyz" if app.is_draining() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: shutting down\n".to_string(),
        ),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: Redis is unreachable or refuses CLIENT TRACKING\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /, /status, /hotkeys, /metrics, /healthz or /readyz\n".to_string(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, POLICY.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The page loads nothing from elsewhere, and the only script that may run
/// is its own, named by its SHA-256: a key that slipped past the escaping
/// into an element or an event handler still could not run. (Styles may be
/// inline: they run nothing.)
static POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let script = PAGE
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map_or("", |(script, _)| script);
    let digest = ring::digest::digest(&ring::digest::SHA256, script.as_bytes());
    let policy = format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'none'",
        BASE64.encode(digest.as_ref())
    );
    HeaderValue::from_str(&policy).expect("a header value")
});

/// `?n=N` of `/hotkeys`: how many keys (default 100).
fn hot_keys_wanted(query: Option<&str>) -> Result<usize, String> {
    let Some(query) = query else {
        return Ok(super::status::DEFAULT_HOT_KEYS);
    };
    for pair in query.split('&') {
        if let Some(n) = pair.strip_prefix("n=") {
            return n
                .parse()
                .map_err(|_| format!("n must be a count of keys, not {n:?}"));
        }
    }
    Ok(super::status::DEFAULT_HOT_KEYS)
}
