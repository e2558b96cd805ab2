//! Test support for the load balancer: the network-namespace lab that builds
//! an LVS-DR cluster on one machine, helpers to find built binaries, and what
//! the end-to-end tests share ([`scenario`]).

pub mod bench;
pub mod bins;
pub mod director;
pub mod harness;
pub mod keepalived;
pub mod lab;
pub mod netns;
pub mod packets;
pub mod scenario;

pub use lab::{HeldConnection, Host, Lab, LabSpec, LinkStats, ProcHandle};
pub use netns::MacAddr;

/// True when running as root (the lab needs CAP_NET_ADMIN and CAP_SYS_ADMIN).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
