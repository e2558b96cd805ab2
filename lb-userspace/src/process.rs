//! Running `sh -c COMMAND` with a time limit: exec health checks, the
//! health checks' notify and quorum commands, VRRP's notify scripts. Each
//! runs in a process group of its own, killed whole past the limit or when
//! the run is dropped, so nothing it started outlives it by accident.

use std::{io, process::ExitStatus, process::Stdio, time::Duration};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::process::{Child, Command};

/// `sh -c command`, with stdin, stdout and stderr on /dev/null (as
/// keepalived's `notify_exec`): nobody reads them, and a pipe left open by
/// a grandchild must not keep anything waiting.
pub(crate) fn shell(command: &str) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so that a timeout kills what it started
        // too (`sh -c 'sleep 10'` may fork rather than exec).
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

#[derive(Debug)]
pub(crate) enum RunError {
    Spawn(io::Error),
    Wait(io::Error),
    /// Ran past the limit; its process group has been killed.
    TimedOut,
}

/// Runs `cmd` (from [`shell`]) to its end or until `limit`, then kills its
/// whole process group. Dropping the future kills the group too.
pub(crate) async fn run(mut cmd: Command, limit: Duration) -> Result<ExitStatus, RunError> {
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    // Declared after `child`, so dropped (and the group killed) before the
    // child is: the unreaped leader keeps the group id from being reused.
    let mut group = GroupKiller(child.id());
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => {
            group.0 = None;
            Ok(status)
        }
        Ok(Err(e)) => Err(RunError::Wait(e)),
        Err(_) => {
            group.kill();
            reap(&mut child).await;
            Err(RunError::TimedOut)
        }
    }
}

async fn reap(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Kills a process group when dropped, unless its leader exited normally.
struct GroupKiller(Option<u32>);

impl GroupKiller {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // The group may be gone already; nothing to do then.
            let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_command_past_its_limit_is_killed_with_its_children() {
        let marker = std::env::temp_dir().join(format!("lb-health-process-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        // The subshell forks `sleep`; if the group were not killed, the
        // marker would appear after 2 s.
        let cmd = shell(&format!("(sleep 2; touch {}) & wait", marker.display()));
        let start = Instant::now();
        assert!(matches!(run(cmd, Duration::from_millis(300)).await, Err(RunError::TimedOut)));
        assert!(start.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "a child of the command outlived the timeout");
    }

    #[tokio::test]
    async fn a_dropped_run_kills_the_group() {
        let marker = std::env::temp_dir().join(format!("lb-process-dropped-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let cmd = shell(&format!("(sleep 1; touch {}) & wait", marker.display()));
        let run = run(cmd, Duration::from_secs(10));
        assert!(tokio::time::timeout(Duration::from_millis(300), run).await.is_err());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "a child of the command outlived its dropped run");
    }

    #[tokio::test]
    async fn exit_codes_come_back() {
        let status = run(shell("exit 3"), Duration::from_secs(5)).await.unwrap();
        assert_eq!(status.code(), Some(3));
    }
}
