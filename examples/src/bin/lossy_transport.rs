//! A custom transport: a wrapper around any other that counts the frames going each way and
//! drops every tenth frame it receives. An initiator on it still moves every byte intact
//! (it retransmits what was lost), and the counters show what happened.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aoe_initiator::{Device, DeviceOptions};
use aoe_proto::MacAddr;
use aoe_target::backend::MemoryBackend;
use aoe_target::export::{Export, ExportConfig};
use aoe_target::server::Server;
use aoe_transport::memory::pair;
use aoe_transport::{FrameBatch, Transport};

/// Counters shared with whoever wants to read them while the transport is in use.
#[derive(Debug, Default)]
struct Counts {
    sent: u64,
    received: u64,
    dropped: u64,
}

/// Any transport, counted, losing every `drop_every`-th received frame.
struct Lossy<T> {
    inner: T,
    drop_every: u64,
    counts: Arc<Mutex<Counts>>,
    /// Where frames land before the kept ones are copied out; allocated once.
    scratch: Option<FrameBatch>,
}

impl<T: Transport> Transport for Lossy<T> {
    fn recv_batch(&mut self, batch: &mut FrameBatch, timeout: Option<Duration>) -> io::Result<usize> {
        let scratch =
            self.scratch.get_or_insert_with(|| FrameBatch::new(batch.capacity(), batch.frame_capacity()));
        scratch.clear();
        self.inner.recv_batch(scratch, timeout)?;
        batch.clear();
        let mut counts = self.counts.lock().unwrap();
        for frame in scratch.iter() {
            counts.received += 1;
            if counts.received % self.drop_every == 0 {
                counts.dropped += 1;
            } else {
                batch.push(frame);
            }
        }
        Ok(batch.len())
    }

    fn send_batch(&mut self, batch: &FrameBatch) -> io::Result<usize> {
        let sent = self.inner.send_batch(batch)?;
        self.counts.lock().unwrap().sent += sent as u64;
        Ok(sent)
    }

    fn mac(&self) -> MacAddr {
        self.inner.mac()
    }

    fn mtu(&self) -> usize {
        self.inner.mtu()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inner.readiness_fd()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (target_port, initiator_port) = pair(9000, MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    let export = Arc::new(Mutex::new(Export::new(ExportConfig::new(1, 0), MemoryBackend::new(8 << 20))));
    let stop = Arc::new(AtomicBool::new(false));
    let mut server = Server::new(target_port, vec![export]);
    let serving = std::thread::spawn({
        let stop = stop.clone();
        move || server.run(&stop)
    });

    let counts = Arc::new(Mutex::new(Counts::default()));
    let lossy = Lossy { inner: initiator_port, drop_every: 10, counts: counts.clone(), scratch: None };
    let options = DeviceOptions { rto_initial: Duration::from_millis(5), ..DeviceOptions::default() };
    let mut device = Device::open(vec![Box::new(lossy)], 1, 0, &options)?;

    let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    device.write_at(&data, 0)?;
    let mut back = vec![0u8; data.len()];
    device.read_at(&mut back, 0)?;
    assert_eq!(back, data, "every byte survives the loss");

    let counts = counts.lock().unwrap();
    println!(
        "moved {} MiB both ways intact: {} frames sent, {} received, {} dropped, {} retransmitted",
        data.len() >> 20,
        counts.sent,
        counts.received,
        counts.dropped,
        device.stats().retransmitted
    );
    stop.store(true, Ordering::Relaxed);
    serving.join().expect("server thread")?;
    Ok(())
}
