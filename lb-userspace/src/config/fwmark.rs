//! A firewall-mark service's `fwmark` and `match` keys. At XDP there is no
//! netfilter mark to read, so the config says what the iptables rule
//! marking the packets would have matched: addresses or networks,
//! protocols, ports or port ranges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use toml::Spanned;

use super::{
    check::{Checker, is_unicast},
    raw::{RawMatch, RawPort, RawService},
};
use crate::model::{MarkMatch, Protocol, net_bits};

/// A firewall-mark service's mark and matches, all of one family.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct MarkService {
    pub(super) mark: u32,
    pub(super) matches: Vec<MarkMatch>,
    pub(super) ipv6: bool,
}

impl MarkService {
    /// What stands for the VIP where the service's family is needed: the
    /// unspecified address of it, as [`crate::model::ServiceId::fwmark`].
    pub(super) fn family_address(&self) -> IpAddr {
        if self.ipv6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) }
    }
}

/// The `i`th service's `fwmark` and `match` (it has `fwmark`), or `None`
/// after reporting what is wrong.
pub(super) fn check_fwmark(c: &mut Checker, raw: &Spanned<RawService>, i: usize) -> Option<MarkService> {
    let s = raw.get_ref();
    let key = |k: &str| format!("service[{i}].{k}");
    let fwmark = s.fwmark.as_ref()?;
    // ipvsadm's range: 0 is "no mark".
    let mark = c.integer(&s.fwmark, &key("fwmark"), 1..=i64::from(u32::MAX), 1).map(|m| m as u32);
    if let Some(p) = &s.protocol {
        c.error(p.span(), key("protocol"), "a firewall-mark service has its protocols in each `match`");
    }
    let Some(list) = &s.matches else {
        c.error(fwmark.span(), key("match"), "a firewall-mark service needs `match`: the packets it takes");
        return None;
    };
    if list.get_ref().is_empty() {
        c.error(list.span(), key("match"), "must not be empty");
    }
    let mut matches: Vec<MarkMatch> = Vec::new();
    let mut family: Option<(bool, usize)> = None;
    for (j, m) in list.get_ref().iter().enumerate() {
        let Some(checked) = check_match(c, m.get_ref(), &format!("service[{i}].match[{j}]")) else { continue };
        let ipv6 = checked.net.is_ipv6();
        match family {
            Some((first, line)) if first != ipv6 => {
                let name = |v6: bool| if v6 { "IPv6" } else { "IPv4" };
                c.error(
                    m.get_ref().vip.span(),
                    format!("service[{i}].match[{j}].vip"),
                    format!(
                        "{} is {} and the match at line {line} {}: a firewall-mark service is of one family \
                         (write another service for the other, as ipvsadm's -f with and without -6)",
                        m.get_ref().vip.get_ref(),
                        name(ipv6),
                        name(first)
                    ),
                );
            }
            Some(_) => {}
            None => family = Some((ipv6, c.line(&m.span()))),
        }
        matches.push(checked);
    }
    let (ipv6, _) = family?;
    Some(MarkService { mark: mark?, matches, ipv6 })
}

/// One `match` table.
fn check_match(c: &mut Checker, m: &RawMatch, key: &str) -> Option<MarkMatch> {
    let protocol = match &m.protocol {
        None => Some(Protocol::Tcp),
        Some(p) => c.parse::<Protocol>(p, &format!("{key}.protocol")),
    };
    let net = check_net(c, &m.vip, &format!("{key}.vip"));
    let ports_key = format!("{key}.ports");
    if m.ports.get_ref().is_empty() {
        c.error(m.ports.span(), &ports_key, "must not be empty");
    }
    let mut ports = Vec::new();
    for p in m.ports.get_ref() {
        let range = match p.get_ref() {
            RawPort::Number(n) => u16::try_from(*n).ok().filter(|n| *n != 0).map(|n| (n, n)),
            RawPort::Range(text) => parse_range(text),
        };
        match range {
            Some(r) => ports.push(r),
            None => {
                let shown = match p.get_ref() {
                    RawPort::Number(n) => n.to_string(),
                    RawPort::Range(t) => format!("\"{t}\""),
                };
                c.error(p.span(), &ports_key, format!("{shown} is not a port 1..=65535 or a range \"FIRST-LAST\""));
            }
        }
    }
    let (net, prefix_len) = net?;
    Some(MarkMatch { protocol: protocol?, net, prefix_len, ports })
}

/// "8000-8080" (or "8080"): ports 1..=65535, the first not above the last.
fn parse_range(text: &str) -> Option<(u16, u16)> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let (first, last): (u16, u16) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    (first != 0 && first <= last).then_some((first, last))
}

/// "10.0.0.1", "10.0.0.0/24", "2001:db8::/64": a network with its host bits
/// zero, not every address (a /0 would take the director's own traffic).
fn check_net(c: &mut Checker, value: &Spanned<String>, key: &str) -> Option<(IpAddr, u8)> {
    let text = value.get_ref();
    let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
    let Ok(addr) = addr.trim().parse::<IpAddr>() else {
        c.error(value.span(), key, format!("\"{text}\" is not an address or a network (such as \"10.0.0.0/24\")"));
        return None;
    };
    let bits = if addr.is_ipv6() { 128 } else { 32 };
    let prefix_len = if prefix.is_empty() { Some(bits) } else { prefix.trim().parse::<u8>().ok() };
    let Some(prefix_len) = prefix_len.filter(|p| (1..=bits).contains(p)) else {
        c.error(value.span(), key, format!("\"{text}\": the prefix length is 1..={bits}"));
        return None;
    };
    if net_bits(addr, prefix_len) != net_bits(addr, bits) {
        c.error(value.span(), key, format!("\"{text}\" has host bits set (the network is written with them zero)"));
        return None;
    }
    if prefix_len == bits && !is_unicast(addr) {
        c.error(value.span(), key, format!("{addr} cannot be a virtual IP"));
        return None;
    }
    Some((addr, prefix_len))
}
