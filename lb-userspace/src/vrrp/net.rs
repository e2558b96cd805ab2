//! VRRP's I/O: adverts on a raw IPv4 socket (protocol 112), gratuitous ARPs
//! on a packet socket, virtual addresses and link state through rtnetlink.

use std::{
    ffi::CString,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Context as _, Result, anyhow};
use futures_util::TryStreamExt as _;
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkFlags},
};
use rtnetlink::Handle;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, SockFilter, Socket, Type};
use tokio::io::{Interest, unix::AsyncFd};

use super::{
    config::Vip,
    packet::{Advert, IPPROTO_VRRP, VRRP_GROUP, VRRP_TTL, gratuitous_arp},
};

/// keepalived's TOS for adverts (IPTOS_PREC_INTERNETCONTROL).
const TOS_INTERNETCONTROL: u32 = 0xc0;

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
pub struct AdvertSocket {
    send: AsyncFd<Socket>,
    recv: AsyncFd<Socket>,
    source: Ipv4Addr,
    destinations: Vec<Ipv4Addr>,
}

impl AdvertSocket {
    /// `unicast_peers` empty: multicast to 224.0.0.18. Needs CAP_NET_RAW and
    /// a tokio runtime.
    pub fn open(interface: &str, ifindex: u32, source: Ipv4Addr, unicast_peers: &[Ipv4Addr]) -> io::Result<Self> {
        let raw = || -> io::Result<Socket> {
            let s = Socket::new(Domain::IPV4, Type::RAW.cloexec(), Some(Protocol::from(i32::from(IPPROTO_VRRP))))?;
            s.bind_device(Some(interface.as_bytes()))?;
            s.set_nonblocking(true)?;
            Ok(s)
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
        let destinations = if unicast_peers.is_empty() { vec![VRRP_GROUP] } else { unicast_peers.to_vec() };
        // SAFETY: each socket owns its fd, and the AsyncFd owns the socket
        // for its whole life, so the fd stays open and the same.
        let (send, recv) = unsafe { (AsyncFd::register(send)?, AsyncFd::register(recv)?) };
        Ok(Self { send, recv, source, destinations })
    }

    /// The source address of our adverts.
    pub fn source(&self) -> Ipv4Addr {
        self.source
    }

    /// Sends `advert` to the group, or to every unicast peer (the v3
    /// checksum differs by destination). Stops at the first error.
    pub async fn send(&self, advert: &Advert) -> io::Result<()> {
        for &dst in &self.destinations {
            let bytes = advert.encode(self.source, dst);
            let to = SockAddr::from(SocketAddrV4::new(dst, 0));
            self.send.async_io(Interest::WRITABLE, |s| s.send_to(&bytes, &to)).await?;
        }
        Ok(())
    }

    /// Receives one packet, IP header included, into `buf`; returns its length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv
            .async_io(Interest::READABLE, |s| {
                // SAFETY: recv only writes initialized bytes into the buffer;
                // viewing &mut [u8] as &mut [MaybeUninit<u8>] is sound.
                let uninit = unsafe { &mut *(std::ptr::from_mut::<[u8]>(buf) as *mut [std::mem::MaybeUninit<u8>]) };
                s.recv(uninit)
            })
            .await
    }
}

/// Gratuitous ARPs from the interface's MAC, as keepalived sends them (see
/// [`gratuitous_arp`]).
pub struct GarpSender {
    fd: OwnedFd,
    ifindex: u32,
    mac: [u8; 6],
}

impl GarpSender {
    /// A packet socket that sends only (protocol 0: it receives nothing).
    pub fn open(ifindex: u32, mac: [u8; 6]) -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is owned right after the check.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd, ifindex, mac })
    }

    /// Sends `count` gratuitous ARPs for each address.
    pub fn send(&self, vips: &[Ipv4Addr], count: u32) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
        to.sll_ifindex = self.ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        for vip in vips {
            let frame = gratuitous_arp(self.mac, *vip);
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
}

impl LinkInfo {
    /// The interface's own address: the first that is not a virtual one.
    pub fn primary_address(&self, vips: &[Vip]) -> Option<Ipv4Addr> {
        self.ipv4.iter().map(|(a, _)| *a).find(|a| !vips.iter().any(|v| v.address == *a))
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
        let mut ipv4 = Vec::new();
        for msg in self.addresses(index).await? {
            if let Some(a) = local_v4(&msg) {
                ipv4.push((a, msg.header.prefix_len));
            }
        }
        Ok(Some(LinkInfo { index, mac, up, ipv4 }))
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
    pub async fn add_vip(&self, index: u32, vip: Vip) -> Result<bool> {
        match self.handle.address().add(index, IpAddr::V4(vip.address), vip.prefix_len).execute().await {
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
            if local_v4(&msg) == Some(vip.address) {
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

fn local_v4(msg: &AddressMessage) -> Option<Ipv4Addr> {
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(IpAddr::V4(a)) => return Some(*a),
            AddressAttribute::Address(IpAddr::V4(a)) => address = Some(*a),
            _ => {}
        }
    }
    address
}
