//! A service's health settings: its `health_check` tables resolved for each
//! real server (keepalived's semantics, in [`crate::health`]), the sorry
//! server and the quorum.

use std::net::IpAddr;

use toml::Spanned;

use super::{
    check::{Checker, is_unicast},
    raw::{RawReal, RawService},
};
use crate::health::{HealthCheck, Quorum, ResolveContext};

/// The check of the `j`th real server of the `i`th service: the service's
/// table overridden by the server's own.
pub(super) fn real_health(
    c: &mut Checker,
    s: &RawService,
    r: &Spanned<RawReal>,
    i: usize,
    j: usize,
    address: IpAddr,
    port: u16,
) -> HealthCheck {
    let rs = r.get_ref();
    let service_key = format!("service[{i}].health_check");
    let real_key = format!("service[{i}].real[{j}].health_check");
    let ctx = ResolveContext {
        service_key: &service_key,
        real_key: &real_key,
        address: Some(address),
        port,
        span: rs.health_check.as_ref().map_or(r.span(), |h| h.span()),
    };
    let svc_check = s.health_check.as_ref().map(|h| h.get_ref());
    let real_check = rs.health_check.as_ref().map(|h| h.get_ref());
    let mut found = Checker::new(c.source());
    let health = HealthCheck::resolve(svc_check, real_check, &ctx, &mut found);
    // The service's own mistakes show once, at its first server.
    c.extend(found.into_errors().into_iter().filter(|e| j == 0 || e.key.starts_with(&real_key)));
    health.unwrap_or_default()
}

/// The service's own check (what a server added with lbctl gets). A service
/// without servers reports its mistakes here; with servers, they show at
/// the first one.
pub(super) fn service_health(c: &mut Checker, s: &RawService, i: usize, vip: Option<(IpAddr, u16)>) -> HealthCheck {
    let (Some(check), Some((ip, port))) = (&s.health_check, vip) else { return HealthCheck::default() };
    let key = format!("service[{i}].health_check");
    let ctx =
        ResolveContext { service_key: &key, real_key: &key, address: Some(ip), port, span: check.span() };
    let mut found = Checker::new(c.source());
    let health = HealthCheck::resolve(Some(check.get_ref()), None, &ctx, &mut found);
    if s.real.is_empty() {
        c.extend(found.into_errors());
    }
    health.unwrap_or_default()
}

/// The sorry server, of the family of the service's VIP (`vip`, if right).
pub(super) fn sorry_server(c: &mut Checker, s: &RawService, i: usize, vip: Option<IpAddr>) -> Option<IpAddr> {
    let v = s.sorry_server.as_ref()?;
    let key = format!("service[{i}].sorry_server");
    match v.get_ref().parse::<IpAddr>() {
        Ok(a) if vip.is_some_and(|vip| vip.is_ipv6() != a.is_ipv6()) => {
            c.error(v.span(), key, format!("{a} is not of the VIP's family"));
            None
        }
        Ok(a) if is_unicast(a) => Some(a),
        _ => {
            c.error(v.span(), key, format!("\"{}\" is not a unicast IP address", v.get_ref()));
            None
        }
    }
}

pub(super) fn quorum(c: &mut Checker, s: &RawService, i: usize) -> Quorum {
    let key = |k: &str| format!("service[{i}].{k}");
    Quorum {
        quorum: c.integer(&s.quorum, &key("quorum"), 1..=i32::MAX as i64, 1).unwrap_or(1) as u32,
        hysteresis: c.integer(&s.hysteresis, &key("hysteresis"), 0..=i32::MAX as i64, 0).unwrap_or(0) as u32,
    }
}
