//! ipvsadm's table of which options each command needs, allows or forbids
//! (`commands_v_options`), and the tunnel types' (`tunnel_types_v_options`),
//! with the checks that walk them.

use crate::error::ParseError;

use super::read::Entry;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Timeout,
    StartDaemon,
    StopDaemon,
    Restore,
    Save,
    Zero,
}

impl Cmd {
    /// Row in [`COMMANDS_V_OPTIONS`] and name in ipvsadm's messages.
    pub(super) fn row(self) -> (usize, &'static str) {
        match self {
            Self::Add => (0, "add-service"),
            Self::Edit => (1, "edit-service"),
            Self::Del => (2, "delete-service"),
            Self::Flush => (3, "flush"),
            Self::List => (4, "list"),
            Self::AddDest => (5, "add-server"),
            Self::DelDest => (6, "delete-server"),
            Self::EditDest => (7, "edit-server"),
            Self::Timeout => (8, "set"),
            Self::StartDaemon => (9, "start-daemon"),
            Self::StopDaemon => (10, "stop-daemon"),
            Self::Restore => (11, "restore"),
            Self::Save => (12, "save"),
            Self::Zero => (13, "zero"),
        }
    }
}

/// ipvsadm's option columns, in its table's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Col {
    Numeric = 0,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    Mcast,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    SyncId,
    Exact,
    OnePacket,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
}

const NUMBER_OF_OPT: usize = 34;

pub(super) const OPT_NAMES: [&str; NUMBER_OF_OPT] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
];

/// Which options each command takes: '+' needed, 'x' illegal, '1' at most
/// one of the '1's, ' ' allowed. Columns as [`Col`], rows as [`Cmd::row`].
#[rustfmt::skip]
const COMMANDS_V_OPTIONS: [&[u8; NUMBER_OF_OPT]; 14] = [
    //0         1         2         3
    //0123456789012345678901234567890123
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx", // add-service
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx", // edit-service
    b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // delete-service
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // flush
    b" 11xxxxxxxxx11       xxxxxxx xxxxx", // list
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ", // add-server
    b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx", // delete-server
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ", // edit-server
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // set
    b"xxxxxxxxxxx xxxxxxx xxxx    xxxxxx", // start-daemon
    b"xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx", // stop-daemon
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // restore
    b" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // save
    b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // zero
];

/// Tunnel types in ipvsadm's order.
pub(super) const TUN_NAMES: [&str; 3] = ["ipip", "gue", "gre"];
/// The tunnel options checked per tunnel type.
const TUN_OPTS: [Col; 4] = [Col::TunPort, Col::TunNocsum, Col::TunCsum, Col::TunRemcsum];
/// Which tunnel options each type takes (same key as COMMANDS_V_OPTIONS).
const TUNNEL_TYPES_V_OPTIONS: [&[u8; 4]; 3] = [b"xxxx", b"+111", b"x11x"];

/// ipvsadm's generic_opt_check: the options table, column by column.
pub(super) fn generic_opt_check(ce: &Entry) -> Result<(), ParseError> {
    let (row, command) = ce.cmd.row();
    let mut first_exclusive: Option<usize> = None;
    for (j, &rule) in COMMANDS_V_OPTIONS[row].iter().enumerate() {
        let set = ce.options & (1 << j) != 0;
        if !set {
            if rule == b'+' {
                return Err(ParseError::usage(format!(
                    "You need to supply the '{}' option for the '{command}' command",
                    OPT_NAMES[j]
                )));
            }
            continue;
        }
        if rule == b'x' {
            return Err(ParseError::usage(format!("Illegal '{}' option with the '{command}' command", OPT_NAMES[j])));
        }
        if rule == b'1' {
            match first_exclusive {
                None => first_exclusive = Some(j),
                Some(last) => {
                    return Err(ParseError::usage(format!(
                        "The option '{}' conflicts with the '{}' option in the '{command}' command",
                        OPT_NAMES[j], OPT_NAMES[last]
                    )));
                }
            }
        }
    }
    Ok(())
}

/// ipvsadm's tunnel_opt_check: the tunnel options table of the tunnel type.
pub(super) fn tunnel_opt_check(ce: &Entry) -> Result<(), ParseError> {
    let tunnel = TUN_NAMES[ce.tun_type];
    let mut first_exclusive: Option<Col> = None;
    for (j, &rule) in TUNNEL_TYPES_V_OPTIONS[ce.tun_type].iter().enumerate() {
        let col = TUN_OPTS[j];
        let name = OPT_NAMES[col as usize];
        if !ce.has(col) {
            if rule == b'+' {
                return Err(ParseError::usage(format!(
                    "You need to supply the '{name}' option for the '{tunnel}' tunnel type"
                )));
            }
            continue;
        }
        if rule == b'x' {
            return Err(ParseError::usage(format!("Illegal '{name}' option with the '{tunnel}' tunnel type")));
        }
        if rule == b'1' {
            match first_exclusive {
                None => first_exclusive = Some(col),
                Some(last) => {
                    return Err(ParseError::usage(format!(
                        "The option '{name}' conflicts with the '{}' option in the '{tunnel}' tunnel type",
                        OPT_NAMES[last as usize]
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_table_is_ipvsadms() {
        // Spot checks of the table against ipvsadm.c's.
        let rule = |cmd: Cmd, col: Col| COMMANDS_V_OPTIONS[cmd.row().0][col as usize];
        assert_eq!(rule(Cmd::Add, Col::Service), b'+');
        assert_eq!(rule(Cmd::Add, Col::SchedFlags), b' ');
        assert_eq!(rule(Cmd::Add, Col::McastGroup), b'x');
        assert_eq!(rule(Cmd::List, Col::TunInfo), b' ');
        assert_eq!(rule(Cmd::List, Col::Daemon), b'1');
        assert_eq!(rule(Cmd::List, Col::OnePacket), b'x');
        assert_eq!(rule(Cmd::AddDest, Col::TunRemcsum), b' ');
        assert_eq!(rule(Cmd::AddDest, Col::TunInfo), b'x');
        assert_eq!(rule(Cmd::StartDaemon, Col::SyncMaxlen), b' ');
        assert_eq!(rule(Cmd::StartDaemon, Col::Exact), b'x');
        assert_eq!(rule(Cmd::StopDaemon, Col::SyncId), b' ');
        assert_eq!(rule(Cmd::Save, Col::Numeric), b' ');
        assert_eq!(rule(Cmd::Zero, Col::Service), b' ');
        assert_eq!(OPT_NAMES[Col::TunRemcsum as usize], "tun-remcsum");
        assert_eq!(OPT_NAMES[Col::OnePacket as usize], "ops");
    }
}
