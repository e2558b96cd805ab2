//! A service's `[[service.real]]` tables.

use std::net::IpAddr;

use lb_common::{MAX_REALS_PER_SERVICE, sched::MAX_SEQUENCE_LEN};
use toml::Spanned;

use super::{
    MAX_WEIGHT, RealConfig,
    check::{Checker, is_unicast},
    health,
    raw::RawService,
    service::check_ipv6_forwarding,
};
use crate::model::{Forwarding, Scheduler};

/// The real servers of the `i`th service, given what was right of its VIP,
/// forwarding and scheduler; a server with a mistake is left out.
pub(super) fn check_reals(
    c: &mut Checker,
    s: &RawService,
    i: usize,
    vip: Option<(IpAddr, u16)>,
    forwarding: Option<Forwarding>,
    scheduler: Option<Scheduler>,
) -> Vec<RealConfig> {
    let key = |k: &str| format!("service[{i}].{k}");
    if s.real.len() > MAX_REALS_PER_SERVICE as usize {
        c.error(
            s.real[MAX_REALS_PER_SERVICE as usize].span(),
            key("real"),
            format!("more than {MAX_REALS_PER_SERVICE} real servers"),
        );
    }
    let mut reals: Vec<RealConfig> = Vec::new();
    for (j, r) in s.real.iter().enumerate() {
        let rkey = |k: &str| format!("service[{i}].real[{j}].{k}");
        let rs = r.get_ref();
        let address = match rs.address.get_ref().parse::<IpAddr>() {
            Ok(a) if !is_unicast(a) => {
                c.error(rs.address.span(), rkey("address"), format!("{a} cannot be a real server"));
                None
            }
            Ok(a) if vip.is_some_and(|(ip, _)| ip.is_ipv6() != a.is_ipv6()) => {
                let (family, vip_family) = if a.is_ipv6() { ("IPv6", "IPv4") } else { ("IPv4", "IPv6") };
                let message = format!("{a} is {family} and the VIP {vip_family}: a real server is of its VIP's family");
                c.error(rs.address.span(), rkey("address"), message);
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                let hint = if rs.address.get_ref().contains(':') {
                    " (give the address alone, and for NAT the server's port as `port`)"
                } else {
                    ""
                };
                c.error(
                    rs.address.span(),
                    rkey("address"),
                    format!("\"{}\" is not an IP address{hint}", rs.address.get_ref()),
                );
                None
            }
        };
        let weight = c.integer(&rs.weight, &rkey("weight"), 0..=MAX_WEIGHT as i64, 1);
        let real_port = c.integer(&rs.port, &rkey("port"), 1..=u16::MAX as i64, 0);
        let upper = c.integer(&rs.upper_threshold, &rkey("upper_threshold"), 0..=i32::MAX as i64, 0);
        let lower = c.integer(&rs.lower_threshold, &rkey("lower_threshold"), 0..=i32::MAX as i64, 0);
        if let (Some(u), Some(l), Some(span)) = (upper, lower, rs.lower_threshold.as_ref().map(|l| l.span()))
            && u != 0
            && l > u
        {
            c.error(span, rkey("lower_threshold"), format!("{l} is above upper_threshold {u}"));
        }
        let real_forwarding = match &rs.forwarding {
            None => forwarding,
            Some(f) => check_forwarding(c, f, &rkey("forwarding")),
        };
        let real_forwarding = match (vip, real_forwarding) {
            (Some((IpAddr::V6(_), _)), Some(f)) => {
                check_ipv6_forwarding(c, f, rs.forwarding.as_ref(), &rkey("forwarding"))
            }
            _ => real_forwarding,
        };
        if let (Some(address), Some(weight), Some(fwd), Some((_, vport)), Some(real_port)) =
            (address, weight, real_forwarding, vip, real_port)
        {
            let port = match (real_port, &rs.port) {
                (0, _) => vport,
                (p, Some(span)) if vport == 0 => {
                    let message = format!("{p}: an every-port or firewall-mark service keeps each packet's port");
                    c.error(span.span(), rkey("port"), message);
                    vport
                }
                (p, Some(span)) if p as u16 != vport && !matches!(fwd, Forwarding::Nat | Forwarding::FullNat) => {
                    c.error(
                        span.span(),
                        rkey("port"),
                        format!(
                            "{p} is not the VIP's port {vport}: only NAT maps ports (in DR and TUN the real \
                             server answers on the VIP's port)"
                        ),
                    );
                    vport
                }
                (p, _) => p as u16,
            };
            if let Some(first) = reals.iter().find(|r| r.address == address) {
                c.error(
                    rs.address.span(),
                    rkey("address"),
                    format!("{address} is already a real server of this service (line {})", first.line),
                );
            }
            if Some(address) == vip.map(|(ip, _)| ip) {
                c.error(rs.address.span(), rkey("address"), "a real server cannot be the VIP itself");
            }
            reals.push(RealConfig {
                health: health::real_health(c, s, r, i, j, address, port),
                line: c.line(&r.span()),
                address_line: c.line(&rs.address.span()),
                address,
                port,
                weight: weight as u32,
                forwarding: fwd,
                upper_threshold: upper.unwrap_or(0) as u32,
                lower_threshold: lower.unwrap_or(0) as u32,
            });
        }
    }
    if scheduler == Some(Scheduler::Wrr) {
        let weights: Vec<u32> = reals.iter().map(|r| r.weight).collect();
        let period = lb_common::sched::wrr_period(&weights);
        if period > MAX_SEQUENCE_LEN as u64 {
            c.error(
                s.vip.as_ref().or(s.real.first().map(|r| &r.get_ref().address)).map_or(0..0, |v| v.span()),
                key("real"),
                format!(
                    "wrr weights give a sequence of {period} picks (sum of weights / their gcd); \
                     the limit is {MAX_SEQUENCE_LEN}: use smaller weights or a common divisor"
                ),
            );
        }
    }
    reals
}

/// A service's or a real server's `forwarding`.
pub(super) fn check_forwarding(c: &mut Checker, value: &Spanned<String>, key: &str) -> Option<Forwarding> {
    c.parse::<Forwarding>(value, key)
}
