//! Every metric the proxy exports, in one place. Handles are cheap clones
//! of atomics; the registry encodes them for `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

mod latency;

pub use latency::Latency;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub frontend: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrontendLabels {
    pub frontend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// A name from the command table (lower case), or `other`: bounded.
    pub command: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// How a request ended, for `redis_proxy_requests_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    NotFound,
    WrongType,
    BackendError,
    ClientError,
    InternalError,
    Ok,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::NotFound,
        Outcome::WrongType,
        Outcome::BackendError,
        Outcome::ClientError,
        Outcome::InternalError,
        Outcome::Ok,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::NotFound => "not_found",
            Outcome::WrongType => "wrongtype",
            Outcome::BackendError => "backend_error",
            Outcome::ClientError => "client_error",
            Outcome::InternalError => "internal_error",
            Outcome::Ok => "ok",
        }
    }
}

/// Why every cached entry was dropped, for
/// `redis_proxy_cache_flushes_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushReason {
    /// Redis sent a null invalidation: FLUSHALL or FLUSHDB.
    Flushall,
    /// The connection to Redis was lost or replaced: invalidations may
    /// have been missed.
    Disconnected,
    /// A new connection, with tracking on, before it is used.
    Connected,
    /// Redis refused `CLIENT TRACKING on`.
    TrackingRefused,
    /// A write forwarded by the proxy that Redis does not report (SWAPDB),
    /// or, without tracking, whose keys cannot be known.
    Write,
    /// In a cluster: a slot's master changed (its entries only).
    SlotMoved,
}

impl FlushReason {
    pub const ALL: [FlushReason; 6] = [
        FlushReason::Flushall,
        FlushReason::Disconnected,
        FlushReason::Connected,
        FlushReason::TrackingRefused,
        FlushReason::Write,
        FlushReason::SlotMoved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Flushall => "flushall",
            FlushReason::Disconnected => "disconnected",
            FlushReason::Connected => "connected",
            FlushReason::TrackingRefused => "tracking_refused",
            FlushReason::Write => "write",
            FlushReason::SlotMoved => "slot_moved",
        }
    }
}

/// Why the proxy closed a client, for
/// `redis_proxy_clients_disconnected_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// Nothing arrived for `--client-idle-timeout`.
    Idle,
    /// No AUTH within 10 s of connecting (with `--client-password`).
    AuthTimeout,
    /// Its replies did not drain for 30 s.
    WriteTimeout,
    /// Its unread replies passed `--client-output-limit`.
    OutputLimit,
    /// It held more unanswered input than the proxy allows.
    InputLimit,
    /// It sent a malformed frame.
    ProtocolError,
}

impl Disconnect {
    pub const ALL: [Disconnect; 6] = [
        Disconnect::Idle,
        Disconnect::AuthTimeout,
        Disconnect::WriteTimeout,
        Disconnect::OutputLimit,
        Disconnect::InputLimit,
        Disconnect::ProtocolError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Disconnect::Idle => "idle",
            Disconnect::AuthTimeout => "auth_timeout",
            Disconnect::WriteTimeout => "write_timeout",
            Disconnect::OutputLimit => "output_limit",
            Disconnect::InputLimit => "input_limit",
            Disconnect::ProtocolError => "protocol_error",
        }
    }
}

/// One front end's request metrics, resolved once so that recording a
/// request is a few atomic adds, not a labelled lookup or a lock.
pub struct FrontendMetrics {
    requests: [Counter; Outcome::ALL.len()],
    duration: Latency,
}

impl FrontendMetrics {
    pub fn record(&self, outcome: Outcome, started: std::time::Instant) {
        self.requests[outcome as usize].inc();
        self.duration.observe(started.elapsed());
    }

    /// A pipelined run answered together: how many ended each way (by
    /// `Outcome as usize`), each having taken `took`.
    pub fn record_run(&self, outcomes: &[u64; Outcome::ALL.len()], took: std::time::Duration) {
        let mut n = 0;
        for (counter, &count) in self.requests.iter().zip(outcomes) {
            if count > 0 {
                counter.inc_by(count);
                n += count;
            }
        }
        self.duration.observe_n(took, n);
    }

    /// Requests answered so far, by `Outcome as usize`.
    pub fn totals(&self) -> [u64; Outcome::ALL.len()] {
        std::array::from_fn(|i| self.requests[i].get())
    }

    pub fn latency(&self) -> &Latency {
        &self.duration
    }
}

pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<FrontendLabels, Latency>,
    pub connections: Family<FrontendLabels, Gauge>,
    pub requests_queued: Gauge,
    pub connections_rejected: Family<FrontendLabels, Counter>,
    pub hits: Counter,
    pub misses: Counter,
    pub evictions: Counter,
    pub expirations: Counter,
    pub singleflight_joins: Counter,
    /// Lookups that found the tracking lease lapsed, and missed.
    pub lease_lapsed: Counter,
    pub backend_requests: Counter,
    pub backend_errors: Family<KindLabels, Counter>,
    pub backend_up: Gauge,
    pub entries: Gauge,
    pub bytes: Gauge,
    pub invalidations: Counter,
    pub cache_flushes: Family<ReasonLabels, Counter>,
    pub clients_disconnected: Family<ReasonLabels, Counter>,
    pub tracking: Gauge,
    /// RESP commands by name and outcome.
    pub commands: Family<CommandLabels, Counter>,
    /// Backend connections held for one client each, in use.
    pub pinned: Gauge,
    /// Backend connections open, by kind: `reads` (the cached reads'),
    /// `invalidations` (where tracking sends them), `shared` (forwarded
    /// commands), `pinned`, `idle` (pinned ones kept for reuse).
    pub backend_connections: Family<KindLabels, Gauge>,
    /// Round trips spent waiting for the invalidations a write caused.
    pub write_barriers: Counter,
    /// The configured bounds, for dashboards and alerts to compare with:
    /// `--max-clients` (as in force), `--max-pinned-connections`,
    /// `--cache-capacity`, `--cache-max-bytes`.
    pub limits: Limits,
    registry: Registry,
}

#[derive(Default)]
pub struct Limits {
    pub max_clients: Gauge,
    pub max_pinned: Gauge,
    pub cache_capacity: Gauge,
    pub cache_max_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            requests: Family::default(),
            request_duration: Family::default(),
            connections: Family::default(),
            connections_rejected: Family::default(),
            requests_queued: Gauge::default(),
            hits: Counter::default(),
            misses: Counter::default(),
            evictions: Counter::default(),
            expirations: Counter::default(),
            singleflight_joins: Counter::default(),
            lease_lapsed: Counter::default(),
            backend_requests: Counter::default(),
            backend_errors: Family::default(),
            backend_up: Gauge::default(),
            entries: Gauge::default(),
            bytes: Gauge::default(),
            invalidations: Counter::default(),
            cache_flushes: Family::default(),
            clients_disconnected: Family::default(),
            tracking: Gauge::default(),
            commands: Family::default(),
            pinned: Gauge::default(),
            backend_connections: Family::default(),
            write_barriers: Counter::default(),
            limits: Limits::default(),
            registry: Registry::with_prefix("redis_proxy"),
        };
        m.register_limits();
        m.register_front_ends();
        m.register_cache();
        m.register_backend();
        // Every reason shows, at 0, before its first use.
        for reason in FlushReason::ALL {
            drop(m.cache_flushes.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            }));
        }
        for reason in Disconnect::ALL {
            drop(m.clients_disconnected.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            }));
        }
        m
    }

    fn register_front_ends(&mut self) {
        let r = &mut self.registry;
        r.register(
            "requests",
            "Requests answered, by front end and outcome",
            self.requests.clone(),
        );
        let duration = self.request_duration.clone();
        r.register(
            "request_duration_seconds",
            "Time from a parsed request to its answer",
            duration,
        );
        let queued = self.requests_queued.clone();
        r.register(
            "requests_queued",
            "Requests waiting for a --max-parallel slot",
            queued,
        );
        r.register("connections", "Client connections open", self.connections.clone());
        let rejected = self.connections_rejected.clone();
        r.register(
            "connections_rejected",
            "Connections refused over --max-clients",
            rejected,
        );
        let disconnected = self.clients_disconnected.clone();
        r.register(
            "clients_disconnected",
            "Clients the proxy closed, by reason",
            disconnected,
        );
    }

    fn register_cache(&mut self) {
        let r = &mut self.registry;
        r.register("cache_hits", "Lookups answered from the cache", self.hits.clone());
        r.register("cache_misses", "Lookups that went to Redis", self.misses.clone());
        r.register(
            "cache_evictions",
            "Entries evicted for capacity or bytes",
            self.evictions.clone(),
        );
        r.register(
            "cache_expirations",
            "Entries dropped at their expiry",
            self.expirations.clone(),
        );
        let joins = self.singleflight_joins.clone();
        r.register(
            "singleflight_joins",
            "Misses that waited on a Redis GET already in flight",
            joins,
        );
        r.register(
            "lease_lapsed_lookups",
            "Lookups not served from the cache because the tracking lease had lapsed",
            self.lease_lapsed.clone(),
        );
        r.register("cache_entries", "Keys held in the cache", self.entries.clone());
        r.register(
            "cache_bytes",
            "Key and value bytes held in the cache",
            self.bytes.clone(),
        );
        let flushes = self.cache_flushes.clone();
        r.register(
            "cache_flushes",
            "Times every cached entry was dropped, by reason",
            flushes,
        );
    }

    fn register_limits(&mut self) {
        let (r, l) = (&mut self.registry, &self.limits);
        r.register("max_clients", "--max-clients in force", l.max_clients.clone());
        r.register(
            "max_pinned_connections",
            "--max-pinned-connections",
            l.max_pinned.clone(),
        );
        r.register(
            "cache_capacity",
            "--cache-capacity (keys)",
            l.cache_capacity.clone(),
        );
        r.register("cache_max_bytes", "--cache-max-bytes", l.cache_max_bytes.clone());
    }

    fn register_backend(&mut self) {
        let r = &mut self.registry;
        r.register(
            "backend_requests",
            "Round trips sent to Redis",
            self.backend_requests.clone(),
        );
        r.register(
            "backend_errors",
            "Failed Redis round trips, by kind",
            self.backend_errors.clone(),
        );
        r.register(
            "backend_up",
            "1 while Redis is connected and answering",
            self.backend_up.clone(),
        );
        let invalidations = self.invalidations.clone();
        r.register(
            "invalidations",
            "Keys Redis said changed (CLIENT TRACKING invalidations)",
            invalidations,
        );
        let tracking = self.tracking.clone();
        r.register(
            "tracking",
            "1 while CLIENT TRACKING is on for the connection to Redis",
            tracking,
        );
        r.register(
            "commands",
            "RESP commands answered, by command (or other) and outcome",
            self.commands.clone(),
        );
        r.register(
            "pinned_connections",
            "Backend connections held for one client each (transactions, blocking, pub/sub, WAIT)",
            self.pinned.clone(),
        );
        r.register(
            "backend_connections",
            "Backend connections open, by kind",
            self.backend_connections.clone(),
        );
        r.register(
            "write_barriers",
            "Round trips that made writes wait for the invalidations they caused",
            self.write_barriers.clone(),
        );
    }

    /// A RESP command answered: `command` is a name from the command
    /// table or `other`, so the label set stays bounded.
    pub fn command(&self, command: &str, outcome: &'static str) {
        self.commands
            .get_or_create(&CommandLabels {
                command: command.to_string(),
                outcome,
            })
            .inc();
    }

    /// The gauge of open backend connections of `kind`.
    pub fn backend_connections(&self, kind: &'static str) -> Gauge {
        self.backend_connections
            .get_or_create(&KindLabels { kind })
            .clone()
    }

    /// The request metrics of one front end.
    pub fn frontend(&self, frontend: &'static str) -> FrontendMetrics {
        FrontendMetrics {
            requests: Outcome::ALL.map(|outcome| {
                let labels = RequestLabels {
                    frontend,
                    outcome: outcome.as_str(),
                };
                self.requests.get_or_create(&labels).clone()
            }),
            duration: self
                .request_duration
                .get_or_create(&FrontendLabels { frontend })
                .clone(),
        }
    }

    pub fn flush(&self, reason: FlushReason) {
        self.cache_flushes
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Flushes for every reason together.
    pub fn flushes(&self) -> u64 {
        FlushReason::ALL
            .iter()
            .map(|r| {
                self.cache_flushes
                    .get_or_create(&ReasonLabels { reason: r.as_str() })
                    .get()
            })
            .sum()
    }

    /// Open client connections of `frontend` (`http`, `resp`).
    pub fn clients(&self, frontend: &'static str) -> i64 {
        self.connections.get_or_create(&FrontendLabels { frontend }).get()
    }

    /// The RESP commands answered so far, as `/metrics` shows them:
    /// (command, outcome, count). Read from the encoded text, since the
    /// label family cannot be walked; for the status page, not requests.
    pub fn command_counts(&self) -> Vec<(String, String, u64)> {
        let text = self.encode();
        let prefix = "redis_proxy_commands_total{";
        text.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(prefix)?;
                let (labels, count) = rest.rsplit_once("} ")?;
                let label = |name: &str| {
                    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
                    let end = start + labels[start..].find('"')?;
                    Some(labels[start..end].to_string())
                };
                Some((label("command")?, label("outcome")?, count.trim().parse().ok()?))
            })
            .collect()
    }

    /// The proxy closed a client for `reason`.
    pub fn disconnected(&self, reason: Disconnect) {
        self.clients_disconnected
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    pub fn backend_error(&self, kind: &'static str) {
        self.backend_errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
