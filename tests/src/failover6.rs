//! What the IPv6 failover tests (`tests/vrrp6.rs`, `tests/sync6.rs`) share:
//! the lab with IPv6 on every host, lbd's `[[vrrp]]` instance for the IPv6
//! VIP and the IPv6 DR service on it, and the waits of an IPv6 failover
//! (the backup hearing the master's link-local address, the client's
//! neighbour entry moving).
//!
//! Like [`crate::failover`]'s, these helpers panic on failure.

use std::net::Ipv6Addr;
use std::path::Path;
use std::time::Duration;

use crate::director::Director;
use crate::failover::{Vrrp, sync_toml, vrrp_status, wait_for};
use crate::lab::HOST_IFACE;
use crate::netns::{self, MacAddr};
use crate::{Host, Lab, LabSpec};

/// The VRRP instance's id in the IPv6 tests.
pub const VRID6: u8 = 61;

/// Two directors without a static VIP, two real servers (HTTP on [::]:80
/// with `lab_server`), IPv6 everywhere (IPv4 too: connection sync's
/// datagrams go over IPv4).
pub fn lab6(lab_server: impl AsRef<Path>, name: &str, k: u8) -> Lab {
    let spec = LabSpec::new(name).directors(2).without_static_vip().subnet_index(k).ipv6();
    let lab = Lab::build(spec).unwrap();
    lab.start_http_servers_with(lab_server.as_ref()).unwrap();
    lab
}

/// lbd's `[[vrrp]]` for the IPv6 VIP (no `version`: IPv6 means VRRPv3).
pub fn vrrp6_toml(lab: &Lab, vrrp: &Vrrp) -> String {
    format!(
        "[[vrrp]]\nname = \"VI_6\"\ninterface = \"{HOST_IFACE}\"\nvirtual_router_id = {VRID6}\npriority = {}\n\
         advert_interval = \"{}ms\"\nvirtual_ipaddress = [\"{}/128\"]\ngarp_master_repeat = 3\n",
        vrrp.priority,
        vrrp.interval.as_millis(),
        lab.vip6()
    )
}

/// The IPv6 DR service on the VIP over the real servers' IPv6 addresses.
pub fn service6(lab: &Lab) -> String {
    let mut text = format!(
        "\n[[service]]\nvip = \"[{}]:80\"\nprotocol = \"tcp\"\nscheduler = \"rr\"\nforwarding = \"dr\"\n",
        lab.vip6()
    );
    for real in lab.reals() {
        text.push_str(&format!("\n[[service.real]]\naddress = \"{}\"\nweight = 1\n", real.ip6()));
    }
    text
}

/// lbd on `host` with the IPv6 service and instance and, with `sync_peer`,
/// connection sync with that director; not started.
pub fn lbd6<'a>(lab: &'a Lab, host: &Host, vrrp: &Vrrp, sync_peer: Option<&Host>) -> Director<'a> {
    lbd6_with(lab, host, vrrp, sync_peer, &service6(lab))
}

/// [`lbd6`] with `services` (`[[service]]` tables) instead of [`service6`].
pub fn lbd6_with<'a>(lab: &'a Lab, host: &Host, vrrp: &Vrrp, sync_peer: Option<&Host>, services: &str) -> Director<'a> {
    let d = Director::on_host(lab, host).unwrap();
    let sync = sync_peer.map(sync_toml).unwrap_or_default();
    let text = format!("{}{services}\n{}\n{sync}", d.director_toml(), vrrp6_toml(lab, vrrp));
    d.write_config_text(&text).unwrap();
    d
}

/// `ns`'s IPv6 link-local address on eth0: VRRP's source over IPv6.
pub fn link_local(ns: &str) -> Ipv6Addr {
    let out = netns::ip(&["-n", ns, "-6", "-o", "addr", "show", "dev", HOST_IFACE]).unwrap();
    let mut addresses = out.split_whitespace().filter_map(|w| w.split('/').next()?.parse::<Ipv6Addr>().ok());
    addresses
        .find(|a| a.segments()[0] & 0xffc0 == 0xfe80)
        .unwrap_or_else(|| panic!("no link-local address in {ns}: {out}"))
}

/// The MAC the client's neighbour table has for the IPv6 VIP.
pub fn client_neighbour6(lab: &Lab) -> Option<MacAddr> {
    let vip = lab.vip6().to_string();
    let out = netns::ip(&["-n", &lab.client().ns, "-6", "-j", "neigh", "show", &vip, "dev", HOST_IFACE]).ok()?;
    let json: serde_json::Value = serde_json::from_str(&out).ok()?;
    json[0]["lladdr"].as_str()?.parse().ok()
}

/// Waits until the client's neighbour entry for the IPv6 VIP is `host`'s
/// MAC; how long it took.
pub fn wait_client_moved_to6(lab: &Lab, host: &Host, timeout: Duration) -> Duration {
    wait_for(&format!("the client's neighbour entry for the VIP pointing to {}", host.name), timeout, || {
        (client_neighbour6(lab) == Some(host.mac)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#} (it is {:?})", client_neighbour6(lab)))
    .1
}

/// Waits until lbd's instance is backup and hears `master` (a link-local address).
pub fn wait_backup_of6(d: &Director<'_>, master: Ipv6Addr, what: &str, timeout: Duration) {
    wait_for(what, timeout, || {
        let s = vrrp_status(d);
        (s["state"] == "backup" && s["master_address"] == master.to_string()).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}: {}\n{}", vrrp_status(d), d.log()));
}
