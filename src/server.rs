//! Listeners, the client limit and the graceful drain.
//!
//! Each listener has an accept loop. A client connection (HTTP or RESP)
//! takes a permit from one semaphore shared by the client front ends
//! (`--max-clients`) and holds it until it closes; with none left, the
//! connection is told so (503 / `-ERR max number of clients reached`) and
//! closed. On SIGTERM/SIGINT the accept loops stop, open connections finish
//! what they are working on and close, and after `--shutdown-timeout`
//! whatever is left is dropped.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::Backend;
use crate::cache::Store;
use crate::config::{Config, Listen};
use crate::http::Body;
use crate::lookup::{Local, Lookup};
use crate::metrics::{FrontendLabels, FrontendMetrics, Metrics};

/// What every request handler shares.
pub struct App {
    pub lookup: Arc<Lookup>,
    pub metrics: Arc<Metrics>,
    pub http_metrics: FrontendMetrics,
    pub resp_metrics: FrontendMetrics,
    /// `--max-parallel` permits; fair, so with one permit requests run in
    /// arrival order.
    pub parallel: Semaphore,
    pub allow_writes: bool,
    pub client_password: Option<String>,
    pub started: Instant,
    next_client_id: AtomicU64,
}

impl App {
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Builds everything from the configuration and serves until SIGTERM or
/// SIGINT, then drains. An error here is a start-up failure (a port in use).
pub async fn run(config: Config) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    let store = Store::new(config.cache_capacity, config.cache_max_bytes, config.cache_ttl);
    let local = Arc::new(Local::new(store, metrics.clone()));
    let backend = Backend::new(
        config.redis_url(),
        config.backend_timeout,
        config.invalidation,
        local.clone(),
        metrics.clone(),
    )
    .map_err(|e| format!("--redis-url: {e}"))?;
    let backend = Arc::new(backend);
    let app = Arc::new(App {
        lookup: Arc::new(Lookup::new(local, backend.clone(), metrics.clone())),
        http_metrics: metrics.frontend("http"),
        resp_metrics: metrics.frontend("resp"),
        metrics,
        parallel: Semaphore::new(config.max_parallel()),
        allow_writes: config.allow_writes,
        client_password: config.client_password.clone(),
        started: Instant::now(),
        next_client_id: AtomicU64::new(0),
    });
    let http = bind(config.http_listen, "--http-listen").await?;
    let resp = bind(config.resp_listen, "--resp-listen").await?;
    let admin = bind(config.admin_listen, "--admin-listen").await?;
    tracing::info!(
        http = %describe(&http),
        resp = %describe(&resp),
        admin = %describe(&admin),
        redis = %redacted(config.redis_url()),
        max_clients = config.max_clients,
        max_parallel = config.max_parallel(),
        invalidation = ?config.invalidation,
        "redis-proxy listening"
    );
    let stop_accepting = CancellationToken::new();
    // The backend outlives the accept loops: draining requests still need it.
    let stop_backend = CancellationToken::new();
    tokio::spawn(backend.supervise(stop_backend.clone()));
    let clients = Arc::new(Semaphore::new(config.max_clients as usize));
    let mut hyper_loops = Vec::new();
    if let Some(l) = http {
        let limit = Some(clients.clone());
        let serve = crate::http::serve;
        hyper_loops.push(tokio::spawn(hyper_loop(
            l,
            app.clone(),
            serve,
            limit,
            "http",
            stop_accepting.clone(),
        )));
    }
    if let Some(l) = admin {
        let serve = crate::admin::serve;
        hyper_loops.push(tokio::spawn(hyper_loop(
            l,
            app.clone(),
            serve,
            None,
            "admin",
            stop_accepting.clone(),
        )));
    }
    let resp_conns = TaskTracker::new();
    let resp_loop = resp.map(|l| {
        tokio::spawn(resp_loop(
            l,
            app.clone(),
            clients,
            stop_accepting.clone(),
            resp_conns.clone(),
        ))
    });

    shutdown_signal().await;
    tracing::info!(timeout = ?config.shutdown_timeout, "shutting down: draining connections");
    stop_accepting.cancel();
    let mut drains = Vec::new();
    for l in hyper_loops {
        drains.push(l.await.map_err(|e| format!("accept loop failed: {e}"))?);
    }
    if let Some(l) = resp_loop {
        l.await.map_err(|e| format!("accept loop failed: {e}"))?;
    }
    resp_conns.close();
    let drain = async {
        for d in drains {
            d.shutdown().await;
        }
        resp_conns.wait().await;
    };
    match tokio::time::timeout(config.shutdown_timeout, drain).await {
        Ok(()) => tracing::info!("drained; bye"),
        Err(_) => tracing::warn!("shutdown timeout reached; closing the remaining connections"),
    }
    stop_backend.cancel();
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

/// The next connection, or None once `stop` is cancelled.
async fn accept(
    listener: &TcpListener,
    frontend: &'static str,
    stop: &CancellationToken,
) -> Option<TcpStream> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some(stream);
                }
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, frontend, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// A `--max-clients` slot for a new connection, or None when all are taken
/// (counted in the metrics).
fn admit(
    limit: &Option<Arc<Semaphore>>,
    app: &App,
    frontend: &'static str,
) -> Result<Option<OwnedSemaphorePermit>, ()> {
    match limit {
        None => Ok(None),
        Some(sem) => match sem.clone().try_acquire_owned() {
            Ok(p) => Ok(Some(p)),
            Err(_) => {
                app.metrics
                    .connections_rejected
                    .get_or_create(&FrontendLabels { frontend })
                    .inc();
                Err(())
            }
        },
    }
}

/// Accepts HTTP connections until `stop`; returns the handle that drains
/// the connections it started.
async fn hyper_loop<H, Fut>(
    listener: TcpListener,
    app: Arc<App>,
    handler: H,
    limit: Option<Arc<Semaphore>>,
    frontend: &'static str,
    stop: CancellationToken,
) -> GracefulShutdown
where
    H: Fn(Arc<App>, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let open = app
        .metrics
        .connections
        .get_or_create(&FrontendLabels { frontend })
        .clone();
    while let Some(stream) = accept(&listener, frontend, &stop).await {
        let Ok(permit) = admit(&limit, &app, frontend) else {
            tokio::spawn(reject(stream, HTTP_REJECT));
            continue;
        };
        let conn_app = app.clone();
        let service = service_fn(move |req| handler(conn_app.clone(), req));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .keep_alive(true)
            // Not pipeline_flush: with it, hyper 1.12 drops the automatic
            // 400/414/431 it writes for a request it cannot parse, and the
            // client sees the connection close with no answer. Pipelined
            // requests are still answered in order, one write each.
            .pipeline_flush(false)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        let open = open.clone();
        open.inc();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            open.dec();
            drop(permit);
        });
    }
    graceful
}

/// Accepts RESP connections until `stop`, each served in a task `tracker` knows.
async fn resp_loop(
    listener: TcpListener,
    app: Arc<App>,
    clients: Arc<Semaphore>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    const FRONTEND: &str = "resp";
    let limit = Some(clients);
    let open = app
        .metrics
        .connections
        .get_or_create(&FrontendLabels { frontend: FRONTEND })
        .clone();
    while let Some(stream) = accept(&listener, FRONTEND, &stop).await {
        let Ok(permit) = admit(&limit, &app, FRONTEND) else {
            tokio::spawn(reject(stream, RESP_REJECT));
            continue;
        };
        let (app, open, stop) = (app.clone(), open.clone(), stop.clone());
        open.inc();
        tracker.spawn(async move {
            crate::resp::serve(app, stream, stop).await;
            open.dec();
            drop(permit);
        });
    }
}

const HTTP_REJECT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 41\r\nconnection: close\r\n\r\n{\"error\":\"max number of clients reached\"}";
const RESP_REJECT: &[u8] = b"-ERR max number of clients reached\r\n";

/// Tells a connection over `--max-clients` so, and closes it.
async fn reject(mut stream: TcpStream, message: &'static [u8]) {
    let _ = stream.write_all(message).await;
    let _ = stream.shutdown().await;
    // Read what the client sent before closing: closing a socket with unread
    // input sends a reset, which can destroy the message before it is read.
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
