//! Redis Cluster behind the proxy (`--redis-cluster`): the slot map, the
//! seeds it is first read from, and the masters' tracked connections
//! ([`Cluster`]).

mod runtime;
mod seeds;
mod slot;
mod topology;

pub use runtime::{Cluster, Topology, check_lease};
pub use seeds::Seeds;
pub use slot::{SLOTS, slot_of};
pub use topology::{Addr, Map};
