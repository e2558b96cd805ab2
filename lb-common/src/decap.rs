//! The real servers' decapsulation program (`lbd decap`): its maps and
//! counters.

pub const MAX_ADDRS: u32 = 256;
pub const PROGRAM: &str = "lb_decap";
pub const ADDRS_MAP: &str = "DECAP_ADDRS";
pub const STATS_MAP: &str = "DECAP_STATS";

/// Counter slots.
pub const DECAPSULATED: u32 = 0;
pub const NOT_TUNNEL: u32 = 1;
/// IP-in-IP to an address that is not ours: left to the kernel.
pub const NOT_FOR_US: u32 = 2;
/// A tunnel packet too short to hold what its headers promise.
pub const TRUNCATED: u32 = 3;
pub const COUNT: u32 = 4;

pub const NAMES: [&str; 4] = ["decapsulated", "not_tunnel", "not_for_us", "truncated"];
