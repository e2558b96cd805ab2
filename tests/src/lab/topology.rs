//! Building the lab: namespaces, the bridges, each host's veth and
//! addresses, the router, the LVS-DR settings of the real servers, and the
//! XDP pass program on the directors' bridge ports.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};

use super::{
    BRIDGE, CLIENT_BRIDGE, CLIENT_SEGMENT, HOST_IFACE, Host, INSIDE_IFACE, Lab, PREFIX_LEN, PREFIX_LEN6,
    REMOTE_BRIDGE, ROUTER_LAST_OCTET,
};
use crate::netns;

/// Overrides where the XDP pass program for the director's bridge port is loaded from.
pub const XDP_PASS_OBJ_ENV: &str = "LB_LAB_XDP_PASS_OBJ";
/// Where xdp-tools installs its "allow everything" filter program (section `xdp`).
const XDP_PASS_OBJ_CANDIDATES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_alw_all.o",
    "/usr/lib/aarch64-linux-gnu/bpf/xdpfilt_alw_all.o",
    "/usr/lib/bpf/xdpfilt_alw_all.o",
    "/usr/lib64/bpf/xdpfilt_alw_all.o",
    "/usr/share/xdp-tools/xdpfilt_alw_all.o",
];

impl Lab {
    pub(super) fn setup(&mut self) -> Result<()> {
        let switch = self.switch_ns.clone();
        self.add_namespace(&switch)?;
        netns::ip(&["-n", &switch, "link", "add", BRIDGE, "type", "bridge"])?;
        netns::ip(&["-n", &switch, "link", "set", BRIDGE, "up"])?;

        if self.spec.remote_reals || self.spec.nat_reals {
            netns::ip(&["-n", &switch, "link", "add", REMOTE_BRIDGE, "type", "bridge"])?;
            netns::ip(&["-n", &switch, "link", "set", REMOTE_BRIDGE, "up"])?;
        }
        let client = self.client.clone();
        if self.spec.remote_client {
            netns::ip(&["-n", &switch, "link", "add", CLIENT_BRIDGE, "type", "bridge"])?;
            netns::ip(&["-n", &switch, "link", "set", CLIENT_BRIDGE, "up"])?;
            self.add_host(&client, CLIENT_BRIDGE)?;
        } else {
            self.add_host(&client, BRIDGE)?;
        }
        for host in self.directors.clone() {
            self.add_host(&host, BRIDGE)?;
        }
        let real_bridge = if self.spec.remote_reals || self.spec.nat_reals { REMOTE_BRIDGE } else { BRIDGE };
        for host in self.reals.clone() {
            self.add_host(&host, real_bridge)?;
        }
        if let Some(router) = self.router.clone() {
            if self.spec.remote_client {
                self.add_client_router(&router)?;
            } else {
                self.add_router(&router)?;
            }
        }

        // The director holds the VIP next to its own address, as an LVS
        // director does (unless VRRP is to add it).
        let vip32 = format!("{}/32", self.vip);
        let vip128 = format!("{}/128", self.vip6());
        if self.spec.static_vip {
            netns::ip(&["-n", &self.director.ns, "addr", "add", &vip32, "dev", HOST_IFACE])?;
            if self.spec.ipv6 {
                // Deprecated at once (preferred_lft 0), as keepalived adds
                // an IPv6 VIP: else, a /128 matching more of a real
                // server's address than the director's /64 does, it would
                // be the source of the director's own connections to the
                // real servers (RFC 6724 rule 8), whose answers stay on
                // their lo.
                netns::ip(&[
                    "-n",
                    &self.director.ns,
                    "addr",
                    "add",
                    &vip128,
                    "dev",
                    HOST_IFACE,
                    "nodad",
                    "preferred_lft",
                    "0",
                ])?;
            }
        }

        if self.spec.nat_reals {
            self.add_inside_interface()?;
        }
        // LVS-DR real servers: the VIP on lo so they accept packets for it,
        // but never answer ARP for it (arp_ignore=1: only for addresses on the
        // receiving interface) nor use it as ARP source (arp_announce=2).
        // (NAT alone: no VIP; with a router too, DR and TUN as well.)
        for real in self.reals.iter().filter(|_| !self.spec.nat_reals || self.spec.remote_reals) {
            netns::ip(&["-n", &real.ns, "addr", "add", &vip32, "dev", "lo"])?;
            if self.spec.ipv6 {
                netns::ip(&["-n", &real.ns, "addr", "add", &vip128, "dev", "lo"])?;
            }
            set_sysctls(
                &real.ns,
                &[
                    ("net.ipv4.conf.all.arp_ignore", "1"),
                    ("net.ipv4.conf.all.arp_announce", "2"),
                    ("net.ipv4.conf.eth0.arp_ignore", "1"),
                    ("net.ipv4.conf.eth0.arp_announce", "2"),
                ],
            )?;
        }

        if self.spec.xdp_pass_on_director_port {
            for director in self.directors.clone() {
                self.attach_xdp_pass_to_bridge_port(&director)?;
            }
        }
        Ok(())
    }

    fn add_namespace(&mut self, ns: &str) -> Result<()> {
        netns::ip(&["netns", "add", ns])?;
        self.created.push(ns.to_owned());
        // Quiet, predictable namespaces: no IPv6 (no DAD/RS/MLD chatter in
        // captures and counters) and no reverse-path filtering inherited from
        // the host. Set before creating links so `default` applies to eth0.
        set_sysctls(ns, &[("net.ipv4.conf.all.rp_filter", "0"), ("net.ipv4.conf.default.rp_filter", "0")])?;
        // IPv6 may be disabled on the host altogether; then these keys do not exist.
        if self.spec.ipv6 {
            // No duplicate address detection: addresses work at once.
            set_sysctls(
                ns,
                &[
                    ("net.ipv6.conf.all.disable_ipv6", "0"),
                    ("net.ipv6.conf.default.disable_ipv6", "0"),
                    ("net.ipv6.conf.all.accept_dad", "0"),
                    ("net.ipv6.conf.default.accept_dad", "0"),
                    ("net.ipv6.conf.default.dad_transmits", "0"),
                ],
            )
            .context("IPv6 in the lab's namespaces")?;
        } else {
            let _ = set_sysctls(
                ns,
                &[("net.ipv6.conf.all.disable_ipv6", "1"), ("net.ipv6.conf.default.disable_ipv6", "1")],
            );
        }
        Ok(())
    }

    /// The router: eth0 on the client segment (already added as a host),
    /// eth1 on the real servers' segment, forwarding between them; routes
    /// both ways.
    fn add_router(&mut self, router: &Host) -> Result<()> {
        self.add_host(router, BRIDGE)?;
        let k = self.spec.subnet_index;
        let port = "p-router1";
        netns::ip(&[
            "link",
            "add",
            "eth1",
            "netns",
            &router.ns,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            &self.switch_ns,
        ])?;
        netns::ip(&["-n", &self.switch_ns, "link", "set", port, "master", REMOTE_BRIDGE, "up"])?;
        let eth1 = format!("{}/{PREFIX_LEN}", Ipv4Addr::new(10, k, 1, ROUTER_LAST_OCTET));
        netns::ip(&["-n", &router.ns, "addr", "add", &eth1, "dev", "eth1"])?;
        netns::ip(&["-n", &router.ns, "link", "set", "eth1", "up"])?;
        self.run(&router.ns, &["ethtool", "-K", "eth1", "tx", "off", "tso", "off", "gso", "off", "gro", "off"])?;
        set_sysctls(&router.ns, &[("net.ipv4.ip_forward", "1")])?;
        let remote = format!("10.{k}.1.0/{PREFIX_LEN}");
        let via_a = Ipv4Addr::new(10, k, 0, ROUTER_LAST_OCTET).to_string();
        let mut segment_ns = vec![self.client.ns.clone()];
        // Directors with an inside interface reach the real servers there.
        if !self.spec.nat_reals {
            segment_ns.extend(self.directors.iter().map(|d| d.ns.clone()));
        }
        for ns in segment_ns {
            netns::ip(&["-n", &ns, "route", "add", &remote, "via", &via_a])?;
        }
        let via_b = Ipv4Addr::new(10, k, 1, ROUTER_LAST_OCTET).to_string();
        for real in self.reals.clone() {
            netns::ip(&["-n", &real.ns, "route", "add", "default", "via", &via_b])?;
        }
        Ok(())
    }

    /// The router in front of a remote client: eth0 on the main segment,
    /// eth1 on the client's, forwarding with an L4 hash for multipath
    /// routes (`fib_multipath_hash_policy = 1`: each flow keeps its next
    /// hop, flows spread). The client's gateway; the main segment's hosts'
    /// default route. The route to the VIP is the test's (BGP).
    fn add_client_router(&mut self, router: &Host) -> Result<()> {
        self.add_host(router, BRIDGE)?;
        let k = self.spec.subnet_index;
        let port = "p-router1";
        netns::ip(&["link", "add", "eth1", "netns", &router.ns, "type", "veth", "peer", "name", port, "netns", &self.switch_ns])?;
        netns::ip(&["-n", &self.switch_ns, "link", "set", port, "master", CLIENT_BRIDGE, "up"])?;
        let inside = Ipv4Addr::new(10, k, CLIENT_SEGMENT, ROUTER_LAST_OCTET);
        netns::ip(&["-n", &router.ns, "addr", "add", &format!("{inside}/{PREFIX_LEN}"), "dev", "eth1"])?;
        netns::ip(&["-n", &router.ns, "link", "set", "eth1", "up"])?;
        self.run(&router.ns, &["ethtool", "-K", "eth1", "tx", "off", "tso", "off", "gso", "off", "gro", "off"])?;
        set_sysctls(&router.ns, &[("net.ipv4.ip_forward", "1"), ("net.ipv4.fib_multipath_hash_policy", "1")])?;
        netns::ip(&["-n", &self.client.ns, "route", "add", "default", "via", &inside.to_string()])?;
        let outside = Ipv4Addr::new(10, k, 0, ROUTER_LAST_OCTET).to_string();
        for ns in self.directors.iter().chain(&self.reals).map(|h| h.ns.clone()).collect::<Vec<_>>() {
            netns::ip(&["-n", &ns, "route", "add", "default", "via", &outside])?;
        }
        Ok(())
    }

    /// LVS-NAT: each director's eth1 on the real servers' segment, with
    /// forwarding on (the XDP program routes replies with the kernel's FIB,
    /// which needs it) and the XDP pass program on its bridge port (frames
    /// are redirected into it). The real servers' gateway, 10.k.1.1, is the
    /// first director's address with a static VIP; else each director has
    /// its own (10.k.1.(1+N)) and VRRP moves the gateway address.
    fn add_inside_interface(&mut self) -> Result<()> {
        let k = self.spec.subnet_index;
        let gateway = self.inside_gateway();
        for (i, director) in self.directors.clone().iter().enumerate() {
            let port = format!("p-{}-in", director.name);
            netns::ip(&["link", "add", INSIDE_IFACE, "netns", &director.ns, "type", "veth", "peer", "name", &port, "netns", &self.switch_ns])?;
            netns::ip(&["-n", &self.switch_ns, "link", "set", &port, "master", REMOTE_BRIDGE, "up"])?;
            let own = if self.spec.static_vip && i == 0 { gateway } else { Ipv4Addr::new(10, k, 1, 2 + i as u8) };
            netns::ip(&["-n", &director.ns, "addr", "add", &format!("{own}/{PREFIX_LEN}"), "dev", INSIDE_IFACE])?;
            netns::ip(&["-n", &director.ns, "link", "set", INSIDE_IFACE, "up"])?;
            self.run(&director.ns, &["ethtool", "-K", INSIDE_IFACE, "tx", "off", "tso", "off", "gso", "off", "gro", "off"])?;
            set_sysctls(&director.ns, &[("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.all.forwarding", "1")])?;
            self.attach_xdp_pass_to_port(&port)?;
        }
        for real in self.reals.clone().into_iter().filter(|_| !self.spec.reals_without_gateway) {
            if self.spec.remote_reals {
                // The router is their default gateway (DR and TUN answer
                // from the VIP through it); what they send from their own
                // address, NAT's replies, goes to the director.
                let own = real.ip.to_string();
                netns::ip(&["-n", &real.ns, "rule", "add", "from", &own, "table", "100"])?;
                netns::ip(&["-n", &real.ns, "route", "add", "default", "via", &gateway.to_string(), "table", "100"])?;
            } else {
                netns::ip(&["-n", &real.ns, "route", "add", "default", "via", &gateway.to_string()])?;
            }
        }
        Ok(())
    }

    fn add_host(&mut self, host: &Host, bridge: &str) -> Result<()> {
        self.add_namespace(&host.ns)?;
        let (ns, port, switch) = (host.ns.as_str(), host.bridge_port.as_str(), self.switch_ns.as_str());
        // Created directly in the two namespaces, never in the root one.
        netns::ip(&["link", "add", HOST_IFACE, "netns", ns, "type", "veth", "peer", "name", port, "netns", switch])?;
        netns::ip(&["-n", switch, "link", "set", port, "master", bridge, "up"])?;
        netns::ip(&["-n", ns, "link", "set", HOST_IFACE, "address", &host.mac.to_string()])?;
        netns::ip(&["-n", ns, "link", "set", "lo", "up"])?;
        netns::ip(&["-n", ns, "link", "set", HOST_IFACE, "up"])?;
        let addr = format!("{}/{PREFIX_LEN}", host.ip);
        netns::ip(&["-n", ns, "addr", "add", &addr, "dev", HOST_IFACE])?;
        if self.spec.ipv6 {
            let addr6 = format!("{}/{PREFIX_LEN6}", host.ip6());
            netns::ip(&["-n", ns, "addr", "add", &addr6, "dev", HOST_IFACE, "nodad"])?;
        }
        // veth offloads hand XDP frames with only partial checksums (CHECKSUM_PARTIAL
        // from local sockets), and GRO/GSO/TSO make packets that are not wire
        // frames; turn them all off so XDP sees and forwards real packets.
        self.run(ns, &["ethtool", "-K", HOST_IFACE, "tx", "off", "tso", "off", "gso", "off", "gro", "off"])?;
        Ok(())
    }

    /// Attaches a native XDP pass program to `host`'s port on the bridge.
    ///
    /// Needed on the director: a frame sent with XDP_TX (or redirected) into
    /// a veth is dropped (counted as xdp_tx_errors) unless the peer veth has a
    /// native XDP program. Generic (skb) mode on the peer or enabling GRO on
    /// it does not help.
    pub fn attach_xdp_pass_to_bridge_port(&self, host: &Host) -> Result<()> {
        self.attach_xdp_pass_to_port(&host.bridge_port)
    }

    fn attach_xdp_pass_to_port(&self, port: &str) -> Result<()> {
        let obj = match &self.spec.xdp_pass_object {
            Some(path) => path.clone(),
            None => xdp_pass_object()?,
        };
        let obj = obj.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {obj:?}"))?;
        netns::ip(&["-n", &self.switch_ns, "link", "set", "dev", port, "xdpdrv", "obj", obj, "sec", "xdp"]).map(|_| ())
    }
}

/// Writes sysctls of namespace `ns` through /proc/sys from a thread inside
/// it (/proc/sys/net follows the thread's namespace), without a procps dependency.
pub fn set_sysctls(ns: &str, settings: &[(&str, &str)]) -> Result<()> {
    netns::run_in_netns(ns, || -> Result<()> {
        for (key, value) in settings {
            let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
            std::fs::write(&path, value).with_context(|| format!("setting {key}={value} in {ns}"))?;
        }
        Ok(())
    })?
}

/// Reads a sysctl of namespace `ns` (e.g. "net.ipv4.conf.all.arp_ignore").
pub fn read_sysctl(ns: &str, key: &str) -> Result<String> {
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    netns::run_in_netns(ns, || std::fs::read_to_string(&path))?
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("reading {key} in {ns}"))
}

/// The XDP pass object: `$LB_LAB_XDP_PASS_OBJ` or xdp-tools' xdpfilt_alw_all.o.
pub fn xdp_pass_object() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(XDP_PASS_OBJ_ENV) {
        return Ok(PathBuf::from(path));
    }
    XDP_PASS_OBJ_CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| {
        anyhow!(
            "no XDP pass program found (tried {XDP_PASS_OBJ_CANDIDATES:?}); install xdp-tools \
                 or set {XDP_PASS_OBJ_ENV}"
        )
    })
}
