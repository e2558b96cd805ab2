//! VRRP's I/O: adverts on a raw IPv4 or IPv6 socket (protocol 112),
//! gratuitous ARPs and unsolicited neighbour advertisements on a packet
//! socket, virtual addresses and link state through rtnetlink.

use std::{
    ffi::CString,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use anyhow::{Context as _, Result, anyhow};
use futures_util::TryStreamExt as _;
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, CacheInfo},
    link::{LinkAttribute, LinkFlags},
};
use rtnetlink::Handle;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, SockFilter, Socket, Type};
use tokio::io::{Interest, unix::AsyncFd};

use super::{
    config::Vip,
    packet::{
        Advert, IPPROTO_VRRP, IpHeader, VRRP_GROUP, VRRP_GROUP6, VRRP_TTL, gratuitous_arp, is_link_local6,
        unsolicited_na,
    },
};

/// keepalived's TOS for adverts (IPTOS_PREC_INTERNETCONTROL); IPv6's
/// traffic class the same.
const TOS_INTERNETCONTROL: u32 = 0xc0;

fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a c_int option value of its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The interface index of `name` in this thread's network namespace.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

/// Sends and receives one virtual router's adverts on one interface.
///
/// Two raw sockets, both bound to the interface (SO_BINDTODEVICE): one sends,
/// bound to the source address, TTL 255 for unicast and multicast, multicast
/// loopback off, receiving nothing (a drop-all filter); the other receives,
/// unbound so that it sees adverts to 224.0.0.18 (joined on the interface)
/// and to our own address alike, IP header included (for the TTL check).
///
/// Over IPv6 the same, from the interface's link-local address to ff02::12
/// (hop limit 255); the receiving socket asks for the hop limit and the
/// destination as ancillary data (a raw IPv6 socket has no header to give).
/// The checksum is ours to compute and check, as over IPv4 (no
/// IPV6_CHECKSUM: the kernel leaves protocol 112 alone).
pub struct AdvertSocket {
    send: AsyncFd<Socket>,
    recv: AsyncFd<Socket>,
    source: IpAddr,
    ifindex: u32,
    destinations: Vec<IpAddr>,
}

impl AdvertSocket {
    /// `unicast_peers` empty: multicast to 224.0.0.18 (ff02::12 when
    /// `source` is IPv6: then it must be the interface's link-local
    /// address). Needs CAP_NET_RAW and a tokio runtime.
    pub fn open(interface: &str, ifindex: u32, source: IpAddr, unicast_peers: &[IpAddr]) -> io::Result<Self> {
        let domain = if source.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
        let raw = || -> io::Result<Socket> {
            let s = Socket::new(domain, Type::RAW.cloexec(), Some(Protocol::from(i32::from(IPPROTO_VRRP))))?;
            s.bind_device(Some(interface.as_bytes()))?;
            s.set_nonblocking(true)?;
            Ok(s)
        };
        let source = match source {
            IpAddr::V4(source) => source,
            IpAddr::V6(source) => return Self::open6(raw()?, raw()?, ifindex, source),
        };
        let send = raw()?;
        send.bind(&SockAddr::from(SocketAddrV4::new(source, 0)))?;
        send.set_ttl_v4(u32::from(VRRP_TTL))?;
        send.set_multicast_ttl_v4(u32::from(VRRP_TTL))?;
        send.set_multicast_loop_v4(false)?;
        send.set_multicast_if_v4(&source)?;
        send.set_tos_v4(TOS_INTERNETCONTROL)?;
        // "ret #0": the sending socket keeps nothing it would receive.
        send.attach_filter(&[SockFilter::new(0x06, 0, 0, 0)])?;

        let recv = raw()?;
        if unicast_peers.is_empty() {
            recv.join_multicast_v4_n(&VRRP_GROUP, &InterfaceIndexOrAddress::Index(ifindex))?;
        }
        let destinations =
            if unicast_peers.is_empty() { vec![VRRP_GROUP.into()] } else { unicast_peers.to_vec() };
        // SAFETY: each socket owns its fd, and the AsyncFd owns the socket
        // for its whole life, so the fd stays open and the same.
        let (send, recv) = unsafe { (AsyncFd::register(send)?, AsyncFd::register(recv)?) };
        Ok(Self { send, recv, source: source.into(), ifindex, destinations })
    }

    fn open6(send: Socket, recv: Socket, ifindex: u32, source: Ipv6Addr) -> io::Result<Self> {
        if !is_link_local6(source) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{source} is not link-local")));
        }
        send.bind(&SockAddr::from(SocketAddrV6::new(source, 0, 0, ifindex)))?;
        send.set_unicast_hops_v6(u32::from(VRRP_TTL))?;
        send.set_multicast_hops_v6(u32::from(VRRP_TTL))?;
        send.set_multicast_loop_v6(false)?;
        send.set_multicast_if_v6(ifindex)?;
        set_int_option(send.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_TCLASS, TOS_INTERNETCONTROL as i32)?;
        send.attach_filter(&[SockFilter::new(0x06, 0, 0, 0)])?;

        recv.join_multicast_v6(&VRRP_GROUP6, ifindex)?;
        recv.set_recv_hoplimit_v6(true)?;
        set_int_option(recv.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        // SAFETY: as in `open`.
        let (send, recv) = unsafe { (AsyncFd::register(send)?, AsyncFd::register(recv)?) };
        Ok(Self { send, recv, source: source.into(), ifindex, destinations: vec![VRRP_GROUP6.into()] })
    }

    /// The source address of our adverts.
    pub fn source(&self) -> IpAddr {
        self.source
    }

    /// Sends `advert` to the group, or to every unicast peer (the v3
    /// checksum differs by destination). Stops at the first error.
    pub async fn send(&self, advert: &Advert) -> io::Result<()> {
        for &dst in &self.destinations {
            let bytes = advert.encode(self.source, dst);
            let to = match dst {
                IpAddr::V4(dst) => SockAddr::from(SocketAddrV4::new(dst, 0)),
                IpAddr::V6(dst) => SockAddr::from(SocketAddrV6::new(dst, 0, 0, self.ifindex)),
            };
            self.send.async_io(Interest::WRITABLE, |s| s.send_to(&bytes, &to)).await?;
        }
        Ok(())
    }

    /// Receives one packet into `buf`; returns its length and, over IPv6,
    /// its header (from the ancillary data; `buf` holds the VRRP payload).
    /// Over IPv4 `buf` holds the packet, IP header included.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Option<IpHeader>)> {
        let ipv6 = self.source.is_ipv6();
        self.recv
            .async_io(Interest::READABLE, |s| {
                if ipv6 {
                    return recv6(s.as_raw_fd(), buf).map(|(n, ip)| (n, Some(ip)));
                }
                // SAFETY: recv only writes initialized bytes into the buffer;
                // viewing &mut [u8] as &mut [MaybeUninit<u8>] is sound.
                let uninit = unsafe { &mut *(std::ptr::from_mut::<[u8]>(buf) as *mut [std::mem::MaybeUninit<u8>]) };
                s.recv(uninit).map(|n| (n, None))
            })
            .await
    }
}

/// One datagram of a raw IPv6 socket and its header as the ancillary data
/// tells it: the source, the destination (IPV6_PKTINFO), the hop limit
/// (IPV6_HOPLIMIT; 0 if missing, which fails the check).
fn recv6(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, IpHeader)> {
    // SAFETY: plain old data; all-zero is a valid value of each.
    let mut name: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut control = [0u64; 32];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` is to a live buffer of the given size.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ip = IpHeader {
        src: Ipv6Addr::from(name.sin6_addr.s6_addr).into(),
        dst: Ipv6Addr::UNSPECIFIED.into(),
        ttl: 0,
        protocol: IPPROTO_VRRP,
    };
    // SAFETY: the kernel filled `control` up to msg_controllen; the CMSG
    // macros walk it within those bounds, and each datum is read unaligned
    // at its header's data pointer, of the size its type has.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    let hops = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                    ip.ttl = u8::try_from(hops).unwrap_or(0);
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    ip.dst = Ipv6Addr::from(info.ipi6_addr.s6_addr).into();
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok((n as usize, ip))
}

/// Gratuitous ARPs (IPv4) and unsolicited neighbour advertisements (IPv6)
/// from the interface's MAC, as keepalived sends them (see
/// [`gratuitous_arp`], [`unsolicited_na`]).
pub struct GarpSender {
    fd: OwnedFd,
    ifindex: u32,
    mac: [u8; 6],
    /// The NAs' router flag: whether the interface forwards IPv6.
    router: bool,
}

/// Whether `interface` forwards IPv6 (its `forwarding` sysctl), as
/// keepalived reads it for the router flag of its neighbour advertisements.
pub fn forwards_ipv6(interface: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{interface}/forwarding"))
        .is_ok_and(|v| v.trim() == "1")
}

impl GarpSender {
    /// A packet socket that sends only (protocol 0: it receives nothing).
    /// `router`: the router flag of its neighbour advertisements.
    pub fn open(ifindex: u32, mac: [u8; 6], router: bool) -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is owned right after the check.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd, ifindex, mac, router })
    }

    /// Sends `count` gratuitous ARPs (IPv4) or unsolicited neighbour
    /// advertisements (IPv6) for each address.
    pub fn send(&self, vips: &[IpAddr], count: u32) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = self.ifindex as i32;
        to.sll_halen = 6;
        for vip in vips {
            let frame = match vip {
                IpAddr::V4(vip) => {
                    to.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
                    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
                    gratuitous_arp(self.mac, *vip).to_vec()
                }
                IpAddr::V6(vip) => {
                    to.sll_protocol = (libc::ETH_P_IPV6 as u16).to_be();
                    to.sll_addr[..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
                    unsolicited_na(self.mac, *vip, self.router).to_vec()
                }
            };
            for _ in 0..count {
                // SAFETY: a valid buffer and a sockaddr_ll of the given length.
                let sent = unsafe {
                    libc::sendto(
                        self.fd.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&raw const to).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    )
                };
                if sent < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// An interface as the instance needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub mac: [u8; 6],
    /// Administratively up and running (carrier): keepalived's test.
    pub up: bool,
    /// IPv4 addresses and prefixes, primary first as the kernel lists them.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
    /// IPv6 addresses and prefixes, as the kernel lists them.
    pub ipv6: Vec<(Ipv6Addr, u8)>,
}

impl LinkInfo {
    /// The interface's own IPv4 address: the first that is not a virtual one.
    pub fn primary_address(&self, vips: &[Vip]) -> Option<Ipv4Addr> {
        self.ipv4.iter().map(|(a, _)| *a).find(|a| !vips.iter().any(|v| v.address == *a))
    }

    /// The interface's IPv6 link-local address (VRRPv3's source over IPv6).
    pub fn link_local6(&self) -> Option<Ipv6Addr> {
        self.ipv6.iter().map(|(a, _)| *a).find(|a| is_link_local6(*a))
    }

    /// Whether `address` is on the interface.
    pub fn has(&self, address: IpAddr) -> bool {
        match address {
            IpAddr::V4(a) => self.ipv4.iter().any(|(x, _)| *x == a),
            IpAddr::V6(a) => self.ipv6.iter().any(|(x, _)| *x == a),
        }
    }
}

/// rtnetlink requests for one instance.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens an rtnetlink socket in this thread's network namespace; needs a
    /// tokio runtime.
    pub fn open() -> Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection().context("open rtnetlink socket")?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// `None` when there is no such interface.
    pub async fn link(&self, name: &str) -> Result<Option<LinkInfo>> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        let link = match links.try_next().await {
            Ok(Some(link)) => link,
            Ok(None) => return Ok(None),
            // ENODEV comes back as an error.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("look up interface {name}")),
        };
        let index = link.header.index;
        let flags = link.header.flags;
        let up = flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running);
        let mac = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(bytes) if bytes.len() == 6 => <[u8; 6]>::try_from(&bytes[..]).ok(),
                _ => None,
            })
            .unwrap_or_default();
        let (mut ipv4, mut ipv6) = (Vec::new(), Vec::new());
        for msg in self.addresses(index).await? {
            match local_address(&msg) {
                Some(IpAddr::V4(a)) => ipv4.push((a, msg.header.prefix_len)),
                Some(IpAddr::V6(a)) => ipv6.push((a, msg.header.prefix_len)),
                None => {}
            }
        }
        Ok(Some(LinkInfo { index, mac, up, ipv4, ipv6 }))
    }

    async fn addresses(&self, index: u32) -> Result<Vec<AddressMessage>> {
        let mut list = Vec::new();
        let mut addrs = self.handle.address().get().set_link_index_filter(index).execute();
        while let Some(msg) = addrs.try_next().await.context("list addresses")? {
            // The filter is applied by rtnetlink, not always by the kernel.
            if msg.header.index == index {
                list.push(msg);
            }
        }
        Ok(list)
    }

    /// Whether the link is up and running (`false` if it is gone).
    pub async fn link_up(&self, name: &str) -> Result<bool> {
        Ok(self.link(name).await?.is_some_and(|l| l.up))
    }

    /// Adds `vip` to interface `index`; `false` if it was there already.
    ///
    /// An IPv6 address goes on as keepalived puts it: `nodad` (the backup
    /// that had it is gone, and waiting for DAD would delay the takeover)
    /// and `preferred_lft 0` (deprecated: the director's own connections
    /// never take it as their source, yet it receives as any other).
    pub async fn add_vip(&self, index: u32, vip: Vip) -> Result<bool> {
        let mut request = self.handle.address().add(index, vip.address, vip.prefix_len);
        if vip.address.is_ipv6() {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
            let mut lifetimes = CacheInfo::default();
            lifetimes.ifa_preferred = 0;
            lifetimes.ifa_valid = u32::MAX; // forever
            message.attributes.push(AddressAttribute::CacheInfo(lifetimes));
        }
        match request.execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(false),
            Err(e) => Err(anyhow!("add {vip}: {e}")),
        }
    }

    /// Removes `vip` (whatever its prefix) from interface `index`; `false` if
    /// it was not there.
    pub async fn remove_vip(&self, index: u32, vip: Vip) -> Result<bool> {
        let mut removed = false;
        for msg in self.addresses(index).await? {
            if local_address(&msg) == Some(vip.address) {
                match self.handle.address().del(msg).execute().await {
                    Ok(()) => removed = true,
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EADDRNOTAVAIL => {}
                    Err(e) => return Err(anyhow!("remove {vip}: {e}")),
                }
            }
        }
        Ok(removed)
    }
}

/// An address message's address: IFA_LOCAL if any (IPv4's own address on
/// a point-to-point link), else IFA_ADDRESS (IPv6 has only that).
fn local_address(msg: &AddressMessage) -> Option<IpAddr> {
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => return Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    address
}
