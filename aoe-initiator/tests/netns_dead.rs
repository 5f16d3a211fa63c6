//! A target that stops answering: the Device fails the call with `Error::TargetDead` once
//! `dead_timeout` (2 s here) of silence has passed, and works again once the target is back.
//! Against our engine (its server threads stopped) and against vblade (killed). Needs root
//! (and vblade); skipped otherwise (a failure under AOE_REQUIRE_NETNS / AOE_REQUIRE_PEERS).

mod netns_common;

use std::time::{Duration, Instant};

use aoe_initiator::{Device, Error};
use aoe_testkit::data::{pattern, TempImage, MIB};
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::{netns_available, tool_available};
use aoe_testkit::process::vblade;
use aoe_testkit::target::{file_export, Targets};

use netns_common::{afpacket, afpacket_with, options};

const DEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Generous: only there so that a bug cannot hang the test.
const BOUND: Duration = Duration::from_secs(8);

/// Reads the disk while the target is silent: `TargetDead` after `DEAD_TIMEOUT`, not before.
fn read_from_silent_target(dev: &mut Device) {
    let mut buf = vec![0u8; MIB];
    let start = Instant::now();
    let err = dev.read_at(&mut buf, 0).unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, Error::TargetDead { after } if after == DEAD_TIMEOUT), "{err}");
    assert!(took >= DEAD_TIMEOUT, "declared dead after {took:?} of silence");
    assert!(took < BOUND, "took {took:?}");
    eprintln!("declared dead after {took:?}");
}

/// The disk holds `data` again once the target is back.
fn read_back(dev: &mut Device, data: &[u8]) {
    let mut buf = vec![0u8; data.len()];
    dev.read_at(&mut buf, 0).unwrap();
    assert!(buf == data);
}

#[test]
fn engine_stops_answering() {
    if !netns_available("engine_stops_answering") {
        return;
    }
    let image = TempImage::zeroed(MIB).unwrap();
    let link = Link::new("aoeidd", 1500).unwrap();
    let export = file_export(1, 0, image.path());
    let mut targets = Targets::default();
    targets.serve(&link.target, link.target_if(), vec![export.clone()]);
    let links = vec![afpacket(&link.initiator, link.initiator_if())];
    let mut dev = Device::open(links, 1, 0, &options(DEAD_TIMEOUT)).unwrap();
    let data = pattern(1, MIB);
    dev.write_at(&data, 0).unwrap();

    targets.stop();
    read_from_silent_target(&mut dev);

    targets = Targets::default();
    targets.serve(&link.target, link.target_if(), vec![export]);
    read_back(&mut dev, &data);
    targets.stop();
}

#[test]
fn vblade_is_killed() {
    if !(netns_available("vblade_is_killed") && tool_available("vblade_is_killed", "vblade")) {
        return;
    }
    let image = TempImage::zeroed(MIB).unwrap();
    let link = Link::new("aoeidv", 1500).unwrap();
    let mut peer = vblade(&link.target, 1, 0, link.target_if(), image.path());
    // Receiving with recvmmsg here, through a ring against the engine above.
    let links = vec![afpacket_with(&link.initiator, link.initiator_if(), false)];
    let mut dev = Device::open(links, 1, 0, &options(DEAD_TIMEOUT)).unwrap();
    let data = pattern(2, MIB);
    dev.write_at(&data, 0).unwrap();

    peer.terminate().unwrap();
    read_from_silent_target(&mut dev);

    let _peer = vblade(&link.target, 1, 0, link.target_if(), image.path());
    read_back(&mut dev, &data);
}
