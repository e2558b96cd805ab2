//! Traffic through the lab: HTTP requests, UDP requests, held-open
//! connections, ARP probes, and the interfaces' counters.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use super::{HOST_IFACE, Lab};
use crate::netns::{self, MacAddr};

/// Packet counters of one interface (see [`Lab::link_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

impl Lab {
    /// GET `url` from the client (5 s limit); the body, or an error with curl's message.
    pub fn curl(&self, url: &str) -> Result<String> {
        self.curl_from(&self.client.ns, url)
    }

    /// GET `url` from namespace `ns` (5 s limit).
    pub fn curl_from(&self, ns: &str, url: &str) -> Result<String> {
        self.run(ns, &["curl", "-sS", "--max-time", "5", url])
    }

    /// Retries GET `url` from the client until the body is `expected` or `timeout` passes.
    pub fn wait_for_http(&self, url: &str, expected: &str, timeout: Duration) -> Result<()> {
        self.wait_for_http_from(&self.client.ns, url, expected, timeout)
    }

    /// As [`Lab::wait_for_http`], asking from namespace `ns`.
    pub fn wait_for_http_from(&self, ns: &str, url: &str, expected: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.run(ns, &["curl", "-sS", "--max-time", "1", url]);
            match last {
                Ok(body) if body == expected => return Ok(()),
                _ if Instant::now() >= deadline => {
                    bail!("{url} did not answer {expected:?} within {timeout:?}; last: {last:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sends one UDP datagram from `ns` to `target` and returns the reply.
    /// The socket is connected, so a reply from any other address is ignored
    /// (as a real client would): in DR the reply must come from the VIP.
    pub fn udp_request(&self, ns: &str, target: SocketAddr, payload: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        let payload = payload.to_vec();
        netns::run_in_netns(ns, move || -> Result<Vec<u8>> {
            let any = if target.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
            let socket = UdpSocket::bind(any)?;
            socket.connect(target)?;
            socket.set_read_timeout(Some(timeout))?;
            socket.send(&payload)?;
            let mut buf = vec![0u8; 65536];
            let n = socket.recv(&mut buf).with_context(|| format!("no UDP reply from {target}"))?;
            buf.truncate(n);
            Ok(buf)
        })?
    }

    /// Opens a TCP connection from namespace `ns` to `target` (an HTTP
    /// server of the lab, usually through the VIP), asks `/whoami` on it
    /// with keep-alive and keeps it open, idle and established, until the
    /// returned [`HeldConnection`] is closed or dropped. The answer tells
    /// which real server the connection reached.
    pub fn hold_http_connection(&self, ns: &str, target: SocketAddrV4) -> Result<HeldConnection> {
        let (stream, server, local) = hold(ns, target.into())?;
        let SocketAddr::V4(local) = local else { bail!("unexpected local address {local}") };
        Ok(HeldConnection { stream, server, local })
    }

    /// [`Lab::hold_http_connection`] over IPv6.
    pub fn hold_http_connection6(&self, ns: &str, target: SocketAddrV6) -> Result<HeldConnection6> {
        let (stream, server, local) = hold(ns, target.into())?;
        let SocketAddr::V6(local) = local else { bail!("unexpected local address {local}") };
        Ok(HeldConnection6 { stream, server, local })
    }

    /// Who answers ARP for `target` on the client's segment (see [`netns::arp_probe`]).
    pub fn arp_probe_from_client(&self, target: Ipv4Addr) -> Result<Vec<MacAddr>> {
        let client = &self.client;
        netns::arp_probe(&client.ns, HOST_IFACE, (client.mac, client.ip), target, Duration::from_secs(1))
    }

    // ---- counters --------------------------------------------------------

    /// Kernel packet counters of `iface` in `ns` (`ip -s -j link`).
    pub fn link_stats(&self, ns: &str, iface: &str) -> Result<LinkStats> {
        let out = netns::ip(&["-n", ns, "-s", "-j", "link", "show", "dev", iface])?;
        let json: serde_json::Value = serde_json::from_str(&out)?;
        let stats = &json[0]["stats64"];
        let get = |dir: &str, key: &str| -> Result<u64> {
            stats[dir][key].as_u64().ok_or_else(|| anyhow!("no {dir}.{key} for {iface} in {ns}: {out}"))
        };
        Ok(LinkStats {
            rx_packets: get("rx", "packets")?,
            rx_dropped: get("rx", "dropped")?,
            tx_packets: get("tx", "packets")?,
            tx_dropped: get("tx", "dropped")?,
        })
    }

    /// Driver counters of `iface` in `ns` (`ethtool -S`), e.g. veth's
    /// `rx_queue_0_xdp_tx` and `rx_queue_0_xdp_tx_errors`.
    pub fn ethtool_stats(&self, ns: &str, iface: &str) -> Result<BTreeMap<String, u64>> {
        let out = self.run(ns, &["ethtool", "-S", iface])?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let (key, value) = line.split_once(':')?;
                Some((key.trim().to_owned(), value.trim().parse().ok()?))
            })
            .collect())
    }
}

/// An established, idle TCP connection held open by the test (see
/// [`Lab::hold_http_connection`]). Dropping it closes it (FIN).
#[derive(Debug)]
pub struct HeldConnection {
    pub stream: TcpStream,
    /// The real server that answered ("rs1", ...).
    pub server: String,
    /// The client's end.
    pub local: SocketAddrV4,
}

impl HeldConnection {
    /// Asks `path` again on the held connection (keep-alive) and returns
    /// the body of the answer; fails if the connection was reset, closed or
    /// stays silent for the read timeout (5 s unless changed on `stream`).
    pub fn ask(&mut self, path: &str) -> Result<String> {
        ask_again(&mut self.stream, path)
    }

    /// Closes the connection: the client sends its FIN.
    pub fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// [`HeldConnection`] over IPv6 (see [`Lab::hold_http_connection6`]).
#[derive(Debug)]
pub struct HeldConnection6 {
    pub stream: TcpStream,
    /// The real server that answered ("rs1", ...).
    pub server: String,
    /// The client's end.
    pub local: SocketAddrV6,
}

impl HeldConnection6 {
    /// As [`HeldConnection::ask`].
    pub fn ask(&mut self, path: &str) -> Result<String> {
        ask_again(&mut self.stream, path)
    }
}

/// Opens a connection from `ns` to `target`, asks `/whoami` with
/// keep-alive: the stream, the server that answered and the client's end.
fn hold(ns: &str, target: SocketAddr) -> Result<(TcpStream, String, SocketAddr)> {
    netns::run_in_netns(ns, move || -> Result<(TcpStream, String, SocketAddr)> {
        // The socket stays in `ns` after this thread ends.
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .with_context(|| format!("connecting to {target}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let request = format!("GET /whoami HTTP/1.1\r\nHost: {target}\r\nConnection: keep-alive\r\n\r\n");
        stream.write_all(request.as_bytes())?;
        let body = read_http_body(&mut stream).with_context(|| format!("reading the /whoami answer from {target}"))?;
        let server =
            body.split_whitespace().next().ok_or_else(|| anyhow!("empty /whoami answer from {target}"))?.to_owned();
        Ok((stream, server, local))
    })?
}

/// Asks `path` on a held connection (keep-alive); the answer's body.
fn ask_again(stream: &mut TcpStream, path: &str) -> Result<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: keep-alive\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    read_http_body(stream)
}

/// Reads one HTTP/1.1 response with a Content-Length from `stream` and
/// returns its body (nothing more is read, so the connection can stay open).
fn read_http_body(stream: &mut TcpStream) -> Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(head.len() < 64 * 1024, "response head too long");
        let n = stream.read(&mut byte)?;
        ensure!(n == 1, "connection closed inside the response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    ensure!(head.starts_with("HTTP/1.1 200"), "not a 200 answer: {head:?}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
        })
        .ok_or_else(|| anyhow!("no Content-Length in {head:?}"))?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}
