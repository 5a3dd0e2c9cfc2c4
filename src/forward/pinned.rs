//! A backend connection held by one client while it needs state a shared
//! connection cannot carry. Dropped, it is closed: a client that hangs up
//! in a BLPOP leaves no connection behind.

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;

use super::Key;
use super::link::Link;
use crate::error::Error;
use crate::metrics::Metrics;

pub struct Pinned {
    /// Taken out when the connection is given back for reuse.
    link: Option<Link>,
    key: Key,
    _permit: OwnedSemaphorePermit,
    in_use: Gauge,
    open: Gauge,
}

impl Pinned {
    pub(super) fn new(link: Link, permit: OwnedSemaphorePermit, key: Key, metrics: &Metrics) -> Pinned {
        let in_use = metrics.pinned.clone();
        let open = metrics.backend_connections("pinned");
        in_use.inc();
        open.inc();
        Pinned {
            link: Some(link),
            key,
            _permit: permit,
            in_use,
            open,
        }
    }

    /// The database it is on.
    pub fn db(&self) -> i64 {
        self.key.2
    }

    /// The Redis it goes to.
    pub fn node(&self) -> &super::Node {
        &self.key.0
    }

    /// The client SELECTed another database on it.
    pub fn set_db(&mut self, db: i64) {
        self.key.2 = db;
    }

    fn link(&mut self) -> &mut Link {
        self.link
            .as_mut()
            .expect("a pinned connection has its link until given back")
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.link().send(bytes).await
    }

    /// The next whole reply (or push). Cancel-safe.
    pub async fn reply(&mut self) -> Result<Bytes, Error> {
        self.link().reply().await
    }

    pub(super) fn into_parts(mut self) -> (Link, Key) {
        let link = self.link.take().expect("given back once");
        (link, self.key.clone())
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.in_use.dec();
        self.open.dec();
    }
}
