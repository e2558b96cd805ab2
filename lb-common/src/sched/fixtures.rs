//! Shorthands the schedulers' unit tests share.

use super::MhReal;
use super::models::ConnView;
use crate::abi::ipv4_words;

pub fn cv(weight: u32, active: u64, inactive: u64) -> ConnView {
    ConnView::new(weight, active, inactive)
}

pub fn mh_real(last_octet: u8, weight: u32) -> MhReal {
    MhReal { addr: ipv4_words([10, 1, 0, last_octet]), port_be: 80u16.to_be(), weight }
}
