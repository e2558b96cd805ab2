//! One check of one server.
//!
//! Every check is bounded by the check's `connect_timeout`, end to end, so
//! a slow or silent server costs at most that. A failed check says why in a
//! few words ("connect timeout", "connection refused", "HTTP status 503,
//! expected 200-299"), which end up in the log line when the server goes
//! down.
//!
//! A check the director could not make (no socket, a source address it
//! cannot bind, no process to run) is no failure of the server's
//! ([`CheckResult::NotChecked`]); see [`super::tracker`].

mod http;
mod net;
mod ping;

/// The HTTP/1 response reader of the http and https checks, public for the
/// fuzz crate (`fuzz/fuzz_targets/http_response.rs`).
pub use self::http::response as http_response;

use std::{net::SocketAddr, os::unix::process::ExitStatusExt, process::ExitStatus};

use tokio::time::Instant;

pub(crate) use self::net::random_u64;
use self::net::{connect, io_reason};

/// Why a check did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// The server (or the network to it) failed the check.
    Server(String),
    /// The director could not make the check: its own fault.
    NotChecked(String),
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Self::Server(reason)
    }
}
use super::{
    config::{ExecProbe, HealthCheck, Probe},
    tracker::CheckResult,
};
use crate::config::check::fmt_duration;
use crate::process::{self, RunError};

/// Checks the real server `real` (its address and port) once.
pub async fn check_once(check: &HealthCheck, real: SocketAddr) -> CheckResult {
    let target = check.target(real);
    let deadline = Instant::now() + check.connect_timeout;
    let outcome = match &check.probe {
        Probe::None => Ok(None),
        Probe::Tcp => connect(check, target, deadline).await.map(|_| None),
        Probe::Http(probe) => http::check(check, probe, target, deadline).await.map(|_| None),
        Probe::Ping => ping::check(check, target.ip(), deadline).await.map(|_| None),
        Probe::Exec(probe) => exec(check, probe, target).await,
    };
    match outcome {
        Ok(None) => CheckResult::Up,
        Ok(Some(weight)) => CheckResult::UpWithWeight(weight),
        Err(Failure::Server(reason)) => CheckResult::Down(reason),
        Err(Failure::NotChecked(reason)) => CheckResult::NotChecked(reason),
    }
}

/// keepalived's MISC_CHECK: exit 0 up, 1 down, 2-255 up with weight
/// code - 2 under `misc_dynamic` (else down). Returns the weight it set.
/// A command that cannot be started or waited for (no fork, no file
/// descriptor) is not checked, as keepalived's `system_call_script` only
/// logs a failed fork.
async fn exec(check: &HealthCheck, probe: &ExecProbe, target: SocketAddr) -> Result<Option<u32>, Failure> {
    let mut cmd = process::shell(&probe.command);
    cmd.env("LB_REAL_ADDRESS", target.ip().to_string()).env("LB_REAL_PORT", target.port().to_string());
    match process::run(cmd, check.connect_timeout).await {
        Ok(status) => Ok(exec_outcome(status, probe.dynamic_weight)?),
        Err(RunError::TimedOut) => {
            Err(Failure::Server(format!("command timed out after {}", fmt_duration(check.connect_timeout))))
        }
        Err(RunError::Spawn(e)) => Err(Failure::NotChecked(format!("cannot run /bin/sh: {}", io_reason(&e)))),
        Err(RunError::Wait(e)) => Err(Failure::NotChecked(format!("lost the command: {}", io_reason(&e)))),
    }
}

fn exec_outcome(status: ExitStatus, dynamic_weight: bool) -> Result<Option<u32>, String> {
    match status.code() {
        Some(0) => Ok(None),
        Some(code @ 2..=255) if dynamic_weight => Ok(Some(code as u32 - 2)),
        Some(code) => Err(format!("command exited with {code}")),
        None => Err(format!("command killed by signal {}", status.signal().unwrap_or(0))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::health::config::CheckKind;

    pub(crate) fn check(kind: CheckKind, timeout_ms: u64) -> HealthCheck {
        HealthCheck { connect_timeout: Duration::from_millis(timeout_ms), ..HealthCheck::defaults(kind) }
    }

    /// A port nobody listens on.
    async fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    #[tokio::test]
    async fn tcp_up_refused_and_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = listener.local_addr().unwrap();
        assert_eq!(check_once(&check(CheckKind::Tcp, 1000), up).await, CheckResult::Up);

        let closed = closed_port().await;
        assert_eq!(
            check_once(&check(CheckKind::Tcp, 1000), closed).await,
            CheckResult::Down("connection refused".into())
        );

        // A listener whose accept queue is full drops further SYNs, so a
        // connect hangs as it would to a dead host.
        let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        full.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        full.listen(0).unwrap();
        let full_addr = full.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..4 {
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(full_addr)).await {
                fillers.push(s);
            }
        }
        let start = std::time::Instant::now();
        let result = check_once(&check(CheckKind::Tcp, 500), full_addr).await;
        let took = start.elapsed();
        assert_eq!(result, CheckResult::Down("connect timeout".into()));
        assert!(took >= Duration::from_millis(450) && took < Duration::from_millis(1200), "{took:?}");
    }

    #[tokio::test]
    async fn tcp_binds_the_source_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut c = check(CheckKind::Tcp, 1000);
        c.source_address = Some("127.0.0.2".parse().unwrap());
        let accept = tokio::spawn(async move { listener.accept().await.unwrap().1 });
        assert_eq!(check_once(&c, addr).await, CheckResult::Up);
        assert_eq!(accept.await.unwrap().ip().to_string(), "127.0.0.2");

        // Not ours: bind fails, nothing is sent, and that is no failure of
        // the server's.
        c.source_address = Some("192.0.2.1".parse().unwrap());
        assert_eq!(
            check_once(&c, addr).await,
            CheckResult::NotChecked("cannot bind to 192.0.2.1: address not available".into())
        );
        c.probe = HealthCheck::defaults(CheckKind::Http).probe;
        assert_eq!(
            check_once(&c, addr).await,
            CheckResult::NotChecked("cannot bind to 192.0.2.1: address not available".into())
        );
        c.probe = Probe::Ping;
        assert_eq!(
            check_once(&c, addr).await,
            CheckResult::NotChecked("cannot bind to 192.0.2.1: address not available".into())
        );
    }

    #[tokio::test]
    async fn the_check_port_overrides_the_real_servers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = check(CheckKind::Tcp, 1000);
        c.port = Some(listener.local_addr().unwrap().port());
        let real = closed_port().await;
        assert_eq!(check_once(&c, real).await, CheckResult::Up);
        drop(listener);
    }

    fn exec_check(command: &str, dynamic_weight: bool, timeout_ms: u64) -> HealthCheck {
        HealthCheck {
            probe: Probe::Exec(ExecProbe { command: command.into(), dynamic_weight }),
            ..check(CheckKind::Exec, timeout_ms)
        }
    }

    #[tokio::test]
    async fn exec_exit_codes() {
        let real: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(check_once(&exec_check("true", false, 5000), real).await, CheckResult::Up);
        assert_eq!(
            check_once(&exec_check("false", true, 5000), real).await,
            CheckResult::Down("command exited with 1".into())
        );
        assert_eq!(check_once(&exec_check("exit 7", true, 5000), real).await, CheckResult::UpWithWeight(5));
        assert_eq!(check_once(&exec_check("sh -c 'exit 7'", true, 5000), real).await, CheckResult::UpWithWeight(5));
        assert_eq!(check_once(&exec_check("exit 2", true, 5000), real).await, CheckResult::UpWithWeight(0));
        assert_eq!(
            check_once(&exec_check("exit 7", false, 5000), real).await,
            CheckResult::Down("command exited with 7".into())
        );
        assert_eq!(
            check_once(&exec_check("kill -9 $$", false, 5000), real).await,
            CheckResult::Down("command killed by signal 9".into())
        );
        let env = "test \"$LB_REAL_ADDRESS:$LB_REAL_PORT\" = 127.0.0.1:80";
        assert_eq!(check_once(&exec_check(env, false, 5000), real).await, CheckResult::Up);
    }

    #[tokio::test]
    async fn exec_timeout_kills_the_command() {
        let start = std::time::Instant::now();
        let result = check_once(&exec_check("sleep 10", false, 1000), "127.0.0.1:80".parse().unwrap()).await;
        assert_eq!(result, CheckResult::Down("command timed out after 1s".into()));
        assert!(start.elapsed() < Duration::from_millis(1500), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn ping_localhost() {
        let result = check_once(&check(CheckKind::Ping, 2000), "127.0.0.1:0".parse().unwrap()).await;
        assert_eq!(result, CheckResult::Up);
        let mut c = check(CheckKind::Ping, 2000);
        c.source_address = Some("127.0.0.1".parse().unwrap());
        assert_eq!(check_once(&c, "127.0.0.1:0".parse().unwrap()).await, CheckResult::Up);
    }

    #[tokio::test]
    async fn ping_localhost_v6() {
        // Only where the machine has IPv6 loopback.
        if std::net::UdpSocket::bind("[::1]:0").is_err() {
            return;
        }
        let result = check_once(&check(CheckKind::Ping, 2000), "[::1]:0".parse().unwrap()).await;
        assert_eq!(result, CheckResult::Up);
    }

    #[tokio::test]
    async fn none_is_always_up() {
        assert_eq!(check_once(&HealthCheck::default(), closed_port().await).await, CheckResult::Up);
    }
}
