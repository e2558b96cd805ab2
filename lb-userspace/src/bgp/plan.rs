//! What to announce, as a function of the services' state, and the steps
//! from what the daemon holds to that: no I/O here.

use std::{collections::BTreeSet, net::Ipv4Addr};

/// One service as route health injection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceState {
    pub vip: Ipv4Addr,
    /// keepalived's quorum: enough live weight among its real servers.
    pub quorum: bool,
    /// A VRRP instance of this director is backup for the VIP.
    pub standby: bool,
}

/// The VIPs to announce: each of `chosen` (every service's VIP when empty)
/// whose services all hold their quorum and none stands by. A VIP that
/// cannot serve all its ports goes to the directors that can; a VIP with
/// no service here is never announced.
pub fn wanted(chosen: &[Ipv4Addr], services: &[ServiceState]) -> BTreeSet<Ipv4Addr> {
    let candidates: BTreeSet<Ipv4Addr> = if chosen.is_empty() {
        services.iter().map(|s| s.vip).collect()
    } else {
        chosen.iter().copied().collect()
    };
    candidates
        .into_iter()
        .filter(|vip| {
            let mut of_vip = services.iter().filter(|s| s.vip == *vip).peekable();
            of_vip.peek().is_some() && of_vip.all(|s| s.quorum && !s.standby)
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Announce(Ipv4Addr),
    Withdraw(Ipv4Addr),
}

/// From `announced` (what the daemon holds of ours) to `wanted`:
/// withdrawals first, so a VIP that cannot be served leaves before anything
/// else is said.
pub fn steps(announced: &BTreeSet<Ipv4Addr>, wanted: &BTreeSet<Ipv4Addr>) -> Vec<Step> {
    announced
        .difference(wanted)
        .map(|v| Step::Withdraw(*v))
        .chain(wanted.difference(announced).map(|v| Step::Announce(*v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 9, 0, last)
    }

    fn svc(vip: u8, quorum: bool) -> ServiceState {
        ServiceState {
            vip: ip(vip),
            quorum,
            standby: false,
        }
    }

    #[test]
    fn a_vip_is_announced_while_all_its_services_hold_quorum() {
        let services = [
            svc(1, true),
            svc(1, true),
            svc(2, true),
            svc(2, false),
            svc(3, false),
        ];
        assert_eq!(wanted(&[], &services), BTreeSet::from([ip(1)]));
    }

    #[test]
    fn only_chosen_vips_and_never_one_without_a_service() {
        let services = [svc(1, true), svc(2, true)];
        assert_eq!(wanted(&[ip(2), ip(4)], &services), BTreeSet::from([ip(2)]));
    }

    #[test]
    fn a_vrrp_backup_does_not_announce() {
        let services = [ServiceState {
            standby: true,
            ..svc(1, true)
        }];
        assert!(wanted(&[], &services).is_empty());
    }

    #[test]
    fn withdrawals_come_first() {
        let announced = BTreeSet::from([ip(1), ip(2)]);
        let wanted = BTreeSet::from([ip(2), ip(3)]);
        assert_eq!(
            steps(&announced, &wanted),
            [Step::Withdraw(ip(1)), Step::Announce(ip(3))]
        );
        assert!(steps(&wanted, &wanted).is_empty());
    }
}
