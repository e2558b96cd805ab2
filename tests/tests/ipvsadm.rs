//! lbctl in place of ipvsadm, end to end: lbd in the namespace lab,
//! changed at runtime with ipvsadm's commands.
//!
//! * An operator's director script (`ipvsadm -C; -A ... -s wlc; -a ... -g
//!   -w N`, then `-E` to change the scheduler, `-e` a weight, `-d` to remove
//!   a server) runs unchanged with an `ipvsadm` on its PATH that is lbctl;
//!   `-L -n` and `-S -n` print exactly what ipvsadm 1.31 prints for that
//!   table (written out by hand below, in the layout of
//!   `lb-ipvsadm/tests/fixtures/ipvsadm/`), and requests through the VIP
//!   follow the table. `ipvsadm -S -n | (ipvsadm -C; ipvsadm -R)` gives the
//!   same table back.
//! * Bad commands exit non-zero with ipvsadm's messages and change nothing;
//!   a `-R` batch with one bad command changes nothing (all or nothing).
//! * Runtime changes and the config file: the file is the source of truth.
//!   SIGHUP replaces the table with the file's (lbd logs that lbctl's
//!   changes are dropped); a restart starts from the file too.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs root
//! (otherwise each test prints a message and passes).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use lb_tests::Lab;
use lb_tests::director::{Director, ServiceSpec, userspace_binary};
use lb_tests::scenario::{counts, curl_vip, finish, lab_with_servers, root_or_skip, tally, teardown, vip80};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

/// A director for `lab` with `services`, started. (lbctl makes most of
/// these tests' tables; lbd's MAC lookups at start are not checked.)
fn start_director<'a>(lab: &'a Lab, services: &[ServiceSpec]) -> Director<'a> {
    let mut director = Director::new(lab).unwrap();
    director.write_config(services).unwrap();
    director.start().unwrap();
    director
}

/// `n` sequential curls to the VIP; how many each real server answered.
fn curl_tally(lab: &Lab, n: usize) -> BTreeMap<String, usize> {
    tally(&curl_vip(lab, n))
}

/// A directory holding an `ipvsadm` that is lbctl talking to `director`'s
/// socket, to put first on an operator script's PATH.
fn ipvsadm_shim(director: &Director<'_>) -> PathBuf {
    let dir = director.lab().log_dir().join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let lbctl = userspace_binary("lbctl").unwrap();
    let shim = dir.join("ipvsadm");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nexec {} --socket {} \"$@\"\n",
            lbctl.display(),
            director.socket.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Runs `script` with `sh -e` in the director's namespace, `shim` first on
/// its PATH; fails unless it succeeds without a word on stdout or stderr.
fn run_script(director: &Director<'_>, shim: &Path, name: &str, script: &str) {
    let lab = director.lab();
    let path = lab.log_dir().join(name);
    std::fs::write(&path, script).unwrap();
    let out = sh(director, shim, &path.to_string_lossy());
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "{name} failed ({}):\n{script}\nstdout:\n{}\nstderr:\n{}\nlbd's log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        director.log()
    );
}

/// `sh -e FILE` in the director's namespace with `shim` first on PATH.
fn sh(director: &Director<'_>, shim: &Path, file: &str) -> Output {
    let path = format!("PATH={}:/usr/sbin:/usr/bin:/sbin:/bin", shim.display());
    director
        .lab()
        .exec(&director.lab().director().ns, &["env", &path, "sh", "-e", file])
        .unwrap()
}

/// Polls `lbctl ARGS` until it prints `want` (connection counts settle as
/// the last requests' FINs arrive); panics with a diff-friendly message.
fn wait_for_output(director: &Director<'_>, args: &[&str], want: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = director.lbctl(args).unwrap();
        if got == want {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "lbctl {args:?} printed\n{got}\ninstead of\n{want}\n(debug: {got:?}\nvs {want:?})"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// The operators' script, step by step, and what ipvsadm 1.31 prints after
// each. The lab's subnet is 10.100.0.0/24: VIP 10.100.0.100, real servers
// .21 .22 .23. ipvsadm sorts services (protocol, address, port) and real
// servers (address, port); "-L -n" pads the real server rows
// ("  -> %-28s %-7s %-6d %-10u %-10u"), so they end in blanks. The steps
// change only the port 80 service: each listing below is written out as
// that service's lines, between the head and the other two services.

/// The head of every `-L -n` listing: all of it for an empty table.
const LIST_HEAD: &str = "\
IP Virtual Server version 1.2.1 (size=65536)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
";

/// The services SETUP makes besides port 80 in `-L -n`: no step changes
/// them or sends them traffic.
const LIST_443_53: &str = "\
TCP  10.100.0.100:443 wlc persistent 300
  -> 10.100.0.21:443              Route   1      0          0         
  -> 10.100.0.22:443              Route   1      0          0         
UDP  10.100.0.100:53 rr
  -> 10.100.0.21:53               Route   1      0          0         
  -> 10.100.0.22:53               Route   1      0          0         
";

/// The same two services in `-S -n`.
const SAVE_443_53: &str = "\
-A -t 10.100.0.100:443 -s wlc -p 300
-a -t 10.100.0.100:443 -r 10.100.0.21:443 -g -w 1
-a -t 10.100.0.100:443 -r 10.100.0.22:443 -g -w 1
-A -u 10.100.0.100:53 -s rr
-a -u 10.100.0.100:53 -r 10.100.0.21:53 -g -w 1
-a -u 10.100.0.100:53 -r 10.100.0.22:53 -g -w 1
";

/// `-L -n` with the port 80 service's lines `port80`.
fn listing(port80: &str) -> String {
    format!("{LIST_HEAD}{port80}{LIST_443_53}")
}

/// `-S -n` with the port 80 service's rules `port80`.
fn saved(port80: &str) -> String {
    format!("{port80}{SAVE_443_53}")
}

const SETUP: &str = "#!/bin/sh
# Our director's virtual servers (LVS-DR).
VIP=10.100.0.100
ipvsadm -C
ipvsadm -A -u $VIP:53 -s rr
ipvsadm -a -u $VIP:53 -r 10.100.0.22:53 -g -w 1
ipvsadm -a -u $VIP:53 -r 10.100.0.21:53 -g -w 1
ipvsadm -A -t $VIP:443 -s wlc -p 300
ipvsadm -a -t $VIP:443 -r 10.100.0.21:443 -g -w 1
ipvsadm -a -t $VIP:443 -r 10.100.0.22:443 -g -w 1
ipvsadm -A -t $VIP:80 -s wlc
ipvsadm -a -t $VIP:80 -r 10.100.0.21:80 -g -w 3
ipvsadm -a -t $VIP:80 -r 10.100.0.22 -g -w 2
ipvsadm -a -t $VIP:80 -r 10.100.0.23:80 -g -w 1
";

/// Port 80 in `-L -n` after SETUP, before any traffic.
const LIST_SETUP: &str = "\
TCP  10.100.0.100:80 wlc
  -> 10.100.0.21:80               Route   3      0          0         
  -> 10.100.0.22:80               Route   2      0          0         
  -> 10.100.0.23:80               Route   1      0          0         
";

/// Port 80 in `-L -n` after 12 requests (wlc: 6, 4, 2), all finished.
const LIST_SETUP_12: &str = "\
TCP  10.100.0.100:80 wlc
  -> 10.100.0.21:80               Route   3      0          6         
  -> 10.100.0.22:80               Route   2      0          4         
  -> 10.100.0.23:80               Route   1      0          2         
";

/// Port 80 in `-S -n` after SETUP.
const SAVE_SETUP: &str = "\
-A -t 10.100.0.100:80 -s wlc
-a -t 10.100.0.100:80 -r 10.100.0.21:80 -g -w 3
-a -t 10.100.0.100:80 -r 10.100.0.22:80 -g -w 2
-a -t 10.100.0.100:80 -r 10.100.0.23:80 -g -w 1
";

const TO_RR: &str = "#!/bin/sh
ipvsadm -E -t 10.100.0.100:80 -s rr
";

/// Port 80 in `-L -n` after TO_RR and 6 more requests (rr: 2 each).
const LIST_RR_18: &str = "\
TCP  10.100.0.100:80 rr
  -> 10.100.0.21:80               Route   3      0          8         
  -> 10.100.0.22:80               Route   2      0          6         
  -> 10.100.0.23:80               Route   1      0          4         
";

const REWEIGHT: &str = "#!/bin/sh
ipvsadm -e -t 10.100.0.100:80 -r 10.100.0.23:80 -g -w 4
ipvsadm -E -t 10.100.0.100:80 -s wrr
";

/// Port 80 in `-L -n` after REWEIGHT and 9 more requests (wrr 3:2:4, one whole round).
const LIST_WRR_27: &str = "\
TCP  10.100.0.100:80 wrr
  -> 10.100.0.21:80               Route   3      0          11        
  -> 10.100.0.22:80               Route   2      0          8         
  -> 10.100.0.23:80               Route   4      0          8         
";

const REMOVE: &str = "#!/bin/sh
ipvsadm -d -t 10.100.0.100:80 -r 10.100.0.22:80
";

/// Port 80 in `-L -n` after REMOVE and 7 more requests (wrr 3:4, one whole round).
const LIST_REMOVED_34: &str = "\
TCP  10.100.0.100:80 wrr
  -> 10.100.0.21:80               Route   3      0          14        
  -> 10.100.0.23:80               Route   4      0          12        
";

/// Port 80 in `-S -n` after REMOVE.
const SAVE_REMOVED: &str = "\
-A -t 10.100.0.100:80 -s wrr
-a -t 10.100.0.100:80 -r 10.100.0.21:80 -g -w 3
-a -t 10.100.0.100:80 -r 10.100.0.23:80 -g -w 4
";

/// Save and restore, as operators move a table (here onto itself). The
/// subshell reads the whole save before it clears the table: in a bare
/// `ipvsadm -S -n | (ipvsadm -C; ipvsadm -R)` the -C may win the race
/// against the -S, with ipvsadm as with lbctl.
const SAVE_RESTORE: &str = "#!/bin/sh
ipvsadm -S -n > saved.rules
ipvsadm -S -n | (rules=$(cat); ipvsadm -C; echo \"$rules\" | ipvsadm -R)
ipvsadm -S -n | cmp - saved.rules
";

#[test]
fn an_ipvsadm_director_script_runs_unchanged_with_lbctl() {
    if !root_or_skip("director_script") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "ipvsadm-script", 100, 3);
    assert_eq!(lab.vip().to_string(), "10.100.0.100");
    // No services in the file: the script makes the table.
    let director = start_director(&lab, &[]);
    assert_eq!(director.lbctl(&["-L", "-n"]).unwrap(), LIST_HEAD);
    let shim = ipvsadm_shim(&director);

    run_script(&director, &shim, "setup.sh", SETUP);
    assert_eq!(director.lbctl(&["-L", "-n"]).unwrap(), listing(LIST_SETUP));
    assert_eq!(director.lbctl(&["-S", "-n"]).unwrap(), saved(SAVE_SETUP));
    // wlc 3:2:1 over 12 finished connections: 6, 4, 2.
    assert_eq!(
        curl_tally(&lab, 12),
        counts(&[("rs1", 6), ("rs2", 4), ("rs3", 2)])
    );
    wait_for_output(&director, &["-L", "-n"], &listing(LIST_SETUP_12));

    run_script(&director, &shim, "to-rr.sh", TO_RR);
    assert_eq!(
        curl_tally(&lab, 6),
        counts(&[("rs1", 2), ("rs2", 2), ("rs3", 2)])
    );
    wait_for_output(&director, &["-L", "-n"], &listing(LIST_RR_18));

    run_script(&director, &shim, "reweight.sh", REWEIGHT);
    assert_eq!(
        curl_tally(&lab, 9),
        counts(&[("rs1", 3), ("rs2", 2), ("rs3", 4)])
    );
    wait_for_output(&director, &["-L", "-n"], &listing(LIST_WRR_27));

    run_script(&director, &shim, "remove.sh", REMOVE);
    // Only the remaining servers answer.
    assert_eq!(curl_tally(&lab, 7), counts(&[("rs1", 3), ("rs3", 4)]));
    wait_for_output(&director, &["-L", "-n"], &listing(LIST_REMOVED_34));
    assert_eq!(director.lbctl(&["-S", "-n"]).unwrap(), saved(SAVE_REMOVED));

    // -S | (-C; -R): the same table again, and it serves.
    let dir = lab.log_dir().to_string_lossy().into_owned();
    run_script(
        &director,
        &shim,
        "save-restore.sh",
        &SAVE_RESTORE.replace("saved.rules", &format!("{dir}/saved.rules")),
    );
    assert_eq!(director.lbctl(&["-S", "-n"]).unwrap(), saved(SAVE_REMOVED));
    assert_eq!(curl_tally(&lab, 7), counts(&[("rs1", 3), ("rs3", 4)]));
    let log = director.log();
    assert!(log.contains("lbctl: 1 command(s) applied"), "{log}");
    finish(director);
    teardown(lab);
}

/// lbctl's exit status and stderr for `args`.
fn refused(director: &Director<'_>, args: &[&str]) -> (Option<i32>, String) {
    let out = director.lbctl_output(args).unwrap();
    assert!(
        out.stdout.is_empty(),
        "lbctl {args:?} printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_commands_exit_non_zero_with_ipvsadms_messages_and_change_nothing() {
    if !root_or_skip("bad_commands") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "ipvsadm-bad", 101, 3);
    let (vip, rs1, rs3) = (lab.vip(), lab.real(0).ip, lab.real(2).ip);
    let director = start_director(&lab, &[]);
    let svc = format!("{vip}:80");
    let other = format!("{vip}:81");
    for args in [
        vec!["-A", "-t", &svc, "-s", "rr"],
        vec!["-a", "-t", &svc, "-r", "10.101.0.21", "-g", "-w", "1"],
        vec!["-a", "-t", &svc, "-r", "10.101.0.22", "-g", "-w", "1"],
    ] {
        director.lbctl(&args).unwrap();
    }
    // A route through a gateway, for a real server that is not on the segment.
    lab.run(
        &lab.director().ns,
        &["ip", "route", "add", "192.168.77.0/24", "via", &lab.client().ip.to_string()],
    )
    .unwrap();
    let saved = director.lbctl(&["-S", "-n"]).unwrap();
    let listing = director.lbctl(&["-L", "-n"]).unwrap();
    assert_eq!(saved.lines().count(), 3, "{saved}");
    let rs1_s = rs1.to_string();
    let rs3_s = rs3.to_string();
    let rs3_mapped = format!("{rs3_s}:8080");
    let director_ip = lab.director().ip.to_string();
    let gateway = lab.client().ip;

    // (arguments, exit status, what stderr says): ipvsadm's own words and
    // statuses (2 for its option checks, 255 for what the kernel refuses).
    let cases: Vec<(Vec<&str>, i32, String)> = vec![
        // Unknown service.
        (vec!["-a", "-t", &other, "-r", &rs3_s], 255, "Service not defined".into()),
        (vec!["-e", "-t", &other, "-r", &rs1_s, "-w", "2"], 255, "Service not defined".into()),
        (vec!["-d", "-t", &other, "-r", &rs1_s], 255, "Service not defined".into()),
        (vec!["-E", "-t", &other, "-s", "wlc"], 255, "No such service".into()),
        (vec!["-D", "-t", &other], 255, "No such service".into()),
        (vec!["-D", "-u", &svc], 255, "No such service".into()),
        (vec!["-Z", "-t", &other], 255, "No such service".into()),
        // Duplicates.
        (vec!["-A", "-t", &svc, "-s", "wlc"], 255, "Service already exists".into()),
        (vec!["-a", "-t", &svc, "-r", &rs1_s, "-g", "-w", "5"], 255, "Destination already exists".into()),
        // Unknown real server.
        (vec!["-e", "-t", &svc, "-r", &rs3_s, "-w", "2"], 255, "No such destination".into()),
        (vec!["-d", "-t", &svc, "-r", &rs3_s], 255, "No such destination".into()),
        // Weights out of range.
        (vec!["-a", "-t", &svc, "-r", &rs3_s, "-w", "65536"], 2, "illegal weight specified".into()),
        (vec!["-a", "-t", &svc, "-r", &rs3_s, "-w", "-1"], 2, "illegal weight specified".into()),
        (vec!["-e", "-t", &svc, "-r", &rs1_s, "-w", "100000"], 2, "illegal weight specified".into()),
        // Malformed addresses.
        (vec!["-A", "-t", "10.101.0.300:80"], 2, "illegal virtual server address[:port] specified".into()),
        (vec!["-a", "-t", &svc, "-r", "10.101.0.2x"], 2, "illegal real server address[:port] specified".into()),
        (vec!["-a", "-t", &svc, "-r", "10.101.0.23:99999"], 2, "illegal real server address[:port] specified".into()),
        // A scheduler the kernel does not have.
        (vec!["-A", "-t", &other, "-s", "fastest"], 255, "Scheduler or persistence engine not found".into()),
        (vec!["-E", "-t", &svc, "-s", "fastest"], 255, "Scheduler or persistence engine not found".into()),
        // NAT where the director does not forward: refused, saying why.
        (
            vec!["-a", "-t", &svc, "-r", &rs3_mapped, "-m"],
            1,
            format!(
                "{rs3_s}: NAT replies come back by eth0 and are routed to the clients by the kernel's FIB, which \
                 needs forwarding there: set net.ipv4.conf.eth0.forwarding = 1 (as IPVS's NAT needs \
                 net.ipv4.ip_forward)"
            ),
        ),
        // Real servers the host cannot reach by direct routing (as in a config file).
        (
            vec!["-a", "-t", &svc, "-r", "192.168.77.5", "-g"],
            1,
            format!(
                "192.168.77.5 is reached through the gateway {gateway}: direct routing needs the real \
                 server on eth0's segment (use tun or nat for real servers elsewhere)"
            ),
        ),
        (
            vec!["-a", "-t", &svc, "-r", &director_ip, "-g"],
            1,
            format!("{director_ip} is an address of this director"),
        ),
    ];
    let mut failures = Vec::new();
    for (args, status, message) in &cases {
        let (code, stderr) = refused(&director, args);
        if code != Some(*status) || stderr.trim_end() != message {
            failures.push(format!(
                "lbctl {}: exit {code:?}, stderr {stderr:?}; expected exit {status}, {message:?}",
                args.join(" ")
            ));
        }
        let now = director.lbctl(&["-S", "-n"]).unwrap();
        if now != saved {
            failures.push(format!("lbctl {} changed the table:\n{now}", args.join(" ")));
        }
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));

    // -R is all or nothing: a batch whose third command fails adds nothing
    // of the first two.
    let restore = |name: &str, rules: String| -> Output {
        let path = lab.log_dir().join(name);
        std::fs::write(&path, rules).unwrap();
        let lbctl = userspace_binary("lbctl").unwrap();
        let command = format!(
            "{} --socket {} -R < {}",
            lbctl.display(),
            director.socket.display(),
            path.display()
        );
        lab.exec(&lab.director().ns, &["sh", "-c", &command]).unwrap()
    };
    let out = restore(
        "batch.rules",
        format!("-A -t {other} -s rr\n-a -t {other} -r {rs1}:81 -g -w 1\n-a -t {svc} -r {rs1}:80 -g -w 1\n"),
    );
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end(), "Destination already exists");
    // A line ipvsadm itself refuses stops the batch before anything is sent.
    let out = restore(
        "bad.rules",
        format!("-A -t {other} -s rr\n-a -t {other} -r {rs1} -w 70000\n"),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end(), "line 2: illegal weight specified");

    // Nothing changed: the same rules, the same listing (no traffic yet),
    // and nothing applied in lbd's log after the three set-up commands.
    assert_eq!(director.lbctl(&["-S", "-n"]).unwrap(), saved);
    assert_eq!(director.lbctl(&["-L", "-n"]).unwrap(), listing);
    assert_eq!(
        director.log().matches("command(s) applied").count(),
        3,
        "{}",
        director.log()
    );
    // And the service still serves.
    assert_eq!(curl_tally(&lab, 4), counts(&[("rs1", 2), ("rs2", 2)]));
    finish(director);
    teardown(lab);
}

#[test]
fn sighup_and_restart_replace_runtime_changes_with_the_files_table() {
    if !root_or_skip("runtime_changes") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "ipvsadm-hup", 102, 2);
    let (rs1, rs2) = (lab.real(0).ip, lab.real(1).ip);
    let svc = format!("{}:80", lab.vip());
    // The file: rr over rs1 alone.
    let file = [ServiceSpec::tcp(vip80(&lab), "rr").real(rs1, 1)];
    let mut director = start_director(&lab, &file);
    let from_file = director.lbctl(&["-S", "-n"]).unwrap();
    assert_eq!(
        from_file,
        format!("-A -t {svc} -s rr\n-a -t {svc} -r {rs1}:80 -g -w 1\n")
    );
    let warning = "reload: changes made with lbctl since the last load are replaced by the file's table";

    // A SIGHUP with no runtime change: nothing to warn about.
    let log = director.reload().unwrap();
    assert!(log.contains("reload done"), "{log}");
    assert!(!log.contains(warning), "{log}");

    // lbctl adds rs2 (and changes the scheduler and rs1's weight); it serves.
    director.lbctl(&["-a", "-t", &svc, "-r", &rs2.to_string(), "-g", "-w", "1"]).unwrap();
    director.lbctl(&["-E", "-t", &svc, "-s", "wrr"]).unwrap();
    director.lbctl(&["-e", "-t", &svc, "-r", &rs1.to_string(), "-g", "-w", "2"]).unwrap();
    assert_eq!(curl_tally(&lab, 6), counts(&[("rs1", 4), ("rs2", 2)]));

    // SIGHUP: the file's table again, and the log says lbctl's changes went.
    let log = director.reload().unwrap();
    assert!(log.contains(warning), "{log}");
    assert!(
        log.contains(&format!("service TCP {svc}: real server {rs2} removed")),
        "{log}"
    );
    assert!(log.contains(&format!("service TCP {svc}: scheduler wrr -> rr")), "{log}");
    assert!(log.contains(&format!("service TCP {svc}: real server {rs1} weight 2 -> 1")), "{log}");
    assert_eq!(director.lbctl(&["-S", "-n"]).unwrap(), from_file);
    assert_eq!(curl_tally(&lab, 4), counts(&[("rs1", 4)]));
    assert_eq!(log.matches(warning).count(), 1, "{log}");

    // Timeouts set with lbctl (--set) go back to the file's too.
    director.lbctl(&["--set", "100", "20", "30"]).unwrap();
    assert_eq!(director.lbctl(&["-L", "--timeout"]).unwrap(), "Timeout (tcp tcpfin udp): 100 20 30\n");
    director.reload().unwrap();
    assert_eq!(director.lbctl(&["-L", "--timeout"]).unwrap(), "Timeout (tcp tcpfin udp): 900 120 300\n");

    // A restart starts from the file as well.
    director.lbctl(&["-a", "-t", &svc, "-r", &rs2.to_string(), "-g", "-w", "1"]).unwrap();
    assert_ne!(director.lbctl(&["-S", "-n"]).unwrap(), from_file);
    director.stop_and_check_clean().unwrap();
    director.start().unwrap();
    assert_eq!(director.lbctl(&["-S", "-n"]).unwrap(), from_file);
    assert_eq!(curl_tally(&lab, 4), counts(&[("rs1", 4)]));
    finish(director);
    teardown(lab);
}
