//! A `[[service]]` table: its address, protocol, scheduler and forwarding
//! here; its scheduling options, real servers and health settings in
//! `options`, `real` and `health`.

use std::net::{IpAddr, SocketAddr};

use toml::Spanned;

use super::{
    ServiceConfig,
    check::{Checker, is_unicast},
    fwmark, health, options,
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

    let mark = fwmark::check_fwmark(c, raw, i);
    let vip = match (&s.vip, &s.fwmark) {
        (Some(v), None) => check_vip(c, v, &key("vip")),
        (Some(v), Some(_)) => {
            let message = "a firewall-mark service has no vip: it takes the packets its `match` lists";
            c.error(v.span(), key("vip"), message);
            None
        }
        (None, Some(_)) => mark.as_ref().map(|m| (m.family_address(), 0)),
        (None, None) => {
            c.error(raw.span(), key("vip"), "missing: a service has a `vip`, or a `fwmark` and its `match`");
            None
        }
    };
    let protocol = match &s.protocol {
        Some(p) if s.fwmark.is_none() => c.parse::<Protocol>(p, &key("protocol")),
        _ => Some(Protocol::Tcp),
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
    let forwarding = match (vip, forwarding) {
        (Some((IpAddr::V6(_), _)), Some(f)) => check_ipv6_forwarding(c, f, s.forwarding.as_ref(), &key("forwarding")),
        _ => forwarding,
    };
    let forwarding = match forwarding {
        Some(Forwarding::Nat | Forwarding::FullNat) if s.fwmark.is_some() => {
            refuse_mark_rewrite(c, s.forwarding.as_ref(), &key("forwarding"));
            None
        }
        f => f,
    };
    let options = options::check_options(c, s, i, vip.map(|(ip, _)| ip), scheduler);
    let reals = real::check_reals(c, s, i, vip, forwarding, scheduler);
    let service_health = health::service_health(c, s, i, vip);
    let sorry_server = health::sorry_server(c, s, i, vip.map(|(ip, _)| ip));
    let quorum = health::quorum(c, s, i);
    if s.fwmark.is_some() {
        check_mark_reals(c, s, i);
    }
    let (vip, port) = vip?;
    let (fwmark, matches) = mark.map_or((0, Vec::new()), |m| (m.mark, m.matches));
    Some(ServiceConfig {
        fwmark,
        matches,
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

/// "ADDRESS:PORT", an IPv6 address in brackets; a VIP that is no unicast
/// address is reported, but the service's other keys are still checked
/// against it.
fn check_vip(c: &mut Checker, value: &Spanned<String>, key: &str) -> Option<(IpAddr, u16)> {
    let vip = match value.get_ref().parse::<SocketAddr>() {
        Ok(addr) => Some((addr.ip(), addr.port())),
        Err(_) => {
            let hint = match value.get_ref().parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => " (add :PORT, or :0 for every port)",
                Ok(IpAddr::V6(_)) => " (write [ADDRESS]:PORT, or [ADDRESS]:0 for every port)",
                Err(_) => "",
            };
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

/// `forwarding` if an IPv6 service or server may have it: the datapath's
/// IPv6 program routes (DR) and tunnels (TUN); else `None`, reported at
/// `value` if it was written there (not inherited from the service).
pub(super) fn check_ipv6_forwarding(
    c: &mut Checker,
    forwarding: Forwarding,
    value: Option<&Spanned<String>>,
    key: &str,
) -> Option<Forwarding> {
    if matches!(forwarding, Forwarding::Dr | Forwarding::Tun) {
        return Some(forwarding);
    }
    if let Some(value) = value {
        let message =
            format!("IPv6 services support forwarding \"dr\" and \"tun\" only for now, not \"{}\"", value.get_ref());
        c.error(value.span(), key, message);
    }
    None
}

/// A firewall-mark service forwards by DR or TUN: its real servers listen on
/// each packet's own port, which NAT's rewriting would have to name.
fn refuse_mark_rewrite(c: &mut Checker, value: Option<&Spanned<String>>, key: &str) {
    if let Some(value) = value {
        let message = format!("a firewall-mark service forwards by \"dr\" or \"tun\", not \"{}\"", value.get_ref());
        c.error(value.span(), key, message);
    }
}

/// What a firewall-mark service's real servers may not have: a forwarding
/// method that rewrites the address. (A health check needs its own port,
/// as for an every-port service: `health` says so.)
fn check_mark_reals(c: &mut Checker, s: &RawService, i: usize) {
    for (j, r) in s.real.iter().enumerate() {
        if let Some(f) = &r.get_ref().forwarding
            && matches!(f.get_ref().as_str(), "nat" | "fullnat")
        {
            refuse_mark_rewrite(c, Some(f), &format!("service[{i}].real[{j}].forwarding"));
        }
    }
}
