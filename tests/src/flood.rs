//! A SYN flood from a host of the lab: spoofed sources, every SYN a new
//! flow, sent by one thread as fast as a packet socket takes them (the
//! highest rate the lab reaches), for the tests that need lbd's connection
//! table full and churning.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};

use crate::lab::HOST_IFACE;
use crate::netns::{MacAddr, run_in_netns};
use crate::packets::{PacketSpec, fix_ipv4_checksum, tcp};

/// Sources of the flood: 100.64.0.0/10 (shared address space, routed
/// nowhere in the lab), one address per SYN before ports vary.
const SOURCE_BASE: u32 = 0x6440_0000;
const SOURCE_BITS: u32 = 22;

/// Ethernet + IPv4 header offsets of the frames.
const IP: usize = 14;
const TCP: usize = IP + 20;

/// A running flood; stopped when [`SynFlood::stop`]ped or dropped.
pub struct SynFlood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    started: Instant,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

/// What a flood sent.
#[derive(Clone, Copy, Debug)]
pub struct FloodStats {
    pub sent: u64,
    pub seconds: f64,
}

impl FloodStats {
    pub fn per_second(&self) -> f64 {
        self.sent as f64 / self.seconds.max(1e-9)
    }
}

impl SynFlood {
    /// Starts sending SYNs to `target` out of eth0 of namespace `ns`, in
    /// frames from `from_mac` to `to_mac` (the director's, which answers
    /// ARP for the VIP).
    pub fn start(
        ns: &str,
        from_mac: MacAddr,
        to_mac: MacAddr,
        target: SocketAddrV4,
    ) -> Result<SynFlood> {
        // A socket belongs to the namespace it was opened in.
        let socket = run_in_netns(ns, packet_socket)??;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let mut frame = PacketSpec::tcp(
            SocketAddrV4::new(Ipv4Addr::from(SOURCE_BASE), 1024),
            target,
            tcp::SYN,
        )
        .build();
        frame[0..6].copy_from_slice(&to_mac.0);
        frame[6..12].copy_from_slice(&from_mac.0);
        let thread = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::Builder::new()
                .name("syn-flood".into())
                .spawn(move || send_loop(&socket, frame, &stop, &sent))?
        };
        Ok(SynFlood {
            stop,
            sent,
            started: Instant::now(),
            thread: Some(thread),
        })
    }

    /// SYNs sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn stop(mut self) -> Result<FloodStats> {
        self.stop.store(true, Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64();
        let thread = self.thread.take().expect("running");
        thread
            .join()
            .map_err(|_| anyhow!("the flood thread panicked"))??;
        Ok(FloodStats {
            sent: self.sent(),
            seconds,
        })
    }
}

impl Drop for SynFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A raw packet socket bound to eth0 of the calling thread's namespace,
/// for sending only, past the qdisc.
fn packet_socket() -> Result<OwnedFd> {
    let name = std::ffi::CString::new(HOST_IFACE)?;
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error()).context(HOST_IFACE);
    }
    // SAFETY: plain syscall; protocol 0: the socket receives nothing.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("packet socket");
    }
    // SAFETY: `raw` is a fresh fd nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    let len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: a valid sockaddr_ll of that length.
    if unsafe { libc::bind(socket.as_raw_fd(), (&raw const addr).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error()).context("bind the packet socket");
    }
    let on: libc::c_int = 1;
    // SAFETY: an int option. Without it the frames queue in the qdisc
    // (and are dropped there) when the sender outruns the veth.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Ok(socket)
}

fn send_loop(
    socket: &OwnedFd,
    mut frame: Vec<u8>,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> Result<()> {
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..256 {
            let source = SOURCE_BASE | (n as u32 & ((1 << SOURCE_BITS) - 1));
            let port = 1024 + ((n >> SOURCE_BITS) % 60_000) as u16;
            frame[IP + 12..IP + 16].copy_from_slice(&source.to_be_bytes());
            frame[TCP..TCP + 2].copy_from_slice(&port.to_be_bytes());
            fix_ipv4_checksum(&mut frame, IP);
            fix_tcp_checksum(&mut frame);
            // SAFETY: a valid buffer of that length.
            let r =
                unsafe { libc::send(socket.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if r > 0 {
                sent.fetch_add(1, Ordering::Relaxed);
            } else {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ENOBUFS) && e.raw_os_error() != Some(libc::EAGAIN)
                {
                    return Err(e).context("send a flood frame");
                }
            }
            n += 1;
        }
    }
    Ok(())
}

/// The TCP checksum of a frame's header (no payload), over the IPv4
/// pseudo-header.
fn fix_tcp_checksum(frame: &mut [u8]) {
    frame[TCP + 16] = 0;
    frame[TCP + 17] = 0;
    let len = (frame.len() - TCP) as u32;
    let mut sum: u32 = 6 + len;
    for chunk in frame[IP + 12..IP + 20]
        .chunks(2)
        .chain(frame[TCP..].chunks(2))
    {
        sum += u32::from(u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[TCP + 16..TCP + 18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_checksums_match_etherparse() {
        let src = SocketAddrV4::new(Ipv4Addr::new(100, 64, 3, 7), 4242);
        let dst = SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 100), 81);
        let built = PacketSpec::tcp(src, dst, tcp::SYN).build();
        let mut ours = built.clone();
        fix_tcp_checksum(&mut ours);
        assert_eq!(ours, built);
    }
}
