//! The VRRP state machine of RFC 5798 §6.4 (and RFC 3768's, which differs
//! only in its timers), as pure logic: events and the time in, [`Action`]s
//! out. No socket, no timer: the caller sleeps until [`Machine::next_deadline`]
//! and then hands in [`Event::Timer`].
//!
//! Beyond the RFC, as keepalived does: a Fault state (a tracked interface is
//! down, or a tracked service with weight 0 has no live real server), tracked
//! services' weights added to the priority, `preempt_delay`, a priority-0
//! advert when the master stops or faults, and gratuitous ARPs on becoming
//! master (`garp_master_repeat` at once, as many again `garp_master_delay`
//! later, one every `garp_master_refresh`). And one rule keepalived lacks by
//! default: a master that hears a lower-priority master (both were master: a
//! split brain healing) stays master, answers with an advert at once and
//! sends its gratuitous ARPs again, so that the clients that followed the
//! other director's ARPs come back now rather than when their ARP entries
//! expire.
//!
//! What one advert can change is bounded, since anyone on the link can send
//! one. keepalived (vrrp.c, `vrrp_state_backup` and `vrrp_state_master_rx`)
//! takes Master_Adver_Interval from every advert it accepts, whoever sent
//! it, so a single forged VRRPv3 advert with priority 254 and an interval of
//! 4095 cs puts every router into backup for 3 × 40.95 s. Here the interval
//! is learned only from the master this backup already follows (a second
//! advert from the same sender), and only within
//! [`LEARNED_INTERVAL_FACTOR`] times our own either way; a priority-0 advert
//! hands over early only when it comes from that master.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    time::{Duration, Instant},
};

use super::packet::{MAX_V3_INTERVAL_CS, PRIORITY_OWNER, PRIORITY_STOP, Version};

/// A master's advert interval is believed up to this many times our own
/// (and down to our own divided by it).
pub const LEARNED_INTERVAL_FACTOR: u16 = 10;

/// Defined with the status lbctl shows (lb-ipvsadm's `vrrp`).
pub use lb_ipvsadm::vrrp::State;

/// Which `notify_*` command to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotifyKind {
    Master,
    Backup,
    Fault,
}

/// Why gratuitous ARPs go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GarpReason {
    /// Just became master: the first set.
    BecameMaster,
    /// `garp_master_delay` after becoming master: the second set.
    Repeat,
    /// Every `garp_master_refresh` while master.
    Refresh,
    /// A lower-priority master was heard: both were master.
    SplitBrain,
}

/// What the caller must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority (0: "I stop, take over now").
    SendAdvert { priority: u8 },
    /// Have the datapath forward the virtual addresses' services, and wait
    /// until it does: before [`Action::AddVips`], so that no packet reaches
    /// this host's own stack, which would answer the connections it does
    /// not know (every one the datapath forwards) with a reset.
    Forward,
    /// Have the datapath stand the services by (their packets pass to the
    /// kernel): after [`Action::RemoveVips`], for the same reason.
    StandBy,
    /// Put the virtual addresses on the interface.
    AddVips,
    /// Take them off.
    RemoveVips,
    /// Send `count` gratuitous ARPs for each virtual address.
    SendGarps { count: u32, reason: GarpReason },
    /// Run the `notify_*` command of this kind.
    Notify(NotifyKind),
}

/// The settings the state machine runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub version: Version,
    /// Configured priority, 1..=255 (255: the address owner).
    pub priority: u8,
    /// Advertisement_Interval in centiseconds (v2: a multiple of 100).
    pub advert_interval_cs: u16,
    pub preempt: bool,
    /// A backup that could preempt waits this long after first hearing the
    /// lower-priority master.
    pub preempt_delay: Duration,
    /// The second set of gratuitous ARPs this long after becoming master
    /// (zero: no second set).
    pub garp_master_delay: Duration,
    /// Gratuitous ARPs per address in each set.
    pub garp_master_repeat: u32,
    /// One gratuitous ARP per address this often while master.
    pub garp_master_refresh: Option<Duration>,
}

impl Params {
    /// The master's advert interval as this router takes it: within
    /// [`LEARNED_INTERVAL_FACTOR`] times its own either way, so that
    /// neither a forged advert nor a misconfigured peer can make it wait
    /// minutes, or take over between two adverts of a live master.
    pub fn bounded_interval(&self, theirs_cs: u16) -> u16 {
        let ours = self.advert_interval_cs.max(1);
        let low = (ours / LEARNED_INTERVAL_FACTOR).max(1);
        let high = ours.saturating_mul(LEARNED_INTERVAL_FACTOR).min(MAX_V3_INTERVAL_CS);
        theirs_cs.clamp(low, high.max(low))
    }
}

impl Default for Params {
    /// keepalived's defaults (but VRRPv3).
    fn default() -> Self {
        Self {
            version: Version::V3,
            priority: 100,
            advert_interval_cs: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            garp_master_delay: Duration::from_secs(5),
            garp_master_repeat: 5,
            garp_master_refresh: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Leave Init: Backup (Master for the address owner, Fault if faulted).
    Startup,
    /// Leave Init as master, the addresses staying where they are: the lbd
    /// before this one was master and exited for a restart so short that
    /// no backup can have taken over ([`super::resume`]). Faulted, as
    /// [`Event::Startup`].
    Resume,
    /// A valid advert of this virtual router from another router (checked
    /// with [`super::packet::Expect`]; never one of our own).
    Advert { from: IpAddr, priority: u8, interval_cs: u16 },
    /// The time came (see [`Machine::next_deadline`]); spurious calls are
    /// harmless.
    Timer,
    /// A tracked interface (the instance's own included) changed.
    Link { interface: String, up: bool },
    /// Tracked services: the sum of the weights in force, and whether one
    /// with weight 0 failed.
    Tracking { priority_delta: i32, fault: bool },
    /// Clean stop: a master sends priority 0 and removes its addresses.
    Shutdown,
}

/// One virtual router's state.
#[derive(Clone, Debug)]
pub struct Machine {
    params: Params,
    primary_ip: IpAddr,
    state: State,
    since: Instant,
    links_down: BTreeSet<String>,
    tracking_fault: bool,
    priority_delta: i32,
    /// RFC 5798's Master_Adver_Interval: learned from the master's adverts (v3).
    master_adver_interval_cs: u16,
    master_address: Option<IpAddr>,
    advert_at: Option<Instant>,
    master_down_at: Option<Instant>,
    garp_repeat_at: Option<Instant>,
    garp_refresh_at: Option<Instant>,
    /// When a waiting preemption may happen (`preempt_delay`).
    preempt_at: Option<Instant>,
    /// Last gratuitous ARPs for a split brain (at most one set per
    /// master-down interval, whatever the other router keeps sending).
    split_brain_garps: Option<Instant>,
}

fn centis(cs: u16) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}

impl Machine {
    /// A machine in Init. `primary_ip` is this router's address on the link
    /// (the source of its adverts, and the tie-breaker between equal
    /// priorities).
    pub fn new(params: Params, primary_ip: IpAddr, now: Instant) -> Self {
        Self {
            master_adver_interval_cs: params.advert_interval_cs,
            params,
            primary_ip,
            state: State::Init,
            since: now,
            links_down: BTreeSet::new(),
            tracking_fault: false,
            priority_delta: 0,
            master_address: None,
            advert_at: None,
            master_down_at: None,
            garp_repeat_at: None,
            garp_refresh_at: None,
            preempt_at: None,
            split_brain_garps: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// When the state last changed (or the machine was made).
    pub fn since(&self) -> Instant {
        self.since
    }

    /// The master's address as far as this router knows: its own while
    /// master, the last accepted advert's source while backup.
    pub fn master_address(&self) -> Option<IpAddr> {
        self.master_address
    }

    /// The configured priority plus the tracked services' weights, kept in
    /// 1..=254; the address owner's stays 255.
    pub fn effective_priority(&self) -> u8 {
        if self.params.priority == PRIORITY_OWNER {
            return PRIORITY_OWNER;
        }
        (i32::from(self.params.priority) + self.priority_delta).clamp(1, 254) as u8
    }

    pub fn primary_ip(&self) -> IpAddr {
        self.primary_ip
    }

    /// Master_Adver_Interval: the master's advert interval (v3 learns it).
    pub fn master_adver_interval(&self) -> Duration {
        centis(self.master_adver_interval_cs)
    }

    /// Skew_Time: v3 `((256 - Priority) * Master_Adver_Interval) / 256`,
    /// v2 `(256 - Priority) / 256` seconds.
    pub fn skew_time(&self) -> Duration {
        let weight = 256 - u64::from(self.effective_priority());
        let interval_us = match self.params.version {
            Version::V3 => u64::from(self.master_adver_interval_cs) * 10_000,
            Version::V2 => 1_000_000,
        };
        Duration::from_micros(weight * interval_us / 256)
    }

    /// Master_Down_Interval: `3 * Master_Adver_Interval + Skew_Time`.
    pub fn master_down_interval(&self) -> Duration {
        3 * self.master_adver_interval() + self.skew_time()
    }

    fn faulted(&self) -> bool {
        self.tracking_fault || !self.links_down.is_empty()
    }

    /// The next time [`Event::Timer`] is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.advert_at, self.master_down_at, self.garp_repeat_at, self.garp_refresh_at].into_iter().flatten().min()
    }

    /// Feeds one event at time `now`; returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Startup => {
                if self.state == State::Init {
                    // Whatever a previous run left on the interface goes.
                    out.extend([Action::RemoveVips, Action::StandBy]);
                    self.start(now, &mut out);
                }
            }
            Event::Resume => {
                if self.state == State::Init {
                    if self.faulted() {
                        out.extend([Action::RemoveVips, Action::StandBy]);
                        self.enter_fault(now, &mut out);
                    } else {
                        // An advert at once, within the backups' master-down
                        // interval; forwarding and the addresses as they were.
                        self.become_master(now, &mut out);
                    }
                }
            }
            Event::Link { interface, up } => {
                if up {
                    self.links_down.remove(&interface);
                } else {
                    self.links_down.insert(interface);
                }
                self.check_fault(now, &mut out);
            }
            Event::Tracking { priority_delta, fault } => {
                self.priority_delta = priority_delta;
                self.tracking_fault = fault;
                self.check_fault(now, &mut out);
            }
            Event::Advert { from, priority, interval_cs } => self.advert(from, priority, interval_cs, now, &mut out),
            Event::Timer => self.timer(now, &mut out),
            Event::Shutdown => {
                if self.state == State::Master {
                    out.push(Action::SendAdvert { priority: PRIORITY_STOP });
                    out.extend([Action::RemoveVips, Action::StandBy]);
                }
                self.clear_timers();
                self.master_address = None;
                self.set_state(State::Init, now);
            }
        }
        out
    }

    fn set_state(&mut self, state: State, now: Instant) {
        if self.state != state {
            self.state = state;
            self.since = now;
        }
    }

    fn clear_timers(&mut self) {
        self.advert_at = None;
        self.master_down_at = None;
        self.garp_repeat_at = None;
        self.garp_refresh_at = None;
        self.preempt_at = None;
    }

    /// Out of Init or Fault.
    fn start(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.faulted() {
            self.enter_fault(now, out);
        } else if self.params.priority == PRIORITY_OWNER {
            self.become_master(now, out);
        } else {
            self.become_backup(now, out);
        }
    }

    fn check_fault(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.state {
            State::Backup | State::Master if self.faulted() => self.enter_fault(now, out),
            State::Fault if !self.faulted() => self.start(now, out),
            _ => {}
        }
    }

    fn enter_fault(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state == State::Master {
            // keepalived does the same: the backup need not wait for the
            // master-down interval (if the link still carries it).
            out.push(Action::SendAdvert { priority: PRIORITY_STOP });
            out.extend([Action::RemoveVips, Action::StandBy]);
        }
        self.clear_timers();
        self.master_address = None;
        self.set_state(State::Fault, now);
        out.push(Action::Notify(NotifyKind::Fault));
    }

    fn become_backup(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state == State::Master {
            out.extend([Action::RemoveVips, Action::StandBy]);
        }
        // RFC: Master_Adver_Interval starts as our own interval; a new
        // master's is learned from its next advert.
        self.master_adver_interval_cs = self.params.advert_interval_cs;
        self.master_address = None;
        self.clear_timers();
        self.set_state(State::Backup, now);
        self.master_down_at = Some(now + self.master_down_interval());
        out.push(Action::Notify(NotifyKind::Backup));
    }

    fn become_master(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.clear_timers();
        self.set_state(State::Master, now);
        self.master_address = Some(self.primary_ip);
        self.split_brain_garps = None;
        out.push(Action::SendAdvert { priority: self.effective_priority() });
        // The datapath first, then the addresses and their announcement:
        // keepalived's vrrp_state_become_master adds the addresses and
        // sends its gratuitous ARPs at once, and IPVS forwards whatever the
        // state, but here the services stood by until now.
        out.extend([Action::Forward, Action::AddVips]);
        out.push(Action::SendGarps { count: self.params.garp_master_repeat, reason: GarpReason::BecameMaster });
        out.push(Action::Notify(NotifyKind::Master));
        self.advert_at = Some(now + centis(self.params.advert_interval_cs));
        if !self.params.garp_master_delay.is_zero() {
            self.garp_repeat_at = Some(now + self.params.garp_master_delay);
        }
        self.garp_refresh_at = self.params.garp_master_refresh.map(|r| now + r);
    }

    fn advert(&mut self, from: IpAddr, priority: u8, interval_cs: u16, now: Instant, out: &mut Vec<Action>) {
        if from == self.primary_ip {
            return;
        }
        let ours = self.effective_priority();
        match self.state {
            State::Init | State::Fault => {}
            State::Backup => {
                let from_master = self.master_address == Some(from);
                if priority == PRIORITY_STOP {
                    // The master stops: take over after the skew time only.
                    // Anyone else's priority 0 says nothing of the master.
                    if from_master {
                        self.master_down_at = Some(now + self.skew_time());
                    }
                    return;
                }
                let accept = if !self.params.preempt || priority >= ours {
                    self.preempt_at = None;
                    true
                } else if self.params.preempt_delay.is_zero() {
                    false
                } else {
                    // A lower-priority master: keep it until preempt_delay
                    // after we first heard it.
                    let at = *self.preempt_at.get_or_insert(now + self.params.preempt_delay);
                    now < at
                };
                if accept {
                    // RFC 5798 §6.4.2: Master_Adver_Interval from the
                    // advert; only from the master already followed, and
                    // bounded (see the module's docs).
                    if self.params.version == Version::V3 && from_master {
                        self.master_adver_interval_cs = self.params.bounded_interval(interval_cs);
                    }
                    self.master_address = Some(from);
                    self.master_down_at = Some(now + self.master_down_interval());
                }
                // Else: discard, and the master-down timer makes us master.
            }
            State::Master => {
                if priority == PRIORITY_STOP {
                    // Someone stopped: make sure everyone knows the master.
                    out.push(Action::SendAdvert { priority: ours });
                    self.advert_at = Some(now + centis(self.params.advert_interval_cs));
                } else if priority > ours || (priority == ours && from > self.primary_ip) {
                    // Backup with our own interval: the new master's is
                    // learned from its next advert.
                    self.become_backup(now, out);
                    self.master_address = Some(from);
                } else {
                    // Another master with a lower priority: both were master.
                    // We stay; tell it at once, and win the clients back.
                    out.push(Action::SendAdvert { priority: ours });
                    self.advert_at = Some(now + centis(self.params.advert_interval_cs));
                    let recent = self.split_brain_garps.is_some_and(|t| now < t + self.master_down_interval());
                    if !recent {
                        self.split_brain_garps = Some(now);
                        out.push(Action::SendGarps {
                            count: self.params.garp_master_repeat,
                            reason: GarpReason::SplitBrain,
                        });
                    }
                }
            }
        }
    }

    fn timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        match self.state {
            State::Backup if due(self.master_down_at) => self.become_master(now, out),
            State::Master => {
                if due(self.advert_at) {
                    out.push(Action::SendAdvert { priority: self.effective_priority() });
                    self.advert_at = Some(now + centis(self.params.advert_interval_cs));
                }
                if due(self.garp_repeat_at) {
                    self.garp_repeat_at = None;
                    out.push(Action::SendGarps { count: self.params.garp_master_repeat, reason: GarpReason::Repeat });
                }
                if due(self.garp_refresh_at) {
                    self.garp_refresh_at = self.params.garp_master_refresh.map(|r| now + r);
                    out.push(Action::SendGarps { count: 1, reason: GarpReason::Refresh });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
