//! What lbd does about each thing that happens to it: an lbctl request, a
//! SIGHUP, a health transition, a VRRP state change, a connection-sync
//! batch, a timer. Each is an [`Event`]; [`Daemon::handle`] carries it out
//! on the controller. `bin/lbd.rs` keeps the wiring: arguments, the startup
//! order, the tasks, sockets and signals that produce the events.

mod change;
pub mod metrics;
mod standby;

pub use change::{Change, new_reals, plan};
pub use standby::{Standby, standby_vips};

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use lb_ipvsadm::{
    command::Command,
    control::{Request, Response},
    vrrp::{State as VrrpState, VrrpStatus},
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::{
    bgp::{Bgp, BgpConfig, ServiceState, plan::service_prefixes},
    config::Config,
    controller::{Controller, InstallReport, Sweeper},
    environment,
    health::{HealthEvent, HealthMonitor},
    metrics::{Reloads, Snapshot},
    netinfo::{Interfaces, Net},
    sync::{Batch, ChangeTracker, ReceivedBatch, SendOutcome, SyncStats, stats::more_since},
    vrrp::{VrrpInstance, resume},
};

/// A batch of lbctl's ipvsadm commands for the main loop, and where its
/// verdict goes.
pub struct ChangeRequest {
    pub commands: Vec<Command>,
    pub reply: oneshot::Sender<Response>,
}

/// Something lbd acts on.
pub enum Event {
    /// lbctl's commands, carried out all or none (see [`plan`]).
    Change(ChangeRequest),
    /// SIGHUP: the config file again.
    Reload,
    /// A checked real server went down or came back.
    Health(HealthEvent),
    /// A VRRP instance changed state.
    VrrpChanged,
    /// Time to send the connection table's new and changed entries.
    SyncScan,
    /// Entries from another director.
    SyncBatch(ReceivedBatch),
    /// Time to sweep the connection table (every second).
    Sweep,
    /// Time to sample the rate estimators.
    SampleRates,
    /// Time to look at the next hops' MACs again (every second).
    RefreshNeighbours,
    /// Time to publish a metrics snapshot (`metrics::INTERVAL`).
    PublishMetrics,
}

/// Connection sync's sending side: what was sent, the queue to the
/// sending socket's task and its reports back, and the counters.
pub struct SyncLink {
    tracker: ChangeTracker,
    queue: mpsc::Sender<Batch>,
    outcomes: mpsc::UnboundedReceiver<SendOutcome>,
    stats: Arc<SyncStats>,
    /// Scans left of a hand-over (we stepped down: the new master gets our
    /// table, failed sends included).
    handover_scans: u32,
}

/// Scans a director that stepped down goes on sending (2 s at the default
/// scan interval): its whole table once, and again what failed.
const HANDOVER_SCANS: u32 = 10;

impl SyncLink {
    /// Long-lived entries are sent again every `refresh_period`; `outcomes`
    /// are the sending task's reports on what `queue` took.
    pub fn new(
        refresh_period: Duration,
        queue: mpsc::Sender<Batch>,
        outcomes: mpsc::UnboundedReceiver<SendOutcome>,
        stats: Arc<SyncStats>,
    ) -> Self {
        Self { tracker: ChangeTracker::new(refresh_period), queue, outcomes, stats, handover_scans: 0 }
    }

    /// The counters, for `lbctl --counters`.
    pub fn stats(&self) -> Arc<SyncStats> {
        self.stats.clone()
    }

    /// Takes the sending task's reports, then queues what this scan finds
    /// to send. A batch the queue cannot take is sent again next time.
    fn scan(&mut self, shared: &Mutex<Controller>) -> usize {
        while let Ok(outcome) = self.outcomes.try_recv() {
            self.tracker.settle(&outcome);
        }
        // The table is walked without the controller's lock.
        let view = lock(shared).sync_view();
        let (id, records) = view.records(&mut self.tracker);
        if records.is_empty() {
            // Nothing to send (or only entries of services gone here).
            self.tracker.settle(&SendOutcome { batches: vec![id], failed: vec![] });
            return 0;
        }
        let n = records.len();
        if let Err(e) = self.queue.try_send(Batch { id, records }) {
            self.tracker.fail(id);
            SyncStats::add(&self.stats.records_unsent, n);
            if let Some(suppressed) = self.stats.should_log("queue") {
                let why = if matches!(e, mpsc::error::TrySendError::Full(_)) { "full" } else { "closed" };
                warn!(
                    "connection sync: the send queue is {why}; {n} entries will be sent again{}",
                    more_since(suppressed)
                );
            }
            return 0;
        }
        n
    }

    /// Counts and logs (at a bounded rate) what a received batch became.
    fn report(&self, from: std::net::SocketAddr, report: &InstallReport) {
        SyncStats::add(&self.stats.records_installed, report.installed);
        if report.installed > 0 {
            self.stats.installed_now();
        }
        for (refusal, record) in &report.refused {
            self.stats.count(&format!("sync_refused_{}", refusal.name()), 1);
            if let Some(suppressed) = self.stats.should_log(refusal.name()) {
                warn!(
                    "connection sync: refused an entry from {from} ({:?} {} -> {} via {}): {refusal}{}",
                    record.kind,
                    record.client,
                    record.vip,
                    record.real,
                    more_since(suppressed)
                );
            }
        }
        tracing::debug!("connection sync: {} entries from {from}", report.installed);
    }
}

/// lbd's running state, past its startup.
pub struct Daemon {
    config_path: PathBuf,
    net: Net,
    /// Shared with the control socket, which answers reads directly.
    shared: Arc<Mutex<Controller>>,
    monitor: HealthMonitor,
    instances: Vec<VrrpInstance>,
    sync: Option<SyncLink>,
    /// Some VRRP instance was master at the last VRRP change.
    was_master: bool,
    neighbour_ticks: u64,
    /// The sweep of the connection table, a stretch each tick.
    sweeper: Sweeper,
    /// Route health injection, with `[bgp]`.
    bgp: Option<Bgp>,
    /// Where metrics snapshots go, with `[metrics]`.
    metrics: Option<watch::Sender<Arc<Snapshot>>>,
    reloads: Reloads,
}

impl Daemon {
    /// Takes over the started parts: the controller (maps filled, program
    /// attached; shared with the VRRP instances' [`Standby`] hooks), its
    /// health checks and VRRP instances, and sync's sending side if there
    /// is sync.
    pub fn new(
        config_path: PathBuf,
        net: Net,
        shared: Arc<Mutex<Controller>>,
        monitor: HealthMonitor,
        instances: Vec<VrrpInstance>,
        sync: Option<SyncLink>,
    ) -> Self {
        Self {
            config_path,
            net,
            shared,
            monitor,
            instances,
            sync,
            was_master: false,
            neighbour_ticks: 0,
            sweeper: Sweeper::default(),
            bgp: None,
            metrics: None,
            reloads: Reloads::default(),
        }
    }

    /// Announces the VIPs through a BGP daemon from now on (call once the
    /// datapath is attached): what is due is announced at once.
    pub fn start_bgp(&mut self, config: BgpConfig) {
        let services = bgp_services(&lock(&self.shared));
        self.bgp = Some(Bgp::start(config, services));
    }

    /// A stop: withdraws the announced VIPs, then forwards on for the
    /// drain time while the routers move their traffic elsewhere. False if
    /// a route may still be out: the datapath must then stay.
    pub async fn withdraw_routes(&mut self) -> bool {
        match self.bgp.take() {
            Some(bgp) => bgp.withdraw_all().await,
            None => true,
        }
    }

    /// Tells route health injection the services' state now.
    fn announce(&self) {
        if let Some(bgp) = &self.bgp {
            bgp.update(bgp_services(&lock(&self.shared)));
        }
    }

    /// The controller, for the control socket's reads.
    pub fn controller(&self) -> Arc<Mutex<Controller>> {
        self.shared.clone()
    }

    pub async fn handle(&mut self, event: Event) {
        match event {
            Event::Reload => {
                let ok = reload(&self.config_path, &self.net, &self.shared).await;
                self.reloads.record(ok);
                refresh_monitor(&self.shared, &mut self.monitor);
                update_tracking(&self.instances, &lock(&self.shared));
                self.announce();
            }
            Event::Change(ChangeRequest { commands, reply }) => {
                let result = change::change(&commands, &self.net, &self.shared).await;
                refresh_monitor(&self.shared, &mut self.monitor);
                update_tracking(&self.instances, &lock(&self.shared));
                let _ = reply.send(result);
                self.announce();
            }
            Event::Health(event) => {
                {
                    let mut c = lock(&self.shared);
                    if let Err(e) = c.health_event(&event, &self.monitor) {
                        warn!("applying a health change: {e:#}");
                    }
                    update_tracking(&self.instances, &c);
                }
                self.announce();
            }
            Event::VrrpChanged => {
                self.vrrp_changed();
                self.announce();
            }
            Event::SyncScan => {
                let master = self.instances.is_empty() || self.any_master();
                if let Some(sync) = &mut self.sync
                    && (master || sync.handover_scans > 0)
                {
                    sync.handover_scans = sync.handover_scans.saturating_sub(1);
                    sync.scan(&self.shared);
                }
            }
            Event::SyncBatch(batch) => {
                let report = lock(&self.shared).install_synced(&batch.records);
                if let Some(sync) = &self.sync {
                    sync.report(batch.from, &report);
                }
            }
            Event::Sweep => {
                let shared = &self.shared;
                if let Err(e) = self.sweeper.tick(|| lock(shared)) {
                    warn!("connection sweep: {e:#}");
                }
            }
            Event::SampleRates => lock(&self.shared).sample_rates(),
            Event::RefreshNeighbours => {
                self.neighbour_ticks += 1;
                // Every server on the first tick and every tenth, the
                // unresolved ones on the others.
                refresh_neighbours(&self.net, &self.shared, self.neighbour_ticks % 10 == 1).await;
            }
            Event::PublishMetrics => self.publish_metrics(),
        }
    }

    fn any_master(&self) -> bool {
        self.instances.iter().any(|i| i.status().state == VrrpState::Master)
    }

    /// Sync follows who is master. (Standing by follows each instance's
    /// own word, in order with its addresses: [`Standby`].)
    fn vrrp_changed(&mut self) {
        let master = self.any_master();
        if let Some(sync) = &mut self.sync {
            if master && !self.was_master {
                // A new master tells the other director everything.
                sync.tracker.reset();
            } else if self.was_master && !master {
                // Stepping down (the other preempted): hand the new master
                // the whole table at once, so the connections it takes over
                // keep their servers; what fails goes again at the next
                // scans of the hand-over.
                sync.tracker.reset();
                sync.handover_scans = HANDOVER_SCANS;
                let n = sync.scan(&self.shared);
                if n > 0 {
                    info!("connection sync: handing {n} entries to the new master");
                }
            }
        }
        self.was_master = master;
    }

    /// Stops the health checks and the VRRP instances (a clean stop: a
    /// master's backup takes over at once, priority 0). The controller is
    /// left to the caller, to detach once nothing else holds it.
    pub async fn stop(mut self) -> Arc<Mutex<Controller>> {
        self.monitor.shutdown().await;
        for instance in self.instances {
            instance.shutdown().await;
        }
        self.shared
    }

    /// Stops for a restart: the health checks, and the VRRP instances
    /// without a hand-over (a master sends one last advert, its addresses
    /// stay); what each instance was, for the next lbd. The controller is
    /// left to the caller, to leave the datapath running.
    pub async fn leave_for_restart(mut self) -> (Arc<Mutex<Controller>>, Vec<resume::Left>) {
        self.monitor.shutdown().await;
        let mut left = Vec::new();
        for instance in self.instances {
            left.extend(instance.leave_for_restart().await);
        }
        (self.shared, left)
    }
}

/// The controller, even if a panic poisoned its lock.
pub fn lock(shared: &Mutex<Controller>) -> MutexGuard<'_, Controller> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Answers a control request (on the socket's blocking thread): reads from
/// the controller at once; changes through the main loop (`changes`), as
/// they need the network for their checks.
pub fn answer(
    shared: &Mutex<Controller>,
    changes: &mpsc::Sender<ChangeRequest>,
    vrrp: &[watch::Receiver<VrrpStatus>],
    sync: Option<&SyncStats>,
    request: Request,
) -> Response {
    match request {
        Request::Vrrp => Response::Vrrp { instances: vrrp.iter().map(|w| w.borrow().clone()).collect() },
        Request::Table => {
            let c = lock(shared);
            let mut table = c.table_snapshot();
            // The table in force, not the config's conn_table_size: an
            // adopted table keeps the size it was created with.
            table.conn_table_size = c.datapath.conn_table_size();
            Response::Table { table }
        }
        Request::Connections => {
            // The table is walked without the controller's lock.
            let listing = lock(shared).conn_listing();
            match listing.connections() {
                Ok(connections) => Response::Connections { connections },
                Err(e) => Response::Error { message: format!("reading the connection table: {e:#}") },
            }
        }
        Request::ConnectionPage { filter, cursor } => {
            // A page of the walk, without the controller's lock.
            let listing = lock(shared).conn_listing();
            match listing.page(&filter, cursor.as_deref()) {
                Ok((connections, next)) => Response::ConnectionPage { connections, next },
                Err(e) => Response::Error { message: format!("reading the connection table: {e:#}") },
            }
        }
        Request::Timeouts => Response::Timeouts { timeouts: lock(shared).config.director.timeouts },
        Request::Counters => {
            let mut counters = lock(shared).reason_counters();
            counters.extend(sync.map(SyncStats::counters).unwrap_or_default());
            Response::Counters { counters }
        }
        Request::Explain { query } => {
            let flow = crate::explain::flow_key(&query);
            let view = lock(shared).datapath.explain_view(&flow);
            match view {
                Ok(view) => Response::Explain { explanation: Box::new(crate::explain::explain(query, &view)) },
                Err(e) => Response::Error { message: format!("reading the datapath's maps: {e:#}") },
            }
        }
        Request::Apply { commands } => {
            let (reply, verdict) = oneshot::channel();
            if changes.blocking_send(ChangeRequest { commands, reply }).is_err() {
                return Response::Error { message: "lbd is shutting down".into() };
            }
            verdict.blocking_recv().unwrap_or(Response::Error { message: "lbd is shutting down".into() })
        }
    }
}

/// Each service as route health injection sees it, once per prefix it
/// announces (`bgp::plan::service_prefixes`: a VIP's host route, a firewall
/// mark's IPv4 match networks; IPv6 ones are not announced).
fn bgp_services(c: &Controller) -> Vec<ServiceState> {
    c.table()
        .iter()
        .flat_map(|s| {
            let (quorum, standby) = (c.holds_quorum(s.id()), c.service_stands_by(s));
            service_prefixes(s).into_iter().map(move |prefix| ServiceState { prefix, quorum, standby })
        })
        .collect()
}

/// Tells each VRRP instance whether its tracked services have a live real
/// server.
pub fn update_tracking(instances: &[VrrpInstance], c: &Controller) {
    for instance in instances {
        for (i, t) in instance.tracked_services().iter().enumerate() {
            instance.set_service_alive(i, c.service_alive(t.service));
        }
    }
}

/// Reads the config and checks it against the host.
pub async fn load_checked(path: &Path, net: &Net) -> Result<(Config, Interfaces), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let interfaces = environment::check(&config, net).await.map_err(|e| e.to_string())?;
    Ok((config, interfaces))
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
/// keep everything as it is if the new file is wrong. True if applied.
async fn reload(path: &Path, net: &Net, shared: &Mutex<Controller>) -> bool {
    info!("SIGHUP: reloading {}", path.display());
    let (config, interfaces) = match load_checked(path, net).await {
        Ok(ok) => ok,
        Err(errors) => {
            for line in errors.lines() {
                error!("{line}");
            }
            error!("reload refused: the running configuration stays");
            return false;
        }
    };
    {
        let c = lock(shared);
        let old = &c.config.director;
        let new = &config.director;
        if old.interface != new.interface || old.interfaces != new.interfaces {
            error!(
                "reload refused: director.interface or interfaces changed ({} -> {}); restart lbd to move",
                c.interfaces.names(),
                interfaces.names()
            );
            return false;
        }
        if old.conn_table_size != new.conn_table_size
            || old.pin_path != new.pin_path
            || old.control_socket != new.control_socket
            || old.control_group != new.control_group
        {
            warn!("conn_table_size, pin_path, control_socket and control_group take effect at the next start");
        }
        if c.config.vrrp != config.vrrp || c.config.sync != config.sync || c.config.bgp != config.bgp {
            warn!("[[vrrp]], [sync] and [bgp] changes take effect at the next start");
        }
    }
    // Resolve new servers' MACs without holding the lock.
    let paths = environment::paths(&config.services, net, &interfaces).await;
    let wanted = environment::next_hop_addresses(&paths);
    let macs = environment::resolve_macs(net, &wanted, Duration::from_secs(1)).await;
    let mut c = lock(shared);
    c.update_macs(macs);
    match c.reload(config, interfaces, paths) {
        Ok(()) => {
            info!("reload done");
            true
        }
        Err(e) => {
            error!("reload refused: {e:#}; the running configuration stays");
            false
        }
    }
}

/// Learns the MACs of next hops that had none, and (every `all`) re-reads
/// the routes and re-checks every next hop, so a moved route or a replaced
/// server's new MAC is picked up.
async fn refresh_neighbours(net: &Net, shared: &Mutex<Controller>, all: bool) {
    let (table, interfaces, nat_next_hops) = {
        let mut c = lock(shared);
        let wanted = c.datapath.take_wanted_neighbours();
        (c.table().to_vec(), c.interfaces.clone(), wanted)
    };
    // Next hops toward NAT clients the datapath found unresolved: the
    // kernel resolves them, and the clients' next packets find them.
    let nat_next_hops: Vec<_> = nat_next_hops.into_iter().map(|(index, a)| (index, IpAddr::V4(a))).collect();
    environment::refresh_neighbours(net, &nat_next_hops).await;
    if all {
        let paths = environment::paths(&table, net, &interfaces).await;
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
    environment::refresh_neighbours(net, &addrs).await;
    let mut found = BTreeMap::new();
    for (index, a) in addrs {
        if let Ok(Some(mac)) = net.neighbour(index, a).await {
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
