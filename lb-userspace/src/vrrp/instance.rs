//! One VRRP instance as a tokio task: the state machine of [`super::state`]
//! driven by the adverts of [`super::net`], its timers and the link states,
//! with its status readable from outside.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, anyhow};
use lb_ipvsadm::vrrp::VrrpStatus;
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use super::{
    config::{TrackService, VrrpConfig},
    net::{AdvertSocket, GarpSender, Netlink, forwards_ipv6},
    packet::{AUTH_NONE, AUTH_SIMPLE, Advert, Expect, IpHeader, Version, parse_ip, simple_auth_data},
    resume::{self, Left},
    state::{Action, Event, GarpReason, Machine, NotifyKind, State},
};
use crate::{
    log_limit::{self, LogLimiter},
    process::{self, RunError},
};

/// How often tracked interfaces are looked at.
pub const LINK_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// A `notify_*` command still running after this is killed.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(60);

enum Command {
    ServiceAlive {
        index: usize,
        alive: bool,
    },
    Shutdown,
    /// Stop for a restart: a master sends one last advert; the addresses
    /// stay; what it was goes back.
    LeaveForRestart(oneshot::Sender<Left>),
}

/// How an instance has the datapath forward its addresses' services
/// (`true`, on becoming master) or stand them by (`false`, once they are
/// off the interface); returns once the datapath does. It runs on a
/// blocking thread.
pub type ForwardHook = Arc<dyn Fn(bool) + Send + Sync>;

/// How an instance starts, beyond its config.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// Called for [`Action::Forward`] and [`Action::StandBy`]; none: the
    /// instance only moves addresses (as in the VRRP tests).
    pub forward: Option<ForwardHook>,
    /// Resume as master (see [`super::resume`]) if the first advert can go
    /// out before this, and the addresses are still on the interface.
    pub resume: Option<Instant>,
}

/// A running instance. Dropping it stops the instance cleanly in the
/// background (priority 0 if master, addresses removed); [`Self::shutdown`]
/// does the same and waits; [`Self::abort`] stops it dead, as a crash would.
pub struct VrrpInstance {
    config: VrrpConfig,
    status: watch::Receiver<VrrpStatus>,
    commands: mpsc::UnboundedSender<Command>,
    task: Option<JoinHandle<()>>,
}

impl VrrpInstance {
    /// Looks up the interface, opens the sockets and starts the task. Fails
    /// when the interface does not exist or has no IPv4 address of its own
    /// (the adverts' source; an IPv6 instance: no link-local address), or
    /// without CAP_NET_RAW / CAP_NET_ADMIN.
    pub async fn start(config: VrrpConfig) -> Result<Self> {
        Self::start_with(config, StartOptions::default()).await
    }

    /// [`Self::start`], with the datapath's hook.
    pub async fn start_with(config: VrrpConfig, options: StartOptions) -> Result<Self> {
        let netlink = Netlink::open()?;
        let link = netlink
            .link(&config.interface)
            .await?
            .ok_or_else(|| anyhow!("no interface named \"{}\"", config.interface))?;
        // The address owner (priority 255) may have nothing but the virtual
        // address: then that is its own, and it is never removed.
        let owner_address = || (config.priority == 255).then(|| link.ipv4.first().map(|(a, _)| *a)).flatten();
        let source: IpAddr = if config.is_ipv6() {
            // RFC 5798 §5.1.2.1: the interface's link-local address.
            link.link_local6().ok_or_else(|| {
                anyhow!("interface {} has no IPv6 link-local address to send VRRP adverts from", config.interface)
            })?
            .into()
        } else {
            link.primary_address(&config.virtual_ipaddress).or_else(owner_address).ok_or_else(|| {
                anyhow!("interface {} has no IPv4 address of its own to send VRRP adverts from", config.interface)
            })?
            .into()
        };
        let socket = AdvertSocket::open(&config.interface, link.index, source, &config.unicast_peer)
            .with_context(|| format!("open VRRP socket on {}", config.interface))?;
        // Each address's interface (the instance's, or its `dev`), and a
        // gratuitous-ARP (neighbour advertisement) sender per interface.
        let mut links = vec![(config.interface.clone(), link.clone())];
        let mut vip_ifindex = Vec::new();
        for vip in &config.virtual_ipaddress {
            let dev_link = match &vip.dev {
                None => link.clone(),
                Some(dev) => {
                    let dev_link =
                        netlink.link(dev).await?.ok_or_else(|| anyhow!("no interface named \"{dev}\" ({vip})"))?;
                    if !links.iter().any(|(_, l)| l.index == dev_link.index) {
                        links.push((dev.clone(), dev_link.clone()));
                    }
                    dev_link
                }
            };
            vip_ifindex.push(dev_link.index);
        }
        let garps = links
            .iter()
            .map(|(name, l)| {
                let router = config.is_ipv6() && forwards_ipv6(name);
                Ok((l.index, GarpSender::open(l.index, l.mac, router).context("open ARP socket")?))
            })
            .collect::<Result<Vec<_>>>()?;
        let missing: Vec<_> = config
            .virtual_ipaddress
            .iter()
            .zip(&vip_ifindex)
            .filter(|(v, index)| !links.iter().any(|(_, l)| l.index == **index && l.has(v.address)))
            .map(|(v, _)| v)
            .collect();
        let resume = match options.resume {
            Some(_) if !missing.is_empty() => {
                info!(
                    instance = %config.name,
                    "not resuming as master: {} no longer on {}",
                    missing.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "),
                    config.interface
                );
                None
            }
            resume => resume,
        };
        let now = Instant::now();
        let machine = Machine::new(config.params(), source, now);
        let status = VrrpStatus {
            name: config.name.clone(),
            interface: config.interface.clone(),
            vrid: config.vrid,
            version: config.version.number(),
            state: State::Init,
            priority: config.priority,
            effective_priority: machine.effective_priority(),
            master_address: None,
            source_address: source,
            since: SystemTime::now(),
            transitions: 0,
            adverts_sent: 0,
            adverts_received: 0,
            bad_adverts: 0,
            last_bad_advert: None,
            bad_adverts_by_reason: Default::default(),
            last_error: None,
        };
        let (status_tx, status_rx) = watch::channel(status);
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (notify_tx, notify_rx) = mpsc::unbounded_channel();
        tokio::spawn(run_notifies(notify_rx));
        let runner = Runner {
            expect: config.expect(),
            service_alive: vec![true; config.track_service.len()],
            link_up: config.tracked_interfaces().into_iter().map(|i| (i, None)).collect(),
            config: config.clone(),
            machine,
            socket,
            garps,
            vip_ifindex,
            netlink,
            status: status_tx,
            notify: notify_tx,
            log: LogLimiter::new(log_limit::DEFAULT_PERIOD),
            last_mismatch: None,
            forward: options.forward,
            resume,
            last_advert_ns: 0,
        };
        let task = tokio::spawn(runner.run(command_rx));
        Ok(Self { config, status: status_rx, commands, task: Some(task) })
    }

    pub fn config(&self) -> &VrrpConfig {
        &self.config
    }

    pub fn status(&self) -> VrrpStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change (state, priority, master).
    pub fn watch(&self) -> watch::Receiver<VrrpStatus> {
        self.status.clone()
    }

    /// The tracked services, in config order (the index for
    /// [`Self::set_service_alive`]).
    pub fn tracked_services(&self) -> &[TrackService] {
        &self.config.track_service
    }

    /// Whether `track_service[index]` has a live real server. Every tracked
    /// service starts alive.
    pub fn set_service_alive(&self, index: usize, alive: bool) {
        let _ = self.commands.send(Command::ServiceAlive { index, alive });
    }

    /// Stops cleanly (a master sends priority 0 and removes its addresses)
    /// and waits for it.
    pub async fn shutdown(mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops for a restart of lbd: a master sends one last advert, so that
    /// the backups' master-down timers start again from now; nothing else
    /// (no priority 0, the addresses stay). What it was, for the next lbd
    /// ([`super::resume`]).
    pub async fn leave_for_restart(mut self) -> Option<Left> {
        let (reply, left) = oneshot::channel();
        let _ = self.commands.send(Command::LeaveForRestart(reply));
        let left = left.await.ok();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        left
    }

    /// Stops at once, as a crash: no priority 0, the addresses stay.
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for VrrpInstance {
    fn drop(&mut self) {
        // The command channel closes with us: the task stops cleanly.
        let _ = self.commands.send(Command::Shutdown);
    }
}

struct Runner {
    config: VrrpConfig,
    expect: Expect,
    machine: Machine,
    socket: AdvertSocket,
    /// A gratuitous-ARP sender per interface with virtual addresses.
    garps: Vec<(u32, GarpSender)>,
    /// The interface of each virtual address, in config order.
    vip_ifindex: Vec<u32>,
    netlink: Netlink,
    service_alive: Vec<bool>,
    /// Tracked interfaces and their last known state.
    link_up: Vec<(String, Option<bool>)>,
    status: watch::Sender<VrrpStatus>,
    notify: mpsc::UnboundedSender<NotifyJob>,
    /// What the link sends us is logged at a bounded rate: one line per
    /// kind of bad advert per period, with a count.
    log: LogLimiter<&'static str>,
    /// The last advert interval mismatch logged: sender and interval.
    last_mismatch: Option<(IpAddr, u16)>,
    forward: Option<ForwardHook>,
    /// Resume as master if still before this (see [`StartOptions`]).
    resume: Option<Instant>,
    /// When the last advert went out (`CLOCK_BOOTTIME`, ns; 0: none yet).
    last_advert_ns: u64,
}

impl Runner {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        self.poll_links().await;
        let start = match self.resume.take() {
            Some(until) if Instant::now() < until => {
                info!(instance = %self.config.name, "resumes as master: the lbd before this one left for a restart");
                Event::Resume
            }
            Some(_) => {
                info!(instance = %self.config.name, "not resuming as master: too late, the backup may have taken over");
                Event::Startup
            }
            None => Event::Startup,
        };
        self.feed(start).await;
        let mut buf = vec![0u8; 4096];
        let mut links = tokio::time::interval(LINK_POLL_INTERVAL);
        links.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.machine.next_deadline();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::ServiceAlive { index, alive }) => {
                        if let Some(slot) = self.service_alive.get_mut(index) {
                            *slot = alive;
                            let event = self.tracking();
                            self.feed(event).await;
                        }
                    }
                    Some(Command::Shutdown) | None => break,
                    Some(Command::LeaveForRestart(reply)) => {
                        let _ = reply.send(self.leave_for_restart().await);
                        return;
                    }
                },
                received = self.socket.recv(&mut buf) => match received {
                    Ok((n, ip)) => self.packet(ip, &buf[..n.min(buf.len())]).await,
                    Err(e) => {
                        self.error(format!("receive: {e}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = sleep_until(deadline) => self.feed(Event::Timer).await,
                _ = links.tick() => {
                    self.poll_links().await;
                    for line in self.log.due(Instant::now()) {
                        warn!(instance = %self.config.name, "{line}");
                    }
                }
            }
        }
        self.feed(Event::Shutdown).await;
        info!(instance = %self.config.name, "VRRP instance stopped");
    }

    /// [`VrrpInstance::leave_for_restart`]: the last advert, and what this
    /// instance was.
    async fn leave_for_restart(&mut self) -> Left {
        let master = self.machine.state() == State::Master;
        if master {
            self.act(Action::SendAdvert { priority: self.machine.effective_priority() }).await;
        }
        info!(
            instance = %self.config.name,
            "VRRP instance left for a restart, {}",
            if master { "master: its addresses stay" } else { "not master" }
        );
        Left {
            name: self.config.name.clone(),
            interface: self.config.interface.clone(),
            vrid: self.config.vrid,
            vips: self.config.virtual_ipaddress.iter().map(|v| v.address).collect(),
            master,
            advert_interval_ms: self.config.advert_interval.as_millis() as u64,
            last_advert_ns: self.last_advert_ns,
        }
    }

    fn tracking(&self) -> Event {
        let mut priority_delta = 0;
        let mut fault = false;
        for (track, alive) in self.config.track_service.iter().zip(&self.service_alive) {
            let (delta, faults) = track.effect(*alive);
            priority_delta += delta;
            fault |= faults;
        }
        Event::Tracking { priority_delta, fault }
    }

    async fn poll_links(&mut self) {
        for i in 0..self.link_up.len() {
            let name = self.link_up[i].0.clone();
            let up = match self.netlink.link_up(&name).await {
                Ok(up) => up,
                Err(e) => {
                    self.error(format!("link state of {name}: {e:#}"));
                    continue;
                }
            };
            if self.link_up[i].1 != Some(up) {
                if self.link_up[i].1.is_some() {
                    info!(instance = %self.config.name, interface = %name, up, "tracked interface changed");
                }
                self.link_up[i].1 = Some(up);
                self.feed(Event::Link { interface: name, up }).await;
            }
        }
    }

    /// A received packet: IPv4 with its header; IPv6 the VRRP payload, its
    /// header apart.
    async fn packet(&mut self, ip6: Option<IpHeader>, packet: &[u8]) {
        let now = Instant::now();
        let checked = match &ip6 {
            Some(ip) => self.expect.check(ip, packet).map(|advert| (*ip, advert)),
            None => self.expect.check_packet(packet),
        };
        match checked {
            Ok((ip, _)) if ip.src == self.socket.source() => {}
            Ok((ip, advert)) => {
                self.status.send_modify(|s| s.adverts_received += 1);
                if advert.interval_cs != self.expect.interval_cs {
                    self.interval_mismatch(ip.src, advert.interval_cs, now);
                }
                self.feed(Event::Advert { from: ip.src, priority: advert.priority, interval_cs: advert.interval_cs })
                    .await;
            }
            Err(e) if e.is_bad() => {
                let from = ip6.map(|ip| Ok(ip.src)).unwrap_or_else(|| parse_ip(packet).map(|(ip, _)| ip.src));
                let from = from.map(|a| a.to_string()).unwrap_or_default();
                let text = format!("from {from}: {e}");
                if let Some(line) = self.log.event(e.kind(), now, || format!("bad VRRP advert {text}")) {
                    warn!(instance = %self.config.name, "{line}");
                }
                let reason = e.kind().replace(' ', "_").to_lowercase();
                self.status.send_modify(|s| {
                    s.bad_adverts += 1;
                    s.last_bad_advert = Some(text);
                    *s.bad_adverts_by_reason.entry(reason).or_default() += 1;
                });
            }
            Err(_) => {}
        }
    }

    /// A VRRPv3 advert with another interval than ours (v2 refuses them):
    /// keepalived's `vrrp_check_packet` logs "advertisement interval
    /// mismatch" (rate-limited); so do we, with what the state machine
    /// takes it as when that is bounded.
    fn interval_mismatch(&mut self, from: IpAddr, theirs_cs: u16, now: Instant) {
        // Once per sender and interval: a peer configured so says so once.
        if self.last_mismatch.replace((from, theirs_cs)) == Some((from, theirs_cs)) {
            return;
        }
        let ours_cs = self.expect.interval_cs;
        let bounded = self.machine.params().bounded_interval(theirs_cs);
        // Its own kind: not a bad advert's (PacketError::kind).
        let line = self.log.event("v3 interval mismatch", now, || {
            let taken = if bounded == theirs_cs { String::new() } else { format!(", taken as {bounded}0 ms") };
            format!("advertisement interval mismatch with {from}: ours {ours_cs}0 ms, theirs {theirs_cs}0 ms{taken}")
        });
        if let Some(line) = line {
            warn!(instance = %self.config.name, "{line}");
        }
    }

    async fn feed(&mut self, event: Event) {
        let before = self.machine.state();
        let actions = self.machine.handle(event, Instant::now());
        let after = self.machine.state();
        if before != after {
            info!(instance = %self.config.name, vrid = self.config.vrid, "VRRP {before} -> {after}");
        }
        for action in actions {
            self.act(action).await;
        }
        let m = &self.machine;
        let since = SystemTime::now() - Instant::now().saturating_duration_since(m.since());
        self.status.send_modify(|s| {
            if s.state != after {
                s.transitions += 1;
            }
            s.state = after;
            s.effective_priority = m.effective_priority();
            s.master_address = m.master_address();
            s.since = since;
        });
    }

    fn advert(&self, priority: u8) -> Advert {
        let (auth_type, auth_data) = match (&self.config.auth_pass, self.config.version) {
            (Some(pass), Version::V2) => (AUTH_SIMPLE, simple_auth_data(pass)),
            _ => (AUTH_NONE, [0; 8]),
        };
        Advert {
            version: self.config.version,
            vrid: self.config.vrid,
            priority,
            interval_cs: self.config.advert_interval_cs(),
            addresses: self.config.virtual_ipaddress.iter().map(|v| v.address).collect(),
            auth_type,
            auth_data,
        }
    }

    async fn act(&mut self, action: Action) {
        let name = self.config.name.clone();
        match action {
            Action::SendAdvert { priority } => match self.socket.send(&self.advert(priority)).await {
                Ok(()) => {
                    self.last_advert_ns = resume::boottime_ns();
                    self.status.send_modify(|s| s.adverts_sent += 1);
                }
                Err(e) => self.error(format!("send advert: {e}")),
            },
            Action::Forward => self.datapath(true).await,
            Action::StandBy => self.datapath(false).await,
            Action::AddVips => {
                for (vip, index) in self.config.virtual_ipaddress.clone().into_iter().zip(self.vip_ifindex.clone()) {
                    match self.netlink.add_vip(index, vip.clone()).await {
                        Ok(added) => debug!(instance = %name, %vip, added, "virtual address on"),
                        Err(e) => self.error(format!("{e:#}")),
                    }
                }
            }
            Action::RemoveVips => {
                let own = self.socket.source();
                let vips = self.config.virtual_ipaddress.clone().into_iter().zip(self.vip_ifindex.clone());
                for (vip, index) in vips.filter(|(v, _)| v.address != own) {
                    match self.netlink.remove_vip(index, vip.clone()).await {
                        Ok(removed) => debug!(instance = %name, %vip, removed, "virtual address off"),
                        Err(e) => self.error(format!("{e:#}")),
                    }
                }
            }
            Action::SendGarps { count, reason } => {
                if reason == GarpReason::SplitBrain {
                    info!(instance = %name, "another master with a lower priority: staying master, gratuitous ARPs again");
                }
                let mut failed = Vec::new();
                for (index, garp) in &self.garps {
                    let vips: Vec<_> = self
                        .config
                        .virtual_ipaddress
                        .iter()
                        .zip(&self.vip_ifindex)
                        .filter(|(_, i)| *i == index)
                        .map(|(v, _)| v.address)
                        .collect();
                    if let Err(e) = garp.send(&vips, count) {
                        failed.push(format!("send gratuitous ARPs: {e}"));
                    }
                }
                for e in failed {
                    self.error(e);
                }
            }
            Action::Notify(kind) => {
                let command = match kind {
                    NotifyKind::Master => &self.config.notify_master,
                    NotifyKind::Backup => &self.config.notify_backup,
                    NotifyKind::Fault => &self.config.notify_fault,
                };
                if let Some(command) = command {
                    let state = match kind {
                        NotifyKind::Master => "MASTER",
                        NotifyKind::Backup => "BACKUP",
                        NotifyKind::Fault => "FAULT",
                    };
                    let env = vec![
                        ("LB_VRRP_INSTANCE", self.config.name.clone()),
                        ("LB_VRRP_STATE", state.to_string()),
                        ("LB_VRRP_VRID", self.config.vrid.to_string()),
                        ("LB_VRRP_INTERFACE", self.config.interface.clone()),
                        ("LB_VRRP_PRIORITY", self.machine.effective_priority().to_string()),
                    ];
                    let _ = self.notify.send((kind, command.clone(), env));
                }
            }
        }
    }

    /// Has the datapath forward (or stand by) and waits until it does, for
    /// one advert interval at most: the adverts wait meanwhile, and a
    /// datapath that takes longer (its lock held by a long walk of the
    /// connection table) gets it done anyway, after the addresses moved.
    async fn datapath(&self, forward: bool) {
        let Some(hook) = self.forward.clone() else { return };
        let bound = self.config.advert_interval;
        let task = tokio::task::spawn_blocking(move || hook(forward));
        if tokio::time::timeout(bound, task).await.is_err() {
            let what = if forward { "forward" } else { "stand by" };
            warn!(instance = %self.config.name, "the datapath did not {what} within {bound:?}; going on");
        }
    }

    /// Records an I/O error; logs it when it differs from the last one.
    fn error(&self, message: String) {
        if self.status.borrow().last_error.as_deref() != Some(message.as_str()) {
            warn!(instance = %self.config.name, "{message}");
        }
        self.status.send_modify(|s| s.last_error = Some(message));
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// A notify command: its kind, the command, its environment.
type NotifyJob = (NotifyKind, String, Vec<(&'static str, String)>);

/// Runs notify commands one after the other (so they run in the order the
/// states changed), each with `sh -c` and a time limit (past it, the
/// command and everything it started are killed), apart from the instance
/// so that a slow one never delays an advert.
async fn run_notifies(mut queue: mpsc::UnboundedReceiver<NotifyJob>) {
    while let Some((kind, command, env)) = queue.recv().await {
        let mut cmd = process::shell(&command);
        cmd.envs(env);
        match process::run(cmd, NOTIFY_TIMEOUT).await {
            Ok(status) if status.success() => debug!(?kind, %command, "notify done"),
            Ok(status) => warn!(?kind, %command, %status, "notify command failed"),
            Err(RunError::Wait(e)) => warn!(?kind, %command, "notify command: {e}"),
            Err(RunError::TimedOut) => warn!(?kind, %command, "notify command killed after {NOTIFY_TIMEOUT:?}"),
            Err(RunError::Spawn(e)) => warn!(?kind, %command, "cannot run notify command: {e}"),
        }
    }
}
