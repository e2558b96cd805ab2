//! The datapath benchmark's scenarios in a few runs each (figures not
//! checked: this is no benchmark): every run still checks its verdict and
//! that the reason counters moved on the measured path, so a scenario that
//! no longer takes its path fails here before `cargo xtask bench`. The
//! IPv6 rows carry their IPv4 counterparts' targets into the README's
//! tables. Needs root.

use lb_tests::bench::datapath::{self, DatapathOptions, DatapathResults};
use lb_tests::bench::report::{Machine, Results};
use lb_tests::is_root;

/// IPv6 rows and the IPv4 rows whose targets they share.
const COUNTERPARTS: [(&str, &str); 4] = [
    ("ipv6_pass_not_service", "pass_not_service"),
    ("ipv6_dr_established", "dr_established"),
    ("ipv6_dr_new_connection", "dr_new_connection"),
    ("ipv6_tun_established", "tun_established"),
];

fn smoke_run() -> DatapathResults {
    // (dr_new_connection, a prefix, brings the full-table scenario too.)
    let only = COUNTERPARTS
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .map(String::from)
        .collect();
    let options = DatapathOptions {
        runs: 200,
        rounds: 2,
        warmup: 10,
        stats_runs: 50,
        repeat: 1000,
        cpu: None,
        only,
    };
    datapath::run(&options, &mut |_| {}).expect("the datapath scenarios")
}

#[test]
fn ipv6_rows_run_and_carry_the_ipv4_targets() {
    if !is_root() {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
        return;
    }
    let d = smoke_run();
    let ids: Vec<&str> = d.scenarios.iter().map(|s| s.id.as_str()).collect();
    let scenario = |id: &str| {
        d.scenarios
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("{id} missing: {ids:?}"))
    };
    for (v6, v4) in COUNTERPARTS {
        let (v6, v4) = (scenario(v6), scenario(v4));
        assert_eq!(
            v6.target_ratio, v4.target_ratio,
            "{}: the target of {}",
            v6.id, v4.id
        );
        assert_eq!(v6.title, format!("{}, IPv6", v4.title));
        assert_eq!(v6.runs, 200, "{}", v6.id);
        assert!(v6.median_ns > 0.0, "{}: timed", v6.id);
    }

    // The README's rows and targets, as the report writes them.
    let rows: Vec<(String, String, Option<f64>)> = COUNTERPARTS
        .iter()
        .map(|(v6, _)| scenario(v6))
        .map(|s| (s.id.clone(), s.title.clone(), s.target_ratio))
        .collect();
    let results = Results {
        machine: Machine::describe(),
        datapath: Some(d),
        e2e: None,
        sweep: None,
        ecmp: None,
    };
    let summary = results.summary_markdown();
    let targets = results.targets();
    for (id, title, target_ratio) in rows {
        let row = summary
            .lines()
            .find(|l| l.starts_with(&format!("| {title} |")))
            .unwrap_or_else(|| panic!("no README row for {id}:\n{summary}"));
        match target_ratio {
            Some(t) => assert!(row.contains(&format!("≤ {t}x: ")), "{row}"),
            None => assert!(row.ends_with("|  |"), "{row}"),
        }
        let target = targets
            .iter()
            .find(|t| t.what == format!("datapath: {title}"));
        assert_eq!(
            target.is_some(),
            target_ratio.is_some(),
            "{id}: in the targets table"
        );
    }
}
