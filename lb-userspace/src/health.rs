//! Health checks of real servers, with keepalived's semantics.
//!
//! - [`config`]: what a check is ([`HealthCheck`]), keepalived's defaults.
//! - [`table`]: the `health_check` table (service-wide, overridable per
//!   real server), validated into a [`HealthCheck`].
//! - [`probe`]: one check of one server ([`check_once`]): tcp, http, https,
//!   ping, exec.
//! - [`tracker`]: the per-server state machine (retry, rise, alpha).
//! - [`monitor`]: the running checks, one tokio task per real server,
//!   transitions on a channel.
//! - [`watch`]: one server's task: its checks, log lines and notify
//!   commands; restarted should it panic.
//! - [`pool`]: what the service's real-server set becomes given the health
//!   states (inhibit_on_failure, dynamic weights, sorry server) and the
//!   service's quorum.
//!
//! How keepalived's words map onto ours:
//!
//! | keepalived            | here                  |
//! |-----------------------|-----------------------|
//! | `delay_loop`          | `interval`            |
//! | `connect_timeout`     | `connect_timeout` (bounds the whole check, also `exec`'s run) |
//! | `retry` (N)           | `retry` = N + 1: failed checks in a row that take a server down |
//! | `delay_before_retry`  | `delay_before_retry`  |
//! | (none; always 1)      | `rise`                |
//! | `alpha`               | `alpha`               |
//! | `inhibit_on_failure`  | `inhibit_on_failure`  |
//! | `bindto`              | `source_address`      |
//! | `connect_port`        | `port`                |
//! | `HTTP_GET`/`SSL_GET` `url { path digest status_code }`, `virtualhost` | `path`, `digest`, `status`, `host` |
//! | `MISC_CHECK` `misc_path`, `misc_dynamic` | `command`, `dynamic_weight` |
//! | `PING_CHECK`          | `ping`                |

pub mod config;
pub mod monitor;
pub mod notify;
pub mod pool;
pub mod probe;
pub mod table;
pub mod tracker;
mod watch;

pub use config::{CheckKind, ExecProbe, HealthCheck, HttpProbe, Probe, StatusCodes, TlsOptions};
pub use monitor::{CheckTiming, HealthEvent, HealthMonitor, MonitorChanges, MonitoredReal, Observed, RealStatus};
pub use notify::DEFAULT_NOTIFY_TIMEOUT;
pub use pool::{EffectivePool, Quorum, QuorumChange, QuorumState, RealHealth, effective_pool, live_weight};
pub use probe::check_once;
pub use table::{RawHealthCheck, ResolveContext};
pub use tracker::{CheckResult, Tracker, Transition};
