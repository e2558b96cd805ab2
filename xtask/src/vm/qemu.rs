//! Booting the guest and talking to it: the QEMU command line, the three
//! virtio-serial channels (stdout, stderr, status) that xtask serves on Unix
//! sockets, the timeout, and stopping QEMU on every way out (including
//! Ctrl-C and xtask's own death).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::initramfs::{self, BUSYBOX};
use super::kernel::Kernel;
use super::{GuestCommand, VmConfig, VmError};
use crate::util::{in_path, show, target_dir};

const QEMU: &str = "qemu-system-x86_64";

/// quiet: the console is a log file, shown only when a run goes wrong.
/// panic=-1 with QEMU's -no-reboot: a panicking guest ends QEMU at once.
/// mitigations=off: speed under emulation; the verifier treats root the
/// same either way (it may bypass the Spectre sanitising).
const KERNEL_CMDLINE: &str =
    "console=ttyS0 quiet panic=-1 mitigations=off random.trust_cpu=on 8250.nr_uarts=1";

/// The virtio-serial ports, by the name the guest sees (`lb.<name>`).
const CHANNELS: [&str; 3] = ["stdout", "stderr", "status"];

/// Lines of the console log shown when the guest fails.
const CONSOLE_TAIL_LINES: usize = 40;

/// Fails, naming the package, unless every program a run needs is here.
pub fn check_tools() -> Result<()> {
    let mut missing = Vec::new();
    if in_path(QEMU).is_none() {
        missing.push(format!("{QEMU} (qemu-system-x86)"));
    }
    if !Path::new(BUSYBOX).is_file() {
        missing.push(format!("{BUSYBOX} (busybox-static)"));
    }
    let depmod = ["/usr/sbin/depmod", "/sbin/depmod"];
    if in_path("depmod").is_none() && !depmod.iter().any(|p| Path::new(p).is_file()) {
        missing.push("depmod (kmod)".into());
    }
    if !missing.is_empty() {
        bail!(
            "missing for `cargo xtask vm`: {}; `cargo xtask setup` installs them",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Boots `kernel`, runs `command`, returns its exit status.
pub fn boot_and_run(kernel: &Kernel, command: &GuestCommand, config: &VmConfig) -> Result<i32> {
    let run_dir = RunDir::create()?;
    let initrd = run_dir.path.join("initramfs.cpio");
    initramfs::write(kernel, &command.script(), &initrd)?;
    let console_log = target_dir()
        .join("vm")
        .join(format!("console-{}.log", kernel.release));
    if let Some(dir) = console_log.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let sockets = CHANNELS.map(|name| run_dir.path.join(format!("{name}.sock")));
    let bind = |path: &PathBuf| {
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))
    };
    let [stdout, stderr, status] = [bind(&sockets[0])?, bind(&sockets[1])?, bind(&sockets[2])?];
    let mut qemu = qemu_command(kernel, &initrd, &console_log, &sockets, config);

    let signals = SignalGuard::install();
    eprintln!("$ {}", show(&qemu));
    let booted = Instant::now();
    let mut process = QemuProcess::spawn(&mut qemu)?;
    let forward_stdout = forward(stdout, std::io::stdout());
    let forward_stderr = forward(stderr, std::io::stderr());
    let status_reader = read_status(status);

    let ending = process.wait(booted + config.timeout, &signals)?;
    drop(signals);
    // A channel QEMU never connected (it failed early) is still waiting in
    // accept(): a connection of our own ends that wait.
    for path in &sockets {
        let _ = UnixStream::connect(path);
    }
    let _ = forward_stdout.join();
    let _ = forward_stderr.join();
    let report = status_reader.join().unwrap_or_default();
    let finished = Instant::now();

    match (ending, report.exit_status) {
        (Ending::Exited(_), Some(status)) => {
            let started = report.started.unwrap_or(finished);
            eprintln!(
                "vm: {}: exit status {status}; boot {:.1} s, command {:.1} s, total {:.1} s",
                kernel.release,
                (started - booted).as_secs_f64(),
                (finished - started).as_secs_f64(),
                (finished - booted).as_secs_f64(),
            );
            Ok(status)
        }
        (Ending::Exited(qemu_status), None) => {
            show_console_tail(&console_log);
            let what = if report.started.is_some() {
                "the guest stopped before the command finished"
            } else {
                "the guest did not boot as far as the command"
            };
            bail!(
                "{what} (QEMU {qemu_status}); console above, full log in {}",
                console_log.display()
            )
        }
        (Ending::TimedOut, _) => {
            show_console_tail(&console_log);
            Err(VmError::TimedOut(config.timeout).into())
        }
        (Ending::Interrupted(signal), _) => Err(VmError::Interrupted(signal).into()),
    }
}

fn qemu_command(
    kernel: &Kernel,
    initrd: &Path,
    console_log: &Path,
    sockets: &[PathBuf],
    config: &VmConfig,
) -> Command {
    let mut cmd = Command::new(QEMU);
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
    // KVM here is not hardware virtualisation and hangs a stock kernel.
    .args(["-accel", "tcg,thread=multi", "-cpu", "max"])
    .args(["-smp", &config.cpus.to_string()])
    .args(["-m", &format!("{}M", config.memory_mib)])
    .arg("-kernel")
    .arg(&kernel.vmlinux)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", KERNEL_CMDLINE])
    .arg("-chardev")
    .arg(format!(
        "file,id=console,path={}",
        option_value(console_log)
    ))
    .args(["-serial", "chardev:console"])
    .args([
        "-fsdev",
        "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
    ])
    .args(["-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"])
    .arg("-fsdev")
    .arg(format!(
        "local,id=modules,path={},security_model=none,readonly=on",
        option_value(&kernel.modules_dir)
    ))
    .args(["-device", "virtio-9p-pci,fsdev=modules,mount_tag=modules"])
    .args(["-device", "virtio-rng-pci"])
    .args(["-device", "virtio-serial-pci,id=ports"]);
    for (name, socket) in CHANNELS.iter().zip(sockets) {
        cmd.arg("-chardev")
            .arg(format!("socket,id={name},path={}", option_value(socket)))
            .arg("-device")
            .arg(format!(
                "virtserialport,bus=ports.0,chardev={name},name=lb.{name}"
            ));
    }
    cmd
}

/// A path inside a QEMU option list, where a comma is written twice.
fn option_value(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

fn show_console_tail(console_log: &Path) {
    let text = fs::read_to_string(console_log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        eprintln!(
            "the guest console ({}) is empty: the kernel stopped before its console \
             started (too little --memory?), or it printed nothing (it boots with `quiet`)",
            console_log.display()
        );
        return;
    }
    let tail = &lines[lines.len().saturating_sub(CONSOLE_TAIL_LINES)..];
    eprintln!(
        "--- last {} lines of the guest console ({}) ---",
        tail.len(),
        console_log.display()
    );
    for line in tail {
        eprintln!("{line}");
    }
    eprintln!("--- end of the guest console ---");
}

// ---- the run's files --------------------------------------------------------------

/// A private directory for one run's initramfs and sockets, removed after it.
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    fn create() -> Result<Self> {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        Self::remove_abandoned();
        // Short: a socket path must fit in 108 bytes.
        let path = std::env::temp_dir().join(format!(
            "lb-vm-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(RunDir { path })
    }
}

impl RunDir {
    /// Removes the run directories of xtask processes that are gone
    /// (killed with SIGKILL, which leaves no chance to clean up).
    fn remove_abandoned() {
        let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("lb-vm-")
                .and_then(|rest| rest.split('-').next())
            else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---- the channels -------------------------------------------------------------------

/// Copies what the guest writes on one port to `sink` as it comes.
fn forward(listener: UnixListener, mut sink: impl Write + Send + 'static) -> JoinHandle<()> {
    thread::spawn(move || {
        let Ok((mut port, _)) = listener.accept() else {
            return;
        };
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match port.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // A closed stdout (`| head`) must not stop the run.
                    let _ = sink.write_all(&buffer[..n]);
                    let _ = sink.flush();
                }
            }
        }
    })
}

/// What the status port said: `start`, then `exit STATUS`.
#[derive(Default)]
struct StatusReport {
    started: Option<Instant>,
    exit_status: Option<i32>,
}

fn read_status(listener: UnixListener) -> JoinHandle<StatusReport> {
    thread::spawn(move || {
        let mut report = StatusReport::default();
        let Ok((port, _)) = listener.accept() else {
            return report;
        };
        for line in BufReader::new(port).lines() {
            let Ok(line) = line else { break };
            let line = line.trim();
            if line == "start" {
                report.started = Some(Instant::now());
            } else if let Some(status) = line.strip_prefix("exit ") {
                report.exit_status = status.trim().parse().ok();
            }
        }
        report
    })
}

// ---- the QEMU process ----------------------------------------------------------------

enum Ending {
    Exited(ExitStatus),
    TimedOut,
    Interrupted(i32),
}

/// QEMU, killed when this is dropped if it still runs.
struct QemuProcess {
    child: Option<Child>,
}

impl QemuProcess {
    fn spawn(cmd: &mut Command) -> Result<Self> {
        cmd.stdin(Stdio::null());
        // Its own process group: Ctrl-C reaches xtask, which stops QEMU and
        // cleans up, instead of both racing. PDEATHSIG: if xtask dies
        // without cleaning up (SIGKILL), the kernel kills QEMU.
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {QEMU}: `cargo xtask setup` installs it"))?;
        Ok(QemuProcess { child: Some(child) })
    }

    /// Waits for QEMU to end, stopping it at `deadline` or on a signal.
    fn wait(&mut self, deadline: Instant, signals: &SignalGuard) -> Result<Ending> {
        let child = self.child.as_mut().expect("QEMU was started");
        loop {
            if let Some(status) = child.try_wait().context("waiting for QEMU")? {
                self.child = None;
                return Ok(Ending::Exited(status));
            }
            if let Some(signal) = signals.caught() {
                self.stop();
                return Ok(Ending::Interrupted(signal));
            }
            if Instant::now() >= deadline {
                self.stop();
                return Ok(Ending::TimedOut);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- signals ---------------------------------------------------------------------------

/// The last of SIGINT, SIGTERM, SIGHUP caught during a run (0: none).
static CAUGHT_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_signal(signal: libc::c_int) {
    CAUGHT_SIGNAL.store(signal, Ordering::SeqCst);
}

/// Catches the signals that would end xtask while QEMU runs, so that QEMU
/// is stopped first; the previous handlers come back on drop.
struct SignalGuard {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl SignalGuard {
    const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

    fn install() -> Self {
        CAUGHT_SIGNAL.store(0, Ordering::SeqCst);
        let mut previous = Vec::new();
        for signal in Self::SIGNALS {
            // SAFETY: a zeroed sigaction is valid; the handler only stores an atomic.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = note_signal as *const () as libc::sighandler_t;
                libc::sigemptyset(&mut action.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, &action, &mut old) == 0 {
                    previous.push((signal, old));
                }
            }
        }
        SignalGuard { previous }
    }

    fn caught(&self) -> Option<i32> {
        match CAUGHT_SIGNAL.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (signal, old) in &self.previous {
            // SAFETY: restores the action saved by install().
            unsafe {
                libc::sigaction(*signal, old, std::ptr::null_mut());
            }
        }
    }
}
