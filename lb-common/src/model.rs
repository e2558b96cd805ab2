//! The host side's names for what the maps store as numbers: schedulers,
//! protocols and forwarding methods, one definition shared by lbd (config,
//! controller) and lbctl (ipvsadm's grammar and formats). The maps keep
//! their `u8` codes ([`crate::scheduler`], [`crate::forwarding`],
//! [`crate::IPPROTO_TCP`]); these convert.

use core::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// The LVS schedulers, with ipvsadm's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    Rr,
    Wrr,
    Lc,
    Wlc,
    Sed,
    Nq,
    Sh,
    Dh,
    Lblc,
    Lblcr,
    Mh,
    Fo,
    Ovf,
}

impl Scheduler {
    pub const ALL: [Scheduler; 13] = [
        Self::Rr,
        Self::Wrr,
        Self::Lc,
        Self::Wlc,
        Self::Sed,
        Self::Nq,
        Self::Sh,
        Self::Dh,
        Self::Lblc,
        Self::Lblcr,
        Self::Mh,
        Self::Fo,
        Self::Ovf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Lc => "lc",
            Self::Wlc => "wlc",
            Self::Sed => "sed",
            Self::Nq => "nq",
            Self::Sh => "sh",
            Self::Dh => "dh",
            Self::Lblc => "lblc",
            Self::Lblcr => "lblcr",
            Self::Mh => "mh",
            Self::Fo => "fo",
            Self::Ovf => "ovf",
        }
    }

    /// The number the datapath knows it by.
    pub fn code(self) -> u8 {
        use crate::scheduler as s;
        match self {
            Self::Rr => s::RR,
            Self::Wrr => s::WRR,
            Self::Lc => s::LC,
            Self::Wlc => s::WLC,
            Self::Sed => s::SED,
            Self::Nq => s::NQ,
            Self::Sh => s::SH,
            Self::Dh => s::DH,
            Self::Lblc => s::LBLC,
            Self::Lblcr => s::LBLCR,
            Self::Mh => s::MH,
            Self::Fo => s::FO,
            Self::Ovf => s::OVF,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheduler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|s| s.name()).collect();
            format!("unknown scheduler \"{s}\" (one of {})", names.join(", "))
        })
    }
}

/// The protocol of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => crate::IPPROTO_TCP,
            Self::Udp => crate::IPPROTO_UDP,
        }
    }

    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            crate::IPPROTO_TCP => Some(Self::Tcp),
            crate::IPPROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            _ => Err(format!("unknown protocol \"{s}\" (tcp or udp)")),
        }
    }
}

/// Forwarding method of a real server, as ipvsadm names it in `-L`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// Direct routing, "Route", `-g`.
    Dr,
    /// IP-in-IP, "Tunnel", `-i`.
    Tun,
    /// Masquerading, "Masq", `-m`.
    Nat,
    /// Full NAT: the client's address rewritten too (to one of the
    /// director's `fullnat_source` addresses); "FullNat", lbctl's
    /// `--fullnat` (ipvsadm has neither).
    #[serde(rename = "fullnat")]
    FullNat,
}

impl Forwarding {
    pub fn code(self) -> u8 {
        match self {
            Self::Dr => crate::forwarding::DR,
            Self::Tun => crate::forwarding::TUN,
            Self::Nat => crate::forwarding::NAT,
            Self::FullNat => crate::forwarding::FULLNAT,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            crate::forwarding::DR => Some(Self::Dr),
            crate::forwarding::TUN => Some(Self::Tun),
            crate::forwarding::NAT => Some(Self::Nat),
            crate::forwarding::FULLNAT => Some(Self::FullNat),
            _ => None,
        }
    }
}

impl FromStr for Forwarding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dr" => Ok(Self::Dr),
            "tun" => Ok(Self::Tun),
            "nat" => Ok(Self::Nat),
            "fullnat" => Ok(Self::FullNat),
            _ => Err(format!("unknown forwarding method \"{s}\" (dr, tun, nat or fullnat)")),
        }
    }
}
