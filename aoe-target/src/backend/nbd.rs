//! An export whose sectors live on an NBD server (nbdkit, qemu-nbd, nbd-server, ...).
//!
//! [`NbdBackend`] keeps one connection to the server, shared by every thread that calls it:
//! a caller registers its request with the [`Transmission`] (getting a cookie), sends it under
//! a writer lock, and waits for the reply with its cookie. There is no reader thread: one of
//! the waiting callers reads the socket and hands every reply it decodes to its caller, and
//! when its own has come it wakes another waiting caller to read in its place (a request alone
//! in flight thus reads its own reply, with no thread between it and the server). So as many
//! requests are in flight as threads call the backend (the server's I/O threads,
//! `--io-threads`).
//!
//! When the connection drops (or the server breaks the protocol), every request in flight is
//! failed over to a retry, and a thread of the backend connects again, waiting a little longer
//! after each failure (100 ms doubling up to [`NbdOptions::max_backoff`]). Reads, writes and
//! flushes are idempotent, so the requests that had not completed are sent again on the new
//! connection; so are those a stopping server fails with `ESHUTDOWN`. A request that cannot
//! complete within [`NbdOptions::io_timeout`] fails: the initiator sees an ATA error, never
//! wrong data; if the server is connected but did not answer it, the connection is ended and
//! made again. A server that comes back with another export size is not used again: every
//! request fails from then on, and the error is logged. An idle connection is not watched: a
//! server that went away meanwhile is found out, and connected to again, by the next request.
//!
//! What the server says of its export decides the AoE export's: its size, whether it is
//! read-only (`NBD_FLAG_READ_ONLY`, [`Backend::read_only`]) and whether a flush is sent
//! (`NBD_FLAG_SEND_FLUSH`). A server without `SEND_FLUSH` says it has no cache to flush,
//! so a flush is then answered at once.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use aoe_nbd::client::{ExportInfo, Handshake, Request, RequestError, RequestKind, Transmission};
use aoe_nbd::wire::ESHUTDOWN;

use super::{check_range, Backend};

/// The port an `nbd://` URI without one means.
pub const DEFAULT_PORT: u16 = 10809;

/// Where an NBD export is: a server and the export's name, from an `nbd://HOST[:PORT]/NAME`
/// or `nbd+unix:///NAME?socket=PATH` URI.
///
/// ```
/// use aoe_target::backend::nbd::{NbdAddress, Server};
///
/// let a: NbdAddress = "nbd://[::1]/disk%201".parse()?;
/// assert_eq!(a.server, Server::Tcp { host: "::1".into(), port: 10809 });
/// assert_eq!(a.export, "disk 1");
/// let u: NbdAddress = "nbd+unix:///?socket=/run/nbd.sock".parse()?;
/// assert_eq!(u.server, Server::Unix("/run/nbd.sock".into()));
/// assert_eq!(u.export, "");
/// # Ok::<(), aoe_target::backend::nbd::UriError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdAddress {
    /// The server.
    pub server: Server,
    /// The export's name ("" is the server's default export).
    pub export: String,
    /// The URI as given.
    pub uri: String,
}

/// An NBD server's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// TCP: a host name or address, and a port.
    Tcp {
        /// Name or address (an IPv6 address without its brackets).
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix domain socket.
    Unix(PathBuf),
}

/// Why a text is not an NBD URI this backend can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{uri}: {reason}")]
pub struct UriError {
    /// The text.
    pub uri: String,
    /// What is wrong with it.
    pub reason: String,
}

/// True when `text` is a URI (`scheme://...`) rather than a path: the target then takes it
/// for an NBD export.
pub fn is_uri(text: &str) -> bool {
    match text.split_once("://") {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

impl std::str::FromStr for NbdAddress {
    type Err = UriError;

    fn from_str(uri: &str) -> Result<Self, UriError> {
        let fail = |reason: &str| UriError { uri: uri.to_owned(), reason: reason.to_owned() };
        let (scheme, rest) = uri.split_once("://").ok_or_else(|| fail("not a URI"))?;
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, ""),
        };
        let export = percent_decode(path).ok_or_else(|| fail("the export name has a bad %-escape"))?;
        let mut socket = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("socket", path)) => {
                    socket = Some(percent_decode(path).ok_or_else(|| fail("socket= has a bad %-escape"))?)
                }
                _ => return Err(fail(&format!("unknown query parameter {pair:?} (only socket= is known)"))),
            }
        }
        let server = match scheme.to_ascii_lowercase().as_str() {
            "nbd" | "nbd+tcp" => {
                if socket.is_some() {
                    return Err(fail("socket= is for nbd+unix:// URIs"));
                }
                let (host, port) = match authority.strip_prefix('[') {
                    Some(v6) => {
                        let (host, after) =
                            v6.split_once(']').ok_or_else(|| fail("an IPv6 address lacks its ]"))?;
                        (host, after.strip_prefix(':'))
                    }
                    None => match authority.rsplit_once(':') {
                        Some((host, port)) => (host, Some(port)),
                        None => (authority, None),
                    },
                };
                if host.is_empty() {
                    return Err(fail("no host: nbd://HOST[:PORT]/EXPORT"));
                }
                let port = match port {
                    Some(p) => p
                        .parse()
                        .ok()
                        .filter(|&p| p != 0)
                        .ok_or_else(|| fail("the port is not 1 to 65535"))?,
                    None => DEFAULT_PORT,
                };
                Server::Tcp { host: host.to_owned(), port }
            }
            "nbd+unix" => {
                if !authority.is_empty() {
                    return Err(fail("an nbd+unix:// URI has no host: nbd+unix:///EXPORT?socket=PATH"));
                }
                let socket = socket.ok_or_else(|| fail("no socket: nbd+unix:///EXPORT?socket=PATH"))?;
                if socket.is_empty() {
                    return Err(fail("socket= is empty"));
                }
                Server::Unix(PathBuf::from(socket))
            }
            "nbds" | "nbds+unix" | "nbds+tcp" => return Err(fail("NBD over TLS (nbds) is not supported")),
            _ => {
                return Err(fail(
                    "not an NBD URI: nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH",
                ))
            }
        };
        if export.len() > 4096 {
            return Err(fail("the export name is longer than 4096 bytes"));
        }
        Ok(NbdAddress { server, export, uri: uri.to_owned() })
    }
}

impl fmt::Display for NbdAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// How patient the backend is with its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NbdOptions {
    /// For connecting and for the handshake, each time.
    pub connect_timeout: Duration,
    /// How long one read, write or flush may take, waits for a connection and retries
    /// included, before it fails.
    pub io_timeout: Duration,
    /// Longest wait between two attempts to connect again.
    pub max_backoff: Duration,
}

impl Default for NbdOptions {
    fn default() -> Self {
        NbdOptions {
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// The first wait before connecting again.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// How long a request the server refused as it shut down waits before it is sent again.
const SHUTDOWN_PAUSE: Duration = Duration::from_millis(20);
/// Bytes read from the socket per call.
const READ_CHUNK: usize = 256 * 1024;

/// A socket to the server, TCP or Unix.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn connect(server: &Server, timeout: Duration) -> io::Result<Stream> {
        match server {
            Server::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
            Server::Tcp { host, port } => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
                for addr in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(s) => {
                            s.set_nodelay(true)?;
                            return Ok(Stream::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }
    fn try_clone(&self) -> io::Result<Stream> {
        match self {
            Stream::Tcp(s) => s.try_clone().map(Stream::Tcp),
            Stream::Unix(s) => s.try_clone().map(Stream::Unix),
        }
    }
    fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout).and_then(|_| s.set_write_timeout(timeout)),
            Stream::Unix(s) => s.set_read_timeout(timeout).and_then(|_| s.set_write_timeout(timeout)),
        }
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }
    fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Connects to `address` and does the handshake, within `timeout` per step.
fn connect(address: &NbdAddress, timeout: Duration) -> io::Result<(Stream, Transmission)> {
    let mut stream = Stream::connect(&address.server, timeout)?;
    stream.set_timeouts(Some(timeout))?;
    let mut handshake =
        Handshake::new(&address.export).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut buf = vec![0u8; 64 * 1024];
    let transmission = loop {
        let out = handshake.take_output();
        stream.write_all(&out)?;
        // No more than the handshake wants: what follows it belongs to the transmission.
        let want = handshake.wants().min(buf.len());
        let n = stream.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection during the handshake (no such export?)",
            ));
        }
        let done = handshake.receive(&buf[..n]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Some(t) = done {
            stream.write_all(&handshake.take_output())?;
            break t;
        }
    };
    stream.set_timeouts(None)?;
    Ok((stream, transmission))
}

/// What became of a request.
#[derive(Debug)]
enum Outcome {
    /// The server answered: the data read, or its error number.
    Answered(Result<Vec<u8>, u32>),
    /// The connection went before the answer came: send it again.
    Lost,
}

/// Where a caller waits for its reply.
#[derive(Debug, Default)]
struct Slot {
    outcome: Mutex<Option<Outcome>>,
    ready: Condvar,
}

impl Slot {
    fn fill(&self, outcome: Outcome) {
        *lock(&self.outcome) = Some(outcome);
        self.ready.notify_one();
    }
}

/// The connection in use.
#[derive(Debug)]
struct Connection {
    transmission: Transmission,
    /// Callers waiting, by cookie.
    waiting: BTreeMap<u64, Arc<Slot>>,
}

#[derive(Debug)]
struct State {
    /// `None` while the server is unreachable.
    connection: Option<Connection>,
    /// Counts connections, so that a caller knows whether the one it sent on is still there.
    generation: u64,
    /// Set when the server can no longer be used (its export changed size); every request
    /// then fails with this.
    fatal: Option<String>,
}

/// The receiving half of a connection, with its generation and a buffer. Whoever holds its
/// lock reads replies for everyone.
#[derive(Debug)]
struct Receiver {
    generation: u64,
    stream: Stream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Shared {
    address: NbdAddress,
    options: NbdOptions,
    info: ExportInfo,
    state: Mutex<State>,
    /// Signalled when a connection is made (or the backend gives up).
    connected: Condvar,
    /// Signalled when the connection is lost (or the backend stops): wakes the thread that
    /// connects again.
    lost: Condvar,
    /// The sending half, with its connection's generation.
    writer: Mutex<Option<(u64, Stream)>>,
    /// The receiving half.
    receiver: Mutex<Option<Receiver>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An NBD export as a backend, over one shared connection (see the [module](self)).
#[derive(Debug)]
pub struct NbdBackend {
    shared: Arc<Shared>,
    reconnector: Option<JoinHandle<()>>,
}

impl NbdBackend {
    /// Connects to `address` and learns the export's size and flags; fails when the server
    /// cannot be reached or refuses the export. Logs the connection.
    pub fn open(address: &NbdAddress, options: NbdOptions) -> io::Result<NbdBackend> {
        let (stream, transmission) = connect(address, options.connect_timeout)
            .map_err(|e| io::Error::new(e.kind(), format!("NBD server {address}: {e}")))?;
        let info = *transmission.info();
        tracing::info!("{address}: connected: {}", describe(&info));
        let receiver = Receiver { generation: 1, stream: stream.try_clone()?, buf: vec![0; READ_CHUNK] };
        receiver.stream.set_read_timeout(Some(READ_POLL))?;
        let shared = Arc::new(Shared {
            address: address.clone(),
            options,
            info,
            state: Mutex::new(State {
                connection: Some(Connection { transmission, waiting: BTreeMap::new() }),
                generation: 1,
                fatal: None,
            }),
            connected: Condvar::new(),
            lost: Condvar::new(),
            writer: Mutex::new(Some((1, stream))),
            receiver: Mutex::new(Some(receiver)),
            stop: AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&shared);
        let reconnector = thread::Builder::new()
            .name("aoe-nbd-connect".into())
            .spawn(move || keep_connected(&for_thread))?;
        Ok(NbdBackend { shared, reconnector: Some(reconnector) })
    }

    /// What the server said of the export when first connected.
    pub fn info(&self) -> &ExportInfo {
        &self.shared.info
    }

    /// Connections made so far: 1, plus one per reconnection.
    pub fn connections(&self) -> u64 {
        lock(&self.shared.state).generation
    }

    /// Where the export is.
    pub fn address(&self) -> &NbdAddress {
        &self.shared.address
    }

    /// Sends `request` (with `payload` after it, for a write) and waits for its answer,
    /// sending it again on a new connection when the one it went on drops, until the I/O
    /// timeout.
    ///
    /// There is no reader thread: a caller waiting for its reply reads the socket itself
    /// when no other caller does, and hands every reply it decodes to its caller; when its
    /// own has come it wakes a caller still waiting to read in its place. A request alone
    /// in flight so costs its caller no wake-up but the server's answer.
    fn call(&self, request: Request, payload: &[u8]) -> io::Result<Vec<u8>> {
        let shared = &*self.shared;
        let deadline = Instant::now() + shared.options.io_timeout;
        loop {
            let (generation, cookie, header, slot) = {
                let mut state = lock(&shared.state);
                loop {
                    if let Some(fatal) = &state.fatal {
                        return Err(io::Error::other(fatal.clone()));
                    }
                    if state.connection.is_some() {
                        break;
                    }
                    let now = Instant::now();
                    if now >= deadline || shared.stop.load(Ordering::Relaxed) {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("NBD server {} unreachable", shared.address),
                        ));
                    }
                    state = shared
                        .connected
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                let generation = state.generation;
                let connection = state.connection.as_mut().expect("checked above");
                let (cookie, header) = connection.transmission.request(request).map_err(request_error)?;
                let slot = Arc::new(Slot::default());
                connection.waiting.insert(cookie, Arc::clone(&slot));
                (generation, cookie, header, slot)
            };
            {
                let mut frame = Vec::with_capacity(header.len() + payload.len());
                frame.extend_from_slice(&header);
                frame.extend_from_slice(payload);
                let mut writer = lock(&shared.writer);
                match writer.as_mut() {
                    Some((g, stream)) if *g == generation => {
                        if let Err(e) = stream.write_all(&frame) {
                            // Whoever reads next sees the connection end and fails it over.
                            tracing::debug!("{}: sending: {e}", shared.address);
                            stream.shutdown();
                        }
                    }
                    // Gone since: this request was failed over with it.
                    _ => {}
                }
            }
            match self.wait(&slot, generation, cookie, deadline)? {
                Outcome::Answered(Ok(data)) => return Ok(data),
                // A server that is stopping fails what it has not done yet: it is done by
                // the next one.
                Outcome::Answered(Err(ESHUTDOWN)) => thread::sleep(SHUTDOWN_PAUSE),
                Outcome::Answered(Err(errno)) => return Err(server_error(request.kind, errno)),
                Outcome::Lost => {}
            }
            tracing::debug!(
                "{}: request {cookie} lost with its connection; sending it again",
                shared.address
            );
        }
    }

    /// Waits for `slot` to be filled, reading replies meanwhile whenever no one else does.
    fn wait(&self, slot: &Slot, generation: u64, cookie: u64, deadline: Instant) -> io::Result<Outcome> {
        let shared = &*self.shared;
        let mut read = false;
        let outcome = loop {
            let mut outcome = lock(&slot.outcome);
            if let Some(outcome) = outcome.take() {
                break Ok(outcome);
            }
            let now = Instant::now();
            if now >= deadline {
                drop(outcome);
                break Err(self.give_up(generation, cookie));
            }
            // Holding the slot's lock while trying: a reader that leaves after this try
            // wakes this slot only once it waits (see `hand_over`).
            match shared.receiver.try_lock() {
                Ok(mut receiver) => {
                    drop(outcome);
                    read = true;
                    read_once(shared, &mut receiver);
                }
                Err(std::sync::TryLockError::Poisoned(e)) => {
                    drop(outcome);
                    read = true;
                    read_once(shared, &mut e.into_inner());
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    let wait = (deadline - now).min(HANDOVER_SAFETY);
                    let _ = slot.ready.wait_timeout(outcome, wait).unwrap_or_else(|e| e.into_inner());
                }
            }
        };
        if read {
            hand_over(shared);
        }
        outcome
    }

    /// A request that timed out: forgets its slot; if its connection is still up, the server
    /// takes requests and answers none, and the connection is ended (to be made again).
    fn give_up(&self, generation: u64, cookie: u64) -> io::Error {
        let shared = &*self.shared;
        let mut state = lock(&shared.state);
        if state.generation == generation {
            if let Some(connection) = state.connection.as_mut() {
                connection.waiting.remove(&cookie);
            }
            if let Some((g, stream)) = lock(&shared.writer).as_ref() {
                if *g == generation {
                    tracing::warn!(
                        "{}: no answer in {:?}; connecting again",
                        shared.address,
                        shared.options.io_timeout
                    );
                    stream.shutdown();
                }
            }
        }
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("NBD server {} did not answer in {:?}", shared.address, shared.options.io_timeout),
        )
    }
}

/// "268435456 bytes, read-write, flush, FUA, block sizes 1/4096/33554432"
fn describe(info: &ExportInfo) -> String {
    let mut parts = vec![format!("{} bytes", info.size)];
    parts.push(if info.read_only() { "read-only" } else { "read-write" }.into());
    parts.push(if info.can_flush() { "flush" } else { "no flush (writes are durable when answered)" }.into());
    if let Some(b) = info.block_size {
        parts.push(format!("block sizes {}/{}/{}", b.minimum, b.preferred, b.maximum));
    }
    parts.join(", ")
}

fn request_error(e: RequestError) -> io::Error {
    let kind = match e {
        RequestError::ReadOnly => io::ErrorKind::PermissionDenied,
        RequestError::Unsupported(_) => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::InvalidInput,
    };
    io::Error::new(kind, e)
}

/// The server's error number as an I/O error (NBD's numbers are Linux's).
fn server_error(kind: RequestKind, errno: u32) -> io::Error {
    let os = io::Error::from_raw_os_error(i32::try_from(errno).unwrap_or(libc::EIO));
    io::Error::new(os.kind(), format!("NBD server: {kind:?} failed: {os}"))
}

/// Longest a caller waits for its reply without looking whether the socket needs a reader,
/// in case a hand-over was missed.
const HANDOVER_SAFETY: Duration = Duration::from_millis(20);
/// Longest one read of the socket blocks, so that a reader looks at its own deadline.
const READ_POLL: Duration = Duration::from_millis(50);

/// Wakes one caller still waiting for a reply, to read in place of the one that leaves.
fn hand_over(shared: &Shared) {
    let next = lock(&shared.state).connection.as_ref().and_then(|c| c.waiting.values().next().cloned());
    if let Some(slot) = next {
        let _guard = lock(&slot.outcome);
        slot.ready.notify_one();
    }
}

/// One read of the socket: hands every reply it completes to its caller. The end of the
/// connection, or a protocol error, fails every request in flight over.
fn read_once(shared: &Shared, receiver: &mut Option<Receiver>) {
    let Some(r) = receiver.as_mut() else {
        // Between connections: wait for the next rather than spin.
        thread::sleep(HANDOVER_SAFETY.min(MIN_BACKOFF));
        return;
    };
    let why = match r.stream.read(&mut r.buf) {
        Ok(0) => "closed by the server".to_owned(),
        Ok(n) => {
            let mut state = lock(&shared.state);
            if state.generation != r.generation {
                "gone".to_owned()
            } else if let Some(connection) = state.connection.as_mut() {
                match connection.transmission.receive(&r.buf[..n]) {
                    Ok(()) => {
                        while let Some(reply) = connection.transmission.poll_reply() {
                            // A reply for a caller that gave up is dropped.
                            if let Some(slot) = connection.waiting.remove(&reply.cookie) {
                                slot.fill(Outcome::Answered(reply.result));
                            }
                        }
                        return;
                    }
                    Err(e) => format!("protocol error: {e}"),
                }
            } else {
                "gone".to_owned()
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) =>
        {
            return
        }
        Err(e) => e.to_string(),
    };
    let generation = r.generation;
    r.stream.shutdown();
    *receiver = None;
    lose(shared, generation, &why);
}

/// The connection of `generation` ended: fails its requests over, stops sending on it and
/// wakes the thread that connects again.
fn lose(shared: &Shared, generation: u64, why: &str) {
    let mut state = lock(&shared.state);
    if state.generation != generation {
        return;
    }
    if let Some(connection) = state.connection.take() {
        for slot in connection.waiting.into_values() {
            slot.fill(Outcome::Lost);
        }
        if !shared.stop.load(Ordering::Relaxed) {
            tracing::warn!("{}: connection lost ({why}); connecting again", shared.address);
        }
    }
    if let Some((_, s)) = lock(&shared.writer).take() {
        s.shutdown();
    }
    shared.lost.notify_all();
}

/// The thread that connects again: waits for the connection to be lost, then connects,
/// until the backend is dropped or the server comes back changed.
fn keep_connected(shared: &Shared) {
    loop {
        {
            let mut state = lock(&shared.state);
            while state.connection.is_some() && !shared.stop.load(Ordering::Relaxed) {
                state = shared.lost.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
        if shared.stop.load(Ordering::Relaxed) || !reconnect(shared) {
            return;
        }
    }
}

/// Connects again, waiting longer after each failure, until connected (true), stopped, or
/// the export is found changed (false).
fn reconnect(shared: &Shared) -> bool {
    let mut backoff = MIN_BACKOFF;
    let mut attempts = 0u32;
    loop {
        // Sleep in short steps, so that dropping the backend is not held up.
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if shared.stop.load(Ordering::Relaxed) {
                return false;
            }
            thread::sleep(Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())));
        }
        attempts += 1;
        let connected = connect(&shared.address, shared.options.connect_timeout).and_then(|(stream, t)| {
            let reading = stream.try_clone()?;
            reading.set_read_timeout(Some(READ_POLL))?;
            Ok((stream, reading, t))
        });
        match connected {
            Ok((stream, reading, transmission)) => {
                let info = *transmission.info();
                if info.size != shared.info.size || info.read_only() != shared.info.read_only() {
                    let fatal = format!(
                        "NBD server {} came back with another export ({}, was {}): not using it",
                        shared.address,
                        describe(&info),
                        describe(&shared.info)
                    );
                    tracing::error!("{fatal}");
                    lock(&shared.state).fatal = Some(fatal);
                    shared.connected.notify_all();
                    return false;
                }
                // The receiver first: a caller that sends on the new connection finds
                // its reader's socket there.
                let mut receiver = lock(&shared.receiver);
                let mut state = lock(&shared.state);
                state.generation += 1;
                let generation = state.generation;
                *receiver = Some(Receiver { generation, stream: reading, buf: vec![0; READ_CHUNK] });
                drop(receiver);
                state.connection = Some(Connection { transmission, waiting: BTreeMap::new() });
                *lock(&shared.writer) = Some((generation, stream));
                drop(state);
                shared.connected.notify_all();
                tracing::info!("{}: reconnected after {attempts} attempt(s)", shared.address);
                return true;
            }
            Err(e) => {
                if attempts == 1 || attempts.is_power_of_two() {
                    tracing::warn!(
                        "{}: cannot connect ({e}); attempt {attempts}, trying again",
                        shared.address
                    );
                }
                backoff = (backoff * 2).min(shared.options.max_backoff);
            }
        }
    }
}

impl Drop for NbdBackend {
    /// Says goodbye to the server (NBD_CMD_DISC) and stops the thread that connects again.
    fn drop(&mut self) {
        let shared = &*self.shared;
        shared.stop.store(true, Ordering::Relaxed);
        let disconnect = lock(&shared.state)
            .connection
            .as_mut()
            .and_then(|c| c.transmission.request(Request::disconnect()).ok().map(|(_, h)| h));
        if let Some((_, stream)) = lock(&shared.writer).as_mut() {
            if let Some(header) = disconnect {
                let _ = stream.write_all(&header);
            }
            stream.shutdown();
        }
        {
            let _state = lock(&shared.state);
            shared.lost.notify_all();
        }
        shared.connected.notify_all();
        if let Some(thread) = self.reconnector.take() {
            let _ = thread.join();
        }
    }
}

impl Backend for NbdBackend {
    fn len(&self) -> u64 {
        self.shared.info.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.len())?;
        let max = self.shared.info.max_payload() as usize;
        let mut at = offset;
        for chunk in buf.chunks_mut(max) {
            let data = self.call(Request::read(at, chunk.len() as u32), &[])?;
            if data.len() != chunk.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "NBD server: a read of the wrong length",
                ));
            }
            chunk.copy_from_slice(&data);
            at += chunk.len() as u64;
        }
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.len())?;
        let max = self.shared.info.max_payload() as usize;
        let mut at = offset;
        for chunk in buf.chunks(max) {
            self.call(Request::write(at, chunk.len() as u32), chunk)?;
            at += chunk.len() as u64;
        }
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        if !self.shared.info.can_flush() {
            return Ok(());
        }
        self.call(Request::flush(), &[]).map(drop)
    }
    fn read_only(&self) -> bool {
        self.shared.info.read_only()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(uri: &str) -> Result<NbdAddress, String> {
        uri.parse().map_err(|e: UriError| e.to_string())
    }

    #[test]
    fn uris() {
        let a = parse("nbd://localhost/disk").unwrap();
        assert_eq!(a.server, Server::Tcp { host: "localhost".into(), port: 10809 });
        assert_eq!(a.export, "disk");
        let a = parse("nbd://127.0.0.1:10810").unwrap();
        assert_eq!(a.server, Server::Tcp { host: "127.0.0.1".into(), port: 10810 });
        assert_eq!(a.export, "");
        let a = parse("nbd://[::1]:2000/a/b").unwrap();
        assert_eq!(a.server, Server::Tcp { host: "::1".into(), port: 2000 });
        assert_eq!(a.export, "a/b");
        let a = parse("nbd+unix:///x?socket=/tmp/my%20sock").unwrap();
        assert_eq!((a.server, a.export), (Server::Unix("/tmp/my sock".into()), "x".into()));
        for (bad, want) in [
            ("nbd:///disk", "no host"),
            ("nbd://h:0/d", "port"),
            ("nbd://h:99999/d", "port"),
            ("nbd+unix:///d", "no socket"),
            ("nbd+unix://host/d?socket=/s", "has no host"),
            ("nbd://h/d?socket=/s", "socket= is for nbd+unix"),
            ("nbd+unix:///d?socket=/s&tls=on", "unknown query parameter"),
            ("nbds://h/d", "TLS"),
            ("http://h/d", "not an NBD URI"),
            ("nbd://h/%zz", "%-escape"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(want) && err.starts_with(bad), "{bad}: {err}");
        }
        assert!(is_uri("nbd://h/d") && is_uri("nbd+unix:///d?socket=/s") && is_uri("http://x"));
        assert!(!is_uri("/srv/disk.img") && !is_uri("disk.img") && !is_uri("./a://b") && !is_uri("://x"));
    }

    #[test]
    fn an_unreachable_server_is_an_error_at_open() {
        let path = std::env::temp_dir().join(format!("aoe-nbd-none-{}.sock", std::process::id()));
        let address: NbdAddress = format!("nbd+unix:///?socket={}", path.display()).parse().unwrap();
        let err = NbdBackend::open(&address, NbdOptions::default()).unwrap_err().to_string();
        assert!(err.starts_with(&format!("NBD server {address}: ")), "{err}");
    }
}
