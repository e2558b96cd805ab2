//! What the controller asks the kernel's network stack (rtnetlink, read
//! only except for asking the kernel to resolve a neighbour): the director
//! interface's index and MAC, the route to a real server, the real server's
//! MAC from the neighbour table (ARP's for IPv4, NDP's for IPv6).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result, anyhow, bail};
use futures_util::TryStreamExt as _;
use netlink_packet_route::{
    AddressFamily,
    address::AddressAttribute,
    link::LinkAttribute,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMetric, RouteType},
};
use rtnetlink::{Handle, RouteMessageBuilder};

/// The director's NIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub ipv4: Vec<Ipv4Addr>,
    /// Its IPv6 addresses that name it beyond its link (not link-local).
    pub ipv6: Vec<Ipv6Addr>,
}

/// The interfaces carrying the program: the director's own (`interface`
/// in the config: VIPs, VRRP, ICMP replies) first, then the others
/// (`interfaces`), where real servers (or NAT clients) may be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interfaces(Vec<Interface>);

impl Interfaces {
    /// `main` and `others` (a repeat of `main` is dropped).
    pub fn new(main: Interface, others: Vec<Interface>) -> Self {
        let mut all = vec![main];
        for i in others {
            if !all.iter().any(|a| a.index == i.index) {
                all.push(i);
            }
        }
        Self(all)
    }

    pub fn main(&self) -> &Interface {
        &self.0[0]
    }

    pub fn all(&self) -> &[Interface] {
        &self.0
    }

    pub fn by_index(&self, index: u32) -> Option<&Interface> {
        self.0.iter().find(|i| i.index == index)
    }

    /// Their names, for messages: "eth0" or "eth0, eth1".
    pub fn names(&self) -> String {
        self.0.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// How the kernel would route to an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub oif: Option<u32>,
    /// Of the destination's family.
    pub gateway: Option<IpAddr>,
    /// The address is one of this host's own.
    pub local: bool,
    /// A route MTU, when the route sets one (else the device's applies).
    pub mtu: Option<u32>,
}

#[derive(Clone)]
pub struct Net {
    handle: Handle,
}

impl Net {
    /// Opens an rtnetlink socket in the current network namespace. Needs a
    /// tokio runtime.
    pub fn open() -> Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection().context("open rtnetlink socket")?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    pub async fn interface(&self, name: &str) -> Result<Interface> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        let link = match links.try_next().await {
            Ok(Some(link)) => link,
            Ok(None) | Err(_) => bail!("no interface named \"{name}\""),
        };
        let index = link.header.index;
        let mac = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(bytes) if bytes.len() == 6 => Some(<[u8; 6]>::try_from(&bytes[..]).ok()?),
                _ => None,
            })
            .ok_or_else(|| anyhow!("interface \"{name}\" has no Ethernet address"))?;
        let mtu = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
            .unwrap_or(1500);
        let all = self.addresses_of(index).await?;
        let ipv4 = all.iter().filter_map(|a| if let IpAddr::V4(a) = a { Some(*a) } else { None }).collect();
        let ipv6 = all
            .iter()
            .filter_map(|a| if let IpAddr::V6(a) = a { Some(*a) } else { None })
            .filter(|a| !a.is_unicast_link_local())
            .collect();
        Ok(Interface { name: name.to_string(), index, mac, mtu, ipv4, ipv6 })
    }

    /// The IPv4 addresses of interface `name` (of any kind: `lo`, `tunl0`),
    /// `None` when there is no such interface.
    pub async fn ipv4_addresses(&self, name: &str) -> Result<Option<Vec<Ipv4Addr>>> {
        let all = self.addresses(name).await?;
        Ok(all.map(|all| all.into_iter().filter_map(|a| if let IpAddr::V4(a) = a { Some(a) } else { None }).collect()))
    }

    /// The addresses of both families of interface `name` (of any kind),
    /// `None` when there is no such interface.
    pub async fn addresses(&self, name: &str) -> Result<Option<Vec<IpAddr>>> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        let index = match links.try_next().await {
            Ok(Some(link)) => link.header.index,
            Ok(None) => return Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("look up interface {name}")),
        };
        Ok(Some(self.addresses_of(index).await?))
    }

    async fn addresses_of(&self, index: u32) -> Result<Vec<IpAddr>> {
        let mut all = Vec::new();
        let mut addrs = self.handle.address().get().set_link_index_filter(index).execute();
        while let Some(msg) = addrs.try_next().await.context("list addresses")? {
            for attr in msg.attributes {
                if let AddressAttribute::Local(a) | AddressAttribute::Address(a) = attr
                    && !all.contains(&a)
                {
                    all.push(a);
                }
            }
        }
        Ok(all)
    }

    /// `ip route get ADDR` (`ip -6 route get` for IPv6).
    pub async fn route_to(&self, addr: impl Into<IpAddr>) -> Result<Route> {
        let addr = addr.into();
        let msg = match addr {
            IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(a, 32).build(),
            IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(a, 128).build(),
        };
        let mut routes = self.handle.route().get(msg).execute();
        let route = routes
            .try_next()
            .await
            .with_context(|| format!("no route to {addr}"))?
            .ok_or_else(|| anyhow!("no route to {addr}"))?;
        let mut r = Route { oif: None, gateway: None, local: route.header.kind == RouteType::Local, mtu: None };
        for attr in route.attributes {
            match attr {
                RouteAttribute::Oif(i) => r.oif = Some(i),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.gateway = Some(IpAddr::V4(g)),
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => r.gateway = Some(IpAddr::V6(g)),
                RouteAttribute::Metrics(metrics) => {
                    for m in metrics {
                        if let RouteMetric::Mtu(mtu) = m {
                            r.mtu = Some(mtu);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(r)
    }

    /// The MAC the kernel has for `addr` on interface `index`, if resolved
    /// (by ARP for IPv4, by neighbour discovery for IPv6).
    pub async fn neighbour(&self, index: u32, addr: IpAddr) -> Result<Option<[u8; 6]>> {
        let family = if addr.is_ipv6() { AddressFamily::Inet6 } else { AddressFamily::Inet };
        let mut neighbours = self.handle.neighbours().get().set_address_family(family).execute();
        while let Some(msg) = neighbours.try_next().await.context("list neighbours")? {
            if msg.header.ifindex != index || msg.header.family != family {
                continue;
            }
            let usable = matches!(
                msg.header.state,
                NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
                    | NeighbourState::Noarp
            );
            let mut dst = None;
            let mut mac = None;
            for attr in &msg.attributes {
                match attr {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => dst = Some(IpAddr::V4(*a)),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => dst = Some(IpAddr::V6(*a)),
                    NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => mac = <[u8; 6]>::try_from(&l[..]).ok(),
                    _ => {}
                }
            }
            if dst == Some(addr) && usable {
                return Ok(mac);
            }
        }
        Ok(None)
    }

    /// Asks the kernel to (re)resolve `addr` on interface `index` (an ARP
    /// request, or an IPv6 neighbour solicitation, goes out, as `ip neigh
    /// replace ADDR dev IF use` does). The director never sends to real
    /// servers through its own stack, so without this their neighbour
    /// entries would never be created or refreshed.
    pub async fn probe_neighbour(&self, index: u32, addr: IpAddr) -> Result<()> {
        self.handle
            .neighbours()
            .add(index, addr)
            .flags(NeighbourFlags::Use)
            .state(NeighbourState::Reachable)
            .replace()
            .execute()
            .await
            .with_context(|| format!("ask the kernel to resolve {addr}"))
    }
}
