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

/// The effective user and group ids: the owner the disk file shows.
pub(crate) fn ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// The real user id.
pub(crate) fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Whether process `pid` runs (a zombie, which has exited but was not reaped, does not).
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    // The state is the first field after the parenthesised command name.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_none_or(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => !std::path::Path::new("/proc/self").exists(),
    }
}

/// Sends SIGTERM to `pid`.
pub(crate) fn terminate(pid: u32) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill has no memory preconditions; a wrong pid gives ESRCH or EPERM.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// How [`unmount`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unmounted {
    /// Gone at once.
    Now,
    /// It was busy: detached from the tree, gone once its last user lets go.
    Lazily,
}

/// Unmounts `dir`: at once if it is not busy, else lazily (MNT_DETACH). Without the
/// privilege to unmount, `fusermount3 -u` (with `-z` when busy) does it for a FUSE mount
/// the user made.
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub(crate) fn unmount(dir: &std::path::Path) -> std::io::Result<Unmounted> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    #[cfg(target_os = "linux")]
    let (plain, lazy) = (0, libc::MNT_DETACH);
    #[cfg(target_os = "macos")]
    let (plain, lazy) = (0, libc::MNT_FORCE);
    let call = |flags| {
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        #[cfg(target_os = "linux")]
        let rc = unsafe { libc::umount2(c.as_ptr(), flags) };
        // SAFETY: as above.
        #[cfg(target_os = "macos")]
        let rc = unsafe { libc::unmount(c.as_ptr(), flags) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    match call(plain) {
        Ok(()) => Ok(Unmounted::Now),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => call(lazy).map(|()| Unmounted::Lazily),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => fusermount_unmount(dir),
        Err(e) => Err(e),
    }
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
fn fusermount_unmount(dir: &std::path::Path) -> std::io::Result<Unmounted> {
    let run = |lazy: bool| {
        let mut cmd = std::process::Command::new("fusermount3");
        cmd.arg("-u").arg("-q");
        if lazy {
            cmd.arg("-z");
        }
        cmd.arg("--").arg(dir).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        cmd.status().map(|s| s.success())
    };
    if run(false)? {
        return Ok(Unmounted::Now);
    }
    if run(true)? {
        return Ok(Unmounted::Lazily);
    }
    Err(std::io::Error::other("fusermount3 -u failed"))
}

/// Whether `dir` (absolute, canonical) is a mount point, by the kernel's mount table.
pub(crate) fn is_mount_point(dir: &std::path::Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    table.lines().filter_map(|l| l.split(' ').nth(4)).any(|m| std::path::Path::new(&unescape(m)) == dir)
}

/// A mount table field with its octal escapes (`\040` for a space) decoded.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_table_escapes() {
        assert_eq!(unescape("/mnt/with\\040space"), "/mnt/with space");
        assert_eq!(unescape("/a\\011b\\134c"), "/a\tb\\c");
        assert_eq!(unescape("/plain\\9"), "/plain\\9");
        assert!(is_mount_point(std::path::Path::new("/")));
        assert!(!process_alive(0));
        assert!(process_alive(std::process::id()));
    }
}
