//! Which VIPs' services stand by: those of the VRRP instances that are not
//! master. Each instance says when, in order with its addresses
//! (`vrrp::state::Action::Forward` before they go on the interface,
//! `StandBy` once they are off), through the hook made here, which writes
//! the datapath at once rather than through the main loop.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use tracing::warn;

use super::lock;
use crate::{
    controller::Controller,
    vrrp::{ForwardHook, VrrpConfig},
};

/// Each instance's VIPs and whether the datapath forwards them.
pub struct Standby {
    instances: Mutex<Vec<(BTreeSet<IpAddr>, bool)>>,
}

impl Standby {
    /// For the instances of `configs`; `forwarding[i]` says whether
    /// instance `i` starts forwarding (it resumes as master), else it
    /// stands by until it is master.
    pub fn new(configs: &[VrrpConfig], forwarding: &[bool]) -> Arc<Self> {
        let instances = configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                // Both families: lb_xdp6 stands by as lb_xdp does, for
                // what a backup still gets while neighbours (or a
                // switch) point at it.
                let vips = c.virtual_ipaddress.iter().map(|v| v.address);
                (vips.collect(), forwarding.get(i).copied().unwrap_or(false))
            })
            .collect();
        Arc::new(Self { instances: Mutex::new(instances) })
    }

    /// The VIPs standing by now.
    pub fn vips(&self) -> BTreeSet<IpAddr> {
        standby_vips(&self.instances.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Instance `index`'s hook: it writes the controller's standby VIPs.
    pub fn hook(self: &Arc<Self>, index: usize, shared: Arc<Mutex<Controller>>) -> ForwardHook {
        let this = self.clone();
        Arc::new(move |forward| {
            let mut instances = this.instances.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = instances.get_mut(index) {
                slot.1 = forward;
            }
            if let Err(e) = lock(&shared).set_standby(standby_vips(&instances)) {
                warn!("applying a VRRP change: {e:#}");
            }
        })
    }
}

/// The VIPs of instances that do not forward, but those another instance
/// forwards.
pub fn standby_vips(instances: &[(BTreeSet<IpAddr>, bool)]) -> BTreeSet<IpAddr> {
    let vips = |forwarding: bool| -> BTreeSet<IpAddr> {
        instances.iter().filter(|(_, f)| *f == forwarding).flat_map(|(v, _)| v.iter().copied()).collect()
    };
    vips(false).difference(&vips(true)).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vip_stands_by_unless_an_instance_forwards_it() {
        let [a, b] = [1, 2].map(|i| IpAddr::from([10, 0, 0, i]));
        let c: IpAddr = "2001:db8::3".parse().unwrap();
        let instances = |fa: bool, fb: bool| vec![(BTreeSet::from([a, b]), fa), (BTreeSet::from([b, c]), fb)];
        assert_eq!(standby_vips(&instances(false, false)), BTreeSet::from([a, b, c]));
        assert_eq!(standby_vips(&instances(true, false)), BTreeSet::from([c]));
        assert_eq!(standby_vips(&instances(false, true)), BTreeSet::from([a]));
        assert_eq!(standby_vips(&instances(true, true)), BTreeSet::new());
    }
}
