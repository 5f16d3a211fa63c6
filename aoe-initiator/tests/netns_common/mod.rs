//! Helpers shared by the `netns_*` tests: the initiator's raw socket opened inside its
//! namespace, one command driven through a bare session, and bounded whole-disk transfers.
//! The targets they run in the target namespace (Debian's vblade, or our engine in a
//! thread) are aoe-testkit's.

// Each test file uses its own subset.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use aoe_initiator::discover::TargetInfo;
use aoe_initiator::session::{ConfigRequest, IoBuffers, NoData, Path};
use aoe_initiator::{discover, Device, DeviceOptions, Error, Event, Reply, Request, Session, SessionConfig};
use aoe_proto::{AtaCommand, ConfigCommand, Frame, MacAddr};
use aoe_testkit::data::{pattern, TempImage, MIB};
use aoe_testkit::netns::{Link, Netns};
use aoe_testkit::packet::{PacketSocket, ETH_P_AOE};
use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
use aoe_transport::{FrameBatch, Transport};

/// The initiator's transport: an `AfPacket` socket on `ifname` with a receive ring, as the
/// `aoe` tool opens it, opened inside `ns` (the socket stays bound to that namespace).
pub fn afpacket(ns: &Netns, ifname: &str) -> Box<dyn Transport> {
    afpacket_with(ns, ifname, true)
}

/// As [`afpacket`], receiving through a ring or, `rx_ring` false, with `recvmmsg`.
pub fn afpacket_with(ns: &Netns, ifname: &str, rx_ring: bool) -> Box<dyn Transport> {
    let opts = AfPacketOptions { rx_ring, ..AfPacketOptions::default() };
    let port = ns
        .enter(|| AfPacket::open(ifname, opts))
        .unwrap_or_else(|e| panic!("opening {ifname} in {}: {e}", ns.name()));
    assert_eq!(port.has_rx_ring(), rx_ring, "receive ring on {ifname}");
    Box::new(port)
}

/// Device options for a private link: the session's default timers, a quick discovery and a
/// bounded `dead_timeout`, so that no test can hang.
pub fn options(dead_timeout: Duration) -> DeviceOptions {
    let mut opts = DeviceOptions::default();
    opts.discover.timeout = Duration::from_secs(3);
    opts.discover.queries = 6;
    opts.discover.settle = Some(Duration::from_millis(100));
    opts.dead_timeout = dead_timeout;
    opts
}

/// Runs one request through a bare [`Session`] on `link` to the target `info` found there
/// (first path), until it completes; silence for `dead_timeout` ends it with
/// [`Error::TargetDead`].
pub fn command(
    link: &mut dyn Transport,
    info: &TargetInfo,
    request: Request,
    dead_timeout: Duration,
) -> Result<Reply, Error> {
    let path = Path { link: 0, local: link.mac(), target: info.paths[0].mac };
    let mut cfg = SessionConfig::new(info.shelf, info.slot, vec![path]);
    cfg.buffer_count = info.buffer_count;
    cfg.dead_timeout = dead_timeout;
    let mut session = Session::new(cfg)?;
    let op = session.submit(request);
    let cap = 14 + link.mtu();
    let (mut tx, mut rx) = (FrameBatch::new(8, cap), FrameBatch::new(8, cap));
    let data: &mut dyn IoBuffers = &mut NoData;
    // Far beyond any dead_timeout a test uses: a bug here must not hang the test.
    let give_up = Instant::now() + dead_timeout + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < give_up, "the session neither completed nor gave up");
        let now = Instant::now();
        if session.poll_timeout().is_some_and(|t| now >= t) {
            session.handle_timeout(now);
        }
        while let Some(event) = session.poll_event() {
            if let Event::Complete { op: done, result } = event {
                if done == op {
                    return result;
                }
            }
        }
        tx.clear();
        while !tx.is_full() {
            let mut more = false;
            tx.push_with(|buf| {
                let t = session.poll_transmit(now, buf, data);
                more = t.is_some();
                t.map_or(0, |t| t.len)
            });
            if !more {
                break;
            }
        }
        if !tx.is_empty() {
            link.send_batch(&tx).expect("sending");
        }
        let wait = session.poll_timeout().map_or(Duration::from_millis(50), |t| t - now.min(t));
        link.recv_batch(&mut rx, Some(wait.min(Duration::from_millis(50)))).expect("receiving");
        for frame in rx.iter() {
            session.handle_frame(Instant::now(), frame, data);
        }
    }
}

/// Seconds since `start`, for the timing lines the tests print.
pub fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// Which target serves the disk in [`exercise_disk`], and what it is known to do differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Debian's vblade 25.
    Vblade,
    /// Our engine (`aoe_target::server::Server`).
    Engine,
}

impl Peer {
    fn firmware(self) -> u16 {
        match self {
            Peer::Vblade => 0x4019,
            Peer::Engine => aoe_target::export::FIRMWARE_VERSION,
        }
    }

    /// Length of a query-config answer without a config string, on the wire.
    fn config_answer_len(self) -> usize {
        match self {
            // Not padded to the Ethernet minimum, and veth does not pad either.
            Peer::Vblade => 32,
            Peer::Engine => 60,
        }
    }
}

/// The whole life of a disk of `image.len()` bytes served by `peer` at shelf.slot on `link`
/// (whose MTU allows `sectors_per_frame`): discovery, IDENTIFY, the whole disk written with
/// random data and read back, the image file checked, flush, config read / set / test /
/// prefix test / force set. Prints the transfer times.
pub fn exercise_disk(
    link: &Link,
    image: &TempImage,
    shelf: u16,
    slot: u8,
    sectors_per_frame: u8,
    peer: Peer,
) {
    let size = image.len();
    let target_mac = MacAddr(link.veth.a_mac());
    // A second socket on the initiator's interface, to see what the target really sends.
    let sniffer = PacketSocket::open_in(&link.initiator, link.initiator_if(), ETH_P_AOE).unwrap();

    let mut links = vec![afpacket(&link.initiator, link.initiator_if())];
    let opts = options(Duration::from_secs(10));
    let found = discover(&mut links, &opts.discover).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let info = found[0].clone();
    assert_eq!((info.shelf, info.slot), (shelf, slot));
    assert_eq!(info.paths.len(), 1);
    assert_eq!(info.paths[0].mac, target_mac);
    assert_eq!(info.buffer_count, 16, "the default buffer count of both targets");
    assert_eq!(info.sector_count, sectors_per_frame);
    assert_eq!(info.firmware, peer.firmware());
    assert_eq!(info.sectors, (size / 512) as u64, "capacity from IDENTIFY");
    assert!(info.lba48);
    let answer = sniffer
        .recv_matching(Duration::from_secs(1), |f| {
            Frame::parse(f).is_ok_and(|f| f.ethernet.src == target_mac && f.header.command == 1)
        })
        .unwrap()
        .expect("a query-config answer");
    assert_eq!(answer.len(), peer.config_answer_len(), "query-config answer on the wire");
    drop(sniffer);

    let mut dev = Device::with_target(links, info, &opts).unwrap();
    let id = dev.identify().unwrap();
    assert_eq!(id.sectors, (size / 512) as u64);
    assert_eq!(dev.size_bytes(), size as u64);
    assert_eq!(dev.session().config().max_sectors, sectors_per_frame);

    let data = pattern(u64::from(sectors_per_frame), size);
    let start = Instant::now();
    dev.write_at(&data, 0).unwrap();
    let wrote = secs(start);
    let mut back = vec![0u8; size];
    let start = Instant::now();
    dev.read_at(&mut back, 0).unwrap();
    let read = secs(start);
    assert!(back == data, "read back differs from what was written");
    // vblade 25 offers FLUSH CACHE but not FLUSH CACHE EXT (IDENTIFY word 83 = 0x5400) and
    // aborts the EXT form: the device sends the form the disk offers, so both flush.
    assert_eq!(
        dev.info().flush_command,
        Some(match peer {
            Peer::Vblade => AtaCommand::FlushCache,
            Peer::Engine => AtaCommand::FlushCacheExt,
        })
    );
    dev.flush().unwrap();
    assert!(image.read_all() == data, "the image file differs from what was written");
    eprintln!(
        "{peer:?} at {} sectors/frame: {} MiB written in {wrote:.2} s, read in {read:.2} s; {:?}",
        sectors_per_frame,
        size / MIB,
        dev.stats()
    );

    // Config strings: none at first; a set only while there is none or the same (else AoE
    // error 4, config string present); a force set always.
    let c = dev.config_read().unwrap();
    assert_eq!((c.string.as_slice(), c.buffer_count, c.sector_count), (&b""[..], 16, sectors_per_frame));
    assert_eq!(dev.config_set(b"aoe-rs test", false).unwrap().string, b"aoe-rs test");
    assert_eq!(dev.config_set(b"aoe-rs test", false).unwrap().string, b"aoe-rs test", "same string");
    assert!(matches!(dev.config_set(b"other", false), Err(Error::Aoe { code: 4 })));
    assert_eq!(dev.config_read().unwrap().string, b"aoe-rs test");
    drop(dev);

    // Test and prefix test (Device has no call for them): answered on a match, silence
    // otherwise, which a bare session with a short dead_timeout reports as a dead target.
    let mut link = afpacket(&link.initiator, link.initiator_if());
    let info = discover(std::slice::from_mut(&mut link), &opts.discover).unwrap().remove(0);
    let config = |command, string: &[u8]| Request::Config(ConfigRequest { command, string: string.to_vec() });
    let mut ask = |request| command(link.as_mut(), &info, request, Duration::from_millis(300));
    let answered = |r: Result<Reply, Error>| match r {
        Ok(Reply::Config(c)) => c.string,
        other => panic!("not answered: {other:?}"),
    };
    let silent = |r: Result<Reply, Error>| assert!(matches!(r, Err(Error::TargetDead { .. })), "{r:?}");
    assert_eq!(answered(ask(config(ConfigCommand::TestExact, b"aoe-rs test"))), b"aoe-rs test");
    silent(ask(config(ConfigCommand::TestExact, b"aoe-rs")));
    assert_eq!(answered(ask(config(ConfigCommand::TestPrefix, b"aoe-rs"))), b"aoe-rs test");
    silent(ask(config(ConfigCommand::TestPrefix, b"aoe-rs test!")));
    silent(ask(config(ConfigCommand::TestPrefix, b"other")));
    assert_eq!(answered(ask(config(ConfigCommand::ForceSet, b"forced"))), b"forced");
}
