//! `aoe read` and `aoe write`: copy between a disk and a file, stdin or stdout.
//!
//! The network and the local file are used at once: a thread of its own reads or writes the
//! local side while the disk moves the next chunks, and a few chunk buffers, allocated once,
//! go round between the two (a bounded queue each way). A disk at wire speed is then not
//! held up by a file that takes its time, nor a file by the disk. On the disk's side several
//! chunks are in flight at once ([`Device::submit`], [`IN_FLIGHT`]), so that the window of frames does not
//! drain at the end of each chunk.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use aoe_initiator::{Device, Done, Io, OpId};

use super::format;
use super::progress::Progress;
use super::{Cli, DiskName, Failure, ReadArgs, WriteArgs};

/// Bytes per chunk: small enough that the chunks in use stay in the CPU's caches between
/// the network copying into them and the file copying out (512 MiB to and from tmpfs ran
/// 1.1–1.3 times as fast with 512 KiB chunks as with 4 MiB ones), large enough to be about 60
/// frames at MTU 9000.
const CHUNK: usize = 512 << 10;
/// Chunks in the queue between the disk and the local file, besides the one each side
/// holds: what the slower side may fall behind by before the faster one waits.
const QUEUED: usize = 6;
/// Chunks the disk's side has submitted at once: more frames than a target's window.
const IN_FLIGHT: usize = 4;
/// Bytes of a sector: chunks in flight start and end on sector boundaries.
const SECTOR: u64 = aoe_proto::SECTOR_SIZE as u64;

/// A chunk buffer and how many of its bytes are data.
type Chunk = (Vec<u8>, usize);

/// The two queues a side of the copy sees: chunks coming in, and where emptied buffers go.
struct Queues {
    /// Filled chunks for the other side.
    filled: SyncSender<Chunk>,
    /// Buffers the other side has emptied.
    empty: Receiver<Vec<u8>>,
}

/// Buffers for a copy of `length` bytes: one for each chunk queued, in flight or held by the
/// local side, at most CHUNK bytes each, allocated here once and nowhere else.
fn buffers(length: u64, give: &Sender<Vec<u8>>) {
    let size = CHUNK.min(length as usize).max(1);
    for _ in 0..QUEUED + IN_FLIGHT + 1 {
        // The receiver outlives this call.
        let _ = give.send(vec![0u8; size]);
    }
}

pub(crate) fn read(cli: &Cli, args: &ReadArgs) -> Result<(), Failure> {
    let disk = args.disk;
    if is_dash(&args.file) && io::stdout().is_terminal() {
        return Err(Failure::usage(
            "not writing disk contents to a terminal: redirect stdout or name a FILE (see aoe read --help)",
        ));
    }
    if is_dash(&args.file) && super::sys::stdout_was_closed() {
        return Err(Failure::new(format!("stdout is closed: nowhere to write {disk}'s data")));
    }
    let mut dev = cli.open_device(disk)?;
    let (offset, length) = range(disk, dev.size_bytes(), args.offset, args.length)?;
    let name = display_name(&args.file, "stdout");
    let out: Box<dyn Write + Send> = if is_dash(&args.file) {
        Box::new(io::stdout())
    } else {
        let file = File::create(&args.file).map_err(|e| Failure::io(format!("cannot create {name}"), e))?;
        Box::new(file)
    };
    let mut progress = Progress::new("read", format!("from {disk}"), Some(length));
    let (filled, to_write) = mpsc::sync_channel::<Chunk>(QUEUED);
    let (give_back, empty) = mpsc::channel();
    buffers(length, &give_back);
    let queues = Queues { filled, empty };
    let result = thread::scope(|scope| {
        let writer = thread::Builder::new()
            .name("aoe-write-local".into())
            .spawn_scoped(scope, move || write_chunks(out, to_write, give_back))
            .map_err(|e| Failure::io("starting the thread that writes the file", e))?;
        let fetched = fetch_chunks(&mut dev, offset, length, queues, &mut progress);
        // The writer ends once the queue to it is closed (by `fetch_chunks` returning).
        let written = writer.join().unwrap_or_else(|_| Err(io::Error::other("the writing thread panicked")));
        match (fetched, written) {
            (Err(e), _) => Err(Failure::disk(disk, e)),
            (Ok(_), Err(e)) => Err(Failure::io(format!("writing {name}"), e)),
            (Ok(done), Ok(())) => Ok(done),
        }
    });
    match result {
        Ok(done) => {
            progress.finish(done);
            Ok(())
        }
        Err(f) => {
            progress.abandon();
            Err(f)
        }
    }
}

/// The disk's side of `aoe read`: reads `length` bytes from `offset` in chunks into the
/// buffers that come back empty and queues them for the writer, in order, with up to
/// [`IN_FLIGHT`] chunks submitted at once. Stops early when the writer has gone (its error is
/// the one to report). Returns the bytes read.
fn fetch_chunks(
    dev: &mut Device,
    offset: u64,
    length: u64,
    queues: Queues,
    progress: &mut Progress,
) -> Result<u64, aoe_initiator::Error> {
    let mut submitted = 0u64;
    let mut done = 0u64;
    let mut chunks = Chunks::default();
    // Whole sectors in flight; an unaligned start or an odd tail goes through `read_at`.
    let aligned = offset % SECTOR == 0;
    while done < length {
        while aligned && chunks.len() < IN_FLIGHT && submitted < length {
            let n = (length - submitted).min(CHUNK as u64) as usize;
            if n as u64 % SECTOR != 0 {
                break;
            }
            // Wait for a buffer only when nothing is in flight to wait for instead.
            let buf = if chunks.is_empty() { queues.empty.recv().ok() } else { queues.empty.try_recv().ok() };
            let Some(mut buf) = buf else { break };
            buf.resize(n, 0);
            chunks.submit(dev, Io::Read { offset: offset + submitted, buf })?;
            submitted += n as u64;
        }
        let (buf, n) = if !chunks.is_empty() {
            let buf = chunks.next_in_order(dev)?;
            let n = buf.len();
            (buf, n)
        } else {
            // Nothing in flight: an unaligned range, its odd tail, or no buffer coming back
            // because the writer has gone.
            let Ok(mut buf) = queues.empty.recv() else { break };
            buf.resize(buf.capacity(), 0);
            let n = (length - done).min(buf.len() as u64) as usize;
            dev.read_at(&mut buf[..n], offset + done)?;
            submitted += n as u64;
            (buf, n)
        };
        if queues.filled.send((buf, n)).is_err() {
            break;
        }
        done += n as u64;
        progress.update(done);
    }
    Ok(done)
}

/// Chunks submitted to the disk and not handed on yet, in the order they were submitted.
#[derive(Default)]
struct Chunks {
    order: VecDeque<OpId>,
    /// Those that completed before the ones submitted ahead of them.
    early: HashMap<OpId, Vec<u8>>,
}

impl Chunks {
    fn len(&self) -> usize {
        self.order.len()
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn submit(&mut self, dev: &mut Device, io: Io) -> Result<(), aoe_initiator::Error> {
        self.order.push_back(dev.submit(io)?);
        Ok(())
    }

    /// The buffer of the oldest chunk, once it completed: the first error of any chunk
    /// fails the copy.
    fn next_in_order(&mut self, dev: &mut Device) -> Result<Vec<u8>, aoe_initiator::Error> {
        let first = *self.order.front().expect("a chunk in flight");
        loop {
            if let Some(buf) = self.early.remove(&first) {
                self.order.pop_front();
                return Ok(buf);
            }
            let Some(Done { id, result, buf }) = dev.poll(None)? else {
                return Err(aoe_initiator::Error::Invalid("a chunk in flight was lost"));
            };
            result?;
            self.early.insert(id, buf);
        }
    }
}

/// The local side of `aoe read`: writes each chunk as it comes and gives its buffer back.
fn write_chunks(
    mut out: Box<dyn Write + Send>,
    chunks: Receiver<Chunk>,
    give_back: Sender<Vec<u8>>,
) -> io::Result<()> {
    for (buf, n) in chunks {
        out.write_all(&buf[..n])?;
        // The disk's side may have stopped taking buffers: nothing is lost then.
        let _ = give_back.send(buf);
    }
    out.flush()
}

/// What the local side of `aoe write` read: how many bytes, and whether the input went on
/// past the disk's end (looked at only when no length was given).
struct Input {
    overflow: bool,
}

/// The local side of `aoe write`: fills the buffers that come back empty from `input`, at
/// most `limit` bytes in all, and queues them; with `probe`, then looks for one byte more.
fn read_chunks(
    mut input: Box<dyn Read + Send>,
    limit: u64,
    probe: bool,
    queues: Queues,
) -> io::Result<Input> {
    let mut done = 0u64;
    while done < limit {
        let Ok(mut buf) = queues.empty.recv() else { return Ok(Input { overflow: false }) };
        // The disk's side hands buffers back cut to the chunk they held.
        buf.resize(buf.capacity(), 0);
        let ask = (limit - done).min(buf.len() as u64) as usize;
        let n = fill(&mut *input, &mut buf[..ask])?;
        if n == 0 {
            return Ok(Input { overflow: false });
        }
        if queues.filled.send((buf, n)).is_err() {
            return Ok(Input { overflow: false });
        }
        done += n as u64;
        if n < ask {
            return Ok(Input { overflow: false });
        }
    }
    let mut more = [0u8; 1];
    Ok(Input { overflow: probe && fill(&mut *input, &mut more)? > 0 })
}

pub(crate) fn write(cli: &Cli, args: &WriteArgs) -> Result<(), Failure> {
    let disk = args.disk;
    let name = display_name(&args.file, "stdin");
    // The input is opened first: a missing file is reported before any network traffic.
    let (input, file_len): (Box<dyn Read + Send>, Option<u64>) = if is_dash(&args.file) {
        (Box::new(io::stdin()), None)
    } else {
        let file = File::open(&args.file).map_err(|e| Failure::io(format!("cannot open {name}"), e))?;
        let meta = file.metadata().map_err(|e| Failure::io(format!("cannot stat {name}"), e))?;
        (Box::new(file), meta.is_file().then_some(meta.len()))
    };
    if let (Some(want), Some(have)) = (args.length, file_len) {
        if have < want {
            return Err(Failure::new(format!("{name} holds {have} bytes, fewer than --length {want}")));
        }
    }
    let mut dev = cli.open_device(disk)?;
    let size = dev.size_bytes();
    let want = args.length.or(file_len);
    let (offset, limit) = range(disk, size, args.offset, want)?;
    let mut progress = Progress::new("wrote", format!("to {disk}"), want);
    let (filled, chunks) = mpsc::sync_channel::<Chunk>(QUEUED);
    let (give_back, empty) = mpsc::channel();
    buffers(limit, &give_back);
    let queues = Queues { filled, empty };
    let probe = want.is_none();
    // Not scoped: after a disk error the tool ends without waiting for an input that may
    // never come (a terminal, a pipe from a producer that stalls).
    let reader = thread::Builder::new()
        .name("aoe-read-local".into())
        .spawn(move || read_chunks(input, limit, probe, queues))
        .map_err(|e| Failure::io("starting the thread that reads the file", e))?;
    let result =
        match store_chunks(&mut dev, disk, &name, offset, args.verify, chunks, give_back, &mut progress) {
            Err(f) => Err(f),
            Ok(done) => match reader.join() {
                Ok(Ok(input)) => Ok((done, input)),
                Ok(Err(e)) => Err(Failure::io(format!("reading {name}"), e)),
                Err(_) => Err(Failure::new("the thread that reads the file panicked")),
            },
        };
    let (done, input) = match result {
        Ok(r) => r,
        Err(f) => {
            progress.abandon();
            // What was written stays written: flush it, as a disk's cache would be, but
            // without waiting out another dead timeout for a target that went silent.
            flush_briefly(&mut dev);
            return Err(f);
        }
    };
    if input.overflow {
        progress.abandon();
        let _ = dev.flush();
        return Err(Failure::new(format!(
            "out of range: {name} runs past the end of {disk} ({size} bytes); \
             the {done} bytes from offset {offset} to the end were written, the rest was not"
        )));
    }
    if let Err(e) = dev.flush() {
        progress.abandon();
        return Err(Failure::disk(disk, e));
    }
    if let Some(want) = args.length.filter(|&w| done < w) {
        progress.abandon();
        return Err(Failure::new(format!(
            "{name} ended after {done} bytes, fewer than --length {want}; those {done} bytes were written"
        )));
    }
    progress.finish(done);
    if args.verify {
        eprintln!("verified: {done} bytes read back equal to what was written");
    }
    Ok(())
}

/// The disk's side of `aoe write`: writes each chunk as it comes, up to [`IN_FLIGHT`] at
/// once (one at a time with `verify`, which reads each back and compares), and gives its
/// buffer back once written. Returns the bytes written.
#[allow(clippy::too_many_arguments)]
fn store_chunks(
    dev: &mut Device,
    disk: DiskName,
    name: &str,
    offset: u64,
    verify: bool,
    chunks: Receiver<Chunk>,
    give_back: Sender<Vec<u8>>,
    progress: &mut Progress,
) -> Result<u64, Failure> {
    let mut check = Vec::new();
    let mut in_flight = Chunks::default();
    let mut done = 0u64;
    let fail = |e| Failure::disk(disk, e);
    for (mut buf, n) in chunks {
        let at = offset + done;
        if !verify && at % SECTOR == 0 && n as u64 % SECTOR == 0 {
            if in_flight.len() == IN_FLIGHT {
                let _ = give_back.send(in_flight.next_in_order(dev).map_err(fail)?);
            }
            buf.truncate(n);
            in_flight.submit(dev, Io::Write { offset: at, buf }).map_err(fail)?;
            done += n as u64;
            progress.update(done);
            continue;
        }
        // Partial sectors are read, patched and written back: after the writes before them.
        while !in_flight.is_empty() {
            let _ = give_back.send(in_flight.next_in_order(dev).map_err(fail)?);
        }
        dev.write_at(&buf[..n], at).map_err(fail)?;
        if verify {
            check.resize(check.len().max(n), 0);
            dev.read_at(&mut check[..n], at).map_err(fail)?;
            if let Some(i) = buf[..n].iter().zip(&check[..n]).position(|(a, b)| a != b) {
                return Err(Failure::new(format!(
                    "verify failed: byte {} of {disk} (byte {} of {name}) reads back 0x{:02x}, 0x{:02x} was written",
                    at + i as u64,
                    done + i as u64,
                    check[i],
                    buf[i]
                )));
            }
        }
        done += n as u64;
        progress.update(done);
        let _ = give_back.send(buf);
    }
    while !in_flight.is_empty() {
        let _ = give_back.send(in_flight.next_in_order(dev).map_err(fail)?);
    }
    Ok(done)
}

/// How long a copy that failed waits for its last flush.
const LAST_FLUSH: Duration = Duration::from_secs(1);

/// Flushes `dev` after a failure, waiting at most [`LAST_FLUSH`] for the writes still in
/// flight and the flush itself.
fn flush_briefly(dev: &mut Device) {
    let deadline = Instant::now() + LAST_FLUSH;
    let Ok(flush) = dev.submit(Io::Flush) else { return };
    while let Ok(Some(done)) = dev.poll(Some(deadline)) {
        if done.id == flush {
            return;
        }
    }
}

/// The byte range `offset .. offset + length` (length defaulting to the rest of the disk),
/// or an out-of-range failure that says why.
fn range(disk: DiskName, size: u64, offset: u64, length: Option<u64>) -> Result<(u64, u64), Failure> {
    let human = format::bytes(size);
    if offset > size {
        return Err(Failure::new(format!(
            "out of range: offset {offset} is beyond the end of {disk} ({size} bytes, {human})"
        )));
    }
    let room = size - offset;
    let length = length.unwrap_or(room);
    if length > room {
        return Err(Failure::new(format!(
            "out of range: {length} bytes from offset {offset} run past the end of {disk} ({size} bytes, {human})"
        )));
    }
    Ok((offset, length))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn fill(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn is_dash(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn display_name(path: &Path, dash: &str) -> String {
    if is_dash(path) {
        dash.to_owned()
    } else {
        path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: DiskName = DiskName { shelf: 1, slot: 0 };

    #[test]
    fn ranges() {
        assert_eq!(range(D, 4096, 0, None).unwrap(), (0, 4096));
        assert_eq!(range(D, 4096, 1000, None).unwrap(), (1000, 3096));
        assert_eq!(range(D, 4096, 4096, None).unwrap(), (4096, 0));
        assert_eq!(range(D, 4096, 96, Some(4000)).unwrap(), (96, 4000));
        assert_eq!(
            range(D, 4096, 4097, None).unwrap_err().to_string(),
            "out of range: offset 4097 is beyond the end of e1.0 (4096 bytes, 4 KiB)"
        );
        assert_eq!(
            range(D, 4096, 100, Some(4000)).unwrap_err().to_string(),
            "out of range: 4000 bytes from offset 100 run past the end of e1.0 (4096 bytes, 4 KiB)"
        );
    }

    #[test]
    fn fill_reads_across_short_reads() {
        struct Trickle(Vec<u8>);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0.remove(0);
                Ok(1)
            }
        }
        let mut t = Trickle(vec![1, 2, 3]);
        let mut buf = [0u8; 5];
        assert_eq!(fill(&mut t, &mut buf).unwrap(), 3);
        assert_eq!(buf, [1, 2, 3, 0, 0]);
    }
}
