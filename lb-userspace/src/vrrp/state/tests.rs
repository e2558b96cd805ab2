//! The state machine's tests: events and a clock in, actions out.

use super::*;

const ME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
const LOWER_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
const HIGHER_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3));

struct Clock(Instant);
impl Clock {
    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

fn machine(params: Params) -> (Machine, Clock) {
    let clock = Clock(Instant::now());
    (Machine::new(params, ME, clock.0), clock)
}

fn v3(priority: u8) -> Params {
    Params { priority, ..Params::default() }
}

fn advert(from: IpAddr, priority: u8) -> Event {
    Event::Advert { from, priority, interval_cs: 100 }
}

fn became_master(priority: u8) -> Vec<Action> {
    vec![
        Action::SendAdvert { priority },
        Action::Forward,
        Action::AddVips,
        Action::SendGarps { count: 5, reason: GarpReason::BecameMaster },
        Action::Notify(NotifyKind::Master),
    ]
}

/// Where `a` comes in `actions`.
fn position(actions: &[Action], a: &Action) -> usize {
    actions.iter().position(|x| x == a).unwrap_or_else(|| panic!("no {a:?} in {actions:?}"))
}

#[test]
fn the_datapath_forwards_before_the_addresses_go_up_and_stands_by_after_they_go_down() {
    let (mut m, c) = machine(v3(100));
    m.handle(Event::Startup, c.at(0));
    let up = m.handle(Event::Timer, c.at(10_000));
    // Nothing announces the VIP (nor puts it where the kernel answers for
    // it) before the datapath forwards its services.
    assert!(position(&up, &Action::Forward) < position(&up, &Action::AddVips), "{up:?}");
    let garps = up.iter().position(|a| matches!(a, Action::SendGarps { .. })).unwrap();
    assert!(position(&up, &Action::AddVips) < garps, "{up:?}");
    // Every way out of master: the addresses go first.
    let ways: [(&str, Event); 3] = [
        ("preempted", advert(HIGHER_IP, 200)),
        ("fault", Event::Link { interface: "eth0".into(), up: false }),
        ("shutdown", Event::Shutdown),
    ];
    for (why, event) in ways {
        let (mut m, c) = machine(v3(100));
        m.handle(Event::Startup, c.at(0));
        m.handle(Event::Timer, c.at(10_000));
        let down = m.handle(event, c.at(11_000));
        assert!(position(&down, &Action::RemoveVips) < position(&down, &Action::StandBy), "{why}: {down:?}");
    }
}

#[test]
fn a_resumed_master_adverts_at_once_and_keeps_its_addresses() {
    let (mut m, c) = machine(v3(100));
    // No RemoveVips first, unlike a start: the addresses stay.
    assert_eq!(m.handle(Event::Resume, c.at(0)), became_master(100));
    assert_eq!(m.state(), State::Master);
    assert_eq!(m.next_deadline(), Some(c.at(1000)), "adverts every interval from now");
    // Then as any master.
    assert_eq!(m.handle(advert(LOWER_IP, 200), c.at(1500)).len(), 3);
    assert_eq!(m.state(), State::Backup);
    // Only out of Init.
    assert_eq!(m.handle(Event::Resume, c.at(2000)), []);
    assert_eq!(m.state(), State::Backup);
    // A tracked link down: Fault, as a start, and the addresses go.
    let (mut m, c) = machine(v3(100));
    m.handle(Event::Link { interface: "eth0".into(), up: false }, c.at(0));
    assert_eq!(
        m.handle(Event::Resume, c.at(0)),
        [Action::RemoveVips, Action::StandBy, Action::Notify(NotifyKind::Fault)]
    );
}

#[test]
fn timers_follow_the_rfc() {
    // v3, priority 100, 1 s: skew (156 * 100 cs) / 256 = 60.9375 cs.
    let (m, _) = machine(v3(100));
    assert_eq!(m.skew_time(), Duration::from_micros(609_375));
    assert_eq!(m.master_down_interval(), Duration::from_micros(3_609_375));
    // v3 with 10 ms adverts.
    let (m, _) = machine(Params { advert_interval_cs: 1, priority: 200, ..Params::default() });
    assert_eq!(m.skew_time(), Duration::from_micros(56 * 10_000 / 256));
    assert_eq!(m.master_down_interval(), Duration::from_micros(30_000 + 2_187));
    // v2: (256 - priority) / 256 s whatever the interval.
    let (m, _) =
        machine(Params { version: Version::V2, advert_interval_cs: 300, priority: 100, ..Params::default() });
    assert_eq!(m.skew_time(), Duration::from_micros(609_375));
    assert_eq!(m.master_down_interval(), Duration::from_micros(9_609_375));
}

#[test]
fn backup_becomes_master_after_the_master_down_interval() {
    let (mut m, c) = machine(v3(100));
    assert_eq!(m.state(), State::Init);
    assert_eq!(
        m.handle(Event::Startup, c.at(0)),
        [Action::RemoveVips, Action::StandBy, Action::Notify(NotifyKind::Backup)]
    );
    assert_eq!(m.state(), State::Backup);
    let down = m.master_down_interval();
    assert_eq!(m.next_deadline(), Some(c.at(0) + down));
    // Too early: nothing.
    assert_eq!(m.handle(Event::Timer, c.at(3000)), []);
    assert_eq!(m.handle(Event::Timer, c.at(0) + down), became_master(100));
    assert_eq!(m.state(), State::Master);
    assert_eq!(m.master_address(), Some(ME));
    assert_eq!(m.since(), c.at(0) + down);
}

#[test]
fn a_master_adverts_every_interval_and_repeats_garps() {
    let params = Params { garp_master_refresh: Some(Duration::from_secs(60)), ..v3(255) };
    let (mut m, c) = machine(params);
    let mut expected = vec![Action::RemoveVips, Action::StandBy];
    expected.extend(became_master(255));
    assert_eq!(m.handle(Event::Startup, c.at(0)), expected, "the owner is master at once");
    assert_eq!(m.next_deadline(), Some(c.at(1000)));
    assert_eq!(m.handle(Event::Timer, c.at(1000)), [Action::SendAdvert { priority: 255 }]);
    for s in 2..5 {
        m.handle(Event::Timer, c.at(s * 1000));
    }
    assert_eq!(
        m.handle(Event::Timer, c.at(5000)),
        [Action::SendAdvert { priority: 255 }, Action::SendGarps { count: 5, reason: GarpReason::Repeat }]
    );
    assert_eq!(m.handle(Event::Timer, c.at(6000)), [Action::SendAdvert { priority: 255 }]);
    assert_eq!(
        m.handle(Event::Timer, c.at(60_000)),
        [Action::SendAdvert { priority: 255 }, Action::SendGarps { count: 1, reason: GarpReason::Refresh }]
    );
}

#[test]
fn adverts_keep_a_backup_backup() {
    let (mut m, c) = machine(v3(100));
    m.handle(Event::Startup, c.at(0));
    for t in (0..10_000).step_by(1000) {
        assert_eq!(m.handle(advert(HIGHER_IP, 150), c.at(t)), []);
        assert_eq!(m.handle(Event::Timer, c.at(t + 999)), []);
    }
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.master_address(), Some(HIGHER_IP));
}

#[test]
fn v3_backup_learns_the_masters_interval() {
    let (mut m, c) = machine(v3(100));
    m.handle(Event::Startup, c.at(0));
    let fast = Event::Advert { from: HIGHER_IP, priority: 200, interval_cs: 10 };
    // The first advert makes it the master followed; the next one's
    // interval is learned.
    m.handle(fast.clone(), c.at(0));
    assert_eq!(m.master_adver_interval(), Duration::from_secs(1));
    m.handle(fast, c.at(100));
    assert_eq!(m.master_adver_interval(), Duration::from_millis(100));
    // 3 * 100 ms + (156 * 100 ms) / 256.
    assert_eq!(m.next_deadline(), Some(c.at(100) + Duration::from_micros(300_000 + 60_937)));
    // v2 does not learn (mismatched adverts are refused before).
    let (mut m, c) = machine(Params { version: Version::V2, ..v3(100) });
    m.handle(Event::Startup, c.at(0));
    for t in [0, 1000] {
        m.handle(Event::Advert { from: HIGHER_IP, priority: 200, interval_cs: 300 }, c.at(t));
    }
    assert_eq!(m.master_adver_interval(), Duration::from_secs(1));
}

/// Another router on the link that sends what it likes.
const FORGER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 66));

/// The advert of issue 11: the highest priority short of the owner's,
/// the longest VRRPv3 interval (40.95 s).
fn forged() -> Event {
    Event::Advert { from: FORGER, priority: 254, interval_cs: MAX_V3_INTERVAL_CS }
}

#[test]
fn a_forged_advert_stops_the_master_for_its_own_master_down_interval_only() {
    let (mut m, c) = machine(v3(150));
    m.handle(Event::Startup, c.at(0));
    m.handle(Event::Timer, c.at(10_000));
    assert_eq!(m.state(), State::Master);
    assert_eq!(
        m.handle(forged(), c.at(11_000)),
        [Action::RemoveVips, Action::StandBy, Action::Notify(NotifyKind::Backup)]
    );
    assert_eq!(m.state(), State::Backup, "a higher priority wins, as VRRP says");
    // Not 3 × 40.95 s: the forger is no master this router followed.
    assert_eq!(m.master_adver_interval(), Duration::from_secs(1));
    let back = c.at(11_000) + m.master_down_interval();
    assert_eq!(m.master_down_interval(), Duration::from_micros(3_000_000 + 414_062));
    assert_eq!(m.next_deadline(), Some(back));
    // The forger says nothing more: master again.
    assert_eq!(m.handle(Event::Timer, back), became_master(150));
}

#[test]
fn a_forged_advert_does_not_make_a_backup_wait_longer() {
    let (mut m, c) = machine(v3(100));
    m.handle(Event::Startup, c.at(0));
    for t in [0, 1000] {
        m.handle(advert(HIGHER_IP, 150), c.at(t));
    }
    let own = m.master_down_interval();
    m.handle(forged(), c.at(1500));
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.master_address(), Some(FORGER));
    assert_eq!(m.next_deadline(), Some(c.at(1500) + own), "the interval learned from the real master");
    // A forger that keeps sending is the master followed now: its
    // interval is learned, but bounded to ten times ours.
    m.handle(forged(), c.at(2000));
    assert_eq!(m.master_adver_interval(), Duration::from_secs(10));
    let bounded = Duration::from_secs(30) + Duration::from_secs(10) * 156 / 256;
    assert_eq!(m.next_deadline(), Some(c.at(2000) + bounded));
    // The real master's adverts take over again at once, its interval
    // from its second one.
    m.handle(advert(HIGHER_IP, 150), c.at(2100));
    assert_eq!(m.master_address(), Some(HIGHER_IP));
    m.handle(advert(HIGHER_IP, 150), c.at(3100));
    assert_eq!(m.next_deadline(), Some(c.at(3100) + own));
}

#[test]
fn a_learned_interval_is_bounded_both_ways() {
    let p = v3(100);
    assert_eq!(p.bounded_interval(100), 100);
    assert_eq!(p.bounded_interval(MAX_V3_INTERVAL_CS), 1000);
    assert_eq!(p.bounded_interval(1), 10);
    let fast = Params { advert_interval_cs: 5, ..v3(100) };
    assert_eq!((fast.bounded_interval(1), fast.bounded_interval(4000)), (1, 50));
    let slow = Params { advert_interval_cs: 1000, ..v3(100) };
    assert_eq!(slow.bounded_interval(MAX_V3_INTERVAL_CS), MAX_V3_INTERVAL_CS);
    // A master adverting every 10 ms cannot make a backup of 1 s adverts
    // take over 30 ms after it hears nothing.
    let (mut m, c) = machine(v3(100));
    m.handle(Event::Startup, c.at(0));
    for t in [0, 10] {
        m.handle(Event::Advert { from: HIGHER_IP, priority: 150, interval_cs: 1 }, c.at(t));
    }
    assert_eq!(m.master_adver_interval(), Duration::from_millis(100));
}

#[test]
fn only_the_master_followed_hands_over_with_priority_zero() {
    let (mut m, c) = machine(v3(100));
    m.handle(Event::Startup, c.at(0));
    m.handle(advert(HIGHER_IP, 150), c.at(0));
    let down = c.at(0) + m.master_down_interval();
    assert_eq!(m.handle(advert(FORGER, 0), c.at(500)), []);
    assert_eq!(m.next_deadline(), Some(down), "someone else's priority 0 changes nothing");
    m.handle(advert(HIGHER_IP, 0), c.at(600));
    assert_eq!(m.next_deadline(), Some(c.at(600) + m.skew_time()));
}

#[test]
fn priority_zero_makes_the_backup_master_after_its_skew_time() {
    let (mut m, c) = machine(v3(100));
    m.handle(Event::Startup, c.at(0));
    m.handle(advert(HIGHER_IP, 150), c.at(0));
    assert_eq!(m.handle(advert(HIGHER_IP, 0), c.at(500)), []);
    let at = c.at(500) + m.skew_time();
    assert_eq!(m.next_deadline(), Some(at));
    assert_eq!(m.handle(Event::Timer, at), became_master(100));
}

#[test]
fn preemption() {
    // A backup with a higher priority ignores a lower master's adverts.
    let (mut m, c) = machine(v3(200));
    m.handle(Event::Startup, c.at(0));
    let down = m.master_down_interval();
    m.handle(advert(LOWER_IP, 100), c.at(1000));
    assert_eq!(m.next_deadline(), Some(c.at(0) + down), "the advert did not reset the timer");
    assert_eq!(m.handle(Event::Timer, c.at(0) + down), became_master(200));

    // nopreempt: it accepts the lower master.
    let (mut m, c) = machine(Params { preempt: false, ..v3(200) });
    m.handle(Event::Startup, c.at(0));
    for t in (0..10_000).step_by(1000) {
        m.handle(advert(LOWER_IP, 100), c.at(t));
        assert_eq!(m.handle(Event::Timer, c.at(t + 999)), []);
    }
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.master_address(), Some(LOWER_IP));
}

#[test]
fn preempt_delay_waits_before_preempting() {
    let (mut m, c) = machine(Params { preempt_delay: Duration::from_secs(5), ..v3(200) });
    m.handle(Event::Startup, c.at(0));
    let down = m.master_down_interval();
    // Accepted for 5 s after it was first heard (at 1 s)...
    for t in (1000..6000).step_by(1000) {
        m.handle(advert(LOWER_IP, 100), c.at(t));
        assert_eq!(m.next_deadline(), Some(c.at(t) + down));
    }
    // ...then ignored: master one master-down interval after the last
    // accepted advert.
    m.handle(advert(LOWER_IP, 100), c.at(6000));
    assert_eq!(m.next_deadline(), Some(c.at(5000) + down));
    assert_eq!(m.handle(Event::Timer, c.at(5000) + down), became_master(200));
}

#[test]
fn master_yields_to_higher_priority_or_equal_priority_and_higher_address() {
    for (from, priority) in [(LOWER_IP, 150), (HIGHER_IP, 100)] {
        let (mut m, c) = machine(v3(100));
        m.handle(Event::Startup, c.at(0));
        m.handle(Event::Timer, c.at(10_000));
        assert_eq!(m.state(), State::Master);
        assert_eq!(
            m.handle(advert(from, priority), c.at(11_000)),
            [Action::RemoveVips, Action::StandBy, Action::Notify(NotifyKind::Backup)]
        );
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.master_address(), Some(from));
        assert_eq!(m.next_deadline(), Some(c.at(11_000) + m.master_down_interval()));
    }
}

#[test]
fn split_brain_heals_with_garps_from_the_master_that_stays() {
    for (from, priority) in [(HIGHER_IP, 50), (LOWER_IP, 100)] {
        let (mut m, c) = machine(v3(100));
        m.handle(Event::Startup, c.at(0));
        m.handle(Event::Timer, c.at(10_000));
        assert_eq!(
            m.handle(advert(from, priority), c.at(10_500)),
            [Action::SendAdvert { priority: 100 }, Action::SendGarps { count: 5, reason: GarpReason::SplitBrain }]
        );
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.next_deadline(), Some(c.at(11_500)), "the advert timer restarted");
        // Not again while the other one is still being told.
        assert_eq!(m.handle(advert(from, priority), c.at(10_600)), [Action::SendAdvert { priority: 100 }]);
        // But again for a later split brain.
        let later = c.at(10_500) + m.master_down_interval();
        assert_eq!(m.handle(advert(from, priority), later).len(), 2);
    }
}

#[test]
fn a_master_answers_priority_zero_with_an_advert() {
    let (mut m, c) = machine(v3(100));
    m.handle(Event::Startup, c.at(0));
    m.handle(Event::Timer, c.at(10_000));
    assert_eq!(m.handle(advert(HIGHER_IP, 0), c.at(10_200)), [Action::SendAdvert { priority: 100 }]);
    assert_eq!(m.state(), State::Master);
}

#[test]
fn clean_shutdown_sends_priority_zero() {
    let (mut m, c) = machine(v3(100));
    m.handle(Event::Startup, c.at(0));
    m.handle(Event::Timer, c.at(10_000));
    assert_eq!(
        m.handle(Event::Shutdown, c.at(12_000)),
        [Action::SendAdvert { priority: 0 }, Action::RemoveVips, Action::StandBy]
    );
    assert_eq!(m.state(), State::Init);
    assert_eq!(m.next_deadline(), None);
    // A backup just stops.
    let (mut m, c) = machine(v3(100));
    m.handle(Event::Startup, c.at(0));
    assert_eq!(m.handle(Event::Shutdown, c.at(1000)), []);
}

#[test]
fn a_tracked_interface_down_is_a_fault() {
    let (mut m, c) = machine(v3(100));
    // Down before startup: Fault straight away.
    m.handle(Event::Link { interface: "eth1".into(), up: false }, c.at(0));
    assert_eq!(m.state(), State::Init);
    assert_eq!(
        m.handle(Event::Startup, c.at(0)),
        [Action::RemoveVips, Action::StandBy, Action::Notify(NotifyKind::Fault)]
    );
    assert_eq!(m.state(), State::Fault);
    assert_eq!(m.next_deadline(), None);
    assert_eq!(m.handle(advert(HIGHER_IP, 150), c.at(100)), [], "adverts are ignored in Fault");
    // Up again: Backup, and Master after the down interval.
    assert_eq!(
        m.handle(Event::Link { interface: "eth1".into(), up: true }, c.at(1000)),
        [Action::Notify(NotifyKind::Backup)]
    );
    m.handle(Event::Timer, c.at(5000));
    assert_eq!(m.state(), State::Master);
    // Down while master: priority 0, addresses off, Fault.
    assert_eq!(
        m.handle(Event::Link { interface: "eth0".into(), up: false }, c.at(6000)),
        [Action::SendAdvert { priority: 0 }, Action::RemoveVips, Action::StandBy, Action::Notify(NotifyKind::Fault)]
    );
    // Two down, one back: still Fault.
    m.handle(Event::Link { interface: "eth1".into(), up: false }, c.at(6100));
    assert_eq!(m.handle(Event::Link { interface: "eth0".into(), up: true }, c.at(6200)), []);
    assert_eq!(m.state(), State::Fault);
    m.handle(Event::Link { interface: "eth1".into(), up: true }, c.at(6300));
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn tracked_services_move_the_priority() {
    let (mut m, c) = machine(v3(100));
    m.handle(Event::Startup, c.at(0));
    m.handle(Event::Timer, c.at(10_000));
    assert_eq!(m.handle(Event::Tracking { priority_delta: -20, fault: false }, c.at(10_100)), []);
    assert_eq!(m.effective_priority(), 80);
    assert_eq!(m.handle(Event::Timer, c.at(11_000)), [Action::SendAdvert { priority: 80 }]);
    // A backup at 90 now wins: our master yields on its advert.
    assert_eq!(m.handle(advert(LOWER_IP, 90), c.at(11_200)).len(), 3);
    assert_eq!(m.state(), State::Backup);
    // Clamped to 1..=254.
    m.handle(Event::Tracking { priority_delta: -500, fault: false }, c.at(12_000));
    assert_eq!(m.effective_priority(), 1);
    m.handle(Event::Tracking { priority_delta: 500, fault: false }, c.at(12_000));
    assert_eq!(m.effective_priority(), 254);
    // The skew follows the effective priority.
    assert_eq!(m.skew_time(), Duration::from_micros(2 * 1_000_000 / 256));
    // Weight 0 failing: Fault.
    assert_eq!(
        m.handle(Event::Tracking { priority_delta: 0, fault: true }, c.at(13_000)),
        [Action::Notify(NotifyKind::Fault)]
    );
    // The owner keeps 255.
    let (mut m, c) = machine(v3(255));
    m.handle(Event::Tracking { priority_delta: -50, fault: false }, c.at(0));
    assert_eq!(m.effective_priority(), 255);
}

#[test]
fn own_adverts_are_ignored() {
    let (mut m, c) = machine(v3(100));
    m.handle(Event::Startup, c.at(0));
    m.handle(Event::Timer, c.at(10_000));
    assert_eq!(m.handle(advert(ME, 100), c.at(10_100)), []);
    assert_eq!(m.state(), State::Master);
}

#[test]
fn no_second_garp_set_when_the_delay_is_zero() {
    let (mut m, c) = machine(Params { garp_master_delay: Duration::ZERO, garp_master_repeat: 2, ..v3(255) });
    let actions = m.handle(Event::Startup, c.at(0));
    assert!(actions.contains(&Action::SendGarps { count: 2, reason: GarpReason::BecameMaster }));
    for t in (1000..20_000).step_by(1000) {
        assert_eq!(m.handle(Event::Timer, c.at(t)), [Action::SendAdvert { priority: 255 }]);
    }
}
