//! PING_CHECK: one ICMP echo request, up when the reply comes back by the
//! deadline.
//!
//! A raw ICMP socket needs CAP_NET_RAW (lbd runs as root); without it an
//! unprivileged ICMP datagram socket ("ping socket") is tried, which needs
//! the group in net.ipv4.ping_group_range.

use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    net::UdpSocket,
    time::{Instant, timeout_at},
};

use super::{
    Failure,
    net::{failure, io_reason, random_u64},
};
use crate::{config::check::fmt_duration, health::config::HealthCheck};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// A socket it cannot open or bind, and a send or receive error that is
/// not the server's, are [`Failure::NotChecked`].
pub(super) async fn check(check: &HealthCheck, target: IpAddr, deadline: Instant) -> Result<(), Failure> {
    let (socket, raw) = open(target, check.source_address).map_err(Failure::NotChecked)?;
    let random = random_u64();
    let ident = random as u16;
    let seq = (random >> 16) as u16;
    // The payload tells our reply from others' (a raw socket sees every
    // ICMP packet, a datagram socket rewrites the identifier).
    let token = random.to_be_bytes();
    let request = echo_request(target.is_ipv6(), ident, seq, &token);

    let sending = |reason: &str| format!("sending the echo request: {reason}");
    match timeout_at(deadline, socket.send_to(&request, SocketAddr::new(target, 0))).await {
        Err(_) => return Err(Failure::Server("timeout sending the echo request".into())),
        Ok(Err(e)) => return Err(failure(&e, sending, sending)),
        Ok(Ok(_)) => {}
    }
    let waiting = |reason: &str| format!("waiting for the echo reply: {reason}");
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = match timeout_at(deadline, socket.recv_from(&mut buf)).await {
            Err(_) => {
                return Err(Failure::Server(format!("no echo reply within {}", fmt_duration(check.connect_timeout))));
            }
            Ok(Err(e)) => return Err(failure(&e, waiting, waiting)),
            Ok(Ok(received)) => received,
        };
        if from.ip() != target {
            continue;
        }
        let mut packet = &buf[..n];
        // Raw IPv4 sockets deliver the IP header too.
        if raw && target.is_ipv4() {
            let header_len = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
            packet = packet.get(header_len..).unwrap_or_default();
        }
        if is_our_reply(packet, target.is_ipv6(), raw.then_some(ident), seq, &token) {
            return Ok(());
        }
    }
}

/// A nonblocking ICMP socket, raw if allowed, and whether it is raw.
fn open(target: IpAddr, source: Option<IpAddr>) -> Result<(UdpSocket, bool), String> {
    let (domain, protocol) = match target {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let (socket, raw) = match Socket::new(domain, Type::RAW, Some(protocol)) {
        Ok(socket) => (socket, true),
        Err(raw_error) => match Socket::new(domain, Type::DGRAM, Some(protocol)) {
            Ok(socket) => (socket, false),
            Err(dgram_error) => {
                return Err(format!(
                    "cannot open an ICMP socket (raw: {}; datagram: {}, see net.ipv4.ping_group_range)",
                    io_reason(&raw_error),
                    io_reason(&dgram_error)
                ));
            }
        },
    };
    socket.set_nonblocking(true).map_err(|e| format!("ICMP socket: {}", io_reason(&e)))?;
    if let Some(source) = source {
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .map_err(|e| format!("cannot bind to {source}: {}", io_reason(&e)))?;
    }
    // tokio has no ICMP socket; its UdpSocket's send_to/recv_from are plain
    // sendto/recvfrom, which is all a datagram-like ICMP socket needs.
    let socket = UdpSocket::from_std(socket.into()).map_err(|e| format!("ICMP socket: {}", io_reason(&e)))?;
    Ok((socket, raw))
}

fn echo_request(v6: bool, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 }, 0, 0, 0];
    packet.extend_from_slice(&ident.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(payload);
    // The kernel fills in ICMPv6 checksums (they cover a pseudo-header).
    if !v6 {
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

fn is_our_reply(packet: &[u8], v6: bool, ident: Option<u16>, seq: u16, payload: &[u8]) -> bool {
    let reply = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    packet.len() >= 8 + payload.len()
        && packet[0] == reply
        && packet[1] == 0
        && ident.is_none_or(|id| packet[4..6] == id.to_be_bytes())
        && packet[6..8] == seq.to_be_bytes()
        && &packet[8..8 + payload.len()] == payload
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_packets() {
        let request = echo_request(false, 0x1234, 7, b"abcdefgh");
        assert_eq!(&request[..8], &[8, 0, request[2], request[3], 0x12, 0x34, 0, 7]);
        assert_eq!(checksum(&request), 0, "a packet with its checksum sums to zero");

        let mut reply = request.clone();
        reply[0] = ECHO_REPLY_V4;
        assert!(is_our_reply(&reply, false, Some(0x1234), 7, b"abcdefgh"));
        assert!(is_our_reply(&reply, false, None, 7, b"abcdefgh"));
        assert!(!is_our_reply(&reply, false, Some(0x1235), 7, b"abcdefgh"));
        assert!(!is_our_reply(&reply, false, None, 8, b"abcdefgh"));
        assert!(!is_our_reply(&reply, false, None, 7, b"abcdefgX"));
        assert!(!is_our_reply(&request, false, None, 7, b"abcdefgh"), "our own request is no reply");
    }
}
