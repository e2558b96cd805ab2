//! Low-level helpers for named network namespaces (`/run/netns/NAME`, as made by
//! `ip netns add`): running commands and Rust code inside one, listing,
//! deleting, a raw ARP probe, and two namespaces joined by a veth pair
//! ([`VethPair`]).

use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// Where `ip netns add` bind-mounts named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Default limit for commands run through [`output_with_timeout`] callers.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

pub fn netns_path(ns: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(ns)
}

pub fn namespace_exists(ns: &str) -> bool {
    netns_path(ns).exists()
}

/// A command that runs `args` inside namespace `ns`.
///
/// Uses `nsenter --net=` rather than `ip netns exec`: the latter also unshares
/// the mount namespace and remounts /sys, which hides the host's bpffs at
/// /sys/fs/bpf where the load balancer pins its maps. nsenter execs the
/// target, so the child's pid is the command's own pid.
pub fn command_in<S: AsRef<OsStr>>(ns: &str, args: &[S]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns_path(ns).display()))
        .arg("--");
    cmd.args(args);
    cmd
}

/// Runs `cmd` to completion, capturing stdout and stderr, and kills it if it
/// takes longer than `timeout` (so a hung command cannot hang a test),
/// scaled for a slow machine ([`crate::scaled`]).
pub fn output_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let timeout = crate::scaled(timeout);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    // Drain both pipes on threads so a chatty command cannot block on a full pipe.
    let stdout_reader = spawn_reader(child.stdout.take());
    let stderr_reader = spawn_reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            // The readers are left detached: a grandchild may still hold the pipes.
            bail!("{cmd:?} timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = stdout_reader.join().unwrap_or_default();
    let stderr = stderr_reader.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn spawn_reader<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Runs `cmd` with a timeout and fails unless it exits successfully; returns stdout.
pub fn run_checked(cmd: Command, timeout: Duration) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = output_with_timeout(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS...` in the root namespace (use `-n NS` to target a namespace).
pub fn ip(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run_checked(cmd, DEFAULT_COMMAND_TIMEOUT)
}

/// Runs `f` on a fresh thread that has joined namespace `ns`, and returns its result.
///
/// setns(CLONE_NEWNET) only moves the calling thread, so the test process and
/// its other threads stay where they are; the thread ends when `f` returns.
/// Sockets created inside `f` belong to `ns`. (Note: /sys still shows the
/// root namespace's view; /proc/sys/net follows the thread.)
pub fn run_in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let file = File::open(netns_path(ns)).with_context(|| format!("opening namespace {ns}"))?;
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| -> Result<T> {
            // SAFETY: plain syscall on a valid fd; it changes only this thread's
            // network namespace, and this thread exists only to run `f`.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(io::Error::last_os_error()).context(format!("setns into {ns}"));
            }
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Names of all named namespaces.
pub fn list_namespaces() -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context(format!("reading {NETNS_DIR}")),
    };
    let mut names = Vec::new();
    for entry in entries {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Pids of processes whose network namespace is `ns` (via `ip netns pids`).
pub fn pids_in(ns: &str) -> Vec<i32> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "pids", ns]);
    match run_checked(cmd, DEFAULT_COMMAND_TIMEOUT) {
        Ok(out) => out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Kills every process left in `ns` (a namespace stays alive while a process
/// is in it, even once unnamed) and deletes the namespace, which destroys its
/// devices; deleting a veth end destroys its peer in the other namespace too.
pub fn delete_namespace(ns: &str) -> Result<()> {
    if !namespace_exists(ns) {
        return Ok(());
    }
    let me = std::process::id() as i32;
    for pid in pids_in(ns) {
        if pid != me {
            // SAFETY: kill(2) with a pid that `ip netns pids` found inside our namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    ip(&["netns", "delete", ns]).map(|_| ())
}

/// An Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts
                .next()
                .ok_or_else(|| anyhow!("bad MAC address {s:?}"))?;
            *byte =
                u8::from_str_radix(part, 16).with_context(|| format!("bad MAC address {s:?}"))?;
        }
        if parts.next().is_some() {
            bail!("bad MAC address {s:?}");
        }
        Ok(MacAddr(bytes))
    }
}

/// The MAC address of `iface` in `ns`, read with `ip -j link show`.
pub fn mac_of(ns: &str, iface: &str) -> Result<MacAddr> {
    let out = ip(&["-n", ns, "-j", "link", "show", "dev", iface])?;
    let json: serde_json::Value = serde_json::from_str(&out)?;
    let address = json[0]["address"]
        .as_str()
        .ok_or_else(|| anyhow!("no address for {iface} in {ns}: {out}"))?;
    address.parse()
}

const ETH_P_ARP: u16 = libc::ETH_P_ARP as u16;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// Broadcasts ARP requests for `target` out of `iface` in `ns` (a few times
/// during `wait`) and returns the distinct MAC addresses that replied.
///
/// This is how a test proves the LVS-DR ARP rules: only the director may
/// answer for the VIP, never the real servers that hold it on `lo`.
/// `sender` is the probing interface's own MAC and IPv4 address.
pub fn arp_probe(
    ns: &str,
    iface: &str,
    sender: (MacAddr, Ipv4Addr),
    target: Ipv4Addr,
    wait: Duration,
) -> Result<Vec<MacAddr>> {
    let iface = iface.to_owned();
    run_in_netns(ns, move || arp_probe_here(&iface, sender, target, wait))?
}

/// A packet socket for ARP bound to `iface` of the calling thread's
/// namespace, and the address it is bound to. SOCK_DGRAM: the kernel adds
/// and strips the Ethernet header.
fn arp_socket(iface: &str) -> Result<(OwnedFd, libc::sockaddr_ll)> {
    let c_iface = CString::new(iface)?;
    // SAFETY: valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c_iface.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error()).context(format!("no interface {iface}"));
    }
    // SAFETY: plain syscall; the fd is owned right after the check.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error()).context("packet socket");
    }
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_ARP.to_be();
    addr.sll_ifindex = ifindex as i32;
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_ll of the given length.
    if unsafe { libc::bind(sock.as_raw_fd(), (&raw const addr).cast(), len) } != 0 {
        return Err(io::Error::last_os_error()).context("binding packet socket");
    }
    Ok((sock, addr))
}

fn arp_probe_here(
    iface: &str,
    (sender_mac, sender_ip): (MacAddr, Ipv4Addr),
    target: Ipv4Addr,
    wait: Duration,
) -> Result<Vec<MacAddr>> {
    let (sock, addr) = arp_socket(iface)?;
    let addr_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    let mut broadcast = addr;
    broadcast.sll_halen = 6;
    broadcast.sll_addr[..6].copy_from_slice(&[0xff; 6]);

    let mut request = [0u8; 28];
    request[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    request[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    request[4] = 6;
    request[5] = 4;
    request[6..8].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    request[8..14].copy_from_slice(&sender_mac.0);
    request[14..18].copy_from_slice(&sender_ip.octets());
    request[24..28].copy_from_slice(&target.octets());

    let mut repliers = Vec::new();
    let start = Instant::now();
    let resend_every = Duration::from_millis(250);
    let mut next_send = start;
    while start.elapsed() < wait {
        if Instant::now() >= next_send {
            // SAFETY: valid buffer and sockaddr_ll of the given length.
            let sent = unsafe {
                libc::sendto(
                    sock.as_raw_fd(),
                    request.as_ptr().cast(),
                    request.len(),
                    0,
                    (&raw const broadcast).cast(),
                    addr_len,
                )
            };
            if sent < 0 {
                return Err(io::Error::last_os_error()).context("sending ARP request");
            }
            next_send += resend_every;
        }
        let until = next_send.min(start + wait);
        let timeout_ms = until.saturating_duration_since(Instant::now()).as_millis() as i32;
        let mut pollfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pollfd, 1, timeout_ms.max(1)) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err).context("poll");
        }
        if ready == 0 {
            continue;
        }
        let mut buf = [0u8; 128];
        // SAFETY: zeroed sockaddr_ll is valid; recvfrom fills at most `from_len` bytes.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = addr_len;
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut from).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error()).context("receiving ARP");
        }
        let packet = &buf[..n as usize];
        // Skip our own requests (the socket also sees outgoing frames).
        if from.sll_pkttype == libc::PACKET_OUTGOING || packet.len() < 28 {
            continue;
        }
        let is_reply = packet[6..8] == ARP_REPLY.to_be_bytes();
        let about_target = packet[14..18] == target.octets();
        let to_us = packet[24..28] == sender_ip.octets();
        if is_reply && about_target && to_us {
            let mac = MacAddr(packet[8..14].try_into().expect("6 bytes"));
            if !repliers.contains(&mac) {
                repliers.push(mac);
            }
        }
    }
    Ok(repliers)
}

/// One ARP packet an [`ArpWatch`] saw arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpSeen {
    /// When it was read.
    pub at: Instant,
    /// 1 request, 2 reply.
    pub op: u16,
    /// The Ethernet source of the frame.
    pub eth_source: MacAddr,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

impl ArpSeen {
    /// A gratuitous ARP: the sender announces its own address (sender and
    /// target IP are the same), as a new VRRP master does for its VIPs.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }
}

/// Records every ARP packet arriving on an interface of a namespace, from a
/// thread of its own, until stopped or dropped (see [`watch_arp`]).
pub struct ArpWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<ArpSeen>>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

/// Starts recording the ARP packets that arrive on `iface` in `ns`; returns
/// once the socket is open, so nothing sent afterwards is missed.
pub fn watch_arp(ns: &str, iface: &str) -> Result<ArpWatch> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let file = File::open(netns_path(ns)).with_context(|| format!("opening namespace {ns}"))?;
    let iface = iface.to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let thread = {
        let (stop, seen, ns) = (stop.clone(), seen.clone(), ns.to_owned());
        std::thread::spawn(move || -> Result<()> {
            let open = || -> Result<OwnedFd> {
                // SAFETY: plain syscall on a valid fd; it moves only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error()).context(format!("setns into {ns}"));
                }
                let (sock, _) = arp_socket(&iface).with_context(|| format!("in {ns}"))?;
                Ok(sock)
            };
            let sock = match open() {
                Ok(sock) => {
                    let _ = ready_tx.send(Ok(()));
                    sock
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow!("{e:#}")));
                    return Err(e);
                }
            };
            while !stop.load(Ordering::Relaxed) {
                let mut pollfd = libc::pollfd {
                    fd: sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let ready = unsafe { libc::poll(&mut pollfd, 1, 50) };
                if ready <= 0 {
                    continue;
                }
                let mut buf = [0u8; 128];
                // SAFETY: zeroed sockaddr_ll is valid; recvfrom fills at most `from_len` bytes.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                let n = unsafe {
                    libc::recvfrom(
                        sock.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                        (&raw mut from).cast(),
                        &mut from_len,
                    )
                };
                if n < 28 || from.sll_pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                let p = &buf[..n as usize];
                let ip = |at: usize| Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]);
                let arp = ArpSeen {
                    at: Instant::now(),
                    op: u16::from_be_bytes([p[6], p[7]]),
                    eth_source: MacAddr(from.sll_addr[..6].try_into().expect("6 bytes")),
                    sender_mac: MacAddr(p[8..14].try_into().expect("6 bytes")),
                    sender_ip: ip(14),
                    target_ip: ip(24),
                };
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(arp);
            }
            Ok(())
        })
    };
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(ArpWatch {
            stop,
            seen,
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => bail!("the ARP watch thread ended before it was ready"),
    }
}

impl ArpWatch {
    /// Everything seen so far, oldest first.
    pub fn seen(&self) -> Vec<ArpSeen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The gratuitous ARPs for `address` seen so far.
    pub fn gratuitous_for(&self, address: Ipv4Addr) -> Vec<ArpSeen> {
        self.seen()
            .into_iter()
            .filter(|a| a.is_gratuitous() && a.sender_ip == address)
            .collect()
    }

    /// Stops recording; returns everything seen.
    pub fn stop(mut self) -> Vec<ArpSeen> {
        self.halt();
        self.seen()
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ArpWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

// ---- two namespaces joined by a veth pair -------------------------------

/// The address of `va` in a [`VethPair`]'s namespace `a`.
pub const VETH_ADDR_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The address of `vb` in a [`VethPair`]'s namespace `b`.
pub const VETH_ADDR_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// Two network namespaces joined by a veth pair, a link much lighter than
/// a [`crate::Lab`], for the VRRP and sync tests: namespace `a` holds `va`
/// with 192.0.2.1/24, namespace `b` holds `vb` with 192.0.2.2/24. Removed
/// on drop, with any process left in them, also when a test fails.
pub struct VethPair {
    pub a: String,
    pub b: String,
}

impl VethPair {
    /// `None` (and a note on stderr) when namespaces cannot be made here.
    /// `tag` tells the namespaces of one test from another's.
    pub fn new(tag: &str) -> Option<Self> {
        if !crate::is_root() {
            eprintln!("skipped: needs root for network namespaces");
            return None;
        }
        let id = std::process::id();
        let pair = Self {
            a: format!("lbt-{tag}-{id}-a"),
            b: format!("lbt-{tag}-{id}-b"),
        };
        let setup = || -> Result<()> {
            for ns in [&pair.a, &pair.b] {
                delete_namespace(ns)?;
                ip(&["netns", "add", ns])?;
            }
            ip(&[
                "link", "add", "va", "netns", &pair.a, "type", "veth", "peer", "name", "vb",
                "netns", &pair.b,
            ])?;
            for (ns, dev, addr) in [(&pair.a, "va", VETH_ADDR_A), (&pair.b, "vb", VETH_ADDR_B)] {
                ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
                ip(&["-n", ns, "link", "set", dev, "up"])?;
                ip(&["-n", ns, "link", "set", "lo", "up"])?;
            }
            Ok(())
        };
        if let Err(e) = setup() {
            eprintln!("skipped: cannot set up namespaces: {e:#}");
            return None;
        }
        Some(pair)
    }

    /// `ip -n NS ARGS`; panics if it fails.
    pub fn ip(&self, ns: &str, args: &[&str]) -> String {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        ip(&all).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Whether `addr` is on `dev` in `ns`.
    pub fn has_address(&self, ns: &str, dev: &str, addr: &str) -> bool {
        self.ip(ns, &["-4", "-o", "addr", "show", "dev", dev])
            .split_whitespace()
            .any(|w| w.split('/').next() == Some(addr))
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            if let Err(e) = delete_namespace(ns) {
                eprintln!("deleting namespace {ns}: {e:#}");
            }
        }
    }
}

/// Runs the future `f` makes on a new thread inside namespace `ns`, on a
/// current-thread tokio runtime of its own, and returns at once; sockets it
/// opens belong to `ns`. Join the handle for its result.
pub fn spawn_in_netns<T, F, Fut>(ns: &str, f: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let file = File::open(netns_path(ns)).unwrap_or_else(|e| panic!("opening namespace {ns}: {e}"));
    std::thread::spawn(move || {
        // SAFETY: plain syscall on a valid fd; it moves only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(f())
    })
}
