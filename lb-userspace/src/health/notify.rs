//! Notify commands (`notify_up`, `notify_down`, `quorum_up`,
//! `quorum_down`): run with `sh -c` in the background, with environment
//! variables describing the event, killed past a time limit. Nothing waits
//! for them.

use std::time::Duration;

use crate::config::check::fmt_duration;
use crate::process::{self, RunError};

/// How long a notify command may run before it is killed.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts `command` in the background with `env` added to lbd's
/// environment. Must be called within a tokio runtime. Failures are logged.
pub fn spawn(command: &str, env: Vec<(&'static str, String)>, limit: Duration) -> tokio::task::JoinHandle<()> {
    let command = command.to_string();
    tokio::spawn(async move {
        let mut cmd = process::shell(&command);
        cmd.envs(env);
        match process::run(cmd, limit).await {
            Ok(status) if status.success() => {}
            Ok(status) => tracing::warn!("notify command `{command}` failed: {status}"),
            Err(RunError::TimedOut) => {
                tracing::warn!("notify command `{command}` killed after {}", fmt_duration(limit))
            }
            Err(RunError::Spawn(e) | RunError::Wait(e)) => tracing::warn!("notify command `{command}`: {e}"),
        }
    })
}
