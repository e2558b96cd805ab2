//! lbctl's change transaction: ipvsadm commands carried out all or none.
//! [`plan`] checks them with ipvsadm's rules on a copy of the table in
//! force and touches nothing; [`change`] then checks the new real servers
//! against the host and makes the copy the table in force, or refuses and
//! nothing has changed.

use std::{collections::BTreeSet, net::IpAddr, sync::Mutex, time::Duration};

use lb_ipvsadm::{command::Command, control::Response, error::KernelError, snapshot::Timeouts};
use tracing::info;

use super::lock;
use crate::{
    commands::{self, CommandError},
    config::ServiceConfig,
    controller::Controller,
    environment,
    model::{Forwarding, ServiceId},
    netinfo::Net,
};

/// What a batch of commands comes to, before anything is applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The table after the table commands (`-A -E -D -C -a -e -d`).
    pub table: Vec<ServiceConfig>,
    /// `-Z`: whose counters to zero, in order (`None`: every service's).
    pub zero: Vec<Option<ServiceId>>,
    /// `--set`: the last timeouts given.
    pub timeouts: Option<Timeouts>,
}

/// Checks `commands` in order on a copy of `table` (the table in force;
/// `file` is the config file's, whose health checks servers added again
/// get): the change they make, or the first one's refusal.
pub fn plan(table: &[ServiceConfig], file: &[ServiceConfig], commands: &[Command]) -> Result<Change, CommandError> {
    let mut change = Change { table: table.to_vec(), zero: Vec::new(), timeouts: None };
    for command in commands {
        // What lbctl refuses too: the sync daemons, NAT for firewall-mark services, ...
        if let Some(reason) = command.unsupported_reason() {
            return Err(CommandError::unsupported(reason));
        }
        match command {
            Command::Zero(Some(vs)) => {
                let id = Some(commands::service_id(vs))
                    .filter(|id| change.table.iter().any(|s| s.id() == *id))
                    .ok_or(CommandError::kernel(KernelError::NoSuchService))?;
                change.zero.push(Some(id));
            }
            Command::Zero(None) => change.zero.push(None),
            Command::SetTimeouts(t) => change.timeouts = Some(*t),
            _ => commands::apply(&mut change.table, command, file)?,
        }
    }
    Ok(change)
}

/// The real servers of `after` that `before` does not have in the same
/// service with the same forwarding method, in table order: they must fit
/// the host, as in a config file.
pub fn new_reals(before: &[ServiceConfig], after: &[ServiceConfig]) -> Vec<(IpAddr, Forwarding)> {
    let mut new = Vec::new();
    for svc in after {
        for real in &svc.reals {
            let known = before.iter().any(|b| {
                b.id() == svc.id()
                    && b.reals.iter().any(|r| (r.address, r.forwarding) == (real.address, real.forwarding))
            });
            if !known {
                new.push((real.address, real.forwarding));
            }
        }
    }
    new
}

/// Carries out ipvsadm commands from lbctl, all or none: each is checked
/// (ipvsadm's rules, then the host for new real servers) on a copy of the
/// table, which replaces the live one only if every command passed.
pub(super) async fn change(commands: &[Command], net: &Net, shared: &Mutex<Controller>) -> Response {
    let refused = |message: String, exit_code: i32| Response::Refused { message, exit_code };
    let (before, interfaces, file, has_fullnat_sources) = {
        let c = lock(shared);
        (c.table().to_vec(), c.interfaces.clone(), c.config.services.clone(), !c.config.director.fullnat_source.is_empty())
    };
    let Change { table, zero, timeouts } = match plan(&before, &file, commands) {
        Ok(change) => change,
        Err(e) => return refused(e.message, e.exit_code),
    };
    for (address, forwarding) in new_reals(&before, &table) {
        if let Err(message) = environment::check_real(net, &interfaces, address, forwarding).await {
            return refused(message, 1);
        }
        if forwarding == Forwarding::FullNat && !has_fullnat_sources {
            return refused("full NAT needs local addresses for the clients' side: [director] fullnat_source".into(), 1);
        }
    }
    let changed = table != before;
    if changed {
        let paths = environment::paths(&table, net, &interfaces).await;
        let missing: Vec<_> = {
            let c = lock(shared);
            let unresolved: BTreeSet<_> = c.unresolved().into_iter().collect();
            environment::next_hop_addresses(&paths)
                .into_iter()
                .filter(|a| unresolved.contains(a) || !c.next_hops().contains(a))
                .collect()
        };
        let macs = environment::resolve_macs(net, &missing, Duration::from_secs(1)).await;
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
        let now = c.config.director.timeouts;
        info!("lbctl: timeouts now tcp {} tcpfin {} udp {}", now.tcp, now.tcpfin, now.udp);
    }
    for service in zero {
        if let Err(e) = c.zero(service) {
            return refused(format!("{e:#}"), 1);
        }
    }
    Response::Done
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use lb_ipvsadm::{grammar::parse, names::Names};

    use super::*;
    use crate::{
        config::Config,
        health::HealthCheck,
        model::{Protocol, Scheduler},
    };

    /// The config file's table: one service with a health check, and one
    /// real server with its own.
    const FILE: &str = r#"
[director]
interface = "eth0"

[[service]]
vip = "10.0.0.100:80"
scheduler = "wrr"

[service.health_check]
kind = "tcp"
retry = 5

[[service.real]]
address = "10.0.0.21"
weight = 3

[service.real.health_check]
port = 8081

[[service]]
fwmark = 1
match = [{ vip = "10.0.0.100", ports = [80, 443] }]
persistence_timeout = 300

[[service.real]]
address = "10.0.0.21"
"#;

    fn file() -> Vec<ServiceConfig> {
        Config::parse(FILE, Path::new("lb.toml")).unwrap().services
    }

    fn commands(lines: &[&str]) -> Vec<Command> {
        lines
            .iter()
            .map(|line| parse(&line.split_whitespace().collect::<Vec<_>>(), &Names::default()).unwrap())
            .collect()
    }

    fn vip() -> IpAddr {
        IpAddr::from([10, 0, 0, 100])
    }

    #[test]
    fn a_batch_is_planned_in_order() {
        let change = plan(
            &[],
            &[],
            &commands(&[
                "-A -t 10.0.0.100:80 -s rr",
                "-a -t 10.0.0.100:80 -r 10.0.0.21 -g -w 2",
                "-a -t 10.0.0.100:80 -r 10.0.0.22 -i",
                "-e -t 10.0.0.100:80 -r 10.0.0.21 -g -w 5",
                "-Z -t 10.0.0.100:80",
                "--set 600 0 0",
                "-Z",
                "--set 0 60 0",
            ]),
        )
        .unwrap();
        assert_eq!(change.table.len(), 1);
        let reals: Vec<_> = change.table[0].reals.iter().map(|r| (r.address, r.weight, r.forwarding)).collect();
        assert_eq!(
            reals,
            [(IpAddr::from([10, 0, 0, 21]), 5, Forwarding::Dr), (IpAddr::from([10, 0, 0, 22]), 1, Forwarding::Tun)]
        );
        assert_eq!(change.zero, [Some(ServiceId::address(Protocol::Tcp, vip(), 80)), None]);
        // The last --set counts (0 keeps a timeout: the controller's to apply).
        assert_eq!(change.timeouts, Some(Timeouts { tcp: 0, tcpfin: 60, udp: 0 }));
        // Only what is new must be checked against the host.
        assert_eq!(
            new_reals(&[], &change.table),
            [(IpAddr::from([10, 0, 0, 21]), Forwarding::Dr), (IpAddr::from([10, 0, 0, 22]), Forwarding::Tun)]
        );
    }

    #[test]
    fn one_refused_command_refuses_the_batch() {
        let table = plan(&[], &[], &commands(&["-A -t 10.0.0.100:80 -s rr", "-a -t 10.0.0.100:80 -r 10.0.0.21"]))
            .unwrap()
            .table;
        for (batch, message, exit_code) in [
            (
                &["-a -t 10.0.0.100:80 -r 10.0.0.22", "-a -t 10.0.0.100:80 -r 10.0.0.21", "-C"][..],
                "Destination already exists",
                255,
            ),
            (&["-D -t 10.0.0.100:80", "-Z -t 10.0.0.100:80"], "No such service", 255),
            (&["-Z -t [2001:db8::1]:80"], "No such service", 255),
            (
                &["-A -t [2001:db8::1]:80", "-a -t [2001:db8::1]:80 -r [2001:db8::21]:80 -m"],
                lb_ipvsadm::command::IPV6_DR_TUN_ONLY,
                2,
            ),
            (&["-C", "-a -t 10.0.0.100:80 -r 10.0.0.21"], "Service not defined", 255),
            // Firewall-mark services: only with the matches of the file
            // (this batch's file has none), by -g or -i.
            (&["-C", "-A -f 1 -s rr"], "fwmark 1 has no `match` in the config file", 2),
            (&["-a -f 2 -6 -r 2001:db8::21 -g"], "Service not defined", 255),
            (&["-Z -f 1"], "No such service", 255),
            (&["-a -f 1 -r 10.0.0.21 -m"], lb_ipvsadm::command::FWMARK_DR_TUN_ONLY, 2),
        ] {
            let e = plan(&table, &[], &commands(batch)).unwrap_err();
            assert!(e.message.contains(message), "{batch:?}: {e}");
            assert_eq!(e.exit_code, exit_code, "{batch:?}");
        }
    }

    #[test]
    fn a_service_added_again_gets_the_files_settings() {
        let file = file();
        // -C; -R of what -S wrote: the file's health checks come back.
        let batch = commands(&[
            "-C",
            "-A -t 10.0.0.100:80 -s wrr",
            "-a -t 10.0.0.100:80 -r 10.0.0.21 -g -w 3",
            "-a -t 10.0.0.100:80 -r 10.0.0.22 -g -w 1",
        ]);
        let change = plan(&file[..1], &file, &batch).unwrap();
        let svc = &change.table[0];
        assert_eq!((svc.scheduler, svc.health.clone()), (Scheduler::Wrr, file[0].health.clone()));
        // The server the file has gets its own check, the other its service's.
        assert_eq!(svc.reals[0].health, file[0].reals[0].health);
        assert_eq!(svc.reals[1].health, file[0].health);
        assert_ne!(svc.reals[0].health, HealthCheck::default());
        // 10.0.0.21 was there before, with the same forwarding: not new.
        assert_eq!(new_reals(&file, &change.table), [(IpAddr::from([10, 0, 0, 22]), Forwarding::Dr)]);
    }

    #[test]
    fn a_firewall_mark_service_takes_its_matches_from_the_file() {
        let file = file();
        let batch = commands(&["-C", "-A -f 1 -s wlc -p 300", "-a -f 1 -r 10.0.0.22:0 -g -w 2", "-Z -f 1"]);
        let change = plan(&file, &file, &batch).unwrap();
        let svc = &change.table[0];
        assert_eq!(svc.id(), ServiceId::fwmark(1, false));
        assert_eq!((svc.matches.clone(), svc.options.persistence_timeout), (file[1].matches.clone(), Some(300)));
        let reals: Vec<_> = svc.reals.iter().map(|r| (r.address, r.port, r.weight)).collect();
        assert_eq!(reals, [(IpAddr::from([10, 0, 0, 22]), 0, 2)], "a server listens on each packet's port");
        assert_eq!(change.zero, [Some(ServiceId::fwmark(1, false))]);
        // The file has no IPv6 mark 1: nothing tells which packets it takes.
        let e = plan(&file, &file, &commands(&["-A -f 1 -6 -s rr"])).unwrap_err();
        assert!(e.message.contains("fwmark 1 IPv6 has no `match` in the config file"), "{e}");
        let e = plan(&file, &file, &commands(&["-A -f 1 -s rr"])).unwrap_err();
        assert_eq!(e.message, "Service already exists");
    }
}
