//! The VRRP advert parser (v2 and v3, with and without authentication):
//! the input is a packet as lbd's raw socket receives it (IPv4 header
//! included), checked by three virtual routers (v2 with a password, v2
//! without, v3), and also taken as a bare VRRP payload.
//!
//! Beyond "no panic": whatever decodes encodes back to the same bytes (but
//! the checksum, whose 0x0000 and 0xffff both verify, and v3's reserved
//! bits) and decodes again to the same advert; an accepted advert is of the
//! router's version and VRID.

#![no_main]

use std::net::Ipv4Addr;

use lb_userspace::vrrp::packet::{Advert, Expect, VRRP_GROUP, Version, parse_ipv4, simple_auth_data};
use libfuzzer_sys::fuzz_target;

/// No allocation above 1 MiB (see `lb_fuzz::Bounded`).
#[global_allocator]
static ALLOC: lb_fuzz::Bounded = lb_fuzz::Bounded::mib(1);

const SRC: Ipv4Addr = Ipv4Addr::new(172, 16, 100, 4);
const VIP1: Ipv4Addr = Ipv4Addr::new(172, 16, 100, 1);
const VIP2: Ipv4Addr = Ipv4Addr::new(172, 16, 100, 2);

fn routers() -> [Expect; 3] {
    let v2 = Expect {
        version: Version::V2,
        vrid: 51,
        addresses: vec![VIP1],
        interval_cs: 100,
        auth: Some(simple_auth_data("secret")),
        peers: vec![],
    };
    let v2_open = Expect { auth: None, ..v2.clone() };
    let v3 = Expect {
        version: Version::V3,
        vrid: 52,
        addresses: vec![VIP2, VIP1],
        interval_cs: 50,
        auth: None,
        peers: vec![SRC],
    };
    [v2, v2_open, v3]
}

/// `payload` decoded from `src` to `dst`: encode it back and decode again.
fn round_trip(payload: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let Ok(advert) = Advert::decode(payload, src, dst) else { return };
    let bytes = advert.encode(src, dst);
    assert_eq!(Advert::decode(&bytes, src, dst).as_ref(), Ok(&advert), "re-encoded {bytes:02x?}");
    let original = &payload[..bytes.len()];
    let mask = |b: &[u8]| {
        let mut b = b.to_vec();
        b[6..8].fill(0);
        if advert.version == Version::V3 {
            b[4] &= 0x0f;
        }
        b
    };
    assert_eq!(mask(&bytes), mask(original), "{advert:?}");
}

fuzz_target!(|data: &[u8]| {
    for router in routers() {
        if let Ok((ip, advert)) = router.check_packet(data) {
            assert_eq!((advert.version, advert.vrid), (router.version, router.vrid));
            assert_eq!(router.check_advert(&ip, &advert), Ok(()));
        }
    }
    if let Ok((ip, payload)) = parse_ipv4(data) {
        round_trip(payload, ip.src, ip.dst);
    }
    round_trip(data, SRC, VRRP_GROUP);
});
