//! ipvsadm's language, shared by lbctl (which speaks it) and lbd (which
//! carries out its commands): the command line parsed into typed commands,
//! ipvsadm's output formats, the live state they are printed from, and the
//! control protocol that carries both between them.
//!
//! No datapath, no kernel: this crate builds without aya or the eBPF
//! object, so lbctl stays small.

mod c_compat;
pub mod command;
pub mod conn_filter;
pub mod control;
pub mod error;
pub mod explain;
pub mod format;
pub mod grammar;
pub mod names;
mod popt;
pub mod snapshot;
pub mod usage;
pub mod vrrp;
