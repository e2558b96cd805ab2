//! The sync sockets: the master's sender and the backup's receiver.
//!
//! As IPVS's (`make_send_sock`, `make_receive_sock` in ip_vs_sync.c): the
//! sender is bound to the interface's own address (`bind_mcastif_addr`),
//! so every datagram leaves from the address its header names; the
//! receiver is bound to the group (unicast: to our address), so it hears
//! the group's datagrams and nothing sent to the port on another address.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::AsRawFd as _,
    sync::Arc,
};

use lb_common::FlowKey;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::{net::UdpSocket, sync::mpsc};
use tracing::{debug, warn};

use super::{
    accept::Acceptor,
    config::{SyncConfig, Transport},
    stats::{SyncStats, more_since},
    table::{Batch, SendOutcome},
    wire::{Encoder, Header, SyncRecord},
};
use crate::vrrp::net::if_index;

fn setsockopt_int(socket: &Socket, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid int option of the given length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Sets IP_MULTICAST_IF by interface index (ip_mreqn), so the sender needs
/// no address of its own to name the interface.
fn set_multicast_if_index(socket: &Socket, ifindex: u32) -> io::Result<()> {
    let mreqn = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex as i32,
    };
    // SAFETY: a valid ip_mreqn of the given length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&raw const mreqn).cast(),
            std::mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// A UDP socket bound to the sync interface, for sending.
fn interface_socket(config: &SyncConfig) -> io::Result<Socket> {
    let ifindex = if_index(&config.interface)?;
    let socket = Socket::new(Domain::IPV4, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    socket.bind_device(Some(config.interface.as_bytes()))?;
    socket.set_multicast_ttl_v4(1)?;
    socket.set_multicast_loop_v4(false)?;
    set_multicast_if_index(&socket, ifindex)?;
    Ok(socket)
}

/// This director's sync address: `sync.address`, else the one the kernel
/// gives datagrams to the group (unicast: to the first peer) on the
/// interface, its primary address, as IPVS's `inet_select_addr`.
pub fn local_address(config: &SyncConfig) -> io::Result<Ipv4Addr> {
    if let Some(a) = config.address {
        return Ok(a);
    }
    let socket = interface_socket(config)?;
    let to = match config.transport {
        Transport::Multicast => config.group,
        Transport::Unicast => config.peers.first().copied().unwrap_or(config.group),
    };
    socket.connect(&SockAddr::from(SocketAddrV4::new(to, config.port)))?;
    match socket.local_addr()?.as_socket() {
        Some(SocketAddr::V4(a)) if !a.ip().is_unspecified() => Ok(*a.ip()),
        _ => Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("no IPv4 address on {} to send sync from (set sync.address)", config.interface),
        )),
    }
}

/// Reads and discards what IP_RECVERR queued on the socket's error queue.
fn drain_error_queue(socket: &UdpSocket) {
    let mut buf = [0u8; 256];
    for _ in 0..64 {
        // SAFETY: recv into a buffer of its length.
        let n = unsafe {
            libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT)
        };
        if n < 0 {
            return;
        }
    }
}

/// The master's side: packs records into datagrams and sends them to the
/// group (TTL 1, on the interface) or to every peer.
pub struct SyncSender {
    socket: UdpSocket,
    address: Ipv4Addr,
    destinations: Vec<SocketAddr>,
    encoder: Encoder,
    stats: Arc<SyncStats>,
}

impl SyncSender {
    /// Needs a tokio runtime. `stats` is shared with the receiver and the
    /// daemon.
    pub fn open(config: &SyncConfig, stats: Arc<SyncStats>) -> io::Result<Self> {
        let address = local_address(config)?;
        let socket = interface_socket(config)?;
        socket.bind(&SockAddr::from(SocketAddrV4::new(address, 0))).map_err(|e| {
            io::Error::new(e.kind(), format!("bind {address} on {}: {e}", config.interface))
        })?;
        // Local drops (a full device queue) fail the send instead of being
        // counted by the kernel alone: their records are sent again.
        setsockopt_int(&socket, libc::IPPROTO_IP, libc::IP_RECVERR, 1)?;
        socket.set_nonblocking(true)?;
        let destinations = match config.transport {
            Transport::Multicast => vec![SocketAddr::from((config.group, config.port))],
            Transport::Unicast => config.peers.iter().map(|p| SocketAddr::from((*p, config.port))).collect(),
        };
        let key = config.key_bytes();
        Ok(Self {
            socket: UdpSocket::from_std(socket.into())?,
            address,
            destinations,
            encoder: Encoder::new(config.sync_id, config.max_len, key, address, Encoder::new_boot_id(None)),
            stats,
        })
    }

    pub fn stats(&self) -> Arc<SyncStats> {
        self.stats.clone()
    }

    /// The address datagrams leave from (and their origin).
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The next datagram's header (sync ID, origin, boot ID, last sequence).
    pub fn header(&self) -> Header {
        self.encoder.header()
    }

    /// Sends `records` now, in as few datagrams as fit. Returns the records
    /// whose datagram did not go out to every destination (to be sent
    /// again), and the last error.
    pub async fn send(&mut self, records: &[SyncRecord]) -> (Vec<usize>, Option<io::Error>) {
        let datagrams = self.encoder.encode_spans(records);
        let mut failed = Vec::new();
        let mut last_error = None;
        for d in &datagrams {
            let mut ok = true;
            for to in &self.destinations {
                match self.socket.send_to(&d.bytes, to).await {
                    Ok(_) => SyncStats::add(&self.stats.datagrams_sent, 1),
                    Err(e) => {
                        SyncStats::add(&self.stats.send_errors, 1);
                        if e.raw_os_error().is_some() {
                            drain_error_queue(&self.socket);
                        }
                        last_error = Some(e);
                        ok = false;
                    }
                }
            }
            if ok {
                SyncStats::add(&self.stats.records_sent, d.records.len());
            } else {
                failed.extend(d.records.clone());
            }
        }
        (failed, last_error)
    }

    /// Sends what arrives on `queue` until it closes, and reports each
    /// batch's fate on `outcomes`. Whatever is queued when the sender wakes
    /// up goes out together, packed.
    pub async fn run(mut self, mut queue: mpsc::Receiver<Batch>, outcomes: mpsc::UnboundedSender<SendOutcome>) {
        while let Some(first) = queue.recv().await {
            let mut batches = vec![first.id];
            let mut records = first.records;
            while let Ok(more) = queue.try_recv() {
                batches.push(more.id);
                records.extend(more.records);
            }
            let (failed, error) = self.send(&records).await;
            let failed: Vec<FlowKey> = failed.into_iter().map(|i| records[i].flow_key()).collect();
            if failed.is_empty() {
                debug!(records = records.len(), "sync sent");
            } else {
                SyncStats::add(&self.stats.records_unsent, failed.len());
                if let Some(suppressed) = self.stats.should_log("send") {
                    let e = error.map_or_else(String::new, |e| e.to_string());
                    warn!(
                        "connection sync: send: {e}; {} entries will be sent again{}",
                        failed.len(),
                        more_since(suppressed)
                    );
                }
            }
            if outcomes.send(SendOutcome { batches, failed }).is_err() {
                return;
            }
        }
    }
}

/// What one accepted datagram carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedBatch {
    pub from: SocketAddr,
    pub header: Header,
    pub records: Vec<SyncRecord>,
}

/// The backup's side: takes datagrams to the group (or our address) from
/// the configured peers only, with the right sync ID and key, each once.
pub struct SyncReceiver {
    socket: UdpSocket,
    acceptor: Acceptor,
    stats: Arc<SyncStats>,
    buf: Vec<u8>,
}

impl SyncReceiver {
    /// Binds the group's port (and joins the group) on the interface, or,
    /// for the unicast transport, our address's. Needs a tokio runtime.
    pub fn open(config: &SyncConfig, stats: Arc<SyncStats>) -> io::Result<Self> {
        let ifindex = if_index(&config.interface)?;
        let bound = match config.transport {
            Transport::Multicast => config.group,
            Transport::Unicast => local_address(config)?,
        };
        let socket = Socket::new(Domain::IPV4, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.bind_device(Some(config.interface.as_bytes()))?;
        socket.bind(&SockAddr::from(SocketAddrV4::new(bound, config.port))).map_err(|e| {
            io::Error::new(e.kind(), format!("bind {bound}:{} on {}: {e}", config.port, config.interface))
        })?;
        if config.transport == Transport::Multicast {
            socket.join_multicast_v4_n(&config.group, &InterfaceIndexOrAddress::Index(ifindex))?;
        }
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket: UdpSocket::from_std(socket.into())?,
            acceptor: Acceptor::new(config.sync_id, config.key_bytes(), config.peers.clone()),
            stats,
            buf: vec![0; 65_536],
        })
    }

    pub fn stats(&self) -> Arc<SyncStats> {
        self.stats.clone()
    }

    /// The next accepted datagram; rejected ones are counted (by reason)
    /// and skipped, and logged at a bounded rate.
    pub async fn recv(&mut self) -> io::Result<ReceivedBatch> {
        loop {
            let (n, from) = self.socket.recv_from(&mut self.buf).await?;
            match self.acceptor.accept(from.ip(), &self.buf[..n]) {
                Ok((header, records)) => {
                    SyncStats::add(&self.stats.datagrams_received, 1);
                    SyncStats::add(&self.stats.records_received, records.len());
                    return Ok(ReceivedBatch { from, header, records });
                }
                Err(e) => {
                    self.stats.count(&format!("sync_rejected_{}", e.name()), 1);
                    let text = format!("from {from}: {e}");
                    if let Some(suppressed) = self.stats.should_log(e.name()) {
                        warn!("connection sync: dropped a datagram {text}{}", more_since(suppressed));
                    }
                    *self.stats.last_rejected.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
                }
            }
        }
    }

    /// Hands every accepted datagram to `out` until it closes.
    pub async fn run(mut self, out: mpsc::Sender<ReceivedBatch>) {
        loop {
            match self.recv().await {
                Ok(batch) => {
                    if out.send(batch).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!("connection sync: receive: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

