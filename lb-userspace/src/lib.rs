//! The controller (`lbd`), as a library so the tests drive the same code.
//! lbctl is its own crate; what it shares with lbd (ipvsadm's language, the
//! control protocol) is lb-ipvsadm.

/// What `lbd --version` says: the version and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("LB_COMMIT"), ")");

/// The eBPF object built by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// The decapsulation program for TUN real servers (`lbd decap`).
pub static DECAP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-decap"));
/// The benchmark's yardstick, an XDP program that only returns XDP_TX (`lb-bench`).
pub static BENCH_TX_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-bench-tx"));
/// Programs that each use one kernel feature the datapath needs (`kernel`).
pub static PROBE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-probe"));
/// Test-only: an object whose `lb_xdp` the verifier refuses for its size.
pub static TOO_BIG_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-test-too-big"));
mod bpf_sys;
pub mod commands;
pub mod config;
pub mod model;
pub mod netinfo;
pub mod tables;
pub mod datapath;
pub mod pins;
pub mod decap;
pub mod rate;
pub mod control;
pub mod controller;
pub mod daemon;
pub mod environment;
pub mod explain;
pub mod kernel;
pub mod log_limit;
pub mod lock;
pub mod health;
mod process;
pub mod vrrp;
pub mod sync;
pub mod bgp;
pub mod metrics;
pub mod verifier;
