//! The gate in front of the datapath: what lbd asks of the kernel before it
//! loads the program, and what it says when the kernel refuses it. Needs
//! root; otherwise each test prints a message and passes.

use std::time::{Duration, Instant};

use lb_tests::scenario::root_or_skip;
use lb_tests::director::{Director, ServiceSpec};
use lb_tests::{Lab, LabSpec};
use lb_userspace::kernel;

#[test]
fn this_kernel_has_what_the_datapath_needs() {
    if !root_or_skip("kernel_features") {
        return;
    }
    let missing = kernel::missing();
    assert!(missing.is_empty(), "{}", kernel::explain_missing(&missing));
}

/// The issue this answers: a datapath over the verifier's limit made lbd
/// silent for minutes (verbose-log retries) and then fail without a word.
#[test]
fn a_refused_datapath_stops_lbd_within_seconds_with_the_verifiers_figures() {
    if !root_or_skip("refused_datapath") {
        return;
    }
    let lab = Lab::build(LabSpec::new("kernel-refused").reals(1).subnet_index(130)).unwrap();
    let director = Director::new(&lab).unwrap();
    director.write_config(&[ServiceSpec::lab_http(&lab, "rr")]).unwrap();
    let object = lab.log_dir().join("too-big.o");
    std::fs::write(&object, lb_userspace::TOO_BIG_OBJECT).unwrap();

    let started = Instant::now();
    let run = director
        .run_lbd(&[
            "--config",
            &director.config_path.to_string_lossy(),
            "--datapath-object",
            &object.to_string_lossy(),
        ])
        .unwrap();
    let took = started.elapsed();

    assert!(!run.status.success(), "lbd started with a refused datapath:\n{}", run.stderr);
    let bound = lb_tests::scaled(Duration::from_secs(10));
    assert!(took < bound, "lbd took {took:?} to give up (bound {bound:?}):\n{}", run.stderr);
    let release = kernel::release();
    for needle in [
        "refused the XDP program lb_xdp",
        release.as_str(),
        "the verifier processed 1000001 instructions",
        "BPF program is too large",
        "what to do: lb needs Linux 5.17 or newer",
    ] {
        assert!(run.stderr.contains(needle), "lbd's log lacks {needle:?}:\n{}", run.stderr);
    }
    assert!(!director.xdp_attached().unwrap(), "XDP attached despite the refusal");
}
