//! The checks of ipvsadm's process_options after its options table: per
//! command (zero port without persistence, address families, tunnel
//! options, list option conflicts).

use lb_common::Forwarding;

use crate::error::ParseError;
use crate::names::Proto;

use super::read::Entry;
use super::table::{Cmd, Col, tunnel_opt_check};

/// The per-command checks of a command line that passed the options table;
/// `reading_stdin` for a line of `-R` input. Sets a direct-routing or
/// tunnelled real server's port to the service's, as ipvsadm does.
pub(super) fn check(ce: &mut Entry, program: &str, reading_stdin: bool) -> Result<(), ParseError> {
    let cmd = ce.cmd;
    if matches!(cmd, Cmd::Add | Cmd::Edit) {
        if ce.fwmark == 0 && ce.svc_port == 0 && !ce.persistent {
            return Err(ParseError::usage("Zero port specified for non-persistent service"));
        }
        if ce.one_packet && ce.fwmark == 0 && ce.svc_proto != Some(Proto::Udp) {
            return Err(ParseError::usage("One-Packet Scheduling is only for UDP virtual services"));
        }
    }
    if matches!(cmd, Cmd::AddDest | Cmd::EditDest) {
        if ce.fwmark == 0 && matches!(ce.forwarding, Forwarding::Tun | Forwarding::Dr) {
            ce.dest_port = ce.svc_port;
        }
        if ce.dest_af != ce.svc_af && ce.forwarding != Forwarding::Tun {
            return Err(ParseError::usage("Different address family is allowed only for tunneling servers"));
        }
        let tunnel_options = [Col::TunType, Col::TunPort, Col::TunNocsum, Col::TunCsum, Col::TunRemcsum];
        if tunnel_options.iter().any(|c| ce.has(*c)) && ce.forwarding != Forwarding::Tun {
            return Err(ParseError::usage("Tunnel options conflict with forward method"));
        }
        tunnel_opt_check(ce)?;
    }
    if cmd == Cmd::List {
        let any = |cols: &[Col]| cols.iter().any(|c| ce.has(*c));
        if (any(&[Col::Connection, Col::Timeout, Col::Daemon]) && any(&[Col::Stats, Col::Rate, Col::Thresholds]))
            || (any(&[Col::Timeout, Col::Daemon]) && ce.has(Col::PersistentConn))
        {
            return Err(ParseError::usage("options conflicts in the list command"));
        }
    }
    if cmd == Cmd::Restore && reading_stdin {
        return Err(ParseError::try_help(program));
    }

    Ok(())
}
