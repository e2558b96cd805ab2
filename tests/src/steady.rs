//! Traffic that must not notice what happens to the directors (a failover,
//! a restart of lbd): held connections asked again and again, new
//! connections in a loop, and the TCP resets from the VIP the client sees.
//!
//! Used by `tests/failover_order.rs` and `tests/restart.rs`. Like
//! [`crate::scenario`]'s helpers, these panic on a broken lab.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};

use crate::lab::HOST_IFACE;
use crate::netns;
use crate::{HeldConnection, Lab, ProcHandle};

// ---- resets from the VIP, as the client sees them ---------------------------

/// tcpdump in the client's namespace, recording every TCP segment with RST
/// set that comes from the VIP.
pub struct RstWatch<'a> {
    lab: &'a Lab,
    tcpdump: ProcHandle,
}

impl<'a> RstWatch<'a> {
    /// Starts the capture; returns once tcpdump listens.
    pub fn start(lab: &'a Lab) -> RstWatch<'a> {
        let filter = format!("src host {} and tcp[tcpflags] & tcp-rst != 0", lab.vip());
        let tcpdump = lab
            .spawn(
                &lab.client().ns,
                "tcpdump-rst",
                &[
                    "tcpdump", "-i", HOST_IFACE, "-n", "-l", "-p", "-Q", "in", &filter,
                ],
            )
            .unwrap();
        let deadline = Instant::now() + crate::scaled(Duration::from_secs(5));
        while !lab.read_log(&tcpdump).contains("listening on") {
            assert!(
                Instant::now() < deadline && lab.is_running(&tcpdump),
                "tcpdump did not start: {}",
                lab.read_log(&tcpdump)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        RstWatch { lab, tcpdump }
    }

    /// The resets seen so far, one tcpdump line each.
    pub fn resets(&self) -> Vec<String> {
        self.lab
            .read_log(&self.tcpdump)
            .lines()
            .filter(|l| l.contains(" > ") && l.contains("Flags [R"))
            .map(str::to_owned)
            .collect()
    }

    /// Stops the capture (what it printed stays, flushed); the resets seen.
    pub fn stop(self) -> Vec<String> {
        // A packet still in tcpdump's buffer is printed before it exits.
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.lab.stop(&self.tcpdump);
        self.resets()
    }
}

// ---- held connections, asked again and again --------------------------------

/// What happened to the held connections while [`Asking`] ran.
#[derive(Debug, Default)]
pub struct AskReport {
    /// Requests answered.
    pub answered: u64,
    /// Connections that broke (error, or answered by another server), with why.
    pub broken: Vec<Broken>,
}

/// A connection that broke, and why.
type Broken = (SocketAddrV4, String);

/// Threads asking `/whoami` on held connections, each on its share, round
/// and round, until stopped. Every answer must come from the server that
/// answered when the connection was opened.
pub struct Asking {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    threads: Vec<JoinHandle<(Vec<HeldConnection>, Vec<Broken>)>>,
}

impl Asking {
    /// Starts `threads` threads over `conns` (in the client's namespace
    /// already: the sockets were opened there).
    pub fn start(conns: Vec<HeldConnection>, threads: usize) -> Asking {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let mut shares: Vec<Vec<HeldConnection>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, c) in conns.into_iter().enumerate() {
            shares[i % threads].push(c);
        }
        let threads = shares
            .into_iter()
            .map(|mut share| {
                let (stop, answered) = (stop.clone(), answered.clone());
                std::thread::spawn(move || {
                    let mut broken = Vec::new();
                    let mut ok = vec![true; share.len()];
                    while !stop.load(Ordering::Relaxed) {
                        for (c, ok) in share.iter_mut().zip(ok.iter_mut()).filter(|(_, ok)| **ok) {
                            match ask_same_server(c) {
                                Ok(()) => {
                                    answered.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    broken.push((c.local, format!("{e:#}")));
                                    *ok = false;
                                }
                            }
                        }
                    }
                    (share, broken)
                })
            })
            .collect();
        Asking {
            stop,
            answered,
            threads,
        }
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Stops the threads; the connections (still open) and what happened.
    pub fn stop(self) -> (Vec<HeldConnection>, AskReport) {
        self.stop.store(true, Ordering::Relaxed);
        let mut conns = Vec::new();
        let mut report = AskReport {
            answered: 0,
            broken: Vec::new(),
        };
        for t in self.threads {
            let (share, broken) = t.join().expect("an asking thread panicked");
            conns.extend(share);
            report.broken.extend(broken);
        }
        report.answered = self.answered.load(Ordering::Relaxed);
        (conns, report)
    }
}

/// `/whoami` on a held connection, answered by its own server.
fn ask_same_server(c: &mut HeldConnection) -> Result<()> {
    c.stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let body = c.ask("/whoami")?;
    let server = body.split_whitespace().next().unwrap_or_default();
    ensure!(
        server == c.server,
        "answered by {server}, opened on {}",
        c.server
    );
    Ok(())
}

// ---- new connections in a loop ------------------------------------------------

/// One GET through `target` on a new connection (HTTP/1.1, close); the body.
pub fn get_once(target: SocketAddrV4, timeout: Duration) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&target.into(), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(
        format!("GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP answer: {answer:?}"))?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body.trim().to_owned())
}

/// What [`NewConnections`] saw.
#[derive(Debug, Default)]
pub struct NewReport {
    pub answered: u64,
    /// (time since the loop started, error) of each failed request.
    pub failed: Vec<(Duration, String)>,
}

/// A client opening a new connection through the VIP every `every`, from
/// the client's namespace, until stopped.
pub struct NewConnections {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<NewReport>>,
    thread: Option<JoinHandle<()>>,
}

impl NewConnections {
    pub fn start(lab: &Lab, target: SocketAddrV4, every: Duration) -> NewConnections {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(NewReport::default()));
        let thread = {
            let (stop, report) = (stop.clone(), report.clone());
            let ns = lab.client().ns.clone();
            std::thread::spawn(move || {
                netns::run_in_netns(&ns, move || {
                    let began = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let result = get_once(target, Duration::from_secs(2));
                        let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                        match result {
                            Ok(_) => r.answered += 1,
                            Err(e) => r.failed.push((began.elapsed(), format!("{e:#}"))),
                        }
                        drop(r);
                        std::thread::sleep(every);
                    }
                })
                .expect("the new-connection loop's namespace");
            })
        };
        NewConnections {
            stop,
            report,
            thread: Some(thread),
        }
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answered
    }

    /// Stops the loop; what it saw.
    pub fn stop(mut self) -> NewReport {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.report.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for NewConnections {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
