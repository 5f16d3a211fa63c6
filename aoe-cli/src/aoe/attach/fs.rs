//! The FUSE filesystem of `aoe attach`: a root directory holding one regular file, named
//! after the disk, whose bytes are the disk's.
//!
//! Every kernel request is served on the thread of the session that read it, and blocks
//! there on the [`SharedDevice`] while the requests of the other threads fly: as many
//! requests are in flight as the session has threads (and the target's window allows).
//! Reads and writes on sector boundaries go to the device as they are; others are widened to
//! whole sectors by [`SharedDevice::read_at`] / [`SharedDevice::write_at`]. `fsync` is FLUSH
//! CACHE (EXT); `close` flushes nothing (see [`DiskFs::flush`]).

use std::ffi::OsStr;
use std::time::{Duration, SystemTime};

use aoe_initiator::device::Io;
use aoe_initiator::shared::SharedDevice;
use aoe_initiator::Error;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, WriteFlags,
};

/// The disk file's inode (the root directory is 1).
const DISK_INO: INodeNo = INodeNo(2);
/// The largest read or write request asked of the kernel (it may grant less).
pub(crate) const MAX_REQUEST: u32 = 1 << 20;
/// Attributes never change while mounted: the kernel may keep them for long.
const TTL: Duration = Duration::from_secs(3600);
const SECTOR: u64 = aoe_proto::SECTOR_SIZE as u64;

/// How the disk file is opened; see [`DiskFs::new`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct FsOptions {
    /// Refuse every open for writing (EROFS), and show the file as 0444.
    pub(crate) read_only: bool,
    /// Open the file with FOPEN_DIRECT_IO: no page cache of the file in the kernel.
    pub(crate) direct_io: bool,
    /// Requests in flight the kernel may queue in the background (readahead, async
    /// direct I/O).
    pub(crate) max_background: u16,
}

/// The filesystem: the disk, its file's name and attributes.
pub(crate) struct DiskFs {
    disk: SharedDevice,
    name: String,
    opts: FsOptions,
    attr: FileAttr,
    root: FileAttr,
}

impl DiskFs {
    /// The file `name` over `disk`, owned by `uid`:`gid`.
    pub(crate) fn new(disk: SharedDevice, name: String, opts: FsOptions, uid: u32, gid: u32) -> DiskFs {
        let now = SystemTime::now();
        let size = disk.size_bytes();
        let attr = FileAttr {
            ino: DISK_INO,
            size,
            blocks: size.div_ceil(SECTOR),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind: FileType::RegularFile,
            perm: if opts.read_only { 0o444 } else { 0o644 },
            nlink: 1,
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        let root = FileAttr {
            ino: INodeNo::ROOT,
            size: 0,
            blocks: 0,
            kind: FileType::Directory,
            perm: if opts.read_only { 0o555 } else { 0o755 },
            nlink: 2,
            ..attr
        };
        DiskFs { disk, name, opts, attr, root }
    }

    fn sync(&self) -> Result<(), Errno> {
        self.disk.flush().map_err(|e| errno("flush", &e))
    }
}

/// The errno a failed disk operation gives the caller: EIO, as a disk's would, logged once
/// here with the reason.
fn errno(what: &str, e: &Error) -> Errno {
    tracing::warn!(error = %e, "{what} failed");
    match e {
        Error::OutOfRange { .. } => Errno::ENOSPC,
        _ => Errno::EIO,
    }
}

impl Filesystem for DiskFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_REQUEST) {
            let _ = config.set_max_write(max);
        }
        // Readahead as large as the kernel allows (its default is its own maximum).
        if let Err(max) = config.set_max_readahead(MAX_REQUEST) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(self.opts.max_background);
        let _ = config.set_congestion_threshold(self.opts.max_background.saturating_mul(3) / 4);
        // Direct I/O of a loop device is asynchronous: many requests of one caller at once.
        // (Linux's flag; macFUSE numbers its own flags differently.)
        #[cfg(target_os = "linux")]
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ASYNC_DIO);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == OsStr::new(&self.name) {
            reply.entry(&TTL, &self.attr, Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino {
            INodeNo::ROOT => reply.attr(&TTL, &self.root),
            DISK_INO => reply.attr(&TTL, &self.attr),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // A disk has the size it has: as for a block device, truncating it (O_TRUNC) changes
        // nothing, and neither do modes, owners or times.
        let _ = size;
        match ino {
            DISK_INO => reply.attr(&TTL, &self.attr),
            INodeNo::ROOT => reply.attr(&TTL, &self.root),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if ino != DISK_INO {
            return reply.error(Errno::EISDIR);
        }
        if self.opts.read_only && flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        // No FLUSH request on close: see `flush`.
        let mut open = FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES | FopenFlags::FOPEN_NOFLUSH;
        if self.opts.direct_io {
            open |= FopenFlags::FOPEN_DIRECT_IO;
        }
        reply.opened(FileHandle(0), open);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let len = u64::from(size).min(self.attr.size.saturating_sub(offset));
        if len == 0 {
            return reply.data(&[]);
        }
        if offset % SECTOR == 0 && len % SECTOR == 0 {
            // The device's buffer goes to the kernel as it is: no copy.
            let done = match self.disk.submit(Io::Read { offset, buf: vec![0; len as usize] }) {
                Ok(pending) => pending.wait(),
                Err(e) => return reply.error(errno("read", &e)),
            };
            match done.result {
                Ok(_) => reply.data(&done.buf),
                Err(e) => reply.error(errno("read", &e)),
            }
        } else {
            let mut buf = vec![0; len as usize];
            match self.disk.read_at(&mut buf, offset) {
                Ok(()) => reply.data(&buf),
                Err(e) => reply.error(errno("read", &e)),
            }
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if self.opts.read_only {
            return reply.error(Errno::EROFS);
        }
        if offset.checked_add(data.len() as u64).is_none_or(|end| end > self.attr.size) {
            return reply.error(Errno::ENOSPC);
        }
        match self.disk.write_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno("write", &e)),
        }
    }

    /// Close: nothing to do. Every write was on the disk before it was answered, and what
    /// the disk's own cache holds is for fsync to flush, as on a local disk. (Flushing on
    /// each close would also make every `exec` of a process that inherited the file wait
    /// for the disk: the kernel closes the inherited descriptors then.)
    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.sync() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (DISK_INO, FileType::RegularFile, self.name.as_str()),
        ];
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = self.attr.size / 4096;
        reply.statfs(blocks, 0, 0, 2, 0, 4096, 255, 4096);
    }
}
