//! A [`Snapshot`] in Prometheus's text format: every name `lb_`, counters
//! `_total`, times in seconds since the epoch or durations in seconds.
//! A real server is labelled by its service (`service="tcp 10.0.0.100:80"`,
//! as lbd's logs name it) and its address (`real="10.0.0.21:80"`).

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use lb_ipvsadm::{command::VirtualService, snapshot::Stats, vrrp::State};
use prometheus::{Encoder as _, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};

use super::{COMMIT, Snapshot, VERSION};
use crate::commands::service_id;

/// The label values of a metric without labels.
const NONE: [&str; 0] = [];

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The datapath reasons that are ICMP errors sent, by ICMP type.
const ICMP_REPLIES: [(&str, &str); 2] = [("tx_icmp_unreachable", "port_unreachable"), ("tx_icmp_frag_needed", "frag_needed")];

/// The exposition of `snapshot`.
pub fn encode(snapshot: &Snapshot) -> prometheus::Result<String> {
    let out = Exposition { registry: Registry::new_custom(Some("lb".into()), None)? };
    out.services(snapshot)?;
    out.health(snapshot)?;
    out.datapath(snapshot)?;
    out.vrrp(snapshot)?;
    out.sync(snapshot)?;
    out.daemon(snapshot)?;
    let mut text = Vec::new();
    TextEncoder::new().encode(&out.registry.gather(), &mut text)?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

struct Exposition {
    registry: Registry,
}

impl Exposition {
    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
        let c = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
        let g = GaugeVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(g.clone()))?;
        Ok(g)
    }

    /// Per service and real server: what `lbctl -L --stats` shows.
    fn services(&self, s: &Snapshot) -> prometheus::Result<()> {
        let svc = ["service"];
        let conns = self.counter("service_connections_total", "Connections scheduled by the service.", &svc)?;
        let packets =
            self.counter("service_packets_total", "Packets of the service's connections.", &["service", "direction"])?;
        let bytes = self.counter("service_bytes_total", "Bytes of the service's connections.", &["service", "direction"])?;
        let real = ["service", "real"];
        let real_dir = ["service", "real", "direction"];
        let r_conns = self.counter("real_connections_total", "Connections scheduled to the real server.", &real)?;
        let r_packets = self.counter("real_packets_total", "Packets of the real server's connections.", &real_dir)?;
        let r_bytes = self.counter("real_bytes_total", "Bytes of the real server's connections.", &real_dir)?;
        let active = self.gauge("real_active_connections", "ActiveConn: established connections.", &real)?;
        let inactive = self.gauge("real_inactive_connections", "InActConn: connections in other states.", &real)?;
        let persistent =
            self.gauge("real_persistent_connections", "Persistence templates pointing at the server.", &real)?;
        let weight = self.gauge("real_weight", "The weight in force (0: quiesced or down).", &real)?;
        let stats = |service: &[&str], s: &Stats, conns: &IntCounterVec, packets: &IntCounterVec, bytes: &IntCounterVec| {
            conns.with_label_values(service).inc_by(s.conns);
            for (direction, p, b) in [("in", s.in_packets, s.in_bytes), ("out", s.out_packets, s.out_bytes)] {
                let labels: Vec<&str> = service.iter().copied().chain([direction]).collect();
                packets.with_label_values(&labels).inc_by(p);
                bytes.with_label_values(&labels).inc_by(b);
            }
        };
        for service in &s.table.services {
            let name = service_label(&service.id);
            stats(&[&name], &service.stats, &conns, &packets, &bytes);
            for r in &service.reals {
                let addr = SocketAddr::new(r.address, r.port).to_string();
                let labels = [name.as_str(), addr.as_str()];
                stats(&labels, &r.stats, &r_conns, &r_packets, &r_bytes);
                active.with_label_values(&labels).set(r.active_conns as f64);
                inactive.with_label_values(&labels).set(r.inactive_conns as f64);
                persistent.with_label_values(&labels).set(r.persistent_conns as f64);
                weight.with_label_values(&labels).set(f64::from(r.weight));
            }
        }
        Ok(())
    }

    /// The health checks: state, its last change, the last check's time.
    fn health(&self, s: &Snapshot) -> prometheus::Result<()> {
        let labels = ["service", "real"];
        let up = self.gauge("real_up", "1 if the real server passes its health check (or has none), else 0.", &labels)?;
        let changed = self.gauge(
            "real_health_changed_timestamp_seconds",
            "When the checked server last went up or down (or its checks began).",
            &labels,
        )?;
        let took = self.gauge("real_health_check_duration_seconds", "How long the last health check took.", &labels)?;
        // Every checked server, in the table or not (a down one leaves it).
        for o in &s.health {
            let (name, addr) = (o.service.to_string(), o.real.to_string());
            let labels = [name.as_str(), addr.as_str()];
            up.with_label_values(&labels).set(if o.up { 1.0 } else { 0.0 });
            changed.with_label_values(&labels).set(epoch_seconds(o.timing.changed_at));
            if let Some(d) = o.timing.last_duration {
                took.with_label_values(&labels).set(d.as_secs_f64());
            }
        }
        // The unchecked ones are up.
        for service in &s.table.services {
            let name = service_label(&service.id);
            for r in &service.reals {
                let addr = SocketAddr::new(r.address, r.port);
                if !s.health.iter().any(|o| o.service.to_string() == name && o.real == addr) {
                    up.with_label_values(&[name.as_str(), &addr.to_string()]).set(1.0);
                }
            }
        }
        Ok(())
    }

    /// The datapath's reason counters, the ICMP errors it sent, the
    /// connection table.
    fn datapath(&self, s: &Snapshot) -> prometheus::Result<()> {
        let reasons = self.counter(
            "datapath_packets_total",
            "Packets by the datapath's verdict reason (conn_* count connection-table events).",
            &["reason"],
        )?;
        let route_losses = self.counter(
            "tun_route_losses_total",
            "Route lookups that found no usable route toward a TUN real server (it kept its last path).",
            &[],
        )?;
        let icmp = self.counter("icmp_replies_total", "ICMP errors the datapath sent, by type.", &["type"])?;
        let limited =
            self.counter("icmp_replies_rate_limited_total", "ICMP errors not sent for the director's rate limit.", &[])?;
        for (name, &value) in &s.reasons {
            match name.as_str() {
                "tun_no_route" => route_losses.with_label_values(&NONE).inc_by(value),
                _ => reasons.with_label_values(&[name]).inc_by(value),
            }
        }
        for (reason, kind) in ICMP_REPLIES {
            icmp.with_label_values(&[kind]).inc_by(s.reasons.get(reason).copied().unwrap_or(0));
        }
        limited.with_label_values(&NONE).inc_by(s.reasons.get("drop_icmp_rate_limited").copied().unwrap_or(0));
        let size = self.gauge("conn_table_size", "Entries the connection table holds at most (LRU).", &[])?;
        size.with_label_values(&NONE).set(f64::from(s.table.conn_table_size));
        if let Some(entries) = s.conn_entries {
            let live = self.gauge(
                "conn_table_entries",
                "Live entries (connections and persistence templates) at the last complete sweep of the table.",
                &[],
            )?;
            live.with_label_values(&NONE).set(entries as f64);
        }
        let evictions = self.counter(
            "conn_table_evictions_total",
            "Entries the connection table's LRU evicted to make room (the kernel counts none). Derived from \
             inserts against live entries: the datapath counts each entry into its real server's connection \
             counts when it inserts it and out when it or the sweep removes it; an evicted entry leaves \
             uncounted. So the counts beyond what a complete sweep pass finds in the table (inserts - removals \
             - live) are evictions, added when the sweep corrects the counts (a gap lasting 3 passes, so a few \
             passes late); a correction the other way is taken back from later ones.",
            &[],
        )?;
        evictions.with_label_values(&NONE).inc_by(s.conn_evictions);
        Ok(())
    }

    fn vrrp(&self, s: &Snapshot) -> prometheus::Result<()> {
        if s.vrrp.is_empty() {
            return Ok(());
        }
        // Not `instance`: Prometheus gives every target that label.
        let i = ["vrrp_instance"];
        let state = self.gauge("vrrp_state", "1 for the instance's current state, 0 for the others.", &["vrrp_instance", "state"])?;
        let since = self.gauge("vrrp_state_changed_timestamp_seconds", "When the instance's state last changed.", &i)?;
        let priority = self.gauge("vrrp_priority", "The configured priority.", &i)?;
        let effective = self.gauge("vrrp_effective_priority", "The priority with the tracked services' weights.", &i)?;
        let transitions = self.counter("vrrp_transitions_total", "State changes.", &i)?;
        let sent = self.counter("vrrp_adverts_sent_total", "Adverts sent.", &i)?;
        let received = self.counter("vrrp_adverts_received_total", "Valid adverts received from a peer.", &i)?;
        let rejected =
            self.counter("vrrp_adverts_rejected_total", "Adverts ignored for failing a check, by check.", &["vrrp_instance", "reason"])?;
        for v in &s.vrrp {
            let name = [v.name.as_str()];
            for st in [State::Init, State::Backup, State::Master, State::Fault] {
                let value = if st == v.state { 1.0 } else { 0.0 };
                state.with_label_values(&[&v.name, &st.name().to_lowercase()]).set(value);
            }
            since.with_label_values(&name).set(epoch_seconds(v.since));
            priority.with_label_values(&name).set(f64::from(v.priority));
            effective.with_label_values(&name).set(f64::from(v.effective_priority));
            transitions.with_label_values(&name).inc_by(v.transitions);
            sent.with_label_values(&name).inc_by(v.adverts_sent);
            received.with_label_values(&name).inc_by(v.adverts_received);
            for (reason, &n) in &v.bad_adverts_by_reason {
                rejected.with_label_values(&[&v.name, reason]).inc_by(n);
            }
        }
        Ok(())
    }

    /// Connection sync: `sync_X` counters as `lb_sync_X_total`, the
    /// per-reason ones as labels, and the lag.
    fn sync(&self, s: &Snapshot) -> prometheus::Result<()> {
        let Some(sync) = &s.sync else { return Ok(()) };
        let rejected =
            self.counter("sync_datagrams_rejected_total", "Datagrams dropped whole, by reason.", &["reason"])?;
        let refused = self.counter("sync_records_refused_total", "Received entries not installed, by reason.", &["reason"])?;
        for (name, &value) in &sync.counters {
            if let Some(reason) = name.strip_prefix("sync_rejected_") {
                rejected.with_label_values(&[reason]).inc_by(value);
            } else if let Some(reason) = name.strip_prefix("sync_refused_") {
                refused.with_label_values(&[reason]).inc_by(value);
            } else if let Some(what) = name.strip_prefix("sync_") {
                let help = format!("Connection sync: {}.", what.replace('_', " "));
                self.counter(&format!("sync_{what}_total"), &help, &[])?.with_label_values(&NONE).inc_by(value);
            }
        }
        if let Some(at) = sync.last_installed {
            self.gauge("sync_last_applied_timestamp_seconds", "When a received entry was last installed.", &[])?
                .with_label_values(&NONE)
                .set(epoch_seconds(at));
            let age = s.taken.and_then(|t| t.duration_since(at).ok()).unwrap_or(Duration::ZERO);
            self.gauge("sync_lag_seconds", "Age of the newest installed entry from the other director.", &[])?
                .with_label_values(&NONE)
                .set(age.as_secs_f64());
        }
        Ok(())
    }

    /// Reloads and the build.
    fn daemon(&self, s: &Snapshot) -> prometheus::Result<()> {
        let reloads = self.counter("reloads_total", "SIGHUP reloads, by result.", &["result"])?;
        reloads.with_label_values(&["success"]).inc_by(s.reloads.succeeded);
        reloads.with_label_values(&["failure"]).inc_by(s.reloads.failed);
        if let Some((at, ok)) = s.reloads.last {
            self.gauge("last_reload_timestamp_seconds", "When the last reload was.", &[])?
                .with_label_values(&NONE)
                .set(epoch_seconds(at));
            self.gauge("last_reload_success", "1 if the last reload succeeded, else 0.", &[])?
                .with_label_values(&NONE)
                .set(if ok { 1.0 } else { 0.0 });
        }
        self.gauge("build_info", "lbd's version and the commit it was built from; always 1.", &["version", "commit"])?
            .with_label_values(&[VERSION, COMMIT])
            .set(1.0);
        Ok(())
    }
}

/// "tcp 10.0.0.100:80" or "fwmark 1 IPv6": the service's name in lbd's
/// logs and health reports (`ServiceId`'s display), so labels match them.
pub fn service_label(id: &VirtualService) -> String {
    service_id(id).to_string()
}

fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use lb_ipvsadm::{
        command::ServiceAddress,
        snapshot::{Real, Service, Table},
    };

    use super::*;
    use crate::{
        health::{CheckTiming, Observed},
        metrics::{Reloads, SyncSnapshot},
        model::{Forwarding, Protocol, ServiceId},
    };

    fn snapshot() -> Snapshot {
        let vip = "10.0.0.100".parse().unwrap();
        let real = |last: u8, active| Real {
            address: [10, 0, 0, last].into(),
            port: 80,
            forwarding: Forwarding::Dr,
            weight: 2,
            active_conns: active,
            inactive_conns: 1,
            persistent_conns: 0,
            upper_threshold: 0,
            lower_threshold: 0,
            stats: Stats { conns: 7, in_packets: 30, out_packets: 0, in_bytes: 3000, out_bytes: 0 },
            rates: Default::default(),
        };
        let service = Service {
            id: VirtualService::Address(ServiceAddress { protocol: Protocol::Tcp, addr: vip, port: 80 }),
            scheduler: "rr".into(),
            sched_flags: vec![],
            persistence_timeout: None,
            persistence_netmask: None,
            stats: Stats { conns: 14, in_packets: 60, out_packets: 0, in_bytes: 6000, out_bytes: 0 },
            rates: Default::default(),
            reals: vec![real(21, 3), real(22, 0)],
        };
        let changed_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Snapshot {
            table: Table { conn_table_size: 1024, services: vec![service] },
            health: vec![Observed {
                service: ServiceId::address(Protocol::Tcp, vip, 80),
                real: "10.0.0.22:80".parse().unwrap(),
                up: false,
                timing: CheckTiming { changed_at, last_duration: Some(Duration::from_millis(250)) },
            }],
            reasons: BTreeMap::from([("tx_dr".into(), 60), ("tun_no_route".into(), 1), ("tx_icmp_unreachable".into(), 2)]),
            conn_entries: Some(4),
            conn_evictions: 9,
            vrrp: vec![],
            sync: Some(SyncSnapshot {
                counters: BTreeMap::from([("sync_records_sent".into(), 5), ("sync_rejected_bad_mac".into(), 2)]),
                last_installed: None,
            }),
            reloads: Reloads { succeeded: 1, failed: 2, last: Some((changed_at, false)) },
            taken: Some(changed_at),
        }
    }

    #[test]
    fn every_kind_of_value_is_exposed() {
        let text = encode(&snapshot()).unwrap();
        for line in [
            "lb_service_connections_total{service=\"tcp 10.0.0.100:80\"} 14",
            "lb_service_bytes_total{direction=\"in\",service=\"tcp 10.0.0.100:80\"} 6000",
            "lb_real_active_connections{real=\"10.0.0.21:80\",service=\"tcp 10.0.0.100:80\"} 3",
            "lb_real_up{real=\"10.0.0.21:80\",service=\"tcp 10.0.0.100:80\"} 1",
            "lb_real_up{real=\"10.0.0.22:80\",service=\"tcp 10.0.0.100:80\"} 0",
            "lb_real_health_check_duration_seconds{real=\"10.0.0.22:80\",service=\"tcp 10.0.0.100:80\"} 0.25",
            "lb_real_health_changed_timestamp_seconds{real=\"10.0.0.22:80\",service=\"tcp 10.0.0.100:80\"} 1700000000",
            "lb_datapath_packets_total{reason=\"tx_dr\"} 60",
            "lb_tun_route_losses_total 1",
            "lb_icmp_replies_total{type=\"port_unreachable\"} 2",
            "lb_conn_table_size 1024",
            "lb_conn_table_entries 4",
            "lb_conn_table_evictions_total 9",
            "# TYPE lb_conn_table_evictions_total counter",
            "lb_sync_records_sent_total 5",
            "lb_sync_datagrams_rejected_total{reason=\"bad_mac\"} 2",
            "lb_reloads_total{result=\"failure\"} 2",
            "lb_last_reload_success 0",
            "# TYPE lb_service_connections_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.contains(&format!("lb_build_info{{commit=\"{COMMIT}\",version=\"{VERSION}\"}} 1")), "{text}");
        assert!(!text.contains("lb_vrrp_"), "no VRRP instance, no VRRP metrics");
    }
}
