//! `aoe nbd`: serve one AoE disk to NBD clients (qemu, libnbd's nbdcopy and nbdfuse,
//! nbd-client) over a Unix or TCP socket.
//!
//! The disk is opened once, as a [`SharedDevice`], and every connection uses it. Each
//! connection has two threads: the reader feeds the [`aoe_nbd::server::Server`] state machine
//! and submits what it yields to the disk without waiting, and the replier waits for the
//! operations in the order they were submitted and sends their replies. The number of
//! requests and bytes in flight per connection is bounded ([`MAX_IN_FLIGHT`],
//! [`MAX_IN_FLIGHT_BYTES`]); past that the reader stops reading the socket, which pushes back
//! on the client. A target that goes silent fails its requests after `--dead-timeout`, and
//! the client gets EIO replies.

use std::collections::VecDeque;
use std::io::{self, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use aoe_initiator::shared::{Pending, SharedDevice};
use aoe_initiator::{Error, Io};
use aoe_nbd::server::{Config, Event, Export, Replies, Server};
use aoe_nbd::wire;

use super::{Cli, Failure, NbdArgs};

/// Requests of one connection submitted to the disk and not yet answered.
pub(crate) const MAX_IN_FLIGHT: usize = 128;
/// Clients served at once; more are closed as they connect.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Bytes of read and write data of one connection in flight at once.
pub(crate) const MAX_IN_FLIGHT_BYTES: u64 = 64 << 20;
/// Largest READ or WRITE a client may send (advertised as the maximum block size).
const MAX_PAYLOAD: u32 = 32 << 20;
/// Zeroes written per submitted write when emulating WRITE_ZEROES.
const ZERO_CHUNK: usize = 1 << 20;
/// How long a client may take over each step of the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Socket reads.
const READ_BUF: usize = 256 << 10;
const SECTOR: u64 = 512;

/// Where the server listens.
enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

/// A connected client.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }
    fn shutdown(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write_vectored(bufs),
            Stream::Tcp(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) fn run(cli: &Cli, args: &NbdArgs) -> Result<(), Failure> {
    let disk = args.disk;
    let name = args.name.clone().unwrap_or_else(|| disk.to_string());
    if name.len() > wire::MAX_STRING_LEN || name.contains('\0') {
        return Err(Failure::usage("--name: an NBD export name is at most 4096 bytes, without NUL"));
    }
    // Signals first: one during the disk's discovery still stops the server cleanly.
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
            .map_err(|e| Failure::io("cannot handle SIGINT and SIGTERM", e))?;
    let listener = listen(args)?;
    let uri = match &listener {
        Listener::Unix(_, path) => format!("nbd+unix:///{name}?socket={}", path.display()),
        Listener::Tcp(l) => {
            let addr = l.local_addr().map_err(|e| Failure::io("cannot read the listening address", e))?;
            match addr {
                SocketAddr::V6(a) => format!("nbd://[{}]:{}/{name}", a.ip(), a.port()),
                SocketAddr::V4(a) => format!("nbd://{}:{}/{name}", a.ip(), a.port()),
            }
        }
    };
    let result = (|| {
        let device = cli.open_device(disk)?;
        let dev = SharedDevice::new(device).map_err(|e| Failure::io("cannot start the disk's thread", e))?;
        let export = Export {
            name: name.clone(),
            description: format!("AoE disk {disk}"),
            size: dev.size_bytes(),
            read_only: args.read_only,
            // One SharedDevice behind every connection: a flush on one covers them all.
            multi_conn: true,
        };
        let mut config = Config::new(export);
        config.max_payload = MAX_PAYLOAD;
        println!("serving {disk} as {uri}{}", if args.read_only { " (read-only)" } else { "" });
        io::stdout().flush().map_err(|e| Failure::io("writing stdout", e))?;

        let acceptor = {
            let (dev, stop, config) = (dev.clone(), Arc::clone(&stop), config.clone());
            std::thread::Builder::new()
                .name("aoe-nbd-accept".into())
                .spawn(move || accept(listener, dev, config, stop))
                .map_err(|e| Failure::io("cannot start the accepting thread", e))?
        };
        let signal = signals.forever().next();
        stop.store(true, Ordering::SeqCst);
        tracing::info!(?signal, "stopping");
        let flushed = if args.read_only { Ok(()) } else { dev.flush() };
        drop(acceptor);
        flushed.map_err(|e| Failure::disk(disk, e))?;
        eprintln!("aoe: stopped serving {disk}");
        Ok(())
    })();
    if let Some(path) = socket_path(args) {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn socket_path(args: &NbdArgs) -> Option<&Path> {
    args.unix.as_deref()
}

fn listen(args: &NbdArgs) -> Result<Listener, Failure> {
    if let Some(path) = &args.unix {
        // A socket file left by an earlier server that is gone would make bind fail.
        if UnixStream::connect(path).is_err() && path.exists() {
            use std::os::unix::fs::FileTypeExt;
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(path);
            }
        }
        let l = UnixListener::bind(path)
            .map_err(|e| Failure::io(format!("cannot listen on {}", path.display()), e))?;
        return Ok(Listener::Unix(l, path.clone()));
    }
    let addr = args.tcp.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], wire::DEFAULT_PORT)));
    let l = TcpListener::bind(addr).map_err(|e| Failure::io(format!("cannot listen on {addr}"), e))?;
    Ok(Listener::Tcp(l))
}

/// Accepts clients until the process stops; each gets its own threads.
fn accept(listener: Listener, dev: SharedDevice, config: Config, stop: Arc<AtomicBool>) {
    let mut id = 0u64;
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match &listener {
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            // Each connection may hold MAX_IN_FLIGHT_BYTES: the count bounds the memory.
            tracing::warn!(limit = MAX_CONNECTIONS, "too many connections; closing a new one");
            stream.shutdown();
            continue;
        }
        id += 1;
        let (dev, config, mine) = (dev.clone(), config.clone(), Arc::clone(&active));
        active.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new().name(format!("aoe-nbd-{id}")).spawn(move || {
            if let Err(e) = serve(stream, &dev, config) {
                tracing::info!(connection = id, error = %e, "connection closed");
            }
            mine.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            // The closure, and with it its decrement, never ran.
            active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(error = %e, "cannot start a connection thread");
        }
    }
}

/// What the replier does for one request, in submission order.
enum Job {
    /// Bytes the state machine produced itself (refusals).
    Raw(Vec<u8>),
    /// A read: the data is `skip..skip + len` of the completed buffer.
    Read { handle: u64, offset: u64, skip: usize, len: usize, pending: Pending, bytes: u64 },
    /// Writes or a flush: reply once each completed, in order; the first error wins.
    Ops { handle: u64, pending: Vec<Pending>, bytes: u64 },
    /// Work that needs the blocking calls (unaligned writes): run it, then reply.
    Blocking { handle: u64, work: Box<dyn FnOnce() -> Result<(), Error> + Send>, bytes: u64 },
    /// A request that failed before it was submitted.
    Failed { handle: u64, read: bool, errno: u32, bytes: u64 },
}

/// Bytes and requests in flight on one connection, shared by its two threads.
#[derive(Default)]
struct Budget {
    used: Mutex<Used>,
    freed: Condvar,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Used {
    requests: usize,
    bytes: u64,
    /// The replier stopped: nothing will be given back, so nobody waits any more.
    closed: bool,
}

impl Budget {
    /// Blocks until one more request of `bytes` fits (a lone request always fits), or the
    /// replier has stopped.
    fn take(&self, bytes: u64) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        while !used.closed
            && used.requests > 0
            && (used.requests >= MAX_IN_FLIGHT || used.bytes + bytes > MAX_IN_FLIGHT_BYTES)
        {
            used = self.freed.wait(used).unwrap_or_else(PoisonError::into_inner);
        }
        used.requests += 1;
        used.bytes += bytes;
    }
    fn give(&self, bytes: u64) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        used.requests = used.requests.saturating_sub(1);
        used.bytes = used.bytes.saturating_sub(bytes);
        self.freed.notify_all();
    }
    fn close(&self) {
        self.used.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        self.freed.notify_all();
    }
}

/// One connection: the handshake on this thread, then this thread reads and submits while
/// a second one replies.
fn serve(mut stream: Stream, dev: &SharedDevice, config: Config) -> io::Result<()> {
    let mut server = Server::new(config);
    let mut buf = vec![0u8; READ_BUF];
    // A client that connects and says nothing does not keep a thread forever.
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    // Handshake: answer each option as it comes.
    let replies = loop {
        stream.write_all(&server.take_output())?;
        if let Some(r) = server.replies() {
            break r;
        }
        if server.is_closed() {
            return Ok(());
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if let Err(e) = server.receive(&buf[..n]) {
            stream.write_all(&server.take_output())?;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        // Events of the handshake (Ready, Disconnect) need nothing more; the loop sees the
        // phase. Requests pipelined behind the final option stay queued for below.
    };
    stream.set_read_timeout(None)?;
    let budget = Arc::new(Budget::default());
    let (jobs, inbox) = mpsc::sync_channel::<Job>(MAX_IN_FLIGHT);
    let replier = {
        let (out, closer) = (stream.try_clone()?, stream.try_clone()?);
        let budget = Arc::clone(&budget);
        std::thread::Builder::new().name("aoe-nbd-reply".into()).spawn(move || {
            let result = reply(out, inbox, replies, &budget);
            if result.is_err() {
                // The client is gone or stuck: wake the reader (blocked on the socket or
                // on the budget) so that the connection ends.
                closer.shutdown();
            }
            budget.close();
            result
        })?
    };
    let result = transmit(&mut stream, &mut server, dev, &jobs, &budget, &mut buf);
    drop(jobs);
    let replied = replier.join().unwrap_or_else(|_| Err(io::Error::other("the reply thread panicked")));
    stream.shutdown();
    result.and(replied)
}

/// Reads requests and submits them until the client disconnects.
fn transmit(
    stream: &mut Stream,
    server: &mut Server,
    dev: &SharedDevice,
    jobs: &SyncSender<Job>,
    budget: &Budget,
    buf: &mut [u8],
) -> io::Result<()> {
    let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the reply thread stopped");
    loop {
        while let Some(event) = server.poll_event() {
            let job = match event {
                Event::Disconnect => {
                    flush_raw(server, jobs).map_err(|_| gone())?;
                    return Ok(());
                }
                Event::Ready { .. } => continue,
                event => submit(dev, event, budget),
            };
            // Refusals produced before this request go out before its reply.
            flush_raw(server, jobs).map_err(|_| gone())?;
            jobs.send(job).map_err(|_| gone())?;
        }
        flush_raw(server, jobs).map_err(|_| gone())?;
        let n = stream.read(buf)?;
        if n == 0 {
            return Ok(());
        }
        if let Err(e) = server.receive(&buf[..n]) {
            // Send what the state machine queued, then drop the connection.
            let _ = flush_raw(server, jobs);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
}

fn flush_raw(server: &mut Server, jobs: &SyncSender<Job>) -> Result<(), mpsc::SendError<Job>> {
    if server.output().is_empty() {
        return Ok(());
    }
    jobs.send(Job::Raw(server.take_output()))
}

fn aligned(offset: u64, len: u64) -> bool {
    offset % SECTOR == 0 && len % SECTOR == 0
}

/// Turns one request into a job: submitted at once where the disk allows it.
fn submit(dev: &SharedDevice, event: Event, budget: &Budget) -> Job {
    match event {
        Event::Read { handle, offset, len } => {
            let start = offset / SECTOR * SECTOR;
            let end = (offset + u64::from(len)).div_ceil(SECTOR) * SECTOR;
            let bytes = end - start;
            budget.take(bytes);
            match dev.submit(Io::Read { offset: start, buf: vec![0; bytes as usize] }) {
                Ok(pending) => Job::Read {
                    handle,
                    offset,
                    skip: (offset - start) as usize,
                    len: len as usize,
                    pending,
                    bytes,
                },
                Err(e) => Job::Failed { handle, read: true, errno: errno(&e), bytes },
            }
        }
        Event::Write { handle, offset, data, fua } => {
            let bytes = data.len() as u64;
            budget.take(bytes);
            if aligned(offset, bytes) {
                let mut pending = Vec::with_capacity(2);
                let first = dev.submit(Io::Write { offset, buf: data });
                ops(dev, handle, first.map(|p| pending.push(p)), fua, pending, bytes)
            } else {
                let dev = dev.clone();
                let work = Box::new(move || {
                    dev.write_at(&data, offset)?;
                    if fua {
                        dev.flush()?;
                    }
                    Ok(())
                });
                Job::Blocking { handle, work, bytes }
            }
        }
        Event::WriteZeroes { handle, offset, len, fua } => {
            budget.take(0);
            let dev = dev.clone();
            let work = Box::new(move || {
                write_zeroes(&dev, offset, u64::from(len))?;
                if fua {
                    dev.flush()?;
                }
                Ok(())
            });
            Job::Blocking { handle, work, bytes: 0 }
        }
        Event::Flush { handle } => {
            budget.take(0);
            ops(dev, handle, Ok(()), true, Vec::new(), 0)
        }
        // Handled by the caller.
        Event::Ready { .. } | Event::Disconnect => Job::Raw(Vec::new()),
    }
}

/// The job for writes already submitted (`submitted` says whether the last submission
/// worked), followed by a flush when `flush` is set.
fn ops(
    dev: &SharedDevice,
    handle: u64,
    submitted: Result<(), Error>,
    flush: bool,
    mut pending: Vec<Pending>,
    bytes: u64,
) -> Job {
    let submitted =
        submitted.and_then(|()| if flush { dev.submit(Io::Flush).map(|p| pending.push(p)) } else { Ok(()) });
    match submitted {
        Ok(()) => Job::Ops { handle, pending, bytes },
        Err(e) => {
            // What was submitted completes on its own; the client hears of the failure.
            drop(pending);
            Job::Failed { handle, read: false, errno: errno(&e), bytes }
        }
    }
}

/// Writes `len` zero bytes at `offset`: the unaligned edges through `write_at`, the sectors
/// between as batches of writes in flight together.
fn write_zeroes(dev: &SharedDevice, offset: u64, len: u64) -> Result<(), Error> {
    const BATCH: usize = 8;
    let end = offset + len;
    let first = offset.div_ceil(SECTOR) * SECTOR;
    let last = end / SECTOR * SECTOR;
    if first >= last {
        return dev.write_at(&vec![0; len as usize], offset);
    }
    if first > offset {
        dev.write_at(&vec![0; (first - offset) as usize], offset)?;
    }
    let mut at = first;
    while at < last {
        let mut batch = Vec::with_capacity(BATCH);
        while at < last && batch.len() < BATCH {
            let n = (last - at).min(ZERO_CHUNK as u64);
            batch.push(dev.submit(Io::Write { offset: at, buf: vec![0; n as usize] }));
            at += n;
        }
        let mut result = Ok(());
        for p in batch {
            result = result.and(p).and_then(|p| p.wait().result);
        }
        result?;
    }
    if end > last {
        dev.write_at(&vec![0; (end - last) as usize], last)?;
    }
    Ok(())
}

/// The NBD error for an initiator error.
fn errno(e: &Error) -> u32 {
    match e {
        Error::OutOfRange { .. } => wire::EINVAL,
        Error::Invalid(_) => wire::EINVAL,
        _ => wire::EIO,
    }
}

/// The replier: waits for each job in order and sends its reply.
fn reply(stream: Stream, inbox: Receiver<Job>, replies: Replies, budget: &Budget) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(64 << 10, stream);
    let mut small = Vec::with_capacity(64);
    let mut queue: VecDeque<Job> = VecDeque::new();
    loop {
        let job = match queue.pop_front() {
            Some(job) => job,
            None => match inbox.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty) => {
                    // Nothing ready to send: push out what is buffered, then wait.
                    out.flush()?;
                    match inbox.recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            },
        };
        small.clear();
        match job {
            Job::Raw(bytes) => out.write_all(&bytes)?,
            Job::Read { handle, offset, skip, len, pending, bytes } => {
                let done = wait(pending, &mut out)?;
                budget.give(bytes);
                match done.result {
                    Ok(()) if done.buf.len() >= skip + len => {
                        let header = replies.read_header(handle, offset, len as u32);
                        out.write_all(header.as_bytes())?;
                        out.write_all(&done.buf[skip..skip + len])?;
                    }
                    Ok(()) => replies.read_error(&mut small, handle, wire::EIO),
                    Err(e) => {
                        tracing::warn!(handle, offset, error = %e, "read failed");
                        replies.read_error(&mut small, handle, errno(&e));
                    }
                }
            }
            Job::Ops { handle, pending, bytes } => {
                let mut result = Ok(());
                for p in pending {
                    let done = wait(p, &mut out)?;
                    result = result.and(done.result);
                }
                budget.give(bytes);
                match result {
                    Ok(()) => replies.ok(&mut small, handle),
                    Err(e) => {
                        tracing::warn!(handle, error = %e, "write or flush failed");
                        replies.error(&mut small, handle, errno(&e));
                    }
                }
            }
            Job::Blocking { handle, work, bytes } => {
                out.flush()?;
                let result = work();
                budget.give(bytes);
                match result {
                    Ok(()) => replies.ok(&mut small, handle),
                    Err(e) => replies.error(&mut small, handle, errno(&e)),
                }
            }
            Job::Failed { handle, read, errno, bytes } => {
                budget.give(bytes);
                if read {
                    replies.read_error(&mut small, handle, errno);
                } else {
                    replies.error(&mut small, handle, errno);
                }
            }
        }
        out.write_all(&small)?;
    }
    out.flush()
}

/// Waits for `pending`, sending what is buffered first if it is not done yet (the client
/// should not wait for replies that are ready because a later one is slow).
fn wait(pending: Pending, out: &mut BufWriter<Stream>) -> io::Result<aoe_initiator::Done> {
    if let Some(done) = pending.wait_timeout(Duration::ZERO) {
        return Ok(done);
    }
    out.flush()?;
    Ok(pending.wait())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_lets_one_big_request_through_and_bounds_the_rest() {
        let b = Arc::new(Budget::default());
        b.take(MAX_IN_FLIGHT_BYTES * 2);
        let b2 = Arc::clone(&b);
        let t = std::thread::spawn(move || b2.take(1));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished());
        b.give(MAX_IN_FLIGHT_BYTES * 2);
        t.join().unwrap();
        assert_eq!(*b.used.lock().unwrap(), Used { requests: 1, bytes: 1, closed: false });
    }

    #[test]
    fn a_closed_budget_blocks_nobody() {
        let b = Budget::default();
        for _ in 0..MAX_IN_FLIGHT {
            b.take(1);
        }
        b.close();
        // Would wait for a give that never comes if the budget were still open.
        b.take(MAX_IN_FLIGHT_BYTES);
    }

    #[test]
    fn alignment() {
        assert!(aligned(512, 4096));
        assert!(!aligned(1, 512));
        assert!(!aligned(0, 1));
    }
}
