//! What lbctl shows of lbd's VRRP instances (`lbctl --vrrp`): their status
//! as it crosses the control socket, and its table.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime},
};

/// The state of a VRRP instance (RFC 5798's, and keepalived's Fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not started, or stopped.
    Init,
    Backup,
    Master,
    /// A tracked interface is down (or a tracked service with weight 0 has
    /// no live real server): neither master nor candidate.
    Fault,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            Self::Init => "INIT",
            Self::Backup => "BACKUP",
            Self::Master => "MASTER",
            Self::Fault => "FAULT",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What `lbctl` shows of an instance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VrrpStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    /// 2 or 3.
    pub version: u8,
    pub state: State,
    /// Configured priority.
    pub priority: u8,
    /// With the tracked services' weights.
    pub effective_priority: u8,
    /// Our own address while master; the master's while backup, once heard.
    pub master_address: Option<IpAddr>,
    /// Our address on the link (the source of our adverts).
    pub source_address: IpAddr,
    /// When the state last changed.
    pub since: SystemTime,
    pub transitions: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Received adverts that failed a check (TTL, version, checksum, auth,
    /// addresses, interval, unknown unicast peer) and were ignored.
    pub bad_adverts: u64,
    /// Why the last bad advert was bad.
    pub last_bad_advert: Option<String>,
    /// The bad adverts by what was wrong (`ttl`, `auth_type`, `vrid`, ...).
    #[serde(default)]
    pub bad_adverts_by_reason: std::collections::BTreeMap<String, u64>,
    /// The last I/O error (sending, addresses, ARPs), if any.
    pub last_error: Option<String>,
}

impl VrrpStatus {
    /// How long ago the state changed, at `now`.
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.since).unwrap_or_default()
    }
}

/// "45s", "5m12s", "3h04m", "2d05h".
pub fn format_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The instances as `lbctl` lists them: name, interface, VRID, version,
/// state, priority (effective), the master's address, time in the state.
pub fn render_table(statuses: &[VrrpStatus], now: SystemTime) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "INTERFACE".into(),
        "VRID".into(),
        "VER".into(),
        "STATE".into(),
        "PRIORITY".into(),
        "MASTER".into(),
        "SINCE".into(),
    ]];
    for s in statuses {
        let priority = if s.effective_priority == s.priority {
            s.priority.to_string()
        } else {
            format!("{} ({})", s.priority, s.effective_priority)
        };
        rows.push([
            s.name.clone(),
            s.interface.clone(),
            s.vrid.to_string(),
            s.version.to_string(),
            s.state.name().to_string(),
            priority,
            s.master_address.map_or("-".to_string(), |a| a.to_string()),
            format_age(s.age(now)),
        ]);
    }
    let widths: Vec<usize> = (0..8).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lbctl_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let status = |name: &str, state, effective, master: Option<&str>, age| VrrpStatus {
            name: name.into(),
            interface: "eth0".into(),
            vrid: 51,
            version: 3,
            state,
            priority: 100,
            effective_priority: effective,
            master_address: master.map(|m| m.parse().unwrap()),
            source_address: std::net::Ipv4Addr::new(172, 16, 100, 2).into(),
            since: now - Duration::from_secs(age),
            transitions: 1,
            adverts_sent: 0,
            adverts_received: 0,
            bad_adverts: 0,
            last_bad_advert: None,
            bad_adverts_by_reason: Default::default(),
            last_error: None,
        };
        let table = render_table(
            &[
                status("VI_1", State::Master, 100, Some("172.16.100.2"), 312),
                status("VI_2", State::Backup, 80, Some("172.16.100.3"), 7),
                status("VI_3", State::Fault, 100, None, 90_061),
            ],
            now,
        );
        assert_eq!(
            table,
            "NAME  INTERFACE  VRID  VER  STATE   PRIORITY  MASTER        SINCE\n\
             VI_1  eth0       51    3    MASTER  100       172.16.100.2  5m12s\n\
             VI_2  eth0       51    3    BACKUP  100 (80)  172.16.100.3  7s\n\
             VI_3  eth0       51    3    FAULT   100       -             1d01h\n"
        );
        assert_eq!(format_age(Duration::from_secs(3 * 3600 + 4 * 60)), "3h04m");
    }
}
