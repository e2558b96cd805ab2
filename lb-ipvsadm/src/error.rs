//! Why a command line or a change is refused, with ipvsadm's words and
//! exit statuses.

use std::fmt;

/// Exit status of ipvsadm's `fail(2, ...)`: malformed or illegal options.
pub const EXIT_USAGE: i32 = 2;
/// Exit status for popt's errors and the try-help line (ipvsadm returns -1
/// from `main` or calls `exit(-1)`).
pub const EXIT_OPTION: i32 = 255;
/// Exit status when a change is refused by the kernel (ipvsadm's `main`
/// returns libipvs's -1). See [`KernelError`].
pub const EXIT_KERNEL: i32 = 255;
/// Exit status when listing fails (`-L -t VIP:PORT` of a missing service:
/// "No such service"); ipvsadm calls `exit(1)` there.
pub const EXIT_LIST: i32 = 1;

/// Why a command line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// ipvsadm's own parse-time refusal (its `fail(2, ...)`), status 2.
    Usage,
    /// popt's error ("--foo: unknown option", "-t: missing argument"),
    /// status 255.
    Option,
    /// The try-help line (no command first), status 255.
    TryHelp,
    /// Accepted by ipvsadm but not by this load balancer, status 2.
    Unsupported,
    /// What ipvsadm would only hear from the kernel (unknown scheduler),
    /// status 255.
    Kernel,
}

/// A refused command line: print `message` (plus a newline) on stderr and
/// exit with `exit_code`, as ipvsadm does.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub message: String,
    pub exit_code: i32,
    pub kind: ErrorKind,
}

impl ParseError {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self { message: message.into(), exit_code: EXIT_USAGE, kind: ErrorKind::Usage }
    }

    pub(crate) fn option(message: impl Into<String>) -> Self {
        Self { message: message.into(), exit_code: EXIT_OPTION, kind: ErrorKind::Option }
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Self { message: message.into(), exit_code: EXIT_USAGE, kind: ErrorKind::Unsupported }
    }

    pub(crate) fn kernel(error: KernelError) -> Self {
        Self { message: error.message().to_owned(), exit_code: error.exit_code(), kind: ErrorKind::Kernel }
    }

    pub(crate) fn try_help(program: &str) -> Self {
        Self {
            message: format!("Try `{program} -h' or '{program} --help' for more information."),
            exit_code: EXIT_OPTION,
            kind: ErrorKind::TryHelp,
        }
    }
}

/// A refused `-R` input: the first bad line (1-based) and why.
///
/// ipvsadm reads and runs the input line by line: it has applied the lines
/// before a bad one, and stops at it, unless the error is popt's
/// ([`ErrorKind::Option`]) or the kernel's ([`KernelError`]): those it
/// reports and goes on with the next line (the exit status is the last
/// line's). [`parse_restore_line`](crate::grammar::parse_restore_line) gives the lines one at a time for a caller
/// that wants to do the same.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RestoreError {
    pub line: usize,
    pub message: String,
    pub exit_code: i32,
}

/// The errors ipvsadm reports after the kernel refused a change, with
/// ipvsadm's wording (libipvs's `ipvs_strerror`), for the controller to
/// produce. ipvsadm prints the message alone on stderr and exits with
/// [`EXIT_KERNEL`] (255), except listings, which exit with [`EXIT_LIST`] (1).
/// Under `-R` a refused line is reported and the next line is read; the
/// status is that of the last line.
///
/// | command | condition | error |
/// |---|---|---|
/// | `-A` | the service exists | [`ServiceExists`](Self::ServiceExists) |
/// | `-A`, `-E` | unknown scheduler | [`SchedulerNotFound`](Self::SchedulerNotFound) |
/// | `-E`, `-D`, `-Z svc`, `-L svc` | no such service | [`NoSuchService`](Self::NoSuchService) |
/// | `-a`, `-e`, `-d` | no such service | [`ServiceNotDefined`](Self::ServiceNotDefined) |
/// | `-a` | the real server exists | [`DestinationExists`](Self::DestinationExists) |
/// | `-e`, `-d` | no such real server | [`NoSuchDestination`](Self::NoSuchDestination) |
/// | `-a`, `-e` | lower threshold above upper (also `-y N` without `-x`) | [`OutOfRange`](Self::OutOfRange) |
/// | `-a`, `-e` | real server address not unicast (`0.0.0.0`, broadcast, multicast) | [`InvalidOperation`](Self::InvalidOperation) |
/// | any | not root | [`PermissionDenied`](Self::PermissionDenied) |
/// | any | out of memory | [`MemoryAllocation`](Self::MemoryAllocation) |
/// | `--start-daemon` | already running | [`DaemonRunning`](Self::DaemonRunning) |
/// | `--stop-daemon` | not running | [`NoDaemon`](Self::NoDaemon) |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelError {
    /// EEXIST on add-service.
    ServiceExists,
    /// ENOENT on add/edit-service.
    SchedulerNotFound,
    /// ESRCH on edit/delete/zero-service or a one-service listing.
    NoSuchService,
    /// ESRCH on add/edit/delete-server.
    ServiceNotDefined,
    /// EEXIST on add-server.
    DestinationExists,
    /// ENOENT on edit/delete-server.
    NoSuchDestination,
    /// ERANGE (no entry in ipvsadm's table: `strerror`).
    OutOfRange,
    /// EINVAL.
    InvalidOperation,
    /// EPERM.
    PermissionDenied,
    /// ENOMEM.
    MemoryAllocation,
    /// EOPNOTSUPP.
    Ipv6NotSupported,
    /// EAFNOSUPPORT.
    AddressFamilyNotSupported,
    /// EEXIST on start-daemon.
    DaemonRunning,
    /// ESRCH on stop-daemon.
    NoDaemon,
}

impl KernelError {
    /// ipvsadm's words.
    pub fn message(self) -> &'static str {
        match self {
            Self::ServiceExists => "Service already exists",
            Self::SchedulerNotFound => "Scheduler or persistence engine not found",
            Self::NoSuchService => "No such service",
            Self::ServiceNotDefined => "Service not defined",
            Self::DestinationExists => "Destination already exists",
            Self::NoSuchDestination => "No such destination",
            Self::OutOfRange => "Numerical result out of range",
            Self::InvalidOperation => "Invalid operation.  Possibly wrong module version, address not unicast, ...",
            Self::PermissionDenied => "Permission denied (you must be root)",
            Self::MemoryAllocation => "Memory allocation problem",
            Self::Ipv6NotSupported => "Operation not supported with IPv6",
            Self::AddressFamilyNotSupported => "Operation not supported with specified address family",
            Self::DaemonRunning => "Daemon has already run",
            Self::NoDaemon => "No daemon is running",
        }
    }

    /// ipvsadm's status for a refused change; a listing exits with
    /// [`EXIT_LIST`] instead.
    pub fn exit_code(self) -> i32 {
        EXIT_KERNEL
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_errors_have_ipvsadms_words() {
        assert_eq!(KernelError::ServiceNotDefined.to_string(), "Service not defined");
        assert_eq!(KernelError::DestinationExists.message(), "Destination already exists");
        assert_eq!(KernelError::MemoryAllocation.message(), "Memory allocation problem");
        assert_eq!(KernelError::ServiceExists.exit_code(), 255);
    }
}
