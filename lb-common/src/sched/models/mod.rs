//! Reference models of IPVS's schedulers (feature `models`): what the kernel
//! would choose, written after its `net/netfilter/ipvs/` sources. The tests
//! check the controller's tables and the datapath's choices against them;
//! lbd uses them only to explain a pick (`lbctl explain`), never to make one.

mod hashed;
mod least;
mod locality;
mod sequence;

pub use hashed::{dh_pick, mh_pick, sh_pick};
pub use least::{ConnView, conn_overhead, fo, lc, least_connection, nq, ovf, sed, sed_overhead, wlc};
pub use locality::{
    LBLC_DEFAULT_EXPIRATION_SECS, LbReal, LblcEntry, LblcModel, LblcrEntry, LblcrModel, lblc_overloaded,
};
pub use sequence::{RrModel, SchedReal, WrrModel};
