//! One lbd per pin directory and per control socket.
//!
//! A second lbd on the same paths would adopt the first one's maps, take
//! its XDP link over, replace its control socket and run a second VRRP
//! instance; its SIGTERM would then unpin everything under the first. So
//! lbd takes an exclusive flock(2) on both — the pin directory itself, and
//! `<control_socket>.lock` beside the socket — before it touches any map,
//! link or socket, and refuses to start without them. The kernel drops a
//! flock with the last descriptor of its holder: a crashed or killed lbd
//! leaves no stale lock, and the next one starts.

use std::{
    fs::File,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

/// The held locks; dropped (with the process, at the latest) they are free.
pub struct InstanceLock {
    _held: Vec<Flock<File>>,
}

/// The lock file of a control socket: `<socket>.lock`, beside it.
pub fn socket_lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl InstanceLock {
    /// Locks the control socket's path and, if there is one, the pin
    /// directory (which must exist). Fails, naming the other lbd's pid when
    /// the kernel tells it, if another process holds either.
    pub fn acquire(socket: &Path, pin_path: Option<&Path>) -> Result<Self> {
        let mut held = Vec::new();
        let lock_file = socket_lock_path(socket);
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                // Never a lock through a symlink someone left in our place.
                .custom_flags(libc::O_NOFOLLOW)
                .open(&lock_file)
        };
        held.push(lock(&lock_file, open, |holder| {
            format!(
                "{holder} serves the control socket {} (it holds {}); stop it first: two lbd on one host \
                 would fight over the maps, the XDP link and the socket",
                socket.display(),
                lock_file.display()
            )
        })?);
        if let Some(pin_path) = pin_path {
            let open = || {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                    .open(pin_path)
            };
            held.push(lock(pin_path, open, |holder| {
                format!(
                    "{holder} uses the pins under {} (it holds the lock on that directory); stop it first: \
                     two lbd on one host would fight over the maps and the XDP link",
                    pin_path.display()
                )
            })?);
        }
        Ok(Self { _held: held })
    }
}

/// Takes an exclusive lock on what `open` opens at `path`, without
/// waiting. A lbd that stops removes its pin directory; if that happened
/// between our open and our lock, what we locked is gone from the path, so
/// we open and lock again.
fn lock(
    path: &Path,
    open: impl Fn() -> std::io::Result<File>,
    held_by: impl Fn(&str) -> String,
) -> Result<Flock<File>> {
    for _ in 0..10 {
        let file = open().with_context(|| format!("open {} to lock it", path.display()))?;
        let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((file, Errno::EWOULDBLOCK)) => {
                let holder = holder_pid(&file)
                    .map_or_else(|| "another lbd".to_string(), |pid| format!("another lbd (pid {pid})"));
                bail!("{}", held_by(&holder));
            }
            Err((_, e)) => bail!("lock {}: {}", path.display(), std::io::Error::from(e)),
        };
        let same = match (locked.metadata(), std::fs::symlink_metadata(path)) {
            (Ok(ours), Ok(now)) => ours.dev() == now.dev() && ours.ino() == now.ino(),
            _ => false,
        };
        if same {
            return Ok(locked);
        }
    }
    bail!("lock {}: it keeps being replaced", path.display())
}

/// The pid holding a flock on `file`, from /proc/locks (`1: FLOCK ADVISORY
/// WRITE <pid> <major>:<minor>:<inode> 0 EOF`, device numbers in hex).
fn holder_pid(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let (major, minor) = (nix::sys::stat::major(meta.dev()), nix::sys::stat::minor(meta.dev()));
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&locks, major, minor, meta.ino())
}

fn holder_in(locks: &str, major: u64, minor: u64, ino: u64) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Waiters are listed as `1: -> FLOCK ...`; only the holder counts.
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let pid = fields.get(4)?.parse().ok()?;
        let mut id = fields.get(5)?.split(':');
        let ours = u64::from_str_radix(id.next()?, 16).ok()? == major
            && u64::from_str_radix(id.next()?, 16).ok()? == minor
            && id.next()?.parse::<u64>().ok()? == ino;
        ours.then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let locks = "1: FLOCK  ADVISORY  WRITE 4321 fe:01:5308630 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 99 00:2d:77 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 1234 00:2d:77 0 EOF\n\
                     3: POSIX  ADVISORY  WRITE 555 00:2d:78 0 EOF\n";
        assert_eq!(holder_in(locks, 0, 0x2d, 77), Some(1234));
        assert_eq!(holder_in(locks, 0xfe, 1, 5308630), Some(4321));
        assert_eq!(holder_in(locks, 0, 0x2d, 78), None);
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_the_path() {
        let dir = std::env::temp_dir().join(format!("lbd-lock-test-{}", std::process::id()));
        let socket = dir.join("lbd.sock");
        let pins = dir.join("pins");
        std::fs::create_dir_all(&pins).unwrap();
        let first = InstanceLock::acquire(&socket, Some(&pins)).unwrap();
        // flock is per open file: a second open in this process conflicts
        // as a second lbd's would.
        let err = InstanceLock::acquire(&socket, None).err().expect("a second lock on the socket").to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        assert!(err.contains("lbd.sock.lock"), "{err}");
        let err = InstanceLock::acquire(&dir.join("other.sock"), Some(&pins)).err().expect("a second lock").to_string();
        assert!(err.contains(&pins.display().to_string()), "{err}");
        drop(first);
        let again = InstanceLock::acquire(&socket, Some(&pins));
        assert!(again.is_ok(), "not free after the first let go");
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
