//! A service's scheduling options: `sched_flags`, `sloppy_tcp` and
//! `stateless_fallback` (the service's flags, ipvsadm's `-b`), and
//! persistence (`-p`, `-M`).

use std::net::{IpAddr, Ipv4Addr};

use lb_common::service_flag;

use super::{
    check::Checker,
    raw::{RawNetmask, RawService},
};
use crate::model::{Netmask, SCHED_FLAGS, Scheduler, ServiceOptions, stateless_fallback_bits};

/// The options of the `i`th service, whose VIP is `vip` and scheduler
/// `scheduler` (`None` if wrong).
pub(super) fn check_options(
    c: &mut Checker,
    s: &RawService,
    i: usize,
    vip: Option<IpAddr>,
    scheduler: Option<Scheduler>,
) -> ServiceOptions {
    let key = |k: &str| format!("service[{i}].{k}");
    let mut options = vip.map_or_else(ServiceOptions::default, ServiceOptions::for_vip);
    if let Some(flags) = &s.sched_flags {
        for name in flags.get_ref() {
            match SCHED_FLAGS.iter().find(|(n, _)| n == name) {
                Some((_, bit)) => options.flags |= bit,
                None => {
                    let names: Vec<_> = SCHED_FLAGS.iter().map(|(n, _)| *n).collect();
                    c.error(
                        flags.span(),
                        key("sched_flags"),
                        format!("unknown flag \"{name}\" (one of {})", names.join(", ")),
                    );
                }
            }
        }
        let wants = |bits: u16| options.flags & bits != 0;
        use service_flag as f;
        let for_sh = wants(f::SH_FALLBACK | f::SH_PORT);
        let for_mh = wants(f::MH_FALLBACK | f::MH_PORT);
        if (for_sh && scheduler != Some(Scheduler::Sh)) || (for_mh && scheduler != Some(Scheduler::Mh)) {
            c.error(flags.span(), key("sched_flags"), "sh-* flags need scheduler sh, mh-* flags need scheduler mh");
        }
    }
    if let Some(sloppy) = &s.sloppy_tcp
        && *sloppy.get_ref()
    {
        options.flags |= service_flag::SLOPPY_TCP;
    }
    if let Some(fallback) = &s.stateless_fallback
        && *fallback.get_ref()
    {
        // Behind ECMP, a flow's packets may reach any director; only a
        // scheduler whose answer is a function of the packet and the
        // config gives the same real server everywhere.
        // A server out of service keeps its slots (see
        // `controller::wanted`), and its flows go on to the next server in
        // the table, the same on every director.
        match scheduler.map(stateless_fallback_bits) {
            Some(Some(bits)) => options.flags |= bits,
            Some(None) => c.error(
                fallback.span(),
                key("stateless_fallback"),
                "needs scheduler mh or sh (the same choice on every director)",
            ),
            None => {}
        }
    }
    if let Some(t) = &s.persistence_timeout {
        options.persistence_timeout =
            c.integer(&Some(t.clone()), &key("persistence_timeout"), 1..=i32::MAX as i64, 300).map(|v| v as u32);
    }
    if let Some(m) = &s.persistence_netmask {
        let ipv6 = vip.is_some_and(|ip| ip.is_ipv6());
        match netmask(m.get_ref(), ipv6) {
            Ok(mask) => {
                options.persistence_netmask = mask;
                if s.persistence_timeout.is_none() {
                    c.error(m.span(), key("persistence_netmask"), "needs persistence_timeout");
                }
            }
            Err(message) => c.error(m.span(), key("persistence_netmask"), message),
        }
    }
    options
}

/// `persistence_netmask` for an IPv4 service (a contiguous dotted mask) or
/// an IPv6 one (a prefix length 1..=128, as ipvsadm's `-M` takes it).
fn netmask(value: &RawNetmask, ipv6: bool) -> Result<Netmask, String> {
    match (value, ipv6) {
        (RawNetmask::Text(text), false) => match text.parse::<Ipv4Addr>() {
            Ok(mask) if (!u32::from(mask)).wrapping_add(1).is_power_of_two() || u32::from(mask) == 0 => {
                Ok(Netmask::V4(mask))
            }
            _ => Err(format!("\"{text}\" is not a netmask")),
        },
        (RawNetmask::PrefixLength(n), false) => {
            Err(format!("{n}: an IPv4 service takes a dotted netmask (such as \"255.255.255.0\")"))
        }
        (RawNetmask::Text(text), true) => match text.parse::<u8>() {
            Ok(prefix @ 1..=128) => Ok(Netmask::V6(prefix)),
            _ => Err(format!("\"{text}\": an IPv6 service takes a prefix length 1..=128 (such as 64)")),
        },
        (RawNetmask::PrefixLength(n), true) => match u8::try_from(*n) {
            Ok(prefix @ 1..=128) => Ok(Netmask::V6(prefix)),
            _ => Err(format!("{n}: an IPv6 service takes a prefix length 1..=128 (such as 64)")),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use lb_common::service_flag;

    use crate::config::Config;

    fn service(scheduler: &str) -> String {
        format!(
            "[director]\ninterface = \"eth0\"\n\n[[service]]\nvip = \"10.9.0.1:80\"\nscheduler = \"{scheduler}\"\n\
             stateless_fallback = true\n"
        )
    }

    #[test]
    fn stateless_fallback_needs_a_consistent_hash() {
        for scheduler in ["mh", "sh"] {
            let c = Config::parse(&service(scheduler), Path::new("lb.toml")).unwrap();
            assert_ne!(
                c.services[0].options.flags & service_flag::STATELESS_FALLBACK,
                0,
                "{scheduler}"
            );
        }
        let mh = Config::parse(&service("mh"), Path::new("lb.toml")).unwrap();
        assert_ne!(mh.services[0].options.flags & service_flag::MH_FALLBACK, 0, "mh-fallback implied");
        for scheduler in ["rr", "wlc", "lblc", "dh"] {
            let e = Config::parse(&service(scheduler), Path::new("lb.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(
                    "lb.toml:7: service[0].stateless_fallback: needs scheduler mh or sh"
                ),
                "{scheduler}: {e}"
            );
        }
    }
}
