//! A `[[service]]` table: its address, protocol, scheduler and forwarding
//! here; its scheduling options, real servers and health settings in
//! `options`, `real` and `health`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use toml::Spanned;

use super::{
    ServiceConfig,
    check::{Checker, is_unicast},
    health, options,
    raw::RawService,
    real::{self, check_forwarding},
};
use crate::model::{Forwarding, Protocol, Scheduler};

/// The `i`th service, or `None` if it has a mistake too deep to go on with
/// (every mistake is reported to `c`).
pub(super) fn check_service(c: &mut Checker, raw: &Spanned<RawService>, i: usize) -> Option<ServiceConfig> {
    let s = raw.get_ref();
    let key = |k: &str| format!("service[{i}].{k}");
    let line = c.line(&raw.span());

    let vip = check_vip(c, &s.vip, &key("vip"));
    let protocol = match &s.protocol {
        None => Some(Protocol::Tcp),
        Some(p) => c.parse::<Protocol>(p, &key("protocol")),
    };
    let scheduler = match &s.scheduler {
        // ipvsadm's default.
        None => Some(Scheduler::Wlc),
        Some(v) => c.parse::<Scheduler>(v, &key("scheduler")),
    };
    let forwarding = match &s.forwarding {
        None => Some(Forwarding::Dr),
        Some(f) => check_forwarding(c, f, &key("forwarding")),
    };
    let options = options::check_options(c, s, i, scheduler);
    let reals = real::check_reals(c, s, i, vip, forwarding, scheduler);
    let service_health = health::service_health(c, s, i, vip);
    let sorry_server = health::sorry_server(c, s, i);
    let quorum = health::quorum(c, s, i);
    let (vip, port) = vip?;
    Some(ServiceConfig {
        health: service_health,
        sorry_server,
        quorum,
        quorum_up: s.quorum_up.as_ref().map(|v| v.get_ref().clone()),
        quorum_down: s.quorum_down.as_ref().map(|v| v.get_ref().clone()),
        drain_on_failure: s.drain_on_failure.as_ref().is_some_and(|v| *v.get_ref()),
        line,
        protocol: protocol?,
        vip,
        port,
        scheduler: scheduler?,
        options,
        forwarding: forwarding?,
        reals,
    })
}

/// "ADDRESS:PORT"; a VIP that is no unicast address is reported, but the
/// service's other keys are still checked against it.
fn check_vip(c: &mut Checker, value: &Spanned<String>, key: &str) -> Option<(Ipv4Addr, u16)> {
    let vip = match value.get_ref().parse::<SocketAddr>() {
        Ok(SocketAddr::V4(v4)) => Some((*v4.ip(), v4.port())),
        Ok(SocketAddr::V6(_)) => {
            c.error(value.span(), key, "IPv6 services are not supported yet");
            None
        }
        Err(_) => {
            let hint =
                if value.get_ref().parse::<IpAddr>().is_ok() { " (add :PORT, or :0 for every port)" } else { "" };
            c.error(value.span(), key, format!("\"{}\" is not ADDRESS:PORT{hint}", value.get_ref()));
            None
        }
    };
    if let Some((ip, _)) = vip
        && !is_unicast(ip)
    {
        c.error(value.span(), key, format!("{ip} cannot be a virtual IP"));
    }
    vip
}
