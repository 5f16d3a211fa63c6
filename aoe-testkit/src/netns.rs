//! Private networks made of network namespaces and veth pairs.
//!
//! Everything here is created with unique names and removed by name on drop
//! (also when the test panics). Interfaces are created directly inside the
//! namespaces (`ip -n NS link add ... peer ... netns NS2`), so nothing ever
//! appears in, or touches, the caller's own network namespace.
//!
//! A namespace created here has its loopback up and IPv6 disabled (so veths
//! carry no router solicitations or multicast-listener reports: a frame seen
//! on a test link was sent by the test).
//!
//! All functions need root; gate tests on
//! [`privilege::netns_available`](crate::privilege::netns_available).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::process::{describe_status, kill_group_only, signal_group, tail};

/// Where `ip netns` keeps its namespace handles.
const NETNS_RUN_DIR: &str = "/run/netns";
/// Longest prefix accepted by [`Netns::new`].
const MAX_PREFIX: usize = 40;
/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// Runs `ip ARGS`, returning its stdout, or an error that quotes the command
/// and its stderr.
fn ip(args: &[&str]) -> io::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run `ip {}`: {e}", args.join(" "))))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            describe_status(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_RUN_DIR).join(name)
}

fn netns_exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// Names of the network namespaces `ip netns list` shows.
pub fn list() -> io::Result<Vec<String>> {
    let listed = ip(&["netns", "list"])?;
    Ok(listed.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect())
}

/// True when `name` is one a [`Netns::new`] of process `pid` gives: `{prefix}-{pid}-{n}`.
pub fn made_by(name: &str, pid: u32) -> bool {
    let tag = format!("-{pid}-");
    name.rfind(&tag).is_some_and(|at| {
        let n = &name[at + tag.len()..];
        at > 0 && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Removes the namespaces process `pid` made ([`made_by`]) and that its drops did not:
/// every process inside one is killed first (nothing else would stop them, and they keep
/// the namespace's devices alive), then the namespace is deleted. For a program cleaning up
/// after itself on a signal, when its destructors will not run. Best effort.
pub fn remove_all_made_by(pid: u32) {
    for name in list().unwrap_or_default().into_iter().filter(|n| made_by(n, pid)) {
        for inside in ip(&["netns", "pids", &name]).unwrap_or_default().split_whitespace() {
            if let Ok(inside) = inside.parse::<libc::pid_t>() {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(inside, libc::SIGKILL) };
            }
        }
        let _ = ip(&["netns", "del", &name]);
    }
}

/// Opens the network namespace handle of the calling thread.
fn current_netns() -> io::Result<File> {
    File::open("/proc/thread-self/ns/net").or_else(|_| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        File::open(format!("/proc/self/task/{tid}/ns/net"))
    })
}

/// Moves the calling thread into the network namespace `ns`.
fn set_netns(ns: &File) -> io::Result<()> {
    // SAFETY: setns only reads the fd, which `ns` keeps open for the call.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Puts the thread back into its original namespace when dropped.
struct Restore {
    original: File,
    name: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = set_netns(&self.original) {
            // Letting the thread run on in the wrong namespace would make
            // every later test on it misbehave in baffling ways.
            eprintln!("aoe-testkit: cannot switch thread back from namespace {}: {e}; aborting", self.name);
            std::process::abort();
        }
    }
}

/// A network namespace with a unique name, deleted (by name) on drop.
///
/// The name is `{prefix}-{pid}-{counter}`. Its loopback is up and IPv6 is
/// disabled. On drop, processes still left inside it (other than this one)
/// are killed with `SIGKILL` and reported on stderr, then the namespace is
/// deleted with `ip netns del`. (A process that is still on its way in, for
/// example an `ip netns exec` that opened the namespace but has not switched
/// yet, can slip past that sweep: stop peers with [`Guarded`] before the
/// namespace is dropped, i.e. declare them after it.)
///
/// [`Guarded`]: crate::process::Guarded
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `{prefix}-{pid}-{counter}` and brings its
    /// loopback up. `prefix` must be 1 to 40 characters out of ASCII
    /// letters, digits, `-` and `_`.
    pub fn new(prefix: &str) -> io::Result<Netns> {
        let valid = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad namespace prefix {prefix:?}: use 1-{MAX_PREFIX} of [A-Za-z0-9_-]"),
            ));
        }
        let pid = std::process::id();
        // A crashed earlier run with the same pid may have left a namespace
        // of the same name behind: skip such names.
        let mut attempts = 0;
        let netns = loop {
            let name = format!("{prefix}-{pid}-{}", crate::next_id());
            if netns_exists(&name) {
                attempts += 1;
                if attempts < 100 {
                    continue;
                }
            }
            ip(&["netns", "add", &name])?;
            break Netns { name };
        };
        // From here on, drop deletes the namespace if setup fails.
        ip(&["-n", &netns.name, "link", "set", "lo", "up"])?;
        netns.enter(|| {
            for conf in ["all", "default"] {
                // Best effort: the kernel may have no IPv6 at all.
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1");
            }
        });
        Ok(netns)
    }

    /// The namespace's name, as used by `ip netns` and `ip -n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A [`Command`] for `ip netns exec NAME program`, ready for arguments.
    ///
    /// `ip netns exec` execs the program in place, so the child's pid is the
    /// program's pid. It also gives the program its own mount namespace with
    /// `/sys` remounted, so `/sys/class/net` there lists this namespace's
    /// interfaces.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `program args...` inside the namespace to completion and returns
    /// its output (whatever its exit status, like [`Command::output`]).
    ///
    /// Stdin is `/dev/null`. The program runs in its own process group; if it
    /// has not finished after `timeout`, the whole group is killed and an
    /// error of kind [`io::ErrorKind::TimedOut`] is returned whose message
    /// holds the command line and the stdout and stderr collected so far.
    pub fn run(&self, program: &str, args: &[&str], timeout: Duration) -> io::Result<Output> {
        let line = std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run `{line}` in {}: {e}", self.name)))?;
        let (done_tx, done_rx) = mpsc::channel();
        let stdout = Collector::start(child.stdout.take(), done_tx.clone());
        let stderr = Collector::start(child.stderr.take(), done_tx);

        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
        };
        let Some(status) = status else {
            signal_group(child.id(), libc::SIGKILL);
            let status = child.wait()?;
            kill_group_only(child.id(), libc::SIGKILL);
            Collector::wait_both(&done_rx, Duration::from_millis(500));
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "`{line}` in namespace {} timed out after {timeout:?} (then {}).\n\
                     stdout so far:\n{}\nstderr so far:\n{}",
                    self.name,
                    describe_status(status),
                    tail(&String::from_utf8_lossy(&stdout.take()), 8192),
                    tail(&String::from_utf8_lossy(&stderr.take()), 8192),
                ),
            ));
        };
        // Helpers it left running may hold the pipes open: don't wait on them
        // for long.
        Collector::wait_both(&done_rx, Duration::from_secs(1));
        Ok(Output { status, stdout: stdout.take(), stderr: stderr.take() })
    }

    /// Runs `f` on the current thread while the thread is inside this
    /// namespace, then moves the thread back to the namespace it was in
    /// before, also when `f` panics (the panic then continues).
    ///
    /// Sockets opened inside `f` stay bound to this namespace after it
    /// returns: this is how tests open AF_PACKET sockets of the library
    /// under test on an interface of the namespace. Calls nest.
    ///
    /// What `f` sees: network-namespace-aware interfaces (sockets, netlink,
    /// `if_nametoindex`, `/proc/thread-self/net/...`, `/proc/sys/net/...`)
    /// show this namespace. `/sys/class/net` does **not**: sysfs shows the
    /// namespace of whoever mounted it (use [`Netns::command`] to get a
    /// process with its own `/sys`).
    ///
    /// # Panics
    /// If the thread cannot be moved into the namespace (it was deleted, or
    /// the process lacks `CAP_SYS_ADMIN`). If it cannot be moved back, the
    /// process is aborted.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let target = self.open().unwrap_or_else(|e| panic!("{e}"));
        let original =
            current_netns().unwrap_or_else(|e| panic!("cannot open the thread's own network namespace: {e}"));
        set_netns(&target).unwrap_or_else(|e| panic!("cannot enter network namespace {}: {e}", self.name));
        let _restore = Restore { original, name: self.name.clone() };
        f()
    }

    /// Spawns a thread that is inside this namespace for its whole life and
    /// runs `f` there. The thread is named after the namespace.
    ///
    /// The namespace handle is opened before the thread starts, so the thread
    /// enters the namespace even if this `Netns` is dropped meanwhile (and
    /// then keeps the namespace itself alive, without its name, until it
    /// ends).
    ///
    /// # Panics
    /// If the namespace cannot be opened or the thread cannot be spawned. If
    /// the thread cannot enter the namespace, the thread panics (seen by
    /// [`JoinHandle::join`]) without running `f`.
    pub fn spawn_thread<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> JoinHandle<R> {
        let target = self.open().unwrap_or_else(|e| panic!("{e}"));
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("netns:{name}"))
            .spawn(move || {
                set_netns(&target).unwrap_or_else(|e| panic!("cannot enter network namespace {name}: {e}"));
                drop(target);
                f()
            })
            .unwrap_or_else(|e| panic!("cannot spawn a thread for namespace {}: {e}", self.name))
    }

    fn open(&self) -> io::Result<File> {
        let path = netns_path(&self.name);
        File::open(&path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open network namespace {}: {e}", path.display()))
        })
    }

    /// Kills processes (other than this one) that are still inside.
    fn kill_leftovers(&self) {
        let Ok(pids) = ip(&["netns", "pids", &self.name]) else {
            return;
        };
        let me = std::process::id();
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            if pid == me {
                continue;
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            eprintln!(
                "aoe-testkit: killing pid {pid} ({}) left running in namespace {}",
                comm.trim(),
                self.name
            );
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !netns_exists(&self.name) {
            eprintln!("aoe-testkit: namespace {} was already gone", self.name);
            return;
        }
        self.kill_leftovers();
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("aoe-testkit: could not delete namespace {}: {e}", self.name);
        }
    }
}

/// Reads a child's pipe on a helper thread into a shared buffer, so that the
/// data read so far is available even if the pipe never closes.
struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl Collector {
    fn start(pipe: Option<impl Read + Send + 'static>, done: mpsc::Sender<()>) -> Collector {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&buf);
        match pipe {
            Some(mut pipe) => {
                std::thread::spawn(move || {
                    let mut chunk = [0u8; 8192];
                    loop {
                        match pipe.read(&mut chunk) {
                            Ok(0) => break,
                            Ok(n) => shared
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .extend_from_slice(&chunk[..n]),
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                    let _ = done.send(());
                });
            }
            None => {
                let _ = done.send(());
            }
        }
        Collector { buf }
    }

    /// Waits until both collectors have hit end of file, or `limit`.
    fn wait_both(done: &mpsc::Receiver<()>, limit: Duration) {
        let deadline = Instant::now() + limit;
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if done.recv_timeout(left).is_err() {
                return;
            }
        }
    }

    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// One end of a [`Veth`] pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The end in the first namespace given to [`Veth::new`].
    A,
    /// The end in the second namespace given to [`Veth::new`].
    B,
}

/// A veth pair with end A in one namespace and end B in another, both up
/// with the same MTU. Deleted on drop (deleting one end removes both; it is
/// fine if the pair or its namespaces are already gone).
///
/// Interface names are `va{pid}x{counter}` and `vb{pid}x{counter}` (pid and
/// counter in base 36), unique on the machine and at most 15 bytes.
#[derive(Debug)]
pub struct Veth {
    a_ns: String,
    b_ns: String,
    a_name: String,
    b_name: String,
    a_mac: [u8; 6],
    b_mac: [u8; 6],
}

impl Veth {
    /// Creates the pair directly inside namespaces `a` and `b` (which must
    /// differ), sets both ends' MTU to `mtu` and brings them up.
    pub fn new(a: &Netns, b: &Netns, mtu: u32) -> io::Result<Veth> {
        let tag = format!(
            "{}x{}",
            base36(u64::from(std::process::id())),
            // Six base-36 digits keep the name within IFNAMSIZ for any pid
            // up to the kernel's limit of 2^22.
            base36(crate::next_id() % 36u64.pow(6))
        );
        let a_name = format!("va{tag}");
        let b_name = format!("vb{tag}");
        debug_assert!(a_name.len() <= IFNAME_MAX && b_name.len() <= IFNAME_MAX);
        Veth::named(a, &a_name, b, &b_name, mtu)
    }

    /// As [`Veth::new`], with end A named `a_name` and end B `b_name` (1 to 15 bytes each).
    /// The names need only be free inside the two namespaces, which for namespaces made by
    /// [`Netns::new`] any names are: a program can give its interfaces names a user reads.
    pub fn named(a: &Netns, a_name: &str, b: &Netns, b_name: &str, mtu: u32) -> io::Result<Veth> {
        if a.name == b.name {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "both ends of a veth pair in the same namespace",
            ));
        }
        for name in [a_name, b_name] {
            if name.is_empty() || name.len() > IFNAME_MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad interface name {name:?}: use 1 to {IFNAME_MAX} bytes"),
                ));
            }
        }
        let mtu = mtu.to_string();
        ip(&[
            "-n", &a.name, "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", &b.name,
        ])?;
        // Drop removes the pair if the rest of the setup fails.
        let mut veth = Veth {
            a_ns: a.name.clone(),
            b_ns: b.name.clone(),
            a_name: a_name.to_owned(),
            b_name: b_name.to_owned(),
            a_mac: [0; 6],
            b_mac: [0; 6],
        };
        for (ns, ifname) in [(&veth.a_ns, &veth.a_name), (&veth.b_ns, &veth.b_name)] {
            ip(&["-n", ns, "link", "set", ifname, "mtu", &mtu, "up"])?;
        }
        veth.a_mac = read_mac(&veth.a_ns, &veth.a_name)?;
        veth.b_mac = read_mac(&veth.b_ns, &veth.b_name)?;
        Ok(veth)
    }

    /// Interface name of end A (in the first namespace).
    pub fn a_name(&self) -> &str {
        &self.a_name
    }

    /// Interface name of end B (in the second namespace).
    pub fn b_name(&self) -> &str {
        &self.b_name
    }

    /// MAC address of end A.
    pub fn a_mac(&self) -> [u8; 6] {
        self.a_mac
    }

    /// MAC address of end B.
    pub fn b_mac(&self) -> [u8; 6] {
        self.b_mac
    }

    /// Interface name of the given end.
    pub fn name(&self, side: Side) -> &str {
        match side {
            Side::A => &self.a_name,
            Side::B => &self.b_name,
        }
    }

    /// Name of the namespace that holds the given end.
    pub fn netns_name(&self, side: Side) -> &str {
        match side {
            Side::A => &self.a_ns,
            Side::B => &self.b_ns,
        }
    }

    /// Brings one end administratively up or down (`ip link set ... up|down`),
    /// for example to simulate a path going away. Taking either end down
    /// drops the carrier on both.
    pub fn set_up(&self, side: Side, up: bool) -> io::Result<()> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", self.netns_name(side), "link", "set", self.name(side), state]).map(drop)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let mut last_err = None;
        for (ns, ifname) in [(&self.a_ns, &self.a_name), (&self.b_ns, &self.b_name)] {
            if !netns_exists(ns) {
                continue;
            }
            let present = ip(&["-n", ns, "link", "show", "dev", ifname]).is_ok();
            if !present {
                continue;
            }
            match ip(&["-n", ns, "link", "del", "dev", ifname]) {
                Ok(_) => return,
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            eprintln!("aoe-testkit: could not delete veth {}/{}: {e}", self.a_name, self.b_name);
        }
    }
}

/// Two namespaces, a "target" side and an "initiator" side, joined by one
/// veth pair whose end A is in the target namespace and end B in the
/// initiator namespace.
///
/// On drop the veth pair goes first, then the namespaces.
#[derive(Debug)]
pub struct Link {
    /// The veth pair: `veth.a_*` is the target's end, `veth.b_*` the
    /// initiator's.
    pub veth: Veth,
    /// Namespace for the AoE target (server) side, named `{prefix}-t-...`.
    pub target: Netns,
    /// Namespace for the AoE initiator (client) side, named `{prefix}-i-...`.
    pub initiator: Netns,
}

impl Link {
    /// Creates namespaces `{prefix}-t-{pid}-{n}` and `{prefix}-i-{pid}-{n}`
    /// and a veth pair of the given MTU between them.
    pub fn new(prefix: &str, mtu: u32) -> io::Result<Link> {
        let target = Netns::new(&format!("{prefix}-t"))?;
        let initiator = Netns::new(&format!("{prefix}-i"))?;
        let veth = Veth::new(&target, &initiator, mtu)?;
        Ok(Link { veth, target, initiator })
    }

    /// Interface name of the target's end (`veth.a_name()`).
    pub fn target_if(&self) -> &str {
        self.veth.a_name()
    }

    /// Interface name of the initiator's end (`veth.b_name()`).
    pub fn initiator_if(&self) -> &str {
        self.veth.b_name()
    }
}

/// Reads the MAC address of `ifname` in namespace `ns` from `ip -o link show`.
fn read_mac(ns: &str, ifname: &str) -> io::Result<[u8; 6]> {
    let out = ip(&["-n", ns, "-o", "link", "show", "dev", ifname])?;
    let mut words = out.split_whitespace();
    while let Some(word) = words.next() {
        if word == "link/ether" {
            if let Some(mac) = words.next().and_then(parse_mac) {
                return Ok(mac);
            }
        }
    }
    Err(io::Error::other(format!("no MAC address for {ifname} in namespace {ns} in: {}", out.trim())))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub(crate) fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_by_matches_only_names_of_that_process() {
        assert!(made_by("aoecmp-t-123-4", 123));
        assert!(made_by("x-123-40", 123));
        assert!(!made_by("aoecmp-t-1234-4", 123));
        assert!(!made_by("aoecmp-t-123-", 123));
        assert!(!made_by("aoecmp-t-123-4a", 123));
        assert!(!made_by("-123-4", 123));
        assert!(!made_by("aoecmp-t-9-123", 123));
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(parse_mac("66:0e:2f:89:fd:84"), Some([0x66, 0x0e, 0x2f, 0x89, 0xfd, 0x84]));
        assert_eq!(parse_mac("66:0e:2f:89:fd"), None);
        assert_eq!(parse_mac("66:0e:2f:89:fd:84:00"), None);
        assert_eq!(parse_mac("66:0e:2f:89:fd:8"), None);
        assert_eq!(parse_mac("zz:0e:2f:89:fd:84"), None);
    }

    #[test]
    fn ifnames_fit() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        let worst = format!("va{}x{}", base36(1 << 22), base36(36u64.pow(6) - 1));
        assert!(worst.len() <= IFNAME_MAX, "{worst}");
    }

    #[test]
    fn bad_prefixes_are_rejected() {
        for prefix in ["", "a/b", "x y", &"p".repeat(MAX_PREFIX + 1)] {
            let err = Netns::new(prefix).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{prefix:?}");
        }
    }
}
