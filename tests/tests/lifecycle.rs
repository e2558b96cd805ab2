//! lbd on a host under stress keeps its state: a second lbd started by
//! mistake, control-socket clients that misbehave or are not allowed, a
//! shortage of file descriptors, and pins left by another lbd (another map
//! layout, a map of the wrong shape, another connection-table size).
//!
//! lbd and lbctl belong to the lb-userspace and lbctl packages; build them
//! first:
//!
//! ```text
//! cargo build -p lb-userspace -p lbctl && cargo test -p lb-tests --test lifecycle
//! ```
//!
//! Needs root (otherwise each test prints a message and passes). Each test
//! has its own lab, config, socket and pin directory, so they run in
//! parallel.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lb_tests::ProcHandle;
use lb_tests::director::{Director, LbdRun, ServiceSpec, userspace_binary};
use lb_tests::scenario::{
    curl_vip, finish, lab_with_servers, root_or_skip, start_configured, start_director, teardown,
    wait_until,
};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

/// lbd's time for a client to send its request (lb_userspace::control).
const REQUEST_TIMEOUT: Duration = lb_userspace::control::REQUEST_TIMEOUT;

/// The id of the XDP program on the director's interface (`prog/xdp id N`).
fn xdp_prog_id(director: &Director<'_>) -> Option<u32> {
    let link = director.director_link().unwrap();
    let words: Vec<&str> = link.split_whitespace().collect();
    words
        .windows(3)
        .find(|w| w[0] == "prog/xdp" && w[1] == "id")
        .and_then(|w| w[2].parse().ok())
}

/// The directories under the director's pin path (one per map layout).
fn layout_dirs(director: &Director<'_>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&director.pin_path)
        .map(|e| e.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// The one layout directory, or a panic naming what is there.
fn layout_dir(director: &Director<'_>) -> PathBuf {
    let dirs = layout_dirs(director);
    assert_eq!(dirs.len(), 1, "one layout directory under {}: {dirs:?}", director.pin_path.display());
    dirs[0].clone()
}

/// lbd run to completion with `text` as its config (written to `name` in
/// the lab's log dir).
fn lbd_with_config(director: &Director<'_>, name: &str, text: &str) -> LbdRun {
    let path = director.lab().log_dir().join(name);
    std::fs::write(&path, text).unwrap();
    director.run_lbd(&["--config", &path.to_string_lossy()]).unwrap()
}

// ---- one lbd per host ----------------------------------------------------------------

#[test]
fn a_second_lbd_is_refused_and_the_first_keeps_forwarding() {
    if !root_or_skip("second lbd") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "life-twice", 180, 2);
    let services = [ServiceSpec::lab_http(&lab, "rr")];
    let mut director = start_director(&lab, &services);
    let pid = director.pid().unwrap();
    let prog = xdp_prog_id(&director).expect("an XDP program on the director");
    let config = director.config_text(&services);
    let socket = director.socket.display().to_string();
    let pins = director.pin_path.display().to_string();
    let first = format!("another lbd (pid {pid})");

    // The same config: the control socket's lock stops it.
    let run = director.run_lbd(&["--config", &director.config_path.to_string_lossy()]).unwrap();
    assert!(!run.status.success(), "a second lbd started:\n{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("{first} serves the control socket {socket} (it holds {socket}.lock)")),
        "{}",
        run.stderr
    );
    // Another socket, the same pins: the pin directory's lock stops it.
    let other_socket = lab.log_dir().join("other.sock");
    let run = lbd_with_config(
        &director,
        "same-pins.toml",
        &config.replace(&socket, &other_socket.to_string_lossy()),
    );
    assert!(!run.status.success(), "a second lbd started on the same pins:\n{}", run.stderr);
    assert!(run.stderr.contains(&format!("{first} uses the pins under {pins}")), "{}", run.stderr);
    assert!(!other_socket.exists(), "the refused lbd made its socket");
    // The same socket, no pins at all.
    let run = lbd_with_config(
        &director,
        "same-socket.toml",
        &config.replace(&format!("pin_path = \"{pins}\""), "pin_path = \"\""),
    );
    assert!(!run.status.success(), "a second lbd started on the same socket:\n{}", run.stderr);
    assert!(run.stderr.contains(&first), "{}", run.stderr);
    // Checking a config takes no lock.
    let check = director.check(&director.config_path).unwrap();
    assert!(check.status.success(), "lbd --check failed beside a running lbd:\n{}", check.stderr);

    // The first lbd never noticed: same program, socket, pins; forwarding.
    assert!(director.is_running(), "{}", director.log());
    assert_eq!(xdp_prog_id(&director), Some(prog), "the XDP program was replaced");
    assert_eq!(curl_vip(&lab, 4).len(), 4);
    director.lbctl(&["-L", "-n"]).unwrap();
    layout_dir(&director);

    // A crash leaves no stale lock: the next lbd starts, and adopts.
    director.kill().unwrap();
    director.start().unwrap();
    let log = director.log();
    assert!(log.contains("adopting the running datapath"), "{log}");
    assert_eq!(curl_vip(&lab, 2).len(), 2);
    finish(director);
    teardown(lab);
}

// ---- the control socket --------------------------------------------------------------

/// lbd's soft limit of open files, from /proc/PID/limits.
fn nofile_soft_limit(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().to_owned()
}

fn set_nofile_soft_limit(pid: u32, limit: &str) {
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:")])
        .output()
        .unwrap();
    assert!(out.status.success(), "prlimit: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(nofile_soft_limit(pid), limit);
}

#[test]
fn the_control_socket_outlives_running_out_of_descriptors_and_misbehaving_clients() {
    if !root_or_skip("control socket stress") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "life-fds", 181, 2);
    let director = start_director(&lab, &[ServiceSpec::lab_http(&lab, "rr")]);
    let pid = director.pid().unwrap();

    // Room for four clients more than lbd holds now, and forty idle ones:
    // accept fails with EMFILE until they go.
    let original = nofile_soft_limit(pid);
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    set_nofile_soft_limit(pid, &(open + 4).to_string());
    let idle: Vec<UnixStream> = (0..40).map(|_| UnixStream::connect(&director.socket).unwrap()).collect();
    director.wait_for_log("control socket: accept", 1, Duration::from_secs(10)).unwrap();
    assert!(director.is_running(), "{}", director.log());
    drop(idle);
    // Answered as soon as they are gone, long before an idle client's
    // timeout would have freed anything.
    let started = Instant::now();
    wait_until("lbctl answered once the idle clients closed", Duration::from_secs(3), || {
        let out = director.lbctl_output(&["-L", "-n"]).unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    });
    assert!(started.elapsed() < REQUEST_TIMEOUT, "{:?}", started.elapsed());
    set_nofile_soft_limit(pid, &original);

    // A client that never sends a whole request is dropped after the timeout.
    let mut silent = UnixStream::connect(&director.socket).unwrap();
    silent.write_all(b"{\"request\":").unwrap();
    silent.set_read_timeout(Some(REQUEST_TIMEOUT * 3)).unwrap();
    let since = Instant::now();
    let mut answer = String::new();
    silent.read_to_string(&mut answer).expect("lbd never dropped the silent client");
    let waited = since.elapsed();
    assert!(answer.contains("no request within"), "{answer:?}");
    assert!(
        waited >= REQUEST_TIMEOUT - Duration::from_millis(500) && waited < REQUEST_TIMEOUT * 2,
        "dropped after {waited:?}"
    );

    // A request without end is cut at the bound, and answered.
    let mut endless = UnixStream::connect(&director.socket).unwrap();
    endless.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let chunk = vec![b' '; 1 << 20];
    let bound = lb_userspace::control::MAX_REQUEST_BYTES as usize;
    for _ in 0..bound / chunk.len() + 2 {
        // lbd stops reading at the bound and closes: the write then fails.
        if endless.write_all(&chunk).is_err() {
            break;
        }
    }
    let mut answer = String::new();
    let _ = endless.read_to_string(&mut answer);
    assert!(answer.contains("request too long"), "{answer:?}");

    assert!(director.is_running(), "{}", director.log());
    director.lbctl(&["-L", "-n"]).unwrap();
    finish(director);
    teardown(lab);
}

/// Starts lbd under umask 000 — a socket bound in place would be 0777 until
/// lbd changed its mode — and returns it with what happened to the
/// socket's name in its directory meanwhile ("created", "moved in").
fn start_under_umask_000(director: &Director<'_>) -> (ProcHandle, Vec<&'static str>) {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let dir = director.socket.parent().unwrap();
    let name = director.socket.file_name().unwrap().to_owned();
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).unwrap();
    inotify
        .add_watch(dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
        .unwrap();
    let lab = director.lab();
    let script = format!(
        "umask 000; exec {} --config {}",
        userspace_binary("lbd").unwrap().display(),
        director.config_path.display()
    );
    let lbd = lab.spawn(&director.host().ns, "lbd-umask-000", &["sh", "-c", &script]).unwrap();
    wait_until("lbd answering under umask 000", lb_tests::scaled(Duration::from_secs(20)), || {
        assert!(lab.is_running(&lbd), "lbd exited:\n{}", lab.read_log(&lbd));
        let out = director.lbctl_output(&["-L", "-n"]).unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    });
    // The kernel queued every event; read them now.
    let mut seen = Vec::new();
    while let Ok(events) = inotify.read_events() {
        for event in events {
            if event.name.as_deref() == Some(name.as_os_str()) {
                let moved = event.mask.contains(AddWatchFlags::IN_MOVED_TO);
                seen.push(if moved { "moved in" } else { "created" });
            }
        }
    }
    (lbd, seen)
}

/// `lbctl -L -n` as uid nobody with `groups` (setpriv's options).
fn lbctl_as_nobody(director: &Director<'_>, groups: &[&str]) -> std::process::Output {
    let lbctl = userspace_binary("lbctl").unwrap().display().to_string();
    let socket = director.socket.display().to_string();
    let mut args = vec!["setpriv", "--reuid=65534"];
    args.extend_from_slice(groups);
    args.extend(["--", &lbctl, "--socket", &socket, "-L", "-n"]);
    director.lab().exec(&director.host().ns, &args).unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_socket_is_never_looser_than_its_mode_and_serves_only_root_and_its_group() {
    if !root_or_skip("control socket permissions") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "life-perm", 182, 2);
    // nobody may walk to the socket: its mode alone says who connects.
    std::fs::set_permissions(lab.log_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let services = [ServiceSpec::lab_http(&lab, "rr")];
    let mut director = Director::new(&lab).unwrap();

    // Root only.
    director.write_config(&services).unwrap();
    let (lbd, seen) = start_under_umask_000(&director);
    assert_eq!(seen, ["moved in"], "the socket must get its name with its mode, never be made in place");
    let meta = std::fs::metadata(&director.socket).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.uid()), (0o600, 0), "{meta:?}");
    director.lbctl(&["-L", "-n"]).unwrap();
    let out = lbctl_as_nobody(&director, &["--regid=65534", "--clear-groups"]);
    assert!(!out.status.success() && stderr(&out).contains("Permission denied"), "{out:?}");
    // Were the mode loosened, lbd still asks who is there.
    std::fs::set_permissions(&director.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = lbctl_as_nobody(&director, &["--regid=65534", "--clear-groups"]);
    assert!(!out.status.success(), "nobody was answered: {out:?}");
    assert!(
        stderr(&out).contains("permission denied: uid 65534") && stderr(&out).contains("only root"),
        "{out:?}"
    );
    assert!(lab.read_log(&lbd).contains("control socket: refused a client"), "{}", lab.read_log(&lbd));
    let status = lab.stop(&lbd).unwrap();
    assert!(status.success(), "{status}: {}", lab.read_log(&lbd));

    // Root and the group daemon (gid 1): a member by its primary or a
    // supplementary group is served, others are not.
    director.director_setting("control_group = \"daemon\"");
    director.write_config(&services).unwrap();
    let (lbd, seen) = start_under_umask_000(&director);
    assert_eq!(seen, ["moved in"], "the socket must get its name with its mode, never be made in place");
    let meta = std::fs::metadata(&director.socket).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.uid(), meta.gid()), (0o660, 0, 1), "{meta:?}");
    for groups in [["--regid=65534", "--groups=1"], ["--regid=1", "--clear-groups"]] {
        let out = lbctl_as_nobody(&director, &groups);
        assert!(out.status.success(), "a member ({groups:?}) was refused: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("IP Virtual Server"), "{out:?}");
    }
    let out = lbctl_as_nobody(&director, &["--regid=65534", "--clear-groups"]);
    assert!(!out.status.success() && stderr(&out).contains("Permission denied"), "{out:?}");
    std::fs::set_permissions(&director.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = lbctl_as_nobody(&director, &["--regid=65534", "--clear-groups"]);
    assert!(!out.status.success(), "a non-member was answered: {out:?}");
    assert!(stderr(&out).contains("neither root nor in the group daemon"), "{out:?}");
    let status = lab.stop(&lbd).unwrap();
    assert!(status.success(), "{status}: {}", lab.read_log(&lbd));
    assert!(!director.pin_path.exists() && !director.socket.exists(), "lbd left pins or its socket");
    drop(director);
    teardown(lab);
}

// ---- pins of another lbd -------------------------------------------------------------

#[test]
fn pins_of_another_layout_are_not_adopted_and_their_link_is_taken_over() {
    if !root_or_skip("another layout") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "life-layout", 183, 2);
    let mut director = start_director(&lab, &[ServiceSpec::lab_http(&lab, "rr")]);
    director.kill().unwrap();
    // What an older lbd, numbering its layouts by hand, would have left:
    // maps and the XDP link under pin_path/v2. Forwarding goes on.
    let ours = layout_dir(&director);
    let old = director.pin_path.join("v2");
    std::fs::rename(&ours, &old).unwrap();
    assert_eq!(curl_vip(&lab, 2).len(), 2);

    // A datapath the kernel refuses leaves them alone.
    let object = lab.log_dir().join("too-big.o");
    std::fs::write(&object, lb_userspace::TOO_BIG_OBJECT).unwrap();
    let config = director.config_path.to_string_lossy().into_owned();
    let run = director.run_lbd(&["--config", &config, "--datapath-object", &object.to_string_lossy()]).unwrap();
    assert!(!run.status.success(), "lbd started with a refused datapath:\n{}", run.stderr);
    assert!(old.join("xdp_link_eth0").exists(), "a refused lbd retired the old layout's pins");
    assert_eq!(curl_vip(&lab, 2).len(), 2);

    director.start().unwrap();
    let log = director.log();
    assert!(
        log.contains(&format!("{}: pins of another map layout", old.display())) && log.contains("not adopting them"),
        "{log}"
    );
    assert!(log.contains("the XDP link on eth0 moves to"), "{log}");
    assert_eq!(log.matches("pins of another map layout").count(), 1, "{log}");
    assert!(!log.contains("adopting the running datapath"), "{log}");
    assert_eq!(layout_dirs(&director), [ours], "the old layout's pins are still there");
    assert!(director.xdp_attached().unwrap());
    assert_eq!(curl_vip(&lab, 4).len(), 4);
    finish(director);
    teardown(lab);
}

#[test]
fn a_pinned_map_of_the_wrong_shape_is_not_adopted() {
    if !root_or_skip("wrong map") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "life-wrong-map", 184, 2);
    let mut director = start_director(&lab, &[ServiceSpec::lab_http(&lab, "rr")]);
    director.kill().unwrap();
    // REALS replaced by an array of the right name and size whose values
    // are 8 bytes: adopted, the datapath would read past them.
    let reals_pin = layout_dir(&director).join(lb_common::map_name::REALS);
    std::fs::remove_file(&reals_pin).unwrap();
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let wrong = aya_obj::Map::new_from_params(BPF_MAP_TYPE_ARRAY, 4, 8, lb_common::MAX_REALS, 0);
    let map = aya::maps::MapData::create(wrong, lb_common::map_name::REALS, None).unwrap();
    map.pin(&reals_pin).unwrap();
    drop(map);

    director.start().unwrap();
    let log = director.log();
    assert!(log.contains("not adopting the maps pinned under"), "{log}");
    assert!(log.contains("REALS has value size 8, this datapath's"), "{log}");
    assert!(!log.contains("adopting the running datapath"), "{log}");
    assert!(director.xdp_attached().unwrap());
    assert_eq!(curl_vip(&lab, 4).len(), 4);
    let size = aya::maps::MapInfo::from_pin(&reals_pin).unwrap().value_size();
    assert_eq!(size as usize, size_of::<lb_common::RealServer>(), "REALS was not made anew");
    finish(director);
    teardown(lab);
}

#[test]
fn an_adopted_connection_table_keeps_its_size_and_lbctl_shows_it() {
    if !root_or_skip("conn table size") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "life-size", 185, 2);
    let services = [ServiceSpec::lab_http(&lab, "rr")];
    let mut director = Director::new(&lab).unwrap();
    director.conn_table_size = 65536;
    let mut director = start_configured(director, &services);
    assert!(director.lbctl(&["-L", "-n"]).unwrap().contains("(size=65536)"));
    director.kill().unwrap();

    director.conn_table_size = 4096;
    director.write_config(&services).unwrap();
    director.start().unwrap();
    let log = director.log();
    assert!(
        log.contains("conn_table_size is 4096 in the config, but the adopted connection table has 65536 entries"),
        "{log}"
    );
    let listing = director.lbctl(&["-L", "-n"]).unwrap();
    assert!(listing.starts_with("IP Virtual Server version 1.2.1 (size=65536)"), "{listing}");
    assert_eq!(curl_vip(&lab, 2).len(), 2);
    finish(director);
    teardown(lab);
}
