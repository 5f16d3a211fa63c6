//! The system calls the tool needs that std does not wrap: who we are, the SIGPIPE
//! disposition, and whether standard output was closed.

// The one module of the tool that calls libc; every block says why it is sound.
#![allow(unsafe_code)]

/// True when the process runs as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Restores the default action of SIGPIPE, which the Rust runtime ignores: output to a pipe
/// whose reader went away (`aoe bench ... | grep -q read`) then ends the process quietly, as
/// it ends `cat` or `ls`, instead of a "failed printing to stdout" panic. Only pipes raise
/// it: raw sockets do not, and std's TCP and Unix streams send with MSG_NOSIGNAL.
pub(crate) fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler, so no code of
    // ours runs in signal context.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// True when standard output was closed when the process started (`aoe read e1.0 - >&-`).
///
/// The Rust runtime opens `/dev/null` read-write on any of the three standard descriptors it
/// finds closed, so writes would succeed and go nowhere. A shell's `> /dev/null` opens it
/// write-only, which is told apart by the access mode.
pub(crate) fn stdout_was_closed() -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    // SAFETY: F_GETFL only reads the descriptor's status flags; any descriptor number is
    // valid input (a closed one gives EBADF).
    let flags = unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_GETFL) };
    if flags < 0 {
        return true;
    }
    if flags & libc::O_ACCMODE != libc::O_RDWR {
        return false;
    }
    let (Ok(null), Ok(out)) = (std::fs::metadata("/dev/null"), std::fs::metadata("/proc/self/fd/1")) else {
        return false;
    };
    out.file_type().is_char_device() && out.rdev() == null.rdev()
}
