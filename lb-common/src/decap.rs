//! The real servers' decapsulation program (`lbd decap`): its maps and
//! counters.
//!
//! IPv4-in-IPv4 and IPv6-in-IPv6 have a map of each kind per family (the
//! `*6` maps keyed by the address as [`crate::ipv6_words`] stores it); the
//! counters are per reason, for both.

/// This host's addresses tunnels may be addressed to (outer destination),
/// per family.
pub const MAX_ADDRS: u32 = 256;
/// Directors tunnels may come from (outer source), per family.
pub const MAX_SOURCES: u32 = 256;
/// This host's VIPs: what a tunnelled packet may be for (inner
/// destination), per family.
pub const MAX_VIPS: u32 = 1024;
pub const PROGRAM: &str = "lb_decap";
pub const ADDRS_MAP: &str = "DECAP_ADDRS";
pub const SOURCES_MAP: &str = "DECAP_SOURCES";
pub const VIPS_MAP: &str = "DECAP_VIPS";
pub const ADDRS6_MAP: &str = "DECAP_ADDRS6";
pub const SOURCES6_MAP: &str = "DECAP_SOURCES6";
pub const VIPS6_MAP: &str = "DECAP_VIPS6";
pub const CONFIG_MAP: &str = "DECAP_CONFIG";
pub const STATS_MAP: &str = "DECAP_STATS";

/// `DECAP_CONFIG[0]` flag: tunnels from any source (`--from any`).
pub const ANY_SOURCE: u32 = 1;

/// Counter slots.
pub const DECAPSULATED: u32 = 0;
/// Not IPv4-in-IPv4 nor IPv6-in-IPv6 as the program opens them: other
/// traffic, a fragmented outer IPv4 header, an outer IPv6 header with
/// extension headers, a tunnel mixing the families.
pub const NOT_TUNNEL: u32 = 1;
/// IP-in-IP to an address that is not ours: left to the kernel.
pub const NOT_FOR_US: u32 = 2;
/// A tunnel packet too short to hold what its headers promise.
pub const TRUNCATED: u32 = 3;
/// IP-in-IP from a source that is no configured director: left to the
/// kernel, not opened.
pub const FOREIGN_SOURCE: u32 = 4;
/// IP-in-IP whose inner packet is not for one of this host's VIPs: left to
/// the kernel, not opened.
pub const NOT_A_VIP: u32 = 5;
pub const COUNT: u32 = 6;

pub const NAMES: [&str; COUNT as usize] =
    ["decapsulated", "not_tunnel", "not_for_us", "truncated", "foreign_source", "not_a_vip"];
