//! lbd's Prometheus endpoint in the namespace lab: traffic through the VIP
//! and a health change, then /metrics against `lbctl --stats --json`, and
//! the exposition through `promtool check metrics` (Debian's `prometheus`
//! package; `cargo xtask setup` installs it). Needs root.

use std::{net::SocketAddrV4, time::Duration};

use lb_tests::director::Director;
use lb_tests::lab::HTTP_PORT;
use lb_tests::director::ServiceSpec;
use lb_tests::scenario::{finish, lab_with_servers, root_or_skip, start_configured, teardown, vip_url, wait_until};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
const LISTEN: &str = "127.0.0.1:9469";

/// The value of the sample `name{labels}` (labels as written, sorted).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_match_lbctl_and_pass_promtool() {
    if !root_or_skip("metrics") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "metrics", 61, 2);
    let (rs1, rs2) = (lab.real(0).ip, lab.real(1).ip);
    let vip = SocketAddrV4::new(lab.vip(), HTTP_PORT);
    // rs2's check asks a port nothing listens on: it goes down after its
    // first check (a health change), rs1 stays up.
    let service = ServiceSpec::tcp(vip, "rr")
        .real(rs1, 1)
        .real(rs2, 1)
        .check("kind = \"tcp\"")
        .check("interval = \"500ms\"")
        .check("retry = 1")
        .real_check(rs2, "port = 8099");
    let mut director = Director::new(&lab).unwrap();
    director.add_section(&format!("[metrics]\nlisten = \"{LISTEN}\"\n"));
    let director = start_configured(director, &[service]);
    let ns = lab.director().ns.clone();
    let scrape = || lab.run(&ns, &["curl", "-sf", &format!("http://{LISTEN}/metrics")]).unwrap();
    let svc = format!("service=\"tcp {vip}\"");
    let rs2_up = format!("lb_real_up{{real=\"{rs2}:{HTTP_PORT}\",{svc}}}");
    wait_until("rs2 down in the metrics", Duration::from_secs(10), || {
        let text = scrape();
        (sample(&text, &rs2_up) == Some(0.0), text)
    });
    let url = vip_url(&lab, "/whoami");
    for _ in 0..5 {
        lab.curl(&url).unwrap();
    }
    // The daemon publishes every second: wait for a snapshot after the traffic.
    std::thread::sleep(Duration::from_millis(2500));
    let text = scrape();
    let json = director.lbctl(&["-L", "-n", "--stats", "--json"]).unwrap();
    let table: serde_json::Value = serde_json::from_str(&json).unwrap();
    let stats = &table["services"][0]["stats"];
    for (metric, field) in [
        (format!("lb_service_connections_total{{{svc}}}"), "conns"),
        (format!("lb_service_packets_total{{direction=\"in\",{svc}}}"), "in_packets"),
        (format!("lb_service_bytes_total{{direction=\"in\",{svc}}}"), "in_bytes"),
    ] {
        assert_eq!(sample(&text, &metric), stats[field].as_f64(), "{metric} against lbctl's {field}:\n{text}");
    }
    assert_eq!(sample(&text, &format!("lb_service_connections_total{{{svc}}}")), Some(5.0), "{text}");
    for real in table["services"][0]["reals"].as_array().unwrap() {
        let labels = format!("real=\"{}:{}\",{svc}", real["address"].as_str().unwrap(), real["port"]);
        for (metric, field) in [("lb_real_connections_total", "conns"), ("lb_real_packets_total", "in_packets")] {
            let series = if field == "conns" { format!("{metric}{{{labels}}}") } else { format!("{metric}{{direction=\"in\",{labels}}}") };
            assert_eq!(sample(&text, &series), real["stats"][field].as_f64(), "{series}:\n{text}");
        }
        assert_eq!(sample(&text, &format!("lb_real_weight{{{labels}}}")), real["weight"].as_f64(), "{text}");
    }
    assert_eq!(sample(&text, &format!("lb_real_up{{real=\"{rs1}:{HTTP_PORT}\",{svc}}}")), Some(1.0), "{text}");
    assert!(sample(&text, "lb_datapath_packets_total{reason=\"tx_dr\"}").unwrap_or(0.0) > 0.0, "{text}");
    assert!(text.contains("lb_build_info{"), "{text}");

    let file = lab.log_dir().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v promtool >/dev/null || exit 127; promtool check metrics < {}", file.display()))
        .output()
        .unwrap();
    if out.status.code() == Some(127) {
        eprintln!("SKIPPED promtool check: promtool is not installed (apt-get install prometheus)");
    } else {
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    finish(director);
    teardown(lab);
}
