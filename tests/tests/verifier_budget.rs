//! The verifier's work as a budget: every program of every object we ship
//! must be accepted by this kernel's verifier, and the main program and
//! its IPv6 program must each stay within `VERIFIER_BUDGET_INSNS` processed instructions and
//! `VERIFIER_BUDGET_TIME` (see lb_userspace::verifier for why). Needs root.
//!
//! `cargo test -p lb-tests --test verifier_budget -- --nocapture` prints
//! the figures; a failure's message carries them too.

use lb_tests::is_root;
use lb_userspace::verifier::{self, BUDGETED_PROGRAMS, VERIFIER_BUDGET_INSNS, VERIFIER_BUDGET_TIME};

#[test]
fn every_program_verifies_within_budget() {
    if !is_root() {
        eprintln!("skipped: loading programs needs root");
        return;
    }
    let objects = [
        ("EBPF_OBJECT", lb_userspace::EBPF_OBJECT),
        ("DECAP_OBJECT", lb_userspace::DECAP_OBJECT),
        ("BENCH_TX_OBJECT", lb_userspace::BENCH_TX_OBJECT),
        ("PROBE_OBJECT", lb_userspace::PROBE_OBJECT),
    ];
    let time_budget = lb_tests::scaled(VERIFIER_BUDGET_TIME);
    let mut lines = vec![format!(
        "kernel {}; budget for each of {}: {VERIFIER_BUDGET_INSNS} insns processed, {time_budget:?}",
        lb_userspace::kernel::release(),
        BUDGETED_PROGRAMS.join(", ")
    )];
    let mut failures = Vec::new();
    let mut budgeted_seen = Vec::new();
    for (label, object) in objects {
        let reports = verifier::verify_object(object).unwrap_or_else(|e| panic!("{label}: {e:#}"));
        assert!(!reports.is_empty(), "{label} has no programs");
        for report in reports {
            if verifier::is_budgeted(&report.name) {
                budgeted_seen.push(report.name.clone());
            }
            lines.push(format!("{label:<16} {report}"));
            if let Err(failure) = report.check_within(time_budget) {
                failures.push(failure);
            }
        }
    }
    // Written to stderr past the test harness's capture: the figures belong
    // in every test run's output, passing or not, like a memory report.
    {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "\nverifier budget:\n{}\n", lines.join("\n"));
    }
    for program in BUDGETED_PROGRAMS {
        assert!(budgeted_seen.iter().any(|p| p == program), "{program} is in none of the objects:\n{}", lines.join("\n"));
    }
    assert!(failures.is_empty(), "\n{}\n\n{}", lines.join("\n"), failures.join("\n"));
}
