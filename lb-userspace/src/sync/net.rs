//! The sync sockets: the master's sender and the backup's receiver.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::{net::UdpSocket, sync::mpsc};
use tracing::{debug, warn};

use super::{
    config::{SyncConfig, Transport},
    wire::{Acceptor, Encoder, Header, SyncRecord},
};
use crate::vrrp::net::if_index;

/// Counters of one endpoint, shared with whoever shows them.
#[derive(Debug, Default)]
pub struct SyncStats {
    pub datagrams_sent: AtomicU64,
    pub records_sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub datagrams_received: AtomicU64,
    pub records_received: AtomicU64,
    /// Datagrams dropped: not from a peer, bad MAC, wrong sync ID, replays,
    /// malformed.
    pub rejected: AtomicU64,
    pub last_rejected: Mutex<Option<String>>,
}

/// A copy of [`SyncStats`], for `lbctl`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncCounters {
    pub datagrams_sent: u64,
    pub records_sent: u64,
    pub send_errors: u64,
    pub datagrams_received: u64,
    pub records_received: u64,
    pub rejected: u64,
    pub last_rejected: Option<String>,
}

impl SyncStats {
    pub fn snapshot(&self) -> SyncCounters {
        SyncCounters {
            datagrams_sent: Self::get(&self.datagrams_sent),
            records_sent: Self::get(&self.records_sent),
            send_errors: Self::get(&self.send_errors),
            datagrams_received: Self::get(&self.datagrams_received),
            records_received: Self::get(&self.records_received),
            rejected: Self::get(&self.rejected),
            last_rejected: self.last_rejected.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Sets IP_MULTICAST_IF by interface index (ip_mreqn), so the sender needs
/// no address of its own to name the interface.
fn set_multicast_if_index(socket: &Socket, ifindex: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
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

/// The master's side: packs records into datagrams and sends them to the
/// group (TTL 1, on the interface) or to every peer.
pub struct SyncSender {
    socket: UdpSocket,
    destinations: Vec<SocketAddr>,
    encoder: Encoder,
    stats: Arc<SyncStats>,
}

impl SyncSender {
    /// Needs a tokio runtime.
    pub fn open(config: &SyncConfig) -> io::Result<Self> {
        let ifindex = if_index(&config.interface)?;
        let socket = Socket::new(Domain::IPV4, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
        socket.bind_device(Some(config.interface.as_bytes()))?;
        socket.set_multicast_ttl_v4(1)?;
        socket.set_multicast_loop_v4(false)?;
        set_multicast_if_index(&socket, ifindex)?;
        socket.bind(&SockAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))?;
        socket.set_nonblocking(true)?;
        let destinations = match config.transport {
            Transport::Multicast => vec![SocketAddr::from((config.group, config.port))],
            Transport::Unicast => config.peers.iter().map(|p| SocketAddr::from((*p, config.port))).collect(),
        };
        Ok(Self {
            socket: UdpSocket::from_std(socket.into())?,
            destinations,
            encoder: Encoder::new(config.sync_id, config.max_len, config.key_bytes(), Encoder::random_boot_id()),
            stats: Arc::default(),
        })
    }

    pub fn stats(&self) -> Arc<SyncStats> {
        self.stats.clone()
    }

    /// The next datagram's header (sync ID, boot ID, last sequence).
    pub fn header(&self) -> Header {
        self.encoder.header()
    }

    /// Sends `records` now, in as few datagrams as fit; returns how many
    /// datagrams went out (to each destination). Send errors are counted and
    /// the rest is still tried; the last one is returned.
    pub async fn send(&mut self, records: &[SyncRecord]) -> io::Result<usize> {
        let datagrams = self.encoder.encode(records);
        let mut result = Ok(datagrams.len());
        for d in &datagrams {
            for to in &self.destinations {
                match self.socket.send_to(d, to).await {
                    Ok(_) => SyncStats::add(&self.stats.datagrams_sent, 1),
                    Err(e) => {
                        SyncStats::add(&self.stats.send_errors, 1);
                        result = Err(e);
                    }
                }
            }
        }
        SyncStats::add(&self.stats.records_sent, records.len());
        result
    }

    /// Sends what arrives on `queue` until it closes. Whatever is queued when
    /// the sender wakes up goes out together, packed.
    pub async fn run(mut self, mut queue: mpsc::Receiver<Vec<SyncRecord>>) {
        let mut last_error = None;
        while let Some(mut batch) = queue.recv().await {
            while let Ok(more) = queue.try_recv() {
                batch.extend(more);
            }
            match self.send(&batch).await {
                Ok(n) => {
                    debug!(records = batch.len(), datagrams = n, "sync sent");
                    last_error = None;
                }
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_deref() != Some(text.as_str()) {
                        warn!("connection sync: send: {text}");
                    }
                    last_error = Some(text);
                }
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

/// The backup's side: takes datagrams from the configured peers only, with
/// the right sync ID and key, each once.
pub struct SyncReceiver {
    socket: UdpSocket,
    acceptor: Acceptor,
    stats: Arc<SyncStats>,
    buf: Vec<u8>,
}

impl SyncReceiver {
    /// Binds the port on the interface (and joins the group on it for the
    /// multicast transport). Needs a tokio runtime.
    pub fn open(config: &SyncConfig) -> io::Result<Self> {
        let ifindex = if_index(&config.interface)?;
        let socket = Socket::new(Domain::IPV4, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.bind_device(Some(config.interface.as_bytes()))?;
        socket.bind(&SockAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, config.port)))?;
        if config.transport == Transport::Multicast {
            socket.join_multicast_v4_n(&config.group, &InterfaceIndexOrAddress::Index(ifindex))?;
        }
        socket.set_nonblocking(true)?;
        let peers = config.peers.iter().map(|p| IpAddr::V4(*p)).collect();
        Ok(Self {
            socket: UdpSocket::from_std(socket.into())?,
            acceptor: Acceptor::new(config.sync_id, config.key_bytes(), peers),
            stats: Arc::default(),
            buf: vec![0; 65_536],
        })
    }

    pub fn stats(&self) -> Arc<SyncStats> {
        self.stats.clone()
    }

    /// The next accepted datagram; rejected ones are counted and skipped.
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
                    SyncStats::add(&self.stats.rejected, 1);
                    let text = format!("from {from}: {e}");
                    let mut last = self.stats.last_rejected.lock().unwrap_or_else(|p| p.into_inner());
                    if last.as_deref() != Some(text.as_str()) {
                        warn!("connection sync: dropped a datagram {text}");
                    }
                    *last = Some(text);
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
