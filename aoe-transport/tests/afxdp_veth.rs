//! `XdpSender` over a veth pair whose ends live in two fresh network namespaces, received by an
//! `AfPacket` on the other end.
//!
//! Needs root. Without it each test prints a SKIP line and passes, unless
//! `AOE_REQUIRE_NETNS=1` is set, when it fails instead.

#![cfg(target_os = "linux")]
// geteuid, setns and mmap have no safe wrappers in std.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
use aoe_transport::afxdp::{XdpOpenError, XdpOptions, XdpSender};
use aoe_transport::{FrameBatch, Transport};
use common::{have_root, ip, VethPair, IF_A, IF_B, MAC_A, MAC_B};

const MTU: usize = 1500;
const WAIT: Duration = Duration::from_secs(5);

impl VethPair {
    fn xdp_a(&self, opts: XdpOptions) -> Result<XdpSender, XdpOpenError> {
        Self::within(&self.a, || XdpSender::open(IF_A, opts))
    }

    fn packet_a(&self) -> AfPacket {
        Self::within(&self.a, || AfPacket::open(IF_A, AfPacketOptions::default())).unwrap()
    }

    /// `IF_B` with a receive ring of 4 MiB, so that the receiver keeps up as well as it can.
    fn packet_b(&self) -> AfPacket {
        let opts = AfPacketOptions { rx_ring: true, ..AfPacketOptions::default() };
        let b = Self::within(&self.b, || AfPacket::open(IF_B, opts)).unwrap();
        assert!(b.has_rx_ring(), "the kernel refused the receive ring");
        b
    }
}

/// An AoE frame from A to B of `len` bytes, filled with a pattern of `id`.
fn frame(id: u32, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u32).wrapping_mul(31) as u8 ^ id as u8).collect();
    f[..6].copy_from_slice(&MAC_B.0);
    f[6..12].copy_from_slice(&MAC_A.0);
    f[12..14].copy_from_slice(&0x88A2u16.to_be_bytes());
    if len >= 18 {
        f[14..18].copy_from_slice(&id.to_be_bytes());
    }
    f
}

fn batch_of(frames: &[Vec<u8>]) -> FrameBatch {
    let mut b = FrameBatch::new(frames.len(), 14 + MTU);
    for f in frames {
        assert!(b.push(f));
    }
    b
}

/// Receives until `want` frames arrived or `WAIT` passed.
fn recv_frames(t: &mut impl Transport, want: usize) -> Vec<Vec<u8>> {
    let mut batch = FrameBatch::new(32, 14 + MTU);
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || t.recv_batch(&mut batch, Some(left)).unwrap() == 0 {
            break;
        }
        got.extend(batch.iter().map(<[u8]>::to_vec));
    }
    got
}

#[test]
fn mixed_size_batch_arrives_intact_and_in_order() {
    if !have_root("mixed_size_batch_arrives_intact_and_in_order") {
        return;
    }
    let veth = VethPair::new("aoexdp", MTU);
    let mut a = veth.xdp_a(XdpOptions::default()).unwrap();
    let mut b = veth.packet_b();
    assert_eq!((a.mac(), a.mtu(), a.name()), (MAC_A, MTU, IF_A));
    let frames: Vec<Vec<u8>> = (0..64u32).map(|i| frame(i, 60 + i as usize * (1514 - 60) / 63)).collect();
    assert_eq!(frames.last().unwrap().len(), 1514);
    for round in 0..3 {
        assert_eq!(a.send_batch(&batch_of(&frames)).unwrap(), 64);
        let got = recv_frames(&mut b, 64);
        assert_eq!(got.len(), 64, "round {round}");
        for (i, (g, f)) in got.iter().zip(&frames).enumerate() {
            assert!(g == f, "round {round}: frame {i} differs");
        }
    }
    let stats = a.stats();
    assert_eq!((stats.queued, stats.bad_length, stats.unreadable_tail), (192, 0, 0));
    // The sender receives nothing; it waits out the timeout.
    let mut inbox = FrameBatch::new(8, 14 + MTU);
    let start = Instant::now();
    assert_eq!(a.recv_batch(&mut inbox, Some(Duration::from_millis(50))).unwrap(), 0);
    assert!(start.elapsed() >= Duration::from_millis(50));
}

/// Many times more frames than the UMEM has chunks: chunks come back through the completion
/// ring and are used again, and nothing is lost or corrupted on the way. The sender keeps at
/// most `window` frames ahead of the receiver, as an initiator's window would, so that the
/// receiver's buffer does not overflow on two shared cores.
fn frames_recycle_chunks(opts: XdpOptions, count: u32) {
    let veth = VethPair::new("aoexdp", MTU);
    let mut a = veth.xdp_a(opts.clone()).unwrap();
    let mut b = veth.packet_b();
    let len_of = |id: u32| 60 + (id as usize * 7919) % (1514 - 60 + 1);
    let received = Arc::new(AtomicUsize::new(0));
    let rx = {
        let received = Arc::clone(&received);
        std::thread::spawn(move || {
            let mut batch = FrameBatch::new(64, 14 + MTU);
            let (mut last, mut bad) = (None::<u32>, 0);
            while b.recv_batch(&mut batch, Some(Duration::from_millis(500))).unwrap() > 0 {
                for f in batch.iter() {
                    let id = u32::from_be_bytes(f[14..18].try_into().unwrap());
                    if f != frame(id, len_of(id)) || last.is_some_and(|l| id <= l) {
                        bad += 1;
                    }
                    last = Some(id);
                }
                received.fetch_add(batch.len(), Ordering::Relaxed);
            }
            bad
        })
    };
    let window = 1024;
    let start = Instant::now();
    let mut sent = 0usize;
    let mut batch = FrameBatch::new(64, 14 + MTU);
    while sent < count as usize {
        batch.clear();
        for id in sent as u32..(sent as u32 + 64).min(count) {
            batch.push(&frame(id, len_of(id)));
        }
        let t = Instant::now();
        assert_eq!(a.send_batch(&batch).unwrap(), batch.len());
        assert!(t.elapsed() < Duration::from_secs(2), "one send took {:?}", t.elapsed());
        sent += batch.len();
        let paced = Instant::now();
        while sent - received.load(Ordering::Relaxed) > window && paced.elapsed() < Duration::from_millis(20)
        {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let took = start.elapsed();
    let bad = rx.join().unwrap();
    let got = received.load(Ordering::Relaxed);
    let stats = a.stats();
    eprintln!("{count} frames ({opts:?}) in {took:?}: {got} arrived, {stats:?}");
    assert_eq!(bad, 0, "frames corrupted or out of order");
    assert!(got * 100 >= count as usize * 99, "only {got} of {count} frames arrived");
    assert_eq!(stats.queued, u64::from(count));
    assert!(stats.queued - stats.completed <= u64::from(opts.chunks), "{stats:?}");
    assert!(took < Duration::from_secs(120), "sending took {took:?}");
}

#[test]
fn more_frames_than_chunks_all_arrive() {
    if have_root("more_frames_than_chunks_all_arrive") {
        frames_recycle_chunks(XdpOptions::default(), 100_000);
    }
}

/// As [`more_frames_than_chunks_all_arrive`] with the smallest UMEM and rings, so that sends
/// keep running out of chunks and waiting for the kernel to give them back.
#[test]
fn a_small_umem_recycles_its_chunks() {
    if have_root("a_small_umem_recycles_its_chunks") {
        let opts = XdpOptions { chunks: 64, tx_ring: 64, ..XdpOptions::default() };
        frames_recycle_chunks(opts, 20_000);
    }
}

/// Frames sent as a head from the batch and a tail from a mapped file arrive whole; a tail in
/// a mapping of a file truncated under it loses that frame only, without a SIGBUS; a frame
/// longer than a chunk is dropped.
#[test]
fn frames_with_mapped_tails_arrive_whole_and_unreadable_tails_lose_their_frame() {
    use std::os::unix::fs::FileExt;
    if !have_root("frames_with_mapped_tails_arrive_whole_and_unreadable_tails_lose_their_frame") {
        return;
    }
    let veth = VethPair::new("aoexdp", MTU);
    let mut a = veth.xdp_a(XdpOptions::default()).unwrap();
    let mut b = veth.packet_b();
    let path = std::env::temp_dir().join(format!("aoe-xdp-tails-{}", std::process::id()));
    let content: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let file = File::options().read(true).write(true).open(&path).unwrap();
    let map = Mapping::new(&file, content.len());
    std::fs::remove_file(&path).unwrap();
    // Changed through the descriptor after mapping: the mapping shows it.
    file.write_all_at(&[0xEE; 100], 512).unwrap();
    let mut on_disk = content.clone();
    on_disk[512..612].fill(0xEE);

    let heads: Vec<Vec<u8>> = (0..6u32).map(|i| frame(i, 36)).collect();
    let spans = [(512, 1024), (0, 512), (4000, 1478), (0, 0), (60_000, 5536), (100, 24)];
    let tails: Vec<&[u8]> = spans.iter().map(|&(at, len)| map.bytes(at, len)).collect();
    assert_eq!(a.send_with_tails(&batch_of(&heads), &tails).unwrap(), 6);
    let expect: Vec<Vec<u8>> = heads
        .iter()
        .zip(spans)
        .map(|(head, (at, len))| {
            let mut whole = head.clone();
            whole.extend_from_slice(&on_disk[at..at + len]);
            whole
        })
        .collect();
    // Frame 4 (36 + 5536 bytes) does not fit a chunk: dropped, counted as sent.
    let got = recv_frames(&mut b, 5);
    assert_eq!(got.len(), 5);
    for (i, (got, expect)) in got.iter().zip(expect.iter().take(4).chain(&expect[5..])).enumerate() {
        assert!(got == expect, "frame {i} differs");
    }
    assert_eq!(a.stats().bad_length, 1);

    // The file shrinks under the mapping: a tail past its new end cannot be read. That frame
    // is lost (no SIGBUS), and the rest of the batch still goes, tails and all; so is the
    // second of two tails that follow each other in the mapping, the first readable.
    file.set_len(4096).unwrap();
    let tails = [
        map.bytes(0, 100),
        map.bytes(8192, 1024),
        &[],
        map.bytes(3072, 1024),
        map.bytes(4096, 1024),
        map.bytes(0, 512),
    ];
    assert_eq!(a.send_with_tails(&batch_of(&heads), &tails).unwrap(), 6);
    let got = recv_frames(&mut b, 4);
    assert_eq!(got.len(), 4, "the four frames that could be read arrive");
    assert!(got[0][..36] == heads[0][..] && got[0][36..] == on_disk[..100]);
    assert!(got[1] == heads[2]);
    assert!(got[2][..36] == heads[3][..] && got[2][36..] == on_disk[3072..4096]);
    assert!(got[3][..36] == heads[5][..] && got[3][36..] == on_disk[..512]);
    assert_eq!(a.stats().unreadable_tail, 2);
    assert!(recv_frames(&mut b, 1).is_empty());
}

/// A shared read-only mapping of a file, as a target's backend keeps one.
struct Mapping {
    ptr: *const u8,
    len: usize,
}

impl Mapping {
    fn new(file: &File, len: usize) -> Self {
        // SAFETY: a new shared read-only mapping of a descriptor we hold, checked below.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0)
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        Mapping { ptr: ptr.cast(), len }
    }

    /// `len` bytes at `at`. The test reads them only through the kernel (sends), so that a
    /// file truncated under the mapping fails a send rather than raising SIGBUS here.
    fn bytes(&self, at: usize, len: usize) -> &[u8] {
        assert!(at + len <= self.len);
        // SAFETY: inside the mapping, which lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.add(at), len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast_mut().cast(), self.len) };
    }
}

/// One AF_XDP socket per queue: a second sender on the interface is refused with a message
/// that says why, and the queue is free again once the first is dropped.
#[test]
fn a_second_sender_on_the_queue_is_refused() {
    if !have_root("a_second_sender_on_the_queue_is_refused") {
        return;
    }
    let veth = VethPair::new("aoexdp", MTU);
    let first = veth.xdp_a(XdpOptions::default()).unwrap();
    let err = veth.xdp_a(XdpOptions::default()).unwrap_err();
    assert!(matches!(err, XdpOpenError::QueueBusy { queue: 0, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("queue 0 of interface {IF_A} already has an AF_XDP socket bound (one per queue)")
    );
    drop(first);
    // The kernel frees the queue a little after the close; open waits for that.
    veth.xdp_a(XdpOptions::default()).expect("the queue is free once the first sender is gone");
}

#[test]
fn an_mtu_9000_interface_is_refused() {
    if !have_root("an_mtu_9000_interface_is_refused") {
        return;
    }
    let veth = VethPair::new("aoexdp", 9000);
    let err = veth.xdp_a(XdpOptions::default()).unwrap_err();
    assert!(matches!(err, XdpOpenError::MtuTooLarge { mtu: 9000, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "interface {IF_A} has MTU 9000: an AF_XDP sender takes MTUs up to 4000 \
             (frames must fit a 4096-byte chunk); send through AF_PACKET"
        )
    );
}

/// Frames the device drops (a veth whose peer is down) count as sent and do not stall the
/// send; the link carries frames again once the peer is back up.
#[test]
fn frames_the_device_drops_are_lost_without_stalling() {
    if !have_root("frames_the_device_drops_are_lost_without_stalling") {
        return;
    }
    let veth = VethPair::new("aoexdp", MTU);
    let mut a = veth.xdp_a(XdpOptions::default()).unwrap();
    ip(&["-n", &veth.b, "link", "set", IF_B, "down"]);
    let frames: Vec<Vec<u8>> = (0..64).map(|i| frame(i, 1514)).collect();
    let start = Instant::now();
    assert_eq!(a.send_batch(&batch_of(&frames)).unwrap(), 64, "dropped frames count as sent");
    let took = start.elapsed();
    assert!(took < Duration::from_millis(300), "the send waited on a dead link for {took:?}");
    let stats = a.stats();
    assert_eq!((stats.queued, stats.device_dropped), (64, 64), "{stats:?}");
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a live timespec for the call to fill.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) }, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Frames per second and sending CPU for `XdpSender` against `AfPacket` (`sendmmsg`), both
/// sending the same number of frames in batches of 64 to an `AfPacket` with a receive ring:
/// 1514-byte frames from the batch, then answers as a target sends them at MTU 1500 (36 bytes
/// of headers in the batch, two sectors from a mapped file as the tail, the frames of a batch
/// carrying consecutive sectors as the answers to one read do):
/// `cargo test --release -p aoe-transport --test afxdp_veth -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a check"]
fn throughput() {
    if !have_root("throughput") {
        return;
    }
    let path = std::env::temp_dir().join(format!("aoe-xdp-rate-{}", std::process::id()));
    std::fs::write(&path, vec![0x5a; 1 << 20]).unwrap();
    let file = File::open(&path).unwrap();
    let map = Mapping::new(&file, 1 << 20);
    std::fs::remove_file(&path).unwrap();
    let whole: Vec<Vec<u8>> = (0..64).map(|i| frame(i, 1514)).collect();
    let heads: Vec<Vec<u8>> = (0..64).map(|i| frame(i, 36)).collect();
    let tails: Vec<&[u8]> = (0..64).map(|i| map.bytes(i * 1024, 1024)).collect();
    let workloads: [(&str, FrameBatch, &[&[u8]]); 2] =
        [("1514 B frames", batch_of(&whole), &[]), ("36 B + 1024 B mapped tail", batch_of(&heads), &tails)];
    for (workload, batch, tails) in &workloads {
        let senders = [
            "AF_PACKET sendmmsg",
            "AF_PACKET, no vnet header",
            "AF_PACKET TX ring",
            "AF_XDP copy",
            "AF_XDP copy, budget 64",
        ];
        for label in senders {
            let veth = VethPair::new("aoexdp", MTU);
            let mut a: Box<dyn Transport> = match label {
                "AF_PACKET sendmmsg" => Box::new(veth.packet_a()),
                "AF_PACKET, no vnet header" => {
                    let opts = AfPacketOptions { vnet_header: false, ..AfPacketOptions::default() };
                    Box::new(VethPair::within(&veth.a, || AfPacket::open(IF_A, opts)).unwrap())
                }
                "AF_PACKET TX ring" => {
                    let opts = AfPacketOptions { tx_ring: true, ..AfPacketOptions::default() };
                    let a = VethPair::within(&veth.a, || AfPacket::open(IF_A, opts)).unwrap();
                    assert!(a.has_tx_ring(), "{:?}", a.tx_ring_refused());
                    Box::new(a)
                }
                "AF_XDP copy" => Box::new(veth.xdp_a(XdpOptions::default()).unwrap()),
                _ => Box::new(veth.xdp_a(XdpOptions { tx_budget: 64, ..XdpOptions::default() }).unwrap()),
            };
            let (sent, received, secs, cpu) = measure(&veth, &mut *a, batch, tails);
            eprintln!(
                "{workload:>26}, {label:>26}: sent {:>7.0} frames/s, {:>5.0} ns CPU/frame sending; \
                 {:.1}% received",
                sent as f64 / secs,
                cpu * 1e9 / sent as f64,
                100.0 * received as f64 / sent as f64,
            );
        }
    }
}

/// Sends `batch` with `tails` from A a million frames over, to a receiver on B; returns the
/// frames sent and received, the seconds sending took and the sending thread's CPU seconds.
fn measure(
    veth: &VethPair,
    a: &mut dyn Transport,
    batch: &FrameBatch,
    tails: &[&[u8]],
) -> (usize, usize, f64, f64) {
    const COUNT: usize = 1_000_000;
    let mut b = veth.packet_b();
    let rx = std::thread::spawn(move || {
        let mut inbox = FrameBatch::new(64, 14 + MTU);
        let mut n = 0usize;
        while b.recv_batch(&mut inbox, Some(Duration::from_millis(300))).unwrap() > 0 {
            n += inbox.len();
        }
        n
    });
    let (start, cpu) = (Instant::now(), thread_cpu_time());
    let mut sent = 0;
    while sent < COUNT {
        sent += a.send_with_tails(batch, tails).unwrap();
    }
    let (secs, cpu) = (start.elapsed().as_secs_f64(), (thread_cpu_time() - cpu).as_secs_f64());
    (sent, rx.join().unwrap(), secs, cpu)
}
