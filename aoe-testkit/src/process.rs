//! External peer processes that never outlive the test.
//!
//! [`Guarded`] starts a child in its own process group with its output
//! captured to scratch files. Dropping it (also while a test panics) sends
//! `SIGTERM` to the whole group, then `SIGKILL` after 2 s, and reaps the
//! child. If the drop happens during a panic, the captured output is printed
//! to stderr so the failing test shows what the peer said.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Grace period between `SIGTERM` and `SIGKILL` when a [`Guarded`] is dropped.
const DROP_GRACE: Duration = Duration::from_secs(2);
/// Grace period between `SIGTERM` and `SIGKILL` in [`Guarded::terminate`].
const TERMINATE_GRACE: Duration = Duration::from_secs(5);
/// How much of each captured stream is echoed when dropped during a panic.
const PANIC_ECHO_BYTES: usize = 4096;

/// A child process that is killed and reaped on drop.
///
/// The child runs in a new process group (its pid is the group id), so
/// signals reach helpers it started too (for example the real program behind
/// a shell wrapper). Its stdin is `/dev/null`; stdout and stderr go to scratch
/// files (under `/dev/shm` when it exists) that [`Guarded::stdout`] and
/// [`Guarded::stderr`] read at any time and that are removed on drop.
#[derive(Debug)]
pub struct Guarded {
    child: Child,
    status: Option<ExitStatus>,
    program: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Guarded {
    /// Starts `cmd` with stdin from `/dev/null`, stdout and stderr captured,
    /// in a new process group. Any stdio settings already on `cmd` are
    /// replaced.
    pub fn spawn(mut cmd: Command) -> io::Result<Guarded> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let program = std::iter::once(program)
            .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        let base = format!("aoe-testkit-{}-{}", std::process::id(), crate::next_id());
        let dir = crate::scratch_dir();
        let stdout_path = dir.join(format!("{base}.stdout"));
        let stderr_path = dir.join(format!("{base}.stderr"));
        let stdout = create_new(&stdout_path)?;
        let stderr = match create_new(&stderr_path) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&stdout_path);
                return Err(e);
            }
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::from(stdout)).stderr(Stdio::from(stderr)).process_group(0);
        match cmd.spawn() {
            Ok(child) => Ok(Guarded { child, status: None, program, stdout_path, stderr_path }),
            Err(e) => {
                let _ = std::fs::remove_file(&stdout_path);
                let _ = std::fs::remove_file(&stderr_path);
                Err(io::Error::new(e.kind(), format!("cannot start `{program}`: {e}")))
            }
        }
    }

    /// Process id of the child (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns the exit status if the child has exited, without blocking.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits up to `t` for the child to exit; `Ok(None)` if it is still
    /// running afterwards.
    pub fn wait_timeout(&mut self, t: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + t;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
        }
    }

    /// Stops the child: `SIGTERM` to its process group, up to 5 s to exit,
    /// then `SIGKILL`. Returns its exit status (immediately if it had already
    /// exited).
    pub fn terminate(&mut self) -> io::Result<ExitStatus> {
        self.stop(TERMINATE_GRACE)
    }

    /// Everything the child wrote to stdout so far (lossy UTF-8).
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    /// Everything the child wrote to stderr so far (lossy UTF-8).
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    fn stop(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        signal_group(self.child.id(), libc::SIGTERM);
        let status = match self.wait_timeout(grace)? {
            Some(status) => status,
            None => {
                signal_group(self.child.id(), libc::SIGKILL);
                let status = self.child.wait()?;
                self.status = Some(status);
                status
            }
        };
        // The leader is reaped; kill whatever it started that is still in
        // its group. A group id stays reserved while the group has members,
        // so this cannot hit a stranger (no fallback to the bare pid here).
        kill_group_only(self.child.id(), libc::SIGKILL);
        Ok(status)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let still_running = !matches!(self.try_wait(), Ok(Some(_)));
        if still_running {
            if let Err(e) = self.stop(DROP_GRACE) {
                eprintln!("aoe-testkit: could not stop `{}` (pid {}): {e}", self.program, self.child.id());
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "aoe-testkit: peer `{}` (pid {}) {}",
                self.program,
                self.child.id(),
                match self.status {
                    Some(s) => describe_status(s),
                    None => "state unknown".into(),
                }
            );
            for (name, path) in [("stdout", &self.stdout_path), ("stderr", &self.stderr_path)] {
                let text = read_lossy(path);
                if !text.is_empty() {
                    eprintln!("---- {name} of `{}` ----", self.program);
                    eprintln!("{}", tail(&text, PANIC_ECHO_BYTES));
                }
            }
        }
        for path in [&self.stdout_path, &self.stderr_path] {
            if let Err(e) = std::fs::remove_file(path) {
                if e.kind() != io::ErrorKind::NotFound {
                    eprintln!("aoe-testkit: could not remove {}: {e}", path.display());
                }
            }
        }
    }
}

/// Starts Debian's `vblade SHELF SLOT IFNAME FILE` in `ns` and waits (up to 10 s) for its
/// start-up line.
///
/// # Panics
/// If vblade cannot be started or exits before it serves.
pub fn vblade(
    ns: &crate::netns::Netns,
    shelf: u16,
    slot: u8,
    ifname: &str,
    file: &std::path::Path,
) -> Guarded {
    let mut cmd = ns.command("vblade");
    cmd.arg(shelf.to_string()).arg(slot.to_string()).arg(ifname).arg(file);
    let mut peer = Guarded::spawn(cmd).expect("starting vblade");
    // "pid N: e1.0, 131072 sectors O_RDWR"
    let started = wait_until(Duration::from_secs(10), || {
        peer.stdout().contains(" sectors ") || matches!(peer.try_wait(), Ok(Some(_)))
    });
    assert!(
        started && peer.try_wait().unwrap().is_none(),
        "vblade did not start: stdout {:?}, stderr {:?}",
        peer.stdout(),
        peer.stderr()
    );
    peer
}

/// Polls `cond` every 20 ms until it returns true or `timeout` has passed.
/// Returns whether it became true (it is always evaluated at least once, and
/// once more at the deadline).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
        if Instant::now() >= deadline {
            return cond();
        }
    }
}

/// Sends `sig` to the process group led by `pid`, falling back to the process
/// alone if the group does not exist (the child changed its own group).
///
/// Only call this while `pid` is an unreaped child of ours: then neither the
/// pid nor the group id can have been reused.
pub(crate) fn signal_group(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(-pid, sig) };
    if rc != 0 {
        // SAFETY: as above.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Sends `sig` to the process group `pgid` only (no fallback); used after the
/// leader has been reaped.
pub(crate) fn kill_group_only(pgid: u32, sig: libc::c_int) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-pgid, sig) };
    }
}

/// Human-readable exit status: "exited with code N" or "killed by signal N".
pub(crate) fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("ended with {status}"),
    }
}

/// The last `max` bytes of `text` (at a char boundary), marked if cut.
pub(crate) fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[... {start} bytes cut ...]{}", &text[start..])
}

fn create_new(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))
}

fn read_lossy(path: &PathBuf) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn captures_output_and_terminates() {
        let mut g = Guarded::spawn(sh("echo out; echo err >&2; exec sleep 30")).unwrap();
        assert!(g.pid() > 0);
        assert!(wait_until(Duration::from_secs(5), || g.stdout() == "out\n" && g.stderr() == "err\n"));
        assert_eq!(g.try_wait().unwrap(), None);
        let started = Instant::now();
        let status = g.terminate().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        // Terminating again reports the same status.
        assert_eq!(g.terminate().unwrap(), status);
        assert_eq!(g.try_wait().unwrap(), Some(status));
    }

    #[test]
    fn wait_timeout_sees_exit() {
        let mut g = Guarded::spawn(sh("exit 7")).unwrap();
        let status = g.wait_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(status.code(), Some(7));
        let mut g = Guarded::spawn(sh("exec sleep 30")).unwrap();
        assert_eq!(g.wait_timeout(Duration::from_millis(50)).unwrap(), None);
    }

    #[test]
    fn terminate_escalates_to_sigkill() {
        // The shell and its sleep both ignore SIGTERM; only SIGKILL to the
        // whole group ends them.
        let mut g = Guarded::spawn(sh("trap '' TERM; echo ready; sleep 30; echo late")).unwrap();
        assert!(wait_until(Duration::from_secs(5), || g.stdout() == "ready\n"));
        let started = Instant::now();
        let status = g.terminate().unwrap();
        let took = started.elapsed();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(took >= TERMINATE_GRACE, "{took:?}");
        assert!(took < TERMINATE_GRACE + Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn drop_kills_group_and_removes_files() {
        let g = Guarded::spawn(sh("trap '' TERM; sleep 30 & echo $!; wait")).unwrap();
        assert!(wait_until(Duration::from_secs(5), || g.stdout().ends_with('\n')));
        let grandchild: libc::pid_t = g.stdout().trim().parse().unwrap();
        let files = [g.stdout_path.clone(), g.stderr_path.clone()];
        let started = Instant::now();
        drop(g);
        let took = started.elapsed();
        assert!(took >= DROP_GRACE && took < DROP_GRACE + Duration::from_secs(2));
        for f in files {
            assert!(!f.exists(), "{} left behind", f.display());
        }
        // The grandchild was SIGKILLed with the group; once init reaps it the
        // pid no longer exists.
        assert!(wait_until(Duration::from_secs(2), || {
            // SAFETY: signal 0 only checks for existence.
            let gone = unsafe { libc::kill(grandchild, 0) } != 0;
            gone || std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
        }));
    }

    #[test]
    fn spawn_failure_is_an_error() {
        let err = Guarded::spawn(Command::new("/nonexistent/aoe-testkit-no-such-program")).unwrap_err();
        assert!(err.to_string().contains("aoe-testkit-no-such-program"), "{err}");
    }

    #[test]
    fn wait_until_true_and_false() {
        let mut n = 0;
        assert!(wait_until(Duration::from_secs(1), || {
            n += 1;
            n >= 3
        }));
        assert_eq!(n, 3);
        let started = Instant::now();
        assert!(!wait_until(Duration::from_millis(100), || false));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(100) && took < Duration::from_secs(1));
    }

    #[test]
    fn tail_cuts_at_char_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        let t = tail("ééé", 3);
        assert!(t.ends_with("é"), "{t}");
    }
}
