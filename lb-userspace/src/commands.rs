//! ipvsadm's table commands (`-A -E -D -C -a -e -d`) applied to the
//! virtual-server table, with the kernel's rules and ipvsadm's messages.
//! Pure: the controller checks the result against the host and applies it
//! to the datapath, or drops it and nothing has changed.

use std::net::IpAddr;

use lb_common::{MAX_REALS_PER_SERVICE, MAX_SERVICES, sched::MAX_SEQUENCE_LEN};
use lb_ipvsadm::{
    command::{
        Command, Family, IPV6_DR_TUN_ONLY, MIXED_FAMILIES_UNSUPPORTED, SchedFlags, ServerArgs, ServiceArgs,
        VirtualService,
    },
    error::KernelError,
};

use crate::{
    config::{MAX_WEIGHT, RealConfig, ServiceConfig},
    health::{HealthCheck, Quorum},
    model::{Forwarding, MarkMatch, SCHED_FLAGS, Scheduler, ServiceId, ServiceOptions, stateless_fallback_bits},
};

/// Why a command changes nothing: ipvsadm's message and exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandError {
    pub message: String,
    pub exit_code: i32,
}

impl CommandError {
    pub fn kernel(e: KernelError) -> Self {
        Self { message: e.message().to_string(), exit_code: e.exit_code() }
    }

    /// Something ipvsadm would accept that this load balancer cannot do.
    pub fn unsupported(what: &str) -> Self {
        Self { message: what.to_string(), exit_code: 2 }
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The service lbctl names.
pub fn service_id(vs: &VirtualService) -> ServiceId {
    match vs {
        VirtualService::Address(a) => ServiceId::address(a.protocol, a.addr, a.port),
        VirtualService::Fwmark(f) => ServiceId::fwmark(f.mark, f.family == Family::Ipv6),
    }
}

fn find(table: &[ServiceConfig], vs: &VirtualService) -> Option<usize> {
    let id = service_id(vs);
    table.iter().position(|s| s.id() == id)
}

/// A firewall-mark service's matches, which only the config file gives:
/// lbd cannot see the firewall rule that would mark the packets.
fn file_matches(file: &[ServiceConfig], id: ServiceId) -> Result<Vec<MarkMatch>, CommandError> {
    match file.iter().find(|s| s.id() == id) {
        Some(s) => Ok(s.matches.clone()),
        None => Err(CommandError::unsupported(&format!(
            "{id} has no `match` in the config file: lbd sees no firewall rule, so a firewall-mark service \
             takes the packets its [[service]] table (fwmark = {}) lists in `match`; add it there first",
            id.fwmark
        ))),
    }
}

/// Carries out one table command on `table` (a copy: on an error it may be
/// half changed). `file` is the config file's table: a service or server
/// it has keeps the file's health check and failure settings when added
/// again (so `-S | -C; -R` restores them too). Other commands are not table
/// changes and leave it alone.
pub fn apply(table: &mut Vec<ServiceConfig>, command: &Command, file: &[ServiceConfig]) -> Result<(), CommandError> {
    match command {
        Command::AddService(c) => {
            if find(table, &c.service).is_some() {
                return Err(CommandError::kernel(KernelError::ServiceExists));
            }
            if table.len() >= MAX_SERVICES as usize {
                return Err(CommandError::kernel(KernelError::MemoryAllocation));
            }
            let id = service_id(&c.service);
            let matches = if id.fwmark != 0 { file_matches(file, id)? } else { Vec::new() };
            let scheduler = c.ipvsadm_scheduler();
            let mut svc = ServiceConfig {
                line: 0,
                protocol: id.protocol,
                vip: id.vip,
                port: id.port,
                fwmark: id.fwmark,
                matches,
                scheduler,
                options: service_options(c, scheduler),
                forwarding: Forwarding::Dr,
                reals: Vec::new(),
                health: HealthCheck::default(),
                sorry_server: None,
                quorum: Quorum::default(),
                quorum_up: None,
                quorum_down: None,
                drain_on_failure: false,
            };
            if let Some(f) = find(file, &c.service).map(|i| &file[i]) {
                svc.health = f.health.clone();
                svc.sorry_server = f.sorry_server;
                svc.quorum = f.quorum;
                svc.quorum_up = f.quorum_up.clone();
                svc.quorum_down = f.quorum_down.clone();
                svc.drain_on_failure = f.drain_on_failure;
                svc.forwarding = f.forwarding;
                if f.options.flags & lb_common::service_flag::STATELESS_FALLBACK != 0 {
                    svc.options.flags |= stateless_fallback_bits(scheduler).unwrap_or(0);
                }
            }
            table.push(svc);
        }
        Command::EditService(c) => {
            let i = find(table, &c.service).ok_or(CommandError::kernel(KernelError::NoSuchService))?;
            let svc = &mut table[i];
            // Without -s the scheduler stays (ipvsadm would reset it to wlc).
            let scheduler = c.scheduler.unwrap_or(svc.scheduler);
            svc.scheduler = scheduler;
            // What ipvsadm has no option for stays as the config set it:
            // the stateless fallback only with a scheduler that allows it,
            // as the config says.
            let mut kept = svc.options.flags & lb_common::service_flag::SLOPPY_TCP;
            if svc.options.flags & lb_common::service_flag::STATELESS_FALLBACK != 0 {
                kept |= stateless_fallback_bits(scheduler).ok_or_else(|| {
                    CommandError::unsupported(&format!(
                        "{} has stateless_fallback, which needs scheduler mh or sh, not {scheduler}",
                        svc.id()
                    ))
                })?;
            }
            svc.options = ServiceOptions { flags: service_options(c, scheduler).flags | kept, ..service_options(c, scheduler) };
        }
        Command::DeleteService(vs) => {
            let i = find(table, vs).ok_or(CommandError::kernel(KernelError::NoSuchService))?;
            table.remove(i);
        }
        Command::Clear => table.clear(),
        Command::AddServer(c) => {
            let i = find(table, &c.service).ok_or(CommandError::kernel(KernelError::ServiceNotDefined))?;
            let mut real = real_from(c, &table[i])?;
            // The file's check for this server, else its service's.
            real.health = find(file, &c.service)
                .and_then(|f| file[f].reals.iter().find(|r| r.address == real.address))
                .map_or_else(|| table[i].health.clone(), |r| r.health.clone());
            let svc = &mut table[i];
            if svc.reals.iter().any(|r| r.address == real.address) {
                return Err(CommandError::kernel(KernelError::DestinationExists));
            }
            if svc.reals.len() >= MAX_REALS_PER_SERVICE as usize {
                return Err(CommandError::kernel(KernelError::MemoryAllocation));
            }
            svc.reals.push(real);
        }
        Command::EditServer(c) => {
            let i = find(table, &c.service).ok_or(CommandError::kernel(KernelError::ServiceNotDefined))?;
            let real = real_from(c, &table[i])?;
            let svc = &mut table[i];
            let r = svc
                .reals
                .iter_mut()
                .find(|r| r.address == real.address)
                .ok_or(CommandError::kernel(KernelError::NoSuchDestination))?;
            // The health check, from the config, stays with the server.
            let health = std::mem::take(&mut r.health);
            *r = RealConfig { health, line: r.line, address_line: r.address_line, ..real };
        }
        Command::DeleteServer { service, server } => {
            let i = find(table, service).ok_or(CommandError::kernel(KernelError::ServiceNotDefined))?;
            let address = server.ip();
            let svc = &mut table[i];
            let before = svc.reals.len();
            svc.reals.retain(|r| r.address != address);
            if svc.reals.len() == before {
                return Err(CommandError::kernel(KernelError::NoSuchDestination));
            }
        }
        _ => {}
    }
    check_table(table)
}

/// The model's options for a service of `-A`/`-E` under `scheduler` (the
/// flags' meaning depends on it). The grammar gives the netmask in the
/// service's family.
fn service_options(c: &ServiceArgs, scheduler: Scheduler) -> ServiceOptions {
    ServiceOptions {
        flags: sched_flag_bits(c.sched_flags, scheduler),
        persistence_timeout: c.persistence_timeout,
        persistence_netmask: c.netmask,
    }
}

/// The datapath's `lb_common::service_flag` bits for `-b` flags under
/// `scheduler` (flags another scheduler would read are dropped, as IPVS
/// ignores them).
fn sched_flag_bits(flags: SchedFlags, scheduler: Scheduler) -> u16 {
    flags
        .names(scheduler.name())
        .iter()
        .filter_map(|name| SCHED_FLAGS.iter().find(|(n, _)| n == name).map(|(_, bit)| *bit))
        .fold(0, |acc, bit| acc | bit)
}

/// A real server from `-a`/`-e`: for DR and TUN its port is the service's
/// (as ipvsadm sets it: only masquerading maps ports), for NAT the one
/// given, else the service's. IPv6 only as the config has it: in an IPv6
/// service, by direct routing.
fn real_from(c: &ServerArgs, svc: &ServiceConfig) -> Result<RealConfig, CommandError> {
    let address = c.server.ip();
    if address.is_unspecified() || address.is_multicast() || matches!(address, IpAddr::V4(a) if a.is_broadcast()) {
        return Err(CommandError::kernel(KernelError::InvalidOperation));
    }
    if address.is_ipv6() != svc.vip.is_ipv6() {
        // ipvsadm allows it for tunnelling; the datapath tunnels IPv4 in IPv4 only.
        return Err(CommandError::unsupported(MIXED_FAMILIES_UNSUPPORTED));
    }
    if address.is_ipv6() && matches!(c.forwarding, Forwarding::Nat | Forwarding::FullNat) {
        return Err(CommandError::unsupported(IPV6_DR_TUN_ONLY));
    }
    if c.weight > MAX_WEIGHT {
        return Err(CommandError::kernel(KernelError::OutOfRange));
    }
    if c.upper_threshold != 0 && c.lower_threshold > c.upper_threshold
        || c.upper_threshold == 0 && c.lower_threshold != 0
    {
        return Err(CommandError::kernel(KernelError::OutOfRange));
    }
    Ok(RealConfig {
        line: 0,
        address_line: 0,
        address,
        port: if matches!(c.forwarding, Forwarding::Nat | Forwarding::FullNat) && c.server.port() != 0 && svc.port != 0 {
            c.server.port()
        } else {
            svc.port
        },
        weight: c.weight,
        forwarding: c.forwarding,
        upper_threshold: c.upper_threshold,
        lower_threshold: c.lower_threshold,
        health: HealthCheck::default(),
    })
}

/// What the config's validation would also refuse of a whole table.
fn check_table(table: &[ServiceConfig]) -> Result<(), CommandError> {
    for svc in table {
        if svc.scheduler == Scheduler::Wrr {
            let weights: Vec<u32> = svc.reals.iter().map(|r| r.weight).collect();
            if lb_common::sched::wrr_period(&weights) > MAX_SEQUENCE_LEN as u64 {
                return Err(CommandError {
                    message: format!(
                        "wrr weights of {} give a sequence over {MAX_SEQUENCE_LEN} picks: use smaller weights",
                        svc.id()
                    ),
                    exit_code: 1,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use lb_ipvsadm::{command::Netmask, grammar::parse, names::Names};

    fn run(table: &mut Vec<ServiceConfig>, line: &str) -> Result<(), CommandError> {
        let args: Vec<&str> = line.split_whitespace().collect();
        let cmd =
            parse(&args, &Names::default()).map_err(|e| CommandError { message: e.message, exit_code: e.exit_code })?;
        apply(table, &cmd, &[])
    }

    #[test]
    fn ipv6_services_by_direct_routing() {
        let mut t = Vec::new();
        for line in [
            "-A -t [2001:db8::100]:80 -s sh -p 60 -M 64",
            "-a -t [2001:db8::100]:80 -r [2001:db8::21]:80 -g -w 3",
            "-a -t [2001:db8::100]:80 -r [2001:db8::22]:80 -w 2",
            "-d -t [2001:db8::100]:80 -r [2001:db8::22]:80",
        ] {
            run(&mut t, line).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        assert_eq!(t[0].vip, "2001:db8::100".parse::<IpAddr>().unwrap());
        assert_eq!(t[0].options.persistence_netmask, Netmask::V6(64));
        let reals: Vec<_> = t[0].reals.iter().map(|r| (r.address.to_string(), r.port, r.forwarding)).collect();
        assert_eq!(reals, [("2001:db8::21".to_string(), 80, Forwarding::Dr)]);
        let nat = "-a -t [2001:db8::100]:80 -r [2001:db8::23]:80 -m";
        assert_eq!(run(&mut t, nat).map_err(|e| e.message), Err(IPV6_DR_TUN_ONLY.to_string()));
        run(&mut t, "-a -t [2001:db8::100]:80 -r [2001:db8::23]:80 -i").unwrap();
        assert_eq!(t[0].reals[1].forwarding, Forwarding::Tun);
        // ipvsadm's grammar lets tunnelling cross families; the datapath cannot.
        run(&mut t, "-A -t 10.0.0.100:80").unwrap();
        assert_eq!(
            run(&mut t, "-a -t 10.0.0.100:80 -r [2001:db8::23]:80 -i").map_err(|e| e.message),
            Err(MIXED_FAMILIES_UNSUPPORTED.to_string())
        );
    }

    #[test]
    fn the_classic_director_script() {
        let mut t = Vec::new();
        for line in [
            "-C",
            "-A -t 10.0.0.100:80 -s wlc",
            "-a -t 10.0.0.100:80 -r 10.0.0.21 -g -w 3",
            "-a -t 10.0.0.100:80 -r 10.0.0.22:80 -g -w 2",
            "-E -t 10.0.0.100:80 -s rr",
            "-e -t 10.0.0.100:80 -r 10.0.0.21 -g -w 5",
            "-d -t 10.0.0.100:80 -r 10.0.0.22",
        ] {
            run(&mut t, line).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].scheduler, Scheduler::Rr);
        assert_eq!(t[0].reals.len(), 1);
        assert_eq!((t[0].reals[0].weight, t[0].reals[0].port), (5, 80));
    }

    #[test]
    fn service_options_follow_the_scheduler() {
        let line = "-A -t 10.0.0.1:80 -s sh -b sh-port,flag-1 -p 30 -M 255.255.0.0";
        let args = match parse(&line.split_whitespace().collect::<Vec<_>>(), &Names::default()) {
            Ok(Command::AddService(c)) => c,
            c => panic!("{c:?}"),
        };
        assert_eq!(
            service_options(&args, Scheduler::Sh),
            ServiceOptions {
                flags: lb_common::service_flag::SH_FALLBACK | lb_common::service_flag::SH_PORT,
                persistence_timeout: Some(30),
                persistence_netmask: Netmask::V4(Ipv4Addr::new(255, 255, 0, 0)),
            }
        );
        // The flags mean nothing to another scheduler.
        assert_eq!(service_options(&args, Scheduler::Rr).flags, 0);
        assert_eq!(
            sched_flag_bits(SchedFlags(3), Scheduler::Mh),
            lb_common::service_flag::MH_FALLBACK | lb_common::service_flag::MH_PORT
        );
    }

    #[test]
    fn bad_commands_change_nothing_and_say_what_ipvsadm_says() {
        let mut t = Vec::new();
        run(&mut t, "-A -t 10.0.0.100:80 -s rr").unwrap();
        run(&mut t, "-a -t 10.0.0.100:80 -r 10.0.0.21").unwrap();
        let before = t.clone();
        for (line, message) in [
            ("-A -t 10.0.0.100:80", "Service already exists"),
            ("-E -t 10.0.0.101:80 -s rr", "No such service"),
            ("-D -t 10.0.0.101:80", "No such service"),
            ("-a -t 10.0.0.101:80 -r 10.0.0.21", "Service not defined"),
            ("-a -t 10.0.0.100:80 -r 10.0.0.21", "Destination already exists"),
            ("-e -t 10.0.0.100:80 -r 10.0.0.99", "No such destination"),
            ("-d -t 10.0.0.100:80 -r 10.0.0.99", "No such destination"),
        ] {
            let mut copy = t.clone();
            let err = run(&mut copy, line).unwrap_err();
            assert_eq!(err.message, message, "{line}");
            assert_eq!(err.exit_code, 255, "{line}");
        }
        assert_eq!(t, before);
        // Masquerading maps the port; the other methods keep the service's.
        let mut nat = t.clone();
        run(&mut nat, "-a -t 10.0.0.100:80 -r 10.0.0.30:8080 -m").unwrap();
        run(&mut nat, "-a -t 10.0.0.100:80 -r 10.0.0.31:8080 -g").unwrap();
        let ports: Vec<_> =
            nat[0].reals.iter().rev().take(2).map(|r| (r.address, r.port, r.forwarding)).collect();
        assert_eq!(
            ports,
            [(IpAddr::from([10, 0, 0, 31]), 80, Forwarding::Dr), (IpAddr::from([10, 0, 0, 30]), 8080, Forwarding::Nat)]
        );
    }

    /// The stateless fallback the config set: kept (with mh-fallback) by
    /// an edit, refused with a scheduler it cannot have, as the config
    /// refuses it; restored with the file's service by -A.
    #[test]
    fn edits_keep_the_stateless_fallback_as_the_config_has_it() {
        use lb_common::service_flag::{MH_FALLBACK, STATELESS_FALLBACK};
        let text = "[director]\ninterface = \"eth0\"\n\n[[service]]\nvip = \"10.0.0.100:80\"\nscheduler = \"mh\"\n\
                    stateless_fallback = true\n";
        let file = crate::config::Config::parse(text, std::path::Path::new("lb.toml")).unwrap().services;
        let mut t = file.clone();
        let apply_line = |t: &mut Vec<ServiceConfig>, line: &str| {
            let args: Vec<&str> = line.split_whitespace().collect();
            apply(t, &parse(&args, &Names::default()).unwrap(), &file)
        };
        apply_line(&mut t, "-E -t 10.0.0.100:80 -s mh -b mh-port").unwrap();
        let both = STATELESS_FALLBACK | MH_FALLBACK;
        assert_eq!(t[0].options.flags & both, both);
        let e = apply_line(&mut t, "-E -t 10.0.0.100:80 -s rr").unwrap_err();
        assert!(e.message.contains("needs scheduler mh or sh, not rr"), "{}", e.message);
        apply_line(&mut t, "-D -t 10.0.0.100:80").unwrap();
        apply_line(&mut t, "-A -t 10.0.0.100:80 -s mh").unwrap();
        assert_eq!(t[0].options.flags & both, both, "restored from the file");
    }
}
