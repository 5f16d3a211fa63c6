//! The loop at the edge: transport → engine → transport, in batches.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aoe_transport::{FrameBatch, Transport};

use crate::backend::Backend;
use crate::export::{Export, Port};

/// Frames received or sent per system call.
pub const BATCH_FRAMES: usize = 64;
/// How often [`Server::run`] looks at its stop flag when the link is idle.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// An export shared by the servers of every interface it is offered on.
pub type SharedExport<B> = Arc<Mutex<Export<B>>>;

/// Serves a set of exports on one transport (one interface).
pub struct Server<T, B> {
    transport: T,
    exports: Vec<SharedExport<B>>,
    port: Port,
    rx: FrameBatch,
    tx: FrameBatch,
}

fn lock<B>(export: &SharedExport<B>) -> MutexGuard<'_, Export<B>> {
    // An export's state stays consistent across a panic in another thread's I/O call.
    export.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: Transport, B: Backend> Server<T, B> {
    /// A server for `exports` on `transport`; answers advertise the transport's MTU.
    pub fn new(transport: T, exports: Vec<SharedExport<B>>) -> Self {
        let port = Port::new(transport.mac(), transport.mtu());
        let frame_capacity = 14 + transport.mtu();
        Server {
            transport,
            exports,
            port,
            rx: FrameBatch::new(BATCH_FRAMES, frame_capacity),
            tx: FrameBatch::new(BATCH_FRAMES, frame_capacity),
        }
    }

    /// The port answers are sent from.
    pub fn port(&self) -> Port {
        self.port
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Broadcasts every export's query-config answer, as a target does when it starts.
    pub fn announce(&mut self) -> io::Result<()> {
        self.tx.clear();
        for export in &self.exports {
            let export = lock(export);
            self.tx.push_with(|slot| export.announce(&self.port, slot).unwrap_or(0));
        }
        send_answers(&mut self.transport, &mut self.tx)
    }

    /// Receives one batch (waiting at most `timeout`), answers it and sends the answers.
    /// Returns the number of frames received.
    pub fn poll(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let received = self.transport.recv_batch(&mut self.rx, timeout)?;
        self.tx.clear();
        for frame in self.rx.iter() {
            for export in &self.exports {
                let mut export = lock(export);
                if self.tx.is_full() {
                    send_answers(&mut self.transport, &mut self.tx)?;
                }
                self.tx.push_with(|slot| export.handle(&self.port, frame, slot).unwrap_or(0));
            }
        }
        if !self.tx.is_empty() {
            send_answers(&mut self.transport, &mut self.tx)?;
        }
        Ok(received)
    }

    /// Serves until `stop` is set, then returns.
    pub fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            self.poll(Some(IDLE_POLL))?;
        }
        Ok(())
    }
}

/// Sends and clears the answer batch. Answers the link does not take are lost as on
/// the wire (the initiator retransmits): a congested link or a vanished peer must not
/// stop the target. Only the interface going down is reported, so that the caller can
/// wait for it to come back.
fn send_answers<T: Transport>(transport: &mut T, tx: &mut FrameBatch) -> io::Result<()> {
    let result = transport.send_batch(tx);
    let queued = tx.len();
    tx.clear();
    match result {
        Ok(sent) if sent < queued => {
            tracing::debug!(link = transport.name(), lost = queued - sent, "answers not sent");
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NetworkDown => Err(e),
        Err(e) => {
            tracing::debug!(link = transport.name(), lost = queued, "answers not sent: {e}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::export::ExportConfig;
    use aoe_proto::{
        AtaRepr, Body, BodyRepr, ConfigCommand, ConfigRepr, Frame, FrameRepr, HeaderRepr, MacAddr,
    };
    use aoe_transport::memory;

    const T: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const I: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn export(shelf: u16, slot: u8) -> SharedExport<MemoryBackend> {
        Arc::new(Mutex::new(Export::new(ExportConfig::new(shelf, slot), MemoryBackend::new(1 << 20))))
    }

    #[test]
    fn answers_a_batch_and_broadcasts_reach_every_export() {
        let (target_port, mut host) = memory::pair(9000, T, I);
        let mut server = Server::new(target_port, vec![export(1, 0), export(1, 1)]);
        let mut out = FrameBatch::new(BATCH_FRAMES, 9014);
        out.push_with(|buf| {
            FrameRepr {
                dst: MacAddr::BROADCAST,
                src: I,
                header: HeaderRepr::request(0xFFFF, 0xFF, 1),
                body: BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b"")),
            }
            .emit_padded(buf)
            .unwrap()
        });
        for tag in 0..40u32 {
            out.push_with(|buf| {
                FrameRepr {
                    dst: T,
                    src: I,
                    header: HeaderRepr::request(1, 1, 100 + tag),
                    body: BodyRepr::Ata { header: AtaRepr::read(u64::from(tag), 17, true), data: &[] },
                }
                .emit_padded(buf)
                .unwrap()
            });
        }
        host.send_batch(&out).unwrap();
        assert_eq!(server.poll(Some(Duration::from_secs(1))).unwrap(), 41);
        let mut inbox = FrameBatch::new(BATCH_FRAMES, 9014);
        let mut tags = Vec::new();
        while host.recv_batch(&mut inbox, Some(Duration::from_millis(50))).unwrap() > 0 {
            for f in inbox.iter() {
                let f = Frame::parse(f).unwrap();
                if let Body::Ata { data, .. } = f.body {
                    assert_eq!(data.len(), 17 * 512);
                }
                tags.push(f.header.tag());
            }
        }
        let mut expect: Vec<u32> = vec![1, 1];
        expect.extend(100..140);
        assert_eq!(tags, expect, "two config answers, then every read in order");
    }

    /// A link whose sends fail as a congested or vanished peer makes them fail.
    struct SendFails(memory::MemoryPort, io::ErrorKind);

    impl Transport for SendFails {
        fn recv_batch(&mut self, batch: &mut FrameBatch, timeout: Option<Duration>) -> io::Result<usize> {
            self.0.recv_batch(batch, timeout)
        }
        fn send_batch(&mut self, _: &FrameBatch) -> io::Result<usize> {
            Err(io::Error::from(self.1))
        }
        fn mac(&self) -> MacAddr {
            self.0.mac()
        }
        fn mtu(&self) -> usize {
            self.0.mtu()
        }
        fn name(&self) -> &str {
            self.0.name()
        }
    }

    /// Regression: a failed send of answers stopped the server (and so the target).
    #[test]
    fn answers_the_link_refuses_are_lost_not_fatal() {
        let (target_port, mut host) = memory::pair(1500, T, I);
        let mut server = Server::new(SendFails(target_port, io::ErrorKind::OutOfMemory), vec![export(1, 0)]);
        let mut out = FrameBatch::new(1, 1514);
        out.push_with(|buf| {
            FrameRepr {
                dst: T,
                src: I,
                header: HeaderRepr::request(1, 0, 1),
                body: BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b"")),
            }
            .emit_padded(buf)
            .unwrap()
        });
        host.send_batch(&out).unwrap();
        assert_eq!(server.poll(Some(Duration::from_secs(1))).unwrap(), 1);
        // An interface that went down is still reported, for the caller to wait on.
        server.transport.1 = io::ErrorKind::NetworkDown;
        host.send_batch(&out).unwrap();
        assert_eq!(server.poll(Some(Duration::from_secs(1))).unwrap_err().kind(), io::ErrorKind::NetworkDown);
    }
}
