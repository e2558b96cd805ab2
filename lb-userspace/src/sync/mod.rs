//! Connection sync between directors, as IPVS's sync daemon: the master
//! sends each new or changed connection-table entry (and persistence
//! template) to the backup, which installs it in its own table, so that
//! after a failover every established connection goes on to the same real
//! server, whatever the scheduler.
//!
//! - [`wire`]: the datagram format (versioned, batched, HMAC-SHA256).
//! - [`accept`]: the receiver's checks of a datagram: peers, origin, key,
//!   replays across the sender's restarts, with bounded state.
//! - [`check`]: the receiver's checks of each record against its own
//!   services and timeouts, before it is installed.
//! - [`table`]: entries to records and back, and what to send after each
//!   scan of the master's table (counted as sent once it went out).
//! - [`net`]: the UDP sender (multicast 224.0.0.81:8848, TTL 1, or unicast
//!   to the peers) and receiver.
//! - [`stats`]: counters by reason (`lbctl --counters`), the log's rate.
//! - [`config`]: the `[sync]` table.

pub mod accept;
pub mod check;
pub mod config;
pub mod net;
pub mod stats;
pub mod table;
pub mod wire;

pub use config::{RawSync, SyncConfig, Transport};
pub use net::{ReceivedBatch, SyncReceiver, SyncSender};
pub use stats::SyncStats;
pub use table::{Batch, Change, ChangeTracker, SendOutcome};
pub use wire::{RecordKind, SyncError, SyncRecord};
