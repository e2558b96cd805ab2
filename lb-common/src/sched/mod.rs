//! Scheduling tables the controller builds and the datapath walks, and
//! (feature `models`) reference models of IPVS's schedulers that the tables
//! and the datapath are tested against.
//!
//! A service's real servers are always given in IPVS's list order (the last
//! added first). rr and wrr are deterministic walks over that list, so the
//! controller precomputes one period of the walk as a table of list indices
//! (`sequence.rs`); the datapath takes `table[position++ % len]` with one
//! atomic add, skipping entries whose server is overloaded. That reproduces
//! IPVS's choices exactly without a lock on the packet path. sh, dh and mh
//! are lookup tables the controller builds (`hashed.rs`) and the datapath
//! indexes with the hashes of [`crate::hash`].
//!
//! The connection-counting schedulers (lc, wlc, sed, nq, fo, ovf) need no
//! table: they are pure functions of the list and its counters, the single
//! loops the datapath runs too. Those, the picks the datapath makes with the
//! tables, IPVS's rr and wrr walks, and lblc's and lblcr's per-destination
//! caches are in `models`, which the tests use, and lbd's `explain` to tell
//! where a new connection would go.
//!
//! Every rule cites the function of the kernel's `net/netfilter/ipvs/` it
//! reproduces; ties always go to the first server in list order.

mod hashed;
#[cfg(any(test, feature = "models"))]
pub mod models;
mod sequence;

#[cfg(test)]
mod fixtures;

pub use hashed::{MhReal, dh_table, mh_last_weight, mh_table, sh_table};
pub use sequence::{
    MAX_SEQUENCE_LEN, rr_table, wrr_changed_cw, wrr_current_weight_at, wrr_cw_after_adding, wrr_period,
    wrr_resume_position, wrr_table,
};
