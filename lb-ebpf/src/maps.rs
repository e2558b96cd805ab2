//! Every map the datapath uses. The controller is the only writer of the
//! configuration maps; the datapath writes the connection table, the
//! scheduler positions and the counters.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, Queue},
};
use lb_common::{
    BPF_F_MMAPABLE, Conn, Counters, FwmarkMatch, MAX_FWMARK_MATCHES, FULLNAT_PORTS_SIZE, NatLocal, DEFAULT_CONN_TABLE_SIZE, Director, FlowKey, LBLC_CACHE_SIZE, LblcEntry, LblcKey,
    MAX_INTERFACES, MAX_REALS, MAX_SERVICES, NEIGH_WANTED_SIZE, REAL_LIST_SLOTS, RealConns, RealServer,
    SCHED_TABLE_SLOTS, SchedState, Service, ServiceKey, VIP_FILTER_WORDS, prog_slot, reason,
};

#[map]
pub static DIRECTOR: Array<Director> = Array::with_max_entries(1, 0);

/// The programs `lb_xdp` hands frames on to (`prog_slot`): the controller
/// fills it before it attaches `lb_xdp`. Pinned with the other maps: the
/// kernel empties a program array when no process holds it, and a datapath
/// left attached across a restart of lbd must keep its IPv6 program.
#[map]
pub static PROGS: ProgramArray = ProgramArray::with_max_entries(prog_slot::COUNT, 0);

#[map]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// The firewall-mark services' matches: (protocol, family, port, address
/// prefix) to the mark (network order), whose service is
/// `lb_common::fwmark_service_key`. Looked up only when no service of the
/// packet's own VIP and port is.
#[map]
pub static FWMARK_MATCHES: LpmTrie<FwmarkMatch, u32> = LpmTrie::with_max_entries(MAX_FWMARK_MATCHES, 0);

/// A bit per VIP hash (`lb_common::vip_filter_bit`): most traffic for no
/// VIP is recognised with one array read.
#[map]
pub static VIP_FILTER: Array<u64> = Array::with_max_entries(VIP_FILTER_WORDS, 0);

/// Each service's flags by id, for packets of known connections (which
/// skip the service lookup): standby.
#[map]
pub static SERVICE_FLAGS: Array<u32> = Array::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static REALS: Array<RealServer> = Array::with_max_entries(MAX_REALS, 0);

/// Each service's real servers (their ids) in IPVS order, one region each.
#[map]
pub static REAL_LISTS: Array<u32> = Array::with_max_entries(REAL_LIST_SLOTS, 0);

/// Each service's scheduling table (real server ids), one region each.
#[map]
pub static SCHED_TABLE: Array<u32> = Array::with_max_entries(SCHED_TABLE_SLOTS, 0);

#[map]
pub static SCHED_STATE: Array<SchedState> = Array::with_max_entries(MAX_SERVICES, 0);

/// Sized at load time from the config.
#[map]
pub static CONN_TABLE: LruHashMap<FlowKey, Conn> = LruHashMap::with_max_entries(DEFAULT_CONN_TABLE_SIZE, 0);

/// NAT connections by their replies: the key a real server's reply has
/// (`flow_kind::NAT_REPLY`) to the connection's own key (client to VIP).
/// Sized at load time as the connection table; an entry whose connection
/// is gone is found stale by the reply path and outlived by the LRU.
#[map]
pub static NAT_REPLIES: LruHashMap<FlowKey, FlowKey> = LruHashMap::with_max_entries(DEFAULT_CONN_TABLE_SIZE, 0);

/// The interfaces carrying the program, by ifindex: where frames leave for
/// a real server or a client on another interface than they came in on.
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_INTERFACES, 0);

/// Next hops toward NAT clients without a neighbour entry (address to
/// ifindex, as the kernel's FIB lookup gave them): the controller asks the
/// kernel to resolve them and removes them.
#[map]
pub static NEIGH_WANTED: LruHashMap<u32, u32> = LruHashMap::with_max_entries(NEIGH_WANTED_SIZE, 0);

/// Room for one connection key a map update takes, per CPU: built here
/// rather than on the XDP program's stack (see `nat::register_reply`).
#[map]
pub static KEY_SCRATCH: PerCpuArray<FlowKey> = PerCpuArray::with_max_entries(1, 0);

/// Full NAT's free local ends (address, port), filled by the controller;
/// a new connection takes one, the controller gives it back when the
/// connection is gone. A queue: taking and giving back are atomic across
/// CPUs.
#[map]
pub static FULLNAT_PORTS: Queue<NatLocal> = Queue::with_max_entries(FULLNAT_PORTS_SIZE, 0);

/// Each full-NAT connection's local end, by the connection's key. Not an
/// LRU: an entry dropped silently would be a port lost. Sized at load time
/// as the connection table.
#[map]
pub static FULLNAT_LOCAL: HashMap<FlowKey, NatLocal> = HashMap::with_max_entries(DEFAULT_CONN_TABLE_SIZE, 0);

/// lblc's and lblcr's destination-address caches.
#[map]
pub static LBLC_CACHE: LruHashMap<LblcKey, LblcEntry> = LruHashMap::with_max_entries(LBLC_CACHE_SIZE, 0);

/// Connection counts per real server, shared with the controller (mmap).
#[map]
pub static REAL_CONNS: Array<RealConns> = Array::with_max_entries(MAX_REALS, BPF_F_MMAPABLE);

#[map]
pub static SERVICE_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static REAL_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_REALS, 0);

#[map]
pub static REASON_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(reason::COUNT, 0);

/// The token bucket of the ICMP errors the director sends (`reply`), one
/// for all CPUs as the kernel's `icmp_global`; only touched atomically.
#[repr(C)]
pub struct IcmpBucket {
    /// Replies left; may dip below 0 while CPUs race for the last one.
    pub credit: i64,
    /// The datapath's clock at the last refill (ns).
    pub stamp_ns: u64,
}

/// Not pinned: a restarted lbd starts with a full bucket.
#[map]
pub static ICMP_BUCKET: Array<IcmpBucket> = Array::with_max_entries(1, 0);

/// Room for one `bpf_loop` scan's state: the largest is lblcr's set walk.
#[repr(C, align(8))]
pub struct ScanSlot(pub [u64; 10]);

/// Slots of [`SCAN_SCRATCH`], one per kind of scan (none nests in another
/// of its kind).
pub mod scan_slot {
    pub const LEAST: u32 = 0;
    pub const LBLCR_SET: u32 = 1;
    /// lblc's and lblcr's new cache entry (not a scan: kept off the stack).
    pub const LBLC_ENTRY: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// The state of the scans whose steps depend on what earlier steps found
/// (the least-connection family, lblcr's set walks), per CPU. Not on the
/// stack: verifiers before Linux 6.8 check a `bpf_loop` callback once, with
/// the caller's state at the call, so a scan's start values on the stack
/// (no server yet, overhead 0) were constants to them, and they hard-wired
/// the branches those decide (on Debian 12's 6.1 every lc scan returned the
/// last server). What a map value holds is unknown to every verifier.
#[map]
pub static SCAN_SCRATCH: PerCpuArray<ScanSlot> = PerCpuArray::with_max_entries(scan_slot::COUNT, 0);
