//! Two network namespaces joined by a veth pair, for the tests of the VRRP
//! and sync I/O (root only; the tests skip themselves otherwise). Removed
//! on drop, also when a test fails.

use std::{
    fs::File,
    future::Future,
    os::fd::AsRawFd,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Namespace `a` holds `va` with 192.0.2.1/24, namespace `b` holds `vb`
/// with 192.0.2.2/24.
pub(crate) struct TestNet {
    pub a: String,
    pub b: String,
    children: Vec<Child>,
}

pub(crate) const ADDR_A: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 0, 2, 1);
pub(crate) const ADDR_B: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 0, 2, 2);

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl TestNet {
    /// `None` (and a note on stderr) when namespaces cannot be made here.
    pub(crate) fn new(tag: &str) -> Option<Self> {
        // SAFETY: plain syscall.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root for network namespaces");
            return None;
        }
        let id = std::process::id();
        let net = Self { a: format!("lbt-{tag}-{id}-a"), b: format!("lbt-{tag}-{id}-b"), children: Vec::new() };
        for ns in [&net.a, &net.b] {
            let _ = ip(&["netns", "delete", ns]);
        }
        let setup = || -> Result<(), String> {
            ip(&["netns", "add", &net.a])?;
            ip(&["netns", "add", &net.b])?;
            ip(&["link", "add", "va", "netns", &net.a, "type", "veth", "peer", "name", "vb", "netns", &net.b])?;
            for (ns, dev, addr) in [(&net.a, "va", "192.0.2.1/24"), (&net.b, "vb", "192.0.2.2/24")] {
                ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
                ip(&["-n", ns, "link", "set", dev, "up"])?;
                ip(&["-n", ns, "link", "set", "lo", "up"])?;
            }
            Ok(())
        };
        if let Err(e) = setup() {
            eprintln!("skipped: cannot set up namespaces: {e}");
            return None;
        }
        Some(net)
    }

    /// `ip -n NS ARGS`.
    pub(crate) fn ip(&self, ns: &str, args: &[&str]) -> String {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        ip(&all).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Whether `addr` is on `dev` in `ns`.
    pub(crate) fn has_address(&self, ns: &str, dev: &str, addr: &str) -> bool {
        self.ip(ns, &["-4", "-o", "addr", "show", "dev", dev])
            .split_whitespace()
            .any(|w| w.split('/').next() == Some(addr))
    }

    /// Starts `cmd` inside `ns` (nsenter), killed when the net is dropped.
    pub(crate) fn spawn_in(&mut self, ns: &str, args: &[&str], log: &std::path::Path) -> u32 {
        let file = File::create(log).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg("--")
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Stops a child started with [`Self::spawn_in`] with SIGTERM and waits.
    pub(crate) fn terminate(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let mut child = self.children.remove(i);
            // SAFETY: kill(2) on a child of ours that has not been reaped.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.a, &self.b] {
            // Whatever our children left behind (keepalived's VRRP child).
            if let Ok(pids) = ip(&["netns", "pids", ns]) {
                for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                    if pid != std::process::id() as i32 {
                        // SAFETY: kill(2) on a process in a namespace this test made.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = ip(&["netns", "delete", ns]);
        }
    }
}

/// Runs `f` on a new thread inside namespace `ns`, on a current-thread tokio
/// runtime of its own; sockets it opens belong to `ns`.
pub(crate) fn spawn_in_netns<T, F, Fut>(ns: &str, f: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let file = File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: plain syscall on a valid fd; it moves only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(f())
    })
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns how
/// long it took, or `None`.
pub(crate) fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
