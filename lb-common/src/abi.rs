//! Map names, sizes and the key/value types stored in them.
//!
//! Addresses are stored as four 32-bit words in network byte order, IPv4 in
//! the first word and the rest zero, always next to an address-family tag, so
//! IPv6 needs no change of layout. Ports are in network byte order too: the
//! datapath compares them with packet bytes and never has to swap.

/// Address family tags, the kernel's values.
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// IP protocol numbers the datapath handles.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_IPIP: u8 = 4;
/// IPv6 encapsulated (the next header of IPv6-in-IPv6).
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

// Capacities. The connection table's size is set at load time from the config
// (`conn_table_size`); these are the fixed ones.
pub const MAX_SERVICES: u32 = 4096;
pub const MAX_REALS: u32 = 16384;
/// Real servers one service may have (bounds the least-connection scan).
pub const MAX_REALS_PER_SERVICE: u32 = 256;
/// Slots of the shared scheduling-table array (rr/wrr sequences, sh/dh/mh
/// lookup tables). Each service owns a region of it.
pub const SCHED_TABLE_SLOTS: u32 = 1 << 20;
/// Slots of the shared real-server-list array: each service's real servers
/// in IPVS order. Twice `MAX_REALS` so a list can be rebuilt beside the live
/// one and swapped in.
pub const REAL_LIST_SLOTS: u32 = 2 * MAX_REALS;
pub const DEFAULT_CONN_TABLE_SIZE: u32 = 262_144;
/// Entries of `FWMARK_MATCHES`: each (protocol, port, address prefix) a
/// firewall-mark service's `match` lists is one (a port range is one per
/// port).
pub const MAX_FWMARK_MATCHES: u32 = 65536;
/// Director interfaces the program may be attached to at once.
pub const MAX_INTERFACES: u32 = 64;
/// NAT clients' next hops waiting for the controller to resolve them.
pub const NEIGH_WANTED_SIZE: u32 = 1024;
/// Full NAT's local ports: 1024..=65535 of each `fullnat_source` address,
/// at most this many addresses.
pub const FULLNAT_PORT_FIRST: u16 = 1024;
pub const MAX_FULLNAT_SOURCES: u32 = 16;
pub const FULLNAT_PORTS_PER_SOURCE: u32 = 65536 - FULLNAT_PORT_FIRST as u32;
pub const FULLNAT_PORTS_SIZE: u32 = MAX_FULLNAT_SOURCES * FULLNAT_PORTS_PER_SOURCE;

/// "No real server": an empty slot of a scheduling table, and what a
/// scheduler returns when no server can take the connection.
pub const NO_REAL: u32 = u32::MAX;

/// The VIP pre-filter: a bit per hash of a VIP, so traffic for no VIP
/// passes after one array read instead of two hash lookups.
pub const VIP_FILTER_BITS: u32 = 4096;
pub const VIP_FILTER_WORDS: u32 = VIP_FILTER_BITS / 64;

/// The filter bit of a VIP (its address words, as stored). Every word
/// counts, each turned by its place: IPv6 VIPs often share all but their
/// last word. An IPv4 VIP (words 1 to 3 zero) keeps the bit of its one
/// word, so a pinned filter from before IPv6 stays right.
#[inline(always)]
pub const fn vip_filter_bit(addr: &[u32; 4]) -> u32 {
    let folded = addr[0] ^ addr[1].rotate_left(8) ^ addr[2].rotate_left(16) ^ addr[3].rotate_left(24);
    folded.wrapping_mul(0x9E37_79B1) >> (32 - 12)
}

/// `BPF_F_MMAPABLE`: the array can be mapped into the controller's memory.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Map names: the eBPF statics are named exactly so, and the controller opens
/// them (and pins them in bpffs) by these names.
pub mod map_name {
    pub const DIRECTOR: &str = "DIRECTOR";
    pub const SERVICES: &str = "SERVICES";
    pub const REALS: &str = "REALS";
    pub const REAL_LISTS: &str = "REAL_LISTS";
    pub const SCHED_TABLE: &str = "SCHED_TABLE";
    pub const SCHED_STATE: &str = "SCHED_STATE";
    pub const CONN_TABLE: &str = "CONN_TABLE";
    pub const REAL_CONNS: &str = "REAL_CONNS";
    pub const SERVICE_STATS: &str = "SERVICE_STATS";
    pub const LBLC_CACHE: &str = "LBLC_CACHE";
    pub const VIP_FILTER: &str = "VIP_FILTER";
    pub const SERVICE_FLAGS: &str = "SERVICE_FLAGS";
    pub const REAL_STATS: &str = "REAL_STATS";
    pub const REASON_STATS: &str = "REASON_STATS";
    pub const SCAN_SCRATCH: &str = "SCAN_SCRATCH";
    pub const NAT_REPLIES: &str = "NAT_REPLIES";
    pub const TX_PORTS: &str = "TX_PORTS";
    pub const NEIGH_WANTED: &str = "NEIGH_WANTED";
    pub const FULLNAT_PORTS: &str = "FULLNAT_PORTS";
    pub const FULLNAT_LOCAL: &str = "FULLNAT_LOCAL";
    pub const PROGS: &str = "PROGS";
    pub const FWMARK_MATCHES: &str = "FWMARK_MATCHES";
}

/// Slots of the program array `PROGS`, which `lb_xdp` tail-calls into.
pub mod prog_slot {
    /// `lb_xdp6`, for IPv6 frames.
    pub const IPV6: u32 = 0;
    pub const COUNT: u32 = 1;
}

/// Program names in the object file.
pub mod program_name {
    pub const LB: &str = "lb_xdp";
    /// IPv6: `lb_xdp` tail-calls it (slot `prog_slot::IPV6` of `PROGS`), so
    /// each family has the verifier's whole budget and stack to itself.
    pub const LB6: &str = "lb_xdp6";
    /// Writes the datapath's clock sources into the packet (the loader
    /// reads them with a test run: to measure HZ, and to know what time it
    /// is on the datapath's clock).
    pub const CLOCK: &str = "lb_clock";
}

/// Schedulers, numbered as the controller stores them in [`Service::scheduler`].
pub mod scheduler {
    pub const RR: u8 = 0;
    pub const WRR: u8 = 1;
    pub const LC: u8 = 2;
    pub const WLC: u8 = 3;
    pub const SED: u8 = 4;
    pub const NQ: u8 = 5;
    pub const SH: u8 = 6;
    pub const DH: u8 = 7;
    pub const LBLC: u8 = 8;
    pub const LBLCR: u8 = 9;
    pub const MH: u8 = 10;
    pub const FO: u8 = 11;
    pub const OVF: u8 = 12;
}

/// Forwarding methods, per real server as in IPVS (-g, -i, -m).
pub mod forwarding {
    pub const DR: u8 = 0;
    pub const TUN: u8 = 1;
    pub const NAT: u8 = 2;
    /// Both ends rewritten: the client's to a (`fullnat_source`, port) of
    /// [`crate::map_name::FULLNAT_PORTS`].
    pub const FULLNAT: u8 = 3;
}

/// [`Service::flags`].
pub mod service_flag {
    /// Port 0 in the config: the service matches every port of its VIP.
    pub const ALL_PORTS: u16 = 1 << 0;
    /// Schedule a TCP connection on any packet, not only on SYN.
    pub const SLOPPY_TCP: u16 = 1 << 1;
    pub const SH_FALLBACK: u16 = 1 << 2;
    pub const SH_PORT: u16 = 1 << 3;
    pub const MH_FALLBACK: u16 = 1 << 4;
    pub const MH_PORT: u16 = 1 << 5;
    /// This director is VRRP backup for the VIP: packets pass to the
    /// kernel (the master forwards them; synced connections wait here).
    pub const STANDBY: u16 = 1 << 6;
    /// A TCP packet of no known connection that is not a SYN is scheduled
    /// and installed (Katran's stateless fallback): with a consistent hash
    /// (mh, sh, dh) every director behind ECMP picks the same real server,
    /// so a flow the router moves here goes on where it was.
    pub const STATELESS_FALLBACK: u16 = 1 << 7;
    /// A firewall-mark service: found through `FWMARK_MATCHES` under
    /// [`fwmark_service_key`], and its persistence templates are keyed by
    /// the mark, whatever the packet's protocol, address and port.
    pub const FWMARK: u16 = 1 << 8;
}

/// [`Director::flags`].
pub mod director_flag {
    /// Some real server is reached by NAT or full NAT: packets for no VIP
    /// may be a real server's replies ([`crate::map_name::NAT_REPLIES`]).
    pub const NAT: u8 = 1 << 0;
}

/// [`RealServer::flags`].
pub mod real_flag {
    /// The real server takes new connections (it is in its service's list;
    /// a removed server keeps its slot, without this flag, while connections
    /// still point at it).
    pub const AVAILABLE: u32 = 1 << 0;
    /// Over its upper connection threshold (IPVS's IP_VS_DEST_F_OVERLOAD).
    pub const OVERLOAD: u32 = 1 << 1;
    /// Its existing connections go elsewhere on their next packet (a failed
    /// server, IPVS's expire_nodest_conn).
    pub const EXPIRE_CONNS: u32 = 1 << 2;
}

/// [`FlowKey::kind`].
pub mod flow_kind {
    pub const CONNECTION: u8 = 0;
    /// A persistence template: source is the client address under the
    /// service's netmask, source port 0.
    pub const TEMPLATE: u8 = 1;
    /// A NAT connection's reply as the real server sends it: source the
    /// real server's address and port, destination the client's (the key
    /// of [`crate::map_name::NAT_REPLIES`]).
    pub const NAT_REPLY: u8 = 2;
}

/// The director itself: array map with one entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Director {
    /// Interface the program is attached to.
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub pad0: [u8; 2],
    /// Outer source address of IPv4 TUN packets (IPv4 in the first word).
    pub tun_source: [u32; 4],
    pub tun_source_family: u8,
    /// [`director_flag`] bits.
    pub flags: u8,
    pub pad1: [u8; 2],
    /// Nanoseconds per kernel tick (1e9 / HZ). The datapath's clock is
    /// `jiffies × tick_ns`: reading jiffies is one load the verifier
    /// inlines, where a clock helper is a call. Set by the loader, which
    /// measured HZ.
    pub tick_ns: u32,
    /// Seconds an entry lives in each connection state, indexed by
    /// [`crate::conn_state`] numbers (IPVS's per-protocol timeout tables).
    pub state_timeouts: [u32; crate::conn_state::COUNT],
    /// ICMP errors the director sends itself (port unreachable,
    /// fragmentation needed), all CPUs together: at most this many a second
    /// on average (the kernel's `icmp_msgs_per_sec`); 0 sends none.
    pub icmp_rate_limit: u32,
    /// ... and at most this many at once (the kernel's `icmp_msgs_burst`):
    /// the depth of the token bucket, [`icmp_burst`] of the limit.
    pub icmp_burst: u32,
    /// Outer source address of IPv6 TUN packets (IPv6 in IPv6).
    pub tun_source6: [u32; 4],
}
const _: () = assert!(core::mem::size_of::<Director>() == 60 + 4 * crate::conn_state::COUNT);

/// The director's ICMP errors a second by default: the kernel's default
/// `net.ipv4.icmp_msgs_per_sec`.
pub const DEFAULT_ICMP_RATE_LIMIT: u32 = 1000;

/// The token bucket's depth for a rate limit: a twentieth of a second's
/// worth, at least one (the kernel's defaults: 1000 a second, bursts of 50).
pub const fn icmp_burst(rate_limit: u32) -> u32 {
    if rate_limit == 0 {
        0
    } else if rate_limit < 20 {
        1
    } else {
        rate_limit / 20
    }
}

/// Zeros, but for the ICMP rate limit: the director's default, as an
/// unset config key gives.
impl Default for Director {
    fn default() -> Self {
        Self {
            ifindex: 0,
            mac: [0; 6],
            pad0: [0; 2],
            tun_source: [0; 4],
            tun_source_family: 0,
            flags: 0,
            pad1: [0; 2],
            tick_ns: 0,
            state_timeouts: [0; crate::conn_state::COUNT],
            icmp_rate_limit: DEFAULT_ICMP_RATE_LIMIT,
            icmp_burst: icmp_burst(DEFAULT_ICMP_RATE_LIMIT),
            tun_source6: [0; 4],
        }
    }
}

/// Key of the service map: (VIP, port, protocol). Port 0 with
/// `service_flag::ALL_PORTS` is the every-port service of that VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub addr: [u32; 4],
    /// Network byte order.
    pub port: u16,
    pub protocol: u8,
    pub family: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);

/// A virtual service. Replaced as a whole by the controller, so the datapath
/// always sees one consistent version (hash map updates are atomic).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Index into the per-service arrays (stats, scheduler state).
    pub id: u32,
    pub scheduler: u8,
    pub pad0: u8,
    pub flags: u16,
    /// Region of `SCHED_TABLE` holding this service's sequence or lookup table.
    pub table_start: u32,
    pub table_len: u32,
    /// Region of `REAL_LISTS` holding this service's real servers, IPVS order.
    pub reals_start: u32,
    pub reals_len: u32,
    /// Seconds; 0 means not persistent.
    pub persistence_timeout: u32,
    /// A firewall-mark service's mark (`service_flag::FWMARK`) in network
    /// order, as IPVS's templates hold it (`htonl(svc->fwmark)`); else 0.
    pub fwmark: u32,
    /// Applied to the client address to form the persistence template key.
    pub persistence_mask: [u32; 4],
}
const _: () = assert!(core::mem::size_of::<Service>() == 48);

impl Service {
    /// The persistence template of the client of `flow` for this service:
    /// the client's address under the service's netmask, source port 0,
    /// and the service's port (0 for an every-port service, so one template
    /// covers every port). The datapath keys templates by it and the
    /// controller finds a connection's template with it.
    ///
    /// A firewall-mark service's template is the client's under the mark
    /// alone, as IPVS's ip_vs_sched_persist makes it for `svc->fwmark`
    /// (protocol IPPROTO_IP, the mark for the virtual address, ports 0):
    /// one template takes a client to one real server on every port and
    /// address the mark's matches cover.
    #[inline(always)]
    pub const fn template_key(&self, flow: &FlowKey) -> FlowKey {
        let m = self.persistence_mask;
        let by_mark = self.flags & service_flag::FWMARK != 0;
        FlowKey {
            src: [flow.src[0] & m[0], flow.src[1] & m[1], flow.src[2] & m[2], flow.src[3] & m[3]],
            dst: if by_mark { [self.fwmark, 0, 0, 0] } else { flow.dst },
            sport: 0,
            dport: if self.flags & (service_flag::ALL_PORTS | service_flag::FWMARK) != 0 { 0 } else { flow.dport },
            protocol: if by_mark { 0 } else { flow.protocol },
            family: flow.family,
            kind: flow_kind::TEMPLATE,
            pad0: 0,
        }
    }
}

/// The `SERVICES` key of firewall-mark service `fwmark` (network order,
/// as [`Service::fwmark`]) of `family`: protocol 0, which no packet's
/// lookup has, so it is found only through `FWMARK_MATCHES`.
#[inline(always)]
pub const fn fwmark_service_key(fwmark: u32, family: u8) -> ServiceKey {
    ServiceKey { addr: [fwmark, 0, 0, 0], port: 0, protocol: 0, family }
}

/// The data of a `FWMARK_MATCHES` key (an LPM trie): a packet's protocol,
/// family, destination port and address. An entry matches the first
/// [`FWMARK_MATCH_FIXED_BITS`] bits whole and the address by its prefix,
/// so its prefix length is that plus the address prefix's; a packet is
/// looked up with [`FWMARK_MATCH_FULL_BITS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FwmarkMatch {
    pub protocol: u8,
    pub family: u8,
    /// Network byte order.
    pub port: u16,
    /// As [`ServiceKey::addr`]: network order, IPv4 in the first word.
    pub addr: [u32; 4],
}
const _: () = assert!(core::mem::size_of::<FwmarkMatch>() == 20);

/// Protocol, family and port: the bits of a [`FwmarkMatch`] before its
/// address.
pub const FWMARK_MATCH_FIXED_BITS: u32 = 32;
/// Every bit of a [`FwmarkMatch`]: a packet's lookup.
pub const FWMARK_MATCH_FULL_BITS: u32 = FWMARK_MATCH_FIXED_BITS + 128;

/// A real server of one service (IPVS's `ip_vs_dest`): the same address in
/// two services is two real servers, each with its own weight and counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealServer {
    pub addr: [u32; 4],
    /// Network byte order; 0 means "the packet's own destination port".
    pub port: u16,
    pub family: u8,
    pub forwarding: u8,
    /// Where frames for this server go: for DR its own MAC, for TUN and NAT
    /// the next hop's toward it (on a segment of a director interface).
    pub mac: [u8; 6],
    /// TUN: the path MTU toward the server (outer packets above it do not
    /// fit).
    pub mtu: u16,
    pub weight: u32,
    pub flags: u32,
    pub service_id: u32,
    pub upper_threshold: u32,
    pub lower_threshold: u32,
    /// The director interface frames for this server leave by: the one
    /// they came in on goes back out with `XDP_TX`, another through
    /// [`crate::map_name::TX_PORTS`].
    pub ifindex: u32,
    /// That interface's MAC: the frames' source.
    pub src_mac: [u8; 6],
    pub pad0: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<RealServer>() == 60);

/// Key of the connection table: the packet's 5-tuple as the client sent it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Network byte order.
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    pub family: u8,
    /// `flow_kind`.
    pub kind: u8,
    pub pad0: u8,
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

impl FlowKey {
    /// The key a NAT connection's replies have: from the real server's
    /// address and port (as stored) to the client of this connection key.
    /// The datapath registers it for a new connection; the controller for a
    /// synced one.
    #[inline(always)]
    pub const fn nat_reply(&self, real_addr: [u32; 4], real_port: u16) -> FlowKey {
        FlowKey {
            src: real_addr,
            dst: self.src,
            sport: real_port,
            dport: self.sport,
            protocol: self.protocol,
            family: self.family,
            kind: flow_kind::NAT_REPLY,
            pad0: 0,
        }
    }

    /// The key a full-NAT connection's replies have: from the real server's
    /// address and port to the connection's local end.
    #[inline(always)]
    pub const fn fullnat_reply(&self, real_addr: [u32; 4], real_port: u16, local: &NatLocal) -> FlowKey {
        FlowKey {
            src: real_addr,
            dst: [local.addr, 0, 0, 0],
            sport: real_port,
            dport: local.port,
            protocol: self.protocol,
            family: self.family,
            kind: flow_kind::NAT_REPLY,
            pad0: 0,
        }
    }
}

/// A connection-table entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    pub real_id: u32,
    pub service_id: u32,
    /// `conn_state` number.
    pub state: u8,
    pub pad0: [u8; 3],
    /// Seconds this entry lives after `last_seen_ns`, set with the state.
    pub timeout: u32,
    /// The datapath's clock (`jiffies × Director::tick_ns`) at the last
    /// packet: nanoseconds, in steps of a tick, from an epoch of its own.
    pub last_seen_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Conn>() == 24);

/// A full-NAT connection's local end, the client's address and port as the
/// real server sees them: a free one in `FULLNAT_PORTS`, a connection's in
/// `FULLNAT_LOCAL`. Both in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatLocal {
    pub addr: u32,
    pub port: u16,
    pub pad0: u16,
}
const _: () = assert!(core::mem::size_of::<NatLocal>() == 8);

/// Traffic counters, per CPU. `out_*` stay 0 in DR and TUN, where the
/// director never sees replies (as in IPVS).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub conns: u64,
    pub in_packets: u64,
    pub in_bytes: u64,
    pub out_packets: u64,
    pub out_bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counters>() == 40);

/// Connection counts of one real server (IPVS's activeconns, inactconns,
/// persistconns), kept by the datapath as connections come and change state,
/// and by the controller as it removes expired entries. The array is
/// memory-mapped so both sides update it with atomic adds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealConns {
    pub active: i64,
    pub inactive: i64,
    pub persistent: i64,
    /// Over its upper threshold, until it falls below the lower one
    /// (IPVS's IP_VS_DEST_F_OVERLOAD hysteresis). 0 or 1.
    pub overloaded: u32,
    pub pad0: u32,
}
const _: () = assert!(core::mem::size_of::<RealConns>() == 32);

/// lblcr keeps at most this many servers per destination address.
pub const LBLCR_MAX_SET: usize = 8;
pub const LBLC_CACHE_SIZE: u32 = 65536;
/// `lblc_expiration` / `lblcr_expiration`: 24 h.
pub const LBLC_EXPIRATION_NS: u64 = 24 * 3600 * 1_000_000_000;

/// Key of the lblc/lblcr cache: a service and a destination address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LblcKey {
    pub service_id: u32,
    pub pad0: u32,
    pub addr: [u32; 4],
}
const _: () = assert!(core::mem::size_of::<LblcKey>() == 24);

/// The servers lblc (one) or lblcr (a set, the last added first) sends a
/// destination address to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LblcEntry {
    pub reals: [u32; LBLCR_MAX_SET],
    pub len: u32,
    pub pad0: u32,
    pub lastuse_ns: u64,
    /// Last change of the set (lblcr drops its most loaded member when the
    /// set went unchanged for the expiration time).
    pub lastmod_ns: u64,
}
const _: () = assert!(core::mem::size_of::<LblcEntry>() == 56);

/// Scheduler position of one service (rr and wrr walk their sequence with it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedState {
    pub position: u64,
}
const _: () = assert!(core::mem::size_of::<SchedState>() == 8);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), have no implicit padding (asserted
    // sizes) and every bit pattern is a valid value.
    unsafe impl aya::Pod for Director {}
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for RealServer {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for Conn {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for SchedState {}
    unsafe impl aya::Pod for RealConns {}
    unsafe impl aya::Pod for LblcKey {}
    unsafe impl aya::Pod for LblcEntry {}
    unsafe impl aya::Pod for NatLocal {}
    unsafe impl aya::Pod for FwmarkMatch {}
}

/// An IPv4 address as the maps store it.
pub const fn ipv4_words(octets: [u8; 4]) -> [u32; 4] {
    [u32::from_ne_bytes(octets), 0, 0, 0]
}

/// The octets of an IPv4 address stored with [`ipv4_words`].
pub const fn ipv4_octets(words: [u32; 4]) -> [u8; 4] {
    words[0].to_ne_bytes()
}

/// An IPv6 address as the maps store it: four words in network order, as
/// the packet holds them.
pub const fn ipv6_words(octets: [u8; 16]) -> [u32; 4] {
    let o = octets;
    [
        u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

/// The octets of an IPv6 address stored with [`ipv6_words`].
pub const fn ipv6_octets(words: [u32; 4]) -> [u8; 16] {
    let (a, b, c, d) = (words[0].to_ne_bytes(), words[1].to_ne_bytes(), words[2].to_ne_bytes(), words[3].to_ne_bytes());
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2], d[3]]
}

/// Any address as the maps store it, with its family.
pub const fn ip_words(addr: core::net::IpAddr) -> ([u32; 4], u8) {
    match addr {
        core::net::IpAddr::V4(a) => (ipv4_words(a.octets()), AF_INET),
        core::net::IpAddr::V6(a) => (ipv6_words(a.octets()), AF_INET6),
    }
}

/// The address stored as `words` in `family`.
pub const fn ip_from_words(words: [u32; 4], family: u8) -> core::net::IpAddr {
    if family == AF_INET6 {
        core::net::IpAddr::V6(core::net::Ipv6Addr::from_octets(ipv6_octets(words)))
    } else {
        core::net::IpAddr::V4(core::net::Ipv4Addr::from_octets(ipv4_octets(words)))
    }
}
