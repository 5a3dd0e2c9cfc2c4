//! redis-proxy: a caching read proxy in front of Redis.
//!
//! Clients ask for keys over HTTP or the Redis protocol; the proxy answers from a bounded
//! in-process cache (exact LRU by read, fixed key capacity, global TTL from
//! insertion) and goes to Redis only on a miss, with concurrent misses on one
//! key coalesced into one Redis GET. Redis's CLIENT TRACKING keeps the cache
//! coherent: a key changed in Redis is dropped within milliseconds.
//!
//! # Layout
//! - [`config`]: flags and environment variables, validated with one-line errors
//! - [`server`]: listeners, the client limit, the graceful drain
//! - [`lookup`]: protocol-agnostic GET: cache → single flight → backend →
//!   insert; `flight` (single flight), [`lookup::generation`] (what keeps a
//!   stale fetch out of the cache)
//! - [`cache`]: the LRU+TTL store (`list` holds the index-linked lists)
//! - [`backend`]: requests to Redis; `supervise` (the connection's life),
//!   `tracking` (CLIENT TRACKING invalidations, and why they are race-free)
//! - [`http`]: HTTP routes → lookup
//! - [`resp`]: the Redis-protocol front end (`parse`, `encode`, the connection loop)
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`
//! - [`metrics`]: every metric in one place
//! - [`error`]: one error type; where it came from decides the status code
//! - [`telemetry`]: log set-up

#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod cache;
pub mod config;
pub mod error;
pub mod http;
pub mod lookup;
pub mod metrics;
pub mod resp;
pub mod server;
pub mod telemetry;
