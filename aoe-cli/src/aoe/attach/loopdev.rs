//! A loop device over the disk file: `LOOP_CTL_GET_FREE`, then `LOOP_CONFIGURE` with direct
//! I/O, partition scanning and auto-clear, falling back to buffered I/O where the kernel
//! refuses direct I/O on the file.
//!
//! The device stays attached while [`LoopDevice`] holds it open: with `LO_FLAGS_AUTOCLEAR`
//! the kernel detaches it once its last opener closes it, so a process that dies leaves no
//! loop device behind once its users are gone.

// The loop ioctls have no wrapper in std or libc; every block says why it is sound.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_PARTSCAN: u32 = 8;
const LO_FLAGS_DIRECT_IO: u32 = 16;

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device; detached when dropped (or by the kernel, once unused, if the
/// process dies).
#[derive(Debug)]
pub(crate) struct LoopDevice {
    path: PathBuf,
    device: File,
    direct_io: bool,
}

impl LoopDevice {
    /// Attaches a free loop device to `file`, read-only if asked, with direct I/O where the
    /// kernel takes it.
    pub(crate) fn attach(file: &Path, read_only: bool) -> io::Result<LoopDevice> {
        let backing = OpenOptions::new().read(true).write(!read_only).open(file)?;
        let control = OpenOptions::new().read(true).write(true).open("/dev/loop-control")?;
        // Another process may take the device we were offered before we configure it.
        let mut last = io::Error::other("no free loop device");
        for _ in 0..10 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
            let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let device = OpenOptions::new().read(true).write(!read_only).open(&path)?;
            let base =
                LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
            let mut result = configure(&device, &backing, base | LO_FLAGS_DIRECT_IO);
            if matches!(&result, Err(e) if e.raw_os_error() == Some(libc::EINVAL)) {
                result = configure(&device, &backing, base);
            }
            match result {
                Ok(()) => {
                    let direct_io = status(&device).is_ok_and(|s| s.lo_flags & LO_FLAGS_DIRECT_IO != 0);
                    return Ok(LoopDevice { path, device, direct_io });
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// `/dev/loopN`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the device does direct I/O on the file (no second page cache).
    pub(crate) fn direct_io(&self) -> bool {
        self.direct_io
    }

    /// Detaches the device now, or (when it is still open elsewhere, e.g. mounted) as soon
    /// as its last user closes it. Returns whether it was detached at once.
    pub(crate) fn detach(self) -> bool {
        // SAFETY: LOOP_CLR_FD takes no argument; the descriptor is the open loop device.
        let rc = unsafe { libc::ioctl(self.device.as_raw_fd(), LOOP_CLR_FD, 0) };
        drop(self.device);
        // Auto-clear was set: with other openers the kernel detaches it when they close.
        // The last close may finish the detach a moment later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while in_use(&self.path) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        rc == 0 && !in_use(&self.path)
    }
}

fn configure(device: &File, backing: &File, flags: u32) -> io::Result<()> {
    // SAFETY: LoopInfo64 is plain integers and byte arrays, for which all zeros is valid.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    info.lo_flags = flags;
    let config = LoopConfig { fd: backing.as_raw_fd() as u32, block_size: 0, info, reserved: [0; 8] };
    // SAFETY: LOOP_CONFIGURE reads one struct loop_config, which `config` is and outlives
    // the call; the kernel takes its own reference to the backing file.
    let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config as *const LoopConfig) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn status(device: &File) -> io::Result<LoopInfo64> {
    // SAFETY: as in `configure`, all zeros is a valid LoopInfo64.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 writes one struct loop_info64 into `info`, which is one.
    let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_GET_STATUS64, &mut info as *mut LoopInfo64) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}

/// Whether the loop device at `path` still has a backing file.
fn in_use(path: &Path) -> bool {
    let Some(name) = path.file_name() else { return false };
    std::fs::metadata(Path::new("/sys/block").join(name).join("loop/backing_file")).is_ok()
}
