//! ICMP errors about a VIP's connections in the namespace lab (issue 11):
//! a "fragmentation needed" sent to the VIP about a real server's answer
//! reaches that real server, by DR and by TUN, and no other; and the
//! director's ICMP rate limit from the config reaches the datapath.
//!
//! The client stands in for the router on the way back: it sends the error
//! with a raw socket, quoting the answer VIP:80 → client:port of a
//! connection it holds open; each real server watches with a raw ICMP
//! socket (which sees every ICMP packet the host receives, the VIP's
//! included).
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs root.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use lb_tests::director::{Director, ServiceSpec};
use lb_tests::netns::{run_in_netns, spawn_in_netns};
use lb_tests::packets::{PacketSpec, frag_needed, tcp};
use lb_tests::scenario::{finish, lab_with_servers, root_or_skip, start_configured, tun_lab, vip80};
use lb_tests::{Host, Lab, scaled};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
const MTU: u16 = 1280;

/// A raw ICMP socket in the calling thread's namespace.
fn icmp_socket() -> OwnedFd {
    // SAFETY: plain syscall; the fd is owned right after the check.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Watches `host` for `wait`: true if a "fragmentation needed" quoting a
/// segment to `client` arrived there. Returns at once; join for the answer.
fn watch_for_frag_needed(host: &Host, client: SocketAddrV4, wait: Duration) -> std::thread::JoinHandle<bool> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let watcher = spawn_in_netns(&host.ns, move || async move {
        let sock = icmp_socket();
        let timeout = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
        // SAFETY: a valid timeval of the given size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        ready_tx.send(()).unwrap();
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            // SAFETY: a valid buffer of the given length.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                continue;
            }
            let p = &buf[..n as usize];
            let ihl = ((p[0] & 0x0f) as usize) * 4;
            let (icmp, quote) = (&p[ihl..], &p[ihl + 8..]);
            if icmp.len() < 8 + 28 || (icmp[0], icmp[1]) != (3, 4) {
                continue;
            }
            let qihl = ((quote[0] & 0x0f) as usize) * 4;
            let to = Ipv4Addr::new(quote[16], quote[17], quote[18], quote[19]);
            let port = u16::from_be_bytes([quote[qihl + 2], quote[qihl + 3]]);
            if to == *client.ip() && port == client.port() && u16::from_be_bytes([icmp[6], icmp[7]]) == MTU {
                return true;
            }
        }
        false
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("the watcher's socket is open");
    watcher
}

/// Sends, from the client, "fragmentation needed" to the VIP about the
/// answer VIP:80 → `client` (a 1500-byte segment with DF).
fn send_frag_needed(lab: &Lab, client: SocketAddrV4) {
    let vip = vip80(lab);
    let answer = PacketSpec::tcp(vip, client, tcp::ACK).payload(&[0; 1460]).ip_bytes();
    let frame = frag_needed(lab.client().ip, *vip.ip(), MTU, &answer);
    // The kernel writes the IP header; the socket takes the ICMP message.
    let message = frame[14 + 20..].to_vec();
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(vip.ip().octets()) },
        sin_zero: [0; 8],
    };
    run_in_netns(&lab.client().ns, move || {
        let sock = icmp_socket();
        // SAFETY: a valid buffer and sockaddr_in of the given sizes.
        let sent = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(sent, message.len() as isize, "sendto: {}", std::io::Error::last_os_error());
    })
    .unwrap();
}

/// With a connection held from the client: the error about its answers
/// reaches its real server, and only that one.
fn the_error_reaches_the_connections_server(lab: &Lab, director: &Director) {
    let held = lab.hold_http_connection(&lab.client().ns, vip80(lab)).unwrap();
    let before = director.counters().unwrap();
    let watchers: Vec<(String, std::thread::JoinHandle<bool>)> = lab
        .reals()
        .iter()
        .map(|real| (real.name.clone(), watch_for_frag_needed(real, held.local, scaled(Duration::from_secs(3)))))
        .collect();
    send_frag_needed(lab, held.local);
    let seen: Vec<(String, bool)> = watchers.into_iter().map(|(name, w)| (name, w.join().unwrap())).collect();
    let after = director.counters().unwrap();
    let forwarded = |k: &str| after[k] - before[k];
    for (name, arrived) in &seen {
        assert_eq!(
            *arrived,
            *name == held.server,
            "{name} (the connection is {}'s): {seen:?}\ncounters before {before:?}\nafter {after:?}\nlbd log:\n{}",
            held.server,
            director.log()
        );
    }
    assert_eq!(forwarded("tx_dr_icmp_error") + forwarded("tx_tun_icmp_error"), 1, "{after:?}");
    held.close();
}

#[test]
fn frag_needed_about_a_dr_connection_reaches_its_real_server() {
    if !root_or_skip("icmp_lab dr") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "icmp-dr", 140, 2);
    let mut director = Director::new(&lab).unwrap();
    director.director_setting("icmp_rate_limit = 250");
    let director = start_configured(director, &[ServiceSpec::lab_http(&lab, "rr")]);

    // The config's limit is in the datapath's director entry.
    let entry = pinned_director(&director.pin_path);
    assert_eq!((entry.icmp_rate_limit, entry.icmp_burst), (250, 12));

    the_error_reaches_the_connections_server(&lab, &director);
    finish(director);
}

#[test]
fn frag_needed_about_a_tun_connection_reaches_its_real_server() {
    if !root_or_skip("icmp_lab tun") {
        return;
    }
    // Real servers behind a router, unwrapping with lbd's decap program.
    let lab = tun_lab(LAB_SERVER, "icmp-tun", 141);
    let director =
        start_configured(Director::new(&lab).unwrap(), &[ServiceSpec::lab_http(&lab, "rr").forwarding("tun")]);

    the_error_reaches_the_connections_server(&lab, &director);
    finish(director);
}

/// The datapath's director entry, from lbd's pinned map.
fn pinned_director(pin_path: &Path) -> lb_common::Director {
    let mut dirs = vec![pin_path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n == lb_common::map_name::DIRECTOR) {
                let data = aya::maps::MapData::from_pin(&path).unwrap();
                let array: aya::maps::Array<_, lb_common::Director> =
                    aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
                return array.get(&0, 0).unwrap();
            }
        }
    }
    panic!("no pinned DIRECTOR under {}", pin_path.display());
}
