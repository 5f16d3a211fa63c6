//! The running target: validated [`Settings`] turned into open files, raw sockets and one
//! server thread per interface.
//!
//! [`Service::open`] does every check that needs the system (files, interfaces, raw sockets)
//! before anything is served, so a bad setting stops the program before it answers a frame.
//! [`Service::run`] announces every export, serves until a stop flag is set, then flushes
//! every backend.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use aoe_proto::SECTOR_SIZE;
use aoe_transport::afpacket::{self, AfPacket, AfPacketOptions};
use aoe_transport::afxdp::{XdpOptions, XdpSender};
use aoe_transport::Split;
use aoe_transport::Transport;
use sd_notify::NotifyState;

use super::control::{ControlSocket, Request, Serving, View};
use super::metrics;
use super::settings::{resolve_rules, ExportSettings, Initiator, Problem, Settings, SettingsError};
use super::state::{Saved, StateDir};
use aoe_target::backend::nbd::{is_uri, NbdAddress, NbdBackend, NbdOptions};
use aoe_target::backend::{Backend, FileBackend, FileOptions, MappedFile, Window};
use aoe_target::export::{Export, ExportConfig, Port, ServerStats};
use aoe_target::server::{Server, SharedExport};

/// The backend of every export the program serves: a window of a file, a block device or
/// an NBD export.
pub type FileExport = Window<Storage>;

/// Where an export's sectors are: what its `file` names.
#[derive(Debug)]
pub enum Storage {
    /// A regular file or block device.
    File(FileBackend),
    /// An NBD export, named by an `nbd://` or `nbd+unix://` URI.
    Nbd(NbdBackend),
}

impl Storage {
    /// True for a block device or an NBD export: storage whose I/O waits (on a disk, on a
    /// network), served by I/O threads unless told otherwise.
    pub fn waits(&self) -> bool {
        match self {
            Storage::File(f) => f.is_block_device(),
            Storage::Nbd(_) => true,
        }
    }
}

impl Backend for Storage {
    fn len(&self) -> u64 {
        match self {
            Storage::File(f) => f.len(),
            Storage::Nbd(n) => n.len(),
        }
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Storage::File(f) => f.read_at(buf, offset),
            Storage::Nbd(n) => n.read_at(buf, offset),
        }
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self {
            Storage::File(f) => f.write_at(buf, offset),
            Storage::Nbd(n) => n.write_at(buf, offset),
        }
    }
    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        match self {
            Storage::File(f) => f.write_vectored_at(bufs, offset),
            Storage::Nbd(n) => n.write_vectored_at(bufs, offset),
        }
    }
    fn flush(&self) -> io::Result<()> {
        match self {
            Storage::File(f) => f.flush(),
            Storage::Nbd(n) => n.flush(),
        }
    }
    fn refresh_len(&self) -> io::Result<u64> {
        match self {
            Storage::File(f) => f.refresh_len(),
            Storage::Nbd(n) => n.refresh_len(),
        }
    }
    fn mapping(&self) -> Option<(&Arc<MappedFile>, u64)> {
        match self {
            Storage::File(f) => f.mapping(),
            Storage::Nbd(_) => None,
        }
    }
    fn read_only(&self) -> bool {
        match self {
            Storage::File(f) => f.read_only(),
            Storage::Nbd(n) => n.read_only(),
        }
    }
}

/// The NBD export `file` names, if it is a URI.
pub fn nbd_address(file: &std::path::Path) -> Option<Result<NbdAddress, aoe_target::backend::nbd::UriError>> {
    file.to_str().filter(|f| is_uri(f)).map(str::parse)
}

/// Opens what export `index` names: a file or block device, or an NBD export.
fn open_storage(settings: &Settings, index: usize) -> Result<Storage, SettingsError> {
    let export = &settings.exports[index];
    let fail = |problem| settings.error(Some(index), problem);
    let path = &export.file;
    if let Some(address) = nbd_address(path) {
        let address = address.map_err(|e| fail(Problem::NbdUri(e)))?;
        let nbd = NbdBackend::open(&address, NbdOptions::default())
            .map_err(|source| fail(Problem::Nbd { uri: address.uri.clone(), source }))?;
        return Ok(Storage::Nbd(nbd));
    }
    let file_error = |source| fail(Problem::File { path: path.clone(), source });
    let kind = std::fs::metadata(path).map_err(file_error)?.file_type();
    if !(kind.is_file() || kind.is_block_device()) {
        return Err(fail(Problem::NotAFile(path.clone())));
    }
    let options = FileOptions { read_only: export.read_only, direct: export.direct, sync: export.sync };
    FileBackend::open(path, options).map(Storage::File).map_err(file_error)
}

/// Checks and opens the file (or NBD export) of export `index`, windowed by its offset and
/// length.
///
/// # Panics
///
/// If `settings` has no export `index`.
pub fn open_backend(settings: &Settings, index: usize) -> Result<FileExport, SettingsError> {
    let export = &settings.exports[index];
    let fail = |problem| settings.error(Some(index), problem);
    let path = &export.file;
    let file = open_storage(settings, index)?;
    let sectors = file.len() / SECTOR_SIZE as u64;
    let (offset, path) = (export.offset, path.clone());
    if offset > sectors {
        return Err(fail(Problem::OffsetBeyondEnd { path, offset, sectors }));
    }
    let length = match export.length {
        Some(length) if offset.checked_add(length).is_none_or(|end| end > sectors) => {
            return Err(fail(Problem::LengthBeyondEnd { path, offset, length, sectors }));
        }
        Some(length) => length,
        None if offset == sectors => return Err(fail(Problem::Empty { path, offset, sectors })),
        None => sectors - offset,
    };
    let unit = SECTOR_SIZE as u64;
    Window::new(file, offset * unit, Some(length * unit)).map_err(|e| {
        // The checks above make this unreachable; report it plainly all the same.
        fail(Problem::File { path: path.clone(), source: io::Error::new(io::ErrorKind::InvalidInput, e) })
    })
}

/// An export being served (or about to be).
struct Live {
    settings: ExportSettings,
    shared: SharedExport<FileExport>,
    block_device: bool,
    sectors: u64,
}

/// What a (re)loaded configuration makes of one export.
enum Planned {
    /// The export of the same name keeps its open backend; this configuration is applied.
    Kept { shared: SharedExport<FileExport>, config: ExportConfig },
    /// A new engine over a newly opened backend.
    Opened(Box<Export<FileExport>>),
}

/// Exports planned with their settings, and the interfaces in the order they are first named.
struct Prepared {
    exports: Vec<(ExportSettings, Planned, bool, u64)>,
    interfaces: Vec<Interface>,
}

/// An interface to serve, and what it serves.
struct Interface {
    name: String,
    /// Indices of the exports offered on it, into the settings' exports.
    exports: Vec<usize>,
    /// How many of them are block devices.
    block_devices: usize,
}

/// Whether two settings of an export can share one open backend: same file, window and
/// open flags.
fn same_backend(a: &ExportSettings, b: &ExportSettings) -> bool {
    (&a.file, a.offset, a.length, a.direct, a.sync, a.read_only)
        == (&b.file, b.offset, b.length, b.direct, b.sync, b.read_only)
}

/// The engine's configuration for `export`, host names in its rules resolved.
fn engine_config(export: &ExportSettings, ethers: Option<&str>) -> Result<ExportConfig, Problem> {
    let mut config = ExportConfig::new(export.shelf, export.slot);
    config.buffer_count = export.buffer_count;
    config.read_only = export.read_only;
    config.mask = export.mask.clone();
    config.access = resolve_rules(&export.rules, ethers)?;
    Ok(config)
}

/// Validates, opens every file not open already (in `current`) and checks every interface.
/// Changes nothing that is served: a failure leaves `current` as it was.
fn prepare(
    settings: &Settings,
    current: &[Live],
    state: Option<&StateDir>,
) -> Result<Prepared, SettingsError> {
    settings.validate()?;
    let ethers = read_ethers(settings)?;
    let mut exports = Vec::with_capacity(settings.exports.len());
    for (index, export) in settings.exports.iter().enumerate() {
        let fail = |p| settings.error(Some(index), p);
        let mut config = engine_config(export, ethers.as_deref()).map_err(fail)?;
        let old = current.iter().find(|l| l.settings.name() == export.name());
        if let Some(old) = old.filter(|old| same_backend(&old.settings, export)) {
            // A store read-only itself (an NBD server's read-only export) stays so.
            config.read_only |= old.shared.lock().unwrap_or_else(|e| e.into_inner()).backend().read_only();
            let planned = Planned::Kept { shared: Arc::clone(&old.shared), config };
            exports.push((export.clone(), planned, old.block_device, old.sectors));
            continue;
        }
        let backend = open_backend(settings, index)?;
        let block_device = backend.inner().waits();
        config.read_only |= backend.read_only();
        let mut engine = Export::new(config, backend);
        match old {
            // Reopened: what initiators set and the counters carry over.
            Some(old) => {
                let old = old.shared.lock().unwrap_or_else(|e| e.into_inner());
                let mut state = old.state();
                if old.config().mask != export.mask {
                    state.mask = export.mask.clone();
                }
                engine.restore(state).map_err(|e| fail(Problem::State(e.to_string())))?;
                engine.set_stats(Arc::clone(old.stats()));
            }
            None => {
                if let Some(state) = state {
                    restore(state, export, &mut engine).map_err(fail)?;
                }
            }
        }
        let sectors = engine.sectors();
        exports.push((export.clone(), Planned::Opened(Box::new(engine)), block_device, sectors));
    }
    let spans: Vec<(&ExportSettings, u64)> =
        exports.iter().map(|(export, _, _, sectors)| (export, sectors * SECTOR_SIZE as u64)).collect();
    refuse_shared_sectors(settings, &spans)?;
    let mut interfaces: Vec<Interface> = Vec::new();
    for (index, (export, _, block_device, _)) in exports.iter().enumerate() {
        for name in &export.interfaces {
            let interface = match interfaces.iter().position(|i| &i.name == name) {
                Some(at) => &mut interfaces[at],
                None => {
                    interfaces.push(Interface { name: name.clone(), exports: Vec::new(), block_devices: 0 });
                    interfaces.last_mut().expect("just pushed")
                }
            };
            interface.exports.push(index);
            interface.block_devices += usize::from(*block_device);
        }
    }
    // Every interface is checked before any raw socket is opened, so that a typo is reported
    // as such even without the privilege to open one.
    for Interface { name, exports, .. } in &interfaces {
        let index = exports[0];
        let info = afpacket::interface_info(name).map_err(|e| settings.error(Some(index), e.into()))?;
        if !info.up {
            let down = afpacket::OpenError::InterfaceDown(info.name);
            return Err(settings.error(Some(index), down.into()));
        }
        if info.loopback {
            return Err(settings.error(Some(index), Problem::Loopback(info.name)));
        }
    }
    Ok(Prepared { exports, interfaces })
}

/// Refuses two exports that can write the same sectors of one file (or block device): each
/// would answer as a disk of its own while the other changes it. Read-only exports may share.
fn refuse_shared_sectors(
    settings: &Settings,
    exports: &[(&ExportSettings, u64)],
) -> Result<(), SettingsError> {
    use std::os::unix::fs::MetadataExt;
    /// The file (device and inode, or the block device's number), the byte range of it
    /// exported, whether read-only, and the export's index.
    struct Span {
        file: (u64, u64),
        bytes: std::ops::Range<u64>,
        read_only: bool,
        index: usize,
    }
    let mut seen: Vec<Span> = Vec::with_capacity(exports.len());
    for (index, &(export, len)) in exports.iter().enumerate() {
        let Ok(meta) = std::fs::metadata(&export.file) else { continue };
        // A block device is named by the device it is, a file by its inode.
        let id = if meta.file_type().is_block_device() {
            (u64::MAX, meta.rdev())
        } else {
            (meta.dev(), meta.ino())
        };
        let start = export.offset.saturating_mul(SECTOR_SIZE as u64);
        let range = start..start.saturating_add(len);
        for other in &seen {
            let overlap = range.start < other.bytes.end && other.bytes.start < range.end;
            if other.file == id && overlap && !(export.read_only && other.read_only) {
                let (first, name) = (other.index, exports[other.index].0.name());
                let problem = Problem::SameFileTwice { path: export.file.clone(), first, other: name };
                return Err(settings.error(Some(index), problem));
            }
        }
        seen.push(Span { file: id, bytes: range, read_only: export.read_only, index });
    }
    Ok(())
}

/// The ethers file's text, when a rule names a host.
fn read_ethers(settings: &Settings) -> Result<Option<String>, SettingsError> {
    let names_a_host = |e: &ExportSettings| e.rules.iter().any(|r| matches!(r.who, Initiator::Name(_)));
    if !settings.exports.iter().any(names_a_host) {
        return Ok(None);
    }
    let path = &settings.ethers;
    let fail = |source| settings.error(None, Problem::Ethers { path: path.clone(), source });
    let file = std::fs::File::open(path).map_err(fail)?;
    let mut text = String::new();
    io::Read::read_to_string(&mut io::Read::take(file, MAX_ETHERS_FILE), &mut text).map_err(fail)?;
    Ok(Some(text))
}

/// Longest ethers file read.
const MAX_ETHERS_FILE: u64 = 4 << 20;

/// Gives `engine` the config string and lists saved for it. When the configuration's mask
/// changed since they were saved, the configured mask is kept.
fn restore(
    state: &StateDir,
    export: &ExportSettings,
    engine: &mut Export<FileExport>,
) -> Result<(), Problem> {
    let name = export.name();
    let Some(Saved { state: mut saved, config_mask }) = state.load(&name).map_err(Problem::State)? else {
        return Ok(());
    };
    if config_mask != export.mask {
        tracing::info!(
            "{name}: the configured mask changed since the state was saved; using the configured one"
        );
        saved.mask = export.mask.clone();
    }
    engine
        .restore(saved)
        .map_err(|e| Problem::State(format!("state file {}: {e}", state.path(&name).display())))?;
    let restored = engine.state();
    tracing::info!(
        "{name}: restored from {}: config string of {} bytes, {} mask and {} reserve entries",
        state.path(&name).display(),
        restored.config_string.len(),
        restored.mask.len(),
        restored.reserve.len()
    );
    Ok(())
}

/// How an interface is served: its raw socket, or that socket receiving beside an AF_XDP
/// socket that sends the receiving thread's answers ([`Settings::af_xdp`]).
type Link = Box<dyn Transport>;

/// Opens the raw socket of `interface` and a server for it, with its I/O threads.
fn open_server(
    settings: &Settings,
    interface: &Interface,
    exports: Vec<SharedExport<FileExport>>,
) -> Result<Server<Link, FileExport>, SettingsError> {
    let Interface { name, exports: served, block_devices } = interface;
    let index = served[0];
    let options = AfPacketOptions {
        rx_ring: settings.rx_ring,
        qdisc_bypass: settings.qdisc_bypass,
        tx_ring: settings.tx_ring,
        kernel_busy_poll: settings.kernel_busy_poll,
        ..AfPacketOptions::default()
    };
    let socket = AfPacket::open(name, options).map_err(|e| settings.error(Some(index), e.into()))?;
    if let Some(e) = socket.rx_ring_refused() {
        tracing::warn!("{name}: the kernel refused a receive ring ({e}); receiving with recvmmsg");
    }
    if let Some(e) = socket.qdisc_bypass_refused() {
        tracing::warn!("{name}: the kernel refused to bypass the qdisc ({e}); sending through it");
    }
    if let Some(e) = socket.tx_ring_refused() {
        tracing::warn!("{name}: the kernel refused a transmit ring ({e}); sending with sendmmsg");
    } else if socket.has_tx_ring() {
        tracing::info!("{name}: frames sent through transmit rings");
    }
    if let Some(e) = socket.kernel_busy_poll_refused() {
        tracing::warn!("{name}: the kernel refused to busy-poll ({e}); receiving without it");
    }
    let link: Link = match settings.af_xdp {
        false => Box::new(socket),
        true => match XdpSender::open(name, XdpOptions::default()) {
            Ok(tx) => {
                tracing::info!("{name}: answers sent through an AF_XDP socket");
                Box::new(Split { rx: socket, tx })
            }
            Err(e) => {
                tracing::warn!("{name}: no AF_XDP socket ({e}); sending with sendmmsg");
                Box::new(socket)
            }
        },
    };
    let mut server = Server::new(link, exports);
    server.set_busy_poll(settings.busy_poll);
    let threads = settings.io_threads_for(served, *block_devices);
    if threads > 0 {
        tracing::info!("{name}: {threads} I/O threads");
    }
    server
        .set_io_threads(threads)
        .map_err(|source| settings.error(Some(index), Problem::IoThreads { threads, source }))?;
    Ok(server)
}

/// Open exports and the sockets that serve them, ready to [`run`](Self::run).
pub struct Service {
    settings: Settings,
    exports: Vec<Live>,
    servers: Vec<Server<Link, FileExport>>,
    /// Where the exports' config strings and lists are kept, if anywhere.
    state: Option<StateDir>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.exports.iter().map(|l| l.settings.name()).collect();
        f.debug_struct("Service").field("exports", &names).field("interfaces", &self.servers.len()).finish()
    }
}

/// Makes the engines of a prepared configuration: kept ones reconfigured, opened ones
/// shared. Returns them, and the names of kept exports whose settings changed, with what.
fn apply(prepared: Vec<(ExportSettings, Planned, bool, u64)>, current: &[Live]) -> (Vec<Live>, Vec<String>) {
    let mut changed = Vec::new();
    let exports = prepared
        .into_iter()
        .map(|(settings, planned, block_device, sectors)| {
            let shared = match planned {
                Planned::Kept { shared, config } => {
                    let mut export = shared.lock().unwrap_or_else(|e| e.into_inner());
                    if *export.config() != config {
                        export.reconfigure(config);
                    }
                    drop(export);
                    if let Some(old) = current.iter().find(|l| Arc::ptr_eq(&l.shared, &shared)) {
                        let what = differences(&old.settings, &settings);
                        if !what.is_empty() {
                            changed.push(format!("{} ({})", settings.name(), what.join(", ")));
                        }
                    }
                    shared
                }
                Planned::Opened(engine) => Arc::new(Mutex::new(*engine)),
            };
            Live { settings, shared, block_device, sectors }
        })
        .collect();
    (exports, changed)
}

/// The settings that differ between two settings of one export.
fn differences(a: &ExportSettings, b: &ExportSettings) -> Vec<&'static str> {
    let mut what = Vec::new();
    if a.mask != b.mask {
        what.push("mask");
    }
    if a.rules != b.rules {
        what.push("rules");
    }
    if a.buffer_count != b.buffer_count {
        what.push("buffer_count");
    }
    if a.interfaces != b.interfaces {
        what.push("interfaces");
    }
    if !same_backend(a, b) {
        what.push("file");
    }
    what
}

/// What the main loop keeps of a server running on its own thread.
struct Running {
    name: String,
    port: Port,
    control: Arc<ServerControl>,
    /// The exports it serves (as last told).
    exports: Vec<SharedExport<FileExport>>,
    stats: Arc<ServerStats>,
    thread: thread::JoinHandle<()>,
}

/// How the main loop steers a server thread.
#[derive(Default)]
struct ServerControl {
    /// Makes [`Server::run`] return, to look at the rest.
    wake: AtomicBool,
    /// Stop serving.
    quit: AtomicBool,
    /// Exports to serve from now on, and which of them to announce.
    update: Mutex<Option<Update>>,
    /// The generation of the last update applied.
    applied: AtomicU64,
}

struct Update {
    generation: u64,
    exports: Vec<SharedExport<FileExport>>,
    announce: Vec<SharedExport<FileExport>>,
}

/// The first error a server thread met.
type FirstError = Arc<Mutex<Option<io::Error>>>;

/// Serves on `server` until told to quit or `stop` is set, taking updates between runs.
/// An error sets `stop` for every other server.
fn serve_thread(
    mut server: Server<Link, FileExport>,
    control: &ServerControl,
    stop: &AtomicBool,
    first_error: &FirstError,
) {
    let interface = server.transport().name().to_owned();
    tracing::debug!("serving on {interface}");
    loop {
        control.wake.store(false, Ordering::SeqCst);
        let update = control.update.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(Update { generation, exports, announce }) = update {
            server.set_exports(exports);
            if let Err(e) = server.announce_if(|e| announce.iter().any(|a| Arc::ptr_eq(a, e))) {
                tracing::warn!("{interface}: announcing: {e}");
            }
            control.applied.store(generation, Ordering::SeqCst);
        }
        if stop.load(Ordering::SeqCst) || control.quit.load(Ordering::SeqCst) {
            break;
        }
        if let Err(e) = serve(&mut server, &control.wake) {
            let e = io::Error::new(e.kind(), format!("{interface}: {e}"));
            tracing::error!("{e}");
            first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
            stop.store(true, Ordering::SeqCst);
            break;
        }
    }
    tracing::debug!("stopped serving on {interface}");
}

/// Logs the line that says `live` is served on an interface.
fn log_serving(live: &Live, interface: &str, port: &Port) {
    let settings = &live.settings;
    let read_only = live.shared.lock().unwrap_or_else(|e| e.into_inner()).config().read_only;
    tracing::info!(
        "{} on {} ({}): {} sectors, {} sectors/frame, bufcnt {}, file {} ({})",
        settings.name(),
        interface,
        port.mac,
        live.sectors,
        port.max_sectors,
        settings.buffer_count,
        settings.file.display(),
        describe(settings, read_only),
    );
}

/// How long a removed export's I/O on other threads may take to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to take an update (it looks between polls).
const UPDATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits until no I/O thread holds `live`'s backend any more (its I/O is done), then
/// flushes it.
fn drain_and_flush(live: &Live) -> io::Result<()> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let export = live.shared.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::strong_count(export.shared_backend()) == 1 || Instant::now() > deadline {
            return export.backend().flush();
        }
        drop(export);
        thread::sleep(Duration::from_millis(5));
    }
}

/// Tells systemd (when it started us with `Type=notify`) how we are.
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// The running service, as the main loop holds it.
struct Main<'a> {
    settings: Settings,
    exports: Vec<Live>,
    running: Vec<Running>,
    state: Option<StateKeeper>,
    view: Arc<View>,
    stop: &'a Arc<AtomicBool>,
    first_error: FirstError,
    generation: u64,
}

impl Main<'_> {
    fn start_server(&mut self, mut server: Server<Link, FileExport>) -> io::Result<()> {
        server.announce()?;
        let port = server.port();
        let name = server.transport().name().to_owned();
        let exports: Vec<_> = server.exports().cloned().collect();
        for live in self.exports.iter().filter(|l| l.settings.interfaces.contains(&name)) {
            log_serving(live, &name, &port);
        }
        let control = Arc::new(ServerControl::default());
        let stats = Arc::clone(server.stats());
        let (c, stop, first_error) =
            (Arc::clone(&control), Arc::clone(self.stop), Arc::clone(&self.first_error));
        let thread = thread::Builder::new()
            .name(format!("aoe-{name}"))
            .spawn(move || serve_thread(server, &c, &stop, &first_error))?;
        self.running.push(Running { name, port, control, exports, stats, thread });
        Ok(())
    }

    fn show(&self) {
        self.view.set(Serving {
            exports: self
                .exports
                .iter()
                .map(|l| {
                    let stats = Arc::clone(l.shared.lock().unwrap_or_else(|e| e.into_inner()).stats());
                    (l.settings.clone(), l.sectors, stats)
                })
                .collect(),
            interfaces: self.running.iter().map(|r| (r.name.clone(), Arc::clone(&r.stats))).collect(),
        });
    }

    /// Re-reads the configuration; on success serves it and says what changed.
    fn reload(&mut self, load: &dyn Fn() -> Result<Settings, SettingsError>) -> Result<String, String> {
        let source = self.settings.source.clone();
        let file = source.as_deref().map_or("the command line".into(), |p| p.display().to_string());
        let new = load().map_err(|e| e.to_string())?;
        let dir = self.state.as_ref().map(|k| &k.dir);
        let Prepared { exports: planned, interfaces } =
            prepare(&new, &self.exports, dir).map_err(|e| e.to_string())?;
        // Sockets for new interfaces, before anything changes.
        let mut opened = Vec::new();
        for interface in interfaces.iter().filter(|i| !self.running.iter().any(|r| r.name == i.name)) {
            opened.push((
                interface.name.clone(),
                open_server(&new, interface, Vec::new()).map_err(|e| e.to_string())?,
            ));
        }
        for (what, old, now) in [
            ("metrics", format!("{:?}", self.settings.metrics), format!("{:?}", new.metrics)),
            ("control", format!("{:?}", self.settings.control_path()), format!("{:?}", new.control_path())),
            ("state_dir", format!("{:?}", self.settings.state_dir), format!("{:?}", new.state_dir)),
            ("rx_ring", self.settings.rx_ring.to_string(), new.rx_ring.to_string()),
        ] {
            if old != now {
                tracing::warn!("{file}: a change of {what} takes effect at the next start");
            }
        }
        for (what, old, now) in [
            ("busy_poll_us", format!("{:?}", self.settings.busy_poll), format!("{:?}", new.busy_poll)),
            ("io_threads", format!("{:?}", self.settings.io_threads), format!("{:?}", new.io_threads)),
            ("qdisc_bypass", self.settings.qdisc_bypass.to_string(), new.qdisc_bypass.to_string()),
            ("tx_ring", self.settings.tx_ring.to_string(), new.tx_ring.to_string()),
            ("af_xdp", self.settings.af_xdp.to_string(), new.af_xdp.to_string()),
            (
                "kernel_busy_poll_us",
                format!("{:?}", self.settings.kernel_busy_poll),
                format!("{:?}", new.kernel_busy_poll),
            ),
        ] {
            if old != now {
                tracing::warn!("{file}: a change of {what} applies to interfaces served from now on, not to those served already");
            }
        }
        let (exports, changed) = apply(planned, &self.exports);
        let has = |list: &[Live], l: &Live| list.iter().any(|o| Arc::ptr_eq(&o.shared, &l.shared));
        let added: Vec<String> = exports
            .iter()
            .filter(|l| {
                !has(&self.exports, l) && !self.exports.iter().any(|o| o.settings.name() == l.settings.name())
            })
            .map(|l| l.settings.name())
            .collect();
        let reopened: Vec<String> = exports
            .iter()
            .filter(|l| {
                !has(&self.exports, l) && self.exports.iter().any(|o| o.settings.name() == l.settings.name())
            })
            .map(|l| l.settings.name())
            .collect();
        let old = std::mem::replace(&mut self.exports, exports);
        let gone: Vec<Live> = old.into_iter().filter(|l| !has(&self.exports, l)).collect();
        // Tell every running server what it serves now.
        self.generation += 1;
        let generation = self.generation;
        for running in &mut self.running {
            let now: Vec<SharedExport<FileExport>> = self
                .exports
                .iter()
                .filter(|l| l.settings.interfaces.contains(&running.name))
                .map(|l| Arc::clone(&l.shared))
                .collect();
            if now.is_empty() {
                running.control.quit.store(true, Ordering::SeqCst);
            }
            let announce: Vec<_> =
                now.iter().filter(|e| !running.exports.iter().any(|o| Arc::ptr_eq(o, e))).cloned().collect();
            for live in self.exports.iter().filter(|l| announce.iter().any(|a| Arc::ptr_eq(a, &l.shared))) {
                log_serving(live, &running.name, &running.port);
            }
            running.exports = now.clone();
            *running.control.update.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Update { generation, exports: now, announce });
            running.control.wake.store(true, Ordering::SeqCst);
        }
        let deadline = Instant::now() + UPDATE_TIMEOUT;
        while self
            .running
            .iter()
            .any(|r| r.control.applied.load(Ordering::SeqCst) < generation && !r.thread.is_finished())
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(2));
        }
        // Servers of interfaces no longer named stop.
        let (quit, keep): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| r.control.quit.load(Ordering::SeqCst));
        self.running = keep;
        let mut stopped = Vec::new();
        for running in quit {
            let _ = running.thread.join();
            stopped.push(running.name);
        }
        for (_, socket) in opened {
            let list = self
                .exports
                .iter()
                .filter(|l| l.settings.interfaces.iter().any(|i| i == socket.transport().name()))
                .map(|l| Arc::clone(&l.shared))
                .collect();
            let mut server = socket;
            server.set_exports(list);
            self.start_server(server).map_err(|e| e.to_string())?;
        }
        // What is no longer served finishes its I/O and is flushed.
        for live in &gone {
            if let Some(keeper) = &self.state {
                keeper.save_changed(std::slice::from_ref(live));
            }
            match drain_and_flush(live) {
                Ok(()) => {
                    tracing::debug!("{}: flushed {}", live.settings.name(), live.settings.file.display())
                }
                Err(e) => tracing::error!(
                    "{}: flushing {}: {e}",
                    live.settings.name(),
                    live.settings.file.display()
                ),
            }
        }
        let removed: Vec<String> =
            gone.iter().map(|l| l.settings.name()).filter(|n| !reopened.contains(n)).collect();
        for name in &removed {
            tracing::info!("{name}: no longer served");
        }
        self.settings = new;
        self.show();
        let mut summary = Vec::new();
        for (what, names) in [
            ("added", &added),
            ("removed", &removed),
            ("reopened", &reopened),
            ("changed", &changed),
            ("stopped serving on", &stopped),
        ] {
            if !names.is_empty() {
                summary.push(format!("{what} {}", names.join(", ")));
            }
        }
        if summary.is_empty() {
            summary.push("nothing changed".into());
        }
        Ok(format!("reloaded {file}: {}", summary.join("; ")))
    }
}

/// What [`Service::run`] is given besides the service.
pub struct Controls<'a> {
    /// Set (by SIGINT or SIGTERM) to stop.
    pub stop: &'a Arc<AtomicBool>,
    /// Set (by SIGHUP) to reload the configuration; cleared when taken.
    pub reload: &'a AtomicBool,
    /// Reads the configuration again.
    pub load: &'a dyn Fn() -> Result<Settings, SettingsError>,
}

impl Service {
    /// Opens every file, then checks every interface (it must exist, be up and carry
    /// Ethernet), then opens one raw socket per interface. Fails on the first problem.
    pub fn open(settings: &Settings) -> Result<Service, SettingsError> {
        let state =
            match &settings.state_dir {
                Some(dir) => Some(StateDir::open(dir).map_err(|source| {
                    settings.error(None, Problem::StateDir { path: dir.clone(), source })
                })?),
                None => None,
            };
        let Prepared { exports, interfaces } = prepare(settings, &[], state.as_ref())?;
        let (exports, _) = apply(exports, &[]);
        let mut servers = Vec::with_capacity(interfaces.len());
        for interface in &interfaces {
            let list = interface.exports.iter().map(|&i| Arc::clone(&exports[i].shared)).collect();
            servers.push(open_server(settings, interface, list)?);
        }
        Ok(Service { settings: settings.clone(), exports, servers, state })
    }

    /// Does every check [`open`](Self::open) does except opening raw sockets (which needs
    /// privilege); returns each export's settings and size in sectors.
    pub fn check(settings: &Settings) -> Result<Vec<(ExportSettings, u64)>, SettingsError> {
        let Prepared { exports, .. } = prepare(settings, &[], None)?;
        Ok(exports.into_iter().map(|(s, _, _, sectors)| (s, sectors)).collect())
    }

    /// The exports' settings.
    pub fn exports(&self) -> impl Iterator<Item = &ExportSettings> {
        self.exports.iter().map(|l| &l.settings)
    }

    /// Announces every export on each of its interfaces and logs one line per export and
    /// interface, starts the metrics endpoint and the control socket, tells systemd it is
    /// ready, then serves, one thread per interface, until `stop` is set or a server fails
    /// (which sets `stop` for the others). A reload (SIGHUP, `aoe-target ctl reload`)
    /// re-reads the configuration and serves it, or keeps the running one when it has an
    /// error. Every backend is flushed before returning.
    ///
    /// Returns the first error: a server's I/O error, else a flush error.
    pub fn run(self, controls: Controls<'_>) -> io::Result<()> {
        let Service { settings, exports, servers, state } = self;
        let view = Arc::new(View::new(settings.source.clone()));
        if let Some(addr) = settings.metrics {
            metrics::serve(addr, Arc::clone(&view))
                .map_err(|e| io::Error::new(e.kind(), format!("metrics on {addr}: {e}")))?;
        }
        let (requests, inbox) = mpsc::channel();
        // Kept, so that the inbox waits (rather than fails at once) without a control socket.
        let _requests = requests.clone();
        let control = settings.control_path().and_then(|path| {
            match ControlSocket::start(&path, Arc::clone(&view), requests) {
                Ok(socket) => {
                    tracing::debug!("control socket {}", socket.path().display());
                    Some(socket)
                }
                // Asked for by name: worth a warning. The default: another target of a file of
                // the same name may hold it, or /run may not be ours.
                Err(e) if settings.control.is_some() => {
                    tracing::warn!("no control socket at {}: {e}", path.display());
                    None
                }
                Err(e) => {
                    tracing::info!(
                        "no control socket at {}: {e}; set control in the file for one",
                        path.display()
                    );
                    None
                }
            }
        });
        let keeper = state.map(|dir| StateKeeper::new(dir, &exports));
        let mut main = Main {
            settings,
            exports,
            running: Vec::new(),
            state: keeper,
            view,
            stop: controls.stop,
            first_error: FirstError::default(),
            generation: 0,
        };
        let mut result = Ok(());
        for server in servers {
            if let Err(e) = main.start_server(server) {
                controls.stop.store(true, Ordering::SeqCst);
                result = Err(e);
                break;
            }
        }
        main.show();
        notify(&[NotifyState::Ready]);
        while !controls.stop.load(Ordering::SeqCst) {
            let reply = match inbox.recv_timeout(STATE_POLL) {
                Ok(Request::Reload(reply)) => Some(reply),
                Err(_) => None,
            };
            if reply.is_some() || controls.reload.swap(false, Ordering::SeqCst) {
                let mut reloading = vec![NotifyState::Reloading];
                reloading.extend(NotifyState::monotonic_usec_now().ok());
                notify(&reloading);
                let outcome = main.reload(controls.load);
                match &outcome {
                    Ok(summary) => tracing::info!("{summary}"),
                    Err(e) => tracing::error!("reload refused, the running configuration is kept: {e}"),
                }
                notify(&[NotifyState::Ready]);
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
            if let Some(keeper) = &main.state {
                keeper.save_changed(&main.exports);
            }
        }
        notify(&[NotifyState::Stopping]);
        for running in &main.running {
            running.control.wake.store(true, Ordering::SeqCst);
        }
        for running in main.running.drain(..) {
            let _ = running.thread.join();
        }
        drop(control);
        if let Some(keeper) = &main.state {
            keeper.save_changed(&main.exports);
        }
        let first_error = main.first_error.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut first_error = result.err().or(first_error);
        for live in &main.exports {
            let export = live.shared.lock().unwrap_or_else(|e| e.into_inner());
            let (name, file) = (live.settings.name(), live.settings.file.display());
            match export.backend().flush() {
                Ok(()) => tracing::debug!("{name}: flushed {file}"),
                Err(e) => {
                    tracing::error!("{name}: flushing {file}: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// How often the main loop saves changed config strings and lists.
const STATE_POLL: Duration = Duration::from_millis(100);

/// Saves each export's config string and lists when an initiator changed them.
struct StateKeeper {
    dir: StateDir,
    /// The state version last saved, per export name; `None` after a failed save.
    saved: Mutex<HashMap<String, Option<u64>>>,
}

impl StateKeeper {
    fn new(dir: StateDir, exports: &[Live]) -> Self {
        let versions = exports.iter().map(|l| {
            let version = l.shared.lock().unwrap_or_else(|e| e.into_inner()).state_version();
            (l.settings.name(), Some(version))
        });
        StateKeeper { dir, saved: Mutex::new(versions.collect()) }
    }

    fn save_changed(&self, exports: &[Live]) {
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        for Live { settings, shared, .. } in exports {
            let name = settings.name();
            let last = saved.entry(name.clone()).or_insert(Some(u64::MAX));
            let (version, state) = {
                let export = shared.lock().unwrap_or_else(|e| e.into_inner());
                if Some(export.state_version()) == *last {
                    continue;
                }
                (export.state_version(), export.state())
            };
            match self.dir.save(&name, &Saved { state, config_mask: settings.mask.clone() }) {
                Ok(()) => {
                    tracing::debug!("{name}: state saved to {}", self.dir.path(&name).display());
                    *last = Some(version);
                }
                Err(e) => {
                    // Tried again at the next poll; said once per failure, not every poll.
                    if last.is_some() {
                        tracing::warn!(
                            "{name}: cannot save its state to {}: {e}",
                            self.dir.path(&name).display()
                        );
                    }
                    *last = None;
                }
            }
        }
    }
}

/// How long a server waits after its interface went down before it listens again.
const LINK_DOWN_BACKOFF: Duration = Duration::from_millis(100);

/// Runs `server` until `stop` is set. An interface that goes down (and perhaps up again)
/// is one path lost for a while, not a reason to stop serving the others: the socket stays
/// bound to the interface and receives again once it is back up.
fn serve<T: Transport, B: Backend>(server: &mut Server<T, B>, stop: &AtomicBool) -> io::Result<()> {
    loop {
        match server.run(stop) {
            // The kernel reports ENETDOWN once per time the interface goes down.
            Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                tracing::warn!("{} went down; serving it again once it is up", server.transport().name());
                thread::sleep(LINK_DOWN_BACKOFF);
            }
            other => return other,
        }
    }
}

/// "read-write, O_DIRECT, O_SYNC, offset 8 sectors, mask 2 MACs"
fn describe(export: &ExportSettings, read_only: bool) -> String {
    let mut parts = vec![if read_only { "read-only" } else { "read-write" }.to_owned()];
    if export.direct {
        parts.push("O_DIRECT".into());
    }
    if export.sync {
        parts.push("O_SYNC".into());
    }
    if export.offset != 0 {
        parts.push(format!("offset {} sectors", export.offset));
    }
    if !export.mask.is_empty() {
        let macs: Vec<String> = export.mask.iter().map(ToString::to_string).collect();
        parts.push(format!("mask {}", macs.join(",")));
    }
    if !export.rules.is_empty() {
        let rules: Vec<String> = export.rules.iter().map(ToString::to_string).collect();
        parts.push(format!("rules {}", rules.join(", ")));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(sectors: u64) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "aoe-service-{}-{}.img",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, vec![0u8; (sectors * 512) as usize + 100]).unwrap();
        path
    }

    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    use std::path::PathBuf;

    fn check(offset: u64, length: Option<u64>) -> Result<u64, String> {
        let path = image(64);
        let mut export = ExportSettings::new(1, 0, "lo", &path);
        export.offset = offset;
        export.length = length;
        let r = open_backend(&Settings::single(export), 0).map(|w| w.len() / 512).map_err(|e| e.to_string());
        std::fs::remove_file(path).unwrap();
        r
    }

    #[test]
    fn windows_in_sectors() {
        assert_eq!(check(0, None), Ok(64), "a trailing partial sector is not exported");
        assert_eq!(check(8, None), Ok(56));
        assert_eq!(check(8, Some(56)), Ok(56));
        assert_eq!(check(63, Some(1)), Ok(1));
        assert!(check(65, None).unwrap_err().contains("offset of 65 sectors is beyond the end"));
        assert!(check(64, None).unwrap_err().contains("nothing to export"));
        assert!(check(8, Some(57)).unwrap_err().contains("offset 8 + length 57 sectors runs past"));
        assert!(check(u64::MAX - 1, Some(2)).unwrap_err().contains("beyond the end"));
        assert!(check(1, Some(u64::MAX)).unwrap_err().contains("runs past the end"));
    }

    #[test]
    fn missing_file_and_directory() {
        let export = ExportSettings::new(1, 0, "lo", "/nonexistent/aoe.img");
        let err = open_backend(&Settings::single(export), 0).unwrap_err().to_string();
        assert!(err.starts_with("e1.0: file /nonexistent/aoe.img: No such file"), "{err}");
        let export = ExportSettings::new(1, 0, "lo", std::env::temp_dir());
        let err = open_backend(&Settings::single(export), 0).unwrap_err().to_string();
        assert!(err.contains("is not a regular file or block device"), "{err}");
    }

    #[test]
    fn describes_options() {
        let mut e = ExportSettings::new(1, 0, "lo", "x");
        assert_eq!(describe(&e, false), "read-write");
        assert_eq!(describe(&e, true), "read-only", "an NBD server's read-only export");
        e.read_only = true;
        e.direct = true;
        e.offset = 8;
        e.mask = vec![aoe_proto::MacAddr([2, 0, 0, 0, 0, 1])];
        assert_eq!(
            describe(&e, e.read_only),
            "read-only, O_DIRECT, offset 8 sectors, mask 02:00:00:00:00:01"
        );
    }
}
