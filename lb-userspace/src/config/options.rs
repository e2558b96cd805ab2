//! A service's scheduling options: `sched_flags` and `sloppy_tcp` (the
//! service's flags, ipvsadm's `-b`), and persistence (`-p`, `-M`).

use std::net::Ipv4Addr;

use lb_common::service_flag;

use super::{check::Checker, raw::RawService};
use crate::model::{SCHED_FLAGS, Scheduler, ServiceOptions};

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
