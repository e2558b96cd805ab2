//! The bpf(2) system call itself, for what aya does not offer: loading
//! with the verifier's statistics (`verifier`) and batched lookups in the
//! connection table (`datapath`'s walk). aya-obj's generated `bpf_attr` is
//! the kernel's union.

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd, RawFd},
};

use aya_obj::generated::{bpf_attr, bpf_cmd};

/// An attribute union with every member zero: the kernel's "no options".
pub(crate) fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is plain integers; all-zero is its "no options" value.
    unsafe { std::mem::zeroed() }
}

/// One bpf(2) call; the kernel may write results back into `attr`.
pub(crate) fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid bpf_attr of the size passed; the kernel reads
    // (and writes) only the member `cmd` selects, and checks that the bytes
    // past what it knows of the union are zero.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_int, attr as *mut bpf_attr, size_of::<bpf_attr>()) };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// For the commands that return a new file descriptor.
pub(crate) fn bpf_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: `cmd` creates an fd that nothing else owns.
    bpf(cmd, attr).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
