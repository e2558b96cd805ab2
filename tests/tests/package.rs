//! The Debian package: `cargo xtask deb --debug` builds it (from the debug
//! binaries, for speed), `dpkg -i` installs it, the installed units pass
//! `systemd-analyze verify`, the man pages are found, and `dpkg -P` takes
//! it all away again (also when a check fails). lbd is started through
//! systemd only where systemd is PID 1. Needs root.

use std::process::Command;

use lb_tests::scenario::root_or_skip;

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?}:\n{text}");
    text
}

/// Purges the package when the test ends, however it ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-P", "lb"]).output();
    }
}

#[test]
fn the_package_builds_installs_verifies_and_goes() {
    if !root_or_skip("package") {
        return;
    }
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let built = Command::new("cargo")
        .args(["xtask", "deb", "--debug"])
        .current_dir(workspace)
        .env("CARGO_INCREMENTAL", "0")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&built.stdout).to_string() + &String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "cargo xtask deb --debug:\n{log}");
    let deb = log.lines().rev().find(|l| l.ends_with(".deb")).expect("the package's path").trim().to_string();

    // The maintainer scripts are in, and parse (they act only under systemd).
    let info = run("dpkg-deb", &["--info", &deb]);
    for script in ["postinst", "prerm", "postrm"] {
        assert!(info.contains(script), "no {script} in the package:\n{info}");
        run("sh", &["-n", &format!("{workspace}/contrib/debian/{script}")]);
    }

    let _installed = Installed;
    run("dpkg", &["-i", &deb]);
    assert!(run("/usr/sbin/lbd", &["--version"]).contains("(commit "));
    assert!(run("/usr/sbin/lbctl", &["--version"]).contains("(commit "));
    for page in ["lbd", "lbctl", "lb.toml"] {
        run("man", &["-w", page]);
    }
    assert!(std::path::Path::new("/etc/lb/lb.toml").is_file());
    assert!(std::path::Path::new("/usr/share/bash-completion/completions/lbctl").is_file());

    if Command::new("systemd-analyze").arg("--version").output().is_ok() {
        // A template verifies as an instance.
        let dir = std::env::temp_dir().join(format!("lb-package-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let instance = dir.join("lbd-decap@eth9.service");
        std::fs::copy("/lib/systemd/system/lbd-decap@.service", &instance).unwrap();
        let verified = Command::new("systemd-analyze")
            .args(["verify", "/lib/systemd/system/lbd.service"])
            .arg(&instance)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            verified.status.success(),
            "systemd-analyze verify:\n{}{}",
            String::from_utf8_lossy(&verified.stdout),
            String::from_utf8_lossy(&verified.stderr)
        );
    } else {
        eprintln!("SKIPPED systemd-analyze verify: systemd-analyze is not installed (apt-get install systemd)");
    }

    let init = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if init.trim() == "systemd" {
        // Started with the example config (eth0 may not exist here): the
        // unit's ExecStartPre check must at least run and say why.
        let _ = Command::new("systemctl").arg("daemon-reload").status();
        let status = Command::new("systemctl").args(["start", "lbd"]).status().unwrap();
        eprintln!("systemctl start lbd with the example config: {status}");
        let _ = Command::new("systemctl").args(["stop", "lbd"]).status();
    } else {
        eprintln!("not starting lbd through systemd: PID 1 is {:?}, not systemd", init.trim());
    }
}
