//! Why the datapath did what it did to a packet: one global per-CPU counter
//! for every verdict reason, indexed by these numbers.

pub const PASS_NOT_IP: u32 = 0;
/// IPv6, and the IPv6 program (`lb_xdp6`) is not in its slot.
pub const PASS_IPV6: u32 = 1;
pub const PASS_MALFORMED: u32 = 2;
pub const PASS_FRAGMENT: u32 = 3;
pub const PASS_OTHER_PROTOCOL: u32 = 4;
pub const PASS_NO_SERVICE: u32 = 5;
/// A TCP packet of no known connection that is not a SYN (IPVS passes these
/// to the local stack too).
pub const PASS_TCP_NOT_SYN: u32 = 6;
pub const DROP_NO_REAL: u32 = 7;
pub const DROP_CONN_TABLE_FULL: u32 = 8;
pub const TX_DR: u32 = 9;
pub const TX_TUN: u32 = 10;
pub const DROP_INTERNAL: u32 = 11;
pub const CONN_NEW: u32 = 12;
pub const CONN_REUSED_EXPIRED: u32 = 13;
/// No real server available: answered with ICMP port unreachable.
pub const TX_ICMP_UNREACHABLE: u32 = 14;
/// A tunnelled packet too big for the path, DF set: answered with ICMP
/// fragmentation needed (IPv4) or packet too big (IPv6).
pub const TX_ICMP_FRAG_NEEDED: u32 = 15;
/// A tunnelled packet too big for the path without DF (XDP cannot
/// fragment), or an IPv6 one within the minimum MTU: dropped.
pub const DROP_TOO_BIG: u32 = 16;
/// For a VIP this director is VRRP backup of.
pub const PASS_STANDBY: u32 = 17;
/// An ICMP error was due (port unreachable, fragmentation needed) but the
/// director's ICMP rate limit was reached: dropped without one.
pub const DROP_ICMP_RATE_LIMITED: u32 = 18;
/// An ICMP error was due, but the source is no single host (zero,
/// loopback, multicast, class E, broadcast, the VIP itself) or the frame a
/// link-layer broadcast or multicast, or for another host's MAC: dropped
/// without one.
pub const DROP_ICMP_BAD_SOURCE: u32 = 19;
/// An ICMP error to a VIP whose quote is not a readable IPv4 header and 8
/// bytes within the packet, is not from that VIP, or whose code is unknown.
pub const PASS_ICMP_MALFORMED: u32 = 20;
/// An ICMP error to a VIP that quotes no live connection (another protocol,
/// a later fragment, an unknown or expired flow): the kernel's, as before.
pub const PASS_ICMP_NO_CONN: u32 = 21;
/// An ICMP error about a connection's packet (the real server's answer, as
/// a router quotes it) forwarded to that connection's real server by DR
/// (IPVS's ip_vs_in_icmp).
pub const TX_DR_ICMP_ERROR: u32 = 22;
/// ... by TUN.
pub const TX_TUN_ICMP_ERROR: u32 = 23;
/// A packet of a NAT connection sent to its real server, its destination
/// rewritten (IPVS's ip_vs_nat_xmit).
pub const TX_NAT: u32 = 24;
/// A NAT real server's reply sent to the client, its source rewritten to
/// the VIP (IPVS's handle_response).
pub const TX_NAT_REPLY: u32 = 25;
/// A NAT reply whose next hop toward the client has no neighbour entry
/// yet: dropped (the client resends), the controller asked to resolve it.
pub const DROP_NAT_NO_NEIGH: u32 = 26;
/// A NAT reply the kernel's routing table has no route for (or forwarding
/// is off on the interface it came in on): dropped.
pub const DROP_NAT_NO_ROUTE: u32 = 27;
/// The interface toward a real server (or a client) carries no entry of
/// the transmit-port map: dropped.
pub const DROP_NO_TX_PORT: u32 = 28;
/// An ICMP error about a NAT connection from the client's side,
/// translated and sent to its real server (IPVS's ip_vs_in_icmp).
pub const TX_NAT_ICMP_TO_REAL: u32 = 29;
/// An ICMP error about a NAT connection from the real server's side,
/// translated and sent to the client (IPVS's ip_vs_out_icmp).
pub const TX_NAT_ICMP_TO_CLIENT: u32 = 30;
/// A NAT reply (or ICMP error) to a client with no hop left in its TTL:
/// the kernel's, which answers "time exceeded" as a router does.
pub const PASS_NAT_TTL_EXCEEDED: u32 = 31;
/// A new full-NAT connection found no free local port: dropped.
pub const DROP_FULLNAT_NO_PORT: u32 = 32;
/// A full-NAT connection's packet whose local end is gone: dropped.
pub const DROP_FULLNAT_NO_LOCAL: u32 = 33;
pub const TX_FULLNAT: u32 = 34;
pub const TX_FULLNAT_REPLY: u32 = 35;
/// A connection installed from a TCP packet that is not a SYN (sloppy TCP,
/// or a service's stateless fallback: a flow another director started,
/// brought here by a change of the router's ECMP next hops).
pub const CONN_MID_FLOW: u32 = 36;
/// An IPv6 packet whose extension headers go on beyond what the parser
/// walks (more than `parse6::MAX_EXT_HEADERS`, or past its byte bound):
/// the kernel's.
pub const PASS_IPV6_EXT_HEADERS: u32 = 37;
/// ICMPv6 that is no error (neighbour discovery, echo), or an error to an
/// address that is no VIP.
pub const PASS_ICMPV6: u32 = 38;
pub const COUNT: u32 = 40;

const NAMES: [&str; 39] = [
    "pass_not_ip",
    "pass_ipv6",
    "pass_malformed",
    "pass_fragment",
    "pass_other_protocol",
    "pass_no_service",
    "pass_tcp_not_syn",
    "drop_no_real",
    "drop_conn_table_full",
    "tx_dr",
    "tx_tun",
    "drop_internal",
    "conn_new",
    "conn_reused_expired",
    "tx_icmp_unreachable",
    "tx_icmp_frag_needed",
    "drop_too_big",
    "pass_standby",
    "drop_icmp_rate_limited",
    "drop_icmp_bad_source",
    "pass_icmp_malformed",
    "pass_icmp_no_conn",
    "tx_dr_icmp_error",
    "tx_tun_icmp_error",
    "tx_nat",
    "tx_nat_reply",
    "drop_nat_no_neigh",
    "drop_nat_no_route",
    "drop_no_tx_port",
    "tx_nat_icmp_to_real",
    "tx_nat_icmp_to_client",
    "pass_nat_ttl_exceeded",
    "drop_fullnat_no_port",
    "drop_fullnat_no_local",
    "tx_fullnat",
    "tx_fullnat_reply",
    "conn_mid_flow",
    "pass_ipv6_ext_headers",
    "pass_icmpv6",
];
const _: () = assert!(NAMES.len() <= COUNT as usize, "REASON_STATS has COUNT slots");

/// Counter name for display and JSON.
pub fn name(reason: u32) -> Option<&'static str> {
    NAMES.get(reason as usize).copied()
}

/// Every defined reason with its name.
pub fn all() -> impl Iterator<Item = (u32, &'static str)> {
    NAMES.iter().enumerate().map(|(i, n)| (i as u32, *n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_has_its_name() {
        for (reason, name) in [
            (PASS_STANDBY, "pass_standby"),
            (DROP_ICMP_RATE_LIMITED, "drop_icmp_rate_limited"),
            (DROP_ICMP_BAD_SOURCE, "drop_icmp_bad_source"),
            (PASS_ICMP_MALFORMED, "pass_icmp_malformed"),
            (PASS_ICMP_NO_CONN, "pass_icmp_no_conn"),
            (TX_DR_ICMP_ERROR, "tx_dr_icmp_error"),
            (TX_TUN_ICMP_ERROR, "tx_tun_icmp_error"),
            (TX_NAT, "tx_nat"),
            (DROP_NO_TX_PORT, "drop_no_tx_port"),
            (CONN_MID_FLOW, "conn_mid_flow"),
            (PASS_IPV6_EXT_HEADERS, "pass_ipv6_ext_headers"),
            (PASS_ICMPV6, "pass_icmpv6"),
        ] {
            assert_eq!(super::name(reason), Some(name));
        }
    }
}
