//! The last step: the typed command from a checked entry.

use std::net::{Ipv4Addr, SocketAddr};

use lb_common::{Protocol, Scheduler};

use crate::command::{
    Command, DaemonArgs, Family, FwmarkService, List, ListTarget, Netmask, SchedFlags, ServerArgs, ServiceAddress,
    ServiceArgs, VirtualService,
};
use crate::error::{KernelError, ParseError};
use crate::names::Proto;

use super::DEFAULT_MCAST_INTERFACE;
use super::read::{Af, Entry};
use super::table::{Cmd, Col, TUN_NAMES};

/// The typed command from a checked entry, refusing what ipvsadm accepts
/// but the load balancer does not have.
pub(super) fn build(ce: &Entry) -> Result<Command, ParseError> {
    let service = || -> Result<VirtualService, ParseError> {
        if ce.fwmark != 0 {
            // Parsed; lbd refuses them for now (Command::unsupported_reason).
            let family = if ce.svc_af == Af::Inet6 { Family::Ipv6 } else { Family::Ipv4 };
            return Ok(VirtualService::Fwmark(FwmarkService { mark: ce.fwmark, family }));
        }
        let protocol = match ce.svc_proto {
            Some(Proto::Tcp) => Protocol::Tcp,
            Some(Proto::Udp) => Protocol::Udp,
            _ => return Err(ParseError::unsupported("SCTP services are not supported")),
        };
        let addr = ce.svc_addr.expect("a service address was parsed");
        Ok(VirtualService::Address(ServiceAddress { protocol, addr, port: ce.svc_port }))
    };
    Ok(match ce.cmd {
        Cmd::Add | Cmd::Edit => {
            let service = service()?;
            if ce.has(Col::Pe) {
                return Err(ParseError::unsupported("persistence engines (--pe) are not supported"));
            }
            if ce.one_packet {
                return Err(ParseError::unsupported("one-packet scheduling (-o, --ops) is not supported"));
            }
            let scheduler = if ce.sched_name.is_empty() {
                (ce.cmd == Cmd::Add).then_some(Scheduler::Wlc)
            } else {
                Some(ce.sched_name.parse().map_err(|_| ParseError::kernel(KernelError::SchedulerNotFound))?)
            };
            let config = ServiceArgs {
                service,
                scheduler,
                persistence_timeout: ce.persistent.then_some(ce.timeout),
                netmask: if ce.svc_af == Af::Inet6 {
                    Netmask::V6(ce.netmask as u8)
                } else {
                    Netmask::V4(Ipv4Addr::from(ce.netmask))
                },
                sched_flags: SchedFlags(ce.sched_flags),
            };
            if ce.cmd == Cmd::Add { Command::AddService(config) } else { Command::EditService(config) }
        }
        Cmd::Del => Command::DeleteService(service()?),
        Cmd::Flush => Command::Clear,
        Cmd::List => Command::List(List {
            target: if ce.has(Col::Connection) {
                ListTarget::Connections
            } else if ce.has(Col::Service) {
                ListTarget::Service(service()?)
            } else if ce.has(Col::Timeout) {
                ListTarget::Timeouts
            } else if ce.has(Col::Daemon) {
                ListTarget::Daemon
            } else {
                ListTarget::All
            },
            numeric: ce.has(Col::Numeric),
            stats: ce.has(Col::Stats),
            rate: ce.has(Col::Rate),
            thresholds: ce.has(Col::Thresholds),
            persistent_conn: ce.has(Col::PersistentConn),
            tun_info: ce.has(Col::TunInfo),
            exact: ce.has(Col::Exact),
            nosort: ce.has(Col::NoSort),
        }),
        Cmd::AddDest | Cmd::EditDest => {
            let service = service()?;
            if ce.tun_type != 0 {
                return Err(ParseError::unsupported(format!(
                    "tunnel type '{}' is not supported: tunnels are ipip",
                    TUN_NAMES[ce.tun_type]
                )));
            }
            let config = ServerArgs {
                service,
                server: SocketAddr::new(ce.dest_addr.expect("a real server was parsed"), ce.dest_port),
                forwarding: ce.forwarding,
                weight: ce.weight,
                upper_threshold: ce.u_threshold,
                lower_threshold: ce.l_threshold,
            };
            if ce.cmd == Cmd::AddDest { Command::AddServer(config) } else { Command::EditServer(config) }
        }
        Cmd::DelDest => Command::DeleteServer {
            service: service()?,
            server: SocketAddr::new(ce.dest_addr.expect("a real server was parsed"), ce.dest_port),
        },
        Cmd::Timeout => Command::SetTimeouts(ce.timeouts),
        Cmd::StartDaemon => Command::StartDaemon(DaemonArgs {
            state: ce.daemon_state,
            mcast_interface: if ce.mcast_interface.is_empty() {
                DEFAULT_MCAST_INTERFACE.to_owned()
            } else {
                ce.mcast_interface.clone()
            },
            syncid: ce.syncid,
            sync_maxlen: ce.sync_maxlen,
            mcast_group: ce.mcast_group,
            mcast_port: ce.mcast_port,
            mcast_ttl: ce.mcast_ttl,
        }),
        Cmd::StopDaemon => Command::StopDaemon { state: ce.daemon_state, syncid: ce.syncid },
        Cmd::Restore => Command::Restore,
        Cmd::Save => Command::Save { numeric: ce.has(Col::Numeric) },
        Cmd::Zero => Command::Zero(if ce.has(Col::Service) { Some(service()?) } else { None }),
    })
}
