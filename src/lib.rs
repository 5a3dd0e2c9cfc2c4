//! redis-proxy: a caching read proxy in front of Redis.
//!
//! Clients ask for keys over HTTP or the Redis protocol; the proxy answers from a bounded
//! in-process cache (exact LRU by read, fixed key capacity, global TTL from
//! insertion) and goes to Redis only on a miss, with concurrent misses on one
//! key coalesced into one Redis GET. Redis's CLIENT TRACKING keeps the cache
//! coherent: a key changed in Redis is dropped within milliseconds.
//!
//! # Layout
//!
//! This is the module table (the README points here; the links are checked
//! by `cargo doc`, so it cannot drift). Dependencies point one way, down
//! the list, and no front end imports another:
//!
//! - [`server`]: sockets: bind, accept, admit (`--max-clients`), reject,
//!   drain; [`server::run`] serves an app until a shutdown future completes
//! - front ends, each taking an `Arc<App>`:
//!   - [`http`]: [`http::api`] (`/get`, `/set`; routing is the pure
//!     [`http::api::parse_route`]) and [`http::admin`] (the status page
//!     `/` and its JSON [`http::status`], `/hotkeys`, `/metrics`,
//!     `/healthz`, `/readyz`)
//!   - [`resp`]: the Redis protocol: `parse` (pure, fuzzed), `encode`,
//!     `command` (requests parsed once into commands, with the table of
//!     what is answered here), `conn` (a connection's loop and
//!     pipelining), `forwarding` (what goes to Redis, where, and what is
//!     refused), and the answers by kind: `data`, `connection`,
//!     `introspection`
//! - [`app`]: what the front ends share: [`app::App`], built once from the
//!   configuration; the `--max-parallel` slot; the password check; the one
//!   classification of a request's outcome
//! - [`forward`]: every command that is not a cached read: shared
//!   connections per Redis, protocol and database, pinned connections, raw
//!   replies ([`forward::reply`]), read-your-writes
//!   ([`forward::Forwarder::after_write`]); in front of a cluster, where
//!   each command goes and how split replies are merged
//!   ([`forward::route`], pure)
//! - [`commands`]: the command table, from Redis's `COMMAND` reply
//!   (arity, flags, key positions); pure
//! - [`lookup`]: the read path: cache → single flight → Redis (one, or a
//!   cluster's masters: [`lookup::Reads`]) → insert; `flight` (single
//!   flight), [`lookup::generation`] (what keeps a stale fetch out of the
//!   cache), [`lookup::lease`] (how long a silent Redis is trusted)
//! - [`cluster`]: Redis Cluster: the slot map ([`cluster::Map`], pure),
//!   hash slots, the seeds, and [`cluster::Cluster`] (the map kept fresh,
//!   a tracked backend per master, per-node coherence)
//! - [`cache`]: the LRU+TTL store (`list` holds the index-linked lists)
//! - [`hotkeys`]: the most-read keys: a space-saving sketch per thread,
//!   fed by [`lookup::Local`]; pure but for its per-thread registry
//! - [`status`]: the status page (`page.html`) and its ring of one-second
//!   samples of the metrics
//! - [`backend`]: Redis: requests; `supervise` (the connection's life);
//!   `tracking` (CLIENT TRACKING invalidations, and why they are race-free)
//! - leaves any layer may use: [`error`] (where an error came from decides
//!   the HTTP status and the RESP line), [`config`], [`metrics`] (every
//!   metric in one place), [`telemetry`] (log set-up)

#![forbid(unsafe_code)]

pub mod app;
pub mod backend;
pub mod cache;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod error;
pub mod forward;
pub mod hotkeys;
pub mod http;
pub mod lookup;
pub mod metrics;
pub mod resp;
pub mod server;
pub mod status;
pub mod telemetry;
