//! `cargo xtask vm`: runs a command as root inside one of Debian's kernels
//! under QEMU, with this host's root filesystem, so that the tests can be
//! run against the verifiers of the kernels users have (the kernel matrix).
//!
//! How a run goes:
//! 1. [`kernel::prepare`] finds the release and makes sure it is cached
//!    (downloaded with apt-get, unpacked, vmlinux extracted) — once;
//! 2. [`initramfs::write`] packs busybox, the boot scripts, the command and
//!    the modules that mount the root;
//! 3. [`qemu`] boots it (software emulation: this host's KVM cannot run a
//!    stock kernel), with the host's `/` read-only over 9p under a tmpfs
//!    overlay; the command's stdout, stderr and exit status come back on
//!    three virtio-serial ports, the kernel's console goes to a log file.

pub mod initramfs;
pub mod kernel;
mod qemu;

pub use qemu::check_tools;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

pub use kernel::Kernel;

/// Options of `cargo xtask vm`.
#[derive(clap::Args, Clone, Debug)]
pub struct VmArgs {
    /// Debian kernel to boot: a series (`6.1`, `6.12`: the newest generic
    /// amd64 build apt knows of) or a release (`6.1.0-57-amd64`).
    #[arg(long)]
    pub kernel: String,
    /// Seconds before the VM is stopped and the run fails.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT.as_secs())]
    pub timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = VmConfig::default().memory_mib)]
    pub memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = VmConfig::default().cpus)]
    pub cpus: u32,
    /// One more environment variable for the command (repeatable). PATH,
    /// HOME, TERM, RUST_BACKTRACE, RUST_LOG, LBD_LOG, CARGO_TARGET_DIR and
    /// every LB_* variable are passed on anyway.
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_assignment)]
    pub env: Vec<(String, String)>,
    /// The command to run as root in the guest, in the current directory.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// A run that ends generously: the datapath tests run several times slower
/// under emulation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The guest machine.
#[derive(Clone, Debug)]
pub struct VmConfig {
    pub timeout: Duration,
    pub memory_mib: u32,
    pub cpus: u32,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            timeout: DEFAULT_TIMEOUT,
            memory_mib: 4096,
            cpus: 2,
        }
    }
}

/// Why a run has no exit status of its command.
#[derive(Debug)]
pub enum VmError {
    /// The timeout passed; QEMU was stopped.
    TimedOut(Duration),
    /// xtask got this signal (Ctrl-C is 2); QEMU was stopped.
    Interrupted(i32),
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmError::TimedOut(after) => write!(
                f,
                "the VM ran past its timeout of {} s and was stopped (--timeout SECS)",
                after.as_secs()
            ),
            VmError::Interrupted(signal) => {
                write!(f, "interrupted by signal {signal}; the VM was stopped")
            }
        }
    }
}

impl std::error::Error for VmError {}

/// Variables the guest command gets from xtask's environment.
const PASSED_VARIABLES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TERM",
    "RUST_BACKTRACE",
    "RUST_LIB_BACKTRACE",
    "RUST_LOG",
    "RUST_MIN_STACK",
    "RUST_TEST_THREADS",
    "RUST_TEST_NOCAPTURE",
    "LBD_LOG",
    "CARGO_TARGET_DIR",
    "CI",
];
/// Every variable with this prefix is passed on too.
const PASSED_PREFIX: &str = "LB_";

/// Directories the guest mounts afresh (tmpfs, proc, ...) over the host's.
/// (/tmp too, but a command run from under it gets that directory back.)
const GUEST_OWN_DIRS: &[&str] = &["/run", "/dev", "/proc", "/sys"];
/// Where stage2.sh keeps the host's /tmp before mounting the guest's own.
const HOST_TMP: &str = "/run/lb-vm/host-tmp";

/// What runs in the guest: argv, directory and the whole environment.
#[derive(Clone, Debug)]
pub struct GuestCommand {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
}

impl GuestCommand {
    /// `argv` in the current directory, with the variables xtask passes on.
    pub fn new(argv: &[String]) -> Result<Self> {
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let mut env: Vec<(String, String)> = std::env::vars()
            .filter(|(name, _)| {
                PASSED_VARIABLES.contains(&name.as_str()) || name.starts_with(PASSED_PREFIX)
            })
            .collect();
        let mut default = |name: &str, value: &str| {
            if !env.iter().any(|(n, _)| n == name) {
                env.push((name.to_owned(), value.to_owned()));
            }
        };
        default(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        default("HOME", "/root");
        default("TERM", "dumb");
        env.sort();
        Ok(GuestCommand {
            argv: argv.to_vec(),
            cwd,
            env,
        })
    }

    /// Sets (or replaces) one variable.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// The script the guest's `/bin/sh` runs with an empty environment.
    pub fn script(&self) -> String {
        let mut script = String::from("# Written by `cargo xtask vm`.\n");
        for (name, value) in &self.env {
            script.push_str(&format!(
                "export {}\n",
                sh_quote(&format!("{name}={value}"))
            ));
        }
        let cwd = self.cwd.to_string_lossy();
        // The guest's /tmp is its own tmpfs; a directory of the host's /tmp
        // (a checkout there) is bound back from where stage 2 kept it.
        if let Ok(inside) = self.cwd.strip_prefix("/tmp") {
            let host = Path::new(HOST_TMP).join(inside);
            script.push_str(&format!(
                "mkdir -p {cwd} && mount --bind {host} {cwd} || exit 125\n",
                cwd = sh_quote(&cwd),
                host = sh_quote(&host.to_string_lossy())
            ));
        }
        script.push_str(&format!("cd {} || exit 125\n", sh_quote(&cwd)));
        let argv: Vec<String> = self.argv.iter().map(|a| sh_quote(a)).collect();
        script.push_str(&format!("exec {}\n", argv.join(" ")));
        script
    }
}

/// `it's` → `'it'\''s'`: one word for sh, whatever it holds.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

fn parse_assignment(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("{name:?} is not a variable name"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// Runs `argv` as root in the guest kernel `kernel` (see [`VmArgs::kernel`])
/// in the current directory, streaming its output to ours; returns its exit
/// status. A timeout, a signal to xtask ([`VmError`]) or a guest that never
/// ran the command is an error; QEMU never outlives the call.
pub fn run_in_kernel(kernel: &str, argv: &[String], timeout: Duration) -> Result<i32> {
    let command = GuestCommand::new(argv)?;
    let config = VmConfig {
        timeout,
        ..VmConfig::default()
    };
    run_command_in_kernel(kernel, &command, &config)
}

/// [`run_in_kernel`] with every detail of the command and machine given.
pub fn run_command_in_kernel(
    kernel: &str,
    command: &GuestCommand,
    config: &VmConfig,
) -> Result<i32> {
    qemu::check_tools()?;
    if let Some(dir) = GUEST_OWN_DIRS
        .iter()
        .find(|dir| command.cwd.starts_with(dir))
    {
        eprintln!(
            "warning: the guest mounts its own {dir}: the host's {} is not there",
            command.cwd.display()
        );
    }
    let kernel = kernel::prepare(kernel)?;
    eprintln!(
        "kernel: {} (Debian package linux-image-{}-unsigned {})",
        kernel.release, kernel.release, kernel.package_version
    );
    qemu::boot_and_run(&kernel, command, config)
}

/// `cargo xtask vm`: the command's exit status.
pub fn vm(args: &VmArgs) -> Result<i32> {
    let mut command = GuestCommand::new(&args.command)?;
    for (name, value) in &args.env {
        command.set_env(name, value);
    }
    let config = VmConfig {
        timeout: Duration::from_secs(args.timeout),
        memory_mib: args.memory,
        cpus: args.cpus,
    };
    run_command_in_kernel(&args.kernel, &command, &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_sets_env_dir_and_execs_with_quoting() {
        let command = GuestCommand {
            argv: vec!["sh".into(), "-c".into(), "echo 'hi' $X".into()],
            cwd: PathBuf::from("/work/a b"),
            env: vec![("X".into(), "it's".into())],
        };
        assert_eq!(
            command.script(),
            "# Written by `cargo xtask vm`.\n\
             export 'X=it'\\''s'\n\
             cd '/work/a b' || exit 125\n\
             exec 'sh' '-c' 'echo '\\''hi'\\'' $X'\n"
        );
    }

    #[test]
    fn a_directory_in_the_hosts_tmp_is_bound_back() {
        let command = GuestCommand {
            argv: vec!["true".into()],
            cwd: PathBuf::from("/tmp/clone"),
            env: vec![],
        };
        assert!(command.script().contains(
            "mkdir -p '/tmp/clone' && mount --bind '/run/lb-vm/host-tmp/clone' '/tmp/clone' || exit 125\n\
             cd '/tmp/clone' || exit 125\n"
        ));
    }

    #[test]
    fn env_passes_the_listed_and_lb_variables_and_sets_a_term() {
        let command = GuestCommand::new(&["true".into()]).unwrap();
        let names: Vec<&str> = command.env.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"PATH") && names.contains(&"HOME") && names.contains(&"TERM"));
        assert!(
            names
                .iter()
                .all(|n| PASSED_VARIABLES.contains(n) || n.starts_with(PASSED_PREFIX)),
            "{names:?}"
        );
    }

    #[test]
    fn assignments_need_a_name_and_an_equals_sign() {
        assert_eq!(
            parse_assignment("LB_X=a=b"),
            Ok(("LB_X".into(), "a=b".into()))
        );
        assert!(parse_assignment("novalue").is_err());
        assert!(parse_assignment("1X=y").is_err());
    }
}
