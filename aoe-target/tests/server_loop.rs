//! `Server::run` over a raw socket on a veth link between two private network namespaces: it
//! answers bursts and single requests alike, after idle spells longer than the time it waits
//! for frames between looks at its stop flag, and it notices the flag while idle. Needs root;
//! skipped otherwise, unless AOE_REQUIRE_NETNS says a skip is a failure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aoe_proto::{AtaRepr, Body, BodyRepr, Frame, FrameRepr, HeaderRepr, MacAddr};
use aoe_target::backend::MemoryBackend;
use aoe_target::export::{Export, ExportConfig};
use aoe_target::server::Server;
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::netns_available;
use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
use aoe_transport::{FrameBatch, Transport};

/// Sends a read of one sector at LBA `tag` for each tag, in one batch, and returns the tags
/// of the answers that arrive within `wait`, in arrival order.
fn reads(port: &mut AfPacket, target: MacAddr, tags: std::ops::Range<u32>, wait: Duration) -> Vec<u32> {
    let capacity = 14 + port.mtu();
    let mut out = FrameBatch::new(64, capacity);
    for tag in tags.clone() {
        assert!(out.push_with(|buf| {
            FrameRepr {
                dst: target,
                src: port.mac(),
                header: HeaderRepr::request(1, 0, tag),
                body: BodyRepr::Ata { header: AtaRepr::read(u64::from(tag), 1, true), data: &[] },
            }
            .emit_padded(buf)
            .unwrap()
        }));
    }
    assert_eq!(port.send_batch(&out).unwrap(), tags.len());
    let mut inbox = FrameBatch::new(64, capacity);
    let mut got = Vec::new();
    let deadline = Instant::now() + wait;
    while got.len() < tags.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        port.recv_batch(&mut inbox, Some(left)).unwrap();
        for f in inbox.iter() {
            let frame = Frame::parse(f).unwrap();
            if let Body::Ata { data, .. } = frame.body {
                assert_eq!(data, &[frame.header.tag() as u8; 512][..], "tag {}", frame.header.tag());
            }
            got.push(frame.header.tag());
        }
    }
    got
}

#[test]
fn the_loop_answers_after_idle_spells_and_stops_when_told() {
    if !netns_available("the_loop_answers_after_idle_spells_and_stops_when_told") {
        return;
    }
    let link = Link::new("tgloop", 1500).unwrap();
    // Sector i holds the byte i.
    let image: Vec<u8> = (0..64u8).flat_map(|i| [i; 512]).collect();
    let export = Arc::new(Mutex::new(Export::new(ExportConfig::new(1, 0), MemoryBackend::from_vec(image))));
    let stop = Arc::new(AtomicBool::new(false));
    let ifname = link.target_if().to_owned();
    let server = link.target.spawn_thread({
        let stop = Arc::clone(&stop);
        move || {
            let port = AfPacket::open(&ifname, AfPacketOptions::default()).unwrap();
            Server::new(port, vec![export]).run(&stop)
        }
    });
    let mut port =
        link.initiator.enter(|| AfPacket::open(link.initiator_if(), AfPacketOptions::default())).unwrap();
    let target = MacAddr(link.veth.a_mac());
    let wait = Duration::from_secs(3);
    // The server may not listen yet: ask until it answers.
    let first = Instant::now();
    while reads(&mut port, target, 0..1, Duration::from_millis(100)) != [0] {
        assert!(first.elapsed() < Duration::from_secs(5), "the server never answered");
    }
    assert_eq!(reads(&mut port, target, 1..41, wait), (1..41).collect::<Vec<_>>(), "a burst");
    for round in 0..3 {
        // Longer than the server's wait for frames, which it then sleeps through again.
        std::thread::sleep(Duration::from_millis(450));
        assert_eq!(reads(&mut port, target, round..round + 1, wait), [round], "after idling");
        for tag in 41..44 {
            assert_eq!(reads(&mut port, target, tag..tag + 1, wait), [tag], "one at a time");
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let told = Instant::now();
    stop.store(true, Ordering::Relaxed);
    while !server.is_finished() {
        // Not a performance figure: the loop looks at the flag every 200 ms when idle.
        assert!(told.elapsed() < Duration::from_secs(2), "the server did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.join().unwrap().unwrap();
}
