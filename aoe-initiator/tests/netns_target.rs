//! The initiator library against our target engine (an in-process `aoe_target` server in a
//! thread inside the target namespace, exporting a file) on a veth link between two private
//! network namespaces: discovery, IDENTIFY, the whole disk written and read back, flush,
//! config strings. Needs root; skipped otherwise (a failure under AOE_REQUIRE_NETNS).

mod netns_common;

use aoe_testkit::data::{TempImage, MIB};
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::netns_available;
use aoe_testkit::target::{file_export, Targets};

use netns_common::{exercise_disk, Peer};

fn against_engine(test: &str, mtu: u32, size: usize, sectors_per_frame: u8) {
    if !netns_available(test) {
        return;
    }
    // The image lives in /dev/shm.
    let image = TempImage::zeroed(size).unwrap();
    let link = Link::new("aoeitg", mtu).unwrap();
    let mut targets = Targets::default();
    targets.serve(&link.target, link.target_if(), vec![file_export(2, 3, image.path())]);
    exercise_disk(&link, &image, 2, 3, sectors_per_frame, Peer::Engine);
    targets.stop();
}

#[test]
fn engine_mtu_9000() {
    against_engine("engine_mtu_9000", 9000, 64 * MIB, 17);
}

#[test]
fn engine_mtu_1500() {
    against_engine("engine_mtu_1500", 1500, 64 * MIB, 2);
}
