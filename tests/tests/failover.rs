//! Failover end to end (issue 5): two directors on the client segment, each
//! running lbd with a VRRP instance for the VIP, real servers as in the
//! other lab tests (DR: they answer the client directly).
//!
//! * A master crash (SIGKILL, so no priority-0 advert) moves the VIP to the
//!   backup within its master-down interval; the new master's gratuitous
//!   ARPs move the client; requests through the VIP work again; the old
//!   master takes the VIP back when it returns with `preempt`, not with
//!   `preempt = false` (keepalived's `nopreempt`).
//! * Connections open through the VIP before the crash go on to the same
//!   real server with connection sync, and are reset without it.
//! * Failover time, from the SIGKILL to the first request answered through
//!   the VIP, for advert intervals of 1 s and 0.1 s (printed).
//!
//! lbd beside Debian's keepalived is tested in `failover_keepalived.rs`; the
//! lab, the VRRP settings and the steps both share are in
//! `lb_tests::failover`.
//!
//! A SIGKILLed lbd leaves its XDP program attached (the link is pinned) and
//! the VIP on its interface, as a crash does. Where a test needs the dead
//! director to stop forwarding it removes that pin dir, which detaches the
//! program.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs root
//! (otherwise each test prints a message and passes).

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, ensure};
use lb_tests::failover::{
    TAKEOVER_SLACK, Vrrp, assert_forwards, configure, counter, crash, curl_vip, detach_dead, failover_lab, has_vip,
    real_name, restart_and_preempt, start_pair, vrrp_status, wait_client_moved_to, wait_for, wait_garps, wait_state,
    wait_vip_gone,
};
use lb_tests::lab::HOST_IFACE;
use lb_tests::netns::{self, watch_arp};
use lb_tests::scenario::{finish, root_or_skip, vip_url, vip80};
use lb_tests::{HeldConnection, Lab};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
/// Allowed on top of a master-down interval for the first answer through
/// the VIP: the gratuitous ARPs reaching the client, the probe's retry
/// period and the request itself.
const ANSWER_SLACK: Duration = Duration::from_millis(800);

// ---- crash, GARPs, preemption ---------------------------------------------

/// The master crashes; the backup takes the VIP within its master-down
/// interval and announces it; the old master returns and takes the VIP
/// back (preempt) or leaves it (nopreempt).
fn crash_and_return(name: &str, k: u8, preempt: bool) {
    let lab = failover_lab(LAB_SERVER, name, k);
    let (h1, h2) = (lab.directors()[0].clone(), lab.directors()[1].clone());
    let high = Vrrp::v3(200, 150);
    let low = Vrrp::v3(200, 100);
    let (mut d1, d2) = start_pair(&lab, &high, &low, false);

    // Only the master answers ARP for the VIP; it forwards.
    assert_eq!(lab.arp_probe_from_client(lab.vip()).unwrap(), vec![h1.mac]);
    let answer = curl_vip(&lab, Duration::from_secs(3));
    assert!(answer == "rs1" || answer == "rs2", "{answer:?}");
    assert!(counter(&d1, "conn_new") >= 1);
    assert_eq!(counter(&d2, "conn_new"), 0, "the backup forwarded nothing");

    // SIGKILL: no priority-0 advert; the backup waits out its master-down interval.
    let watch = watch_arp(&lab.client().ns, HOST_IFACE).unwrap();
    let killed = crash(&mut d1);
    detach_dead(&d1);
    wait_state(&d2, "master", low.master_down() + TAKEOVER_SLACK);
    let since_kill = killed.elapsed();
    eprintln!(
        "{name}: director2 master {:.3} s after the SIGKILL (master-down interval {:.3} s)",
        since_kill.as_secs_f64(),
        low.master_down().as_secs_f64()
    );
    assert!(
        since_kill <= low.master_down() + TAKEOVER_SLACK,
        "{since_kill:?}"
    );
    assert!(has_vip(&lab, &h2), "the new master holds the VIP");
    assert!(
        has_vip(&lab, &h1),
        "a crashed director keeps the VIP on its interface"
    );
    let garps = wait_garps(&lab, &watch, &h2);
    eprintln!("{name}: {garps} gratuitous ARPs from director2");
    wait_client_moved_to(&lab, &h2, Duration::from_secs(2));
    let answer = assert_forwards(&lab, &d2, "director2 forwarded the request");
    assert!(answer == "rs1" || answer == "rs2", "{answer:?}");
    drop(watch);

    // The old master comes back.
    let watch = watch_arp(&lab.client().ns, HOST_IFACE).unwrap();
    if preempt {
        let took = restart_and_preempt(&mut d1, &d2, &high);
        eprintln!(
            "{name}: director1 master again {:.3} s after its lbd answered",
            took.as_secs_f64()
        );
        wait_vip_gone(&lab, &h2, "the VIP gone from director2");
        assert!(has_vip(&lab, &h1));
        wait_garps(&lab, &watch, &h1);
        wait_client_moved_to(&lab, &h1, Duration::from_secs(2));
        assert_eq!(lab.arp_probe_from_client(lab.vip()).unwrap(), vec![h1.mac]);
        assert_forwards(&lab, &d1, "director1 forwards again");
    } else {
        configure(&mut d1, &high.nopreempt(), None);
        d1.start().unwrap();
        // Long enough to have taken over several times.
        let observe = (4 * high.master_down()).max(Duration::from_secs(2));
        wait_state(&d1, "backup", Duration::from_secs(2));
        // It removed the address its crashed run left behind.
        wait_vip_gone(&lab, &h1, "the stale VIP gone from director1");
        let end = Instant::now() + observe;
        while Instant::now() < end {
            assert_eq!(
                d1.vrrp_state().unwrap(),
                "backup",
                "nopreempt: director1 must not take over\n{}",
                d1.log()
            );
            assert_eq!(d2.vrrp_state().unwrap(), "master", "{}", d2.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        let s1 = vrrp_status(&d1);
        assert_eq!(s1["master_address"], h2.ip.to_string(), "{s1}");
        assert!(
            watch
                .gratuitous_for(lab.vip())
                .iter()
                .all(|a| a.sender_mac != h1.mac),
            "director1 announced the VIP"
        );
        assert!(has_vip(&lab, &h2) && !has_vip(&lab, &h1));
        assert_eq!(lab.arp_probe_from_client(lab.vip()).unwrap(), vec![h2.mac]);
        assert_forwards(&lab, &d2, "director2 still forwards");
    }
    drop(watch);

    // Clean stops: the master's priority-0 advert hands over at once.
    let (master, backup) = if preempt { (d1, d2) } else { (d2, d1) };
    let master_host = master.host().clone();
    finish(master);
    let took = wait_state(&backup, "master", low.skew() + TAKEOVER_SLACK);
    eprintln!(
        "{name}: after {}'s clean stop the other was master in {:.3} s (skew time {:.3} s)",
        master_host.name,
        took.as_secs_f64(),
        low.skew().as_secs_f64()
    );
    assert!(!has_vip(&lab, &master_host), "a clean stop removes the VIP");
    finish(backup);
    assert!(!has_vip(&lab, &lab.directors()[0]) && !has_vip(&lab, &lab.directors()[1]));
}

#[test]
fn master_crash_moves_the_vip_and_preemption_returns_it() {
    if !root_or_skip("master_crash_moves_the_vip_and_preemption_returns_it") {
        return;
    }
    crash_and_return("fo_preempt", 81, true);
}

#[test]
fn nopreempt_leaves_the_vip_on_the_new_master() {
    if !root_or_skip("nopreempt_leaves_the_vip_on_the_new_master") {
        return;
    }
    crash_and_return("fo_nopreempt", 82, false);
}

// ---- long-lived connections --------------------------------------------------

/// What became of a connection opened before the failover.
#[derive(Debug, PartialEq, Eq)]
enum After {
    /// Answered by this server.
    Answered(String),
    Reset,
    Stalled,
    Failed(String),
}

/// Asks `/whoami` again on a held connection.
fn ask_again(conn: &mut HeldConnection) -> After {
    conn.stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    match conn.ask("/whoami") {
        Ok(body) => After::Answered(
            body.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
        Err(e) => match e.downcast_ref::<std::io::Error>().map(|io| io.kind()) {
            Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) => {
                After::Reset
            }
            Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => After::Stalled,
            _ => After::Failed(format!("{e:#}")),
        },
    }
}

/// Interactive sessions (keep-alive HTTP, idle across the failover) and a
/// slow download, opened through the VIP before the master is killed.
fn long_lived_connections(name: &str, k: u8, sync: bool) {
    let lab = failover_lab(LAB_SERVER, name, k);
    let h2 = lab.directors()[1].clone();
    let high = Vrrp::v3(100, 150);
    let low = Vrrp::v3(100, 100);
    let (mut d1, d2) = start_pair(&lab, &high, &low, sync);

    let target = vip80(&lab);
    let mut held: Vec<HeldConnection> = (0..4)
        .map(|_| lab.hold_http_connection(&lab.client().ns, target).unwrap())
        .collect();
    let servers: Vec<String> = held.iter().map(|c| c.server.clone()).collect();
    assert!(
        servers.contains(&"rs1".to_owned()) && servers.contains(&"rs2".to_owned()),
        "{servers:?}"
    );
    let slow_seconds: usize = 6;
    let url = vip_url(&lab, &format!("/slow?seconds={slow_seconds}"));
    let download = lab
        .spawn(
            &lab.client().ns,
            "slow-download",
            &["curl", "-sS", "-N", "--max-time", "30", &url],
        )
        .unwrap();
    // The download has begun (its first line is there).
    wait_for(
        "the slow download's first line",
        Duration::from_secs(5),
        || (!lab.read_log(&download).is_empty()).then_some(()),
    )
    .unwrap();

    if sync {
        // The backup has every connection, with the same real server.
        let wanted: Vec<(SocketAddrV4, String)> =
            held.iter().map(|c| (c.local, c.server.clone())).collect();
        let result = wait_for(
            "the held connections synced to director2",
            Duration::from_secs(5),
            || {
                let entries = d2.connection_entries().ok()?;
                wanted
                    .iter()
                    .all(|(local, server)| {
                        entries.iter().any(|e| {
                            e.source == *local && real_name(&lab, *e.destination.ip()) == *server
                        })
                    })
                    .then_some(entries.len())
            },
        );
        let (entries, took) = result.unwrap_or_else(|e| {
            panic!(
                "{e:#}\ndirector2's entries: {:?}\nits log:\n{}",
                d2.connection_entries(),
                d2.log()
            )
        });
        eprintln!(
            "{name}: {entries} entries on director2 within {:.3} s",
            took.as_secs_f64()
        );
    } else {
        std::thread::sleep(Duration::from_millis(500));
        let entries = d2.connection_entries().unwrap();
        assert!(
            entries.is_empty(),
            "no sync, yet director2 has entries: {entries:?}"
        );
    }

    // lbd crashes; its XDP program forwards on until the client moves.
    let watch = watch_arp(&lab.client().ns, HOST_IFACE).unwrap();
    let killed = crash(&mut d1);
    wait_state(&d2, "master", low.master_down() + TAKEOVER_SLACK);
    wait_garps(&lab, &watch, &h2);
    wait_client_moved_to(&lab, &h2, Duration::from_secs(2));
    eprintln!(
        "{name}: the client moved to director2 {:.3} s after the SIGKILL",
        killed.elapsed().as_secs_f64()
    );
    // From here on only director2 can forward.
    detach_dead(&d1);

    let not_syn_before = counter(&d2, "pass_tcp_not_syn");
    let after: Vec<After> = held.iter_mut().map(ask_again).collect();
    eprintln!("{name}: held connections after the failover: {after:?} (were {servers:?})");
    // New connections work either way.
    let answer = curl_vip(&lab, Duration::from_secs(3));
    assert!(answer == "rs1" || answer == "rs2", "{answer:?}");

    let (status, output) = {
        let _ = wait_for(
            "the slow download to end",
            Duration::from_secs(2 * slow_seconds as u64 + 10),
            || (!lab.is_running(&download)).then_some(()),
        );
        let status = lab.stop(&download).unwrap();
        (status, lab.read_log(&download))
    };
    // The server's lines (curl's error message, if any, aside).
    let lines: Vec<&str> = output.lines().filter(|l| l.starts_with("rs")).collect();
    eprintln!(
        "{name}: slow download: {status}, {} lines: {:?}",
        lines.len(),
        lines
    );

    if sync {
        for (a, server) in after.iter().zip(&servers) {
            assert_eq!(
                *a,
                After::Answered(server.clone()),
                "every session goes on, on its own server"
            );
        }
        assert!(
            status.success(),
            "the download finished: {status}\n{output}"
        );
        assert_eq!(lines.len(), slow_seconds, "{output}");
        assert!(
            lines.iter().all(|l| *l == lines[0]),
            "one server all along: {output}"
        );
    } else {
        for a in &after {
            assert!(
                matches!(a, After::Reset | After::Stalled),
                "without sync the session breaks: {a:?}"
            );
        }
        // Why: the new master knows none of them; not SYNs, they go to its
        // kernel, which holds the VIP and answers with a reset.
        assert!(counter(&d2, "pass_tcp_not_syn") > not_syn_before);
        assert!(
            !status.success(),
            "without sync the download breaks: {status}\n{output}"
        );
        assert!(lines.len() < slow_seconds, "{output}");
    }
    drop(held);
    finish(d2);
}

#[test]
fn long_lived_connections_survive_failover_with_sync() {
    if !root_or_skip("long_lived_connections_survive_failover_with_sync") {
        return;
    }
    long_lived_connections("fo_sync", 83, true);
}

#[test]
fn long_lived_connections_break_on_failover_without_sync() {
    if !root_or_skip("long_lived_connections_break_on_failover_without_sync") {
        return;
    }
    long_lived_connections("fo_nosync", 84, false);
}

// ---- failover time ----------------------------------------------------------

/// One GET through the VIP on a new connection (HTTP/1.1, close); the body.
fn get_once(target: SocketAddrV4, timeout: Duration) -> Result<String> {
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

/// From the client: GETs through the VIP every 10 ms until one is answered;
/// the time since `since` and the number of attempts.
fn first_answer(lab: &Lab, since: Instant, timeout: Duration) -> Result<(Duration, u32)> {
    let target = vip80(lab);
    netns::run_in_netns(&lab.client().ns, move || {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match get_once(target, Duration::from_millis(200)) {
                Ok(_) => return Ok((since.elapsed(), attempts)),
                Err(e) if since.elapsed() >= timeout => {
                    return Err(e).context(format!("no answer through the VIP within {timeout:?}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    })?
}

/// The wall-clock time of the last log line containing `needle`
/// (tracing's `2025-01-02T03:04:05.678901Z` prefix), as seconds of the day.
fn log_time_of_day(log: &str, needle: &str) -> Option<f64> {
    let line = log.lines().rev().find(|l| l.contains(needle))?;
    let t = line
        .split_whitespace()
        .next()?
        .split_once('T')?
        .1
        .trim_end_matches('Z');
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn time_of_day(t: SystemTime) -> f64 {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() % 86_400) as f64 + f64::from(d.subsec_nanos()) / 1e9
}

/// A pseudo-random duration in [0, `max`) (from the clock's nanoseconds).
fn random_fraction(max: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    max.mul_f64(f64::from(nanos % 1_000_000) / 1_000_000.0)
}

/// Kills the master `runs` times and measures how long until the client
/// gets an answer through the VIP again (the dead director detached at
/// once, so only the new master can answer); the old master is restarted
/// and preempts between runs.
fn measure_failover(name: &str, k: u8, interval_ms: u64, runs: usize) {
    let lab = failover_lab(LAB_SERVER, name, k);
    let h1 = lab.directors()[0].clone();
    let high = Vrrp::v3(interval_ms, 150);
    let low = Vrrp::v3(interval_ms, 100);
    let (mut d1, d2) = start_pair(&lab, &high, &low, false);
    let label = if interval_ms >= 1000 {
        format!("{}s", interval_ms / 1000)
    } else {
        format!("{:.1}s", interval_ms as f64 / 1000.0)
    };
    let mdi = low.master_down();
    let mut times = Vec::new();
    for run in 1..=runs {
        curl_vip(&lab, Duration::from_secs(3));
        let before = counter(&d2, "conn_new");
        // At a random point of the advert period: the takeover comes one
        // master-down interval after the last advert heard, so anywhere
        // from (master-down - interval) to master-down after the kill.
        std::thread::sleep(random_fraction(high.interval));
        let wall = SystemTime::now();
        let killed = crash(&mut d1);
        detach_dead(&d1);
        let (took, attempts) = first_answer(&lab, killed, mdi + Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e:#}\ndirector2's log:\n{}", d2.log()));
        let master_at = log_time_of_day(&d2.log(), "VRRP BACKUP -> MASTER")
            .map(|t| format!("{:.3} s", t - time_of_day(wall)))
            .unwrap_or_else(|| "?".into());
        eprintln!(
            "failover with advert_interval {label} (run {run}): {:.3} s from the SIGKILL to the first answer \
             through the VIP ({attempts} attempts; director2 master after {master_at}; master-down interval {:.3} s)",
            took.as_secs_f64(),
            mdi.as_secs_f64()
        );
        assert!(
            counter(&d2, "conn_new") > before,
            "the answer came through director2"
        );
        // Never sooner than the last advert heard + the master-down interval.
        // (50 ms for the master's advert timer running late.)
        assert!(
            took + low.interval + Duration::from_millis(50) >= mdi,
            "{took:?}: faster than possible (master-down interval {mdi:?})"
        );
        assert!(
            took <= mdi + ANSWER_SLACK,
            "failover took {took:?}; expected at most {mdi:?} + {ANSWER_SLACK:?}"
        );
        times.push(took);
        if run < runs {
            // Back to the start: director1 master again, the client with it.
            restart_and_preempt(&mut d1, &d2, &high);
            wait_client_moved_to(&lab, &h1, Duration::from_secs(3));
        }
    }
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    eprintln!(
        "failover with advert_interval {label}: mean {:.3} s over {runs} runs (each {:?})",
        mean.as_secs_f64(),
        times
            .iter()
            .map(|t| format!("{:.3}", t.as_secs_f64()))
            .collect::<Vec<_>>()
    );
    finish(d2);
}

#[test]
fn failover_time_with_advert_interval_1s() {
    if !root_or_skip("failover_time_with_advert_interval_1s") {
        return;
    }
    measure_failover("fo_time_1s", 85, 1000, 2);
}

#[test]
fn failover_time_with_advert_interval_100ms() {
    if !root_or_skip("failover_time_with_advert_interval_100ms") {
        return;
    }
    measure_failover("fo_time_100ms", 86, 100, 3);
}
