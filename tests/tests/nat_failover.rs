//! LVS-NAT with two directors: VRRP moves the VIP and the real servers'
//! gateway address together (a `virtual_ipaddress` with `dev eth1`, as
//! keepalived sites do), connection sync carries the connections and their
//! reply entries, and a connection opened through the first director goes
//! on through the second, on its real server.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs root.

use std::path::Path;
use std::time::Duration;

use lb_tests::director::{Director, ServiceSpec};
use lb_tests::failover::{wait_for, wait_state};
use lb_tests::lab::{HOST_IFACE, INSIDE_IFACE};
use lb_tests::scenario::{counts, curl_vip, root_or_skip, tally, vip80};
use lb_tests::{Host, Lab, LabSpec};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
const REAL_PORT: u16 = 8080;

/// lbd on `host`: the lab's HTTP service by NAT, VRRP for the VIP and the
/// gateway (`priority`), sync with `peer`. Not started.
fn nat_director<'a>(lab: &'a Lab, host: &Host, priority: u8, peer: &Host) -> Director<'a> {
    let mut d = Director::on_host(lab, host).unwrap();
    d.director_setting(&format!("interfaces = [\"{INSIDE_IFACE}\"]"));
    d.add_section(&format!(
        "[[vrrp]]\nname = \"VI_1\"\ninterface = \"{HOST_IFACE}\"\nvirtual_router_id = 51\npriority = {priority}\n\
         version = 3\nadvert_interval = \"100ms\"\ngarp_master_repeat = 3\n\
         virtual_ipaddress = [\"{}/32\", \"{}/24 dev {INSIDE_IFACE}\"]\n",
        lab.vip(),
        lab.inside_gateway(),
    ));
    d.add_section(&format!(
        "[sync]\ninterface = \"{HOST_IFACE}\"\npeers = [\"{}\"]\nkey = \"nat failover test key 0123456789\"\n\
         scan_interval = \"100ms\"\n",
        peer.ip
    ));
    let mut service = ServiceSpec::lab_http(lab, "rr").forwarding("nat");
    for real in lab.reals() {
        service = service.real_with(real.ip, &format!("port = {REAL_PORT}"));
    }
    d.write_config(&[service]).unwrap();
    d
}

/// Whether `host` holds the real servers' gateway address on its inside interface.
fn holds_gateway(lab: &Lab, host: &Host) -> bool {
    let out = lab.run(&host.ns, &["ip", "-4", "-o", "addr", "show", "dev", INSIDE_IFACE]).unwrap();
    out.contains(&format!(" {}/", lab.inside_gateway()))
}

#[test]
fn the_gateway_moves_with_the_vip_and_connections_go_on() {
    if !root_or_skip("nat_failover") {
        return;
    }
    let lab =
        Lab::build(LabSpec::new("nat_failover").directors(2).without_static_vip().nat_reals().subnet_index(66)).unwrap();
    lab.start_http_servers_on(Path::new(LAB_SERVER), REAL_PORT).unwrap();
    let (h1, h2) = (lab.directors()[0].clone(), lab.directors()[1].clone());
    let mut d1 = nat_director(&lab, &h1, 150, &h2);
    let mut d2 = nat_director(&lab, &h2, 100, &h1);
    d1.start().unwrap();
    wait_state(&d1, "master", Duration::from_secs(5));
    d2.start().unwrap();
    wait_state(&d2, "backup", Duration::from_secs(5));
    assert!(holds_gateway(&lab, &h1) && !holds_gateway(&lab, &h2));

    let answers = curl_vip(&lab, 4);
    assert_eq!(tally(&answers), counts(&[("rs1", 2), ("rs2", 2)]), "lbd log:\n{}", d1.log());
    let mut held = lab.hold_http_connection(&lab.client().ns, vip80(&lab)).unwrap();
    let server = held.server.clone();
    wait_for("the held connection synced to director2", Duration::from_secs(5), || {
        d2.connection_entries().ok()?.iter().any(|e| e.source == held.local).then_some(())
    })
    .unwrap();

    // The master goes; the backup takes the VIP and the gateway.
    d1.stop().unwrap();
    wait_state(&d2, "master", Duration::from_secs(5));
    assert!(holds_gateway(&lab, &h2) && !holds_gateway(&lab, &h1));

    // The held connection goes on, on its server, through director2 (its
    // first reply may wait for director2 to learn the client's MAC).
    let again = held.ask("/whoami").unwrap_or_else(|e| panic!("{e:#}\ndirector2's log:\n{}", d2.log()));
    assert!(again.starts_with(&format!("{server} ")), "{again}");
    let answers = curl_vip(&lab, 4);
    assert_eq!(tally(&answers), counts(&[("rs1", 2), ("rs2", 2)]), "lbd log:\n{}", d2.log());
    let counters = d2.counters().unwrap();
    assert!(counters["tx_nat_reply"] > 0, "{counters:?}");
    held.close();
    d2.stop().unwrap();
}
