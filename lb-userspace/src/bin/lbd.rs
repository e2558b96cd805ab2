//! lbd: the director. Loads the XDP datapath, fills it from the config,
//! keeps it in step with SIGHUP reloads and the network, serves lbctl.
//!
//! This file is the wiring: arguments, the startup order, the tasks,
//! sockets, signals and timers. What lbd does about each of them is
//! `lb_userspace::daemon`'s.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use clap::Parser;
use lb_userspace::{
    config, control,
    controller::Controller,
    metrics,
    daemon::{self, ChangeRequest, Daemon, Event, Standby, SyncLink},
    datapath::{Datapath, LoadOptions},
    decap, environment,
    health::HealthMonitor,
    kernel,
    lock::InstanceLock,
    netinfo::Net,
    pins,
    sync::{ReceivedBatch, SyncConfig, SyncReceiver, SyncSender, SyncStats},
    verifier,
    vrrp::{
        StartOptions, VrrpConfig, VrrpInstance,
        resume::{self, Decision},
    },
};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::MissedTickBehavior;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(name = "lbd", version = lb_userspace::VERSION, about = "XDP layer-4 load balancer (LVS-compatible director)")]
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
    /// On a TUN real server without the ipip module: strip the outer header
    /// of IP-in-IP packets (IPv4 in IPv4, IPv6 in IPv6) from the directors
    /// to this host when they carry a packet for one of its VIPs; anything
    /// else passes to the kernel untouched. Stays in the foreground; SIGHUP reads --from's files
    /// again; detaches on SIGTERM or Ctrl-C.
    Decap {
        /// The interface tunnelled packets arrive on.
        #[arg(long, short = 'i')]
        interface: String,
        /// Required: the directors whose tunnels to open. Their addresses,
        /// IPv4 or IPv6 (ADDR[,ADDR]), a file listing them (a path with a /: addresses
        /// separated by spaces, commas or lines, # comments), or `any` to
        /// open tunnels from anyone. Repeatable.
        #[arg(long, value_name = "ADDR[,ADDR]|FILE|any")]
        from: Vec<String>,
        /// The VIPs tunnelled packets may be for, IPv4 or IPv6. Default: the
        /// addresses on lo and tunl0 (but 127.0.0.0/8, ::1 and link-local
        /// ones), followed as they change.
        #[arg(long, value_name = "ADDR[,ADDR]", value_delimiter = ',')]
        vip: Vec<std::net::IpAddr>,
        /// Also accept tunnels to this address (besides the interface's own:
        /// its IPv4 addresses, its IPv6 ones but link-local).
        #[arg(long)]
        address: Vec<std::net::IpAddr>,
    },
    /// Writes lbd's man page (lbd.8) and shell completions into a
    /// directory (for the package).
    #[command(hide = true)]
    Docs {
        /// Where to write them.
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // netlink-proto warns when a reply arrives for a request lbd
            // stopped waiting for (a neighbour lookup that timed out):
            // not news to an operator.
            tracing_subscriber::EnvFilter::try_from_env("LBD_LOG")
                .unwrap_or_else(|_| "info,netlink_proto=error".into()),
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

async fn run(args: Args) -> Result<ExitCode> {
    if let Some(Sub::Docs { out }) = &args.command {
        lb_docs::write_cli(<Args as clap::CommandFactory>::command(), "8", out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(Sub::Decap { interface, from, vip, address }) = &args.command {
        let options = decap::Options {
            interface: interface.clone(),
            from: decap::FromArg::parse(from)?,
            vips: vip.clone(),
            extra_addresses: address.clone(),
        };
        decap::run(&options).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let net = Net::open()?;
    let (config, interfaces) = match daemon::load_checked(&args.config, &net).await {
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

    // Before anything touches the maps, the link or the socket: a second
    // lbd on the same paths stops here (the lock goes with the process).
    if let Some(pin_path) = &config.director.pin_path {
        pins::ensure_bpffs(pin_path)?;
    }
    let _instance = InstanceLock::acquire(&config.director.control_socket, config.director.pin_path.as_deref())?;
    // A taken metrics port stops lbd before it touches the datapath.
    let metrics_listener = match &config.metrics {
        Some(m) => Some(metrics::server::bind(m.listen).await?),
        None => None,
    };
    // What an lbd that exited for a restart left (read once).
    let note = resume::take(&resume::note_path(&config.director.control_socket)).unwrap_or_else(|e| {
        warn!("{e:#}");
        None
    });

    info!("loading the XDP datapath into Linux {}", kernel::release());
    let datapath = Datapath::load(&LoadOptions {
        conn_table_size: config.director.conn_table_size,
        pin_path: config.director.pin_path.clone(),
        object: args.datapath_object.clone(),
    })?;
    let paths = environment::paths(&config.services, &net, &interfaces).await;
    let macs = environment::resolve_macs(&net, &environment::next_hop_addresses(&paths), Duration::from_secs(2)).await;
    let ifnames: Vec<String> = interfaces.all().iter().map(|i| i.name.clone()).collect();
    let ifindexes: Vec<u32> = interfaces.all().iter().map(|i| i.index).collect();
    let xdp_mode = config.director.xdp_mode;
    let socket = config.director.control_socket.clone();
    let control_group = config.director.control_group.clone();
    let vrrp_configs = config.vrrp.clone();
    let sync_config = config.sync.clone();
    let bgp_config = config.bgp.clone();
    let pinned = config.director.pin_path.is_some();
    let resumes = resume_decisions(note.as_ref(), &vrrp_configs, datapath.adopted());
    // VRRP: until an instance is master, its VIPs' services stand by.
    let resuming: Vec<bool> = resumes.iter().map(Option::is_some).collect();
    let standby = Standby::new(&vrrp_configs, &resuming);
    // Fill the maps before attaching, so the first packet sees the whole table.
    let mut controller = Controller::new(config, interfaces, datapath, paths, macs, standby.vips())?;
    controller.datapath.set_tx_ports(&ifindexes)?;
    // Full NAT's pool: a fresh datapath's is filled; an adopted one's is
    // as the last lbd left it (with the ports its connections hold).
    let sources = controller.config.director.fullnat_source.clone();
    if !sources.is_empty() && !controller.datapath.adopted() {
        let ports = controller.datapath.fill_fullnat_ports(&sources)?;
        info!("full NAT: {ports} local ports of {}", sources.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "));
    }
    controller.datapath.attach(&ifnames, xdp_mode)?;
    info!("attached to {}; control socket {}", ifnames.join(", "), socket.display());
    // Health checks: one task per checked server, transitions on a channel.
    let (health_tx, mut health_rx) = tokio::sync::mpsc::channel(256);
    let mut monitor = HealthMonitor::new(health_tx);
    monitor.update(controller.monitored());
    controller.sync_health(&monitor)?;
    let shared = Arc::new(Mutex::new(controller));
    let mut instances = Vec::new();
    for (i, cfg) in vrrp_configs.into_iter().enumerate() {
        let name = cfg.name.clone();
        let options = StartOptions { forward: Some(standby.hook(i, shared.clone())), resume: resumes[i] };
        let instance = VrrpInstance::start_with(cfg, options).await.with_context(|| format!("VRRP instance {name}"))?;
        instances.push(instance);
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
    daemon::update_tracking(&instances, &daemon::lock(&shared));

    // Connection sync: the VRRP master (or, without VRRP, every director)
    // sends its new and changed entries; received ones are installed.
    let (sync, mut sync_rx) = match &sync_config {
        Some(cfg) => {
            let (link, received) = start_sync(cfg)?;
            (Some(link), Some(received))
        }
        None => (None, None),
    };
    let mut sync_tick =
        tokio::time::interval(sync_config.as_ref().map_or(Duration::from_secs(3600), |c| c.scan_interval));

    let sync_stats = sync.as_ref().map(SyncLink::stats);
    let mut daemon = Daemon::new(args.config.clone(), net, shared, monitor, instances, sync);

    // Changes from lbctl go through the main loop (they need the network
    // for their checks); reads are answered directly.
    let (change_tx, mut change_rx) = tokio::sync::mpsc::channel::<ChangeRequest>(16);
    let listener = control::listen(&socket, control_group.as_ref())?;
    let server = {
        let shared = daemon.controller();
        tokio::spawn(async move {
            let vrrp = Arc::new(vrrp_watches);
            let result = control::serve(listener, control_group, move |request| {
                daemon::answer(&shared, &change_tx, &vrrp, sync_stats.as_deref(), request)
            })
            .await;
            if let Err(e) = result {
                error!("control socket: {e:#}");
            }
        })
    };

    let mut metrics_tick = tokio::time::interval(metrics::INTERVAL);
    let metrics_on = metrics_listener.is_some();
    if let Some(listener) = metrics_listener {
        let (publish, snapshots) = daemon::metrics::channel();
        daemon.publish_metrics_on(publish);
        info!("metrics on http://{}/metrics", listener.local_addr()?);
        tokio::spawn(metrics::server::serve(listener, snapshots));
    }

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut restart = false;
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    let mut rates = tokio::time::interval(lb_userspace::rate::INTERVAL);
    let mut neighbours = tokio::time::interval(Duration::from_secs(1));
    // A tick missed while an event took long (a scan of a huge table under
    // a flood) comes one period after that event, not at once: the loop
    // never runs one timer's work back to back and starves the others.
    for timer in [&mut sync_tick, &mut sweep, &mut rates, &mut neighbours, &mut metrics_tick] {
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    // Route health injection, now that the datapath is attached and a
    // SIGTERM withdraws what it announces.
    if let Some(cfg) = bgp_config {
        info!("BGP: announcing through {} at {}", cfg.command, cfg.api);
        daemon.start_bgp(cfg);
    }
    let mut routes_out = false;
    // systemd (Type=notify): started once the datapath is attached and the
    // control socket answers. Without $NOTIFY_SOCKET this does nothing.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        warn!("cannot tell systemd that lbd is ready: {e}");
    }
    loop {
        // Signals first: SIGTERM is served after the event in hand, however
        // busy the timers and sockets are.
        let event = tokio::select! {
            biased;
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr2.recv() => {
                if pinned {
                    restart = true;
                } else {
                    warn!("SIGUSR2: without pin_path nothing outlives lbd; stopping as for SIGTERM");
                }
                break;
            }
            _ = hup.recv() => Event::Reload,
            Some(request) = change_rx.recv() => Event::Change(request),
            Some(event) = health_rx.recv() => Event::Health(event),
            Some(()) = vrrp_rx.recv() => Event::VrrpChanged,
            _ = sync_tick.tick(), if sync_rx.is_some() => Event::SyncScan,
            _ = sweep.tick() => Event::Sweep,
            _ = rates.tick() => Event::SampleRates,
            _ = neighbours.tick() => Event::RefreshNeighbours,
            _ = metrics_tick.tick(), if metrics_on => Event::PublishMetrics,
            // Last: a peer sending without pause cannot starve the timers
            // (each ready at most once a period).
            Some(batch) = async { match &mut sync_rx { Some(rx) => rx.recv().await, None => None } } => {
                Event::SyncBatch(batch)
            }
        };
        daemon.handle(event).await;
    }

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let shared = if restart {
        let (shared, left) = daemon.leave_for_restart().await;
        if !left.is_empty() {
            let note = resume::Note { pid: std::process::id(), instances: left };
            if let Err(e) = resume::write(&resume::note_path(&socket), &note) {
                error!("{e:#}: the next lbd starts its VRRP instances in backup");
            }
        }
        shared
    } else {
        // Routers first: the routes go, the datapath forwards on for the
        // drain time, then stops; unless a route may still be out.
        routes_out = !daemon.withdraw_routes().await;
        daemon.stop().await
    };
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
    if restart {
        controller.datapath.leave_running();
        info!(
            "SIGUSR2: exiting for a restart; the datapath forwards on and a master's VIPs stay on {} \
             (start lbd again within 3 × advert_interval for it to resume as master)",
            ifnames[0]
        );
        return Ok(ExitCode::SUCCESS);
    }
    if routes_out {
        controller.datapath.leave_running();
        error!(
            "BGP: the daemon did not take every withdrawal: the datapath stays attached to {} so that no \
             route points at nothing; start lbd again and stop it once the daemon answers",
            ifnames.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    controller.datapath.shut_down().context("detach")?;
    info!("detached from {}; exiting", ifnames.join(", "));
    Ok(ExitCode::SUCCESS)
}

/// For each VRRP instance, until when it may resume as master (the lbd
/// before this one was master and exited for a restart; see
/// `vrrp::resume`), as this process's clock; `None`: it starts as always.
fn resume_decisions(note: Option<&resume::Note>, configs: &[VrrpConfig], adopted: bool) -> Vec<Option<Instant>> {
    let now_ns = resume::boottime_ns();
    let now = Instant::now();
    configs
        .iter()
        .map(|c| match resume::decide(note, c, adopted, now_ns) {
            Decision::Start => None,
            Decision::Resume { until_ns, away } => {
                info!(
                    instance = %c.name,
                    "the lbd before this one (pid {}) left for a restart as master {:.3} s ago",
                    note.map_or(0, |n| n.pid),
                    away.as_secs_f64()
                );
                Some(now + Duration::from_nanos(until_ns - now_ns))
            }
            Decision::Refused(why) => {
                info!(instance = %c.name, "not resuming as master: {why}");
                None
            }
        })
        .collect()
}

/// Opens connection sync's sockets and starts their tasks: the sending
/// side for the daemon, and what arrives.
fn start_sync(cfg: &SyncConfig) -> Result<(SyncLink, tokio::sync::mpsc::Receiver<ReceivedBatch>)> {
    let stats = Arc::new(SyncStats::default());
    let sender = SyncSender::open(cfg, stats.clone()).context("connection sync: open the sending socket")?;
    let receiver = SyncReceiver::open(cfg, stats.clone()).context("connection sync: open the receiving socket")?;
    let (queue, to_send) = tokio::sync::mpsc::channel(64);
    let (outcome_tx, outcomes) = tokio::sync::mpsc::unbounded_channel();
    let (got, received) = tokio::sync::mpsc::channel(64);
    let address = sender.address();
    tokio::spawn(sender.run(to_send, outcome_tx));
    tokio::spawn(receiver.run(got));
    info!("connection sync on {} from {address} ({:?}, sync id {})", cfg.interface, cfg.transport, cfg.sync_id);
    if cfg.key.is_none() {
        warn!(
            "connection sync without a key (insecure = true): a datagram's only check is its source address, \
             which anyone on the link can forge to install connections; set sync.key"
        );
    }
    Ok((SyncLink::new(cfg.refresh_period, queue, outcomes, stats), received))
}
