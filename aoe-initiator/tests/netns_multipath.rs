//! Multipath: two veth pairs between the same two namespaces, our target engine serving one
//! export on both (two server threads sharing it), the initiator's Device over both; one
//! path is taken down in the middle of a large transfer, which completes and verifies.
//! Needs root; skipped otherwise (a failure under AOE_REQUIRE_NETNS).

mod netns_common;

use std::time::{Duration, Instant};

use aoe_initiator::Device;
use aoe_testkit::data::{pattern, TempImage, MIB};
use aoe_testkit::netns::{Netns, Side, Veth};
use aoe_testkit::privilege::netns_available;
use aoe_testkit::process::wait_until;
use aoe_testkit::target::{file_export, Targets};

use netns_common::{afpacket_with, options, secs};

const SIZE: usize = 64 * MIB;

/// Takes `side` of `broken` down once the image holds `data` at `at` (the transfer is that
/// far along), while `transfer` runs.
fn break_path_during(
    image: &TempImage,
    data: &[u8],
    at: usize,
    broken: &Veth,
    side: Side,
    transfer: impl FnOnce() + Send,
) {
    std::thread::scope(|scope| {
        let breaker = scope.spawn(|| {
            let reached = wait_until(Duration::from_secs(20), || {
                image.read_at(at as u64, 16).is_ok_and(|b| b == data[at..at + 16])
            });
            assert!(reached, "the transfer never got to {at}");
            broken.set_up(side, false).unwrap();
            Instant::now()
        });
        transfer();
        let _broken_at = breaker.join().expect("breaker");
    });
}

/// Two paths, `side` of the second taken down a third of the way into a 64 MiB write; the
/// second path's socket receives through a ring when `broken_ring`, the first's the other way.
fn path_goes_down_mid_transfer(test: &str, side: Side, broken_ring: bool) {
    if !netns_available(test) {
        return;
    }
    let image = TempImage::zeroed(SIZE).unwrap();
    let target_ns = Netns::new("aoeimp-t").unwrap();
    let initiator_ns = Netns::new("aoeimp-i").unwrap();
    let paths = [
        Veth::new(&target_ns, &initiator_ns, 9000).unwrap(),
        Veth::new(&target_ns, &initiator_ns, 9000).unwrap(),
    ];
    let mut targets = Targets::default();
    let export = file_export(1, 0, image.path());
    for veth in &paths {
        targets.serve(&target_ns, veth.a_name(), vec![export.clone()]);
    }
    let links = vec![
        afpacket_with(&initiator_ns, paths[0].b_name(), !broken_ring),
        afpacket_with(&initiator_ns, paths[1].b_name(), broken_ring),
    ];
    let mut dev = Device::open(links, 1, 0, &options(Duration::from_secs(10))).unwrap();
    assert_eq!(dev.info().paths.len(), 2, "{:?}", dev.info().paths);

    let data = pattern(7, SIZE);
    let start = Instant::now();
    break_path_during(&image, &data, SIZE / 3, &paths[1], side, || dev.write_at(&data, 0).unwrap());
    let wrote = secs(start);
    let mut back = vec![0u8; SIZE];
    let start = Instant::now();
    dev.read_at(&mut back, 0).unwrap();
    let read = secs(start);
    assert!(back == data, "read back differs from what was written");
    dev.flush().unwrap();
    assert!(image.read_all() == data, "the image file differs from what was written");
    let stats = dev.stats();
    eprintln!("{test}: 64 MiB written in {wrote:.2} s, read in {read:.2} s; {stats:?}");
    assert!(!dev.session().path_is_up(1, Instant::now()), "the broken path is marked down");
    // Found lost by their timer, or earlier, by answers to frames sent after them.
    assert!(stats.timeouts + stats.lost_early > 0, "frames were lost on the broken path: {stats:?}");
    targets.stop();
}

#[test]
fn target_side_of_a_path_goes_down() {
    path_goes_down_mid_transfer("target_side_of_a_path_goes_down", Side::A, true);
}

/// The initiator's own interface taken down: its socket reports ENETDOWN, which the driver
/// loop (src/driver.rs) still turns into a failed call instead of a lost path.
#[test]
fn initiator_side_of_a_path_goes_down() {
    path_goes_down_mid_transfer("initiator_side_of_a_path_goes_down", Side::B, true);
}

/// As above, the broken path's socket receiving with recvmmsg.
#[test]
fn initiator_side_of_a_path_goes_down_under_recvmmsg() {
    path_goes_down_mid_transfer("initiator_side_of_a_path_goes_down_under_recvmmsg", Side::B, false);
}
