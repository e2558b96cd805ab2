//! A planned restart of lbd (`SIGUSR2`): what the lbd that exits leaves
//! for the next one about its VRRP instances, and whether the next one may
//! resume as master instead of starting in backup.
//!
//! keepalived has no such thing: restarted, a master starts in backup
//! (`vrrp_init_state`), its VIPs go, the backup takes over after its
//! master-down interval and the restarted router preempts it back — two
//! failovers for one restart. Here the exiting master sends one last advert
//! (the backup's master-down timer starts again from it), leaves its VIPs
//! on the interface and its XDP program forwarding, and writes this note.
//! The next lbd resumes as master, sending its first advert at once, when
//! the note says this instance was master and that last advert is less than
//! 3 × `advert_interval` old: sooner than any backup's master-down interval
//! (3 × the master's interval + its skew time), so no backup has taken
//! over. Later, it starts as any lbd does (backup, the election), since
//! the other director may be master by now.
//!
//! The note lives beside the control socket (`<control_socket>.resume`,
//! /run is a tmpfs: a reboot forgets it), is root's, and is read once: the
//! next start removes it, whatever it said.

use std::{
    io::Write as _,
    net::IpAddr,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use super::config::VrrpConfig;

/// The note of a control socket: `<socket>.resume`, beside it.
pub fn note_path(control_socket: &Path) -> PathBuf {
    let mut name = control_socket.as_os_str().to_owned();
    name.push(".resume");
    PathBuf::from(name)
}

/// What one instance was when lbd exited for a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub vips: Vec<IpAddr>,
    pub master: bool,
    /// What the backups learned from its adverts.
    pub advert_interval_ms: u64,
    /// When it sent its last advert (`CLOCK_BOOTTIME`, ns).
    pub last_advert_ns: u64,
}

/// The note: every instance of the lbd that exited for a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// The exiting lbd's pid, for the log.
    pub pid: u32,
    pub instances: Vec<Left>,
}

/// `CLOCK_BOOTTIME` in ns: one clock for every process of the host, and it
/// counts a suspended machine's sleep.
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Writes the note (mode 0600, replacing any old one at once).
pub fn write(path: &Path, note: &Note) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec(note)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
}

/// Reads the note and removes it. None without one; a note that is not
/// root's (ours) or cannot be read is an error, and removed too.
pub fn take(path: &Path) -> Result<Option<Note>> {
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            return Err(e).with_context(|| format!("open {}", path.display()));
        }
    };
    let _ = std::fs::remove_file(path);
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let meta = file.metadata()?;
    if meta.uid() != euid || !meta.is_file() {
        bail!("{} is not a file of uid {euid}: ignored", path.display());
    }
    let note =
        serde_json::from_reader(std::io::BufReader::new(file)).with_context(|| format!("read {}", path.display()))?;
    Ok(Some(note))
}

/// What an instance does at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No master of this instance left for a restart: start as always.
    Start,
    /// Resume as master, if the first advert goes out before `until_ns`
    /// (`CLOCK_BOOTTIME`); `away` is how long since the last advert.
    Resume { until_ns: u64, away: Duration },
    /// A master left for a restart, but resuming is not safe: why.
    Refused(String),
}

/// Whether `config`'s instance may resume as master at `now_ns`
/// (`CLOCK_BOOTTIME`), from `note`; `adopted`: this lbd found the pinned
/// datapath the other one left running.
pub fn decide(note: Option<&Note>, config: &VrrpConfig, adopted: bool, now_ns: u64) -> Decision {
    let Some(left) = note.and_then(|n| n.instances.iter().find(|l| l.name == config.name)) else {
        return Decision::Start;
    };
    if !left.master {
        return Decision::Start;
    }
    if !adopted {
        // Nothing forwarded meanwhile: its kernel answered for the VIP.
        return Decision::Refused("the datapath it left running is gone".into());
    }
    let vips: Vec<IpAddr> = config.virtual_ipaddress.iter().map(|v| v.address).collect();
    if left.interface != config.interface || left.vrid != config.vrid || left.vips != vips {
        return Decision::Refused(format!(
            "the instance changed (it was virtual router {} on {} for {:?})",
            left.vrid, left.interface, left.vips
        ));
    }
    // Any backup waits 3 × the master's interval and its skew time.
    let budget = Duration::from_millis(left.advert_interval_ms) * 3;
    let until_ns = left.last_advert_ns.saturating_add(budget.as_nanos() as u64);
    let away = Duration::from_nanos(now_ns.saturating_sub(left.last_advert_ns));
    if now_ns >= until_ns || now_ns < left.last_advert_ns {
        return Decision::Refused(format!(
            "its last advert was {:.3} s ago, not less than 3 × advert_interval ({:.3} s): the backup may have \
             taken over",
            away.as_secs_f64(),
            budget.as_secs_f64()
        ));
    }
    Decision::Resume { until_ns, away }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use crate::vrrp::Vip;

    const S: u64 = 1_000_000_000;

    fn config() -> VrrpConfig {
        VrrpConfig::new("eth0", 51, &[Vip::new(Ipv4Addr::new(10, 0, 0, 100), 32)])
    }

    fn note(master: bool, last_advert_ns: u64) -> Note {
        let c = config();
        Note {
            pid: 1,
            instances: vec![Left {
                name: c.name.clone(),
                interface: c.interface.clone(),
                vrid: c.vrid,
                vips: vec![Ipv4Addr::new(10, 0, 0, 100).into()],
                master,
                advert_interval_ms: 1000,
                last_advert_ns,
            }],
        }
    }

    #[test]
    fn a_master_back_within_three_advert_intervals_resumes() {
        let c = config();
        let at = 100 * S;
        assert_eq!(
            decide(Some(&note(true, at)), &c, true, at + S / 2),
            Decision::Resume { until_ns: at + 3 * S, away: Duration::from_millis(500) }
        );
        assert!(matches!(decide(Some(&note(true, at)), &c, true, at + 3 * S), Decision::Refused(_)));
        assert!(matches!(decide(Some(&note(true, at)), &c, true, at + 10 * S), Decision::Refused(_)));
        // A clock that went back (another boot): no.
        assert!(matches!(decide(Some(&note(true, at)), &c, true, at - S), Decision::Refused(_)));
        // The datapath was not left running (pins removed): no.
        assert!(matches!(decide(Some(&note(true, at)), &c, false, at + S / 2), Decision::Refused(_)));
    }

    #[test]
    fn only_a_master_of_the_same_instance_resumes() {
        let c = config();
        let at = 100 * S;
        assert_eq!(decide(None, &c, true, at), Decision::Start);
        assert_eq!(decide(Some(&note(false, at)), &c, true, at + 1), Decision::Start, "it was backup");
        let mut other = note(true, at);
        other.instances[0].name = "another".into();
        assert_eq!(decide(Some(&other), &c, true, at + 1), Decision::Start);
        for change in [
            |l: &mut Left| l.vrid = 52,
            |l: &mut Left| l.interface = "eth1".into(),
            |l: &mut Left| l.vips.push(Ipv4Addr::new(10, 0, 0, 101).into()),
        ] {
            let mut changed = note(true, at);
            change(&mut changed.instances[0]);
            assert!(matches!(decide(Some(&changed), &c, true, at + 1), Decision::Refused(_)), "{changed:?}");
        }
    }

    #[test]
    fn the_note_is_read_once() {
        let dir = std::env::temp_dir().join(format!("lb-resume-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = note_path(&dir.join("lbd.sock"));
        assert_eq!(path, dir.join("lbd.sock.resume"));
        assert_eq!(take(&path).unwrap(), None);
        let n = note(true, boottime_ns());
        write(&path, &n).unwrap();
        assert_eq!(take(&path).unwrap(), Some(n));
        assert_eq!(take(&path).unwrap(), None, "removed");
        std::fs::write(&path, "not json").unwrap();
        assert!(take(&path).is_err());
        assert!(!path.exists(), "a bad note is removed too");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
