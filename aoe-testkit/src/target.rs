//! Our target engine as a peer: `aoe_target::server::Server`s on interfaces of a namespace,
//! one thread each, and file-backed exports for them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use aoe_target::backend::{Backend, FileBackend, FileOptions};
use aoe_target::export::{Export, ExportConfig};
use aoe_target::server::{Server, SharedExport};
use aoe_transport::afpacket::{AfPacket, AfPacketOptions};

use crate::netns::Netns;

/// Servers of our target engine, one thread per interface, each inside its namespace.
/// Stopped (through an `AtomicBool`) and joined by [`Targets::stop`] or on drop.
#[derive(Default)]
pub struct Targets {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Targets {
    /// Serves `exports` on `ifname` of `ns`; returns once the socket is open and the exports
    /// were announced.
    ///
    /// # Panics
    /// If the server does not start within 10 s. A server that fails later panics on its
    /// thread, which [`Targets::stop`] raises.
    pub fn serve<B: Backend + 'static>(&mut self, ns: &Netns, ifname: &str, exports: Vec<SharedExport<B>>) {
        let stop = self.stop.clone();
        let ifname = ifname.to_owned();
        let (ready_tx, ready_rx) = mpsc::channel();
        self.threads.push(ns.spawn_thread(move || {
            // As aoe-target opens it.
            let opts = AfPacketOptions { rx_ring: true, ..AfPacketOptions::default() };
            let port =
                AfPacket::open(&ifname, opts).unwrap_or_else(|e| panic!("target socket on {ifname}: {e}"));
            let mut server = Server::new(port, exports);
            server.announce().unwrap_or_else(|e| panic!("announcing on {ifname}: {e}"));
            ready_tx.send(()).unwrap();
            loop {
                match server.run(&stop) {
                    Ok(()) => return,
                    // Reported once each time the interface goes down: keep serving it, as the
                    // aoe-target program does.
                    Err(e) if e.kind() == std::io::ErrorKind::NetworkDown => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => panic!("target server on {ifname}: {e}"),
                }
            }
        }));
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("target server thread did not start");
    }

    /// Stops every server and waits for the threads; a server's panic is raised here.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            if let Err(panic) = t.join() {
                if !std::thread::panicking() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An export of `file` at `shelf.slot`, shared by the servers of every interface.
///
/// # Panics
/// If the file cannot be opened.
pub fn file_export(shelf: u16, slot: u8, file: &std::path::Path) -> SharedExport<FileBackend> {
    let backend = FileBackend::open(file, FileOptions::default()).expect("opening the image");
    Arc::new(Mutex::new(Export::new(ExportConfig::new(shelf, slot), backend)))
}
