//! The running target: validated [`Settings`] turned into open files, raw sockets and one
//! server thread per interface.
//!
//! [`Service::open`] does every check that needs the system (files, interfaces, raw sockets)
//! before anything is served, so a bad setting stops the program before it answers a frame.
//! [`Service::run`] announces every export, serves until a stop flag is set, then flushes
//! every backend.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use aoe_proto::SECTOR_SIZE;
use aoe_transport::afpacket::{self, AfPacket, AfPacketOptions};
use aoe_transport::Transport;

use super::settings::{resolve_rules, ExportSettings, Initiator, Problem, Settings, SettingsError};
use super::state::{Saved, StateDir};
use aoe_target::backend::nbd::{is_uri, NbdAddress, NbdBackend, NbdOptions};
use aoe_target::backend::{Backend, FileBackend, FileOptions, MappedFile, Window};
use aoe_target::export::{Export, ExportConfig};
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

/// Open exports and the sockets that serve them, ready to [`run`](Self::run).
pub struct Service {
    exports: Vec<(ExportSettings, SharedExport<FileExport>)>,
    servers: Vec<Server<AfPacket, FileExport>>,
    /// Where the exports' config strings and lists are kept, if anywhere.
    state: Option<StateDir>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.exports.iter().map(|(s, _)| s.name()).collect();
        f.debug_struct("Service").field("exports", &names).field("interfaces", &self.servers.len()).finish()
    }
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

/// Exports with their settings, the interfaces in the order they are first named, and the
/// state directory.
type Prepared = (Vec<(ExportSettings, SharedExport<FileExport>)>, Vec<Interface>, Option<StateDir>);

/// An interface to serve, and what it serves.
struct Interface {
    name: String,
    /// Indices of the exports offered on it, into the settings' exports.
    exports: Vec<usize>,
    /// How many of them are block devices.
    block_devices: usize,
}

/// Validates, opens every file and checks every interface.
fn prepare(settings: &Settings) -> Result<Prepared, SettingsError> {
    settings.validate()?;
    let ethers = read_ethers(settings)?;
    let state = match &settings.state_dir {
        Some(dir) => Some(
            StateDir::open(dir)
                .map_err(|source| settings.error(None, Problem::StateDir { path: dir.clone(), source }))?,
        ),
        None => None,
    };
    let mut exports = Vec::with_capacity(settings.exports.len());
    let mut block_device = Vec::with_capacity(settings.exports.len());
    for (index, export) in settings.exports.iter().enumerate() {
        let backend = open_backend(settings, index)?;
        block_device.push(backend.inner().waits());
        let mut config = ExportConfig::new(export.shelf, export.slot);
        config.buffer_count = export.buffer_count;
        config.read_only = export.read_only || backend.read_only();
        config.mask = export.mask.clone();
        config.access =
            resolve_rules(&export.rules, ethers.as_deref()).map_err(|p| settings.error(Some(index), p))?;
        let mut engine = Export::new(config, backend);
        if let Some(state) = &state {
            restore(state, export, &mut engine).map_err(|p| settings.error(Some(index), p))?;
        }
        exports.push((export.clone(), Arc::new(Mutex::new(engine))));
    }
    refuse_shared_sectors(settings, &exports)?;
    let mut interfaces: Vec<Interface> = Vec::new();
    for (index, (export, _)) in exports.iter().enumerate() {
        for name in &export.interfaces {
            let interface = match interfaces.iter().position(|i| &i.name == name) {
                Some(at) => &mut interfaces[at],
                None => {
                    interfaces.push(Interface { name: name.clone(), exports: Vec::new(), block_devices: 0 });
                    interfaces.last_mut().expect("just pushed")
                }
            };
            interface.exports.push(index);
            interface.block_devices += usize::from(block_device[index]);
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
    Ok((exports, interfaces, state))
}

/// Refuses two exports that can write the same sectors of one file (or block device): each
/// would answer as a disk of its own while the other changes it. Read-only exports may share.
fn refuse_shared_sectors(
    settings: &Settings,
    exports: &[(ExportSettings, SharedExport<FileExport>)],
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
    for (index, (export, shared)) in exports.iter().enumerate() {
        let Ok(meta) = std::fs::metadata(&export.file) else { continue };
        // A block device is named by the device it is, a file by its inode.
        let id = if meta.file_type().is_block_device() {
            (u64::MAX, meta.rdev())
        } else {
            (meta.dev(), meta.ino())
        };
        let start = export.offset.saturating_mul(SECTOR_SIZE as u64);
        let len = shared.lock().unwrap_or_else(|e| e.into_inner()).backend().len();
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

impl Service {
    /// Opens every file, then checks every interface (it must exist, be up and carry
    /// Ethernet), then opens one raw socket per interface. Fails on the first problem.
    pub fn open(settings: &Settings) -> Result<Service, SettingsError> {
        let (exports, interfaces, state) = prepare(settings)?;
        let mut servers = Vec::with_capacity(interfaces.len());
        for Interface { name, exports: served, block_devices } in interfaces {
            let index = served[0];
            let options = AfPacketOptions { rx_ring: settings.rx_ring, ..AfPacketOptions::default() };
            let socket = AfPacket::open(&name, options).map_err(|e| settings.error(Some(index), e.into()))?;
            if let Some(e) = socket.rx_ring_refused() {
                tracing::warn!("{name}: the kernel refused a receive ring ({e}); receiving with recvmmsg");
            }
            let list = served.iter().map(|&i| Arc::clone(&exports[i].1)).collect();
            let mut server = Server::new(socket, list);
            server.set_busy_poll(settings.busy_poll);
            let threads = settings.io_threads_for(&served, block_devices);
            if threads > 0 {
                tracing::info!("{name}: {threads} I/O threads");
            }
            server
                .set_io_threads(threads)
                .map_err(|source| settings.error(Some(index), Problem::IoThreads { threads, source }))?;
            servers.push(server);
        }
        Ok(Service { exports, servers, state })
    }

    /// Does every check [`open`](Self::open) does except opening raw sockets (which needs
    /// privilege); returns each export's settings and size in sectors.
    pub fn check(settings: &Settings) -> Result<Vec<(ExportSettings, u64)>, SettingsError> {
        let (exports, _, _) = prepare(settings)?;
        Ok(exports
            .into_iter()
            .map(|(s, shared)| {
                let sectors = shared.lock().unwrap_or_else(|e| e.into_inner()).sectors();
                (s, sectors)
            })
            .collect())
    }

    /// The exports, each with its settings.
    pub fn exports(&self) -> &[(ExportSettings, SharedExport<FileExport>)] {
        &self.exports
    }

    /// Announces every export on each of its interfaces and logs one line per export and
    /// interface, then serves, one thread per interface, until `stop` is set or a server
    /// fails (which sets `stop` for the others). Every backend is flushed before returning.
    ///
    /// Returns the first error: a server's I/O error, else a flush error.
    pub fn run(self, stop: &AtomicBool) -> io::Result<()> {
        let Service { exports, mut servers, state } = self;
        for server in &mut servers {
            server.announce()?;
            let port = server.port();
            for (settings, shared) in &exports {
                if !settings.interfaces.iter().any(|i| i == server.transport().name()) {
                    continue;
                }
                let export = shared.lock().unwrap_or_else(|e| e.into_inner());
                tracing::info!(
                    "{} on {} ({}): {} sectors, {} sectors/frame, bufcnt {}, file {} ({})",
                    settings.name(),
                    server.transport().name(),
                    port.mac,
                    export.sectors(),
                    port.max_sectors,
                    settings.buffer_count,
                    settings.file.display(),
                    describe(settings, export.config().read_only),
                );
            }
        }
        let first_error: Mutex<Option<io::Error>> = Mutex::new(None);
        let keeper = state.map(|dir| StateKeeper::new(dir, &exports));
        thread::scope(|scope| {
            if let Some(keeper) = &keeper {
                let exports = &exports;
                let spawned = thread::Builder::new()
                    .name("aoe-state".into())
                    .spawn_scoped(scope, move || keeper.run(exports, stop));
                if let Err(e) = spawned {
                    stop.store(true, Ordering::Relaxed);
                    first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                }
            }
            for mut server in servers {
                let first_error = &first_error;
                let name = format!("aoe-{}", server.transport().name());
                let spawned = thread::Builder::new().name(name).spawn_scoped(scope, move || {
                    let interface = server.transport().name().to_owned();
                    tracing::debug!("serving on {interface}");
                    if let Err(e) = serve(&mut server, stop) {
                        let e = io::Error::new(e.kind(), format!("{interface}: {e}"));
                        tracing::error!("{e}");
                        first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                    tracing::debug!("stopped serving on {interface}");
                });
                if let Err(e) = spawned {
                    stop.store(true, Ordering::Relaxed);
                    first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                }
            }
        });
        let mut first_error = first_error.into_inner().unwrap_or_else(|e| e.into_inner());
        for (settings, shared) in &exports {
            let export = shared.lock().unwrap_or_else(|e| e.into_inner());
            match export.backend().flush() {
                Ok(()) => tracing::debug!("{}: flushed {}", settings.name(), settings.file.display()),
                Err(e) => {
                    tracing::error!("{}: flushing {}: {e}", settings.name(), settings.file.display());
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// How often the state keeper looks for changed config strings and lists.
const STATE_POLL: Duration = Duration::from_millis(100);

/// Saves each export's config string and lists when an initiator changed them.
struct StateKeeper {
    dir: StateDir,
    /// The state version last saved, per export; `None` before the first save.
    saved: Mutex<Vec<Option<u64>>>,
}

impl StateKeeper {
    fn new(dir: StateDir, exports: &[(ExportSettings, SharedExport<FileExport>)]) -> Self {
        let versions =
            exports.iter().map(|(_, e)| Some(e.lock().unwrap_or_else(|e| e.into_inner()).state_version()));
        StateKeeper { dir, saved: Mutex::new(versions.collect()) }
    }

    /// Saves what changed every [`STATE_POLL`] until `stop`, then once more.
    fn run(&self, exports: &[(ExportSettings, SharedExport<FileExport>)], stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(STATE_POLL);
            self.save_changed(exports);
        }
        self.save_changed(exports);
    }

    fn save_changed(&self, exports: &[(ExportSettings, SharedExport<FileExport>)]) {
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        for ((settings, shared), last) in exports.iter().zip(saved.iter_mut()) {
            let (version, state) = {
                let export = shared.lock().unwrap_or_else(|e| e.into_inner());
                if Some(export.state_version()) == *last {
                    continue;
                }
                (export.state_version(), export.state())
            };
            let name = settings.name();
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
