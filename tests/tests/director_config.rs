//! Config mistakes: lbd names each by file, line and key, exits non-zero
//! and attaches nothing, in the namespace lab's director.
//!
//! Build lbd and lbctl first (`cargo build -p lb-userspace -p lbctl`), as
//! for `tests/director.rs`; needs root (otherwise the test prints a message
//! and passes).

use std::net::SocketAddrV4;
use std::path::PathBuf;

use lb_tests::director::{Director, ServiceSpec};
use lb_tests::lab::HTTP_PORT;
use lb_tests::scenario::{line_of, root_or_skip, teardown};
use lb_tests::{Lab, LabSpec};

/// A config mistake and what lbd must say about it.
struct Mistake {
    name: &'static str,
    text: String,
    /// The line the message must name.
    line: usize,
    /// What must follow "FILE:LINE: " in the message.
    message: String,
}

#[test]
fn config_mistakes_are_named_by_file_line_and_key_and_nothing_is_attached() {
    if !root_or_skip("config_errors") {
        return;
    }
    let lab = Lab::build(LabSpec::new("dir-config").reals(2).subnet_index(47)).unwrap();
    let director = Director::new(&lab).unwrap();
    let (vip, rs1, rs2) = (lab.vip(), lab.real(0).ip, lab.real(1).ip);
    let good = director.config_text(&[ServiceSpec::tcp(SocketAddrV4::new(vip, HTTP_PORT), "wrr")
        .real(rs1, 2)
        .real(rs2, 1)]);
    let dir = lab.log_dir().to_path_buf();
    let write = |name: &str, text: &str| -> PathBuf {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };

    // The good file passes, so each mistake below is the only problem.
    let good_path = write("good", &good);
    let run = director.check(&good_path).unwrap();
    assert!(run.status.success(), "{run:?}");
    assert_eq!(
        run.stdout,
        format!("{}: OK (1 services)\n", good_path.display())
    );

    // A gateway route for a subnet that is not on the director's segment.
    lab.run(
        &lab.director().ns,
        &[
            "ip",
            "route",
            "add",
            "192.168.77.0/24",
            "via",
            &lab.client().ip.to_string(),
        ],
    )
    .unwrap();

    let mut mistakes: Vec<Mistake> = Vec::new();
    // Adds a mistake whose message must name the line holding `marker`.
    fn mistake(
        list: &mut Vec<Mistake>,
        name: &'static str,
        text: String,
        marker: &str,
        message: String,
    ) {
        let line = line_of(&text, marker);
        list.push(Mistake {
            name,
            text,
            line,
            message,
        });
    }
    let m = &mut mistakes;
    let rs1_addr = format!("address = \"{rs1}\"");
    let rs2_addr = format!("address = \"{rs2}\"");
    mistake(
        m,
        "bad-address",
        good.replace(&rs2_addr, &format!("address = \"{rs2}x\"")),
        &format!("{rs2}x"),
        format!("service[0].real[1].address: \"{rs2}x\" is not an IP address"),
    );
    mistake(
        m,
        "weight-out-of-range",
        good.replace("weight = 2", "weight = 65536"),
        "weight = 65536",
        "service[0].real[0].weight: 65536 is out of range 0..=65535".into(),
    );
    mistake(
        m,
        "unknown-scheduler",
        good.replace("scheduler = \"wrr\"", "scheduler = \"fastest\""),
        "fastest",
        "service[0].scheduler: unknown scheduler \"fastest\"".into(),
    );
    mistake(
        m,
        "unknown-key",
        good.replace("weight = 1", "wieght = 1"),
        "wieght",
        "unknown field `wieght`".into(),
    );
    // The same service twice: the error is at the second one's vip, and
    // names the first one's line.
    let service_start = good.find("[[service]]").unwrap();
    let twice = format!("{good}\n{}", &good[service_start..]);
    let second_vip = twice.lines().filter(|l| l.starts_with("vip = ")).count();
    assert_eq!(second_vip, 2);
    let vip_line = |text: &str, nth: usize| {
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with("vip = "))
            .nth(nth)
            .unwrap()
            .0
            + 1
    };
    m.push(Mistake {
        name: "duplicate-service",
        line: vip_line(&twice, 1),
        message: format!(
            "service[1].vip: tcp {vip}:{HTTP_PORT} is already defined at line {}",
            line_of(&good, "[[service]]")
        ),
        text: twice,
    });
    // The same real server twice: the error is at the second address, and
    // names the first one's [[service.real]] line.
    let same = good.replace(&rs2_addr, &rs1_addr);
    let first_real = line_of(&good, "[[service.real]]");
    let second_address = same
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(&rs1_addr))
        .nth(1)
        .unwrap()
        .0
        + 1;
    m.push(Mistake {
        name: "duplicate-real",
        line: second_address,
        message: format!(
            "service[0].real[1].address: {rs1} is already a real server of this service (line {first_real})"
        ),
        text: same,
    });
    mistake(
        m,
        "missing-interface",
        good.replace("interface = \"eth0\"\n", ""),
        "[director]",
        "missing field `interface`".into(),
    );
    mistake(
        m,
        "no-such-interface",
        good.replace("interface = \"eth0\"", "interface = \"eth9\""),
        "eth9",
        "director.interface: no interface named \"eth9\"".into(),
    );
    mistake(
        m,
        "real-behind-gateway",
        good.replace(&rs1_addr, "address = \"192.168.77.5\""),
        "192.168.77.5",
        format!(
            "service[0].real[0].address: 192.168.77.5 is reached through the gateway {}: direct \
             routing needs the real server on eth0's segment",
            lab.client().ip
        ),
    );
    let director_ip = lab.director().ip;
    mistake(
        m,
        "real-is-the-director",
        good.replace(&rs1_addr, &format!("address = \"{director_ip}\"")),
        &format!("\"{director_ip}\""),
        format!("service[0].real[0].address: {director_ip} is an address of this director"),
    );
    mistake(
        m,
        "real-is-the-vip",
        good.replace(&rs1_addr, &format!("address = \"{vip}\"")),
        &format!("address = \"{vip}\""),
        "service[0].real[0].address: a real server cannot be the VIP itself".into(),
    );

    let mut failures = Vec::new();
    for m in &mistakes {
        let path = write(m.name, &m.text);
        let run = director.check(&path).unwrap();
        let expected = format!("{}:{}: {}", path.display(), m.line, m.message);
        if run.status.code() != Some(1) || !run.stderr.contains(&expected) || !run.stdout.is_empty()
        {
            failures.push(format!(
                "{}: exit {:?}, expected {expected:?} in\n{}{}",
                m.name,
                run.status.code(),
                run.stderr,
                run.stdout
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mistake(s) not reported as expected:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );

    // lbd itself (not --check) refuses a bad file before touching anything:
    // no XDP program, no pins, no control socket. One mistake found by
    // parsing, one found by checking the host.
    for name in ["weight-out-of-range", "real-behind-gateway"] {
        let path = dir.join(format!("{name}.toml"));
        let run = director
            .run_lbd(&["--config", &path.to_string_lossy()])
            .unwrap();
        assert_eq!(run.status.code(), Some(1), "lbd with {name}: {run:?}");
        assert!(
            run.stderr.contains(&format!("{}:", path.display())),
            "{run:?}"
        );
        let link = director.director_link().unwrap();
        assert!(
            !lb_tests::director::has_xdp(&link),
            "lbd attached with {name}:\n{link}"
        );
        assert!(
            !director.pin_path.exists(),
            "lbd created {} with {name}",
            director.pin_path.display()
        );
        assert!(
            !director.socket.exists(),
            "lbd created its socket with {name}"
        );
    }
    drop(director);
    teardown(lab);
}
