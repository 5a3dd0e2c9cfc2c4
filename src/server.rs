//! Sockets: bind, accept, admit, reject, drain.
//!
//! [`run`] serves an [`App`] on bound [`Listeners`] until `shutdown`
//! completes (the binary passes SIGTERM/SIGINT; a test may pass anything),
//! as mini-redis's `server::run` does. Each listener has an accept loop. A
//! client connection (HTTP or RESP) takes a permit from one semaphore
//! shared by the client front ends (`--max-clients`) and holds it until it
//! closes; with none left, the connection is told so (503 / `-ERR max
//! number of clients reached`) and closed. The admin port has its own
//! small limit, [`ADMIN_MAX_CLIENTS`]. A rejected connection is closed by
//! its accept loop, not a task of its own (see `Rejected`), so a flood of
//! them costs a bounded amount. [`fit_open_files`] makes sure the process
//! may open the sockets `--max-clients` promises. On shutdown the accept loops
//! stop, open connections finish what they are working on and close, and
//! after `--shutdown-timeout` whatever is left is dropped.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{App, WRITE_DEADLINE};
use crate::config::{Config, Listen};
use crate::http::Body;
use crate::metrics::{Disconnect, FrontendLabels};

/// Admin connections held at once: enough for scrapers and health checks.
pub const ADMIN_MAX_CLIENTS: usize = 16;

/// Rejected connections each accept loop holds open at once while the
/// client reads why; past this, one is closed as soon as it is told.
const REJECTS_LINGERING: usize = 32;

/// Open files beyond the clients and their pinned connections: admin
/// connections, rejected ones being closed, the shared and idle backend
/// connections, listeners and the process's own.
pub const OPEN_FILES_HEADROOM: u64 = 256;

/// Raises the soft open-file limit to what `max_clients` and `max_pinned`
/// need (plus headroom for shared and idle backend connections, the admin
/// port and the listeners). Where the hard limit is lower: when the figure
/// was the default (`given` false), it is lowered to fit, as Redis does
/// with its `maxclients`, and returned with a warning to log; when the user
/// chose it, an error that says what to set. Returns (open files, clients,
/// warning).
pub fn fit_open_files(
    max_clients: u32,
    max_pinned: u32,
    given: bool,
) -> Result<(u64, u32, Option<String>), String> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let need = u64::from(max_clients) + u64::from(max_pinned) + OPEN_FILES_HEADROOM;
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= need {
        return Ok((soft, max_clients, None));
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let too_low = || {
        format!(
            "--max-clients {max_clients} with --max-pinned-connections {max_pinned} needs \
             {need} open files but the limit is {soft} (hard limit {hard}): raise it (ulimit -n \
             {need}, or LimitNOFILE={need} under systemd) or lower --max-clients"
        )
    };
    let (target, clients, warning) = if hard >= need {
        (need, max_clients, None)
    } else if !given && hard > u64::from(max_pinned) + OPEN_FILES_HEADROOM {
        let fits = u32::try_from(hard - u64::from(max_pinned) - OPEN_FILES_HEADROOM).unwrap_or(u32::MAX);
        let warning = format!(
            "the open-file limit (hard {hard}) fits --max-clients {fits}, not the default {max_clients}: \
             serving at most {fits} clients; raise it (ulimit -n {need}, or LimitNOFILE={need} under \
             systemd) for the default"
        );
        (hard, fits, Some(warning))
    } else {
        return Err(too_low());
    };
    let raised = rustix::process::Rlimit {
        current: Some(target),
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).map_err(|_| too_low())?;
    Ok((target, clients, warning))
}

/// The bound sockets; `None` where a front end is `off`.
pub struct Listeners {
    pub http: Option<TcpListener>,
    pub resp: Option<TcpListener>,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds every address the configuration names. An error (a port in
    /// use, say) names the flag.
    pub async fn bind(config: &Config) -> Result<Listeners, String> {
        Ok(Listeners {
            http: bind(config.http_listen, "--http-listen").await?,
            resp: bind(config.resp_listen, "--resp-listen").await?,
            admin: bind(config.admin_listen, "--admin-listen").await?,
        })
    }
}

/// Builds the app, binds its listeners and serves until SIGTERM or SIGINT:
/// what the binary does. An error is a start-up failure.
pub async fn run_until_signalled(config: Config) -> Result<(), String> {
    let app = App::build(&config)?;
    let listeners = Listeners::bind(&config).await?;
    tracing::info!(
        http = %describe(&listeners.http),
        resp = %describe(&listeners.resp),
        admin = %describe(&listeners.admin),
        redis = %crate::config::redacted_url(config.redis_url()),
        max_clients = config.max_clients,
        max_parallel = config.max_parallel(),
        invalidation = ?config.invalidation,
        "redis-proxy listening"
    );
    let block = ready_block(&config, &listeners);
    let ready = app.clone();
    tokio::spawn(async move {
        while !ready.is_ready() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!("ready\n{block}");
    });
    run(app, listeners, shutdown_signal()).await;
    Ok(())
}

/// `1 GiB`, `64 MiB`, `1500 bytes`: as the flags take them.
fn bytes(n: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

/// What a newcomer needs once the proxy is ready: where each front end
/// listens and a command to try on it, where Redis is, whether writes are
/// allowed, what the cache holds and how it stays coherent.
fn ready_block(config: &Config, listeners: &Listeners) -> String {
    let addr = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    let mut lines = Vec::new();
    match addr(&listeners.http) {
        Some(a) => lines.push(format!("  HTTP   http://{a}    try: curl -i http://{a}/get/foo")),
        None => lines.push("  HTTP   off".to_string()),
    }
    match addr(&listeners.resp) {
        Some(a) => lines.push(format!(
            "  RESP   {a}    try: redis-cli -h {} -p {} GET foo",
            a.ip(),
            a.port()
        )),
        None => lines.push("  RESP   off".to_string()),
    }
    match addr(&listeners.admin) {
        Some(a) => lines.push(format!(
            "  status http://{a}/    (a live page; also /status, /hotkeys, /metrics, /readyz)"
        )),
        None => lines.push("  status off (--admin-listen off)".to_string()),
    }
    let redis = match &config.redis_cluster {
        Some(seeds) => format!("Redis Cluster, seeds {}", seeds.redacted()),
        None => crate::config::redacted_url(config.redis_url()),
    };
    lines.push(format!("  Redis  {redis}"));
    lines.push(format!(
        "  writes {}",
        if config.allow_writes {
            "allowed (--allow-writes): /set and every RESP write go to Redis"
        } else {
            "refused (start with --allow-writes to allow them)"
        }
    ));
    lines.push(format!(
        "  cache  {} keys, {} at most, each for {} from insertion{}",
        config.cache_capacity,
        bytes(config.cache_max_bytes),
        humantime::format_duration(config.cache_ttl),
        if config.cache_capacity == 0 {
            " (capacity 0: caching off)"
        } else {
            ""
        }
    ));
    lines.push(format!(
        "  coherence  {}",
        match config.lease() {
            Some(lease) => format!(
                "tracking: Redis says which keys change; cached values served while Redis answered within {}",
                humantime::format_duration(lease)
            ),
            None => "ttl: expiry only; a value changed in Redis is served until its TTL runs out".into(),
        }
    ));
    lines.join("\n")
}

/// Serves until `shutdown` completes, then drains: `/readyz` turns 503; on
/// [`Signal::Terminate`] the proxy goes on serving for `--shutdown-delay`
/// (a load balancer's health check sees it leave before its connections are
/// refused; a second signal cuts the wait short); then the listeners close,
/// each connection finishes the request it is on, and what is left after
/// `--shutdown-timeout` is dropped.
pub async fn run(app: Arc<App>, listeners: Listeners, shutdown: impl Future<Output = Signal>) {
    let stop_accepting = CancellationToken::new();
    // The backend outlives the accept loops: draining requests still need it.
    let stop_backend = CancellationToken::new();
    app.reads.supervise(stop_backend.clone());
    tokio::spawn(sample_every_second(app.clone(), stop_backend.clone()));
    let serving = serve(&app, listeners, &stop_accepting);
    let signal = shutdown.await;
    app.start_draining();
    if signal == Signal::Terminate && !app.shutdown_delay.is_zero() {
        tracing::info!(delay = ?app.shutdown_delay, "shutting down: not ready; serving until the delay is over");
        tokio::select! {
            _ = tokio::time::sleep(app.shutdown_delay) => {}
            _ = shutdown_signal() => tracing::info!("second signal: not waiting out the delay"),
        }
    }
    tracing::info!(timeout = ?app.shutdown_timeout, "shutting down: draining connections");
    stop_accepting.cancel();
    drain(serving, app.shutdown_timeout).await;
    stop_backend.cancel();
}

/// Feeds the status page's ring until `stop`.
async fn sample_every_second(app: Arc<App>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => app.sample(),
            _ = stop.cancelled() => return,
        }
    }
}

/// The accept loops, running.
struct Serving {
    hyper_loops: Vec<JoinHandle<GracefulShutdown>>,
    resp_loop: Option<JoinHandle<()>>,
    resp_conns: TaskTracker,
}

fn serve(app: &Arc<App>, listeners: Listeners, stop: &CancellationToken) -> Serving {
    let clients = Arc::new(Semaphore::new(app.max_clients));
    let mut hyper_loops = Vec::new();
    if let Some(l) = listeners.http {
        let limit = clients.clone();
        let accepting = hyper_loop(
            l,
            app.clone(),
            crate::http::api::serve,
            limit,
            "http",
            stop.clone(),
        );
        hyper_loops.push(tokio::spawn(accepting));
    }
    if let Some(l) = listeners.admin {
        let limit = Arc::new(Semaphore::new(ADMIN_MAX_CLIENTS));
        let accepting = hyper_loop(
            l,
            app.clone(),
            crate::http::admin::serve,
            limit,
            "admin",
            stop.clone(),
        );
        hyper_loops.push(tokio::spawn(accepting));
    }
    let resp_conns = TaskTracker::new();
    let resp_loop = listeners.resp.map(|l| {
        let accepting = resp_loop(l, app.clone(), clients, stop.clone(), resp_conns.clone());
        tokio::spawn(accepting)
    });
    Serving {
        hyper_loops,
        resp_loop,
        resp_conns,
    }
}

/// Waits for the accept loops to stop, then for their connections to
/// finish, for at most `timeout`.
async fn drain(serving: Serving, timeout: Duration) {
    let mut drains = Vec::new();
    for l in serving.hyper_loops {
        match l.await {
            Ok(drain) => drains.push(drain),
            Err(e) => tracing::error!(error = %e, "an accept loop failed"),
        }
    }
    if let Some(l) = serving.resp_loop
        && let Err(e) = l.await
    {
        tracing::error!(error = %e, "the RESP accept loop failed");
    }
    serving.resp_conns.close();
    let connections = async {
        for d in drains {
            d.shutdown().await;
        }
        serving.resp_conns.wait().await;
    };
    match tokio::time::timeout(timeout, connections).await {
        Ok(()) => tracing::info!("drained; bye"),
        Err(_) => tracing::warn!("shutdown timeout reached; closing the remaining connections"),
    }
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
/// What asked the proxy to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: a service manager or orchestrator; `--shutdown-delay` applies.
    Terminate,
    /// SIGINT: someone at a terminal (Ctrl-C); no delay.
    Interrupt,
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() -> Signal {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Signal::Interrupt,
        _ = term.recv() => Signal::Terminate,
    }
}

/// The next connection, or None once `stop` is cancelled. Works on the
/// loop's rejected connections while it waits.
async fn accept(
    listener: &TcpListener,
    frontend: &'static str,
    stop: &CancellationToken,
    rejected: &mut Rejected,
) -> Option<TcpStream> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            () = rejected.progress() => {}
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

/// A slot for a new connection (`--max-clients`, or the admin port's
/// own), `Err` when all are taken (counted in the metrics).
fn admit(limit: &Arc<Semaphore>, app: &App, frontend: &'static str) -> Result<OwnedSemaphorePermit, ()> {
    limit.clone().try_acquire_owned().map_err(|_| {
        app.metrics
            .connections_rejected
            .get_or_create(&FrontendLabels { frontend })
            .inc();
    })
}

/// Accepts HTTP connections until `stop`; returns the handle that drains
/// the connections it started.
async fn hyper_loop<H, Fut>(
    listener: TcpListener,
    app: Arc<App>,
    handler: H,
    limit: Arc<Semaphore>,
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
    let mut rejected = Rejected::new(HTTP_REJECT);
    while let Some(stream) = accept(&listener, frontend, &stop, &mut rejected).await {
        let Ok(permit) = admit(&limit, &app, frontend) else {
            rejected.push(stream);
            continue;
        };
        let conn_app = app.clone();
        let service = service_fn(move |req| handler(conn_app.clone(), req));
        // A client that stops reading its responses holds a write forever;
        // after WRITE_DEADLINE the write fails and hyper closes it.
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(WRITE_DEADLINE));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .keep_alive(true)
            // Armed while hyper waits for a request's head, the idle wait
            // between keep-alive requests included: so it is the idle
            // timeout, and also bounds a head sent slowly.
            .header_read_timeout(app.idle_timeout)
            // Not pipeline_flush: with it, hyper 1.12 drops the automatic
            // 400/414/431 it writes for a request it cannot parse, and the
            // client sees the connection close with no answer. Pipelined
            // requests are still answered in order, one write each.
            .pipeline_flush(false)
            .serve_connection(TokioIo::new(Box::pin(stream)), service);
        let conn = graceful.watch(conn);
        let open = open.clone();
        open.inc();
        let metrics = app.metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                if let Some(reason) = deadline_passed(&e) {
                    metrics.disconnected(reason);
                }
                tracing::debug!(error = %e, "connection ended with an error");
            }
            open.dec();
            drop(permit);
        });
    }
    graceful
}

/// Which deadline, if any, ended an HTTP connection: hyper's header-read
/// timer (the idle timeout), or the socket's write timeout.
fn deadline_passed(e: &hyper::Error) -> Option<Disconnect> {
    if e.is_timeout() {
        return Some(Disconnect::Idle);
    }
    let io = std::error::Error::source(e)?.downcast_ref::<std::io::Error>()?;
    (io.kind() == std::io::ErrorKind::TimedOut).then_some(Disconnect::WriteTimeout)
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
    let open = app
        .metrics
        .connections
        .get_or_create(&FrontendLabels { frontend: FRONTEND })
        .clone();
    let mut rejected = Rejected::new(RESP_REJECT);
    while let Some(stream) = accept(&listener, FRONTEND, &stop, &mut rejected).await {
        let Ok(permit) = admit(&clients, &app, FRONTEND) else {
            rejected.push(stream);
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

/// Connections over the limit, told so and closed: polled by their accept
/// loop, not a task each, and at most [`REJECTS_LINGERING`] held open at
/// once. Past that, a connection is told with one non-blocking write (a
/// new socket's send buffer has room) and closed at once.
struct Rejected {
    message: &'static [u8],
    lingering: FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Rejected {
    fn new(message: &'static [u8]) -> Rejected {
        Rejected {
            message,
            lingering: FuturesUnordered::new(),
        }
    }

    fn push(&mut self, stream: TcpStream) {
        if self.lingering.len() < REJECTS_LINGERING {
            self.lingering.push(Box::pin(reject(stream, self.message)));
        } else {
            let _ = stream.try_write(self.message);
        }
    }

    /// Works on the lingering connections; pending while there are none.
    async fn progress(&mut self) {
        if self.lingering.next().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// Tells a connection over the limit so, and closes it.
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
