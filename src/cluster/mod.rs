//! Redis Cluster behind the proxy (`--redis-cluster`): the slot map, the
//! seeds it is first read from, and the masters' tracked connections
//! ([`Cluster`]).

mod runtime;
mod slot;
mod topology;

pub use crate::config::seeds::Seeds;
pub use runtime::{Cluster, Topology, check_lease};
pub use slot::{SLOTS, slot_of};
pub use topology::{Addr, Map};
