//! `aoe attach`, `aoe detach`, `aoe attached`: the disk as a local file (FUSE) and, with
//! `--loop`, a local block device, without the aoe kernel module.
//!
//! An attach runs in the foreground: it finds the disk, mounts a FUSE filesystem at DIR
//! holding the file `DIR/DISK`, optionally attaches a loop device to that file, records
//! itself in the runtime directory ([`registry`]) and prints its ready lines. On SIGINT,
//! SIGTERM or SIGHUP (`aoe detach` sends SIGTERM), or when the filesystem is unmounted from
//! outside, it detaches the loop device, unmounts (lazily if busy, and says so), flushes the
//! disk and exits.
//!
//! The FUSE layer ([`fs`]) builds on Linux and macOS (macFUSE); loop devices are Linux's.
//! Elsewhere the commands say they are not supported.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::format::Table;
use super::{AttachArgs, AttachedArgs, Cli, DetachArgs, DiskName, Failure};

#[cfg(any(target_os = "linux", target_os = "macos"))]
mod fs;
#[cfg(target_os = "linux")]
mod loopdev;
mod registry;

/// How long `aoe detach` waits for the attach to end, beyond twice the dead timeout (the
/// final flush may wait that long for a silent target).
const DETACH_GRACE: Duration = Duration::from_secs(15);

/// `aoe attach`.
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub(crate) fn attach(cli: &Cli, args: &AttachArgs) -> Result<(), Failure> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use aoe_initiator::shared::SharedDevice;

    let disk = args.disk;
    // Everything that can be checked locally is, before any frame is sent.
    let dir = mount_dir(&args.dir)?;
    if !Path::new("/dev/fuse").exists() {
        return Err(Failure::new(
            "no /dev/fuse: FUSE is not available here (load the fuse module, or give the container /dev/fuse)",
        ));
    }
    #[cfg(target_os = "linux")]
    if args.loop_device && !Path::new("/dev/loop-control").exists() {
        return Err(Failure::new(
            "no /dev/loop-control: loop devices are not available here (modprobe loop)",
        ));
    }
    #[cfg(not(target_os = "linux"))]
    if args.loop_device {
        return Err(Failure::usage("--loop needs Linux loop devices; on this system use the file DIR/DISK"));
    }
    if args.threads == 0 {
        return Err(Failure::usage("--threads must be at least 1"));
    }

    let device = cli.open_device(disk)?;
    let info = device.info().clone();
    let shared = SharedDevice::new(device).map_err(|e| Failure::io("cannot start the device thread", e))?;

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| Failure::io("cannot handle signals", e))?;
    }

    let name = disk.to_string();
    let opts = fs::FsOptions {
        read_only: args.read_only,
        direct_io: args.direct_io,
        max_background: u16::try_from(args.threads.saturating_mul(2)).unwrap_or(u16::MAX),
    };
    let (uid, gid) = super::sys::ids();
    let filesystem = fs::DiskFs::new(shared.clone(), name.clone(), opts, uid, gid);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("aoe:{name}")),
        fuser::MountOption::Subtype("aoe".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoExec,
        fuser::MountOption::NoAtime,
        if args.read_only { fuser::MountOption::RO } else { fuser::MountOption::RW },
    ];
    // Root owns the mount, and loop devices and other users' tools read the file too.
    config.acl = if super::sys::is_root() { fuser::SessionACL::All } else { fuser::SessionACL::Owner };
    #[cfg(target_os = "linux")]
    {
        config.n_threads = Some(args.threads);
        config.clone_fd = true;
    }
    let session = fuser::Session::new(filesystem, &dir, &config)
        .map_err(|e| Failure::new(format!("cannot mount FUSE at {}: {}", dir.display(), mount_error(&e))))?;
    let background = session.spawn().map_err(|e| Failure::io("cannot start the FUSE threads", e))?;
    let file = dir.join(&name);
    #[cfg(target_os = "linux")]
    raise_readahead(&dir);
    let mut mounted = Mounted { dir: dir.clone(), background: Some(background), record: None };

    #[cfg(target_os = "linux")]
    let loop_device = if args.loop_device {
        let dev = loopdev::LoopDevice::attach(&file, args.read_only)
            .map_err(|e| Failure::new(format!("cannot attach a loop device to {}: {e}", file.display())))?;
        if !dev.direct_io() {
            tracing::info!(device = %dev.path().display(), "the loop device does buffered I/O: direct I/O was refused");
        }
        Some(dev)
    } else {
        None
    };
    #[cfg(not(target_os = "linux"))]
    let loop_device: Option<NoLoop> = None;

    let record = registry::Record {
        disk: name.clone(),
        pid: std::process::id(),
        mount_point: dir.clone(),
        file: file.clone(),
        loop_device: loop_device.as_ref().map(|d| d.path().to_path_buf()),
        size_bytes: info.size_bytes(),
        read_only: args.read_only,
        paths: info
            .paths
            .iter()
            .map(|p| registry::PathRecord { iface: p.iface.clone(), mac: p.mac.to_string() })
            .collect(),
        state: "attached".into(),
    };
    let record_file = record.save().map_err(|e| {
        Failure::io(format!("cannot write the attach record in {}", registry::dir().display()), e)
    })?;
    mounted.record = Some(record_file.clone());

    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "attached {name} at {}", file.display());
    if let Some(dev) = &loop_device {
        let _ = writeln!(out, "{name}: {}", dev.path().display());
    }
    let _ = out.flush();
    drop(out);

    let mut unmounted_outside = false;
    while !stop.load(Ordering::SeqCst) {
        if mounted.background.as_ref().is_some_and(|b| b.guard.is_finished()) {
            unmounted_outside = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = registry::Record { state: "detaching".into(), ..record }.save();

    // Loop device first: it holds the file open, so the mount stays busy while it exists.
    if let Some(dev) = loop_device {
        let path = dev.path().to_path_buf();
        if !dev.detach() {
            eprintln!(
                "aoe: {name}: {} is still in use; the kernel detaches it when its last user closes it",
                path.display()
            );
        }
    }
    if unmounted_outside {
        eprintln!("aoe: {} was unmounted: detaching {name}", dir.display());
    }
    mounted.unmount(&name);
    drop(mounted);
    let flushed = shared.flush();
    match flushed {
        Ok(()) => Ok(()),
        Err(e) => Err(Failure::new(format!("{name}: detached, but the final flush failed: {e}"))),
    }
}

/// Sets the readahead of the mount (its backing device info) to the largest request, as the
/// FUSE handshake cannot: the kernel offers its default (128 KiB) as the maximum there.
/// Buffered sequential reads of the file then ask for 1 MiB at a time. Best effort.
#[cfg(target_os = "linux")]
fn raise_readahead(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else { return };
    let dev = meta.dev();
    let (major, minor) = ((dev >> 8) & 0xfff | ((dev >> 32) & !0xfff), (dev & 0xff) | ((dev >> 12) & !0xff));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    if let Err(e) = std::fs::write(&knob, format!("{}", fs::MAX_REQUEST / 1024)) {
        tracing::debug!(%knob, error = %e, "readahead left at the kernel's default");
    }
}

/// Stand-in for the loop device where there is none.
#[cfg(target_os = "macos")]
struct NoLoop;

#[cfg(target_os = "macos")]
impl NoLoop {
    fn path(&self) -> &Path {
        Path::new("")
    }
}

/// `aoe attach` where FUSE is not built.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub(crate) fn attach(_cli: &Cli, _args: &AttachArgs) -> Result<(), Failure> {
    Err(Failure::new(
        "aoe attach is not supported on this system: it needs FUSE (Linux, or macOS with macFUSE)",
    ))
}

/// The FUSE mount while the attach runs: on drop (also on an early failure) it is
/// unmounted and the record removed, so nothing is left behind.
#[cfg(any(target_os = "linux", target_os = "macos"))]
struct Mounted {
    dir: PathBuf,
    background: Option<fuser::BackgroundSession>,
    record: Option<PathBuf>,
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
impl Mounted {
    /// Unmounts and waits for the FUSE threads (not for long when the mount was busy).
    fn unmount(&mut self, name: &str) {
        let Some(background) = self.background.take() else { return };
        let how = if super::sys::is_mount_point(&self.dir) {
            match super::sys::unmount(&self.dir) {
                Ok(how) => Some(how),
                Err(e) => {
                    eprintln!("aoe: {name}: cannot unmount {}: {e}", self.dir.display());
                    None
                }
            }
        } else {
            Some(super::sys::Unmounted::Now)
        };
        if how == Some(super::sys::Unmounted::Lazily) {
            eprintln!(
                "aoe: {name}: {} was busy: unmounted lazily (its users get errors from now on)",
                self.dir.display()
            );
        }
        // After a plain unmount the threads end at once; after a lazy one, when the last
        // user lets go, or when this process exits.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !background.guard.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if background.guard.is_finished() {
            let _ = background.join();
        } else {
            std::mem::forget(background);
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount("attach");
        if let Some(record) = self.record.take() {
            let _ = std::fs::remove_file(record);
        }
    }
}

/// What a failed mount means, in the user's words.
#[cfg(any(target_os = "linux", target_os = "macos"))]
fn mount_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            format!("{e} (needs root, or fusermount3 and a mount point you own)")
        }
        Some(libc::ENOENT) if !super::sys::is_root() => {
            format!("{e} (is fusermount3 installed? package fuse3)")
        }
        _ => e.to_string(),
    }
}

/// DIR as an absolute path, checked: it exists, is a directory and nothing is mounted on it.
#[cfg_attr(not(any(target_os = "linux", target_os = "macos")), allow(dead_code))]
fn mount_dir(dir: &Path) -> Result<PathBuf, Failure> {
    let shown = dir.display();
    let abs = std::fs::canonicalize(dir).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => Failure::new(format!("mount point {shown} does not exist")),
        Some(libc::ENOTCONN) => Failure::new(format!(
            "mount point {shown} is a FUSE mount whose server is gone: `aoe detach {shown}` cleans it up"
        )),
        _ => Failure::io(format!("mount point {shown}"), e),
    })?;
    if !abs.is_dir() {
        return Err(Failure::new(format!("mount point {shown} is not a directory")));
    }
    if super::sys::is_mount_point(&abs) {
        return Err(Failure::new(format!("mount point {shown} is busy: something is mounted there already")));
    }
    Ok(abs)
}

/// `aoe attached`.
pub(crate) fn attached(_cli: &Cli, args: &AttachedArgs) -> Result<(), Failure> {
    let entries = registry::list();
    if args.json {
        let list: Vec<_> = entries
            .iter()
            .map(|e| {
                let mut r = e.record.clone();
                if e.stale {
                    r.state = "stale".into();
                }
                r
            })
            .collect();
        let text = serde_json::to_string_pretty(&list).map_err(|e| Failure::new(e.to_string()))?;
        println!("{text}");
    } else if entries.is_empty() {
        println!("no disk is attached");
    } else {
        let mut table =
            Table::new(&["DISK", "FILE", "LOOP", "CAPACITY", "PATHS (IFACE→MAC)", "STATE", "PID"]);
        for e in &entries {
            let r = &e.record;
            let paths: Vec<String> = r.paths.iter().map(|p| format!("{}→{}", p.iface, p.mac)).collect();
            let mut state = if e.stale { "stale (process gone)".to_owned() } else { r.state.clone() };
            if r.read_only {
                state.push_str(", read-only");
            }
            table.row(vec![
                r.disk.clone(),
                r.file.display().to_string(),
                r.loop_device.as_ref().map_or("-".into(), |d| d.display().to_string()),
                super::format::bytes(r.size_bytes),
                paths.join(" "),
                state,
                r.pid.to_string(),
            ]);
        }
        print!("{}", table.render());
    }
    for e in entries.iter().filter(|e| e.stale) {
        clean_stale(e);
    }
    Ok(())
}

/// Removes a stale record, and lazily unmounts its mount point if the dead process left
/// its FUSE mount behind.
fn clean_stale(e: &registry::Entry) {
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    if super::sys::is_mount_point(&e.record.mount_point) {
        let _ = super::sys::unmount(&e.record.mount_point);
    }
    let _ = std::fs::remove_file(&e.file);
}

/// `aoe detach`.
pub(crate) fn detach(cli: &Cli, args: &DetachArgs) -> Result<(), Failure> {
    let what = &args.target;
    let as_disk: Option<DiskName> = what.parse().ok();
    let as_dir = std::fs::canonicalize(what).ok().unwrap_or_else(|| absolute(Path::new(what)));
    let entries = registry::list();
    let matching: Vec<&registry::Entry> = entries
        .iter()
        .filter(|e| {
            e.record.mount_point == as_dir
                || e.record.file == as_dir
                || as_disk.is_some_and(|d| e.record.disk == d.to_string())
        })
        .collect();
    let entry = match matching.as_slice() {
        [] => {
            return Err(Failure::new(format!("nothing is attached at {what} (`aoe attached` lists what is)")))
        }
        [one] => *one,
        many => {
            let dirs: Vec<String> = many.iter().map(|e| e.record.mount_point.display().to_string()).collect();
            return Err(Failure::new(format!(
                "{what} is attached at {}: name the mount point to detach",
                dirs.join(" and ")
            )));
        }
    };
    let r = &entry.record;
    let at = r.mount_point.display();
    if entry.stale {
        clean_stale(entry);
        println!("{} at {at}: its attach (pid {}) had ended; its record is removed", r.disk, r.pid);
        return Ok(());
    }
    super::sys::terminate(r.pid)
        .map_err(|e| Failure::io(format!("cannot signal the attach of {} (pid {})", r.disk, r.pid), e))?;
    let limit = cli.dead_timeout * 2 + DETACH_GRACE;
    let deadline = Instant::now() + limit;
    while r.alive() {
        if Instant::now() >= deadline {
            return Err(Failure::new(format!(
                "{} at {at}: the attach (pid {}) is still running {}s after SIGTERM",
                r.disk,
                r.pid,
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if entry.file.exists() {
        let _ = std::fs::remove_file(&entry.file);
    }
    println!("detached {} from {at}", r.disk);
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
