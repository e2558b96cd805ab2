//! Walks of the connection table (`ConnTable`): batched (the default) and
//! key by key (the fallback for kernels without batched lookups), on the
//! real program's table. Needs root (otherwise each test passes with a
//! message).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use aya::maps::{HashMap, Map, MapData};
use lb_common::{Conn, FlowKey, map_name};
use lb_tests::{harness::Harness, is_root};
use lb_userspace::datapath::{ConnTable, Cursor};

fn key(n: u32) -> FlowKey {
    FlowKey {
        src: [(0x6440_0000 + n).to_be(), 0, 0, 0],
        dst: [u32::from(Ipv4Addr::new(10, 0, 0, 100)).to_be(), 0, 0, 0],
        sport: 1024u16.to_be(),
        dport: 80u16.to_be(),
        protocol: 6,
        family: 2,
        ..FlowKey::default()
    }
}

fn conn(n: u32) -> Conn {
    Conn {
        real_id: n % 7,
        timeout: 60,
        ..Conn::default()
    }
}

/// A harness whose table holds `n` entries.
fn filled(capacity: u32, n: u32) -> Harness {
    let mut h = Harness::with_conn_table_size(capacity).unwrap();
    for i in 0..n {
        h.datapath.set_connection(&key(i), &conn(i)).unwrap();
    }
    h
}

/// Every key a walk hands out, how many it handed out, and whether it
/// went through the whole table.
fn walk_all(table: &ConnTable) -> (BTreeSet<FlowKey>, usize, bool) {
    let mut keys = BTreeSet::new();
    let mut n = 0;
    let mut cursor = Cursor::new();
    table
        .walk(&mut cursor, usize::MAX, |k, c| {
            assert_eq!(
                c.real_id,
                conn(u32::from_be(k.src[0]) - 0x6440_0000).real_id,
                "{k:?}"
            );
            keys.insert(*k);
            n += 1;
        })
        .unwrap();
    assert!(cursor.is_done());
    (keys, n, cursor.is_complete())
}

#[test]
fn batched_and_key_by_key_walks_hand_out_every_entry_once() {
    if !is_root() {
        eprintln!("skipped: loading the datapath needs root");
        return;
    }
    let n = 20_000;
    let h = filled(65_536, n);
    let batched = h.datapath.conn_table();
    let want: BTreeSet<FlowKey> = (0..n).map(key).collect();
    for table in [batched.clone(), batched.key_by_key().unwrap()] {
        let (keys, count, complete) = walk_all(&table);
        assert!(complete);
        assert_eq!(count, n as usize, "entries handed out twice or missed");
        assert_eq!(keys, want);
    }
    // Taken up in stretches, where it stopped.
    let mut cursor = Cursor::new();
    let mut keys = BTreeSet::new();
    let mut stretches = 0;
    while !cursor.is_done() {
        batched
            .walk(&mut cursor, 3000, |k, _| {
                assert!(keys.insert(*k), "{k:?} twice")
            })
            .unwrap();
        stretches += 1;
    }
    assert_eq!(
        (keys, cursor.visited(), cursor.is_complete()),
        (want, u64::from(n), true)
    );
    assert!(
        (7..=9).contains(&stretches),
        "{stretches} stretches of about 3000"
    );
    // Streamed.
    assert_eq!(batched.iter().count(), n as usize);
}

#[test]
fn a_walk_of_a_churning_full_table_ends_and_hands_out_each_entry_once() {
    if !is_root() {
        eprintln!("skipped: loading the datapath needs root");
        return;
    }
    let capacity = 16_384;
    let h = filled(capacity, capacity);
    let table = h.datapath.conn_table();
    // Another writer (the datapath under a flood) inserts new flows without
    // pause, so the LRU evicts old ones all the time.
    let ids = h
        .datapath
        .program()
        .info()
        .unwrap()
        .map_ids()
        .unwrap()
        .unwrap();
    let data = ids
        .into_iter()
        .map(|id| MapData::from_id(id).unwrap())
        .find(|m| m.info().unwrap().name_as_str() == Some(map_name::CONN_TABLE))
        .unwrap();
    let mut writer: HashMap<MapData, FlowKey, Conn> =
        HashMap::try_from(Map::LruHashMap(data)).unwrap();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let churn = s.spawn(|| {
            let mut i = capacity;
            while !stop.load(Ordering::Relaxed) {
                writer.insert(key(i), conn(i), 0).unwrap();
                i += 1;
            }
            i - capacity
        });
        let mut seen = Vec::new();
        for (name, table) in [
            ("batched", table.clone()),
            ("key by key", table.key_by_key().unwrap()),
        ] {
            for _ in 0..5 {
                let (keys, count, complete) = walk_all(&table);
                assert_eq!(
                    keys.len(),
                    count,
                    "a walk ({name}) handed out entries twice"
                );
                assert!(
                    count <= capacity as usize,
                    "{count} entries from a table of {capacity}"
                );
                seen.push((name, count, complete));
            }
        }
        // Batched, every walk of the churning table goes through it all.
        let (_, count, complete) = walk_all(&table);
        stop.store(true, Ordering::Relaxed);
        let inserted = churn.join().unwrap();
        eprintln!("{inserted} flows inserted while walking; walks (entries, complete): {seen:?}");
        assert!(inserted > capacity, "too little churn: {inserted}");
        assert!(
            complete && count > capacity as usize / 2,
            "a batched walk saw {count} of {capacity} (complete: {complete})"
        );
        assert!(
            seen.iter()
                .filter(|(name, ..)| *name == "batched")
                .all(|&(_, _, complete)| complete)
        );
    });
}
