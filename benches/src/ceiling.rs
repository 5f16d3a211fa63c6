//! The link ceiling: how many full-size AoE frames per second one link carries from an
//! [`AfPacket`] sender (`send_batch` of 64 frames at a time, as fast as it can) to an
//! [`AfPacket`] receiver that only counts what `recv_batch` hands it.
//!
//! No target can answer faster than this over the same link with the same transport, so it
//! is the yardstick for the target figures. [`best`] tries a few sender windows and keeps the
//! highest rate. The frames are read answers carrying the most
//! sectors the MTU allows, so `frames/s × sectors × 512` is the sector data rate at the
//! ceiling.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use aoe_proto::{AtaRepr, BodyRepr, Flags, FrameRepr, HeaderRepr, MacAddr, SECTOR_SIZE};
use aoe_testkit::netns::Netns;
use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
use aoe_transport::{FrameBatch, Transport};

/// Frames per `send_batch` / `recv_batch` call.
const BATCH: usize = 64;

/// One ceiling measurement.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Ceiling {
    /// Link MTU.
    pub mtu: usize,
    /// Ethernet frame length sent (without FCS).
    pub frame_len: usize,
    /// Sectors each frame carries.
    pub sectors: u8,
    /// Frames the sender handed to the kernel.
    pub sent: u64,
    /// Frames the receiver counted within the window.
    pub received: u64,
    /// Length of the receiver's counting window, in seconds.
    pub seconds: f64,
    /// Most frames the sender had sent beyond what the receiver had counted; `None` for
    /// an unbounded sender.
    pub window: Option<u64>,
}

impl Ceiling {
    /// Frames received per second.
    pub fn frames_per_s(&self) -> f64 {
        self.received as f64 / self.seconds.max(1e-9)
    }

    /// Sector data at that rate, in decimal MB/s.
    pub fn sector_mb_per_s(&self) -> f64 {
        self.frames_per_s() * f64::from(self.sectors) * SECTOR_SIZE as f64 / 1e6
    }
}

fn open(ns: &Netns, ifname: &str) -> io::Result<AfPacket> {
    ns.enter(|| AfPacket::open(ifname, AfPacketOptions::default())).map_err(io::Error::other)
}

/// Measures the ceiling from `sender_if` in namespace `sender` to `receiver_if` in
/// `receiver`: the receiver counts for `duration` from the first frame it sees.
///
/// With a `window`, the sender waits while it is more than that many frames ahead of the
/// receiver's count. An unbounded sender overruns the receiver's socket: the frames the
/// kernel then builds and drops cost CPU the receiver lacks on a small machine (at MTU 9000
/// on 2 cores, half the frames are lost and the count falls by about 40%), so a window of a
/// batch or two finds the higher rate.
pub fn measure(
    sender: &Netns,
    sender_if: &str,
    receiver: &Netns,
    receiver_if: &str,
    duration: Duration,
    window: Option<u64>,
) -> io::Result<Ceiling> {
    let mut tx = open(sender, sender_if)?;
    let mtu = tx.mtu();
    let sectors = aoe_proto::max_sectors(mtu);
    let done = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<MacAddr>>();
    let ifname = receiver_if.to_owned();
    let counter = receiver.spawn_thread({
        let (done, counted) = (done.clone(), counted.clone());
        move || -> io::Result<(u64, f64)> {
            let mut rx = match AfPacket::open(&ifname, AfPacketOptions::default()) {
                Ok(rx) => rx,
                Err(e) => {
                    let _ = ready_tx.send(Err(io::Error::other(e)));
                    return Ok((0, 0.0));
                }
            };
            let _ = ready_tx.send(Ok(rx.mac()));
            let result = count_frames(&mut rx, duration, &counted);
            done.store(true, Ordering::Relaxed);
            result
        }
    });
    let dst = match ready_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(mac)) => mac,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            done.store(true, Ordering::Relaxed);
            return Err(io::Error::other("the ceiling receiver did not start"));
        }
    };

    let mut batch = FrameBatch::new(BATCH, 14 + mtu);
    let data = vec![0u8; usize::from(sectors) * SECTOR_SIZE];
    let repr = FrameRepr {
        dst,
        src: tx.mac(),
        header: HeaderRepr { flags: Flags::RESPONSE, error: 0, shelf: 1, slot: 0, tag: 0 },
        body: BodyRepr::Ata { header: AtaRepr::read(0, sectors, true), data: &data },
    };
    let mut frame_len = 0;
    while batch.push_with(|buf| {
        frame_len = repr.emit_padded(buf).unwrap_or(0);
        frame_len
    }) && !batch.is_full()
    {}
    // Bounded even if the receiver never sees a frame: it gives up after its own timeout.
    let give_up = Instant::now() + duration + Duration::from_secs(10);
    let mut sent = 0u64;
    let mut send_error = None;
    while !done.load(Ordering::Relaxed) && Instant::now() < give_up {
        if window.is_some_and(|w| sent.saturating_sub(counted.load(Ordering::Relaxed)) > w) {
            std::thread::yield_now();
            continue;
        }
        match tx.send_batch(&batch) {
            Ok(n) => sent += n as u64,
            Err(e) => {
                send_error = Some(e);
                break;
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let (received, seconds) =
        counter.join().map_err(|_| io::Error::other("the ceiling receiver panicked"))??;
    if let Some(e) = send_error {
        return Err(e);
    }
    Ok(Ceiling { mtu, frame_len, sectors, sent, received, seconds, window })
}

/// Counts frames for `duration` from the first one, publishing the running total (first
/// batch included) in `counted`; gives up after 5 s without any.
fn count_frames(rx: &mut AfPacket, duration: Duration, counted: &AtomicU64) -> io::Result<(u64, f64)> {
    let mut batch = FrameBatch::new(BATCH, 14 + rx.mtu());
    let first_wait = Instant::now() + Duration::from_secs(5);
    let start = loop {
        let n = rx.recv_batch(&mut batch, Some(Duration::from_millis(50)))?;
        if n > 0 {
            counted.fetch_add(n as u64, Ordering::Relaxed);
            break Instant::now();
        }
        if Instant::now() >= first_wait {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no frame reached the ceiling receiver"));
        }
    };
    let end = start + duration;
    let mut count = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            return Ok((count, now.duration_since(start).as_secs_f64()));
        }
        let n = rx.recv_batch(&mut batch, Some(end - now))? as u64;
        counted.fetch_add(n, Ordering::Relaxed);
        count += n;
    }
}

/// Windows [`best`] tries: one and two batches.
pub const WINDOWS: [u64; 2] = [BATCH as u64, 2 * BATCH as u64];

/// The highest rate [`measure`] finds over [`WINDOWS`], each measured for `duration`.
pub fn best(
    sender: &Netns,
    sender_if: &str,
    receiver: &Netns,
    receiver_if: &str,
    duration: Duration,
) -> io::Result<Ceiling> {
    let mut best: Option<Ceiling> = None;
    for w in WINDOWS {
        let c = measure(sender, sender_if, receiver, receiver_if, duration, Some(w))?;
        if best.is_none_or(|b| c.frames_per_s() > b.frames_per_s()) {
            best = Some(c);
        }
    }
    best.ok_or_else(|| io::Error::other("no ceiling window"))
}
