//! What the checks share: a TCP connection from the check's source
//! address, an I/O error in a few words, randomness.

use std::{
    hash::{BuildHasher, Hasher},
    io,
    net::SocketAddr,
};

use tokio::{
    net::{TcpSocket, TcpStream},
    time::{Instant, timeout_at},
};

use super::Failure;
use crate::health::config::HealthCheck;

/// A TCP connection from the check's source address, by `deadline`. A
/// socket it cannot create or bind, and a connect error that is not the
/// server's ([`is_server_failure`]), are [`Failure::NotChecked`].
pub(super) async fn connect(check: &HealthCheck, target: SocketAddr, deadline: Instant) -> Result<TcpStream, Failure> {
    let socket = if target.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .map_err(|e| Failure::NotChecked(format!("cannot create a socket: {}", io_reason(&e))))?;
    if let Some(source) = check.source_address {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| Failure::NotChecked(format!("cannot bind to {source}: {}", io_reason(&e))))?;
    }
    match timeout_at(deadline, socket.connect(target)).await {
        Err(_) => Err(Failure::Server("connect timeout".into())),
        Ok(Err(e)) => Err(failure(&e, |reason| reason.to_string(), |reason| format!("cannot connect: {reason}"))),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// Whether an I/O error on the way to the server is the server's (or the
/// network's) failure; any other is the director's (no local port left, a
/// local firewall, no buffers). keepalived's `socket_connect` (layer4.c)
/// draws the line here: these errors are "a failure to connect rather than
/// a failure to run the check".
pub(super) fn is_server_failure(e: &io::Error) -> bool {
    match e.raw_os_error() {
        Some(code) => [
            libc::ENETUNREACH,
            libc::EHOSTUNREACH,
            libc::ECONNREFUSED,
            libc::EHOSTDOWN,
            libc::ENETDOWN,
            libc::ECONNRESET,
            libc::ECONNABORTED,
            libc::ETIMEDOUT,
        ]
        .contains(&code),
        // Not the kernel's: judged as before, against the server.
        None => true,
    }
}

/// The [`Failure`] of `e`, its reason in a few words put into words by
/// `server` or `not_checked`.
pub(super) fn failure(
    e: &io::Error,
    server: impl FnOnce(&str) -> String,
    not_checked: impl FnOnce(&str) -> String,
) -> Failure {
    let reason = io_reason(e);
    if is_server_failure(e) { Failure::Server(server(&reason)) } else { Failure::NotChecked(not_checked(&reason)) }
}

/// The few words of an I/O error, without "(os error N)".
pub(super) fn io_reason(e: &io::Error) -> String {
    use io::ErrorKind::*;
    let words = match e.kind() {
        ConnectionRefused => "connection refused",
        ConnectionReset => "connection reset",
        ConnectionAborted => "connection aborted",
        HostUnreachable => "host unreachable",
        NetworkUnreachable => "network unreachable",
        AddrNotAvailable => "address not available",
        AddrInUse => "address in use",
        UnexpectedEof => "connection closed",
        PermissionDenied => "permission denied",
        _ => {
            let text = e.to_string();
            return match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
        }
    };
    words.to_string()
}

/// Randomness enough for ICMP identifiers and start-up spreading.
pub(crate) fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}
