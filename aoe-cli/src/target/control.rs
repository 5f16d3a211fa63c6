//! The control socket of a running `aoe-target`, and `aoe-target ctl`, which talks to it.
//!
//! The socket is a Unix stream socket (mode 0600) at [`Settings::control_path`] (with
//! `--config`, `/run/aoe-target/NAME.sock` unless the file says `control = "PATH"`). A client
//! sends one line, `status`, `stats` or `reload`, and reads one JSON object back: `{"ok":
//! true, ...}` or `{"ok": false, "error": "..."}`. Only root and the user the target runs as
//! are answered: the peer's user is checked with `SO_PEERCRED`.
//!
//! [`Settings::control_path`]: super::settings::Settings::control_path

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use aoe_target::export::{
    Command, ExportSnapshot, ExportStats, IgnoreReason, ServerSnapshot, ServerStats, LATENCY_BUCKETS,
};

use super::settings::ExportSettings;

/// What the running target shows of itself to the metrics endpoint and the control socket:
/// its exports and interfaces with their counters. The service replaces it on every reload.
#[derive(Debug)]
pub struct View {
    config: Option<PathBuf>,
    started: Instant,
    now: Mutex<Serving>,
}

/// The exports and interfaces served now.
#[derive(Debug, Default, Clone)]
pub struct Serving {
    /// Each export, its size in sectors and its counters.
    pub exports: Vec<(ExportSettings, u64, Arc<ExportStats>)>,
    /// Each interface and its counters.
    pub interfaces: Vec<(String, Arc<ServerStats>)>,
}

impl View {
    /// A view of a target serving the configuration file `config` (`None`: the command line).
    pub fn new(config: Option<PathBuf>) -> Self {
        View { config, started: Instant::now(), now: Mutex::default() }
    }

    /// Shows `serving` from now on.
    pub fn set(&self, serving: Serving) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = serving;
    }

    fn serving(&self) -> Serving {
        self.now.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every export's and interface's counters now.
    pub fn snapshots(&self) -> (Vec<ExportSnapshot>, Vec<(String, ServerSnapshot)>) {
        let serving = self.serving();
        (
            serving.exports.iter().map(|(_, _, stats)| stats.snapshot()).collect(),
            serving.interfaces.iter().map(|(name, stats)| (name.clone(), stats.snapshot())).collect(),
        )
    }

    /// Status and counters as the control socket answers them.
    pub fn to_json(&self) -> Value {
        let serving = self.serving();
        let exports: Vec<Value> = serving
            .exports
            .iter()
            .map(|(settings, sectors, stats)| {
                let s = stats.snapshot();
                let requests: serde_json::Map<String, Value> =
                    Command::ALL.iter().map(|&c| (c.name().to_owned(), json!(s.requests[c as usize]))).collect();
                let ignored: serde_json::Map<String, Value> =
                    IgnoreReason::ALL.iter().map(|&r| (r.name().to_owned(), json!(s.ignored[r as usize]))).collect();
                let buckets: Vec<Value> = s
                    .latency
                    .iter()
                    .enumerate()
                    .map(|(i, n)| json!([LATENCY_BUCKETS.get(i).copied().map_or(json!("+Inf"), |b| json!(b)), n]))
                    .collect();
                json!({
                    "name": s.name,
                    "file": settings.file,
                    "offset": settings.offset,
                    "sectors": sectors,
                    "interfaces": settings.interfaces,
                    "read_only": settings.read_only,
                    "buffer_count": settings.buffer_count,
                    "read_bytes": s.read_bytes,
                    "written_bytes": s.written_bytes,
                    "requests": requests,
                    "ata_errors": s.ata_errors,
                    "aoe_errors": s.aoe_errors,
                    "ignored": ignored,
                    "backend_errors": {
                        "read": s.backend_errors[0], "write": s.backend_errors[1], "flush": s.backend_errors[2],
                    },
                    "in_flight": s.in_flight,
                    "latency": {
                        "count": s.latency_count(),
                        "sum_seconds": s.latency_sum.as_secs_f64(),
                        "buckets": buckets,
                    },
                })
            })
            .collect();
        let interfaces: Vec<Value> = serving
            .interfaces
            .iter()
            .map(|(name, stats)| {
                let s = stats.snapshot();
                json!({
                    "name": name, "received": s.received, "sent": s.sent,
                    "send_failures": s.send_failures, "malformed": s.malformed,
                })
            })
            .collect();
        json!({
            "ok": true,
            "pid": std::process::id(),
            "config": self.config,
            "uptime_seconds": self.started.elapsed().as_secs(),
            "exports": exports,
            "interfaces": interfaces,
        })
    }
}

/// A request the control socket passes to the service's main loop.
#[derive(Debug)]
pub enum Request {
    /// Re-read the configuration file; the answer says what changed, or why it was refused.
    Reload(mpsc::Sender<Result<String, String>>),
}

/// The listening control socket; the socket file is removed when it is dropped.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
}

/// How long a `reload` waits for the service to answer.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);

impl ControlSocket {
    /// Listens at `path` (its folder is created if missing) and answers from a thread of its
    /// own. A live socket already there (another target's) is an error; a stale one is
    /// replaced.
    pub fn start(path: &Path, view: Arc<View>, requests: mpsc::Sender<Request>) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "another aoe-target listens there"));
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let owner = rustix::process::geteuid().as_raw();
        let requests = Mutex::new(requests);
        thread::Builder::new().name("aoe-control".into()).spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, owner, &view, &requests) {
                            tracing::debug!("control socket: {e}");
                        }
                    }
                    Err(e) => tracing::debug!("control socket: {e}"),
                }
            }
        })?;
        Ok(ControlSocket { path: path.to_owned() })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answers one client: checks who it is, reads its line, writes the answer.
fn answer(
    stream: UnixStream,
    owner: u32,
    view: &View,
    requests: &Mutex<mpsc::Sender<Request>>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = stream.try_clone()?;
    let uid = rustix::net::sockopt::socket_peercred(&stream)?.uid.as_raw();
    // The request is read first, so that a refused client reads the refusal rather than
    // find the socket closed while it writes.
    let mut line = String::new();
    BufReader::new(&stream).take_line(&mut line)?;
    if uid != 0 && uid != owner {
        tracing::warn!(
            "control socket: refused user {uid}: only root and the user the target runs as are answered"
        );
        let refused = json!({"ok": false, "error": format!("permission denied: user {uid} may not use this control socket")});
        return writeln!(writer, "{refused}");
    }
    let reply = match line.trim() {
        "status" | "stats" => view.to_json(),
        "reload" => {
            let (tx, rx) = mpsc::channel();
            let sent = requests.lock().unwrap_or_else(|e| e.into_inner()).send(Request::Reload(tx));
            match sent.ok().and_then(|()| rx.recv_timeout(RELOAD_TIMEOUT).ok()) {
                Some(Ok(summary)) => json!({"ok": true, "reloaded": summary}),
                Some(Err(error)) => json!({"ok": false, "error": error}),
                None => json!({"ok": false, "error": "the target did not answer the reload"}),
            }
        }
        other => json!({"ok": false, "error": format!("unknown request {other:?}: status, stats or reload")}),
    };
    writeln!(writer, "{reply}")
}

/// Reads one line of at most 1 KiB.
trait TakeLine {
    fn take_line(&mut self, line: &mut String) -> io::Result<usize>;
}

impl<R: BufRead> TakeLine for R {
    fn take_line(&mut self, line: &mut String) -> io::Result<usize> {
        io::Read::take(self, 1024).read_line(line)
    }
}

/// Sends `request` to the control socket at `path` and returns its answer.
pub fn ask(path: &Path, request: &str) -> Result<Value, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot connect to the control socket {}: {e} (is aoe-target running? see --socket)",
            path.display()
        )
    })?;
    let io_error = |e: io::Error| format!("control socket {}: {e}", path.display());
    stream.set_read_timeout(Some(RELOAD_TIMEOUT + Duration::from_secs(5))).map_err(io_error)?;
    // A refusal may come before the request is taken: it is read even when writing failed.
    let written = writeln!(stream, "{request}");
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).map_err(io_error)?;
    if line.is_empty() {
        written.map_err(io_error)?;
    }
    let value: Value = serde_json::from_str(&line)
        .map_err(|e| format!("control socket {}: not an answer ({e}): {line:?}", path.display()))?;
    if value["ok"] == json!(true) {
        Ok(value)
    } else {
        Err(value["error"].as_str().unwrap_or("refused").to_owned())
    }
}
