//! The controller (`lbd`) and the CLI (`lbctl`), as a library so the tests
//! drive the same code.

pub mod ipvsadm;
pub mod snapshot;

/// The eBPF object built by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));
pub mod config;
pub mod model;
pub mod netinfo;
pub mod tables;
pub mod datapath;
pub mod rate;
pub mod control;
pub mod controller;
pub mod environment;
