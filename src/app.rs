//! What every front end shares: the read path, the metrics, the
//! `--max-parallel` slots and the client password. Built once from the
//! configuration by [`App::build`]; the front ends take an `Arc<App>` and
//! never each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::backend::{Backend, Coherence};
use crate::cache::{Bounds, Store};
use crate::cluster::Cluster;
use crate::commands::Deny;
use crate::config::Config;
use crate::error::Error;
use crate::forward::{Forwarder, Target, Targets};
use crate::lookup::lease::Lease;
use crate::lookup::{Found, Local, Lookup, Reads, Source};
use crate::metrics::{FrontendMetrics, Metrics, Outcome};
use crate::status::Ring;

pub struct App {
    pub lookup: Arc<Lookup>,
    /// The cache and the hot-key sketch the lookup reads through.
    pub local: Arc<Local>,
    /// One-second samples for the status page.
    pub ring: Ring,
    /// Every flag and its value in force, for the status page.
    pub flags: Vec<(&'static str, String)>,
    /// The tracking lease, None in `ttl` mode.
    pub lease: Option<Duration>,
    /// What the lookup reads from, for its supervisor and readiness.
    pub reads: Reads,
    pub metrics: Arc<Metrics>,
    /// Every command that is not a cached read.
    pub forwarder: Arc<Forwarder>,
    /// `--deny-commands`.
    pub deny: Deny,
    pub http_metrics: FrontendMetrics,
    pub resp_metrics: FrontendMetrics,
    /// `--max-parallel` permits; fair, so with one permit requests run in
    /// arrival order.
    parallel: Arc<Semaphore>,
    pub allow_writes: bool,
    client_password: Option<String>,
    pub max_clients: usize,
    pub shutdown_timeout: Duration,
    /// `--shutdown-delay`.
    pub shutdown_delay: Duration,
    /// Set on SIGTERM: `/readyz` says 503 from then on.
    draining: AtomicBool,
    /// `--client-idle-timeout`; None: never.
    pub idle_timeout: Option<Duration>,
    /// `--client-output-limit`.
    pub output_limit: usize,
    pub started: Instant,
    /// Random, one per process, as Redis's `run_id`: tells proxies behind
    /// one address apart (`INFO proxy`).
    pub run_id: String,
    next_client_id: AtomicU64,
    /// Bytes of unanswered input all RESP connections hold together, and
    /// the most they may (see [`App::input_over_budget`]).
    input_held: AtomicUsize,
    input_budget: AtomicUsize,
}

/// The default for all connections' unanswered input together.
pub const INPUT_BUDGET: usize = 1 << 30;

/// How long a client has to authenticate (with `--client-password`).
pub const AUTH_DEADLINE: Duration = Duration::from_secs(10);

/// How long a client's replies may take to drain before it is dropped.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(30);

impl App {
    /// Everything the configuration describes, not connected yet (the
    /// backend's supervisor connects; see [`crate::server::run`]). An error
    /// is a bad `--redis-url`.
    pub fn build(config: &Config) -> Result<Arc<App>, String> {
        let store = Store::with_bounds(Bounds {
            capacity: config.cache_capacity,
            max_bytes: Some(config.cache_max_bytes),
            max_value: usize::try_from(config.cache_max_value_bytes).unwrap_or(usize::MAX),
            ttl: config.cache_ttl,
        });
        Self::build_with(config, store)
    }

    /// [`App::build`] over a store made beforehand (a benchmark's, filled).
    pub fn build_with(config: &Config, store: Store) -> Result<Arc<App>, String> {
        let metrics = Arc::new(Metrics::new());
        let limits = &metrics.limits;
        limits.max_clients.set(i64::from(config.max_clients));
        limits.max_pinned.set(i64::from(config.max_pinned_connections));
        limits
            .cache_capacity
            .set(i64::try_from(config.cache_capacity).unwrap_or(i64::MAX));
        limits
            .cache_max_bytes
            .set(i64::try_from(config.cache_max_bytes).unwrap_or(i64::MAX));
        let lease = config.lease();
        let tls = config.redis_tls()?;
        // A cluster's lease is per slot (each master renews its own).
        let leased = match (lease, &config.redis_cluster) {
            (None, _) => Lease::unbounded(),
            (Some(length), Some(_)) => Lease::per_slot(length),
            (Some(length), None) => Lease::new(length),
        };
        let local = Arc::new(
            Local::with_lease(store, leased, metrics.clone()).with_hot_keys(config.hotkeys_capacity as usize),
        );
        let reads = match &config.redis_cluster {
            Some(seeds) => {
                let cluster = Cluster::new(
                    seeds.clone(),
                    tls.clone(),
                    config.backend_timeout,
                    config.invalidation,
                    lease,
                    local.clone(),
                    metrics.clone(),
                );
                Reads::Cluster(Arc::new(cluster))
            }
            None => {
                let backend = Backend::new(
                    config.redis_url(),
                    tls.clone(),
                    config.backend_timeout,
                    config.invalidation,
                    local.clone(),
                    metrics.clone(),
                )
                .map_err(|e| format!("--redis-url: {e}"))?
                .with_lease(lease);
                Reads::Redis(Arc::new(backend))
            }
        };
        let connect_timeout = config.backend_timeout.max(Duration::from_millis(500));
        let targets = match (&config.redis_cluster, &reads) {
            (Some(seeds), Reads::Cluster(cluster)) => Targets::cluster(
                seeds.clone(),
                tls.clone(),
                connect_timeout,
                cluster.topology().clone(),
            ),
            _ => Targets::One(Arc::new(
                Target::new(config.redis_url(), tls.as_ref(), connect_timeout)
                    .map_err(|e| format!("--redis-url: {e}"))?,
            )),
        };
        let coherence: Arc<dyn Coherence> = local.clone();
        let forwarder = Arc::new(Forwarder::new(
            targets,
            config.max_pinned_connections as usize,
            (!config.forward_timeout.is_zero()).then_some(config.forward_timeout),
            reads.clone(),
            coherence,
            metrics.clone(),
        ));
        Ok(Arc::new(App {
            forwarder,
            deny: Deny::parse(&config.deny_commands),
            lookup: Arc::new(Lookup::new(local.clone(), reads.clone(), metrics.clone())),
            local,
            ring: Ring::default(),
            flags: config.shown(),
            lease,
            reads,
            http_metrics: metrics.frontend("http"),
            resp_metrics: metrics.frontend("resp"),
            metrics,
            parallel: Arc::new(Semaphore::new(config.max_parallel())),
            allow_writes: config.allow_writes,
            client_password: config.client_password.clone(),
            max_clients: config.max_clients as usize,
            shutdown_timeout: config.shutdown_timeout,
            shutdown_delay: config.shutdown_delay,
            draining: AtomicBool::new(false),
            idle_timeout: (!config.client_idle_timeout.is_zero()).then_some(config.client_idle_timeout),
            output_limit: usize::try_from(config.client_output_limit).unwrap_or(usize::MAX),
            started: Instant::now(),
            run_id: run_id(),
            next_client_id: AtomicU64::new(0),
            input_held: AtomicUsize::new(0),
            input_budget: AtomicUsize::new(INPUT_BUDGET),
        }))
    }

    /// Whether a load balancer should send clients here: Redis is usable
    /// (see [`Backend::is_ready`]) and the proxy is not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.reads.is_ready()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// From now on `/readyz` answers 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// One second's sample for the status page (see [`Ring::sample`]).
    pub fn sample(&self) {
        self.ring
            .sample(&self.metrics, [&self.http_metrics, &self.resp_metrics]);
    }

    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A `--max-parallel` slot, held while a request (or a RESP batch) is
    /// worked on. The semaphore is fair, so slots are handed out in the
    /// order they were asked for.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        match self.parallel.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.metrics.requests_queued.inc();
                let permit = self.parallel.clone().acquire_owned().await;
                self.metrics.requests_queued.dec();
                permit.expect("the semaphore is never closed")
            }
        }
    }

    /// A connection now holds `now` bytes of unanswered input where it held
    /// `before`; true if all connections together hold more than the
    /// budget, and this one is among the large (over 1 MiB): the one to
    /// close, rather than the many small clients.
    pub fn input_over_budget(&self, before: usize, now: usize) -> bool {
        let held = if now >= before {
            self.input_held.fetch_add(now - before, Ordering::Relaxed) + (now - before)
        } else {
            self.input_held.fetch_sub(before - now, Ordering::Relaxed) - (before - now)
        };
        now > (1 << 20) && held > self.input_budget.load(Ordering::Relaxed)
    }

    /// Bytes of unanswered input all connections hold now.
    pub fn input_held(&self) -> usize {
        self.input_held.load(Ordering::Relaxed)
    }

    /// Sets the budget for all connections' unanswered input (a test's).
    pub fn set_input_budget(&self, bytes: usize) {
        self.input_budget.store(bytes, Ordering::Relaxed);
    }

    /// Whether clients must authenticate (`--client-password`).
    pub fn requires_password(&self) -> bool {
        self.client_password.is_some()
    }

    /// Whether `given` is the client password, compared in constant time;
    /// false when none is set.
    pub fn password_matches(&self, given: &[u8]) -> bool {
        self.client_password
            .as_ref()
            .is_some_and(|pw| bool::from(pw.as_bytes().ct_eq(given)))
    }
}

/// How a lookup ended, for `redis_proxy_requests_total{outcome}`: the one
/// place both front ends classify a lookup.
pub fn outcome(found: &Result<Found, Error>) -> Outcome {
    match found {
        Ok(Found { value: None, .. }) => Outcome::NotFound,
        Ok(Found {
            source: Source::Hit { .. },
            ..
        }) => Outcome::Hit,
        Ok(Found {
            source: Source::Miss, ..
        }) => Outcome::Miss,
        Err(e) => error_outcome(e),
    }
}

/// How an MGET ended: a hit if every key was, else a miss.
pub fn outcome_of_many(found: &Result<Vec<Found>, Error>) -> Outcome {
    match found {
        Ok(found) if found.iter().all(|f| matches!(f.source, Source::Hit { .. })) => Outcome::Hit,
        Ok(_) => Outcome::Miss,
        Err(e) => error_outcome(e),
    }
}

/// How a request that failed with `e` ended.
pub fn error_outcome(e: &Error) -> Outcome {
    match e {
        Error::WrongType(_) => Outcome::WrongType,
        Error::Unavailable(_) | Error::Timeout(_) | Error::ForwardTimeout(_) | Error::Reply(_) => {
            Outcome::BackendError
        }
        Error::Client { .. } => Outcome::ClientError,
        Error::Internal(_) => Outcome::InternalError,
    }
}

/// 40 hex digits, different in every process.
fn run_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let seed = (std::process::id(), std::time::SystemTime::now());
    (0..3)
        .map(|i| format!("{:016x}", RandomState::new().hash_one((seed, i))))
        .collect::<String>()[..40]
        .to_string()
}
