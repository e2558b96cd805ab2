//! `cargo xtask bench`: what the datapath costs per packet next to a
//! trivial XDP program ([`datapath`]), requests and connections per second
//! end to end in the namespace lab next to HAProxy ([`e2e`]), and what a
//! walk of the connection table costs as it grows ([`sweep`]), what one,
//! two and three active directors behind an ECMP router carry ([`ecmp`]),
//! written out
//! as JSON, Markdown and an SVG chart ([`report`]). Run by the
//! `lb-bench` binary; a benchmark, not a test, so `cargo test` only builds
//! it (and tests its parsing and formatting).

pub mod datapath;
pub mod e2e;
pub mod ecmp;
pub mod report;
pub mod sweep;
