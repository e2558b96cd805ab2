//! The single source of truth for everything that crosses the kernel/user
//! boundary: map names and sizes, the `#[repr(C)]` key and value types, the
//! counter reasons, and the pure logic both sides need.
//!
//! Map types follow three rules so that the eBPF and the host views of a value
//! can never disagree: `#[repr(C)]` with every padding byte spelled out as a
//! field, a compile-time size assertion, and only plain integers and byte
//! arrays (no `bool`, `Option` or enums, whose invalid bit patterns would be
//! undefined behaviour when the kernel hands them over).
#![cfg_attr(not(feature = "host"), no_std)]

pub mod abi;
pub mod conn_state;
pub mod decap;
pub mod hash;
pub mod reason;

#[cfg(feature = "host")]
pub mod model;
#[cfg(feature = "user")]
pub mod sched;

pub use abi::*;
#[cfg(feature = "host")]
pub use model::{Forwarding, Protocol, Scheduler};
