//! Listeners, the client limit and the graceful drain.
//!
//! Each listener has an accept loop. A client connection takes a permit from
//! one semaphore shared by every client front end (`--max-clients`) and holds
//! it until it closes; with none left, the connection gets a 503 and is
//! closed. On SIGTERM/SIGINT the accept loops stop, open connections finish
//! the request they are on and close, and after `--shutdown-timeout` whatever
//! is left is dropped.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::cache::Store;
use crate::config::{Config, Listen};
use crate::http::Body;
use crate::lookup::Lookup;
use crate::metrics::{FrontendLabels, Metrics};

/// What every request handler shares.
pub struct App {
    pub lookup: Arc<Lookup>,
    pub metrics: Arc<Metrics>,
    /// `--max-parallel` permits; fair, so with one permit requests run in
    /// arrival order.
    pub parallel: Semaphore,
    pub allow_writes: bool,
}

/// Builds everything from the configuration and serves until SIGTERM or
/// SIGINT, then drains. An error here is a start-up failure (a port in use).
pub async fn run(config: Config) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    let backend = Backend::new(config.redis_url(), config.backend_timeout, metrics.clone())
        .map_err(|e| format!("--redis-url: {e}"))?;
    let backend = Arc::new(backend);
    let store = Store::new(config.cache_capacity, config.cache_max_bytes, config.cache_ttl);
    let app = Arc::new(App {
        lookup: Arc::new(Lookup::new(store, backend.clone(), metrics.clone())),
        metrics,
        parallel: Semaphore::new(config.max_parallel()),
        allow_writes: config.allow_writes,
    });
    let http = bind(config.http_listen, "--http-listen").await?;
    let admin = bind(config.admin_listen, "--admin-listen").await?;
    tracing::info!(
        http = %describe(&http),
        admin = %describe(&admin),
        redis = %redacted(config.redis_url()),
        max_clients = config.max_clients,
        max_parallel = config.max_parallel(),
        "redis-proxy listening"
    );
    let token = CancellationToken::new();
    // The backend outlives the accept loops: draining requests still need it.
    let backend_token = CancellationToken::new();
    tokio::spawn(backend.supervise(backend_token.clone()));
    let clients = Arc::new(Semaphore::new(config.max_clients as usize));
    let mut loops = Vec::new();
    if let Some(l) = http {
        let serve = crate::http::serve;
        loops.push(tokio::spawn(accept_loop(
            l,
            app.clone(),
            serve,
            Some(clients),
            "http",
            token.clone(),
        )));
    }
    if let Some(l) = admin {
        let serve = crate::admin::serve;
        loops.push(tokio::spawn(accept_loop(
            l,
            app.clone(),
            serve,
            None,
            "admin",
            token.clone(),
        )));
    }
    shutdown_signal().await;
    tracing::info!(timeout = ?config.shutdown_timeout, "shutting down: draining connections");
    token.cancel();
    let mut drains = Vec::new();
    for l in loops {
        drains.push(l.await.map_err(|e| format!("accept loop failed: {e}"))?);
    }
    let drain = async {
        for d in drains {
            d.shutdown().await;
        }
    };
    match tokio::time::timeout(config.shutdown_timeout, drain).await {
        Ok(()) => tracing::info!("drained; bye"),
        Err(_) => tracing::warn!("shutdown timeout reached; closing the remaining connections"),
    }
    backend_token.cancel();
    Ok(())
}

async fn bind(listen: Listen, flag: &str) -> Result<Option<TcpListener>, String> {
    match listen {
        Listen::Off => Ok(None),
        Listen::On(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|e| format!("{flag} {addr}: {e}")),
    }
}

fn describe(l: &Option<TcpListener>) -> String {
    match l.as_ref().map(TcpListener::local_addr) {
        Some(Ok(addr)) => addr.to_string(),
        Some(Err(e)) => e.to_string(),
        None => "off".into(),
    }
}

/// The URL with any password replaced, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Accepts until `token` is cancelled; returns the handle that drains the
/// connections it started.
async fn accept_loop<H, Fut>(
    listener: TcpListener,
    app: Arc<App>,
    handler: H,
    limit: Option<Arc<Semaphore>>,
    frontend: &'static str,
    token: CancellationToken,
) -> GracefulShutdown
where
    H: Fn(Arc<App>, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let labels = FrontendLabels { frontend };
    let open = app.metrics.connections.get_or_create(&labels).clone();
    loop {
        let (stream, peer) = tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, frontend, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit: Option<OwnedSemaphorePermit> = match &limit {
            None => None,
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    app.metrics.connections_rejected.get_or_create(&labels).inc();
                    tracing::debug!(%peer, frontend, "max clients reached; rejecting");
                    tokio::spawn(reject_http(stream));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn_app = app.clone();
        let service = service_fn(move |req| handler(conn_app.clone(), req));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .pipeline_flush(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        let open = open.clone();
        open.inc();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            open.dec();
            drop(permit);
        });
    }
    graceful
}

/// Answers a connection over `--max-clients` with 503 and closes it.
async fn reject_http(mut stream: TcpStream) {
    const BODY: &str = r#"{"error":"max number of clients reached"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    // Read what the client sent before closing: closing a socket with unread
    // input sends a reset, which can destroy the 503 before it is read.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
