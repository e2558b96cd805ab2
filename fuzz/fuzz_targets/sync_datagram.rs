//! The sync datagram parser, `sync::wire::decode`. The first input byte
//! chooses how the rest is received (its low 2 bits) and the receiver's
//! sync ID (the others; 0 takes any):
//!
//! - 0: as is, by a receiver without a key;
//! - 1: as is, by a receiver with the test key (a fuzzer forges no MAC:
//!   this is the MAC's own path);
//! - 2, 3: flagged and signed here with the test key, then received with
//!   it: the records are decoded after authentication, as from a peer
//!   that has the key.
//!
//! Beyond "no panic": a signed datagram is never refused for its MAC; and
//! the records of an accepted datagram, encoded again under its header,
//! decode to the same header and records.

#![no_main]

use lb_userspace::sync::wire::{FLAG_MAC, HEADER_LEN, MAC_LEN, SyncError, decode};
use libfuzzer_sys::fuzz_target;
use ring::hmac;

/// No allocation above 1 MiB (see `lb_fuzz::Bounded`).
#[global_allocator]
static ALLOC: lb_fuzz::Bounded = lb_fuzz::Bounded::mib(1);

const KEY: &[u8] = b"the fuzzers' sync key";

fn key() -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, KEY)
}

/// `datagram` with its MAC flag set and a MAC of it appended.
fn signed(mut datagram: Vec<u8>) -> Vec<u8> {
    if let Some(flags) = datagram.get_mut(3) {
        *flags |= FLAG_MAC;
    }
    let tag = hmac::sign(&key(), &datagram);
    datagram.extend_from_slice(tag.as_ref());
    datagram
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let sync_id = mode >> 2;
    let key = key();
    let (datagram, key) = match mode & 3 {
        0 => (rest.to_vec(), None),
        1 => (rest.to_vec(), Some(&key)),
        _ => (signed(rest.to_vec()), Some(&key)),
    };
    let result = decode(&datagram, sync_id, key);
    if mode & 2 != 0 {
        assert!(
            !matches!(result, Err(SyncError::BadMac | SyncError::MissingMac | SyncError::UnexpectedMac)),
            "{result:?}"
        );
    }
    let Ok((header, records)) = result else { return };

    // The same records, encoded again under the same header.
    let mut again = datagram[..HEADER_LEN].to_vec();
    for record in &records {
        assert!(record.encode_into(&mut again), "{record:?} cannot be encoded");
    }
    let mac = if key.is_some() { MAC_LEN } else { 0 };
    let size = u16::try_from(again.len() + mac).expect("no longer than what came");
    let count = u16::try_from(records.len()).expect("at most the count that came");
    again[6..8].copy_from_slice(&count.to_be_bytes());
    again[8..10].copy_from_slice(&size.to_be_bytes());
    let again = if key.is_some() { signed(again) } else { again };
    assert_eq!(decode(&again, sync_id, key), Ok((header, records)), "re-encoded {again:02x?}");
});
