//! Redis Cluster behind the proxy (`--redis-cluster`): the slot map, and
//! the seeds it is first read from.

mod seeds;
mod slot;
mod topology;

pub use seeds::Seeds;
pub use slot::{SLOTS, slot_of};
pub use topology::{Addr, Map};
