//! Connection sync between directors, as IPVS's sync daemon: the master
//! sends each new or changed connection-table entry (and persistence
//! template) to the backup, which installs it in its own table, so that
//! after a failover every established connection goes on to the same real
//! server, whatever the scheduler.
//!
//! - [`wire`]: the datagram format (versioned, batched, HMAC-SHA256) and the
//!   receiver's checks (peers, sync ID, key, replays).
//! - [`table`]: entries to records and back, and what to send after each
//!   scan of the master's table.
//! - [`net`]: the UDP sender (multicast 224.0.0.81:8848, TTL 1, or unicast
//!   to the peers) and receiver.
//! - [`config`]: the `[sync]` table.

pub mod config;
pub mod net;
pub mod table;
pub mod wire;

pub use config::{RawSync, SyncConfig, Transport};
pub use net::{ReceivedBatch, SyncCounters, SyncReceiver, SyncSender, SyncStats};
pub use table::{Change, ChangeTracker};
pub use wire::{RecordKind, SyncError, SyncRecord};
