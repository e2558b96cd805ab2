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

use crate::health::config::HealthCheck;

/// A TCP connection from the check's source address, by `deadline`.
pub(super) async fn connect(check: &HealthCheck, target: SocketAddr, deadline: Instant) -> Result<TcpStream, String> {
    let socket = if target.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .map_err(|e| format!("cannot create a socket: {}", io_reason(&e)))?;
    if let Some(source) = check.source_address {
        socket.bind(SocketAddr::new(source, 0)).map_err(|e| format!("cannot bind to {source}: {}", io_reason(&e)))?;
    }
    match timeout_at(deadline, socket.connect(target)).await {
        Err(_) => Err("connect timeout".into()),
        Ok(Err(e)) => Err(io_reason(&e)),
        Ok(Ok(stream)) => Ok(stream),
    }
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
