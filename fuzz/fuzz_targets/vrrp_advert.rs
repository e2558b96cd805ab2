//! The VRRP advert parser (v2 and v3, with and without authentication, v3
//! over IPv6): the input is a packet as lbd's raw IPv4 socket receives it
//! (IPv4 header included) or an IPv6 one (its header as tcpdump shows it;
//! lbd's socket gives it apart), checked by four virtual routers (v2 with a
//! password, v2 without, v3, v3 over IPv6), and also taken as a bare VRRP
//! payload over either family.
//!
//! Beyond "no panic": whatever decodes encodes back to the same bytes (but
//! the checksum, whose 0x0000 and 0xffff both verify, and v3's reserved
//! bits) and decodes again to the same advert; an accepted advert is of the
//! router's version and VRID.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_userspace::vrrp::packet::{
    Advert, Expect, VRRP_GROUP, VRRP_GROUP6, Version, is_link_local6, parse_ip, simple_auth_data,
};
use libfuzzer_sys::fuzz_target;

/// No allocation above 1 MiB (see `lb_fuzz::Bounded`).
#[global_allocator]
static ALLOC: lb_fuzz::Bounded = lb_fuzz::Bounded::mib(1);

const SRC: Ipv4Addr = Ipv4Addr::new(172, 16, 100, 4);
const VIP1: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 100, 1));
const VIP2: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 100, 2));
const SRC6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 4);
const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100));

fn routers() -> [Expect; 4] {
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
        peers: vec![SRC.into()],
    };
    let v3_ipv6 =
        Expect { version: Version::V3, vrid: 61, addresses: vec![VIP6], interval_cs: 100, auth: None, peers: vec![] };
    [v2, v2_open, v3, v3_ipv6]
}

/// `payload` decoded from `src` to `dst`: encode it back and decode again.
fn round_trip(payload: &[u8], src: IpAddr, dst: IpAddr) {
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
            assert_eq!(ip.ttl, 255);
            assert!(advert.addresses.iter().all(|a| a.is_ipv4() == ip.src.is_ipv4()), "{advert:?} from {}", ip.src);
            if let IpAddr::V6(src) = ip.src {
                assert!(is_link_local6(src) && advert.version == Version::V3);
            }
        }
    }
    if let Ok((ip, payload)) = parse_ip(data) {
        round_trip(payload, ip.src, ip.dst);
    }
    round_trip(data, SRC.into(), VRRP_GROUP.into());
    round_trip(data, SRC6.into(), VRRP_GROUP6.into());
});
