//! lbd: the director. Loads the XDP datapath, fills it from the config,
//! keeps it in step with SIGHUP reloads and the network, serves lbctl.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::Parser;
use std::{collections::BTreeSet, net::Ipv4Addr};

use lb_userspace::{
    sync::{ChangeTracker, ReceivedBatch, SyncConfig, SyncReceiver, SyncRecord, SyncSender},
    vrrp::{State as VrrpState, VrrpInstance},
    commands,
    config::{self, Config},
    health::HealthMonitor,
    control,
    controller::Controller,
    datapath::{Datapath, LoadOptions},
    environment, kernel,
    netinfo::Net,
    verifier,
};
use lb_ipvsadm::{
    command::Command,
    control::{Request, Response},
    error::KernelError,
    vrrp::VrrpStatus,
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(name = "lbd", version, about = "XDP layer-4 load balancer (LVS-compatible director)")]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// The config file.
    #[arg(long, short = 'c', default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Only check the config (and that it fits this host), then exit.
    #[arg(long)]
    check: bool,
    /// Load this eBPF object instead of the built-in datapath (for tests).
    #[arg(long, hide = true)]
    datapath_object: Option<PathBuf>,
    /// With --check: also put the datapath's programs through this kernel's
    /// verifier and print its figures; fails when it refuses one.
    #[arg(long, requires = "check")]
    verify: bool,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// On a TUN real server: strip the outer header of IP-in-IP packets to
    /// this host (for hosts without the ipip module). Stays in the
    /// foreground; detaches on SIGTERM or Ctrl-C.
    Decap {
        /// The interface tunnelled packets arrive on.
        #[arg(long, short = 'i')]
        interface: String,
        /// Also accept tunnels to this address (besides the interface's own).
        #[arg(long)]
        address: Vec<std::net::Ipv4Addr>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LBD_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        // Logs go to stderr (stdout is for --check's verdict), coloured
        // only on a terminal.
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let result = runtime.map_err(anyhow::Error::from).and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(code) => code,
        Err(e) => {
            // One log line per line of the message (a refusal's carries
            // the verifier's last lines).
            for line in format!("{e:#}").lines() {
                error!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `--check --verify`: the datapath's programs through this kernel's
/// verifier, one line each. lbd loads every program of the object, so any
/// refusal fails the check; being over the budget is only a warning here.
fn verify_datapath() -> bool {
    println!("datapath on kernel {}:", kernel::release());
    let reports = match verifier::verify_object(lb_userspace::EBPF_OBJECT) {
        Ok(reports) => reports,
        Err(e) => {
            error!("cannot put the datapath through the verifier: {e:#}");
            return false;
        }
    };
    let mut ok = true;
    for report in &reports {
        println!("  {report}");
        match report.check() {
            Ok(()) => {}
            Err(why) if report.outcome == verifier::Outcome::Accepted => warn!("{why}"),
            Err(why) => {
                error!("{why}");
                ok = false;
            }
        }
    }
    ok
}

/// Reads the config and checks it against the host.
async fn load_checked(path: &std::path::Path, net: &Net) -> Result<(Config, lb_userspace::netinfo::Interface), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let interface = environment::check(&config, net).await.map_err(|e| e.to_string())?;
    Ok((config, interface))
}

async fn run(args: Args) -> Result<ExitCode> {
    if let Some(Sub::Decap { interface, address }) = &args.command {
        lb_userspace::decap::run(interface, address).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let net = Net::open()?;
    let (config, interface) = match load_checked(&args.config, &net).await {
        Ok(ok) => ok,
        Err(errors) => {
            for line in errors.lines() {
                error!("{line}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let missing = kernel::missing();
    if !missing.is_empty() {
        for line in kernel::explain_missing(&missing).lines() {
            error!("{line}");
        }
        return Ok(ExitCode::FAILURE);
    }
    if args.check {
        println!("{}: OK ({} services)", args.config.display(), config.services.len());
        if args.verify && !verify_datapath() {
            return Ok(ExitCode::FAILURE);
        }
        return Ok(ExitCode::SUCCESS);
    }

    info!("loading the XDP datapath into Linux {}", kernel::release());
    let datapath = Datapath::load(&LoadOptions {
        conn_table_size: config.director.conn_table_size,
        pin_path: config.director.pin_path.clone(),
        object: args.datapath_object.clone(),
    })?;
    let paths = environment::paths(&config.services, &net, &interface).await;
    let macs = environment::resolve_macs(
        &net,
        interface.index,
        &environment::next_hop_addresses(&paths),
        Duration::from_secs(2),
    )
    .await;
    let ifname = config.director.interface.clone();
    let xdp_mode = config.director.xdp_mode;
    let socket = config.director.control_socket.clone();
    let vrrp_configs = config.vrrp.clone();
    let sync_config = config.sync.clone();
    // Fill the maps before attaching, so the first packet sees the whole table.
    let mut controller = Controller::new(config, interface, datapath, paths, macs)?;
    controller.datapath.attach(&ifname, xdp_mode)?;
    info!("attached to {ifname}; control socket {}", socket.display());
    // Health checks: one task per checked server, transitions on a channel.
    let (health_tx, mut health_rx) = tokio::sync::mpsc::channel(256);
    let mut monitor = HealthMonitor::new(health_tx);
    monitor.update(controller.monitored());
    controller.sync_health(&monitor)?;
    // VRRP: until an instance is master, its VIPs' services stand by.
    let mut instances = Vec::new();
    for cfg in vrrp_configs {
        let name = cfg.name.clone();
        instances.push(VrrpInstance::start(cfg).await.with_context(|| format!("VRRP instance {name}"))?);
    }
    let (vrrp_tx, mut vrrp_rx) = tokio::sync::mpsc::channel::<()>(16);
    for instance in &instances {
        let mut watch = instance.watch();
        let tx = vrrp_tx.clone();
        tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                let _ = tx.send(()).await;
            }
        });
    }
    let vrrp_watches: Vec<_> = instances.iter().map(|i| i.watch()).collect();
    controller.set_standby(standby_vips(&instances))?;
    update_tracking(&instances, &controller);

    // Connection sync: the VRRP master (or, without VRRP, every director)
    // sends its new and changed entries; received ones are installed.
    let mut sync = match &sync_config {
        Some(cfg) => Some(Sync::start(cfg)?),
        None => None,
    };
    let mut sync_tick = tokio::time::interval(sync_config.as_ref().map_or(Duration::from_secs(3600), |c| c.scan_interval));
    let mut was_master = false;

    let shared = Arc::new(Mutex::new(controller));

    // Changes from lbctl go through the main loop (they need the network
    // for their checks); reads are answered directly.
    let (change_tx, mut change_rx) = tokio::sync::mpsc::channel::<ChangeRequest>(16);
    let server = {
        let shared = shared.clone();
        let socket = socket.clone();
        tokio::spawn(async move {
            let vrrp = Arc::new(vrrp_watches);
            let result =
                control::serve(&socket, move |request| answer(&shared, &change_tx, &vrrp, request)).await;
            if let Err(e) = result {
                error!("control socket: {e:#}");
            }
        })
    };

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    let mut rates = tokio::time::interval(lb_userspace::rate::INTERVAL);
    let mut neighbours = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                reload(&args.config, &net, &shared).await;
                refresh_monitor(&shared, &mut monitor);
                update_tracking(&instances, &lock(&shared));
            }
            Some((commands, reply)) = change_rx.recv() => {
                let result = change(&commands, &net, &shared).await;
                refresh_monitor(&shared, &mut monitor);
                update_tracking(&instances, &lock(&shared));
                let _ = reply.send(result);
            }
            Some(event) = health_rx.recv() => {
                let mut c = lock(&shared);
                if let Err(e) = c.health_event(&event, &monitor) {
                    warn!("applying a health change: {e:#}");
                }
                update_tracking(&instances, &c);
            }
            Some(()) = vrrp_rx.recv() => {
                if let Err(e) = lock(&shared).set_standby(standby_vips(&instances)) {
                    warn!("applying a VRRP change: {e:#}");
                }
                let master = instances.iter().any(|i| i.status().state == VrrpState::Master);
                if let Some(sync) = &mut sync {
                    if master && !was_master {
                        // A new master tells the other director everything.
                        sync.tracker.reset();
                    } else if was_master && !master {
                        // Stepping down (the other preempted): hand the new
                        // master the whole table at once, so the
                        // connections it takes over keep their servers.
                        let mut everything = ChangeTracker::new(Duration::from_secs(3600));
                        let records = lock(&shared).sync_records(&mut everything);
                        if !records.is_empty() {
                            info!("connection sync: handing {} entries to the new master", records.len());
                            let _ = sync.queue.try_send(records);
                        }
                    }
                }
                was_master = master;
            }
            _ = sync_tick.tick(), if sync.is_some() => {
                let sending = instances.is_empty() || instances.iter().any(|i| i.status().state == VrrpState::Master);
                if let (true, Some(sync)) = (sending, &mut sync) {
                    let records = lock(&shared).sync_records(&mut sync.tracker);
                    if !records.is_empty() {
                        let _ = sync.queue.try_send(records);
                    }
                }
            }
            Some(batch) = async { match &mut sync { Some(s) => s.received.recv().await, None => None } } => {
                let (installed, unknown) = lock(&shared).install_synced(&batch.records);
                if unknown > 0 {
                    warn!("connection sync: {unknown} entries from {} name services or servers unknown here", batch.from);
                }
                tracing::debug!("connection sync: {installed} entries from {}", batch.from);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = sweep.tick() => {
                if let Err(e) = lock(&shared).sweep() {
                    warn!("connection sweep: {e:#}");
                }
            }
            _ = rates.tick() => lock(&shared).sample_rates(),
            _ = neighbours.tick() => {
                ticks += 1;
                // Every server on the first tick and every tenth, the unresolved ones
                // on the others.
                refresh_neighbours(&net, &shared, ticks % 10 == 1).await;
            }
        }
    }

    monitor.shutdown().await;
    // A clean stop: the backup takes over at once (priority 0).
    for instance in instances {
        instance.shutdown().await;
    }
    server.abort();
    // abort() only asks: the task (and the controller reference its handler
    // holds) is dropped later, on a worker thread. Wait for that.
    let _ = server.await;
    let _ = std::fs::remove_file(&socket);
    // A request being answered right now still holds a reference briefly.
    let mut shared = shared;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let controller = loop {
        match Arc::try_unwrap(shared) {
            Ok(controller) => break controller,
            Err(still_shared) if tokio::time::Instant::now() < deadline => {
                shared = still_shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => anyhow::bail!("controller still in use"),
        }
    };
    let controller = controller.into_inner().unwrap_or_else(|e| e.into_inner());
    controller.datapath.shut_down().context("detach")?;
    info!("detached from {ifname}; exiting");
    Ok(ExitCode::SUCCESS)
}

fn lock(shared: &Mutex<Controller>) -> std::sync::MutexGuard<'_, Controller> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// A batch of ipvsadm commands for the main loop, and where its verdict goes.
type ChangeRequest = (Vec<Command>, tokio::sync::oneshot::Sender<Response>);

fn answer(
    shared: &Mutex<Controller>,
    changes: &tokio::sync::mpsc::Sender<ChangeRequest>,
    vrrp: &[tokio::sync::watch::Receiver<VrrpStatus>],
    request: Request,
) -> Response {
    match request {
        Request::Vrrp => Response::Vrrp { instances: vrrp.iter().map(|w| w.borrow().clone()).collect() },
        Request::Table => Response::Table { table: lock(shared).table_snapshot() },
        Request::Connections => Response::Connections { connections: lock(shared).connections_snapshot() },
        Request::Timeouts => Response::Timeouts { timeouts: lock(shared).config.director.timeouts },
        Request::Counters => Response::Counters { counters: lock(shared).reason_counters() },
        Request::Apply { commands } => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if changes.blocking_send((commands, tx)).is_err() {
                return Response::Error { message: "lbd is shutting down".into() };
            }
            rx.blocking_recv().unwrap_or(Response::Error { message: "lbd is shutting down".into() })
        }
    }
}

/// Carries out ipvsadm commands from lbctl, all or none: each is checked
/// (ipvsadm's rules, then the host for new real servers) on a copy of the
/// table, which replaces the live one only if every command passed.
async fn change(commands: &[Command], net: &Net, shared: &Mutex<Controller>) -> Response {
    let refused = |message: String, exit_code: i32| Response::Refused { message, exit_code };
    let (mut table, interface, file) = {
        let c = lock(shared);
        (c.table().to_vec(), c.interface.clone(), c.config.services.clone())
    };
    let before = table.clone();
    let mut zero = Vec::new();
    let mut timeouts = None;
    for command in commands {
        match command {
            Command::Zero(service) => {
                if let Some(vs) = service {
                    let Some(vip) = (match vs.addr {
                        std::net::IpAddr::V4(a) => Some(a),
                        _ => None,
                    }) else {
                        return refused("IPv6 services are not supported yet".into(), 2);
                    };
                    if !table.iter().any(|s| s.protocol == vs.protocol && s.vip == vip && s.port == vs.port) {
                        let e = KernelError::NoSuchService;
                        return refused(e.message().into(), e.exit_code());
                    }
                    zero.push(Some((vs.protocol, vip, vs.port)));
                } else {
                    zero.push(None);
                }
            }
            Command::SetTimeouts(t) => timeouts = Some(*t),
            _ => {
                if let Err(e) = commands::apply(&mut table, command, &file) {
                    return refused(e.message, e.exit_code);
                }
            }
        }
    }
    // New real servers must fit the host, as in a config file.
    for svc in &table {
        for real in &svc.reals {
            let known = before.iter().any(|b| {
                (b.protocol, b.vip, b.port) == (svc.protocol, svc.vip, svc.port)
                    && b.reals.iter().any(|r| (r.address, r.forwarding) == (real.address, real.forwarding))
            });
            if !known
                && let Err(message) = environment::check_real(net, &interface, real.address, real.forwarding).await
            {
                return refused(message, 1);
            }
        }
    }
    let changed = table != before;
    if changed {
        let paths = environment::paths(&table, net, &interface).await;
        let missing: Vec<_> = {
            let c = lock(shared);
            let unresolved: std::collections::BTreeSet<_> = c.unresolved().into_iter().collect();
            environment::next_hop_addresses(&paths).into_iter().filter(|a| unresolved.contains(a) || !c.next_hops().contains(a)).collect()
        };
        let macs = environment::resolve_macs(net, interface.index, &missing, Duration::from_secs(1)).await;
        if let Err(e) = lock(shared).set_table(table, paths, macs) {
            return refused(format!("{e:#}"), 1);
        }
        info!("lbctl: {} command(s) applied", commands.len());
    }
    let mut c = lock(shared);
    if let Some(t) = timeouts {
        if let Err(e) = c.set_timeouts(t) {
            return refused(format!("{e:#}"), 1);
        }
        info!("lbctl: timeouts now tcp {} tcpfin {} udp {}", c.config.director.timeouts.tcp, c.config.director.timeouts.tcpfin, c.config.director.timeouts.udp);
    }
    for service in zero {
        if let Err(e) = c.zero(service) {
            return refused(format!("{e:#}"), 1);
        }
    }
    Response::Done
}

/// The VIPs of instances that are not master.
fn standby_vips(instances: &[VrrpInstance]) -> BTreeSet<Ipv4Addr> {
    let vips = |master: bool| -> BTreeSet<Ipv4Addr> {
        instances
            .iter()
            .filter(|i| (i.status().state == VrrpState::Master) == master)
            .flat_map(|i| i.config().virtual_ipaddress.iter().map(|v| v.address))
            .collect()
    };
    let masters = vips(true);
    vips(false).difference(&masters).copied().collect()
}

/// Tells each VRRP instance whether its tracked services have a live real
/// server.
fn update_tracking(instances: &[VrrpInstance], c: &Controller) {
    for instance in instances {
        for (i, t) in instance.tracked_services().iter().enumerate() {
            instance.set_service_alive(i, c.service_alive(t.protocol, t.vip, t.port));
        }
    }
}

/// Connection sync's sockets and scan state.
struct Sync {
    tracker: ChangeTracker,
    queue: tokio::sync::mpsc::Sender<Vec<SyncRecord>>,
    received: tokio::sync::mpsc::Receiver<ReceivedBatch>,
}

impl Sync {
    fn start(cfg: &SyncConfig) -> Result<Self> {
        let sender = SyncSender::open(cfg).context("connection sync: open the sending socket")?;
        let receiver = SyncReceiver::open(cfg).context("connection sync: open the receiving socket")?;
        let (queue, to_send) = tokio::sync::mpsc::channel(64);
        let (got, received) = tokio::sync::mpsc::channel(64);
        tokio::spawn(sender.run(to_send));
        tokio::spawn(receiver.run(got));
        info!("connection sync on {} ({:?}, sync id {})", cfg.interface, cfg.transport, cfg.sync_id);
        Ok(Self { tracker: ChangeTracker::new(cfg.refresh_period), queue, received })
    }
}

/// Points the health checks at the servers of the table in force.
fn refresh_monitor(shared: &Mutex<Controller>, monitor: &mut HealthMonitor) {
    let mut c = lock(shared);
    monitor.update(c.monitored());
    if let Err(e) = c.sync_health(monitor) {
        warn!("applying health states: {e:#}");
    }
}

/// SIGHUP: re-read and re-check the config; apply only the difference, or
/// keep everything as it is if the new file is wrong.
async fn reload(path: &std::path::Path, net: &Net, shared: &Mutex<Controller>) {
    info!("SIGHUP: reloading {}", path.display());
    let (config, interface) = match load_checked(path, net).await {
        Ok(ok) => ok,
        Err(errors) => {
            for line in errors.lines() {
                error!("{line}");
            }
            error!("reload refused: the running configuration stays");
            return;
        }
    };
    {
        let c = lock(shared);
        let old = &c.config.director;
        let new = &config.director;
        if old.interface != new.interface {
            error!("reload refused: director.interface changed ({} -> {}); restart lbd to move", old.interface, new.interface);
            return;
        }
        if old.conn_table_size != new.conn_table_size || old.pin_path != new.pin_path || old.control_socket != new.control_socket {
            warn!("conn_table_size, pin_path and control_socket take effect at the next start");
        }
        if c.config.vrrp != config.vrrp || c.config.sync != config.sync {
            warn!("[[vrrp]] and [sync] changes take effect at the next start");
        }
    }
    // Resolve new servers' MACs without holding the lock.
    let paths = environment::paths(&config.services, net, &interface).await;
    let wanted = environment::next_hop_addresses(&paths);
    let macs = environment::resolve_macs(net, interface.index, &wanted, Duration::from_secs(1)).await;
    let mut c = lock(shared);
    c.update_macs(macs);
    match c.reload(config, interface, paths) {
        Ok(()) => info!("reload done"),
        Err(e) => error!("reload refused: {e:#}; the running configuration stays"),
    }
}

/// Learns the MACs of next hops that had none, and (every `all`) re-reads
/// the routes and re-checks every next hop, so a moved route or a replaced
/// server's new MAC is picked up.
async fn refresh_neighbours(net: &Net, shared: &Mutex<Controller>, all: bool) {
    let (table, interface) = {
        let c = lock(shared);
        (c.table().to_vec(), c.interface.clone())
    };
    if all {
        let paths = environment::paths(&table, net, &interface).await;
        let mut c = lock(shared);
        if c.update_paths(paths)
            && let Err(e) = c.apply()
        {
            warn!("applying new routes: {e:#}");
        }
    }
    let addrs = {
        let c = lock(shared);
        if all { c.next_hops() } else { c.unresolved() }
    };
    if addrs.is_empty() {
        return;
    }
    environment::refresh_neighbours(net, interface.index, &addrs).await;
    let mut found = std::collections::BTreeMap::new();
    for a in addrs {
        if let Ok(Some(mac)) = net.neighbour(interface.index, a).await {
            found.insert(a, mac);
        }
    }
    let mut c = lock(shared);
    if c.update_macs(found)
        && let Err(e) = c.apply()
    {
        warn!("applying new MACs: {e:#}");
    }
}
