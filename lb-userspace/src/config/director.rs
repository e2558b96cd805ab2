//! The `[director]` table.

use std::{net::{Ipv4Addr, Ipv6Addr}, path::PathBuf};

use toml::Spanned;

use super::{
    ControlGroup, DEFAULT_CONTROL_SOCKET, DEFAULT_PIN_PATH, DirectorConfig, XdpMode,
    check::{Checker, is_unicast},
    raw::RawDirector,
};
use crate::model::Timeouts;

pub(super) fn check_director(c: &mut Checker, raw: &Spanned<RawDirector>) -> Option<DirectorConfig> {
    let d = raw.get_ref();
    c.interface_name(&d.interface, "director.interface");
    let interface = d.interface.get_ref().trim().to_string();
    let mut interfaces: Vec<(String, usize)> = Vec::new();
    for name in d.interfaces.iter().flatten() {
        if c.interface_name(name, "director.interfaces") {
            let trimmed = name.get_ref().trim().to_string();
            if trimmed != interface && !interfaces.iter().any(|(n, _)| *n == trimmed) {
                interfaces.push((trimmed, c.line(&name.span())));
            }
        }
    }
    let xdp_mode = match d.xdp_mode.as_ref().map(|m| m.get_ref().as_str()) {
        None | Some("auto") => XdpMode::Auto,
        Some("native") => XdpMode::Native,
        Some("generic") => XdpMode::Generic,
        Some(other) => {
            let span = d.xdp_mode.as_ref().map(|m| m.span()).unwrap_or(raw.span());
            c.error(span, "director.xdp_mode", format!("\"{other}\" is not one of auto, native, generic"));
            XdpMode::Auto
        }
    };
    let conn_table_size = c.integer(
        &d.conn_table_size,
        "director.conn_table_size",
        1024..=1 << 27,
        lb_common::DEFAULT_CONN_TABLE_SIZE as i64,
    );
    let pin_path = match &d.pin_path {
        None => Some(PathBuf::from(DEFAULT_PIN_PATH)),
        Some(p) if p.get_ref().is_empty() => None,
        Some(p) if !p.get_ref().starts_with('/') => {
            c.error(p.span(), "director.pin_path", "must be an absolute path (in a bpffs mount) or \"\"");
            None
        }
        Some(p) => Some(PathBuf::from(p.get_ref())),
    };
    let control_socket = match &d.control_socket {
        None => PathBuf::from(DEFAULT_CONTROL_SOCKET),
        Some(p) if !p.get_ref().starts_with('/') => {
            c.error(p.span(), "director.control_socket", "must be an absolute path");
            PathBuf::new()
        }
        Some(p) => PathBuf::from(p.get_ref()),
    };
    let control_group = d.control_group.as_ref().and_then(|g| control_group(c, g));
    let defaults = Timeouts::default();
    // Under a year.
    let max = 86_400 * 365 - 1;
    let tcp = c.integer(&d.timeout_tcp, "director.timeout_tcp", 1..=max, defaults.tcp as i64);
    let tcpfin = c.integer(&d.timeout_tcpfin, "director.timeout_tcpfin", 1..=max, defaults.tcpfin as i64);
    let udp = c.integer(&d.timeout_udp, "director.timeout_udp", 1..=max, defaults.udp as i64);
    // The kernel's icmp_msgs_per_sec; ten million a second is more than a
    // 10 Gb/s link carries.
    let icmp_rate_limit = c.integer(
        &d.icmp_rate_limit,
        "director.icmp_rate_limit",
        0..=10_000_000,
        lb_common::DEFAULT_ICMP_RATE_LIMIT as i64,
    );
    let mut fullnat_source = Vec::new();
    if let Some(list) = &d.fullnat_source {
        let key = "director.fullnat_source";
        if list.get_ref().len() > lb_common::MAX_FULLNAT_SOURCES as usize {
            c.error(list.span(), key, format!("more than {} addresses", lb_common::MAX_FULLNAT_SOURCES));
        }
        for a in list.get_ref() {
            match a.get_ref().trim().parse::<Ipv4Addr>() {
                Ok(addr) if is_unicast(addr) && !fullnat_source.contains(&addr) => fullnat_source.push(addr),
                Ok(addr) if is_unicast(addr) => c.error(a.span(), key, format!("{addr} is listed twice")),
                _ => c.error(a.span(), key, format!("\"{}\" is not a unicast IPv4 address", a.get_ref())),
            }
        }
    }
    let fullnat_source_line = d.fullnat_source.as_ref().map_or(0, |l| c.line(&l.span()));
    let tun_source = match &d.tun_source {
        None => None,
        Some(a) => match a.get_ref().parse::<Ipv4Addr>() {
            Ok(addr) if is_unicast(addr) => Some(addr),
            _ => {
                c.error(a.span(), "director.tun_source", format!("\"{}\" is not a unicast IPv4 address", a.get_ref()));
                None
            }
        },
    };
    let tun_source6 = match &d.tun_source6 {
        None => None,
        Some(a) => match a.get_ref().parse::<Ipv6Addr>() {
            Ok(addr) if is_unicast(addr) => Some(addr),
            _ => {
                let message = format!("\"{}\" is not a global unicast IPv6 address", a.get_ref());
                c.error(a.span(), "director.tun_source6", message);
                None
            }
        },
    };
    Some(DirectorConfig {
        tun_source,
        tun_source6,
        fullnat_source,
        fullnat_source_line,
        interface,
        interface_line: c.line(&d.interface.span()),
        interfaces,
        xdp_mode,
        conn_table_size: conn_table_size? as u32,
        pin_path,
        control_socket,
        control_group,
        timeouts: Timeouts { tcp: tcp? as u32, tcpfin: tcpfin? as u32, udp: udp? as u32 },
        icmp_rate_limit: icmp_rate_limit? as u32,
    })
}

/// `control_group`: a group that exists on this host (the socket is handed
/// to it when lbd starts, and its members' requests are let in).
fn control_group(c: &mut Checker, value: &Spanned<String>) -> Option<ControlGroup> {
    let key = "director.control_group";
    let name = value.get_ref();
    // The names useradd and groupadd accept.
    let well_formed = (1..=32).contains(&name.len())
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !well_formed {
        c.error(value.span(), key, format!("{name:?} is not a group name"));
        return None;
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Some(ControlGroup { name: name.clone(), gid: group.gid.as_raw() }),
        Ok(None) => {
            c.error(value.span(), key, format!("there is no group \"{name}\" on this host (groupadd {name})"));
            None
        }
        Err(e) => {
            c.error(value.span(), key, format!("cannot look up the group \"{name}\": {e}"));
            None
        }
    }
}
