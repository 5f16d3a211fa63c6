//! A disk shared by many threads: one thread owns the transports and the session, and keeps
//! the requests of every caller in flight at once.
//!
//! [`SharedDevice::new`] moves a [`Device`] onto a thread of its own. Every clone of the
//! handle can [`submit`](SharedDevice::submit) sector I/O and wait for it later, or call the
//! blocking [`read_at`](SharedDevice::read_at) / [`write_at`](SharedDevice::write_at) /
//! [`flush`](SharedDevice::flush), from any thread: what callers submit concurrently goes out
//! together, up to the target's window. This is what a FUSE or NBD server built on this crate
//! needs: each of its threads (or connections) blocks on its own request while the others'
//! requests fly.
//!
//! ```no_run
//! use aoe_initiator::{Device, DeviceOptions};
//! use aoe_initiator::shared::SharedDevice;
//! use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
//!
//! let eth0 = AfPacket::open("eth0", AfPacketOptions::default())?;
//! let disk = SharedDevice::new(Device::open(vec![Box::new(eth0)], 1, 0, &DeviceOptions::default())?)?;
//! let readers: Vec<_> = (0..4u64)
//!     .map(|i| {
//!         let disk = disk.clone();
//!         std::thread::spawn(move || {
//!             let mut buf = vec![0u8; 1 << 20];
//!             disk.read_at(&mut buf, i << 20).map(|()| buf)
//!         })
//!     })
//!     .collect();
//! for r in readers {
//!     let _first_mib = r.join().unwrap()?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use aoe_proto::SECTOR_SIZE;

use crate::device::{Done, Io};
use crate::discover::TargetInfo;
use crate::driver::Wake;
use crate::session::{OpId, SessionStats};
use crate::{Device, Error};

const SECTOR: u64 = SECTOR_SIZE as u64;

/// A handle to a [`Device`] running on its own thread. Clones share the device; the thread
/// stops once the last handle is dropped and the requests in flight completed. See the
/// [module docs](self).
#[derive(Clone)]
pub struct SharedDevice {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Sender<Msg>,
    wake: Arc<Wake>,
    info: TargetInfo,
    stats: Arc<Mutex<SessionStats>>,
    /// The writes in progress: a read-modify-write of partial sectors holds its span alone,
    /// so that no other write lands between its read and its write-back.
    writes: Arc<WriteSpans>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

enum Msg {
    /// I/O, where to send its completion, and the write span to end once it is done.
    Submit(Io, Sender<Done>, Option<SpanId>),
    Stop,
}

/// A submitted request; [`wait`](Self::wait) for its [`Done`].
#[derive(Debug)]
pub struct Pending {
    done: Receiver<Done>,
}

impl Pending {
    /// Blocks until the request completes.
    pub fn wait(self) -> Done {
        self.done.recv().unwrap_or_else(|_| gone())
    }

    /// The completion if it came within `timeout`; the request stays pending otherwise.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Done> {
        match self.done.recv_timeout(timeout) {
            Ok(done) => Some(done),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => Some(gone()),
        }
    }
}

/// The completion of a request whose device thread went away (it panicked).
fn gone() -> Done {
    Done {
        id: OpId(u64::MAX),
        result: Err(Error::io("the device thread", std::io::Error::other("stopped"))),
        buf: Vec::new(),
    }
}

impl SharedDevice {
    /// Moves `device` onto a thread of its own.
    pub fn new(mut device: Device) -> std::io::Result<SharedDevice> {
        let wake = Wake::new()?;
        device.set_wake(Arc::clone(&wake));
        let info = device.info().clone();
        let stats = Arc::new(Mutex::new(device.stats()));
        let (queue, inbox) = mpsc::channel();
        let writes = Arc::new(WriteSpans::default());
        let thread = std::thread::Builder::new().name(format!("aoe-{}", info.name())).spawn({
            let (stats, writes) = (Arc::clone(&stats), Arc::clone(&writes));
            move || serve(device, inbox, &stats, &writes)
        })?;
        Ok(SharedDevice {
            inner: Arc::new(Inner { queue, wake, info, stats, writes, thread: Mutex::new(Some(thread)) }),
        })
    }

    /// What is known about the target.
    pub fn info(&self) -> &TargetInfo {
        &self.inner.info
    }

    /// Capacity in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.inner.info.size_bytes()
    }

    /// The session's counters, as of the device thread's latest turn.
    pub fn stats(&self) -> SessionStats {
        *self.inner.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `io` for the device thread and returns at once. Fails at once, without
    /// queueing, for I/O off sector boundaries or beyond the disk's end.
    ///
    /// A write waits here while a read-modify-write of partial sectors ([`write_at`](Self::write_at)
    /// off sector boundaries) is in progress on sectors it overlaps.
    pub fn submit(&self, io: Io) -> Result<Pending, Error> {
        if let Io::Read { offset, buf } | Io::Write { offset, buf } = &io {
            self.check(*offset, buf.len())?;
        }
        let span = match &io {
            Io::Write { offset, buf } => {
                Some(self.inner.writes.begin_write(*offset, *offset + buf.len() as u64))
            }
            _ => None,
        };
        self.send(io, span)
    }

    /// Hands `io` to the device thread, which ends `span` once `io` is done.
    fn send(&self, io: Io, span: Option<SpanId>) -> Result<Pending, Error> {
        let (tx, done) = mpsc::channel();
        if self.inner.queue.send(Msg::Submit(io, tx, span)).is_err() {
            if let Some(span) = span {
                self.inner.writes.end(span);
            }
            return Err(Error::io("the device thread", stopped()));
        }
        self.inner.wake.wake();
        Ok(Pending { done })
    }

    /// Fills `buf` from the disk at byte `offset`: any offset and length within the disk.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        if buf.is_empty() {
            return self.check_range(offset, 0);
        }
        self.check_range(offset, buf.len())?;
        let (start, end) = widen(offset, buf.len());
        let done = self.submit(Io::Read { offset: start, buf: vec![0; (end - start) as usize] })?.wait();
        done.result?;
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&done.buf[skip..skip + buf.len()]);
        Ok(())
    }

    /// Writes `buf` to the disk at byte `offset`: any offset and length within the disk. The
    /// partial sectors at either end are read, patched and written back while no other write
    /// touches the sectors this write spans (other writes wait for it, and it for them).
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), Error> {
        self.check_range(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let (start, end) = widen(offset, buf.len());
        if (start, end) == (offset, offset + buf.len() as u64) {
            return self.submit(Io::Write { offset, buf: buf.to_vec() })?.wait().result;
        }
        let span = self.inner.writes.begin_patch(start, end);
        let result = self.patch(buf, offset, start, end);
        self.inner.writes.end(span);
        result
    }

    /// The read-modify-write of [`write_at`](Self::write_at), its span held.
    fn patch(&self, buf: &[u8], offset: u64, start: u64, end: u64) -> Result<(), Error> {
        let mut whole = vec![0u8; (end - start) as usize];
        let head = self.submit(Io::Read { offset: start, buf: vec![0; SECTOR_SIZE] })?;
        let tail = (end - SECTOR > start)
            .then(|| self.submit(Io::Read { offset: end - SECTOR, buf: vec![0; SECTOR_SIZE] }));
        let head = head.wait();
        head.result?;
        whole[..SECTOR_SIZE].copy_from_slice(&head.buf);
        if let Some(tail) = tail {
            let tail = tail?.wait();
            tail.result?;
            let at = whole.len() - SECTOR_SIZE;
            whole[at..].copy_from_slice(&tail.buf);
        }
        let skip = (offset - start) as usize;
        whole[skip..skip + buf.len()].copy_from_slice(buf);
        // Under the patch's own span: not through `submit`, which would wait for it.
        self.send(Io::Write { offset: start, buf: whole }, None)?.wait().result
    }

    /// Makes every write completed before the call durable (FLUSH CACHE (EXT)).
    pub fn flush(&self) -> Result<(), Error> {
        self.submit(Io::Flush)?.wait().result
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), Error> {
        if offset % SECTOR != 0 || len as u64 % SECTOR != 0 {
            return Err(Error::Invalid("submitted I/O must start and end on 512-byte sector boundaries"));
        }
        self.check_range(offset, len)
    }

    fn check_range(&self, offset: u64, len: usize) -> Result<(), Error> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|end| end > self.size_bytes()) {
            let lba = offset / SECTOR;
            let last = end.unwrap_or(u64::MAX).div_ceil(SECTOR);
            return Err(Error::OutOfRange { lba, sectors: last.saturating_sub(lba) });
        }
        Ok(())
    }
}

impl std::fmt::Debug for SharedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDevice").field("target", &self.inner.info.name()).finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.queue.send(Msg::Stop);
        self.wake.wake();
        let thread = self.thread.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

fn stopped() -> std::io::Error {
    std::io::Error::other("stopped")
}

/// The sector-aligned span that holds `len` bytes at `offset`.
fn widen(offset: u64, len: usize) -> (u64, u64) {
    (offset / SECTOR * SECTOR, (offset + len as u64).div_ceil(SECTOR) * SECTOR)
}

/// The device thread: takes submissions, drives the network, hands out completions; stops
/// once told to and nothing is in flight.
fn serve(mut device: Device, inbox: Receiver<Msg>, stats: &Mutex<SessionStats>, writes: &WriteSpans) {
    let mut waiting: HashMap<OpId, (Sender<Done>, Option<SpanId>)> = HashMap::new();
    let mut stopping = false;
    loop {
        loop {
            match inbox.try_recv() {
                Ok(Msg::Submit(io, reply, span)) => match device.submit(io) {
                    Ok(id) => {
                        waiting.insert(id, (reply, span));
                    }
                    Err(e) => {
                        if let Some(span) = span {
                            writes.end(span);
                        }
                        let _ = reply.send(Done { id: OpId(u64::MAX), result: Err(e), buf: Vec::new() });
                    }
                },
                Ok(Msg::Stop) | Err(mpsc::TryRecvError::Disconnected) => stopping = true,
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        if stopping && waiting.is_empty() {
            return;
        }
        match device.poll(None) {
            Ok(Some(done)) => {
                if let Some((reply, span)) = waiting.remove(&done.id) {
                    if let Some(span) = span {
                        writes.end(span);
                    }
                    // A caller that stopped waiting dropped its receiver: nothing to tell.
                    let _ = reply.send(done);
                }
            }
            Ok(None) => {}
            // The ops in flight were failed with it and come out of the next polls; a pause
            // keeps a transport that keeps failing from spinning the thread.
            Err(e) => {
                tracing::warn!(disk = %device.info().name(), error = %e, "transport failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        *stats.lock().unwrap_or_else(PoisonError::into_inner) = device.stats();
    }
}

#[cfg(test)]
mod tests;
mod write_spans;

use write_spans::{SpanId, WriteSpans};
