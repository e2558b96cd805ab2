//! VRRP in lbd: moves the virtual addresses between two (or more) directors,
//! interoperable with keepalived.
//!
//! - [`packet`]: VRRPv2 (RFC 3768, simple-text authentication) and VRRPv3
//!   (RFC 5798, IPv4) adverts, and the receive checks.
//! - [`state`]: the RFC state machine as pure logic (events and a clock in,
//!   actions out), with keepalived's extras (fault, tracking, preempt delay,
//!   gratuitous ARP sets) and the split-brain rule.
//! - [`net`]: raw sockets, gratuitous ARPs, virtual addresses via rtnetlink.
//! - [`instance`]: one tokio task per instance, its status readable outside.
//! - [`resume`]: a master's planned restart (`SIGUSR2`) without a failover.
//! - [`config`]: the `[[vrrp]]` tables.

pub mod config;
pub mod instance;
pub mod net;
pub mod packet;
pub mod resume;
pub mod state;

pub use config::{RawVrrp, TrackService, Vip, VrrpConfig, resolve_all};
pub use instance::{ForwardHook, StartOptions, VrrpInstance};
pub use packet::Version;
pub use state::State;
