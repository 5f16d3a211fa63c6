//! The initiator library against Debian's vblade on a veth link between two private network
//! namespaces: discovery, IDENTIFY, the whole disk written and read back, flush, config
//! strings. Needs root and vblade; skipped otherwise (a failure under AOE_REQUIRE_NETNS /
//! AOE_REQUIRE_PEERS).

mod netns_common;

use aoe_testkit::data::{TempImage, MIB};
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::{netns_available, tool_available};
use aoe_testkit::process::vblade;

use netns_common::{exercise_disk, Peer};

fn against_vblade(test: &str, mtu: u32, size: usize, sectors_per_frame: u8) {
    if !(netns_available(test) && tool_available(test, "vblade")) {
        return;
    }
    // The image lives in /dev/shm.
    let image = TempImage::zeroed(size).unwrap();
    let link = Link::new("aoeivb", mtu).unwrap();
    let _vblade = vblade(&link.target, 1, 0, link.target_if(), image.path());
    exercise_disk(&link, &image, 1, 0, sectors_per_frame, Peer::Vblade);
}

#[test]
fn vblade_mtu_9000() {
    against_vblade("vblade_mtu_9000", 9000, 64 * MIB, 17);
}

#[test]
fn vblade_mtu_1500() {
    against_vblade("vblade_mtu_1500", 1500, 64 * MIB, 2);
}
