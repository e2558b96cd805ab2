//! Connection sync over a veth pair between two network namespaces: lbd's
//! sender and receiver, and strangers (root only; skipped otherwise).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Duration,
};

use lb_tests::netns::{VETH_ADDR_A as ADDR_A, VETH_ADDR_B as ADDR_B, VethPair, spawn_in_netns};
use lb_userspace::sync::{
    SyncStats,
    config::{SyncConfig, SyncKey, Transport},
    net::{ReceivedBatch, SyncReceiver, SyncSender},
    table::Batch,
    wire::{Encoder, RecordKind, SyncRecord},
};
use tokio::sync::mpsc;

fn record(i: u16) -> SyncRecord {
    SyncRecord {
        kind: if i.is_multiple_of(10) { RecordKind::Template } else { RecordKind::Connection },
        protocol: 6,
        state: 1,
        client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, (i % 200) as u8)), 1024 + i),
        vip: "192.0.2.100:80".parse().unwrap(),
        service_port: 80,
        fwmark: 0,
        real: "192.0.2.10:80".parse().unwrap(),
        timeout: 900,
        idle_ms: u32::from(i),
    }
}

fn config(interface: &str, peer: Ipv4Addr, transport: Transport) -> SyncConfig {
    let mut c = SyncConfig::new(interface);
    c.sync_id = 3;
    c.transport = transport;
    c.peers = vec![peer];
    c.port = 18848;
    c.key = Some(SyncKey(b"a shared sync key".to_vec()));
    c
}

/// Starts a receiver in namespace b; returns what it got within `wait`,
/// and its counters.
fn receive_in_b(
    net: &VethPair,
    c: SyncConfig,
    ready: std::sync::mpsc::Sender<()>,
    wait: Duration,
) -> std::thread::JoinHandle<(Vec<ReceivedBatch>, u64, Option<String>)> {
    spawn_in_netns(&net.b, move || async move {
        let receiver = SyncReceiver::open(&c, Default::default()).expect("receiver");
        let stats = receiver.stats();
        let (tx, mut rx) = mpsc::channel(100);
        let task = tokio::spawn(receiver.run(tx));
        ready.send(()).unwrap();
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(batch)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            got.push(batch);
        }
        task.abort();
        let last = stats.last_rejected.lock().unwrap().clone();
        (got, stats.rejected(), last)
    })
}

fn pass_records(transport: Transport, tag: &str) {
    let Some(net) = VethPair::new(tag) else { return };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = receive_in_b(&net, config("vb", ADDR_A, transport), ready_tx, Duration::from_millis(1500));
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let records: Vec<_> = (0..100).map(record).collect();
    let sent = records.clone();
    spawn_in_netns(&net.a, move || async move {
        let sender = SyncSender::open(&config("va", ADDR_B, transport), Default::default()).expect("sender");
        assert_eq!(sender.address(), ADDR_A, "the interface's own address");
        assert_eq!(sender.header().origin, ADDR_A);
        let stats = sender.stats();
        let (tx, rx) = mpsc::channel(10);
        let (outcome_tx, mut outcomes) = mpsc::unbounded_channel();
        let task = tokio::spawn(sender.run(rx, outcome_tx));
        tx.send(Batch { id: 1, records: sent[..60].to_vec() }).await.unwrap();
        tx.send(Batch { id: 2, records: sent[60..].to_vec() }).await.unwrap();
        drop(tx);
        task.await.unwrap();
        assert_eq!(SyncStats::get(&stats.records_sent), 100);
        assert_eq!(SyncStats::get(&stats.send_errors), 0);
        // Each batch reported as sent, none failed.
        let mut settled = Vec::new();
        while let Ok(o) = outcomes.try_recv() {
            assert!(o.failed.is_empty(), "{o:?}");
            settled.extend(o.batches);
        }
        assert_eq!(settled, [1, 2]);
    })
    .join()
    .unwrap();
    let (batches, rejected, last) = receiver.join().unwrap();
    assert_eq!(rejected, 0, "{last:?}");
    assert!(batches.len() >= 3, "100 records need 3 datagrams of 1472 bytes: {}", batches.len());
    assert!(batches.iter().all(|b| b.from.ip() == IpAddr::V4(ADDR_A)));
    let got: Vec<_> = batches.into_iter().flat_map(|b| b.records).collect();
    assert_eq!(got, records);
}

#[test]
fn records_pass_by_multicast() {
    pass_records(Transport::Multicast, "sync1");
}

#[test]
fn records_pass_by_unicast() {
    pass_records(Transport::Unicast, "sync2");
}

#[test]
fn strangers_and_wrong_keys_are_refused() {
    let Some(net) = VethPair::new("sync3") else { return };
    // A second address on a's side: not a peer.
    net.ip(&net.a, &["addr", "add", "192.0.2.3/24", "dev", "va"]);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = receive_in_b(&net, config("vb", ADDR_A, Transport::Unicast), ready_tx, Duration::from_millis(800));
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    spawn_in_netns(&net.a, || async {
        let to = SocketAddrV4::new(ADDR_B, 18848);
        let from_peer = tokio::net::UdpSocket::bind(SocketAddrV4::new(ADDR_A, 0)).await.unwrap();
        let stranger = tokio::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 3), 0)).await.unwrap();
        let mut good = Encoder::new(3, 1472, Some(b"a shared sync key"), ADDR_A, 1);
        let mut wrong_key = Encoder::new(3, 1472, Some(b"another key, 16+b"), ADDR_A, 2);
        let mut wrong_id = Encoder::new(4, 1472, Some(b"a shared sync key"), ADDR_A, 3);
        stranger.send_to(&good.encode(&[record(1)])[0], to).await.unwrap();
        from_peer.send_to(&wrong_key.encode(&[record(2)])[0], to).await.unwrap();
        from_peer.send_to(&wrong_id.encode(&[record(3)])[0], to).await.unwrap();
        let d = good.encode(&[record(4)]).remove(0);
        from_peer.send_to(&d, to).await.unwrap();
        from_peer.send_to(&d, to).await.unwrap(); // a replay
    })
    .join()
    .unwrap();
    let (batches, rejected, _) = receiver.join().unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].records, [record(4)]);
    assert_eq!(rejected, 4);
}
