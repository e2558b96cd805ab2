//! A service's scheduling options: `sched_flags`, `sloppy_tcp` and
//! `stateless_fallback` (the service's flags, ipvsadm's `-b`), and
//! persistence (`-p`, `-M`).

use std::net::Ipv4Addr;

use lb_common::service_flag;

use super::{check::Checker, raw::RawService};
use crate::model::{SCHED_FLAGS, Scheduler, ServiceOptions, stateless_fallback_bits};

/// The options of the `i`th service, whose scheduler is `scheduler` (`None`
/// if wrong).
pub(super) fn check_options(c: &mut Checker, s: &RawService, i: usize, scheduler: Option<Scheduler>) -> ServiceOptions {
    let key = |k: &str| format!("service[{i}].{k}");
    let mut options = ServiceOptions::default();
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
        match m.get_ref().parse::<Ipv4Addr>() {
            Ok(mask) if (!u32::from(mask)).wrapping_add(1).is_power_of_two() || u32::from(mask) == 0 => {
                options.persistence_netmask = mask;
                if s.persistence_timeout.is_none() {
                    c.error(m.span(), key("persistence_netmask"), "needs persistence_timeout");
                }
            }
            _ => c.error(m.span(), key("persistence_netmask"), format!("\"{}\" is not a netmask", m.get_ref())),
        }
    }
    options
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
