//! Test support for the load balancer: the network-namespace lab that builds
//! an LVS-DR cluster on one machine, helpers to find built binaries, and what
//! the end-to-end tests share ([`scenario`]).

pub mod bench;
pub mod bins;
pub mod datapath_setup;
pub mod director;
pub mod failover;
pub mod failover6;
pub mod flood;
pub mod harness;
pub mod keepalived;
pub mod lab;
pub mod netns;
pub mod packets;
pub mod packets6;
pub mod scenario;
pub mod steady;

pub use lab::{HeldConnection, HeldConnection6, Host, Lab, LabSpec, LinkStats, ProcHandle};
pub use netns::MacAddr;

/// True when running as root (the lab needs CAP_NET_ADMIN and CAP_SYS_ADMIN).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Set to N when the tests run N times slower than on real hardware (the
/// kernel matrix sets it under QEMU's software emulation).
pub const TIME_SCALE_ENV: &str = "LB_TEST_TIME_SCALE";

/// How many times slower than real hardware the tests run (1 unless
/// [`TIME_SCALE_ENV`] says otherwise).
pub fn time_scale() -> u32 {
    std::env::var(TIME_SCALE_ENV).ok().and_then(|v| v.parse().ok()).filter(|n| *n >= 1).unwrap_or(1)
}

/// A time bound of the tests (how long to wait for lbd, how long a refusal
/// may take) on this machine: `bound` times [`time_scale`]. Counts and
/// results never scale.
pub fn scaled(bound: std::time::Duration) -> std::time::Duration {
    bound * time_scale()
}
