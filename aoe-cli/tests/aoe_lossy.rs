//! The `aoe` tool and the initiator library through aoe-testkit's fault-injecting relay on
//! real interfaces (two veth pairs, a relay in a namespace between them), against the
//! `aoe-target` program and Debian's vblade: every byte verified at 1 %, 5 % (with
//! duplication and reordering) and 20 % loss each way, and overwrites of the same sectors
//! through a lossy, duplicating, reordering link end with the last data written, never an
//! older copy.
//!
//! Needs root (and vblade for its half); skipped otherwise, unless AOE_REQUIRE_NETNS /
//! AOE_REQUIRE_PEERS say a skip is a failure. Every process is bounded in time.

use std::path::Path;
use std::time::{Duration, Instant};

use aoe_initiator::{Device, DeviceOptions};
use aoe_testkit::data::{pattern, TempImage, MIB};
use aoe_testkit::netns::Netns;
use aoe_testkit::privilege::{netns_available, tool_available};
use aoe_testkit::process::{vblade, wait_until, Guarded};
use aoe_testkit::relay::Relay;
use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
use aoe_transport::fault::Plan;
use aoe_transport::Transport;

const AOE: &str = env!("CARGO_BIN_EXE_aoe");
const AOE_TARGET: &str = env!("CARGO_BIN_EXE_aoe-target");
/// The longest one `aoe` process may take.
const LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
enum Peer {
    Program,
    Vblade,
}

/// A relay with `plan` both ways (seeded apart) and `peer` serving `image` as e1.0 behind
/// it; `None` when the test is skipped. The server stops before the relay goes.
struct Setup {
    _server: Guarded,
    relay: Relay,
}

impl Setup {
    fn new(test: &str, peer: Peer, plan: Plan, image: &TempImage) -> Option<Setup> {
        if !netns_available(test) || (matches!(peer, Peer::Vblade) && !tool_available(test, "vblade")) {
            return None;
        }
        let relay = Relay::new("aoelossy", 9000, plan, Plan { seed: plan.seed ^ 0x5eed, ..plan }).unwrap();
        let server = match peer {
            Peer::Vblade => vblade(&relay.target, 1, 0, relay.target_if(), image.path()),
            Peer::Program => aoe_target(&relay.target, relay.target_if(), image.path()),
        };
        Some(Setup { _server: server, relay })
    }
}

fn aoe_target(ns: &Netns, ifname: &str, file: &Path) -> Guarded {
    let mut cmd = ns.command(AOE_TARGET);
    cmd.args(["1", "0", ifname]).arg(file).env_remove("RUST_LOG");
    let target = Guarded::spawn(cmd).unwrap();
    let ready = format!("e1.0 on {ifname} (");
    assert!(
        wait_until(Duration::from_secs(10), || target.stderr().contains(&ready)),
        "aoe-target did not start: {:?}",
        target.stderr()
    );
    target
}

/// Runs `aoe ARGS` in `ns`, bounded by [`LIMIT`]; panics unless it exits 0. Returns stderr.
fn aoe(ns: &Netns, args: &[&str]) -> String {
    let mut cmd = ns.command(AOE);
    cmd.args(args).env_remove("RUST_LOG");
    let mut child = Guarded::spawn(cmd).unwrap();
    let status = child.wait_timeout(LIMIT).unwrap();
    let stderr = child.stderr();
    match status {
        Some(s) if s.success() => stderr,
        Some(s) => panic!("aoe {}: {s}: {stderr}", args.join(" ")),
        None => panic!("aoe {} did not finish within {LIMIT:?}: {stderr}", args.join(" ")),
    }
}

fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    if got.len() != want.len() {
        return Some(got.len().min(want.len()));
    }
    got.iter().zip(want).position(|(a, b)| a != b)
}

/// `aoe write --verify` of `size` bytes, then `aoe read` of them, through the relay; the
/// file read, and the image, must hold exactly what was written.
fn write_verify_read(test: &str, peer: Peer, plan: Plan, size: usize) {
    let image = TempImage::zeroed(size + MIB).unwrap();
    let Some(setup) = Setup::new(test, peer, plan, &image) else { return };
    let input = TempImage::new(size, plan.seed + 7).unwrap();
    let output = TempImage::zeroed(0).unwrap();
    let ns = &setup.relay.initiator;
    let start = Instant::now();
    let said = aoe(ns, &["write", "--verify", "--offset", "4096", "e1.0", input.path().to_str().unwrap()]);
    assert!(said.contains("verified"), "{said}");
    let len = size.to_string();
    aoe(ns, &["read", "--offset", "4096", "--length", &len, "e1.0", output.path().to_str().unwrap()]);
    let want = pattern(plan.seed + 7, size);
    if let Some(at) = first_difference(&output.read_all(), &want) {
        panic!("{peer:?}: aoe read differs from what was written at byte {at}");
    }
    if let Some(at) = first_difference(&image.read_at(4096, size).unwrap(), &want) {
        panic!("{peer:?}: the image differs from what was written at byte {at}");
    }
    let (there, back) = (setup.relay.to_target().stats(), setup.relay.to_initiator().stats());
    eprintln!(
        "{peer:?}: {} MiB written, verified and read in {:.2} s through the relay \
         (to the target {there:?}; to the initiator {back:?})",
        size / MIB,
        start.elapsed().as_secs_f64()
    );
    assert!(there.dropped > 0 && back.dropped > 0, "the relay dropped frames both ways");
}

fn drop(p: f64, seed: u64) -> Plan {
    Plan { drop: p, seed, ..Plan::NONE }
}

/// 5 % lost, 2 % duplicated, 5 % held back behind later frames, each way.
fn mix(seed: u64) -> Plan {
    Plan { drop: 0.05, duplicate: 0.02, reorder: 0.05, seed, ..Plan::NONE }
}

#[test]
fn one_percent_loss_against_aoe_target() {
    write_verify_read("one_percent_loss_against_aoe_target", Peer::Program, drop(0.01, 1), 16 * MIB);
}

#[test]
fn one_percent_loss_against_vblade() {
    write_verify_read("one_percent_loss_against_vblade", Peer::Vblade, drop(0.01, 2), 16 * MIB);
}

#[test]
fn five_percent_loss_duplication_and_reordering_against_aoe_target() {
    let test = "five_percent_loss_duplication_and_reordering_against_aoe_target";
    write_verify_read(test, Peer::Program, mix(3), 16 * MIB);
}

#[test]
fn five_percent_loss_duplication_and_reordering_against_vblade() {
    let test = "five_percent_loss_duplication_and_reordering_against_vblade";
    write_verify_read(test, Peer::Vblade, mix(4), 16 * MIB);
}

#[test]
fn twenty_percent_loss_against_aoe_target() {
    write_verify_read("twenty_percent_loss_against_aoe_target", Peer::Program, drop(0.2, 5), 8 * MIB);
}

#[test]
fn twenty_percent_loss_against_vblade() {
    write_verify_read("twenty_percent_loss_against_vblade", Peer::Vblade, drop(0.2, 6), 8 * MIB);
}

/// Losing, duplicating and reordering enough that frames are sent again all the time.
fn hostile(seed: u64) -> Plan {
    Plan { drop: 0.1, duplicate: 0.05, reorder: 0.1, seed, ..Plan::NONE }
}

/// Region overwritten again and again: a few frames at MTU 9000.
const REGION: usize = 64 * 1024;
const OVERWRITES: u64 = 60;

/// One session writes the same sectors over and over, each time with other data, through
/// a hostile link: what stays on the disk is the last write, and reads in between see the
/// write before them.
fn overwrites_in_one_session(test: &str, peer: Peer) {
    let image = TempImage::zeroed(4 * MIB).unwrap();
    let Some(setup) = Setup::new(test, peer, hostile(11), &image) else { return };
    let relay = &setup.relay;
    let link: Box<dyn Transport> = Box::new(
        relay.initiator.enter(|| AfPacket::open(relay.initiator_if(), AfPacketOptions::default())).unwrap(),
    );
    let mut opts = DeviceOptions::default();
    opts.discover.timeout = Duration::from_secs(5);
    opts.dead_timeout = Duration::from_secs(20);
    let mut dev = Device::open(vec![link], 1, 0, &opts).unwrap();
    let mut back = vec![0u8; REGION];
    for k in 0..OVERWRITES {
        let data = pattern(100 + k, REGION);
        dev.write_at(&data, 8192).unwrap();
        if k % 10 == 9 {
            dev.read_at(&mut back, 8192).unwrap();
            assert!(first_difference(&back, &data).is_none(), "{peer:?}: read after write {k} differs");
        }
    }
    dev.flush().unwrap();
    let last = pattern(100 + OVERWRITES - 1, REGION);
    if let Some(at) = first_difference(&image.read_at(8192, REGION).unwrap(), &last) {
        panic!("{peer:?}: byte {at} of the region is not from the last write: an older copy landed later");
    }
    let stats = dev.stats();
    eprintln!("{peer:?}: {OVERWRITES} overwrites, last one stays; {stats:?}");
    assert!(stats.retransmitted > 0, "frames were sent again");
    let (there, back) = (relay.to_target().stats(), relay.to_initiator().stats());
    assert!(there.duplicated > 0 && there.reordered > 0 && back.dropped > 0, "{there:?} {back:?}");
}

#[test]
fn overwrites_in_one_session_end_with_the_last_write_against_aoe_target() {
    let test = "overwrites_in_one_session_end_with_the_last_write_against_aoe_target";
    overwrites_in_one_session(test, Peer::Program);
}

#[test]
fn overwrites_in_one_session_end_with_the_last_write_against_vblade() {
    let test = "overwrites_in_one_session_end_with_the_last_write_against_vblade";
    overwrites_in_one_session(test, Peer::Vblade);
}

/// `aoe write` after `aoe write` of the same sectors, each its own process, through a
/// hostile link: the image ends with the last file written.
#[test]
fn successive_aoe_writes_of_the_same_sectors_end_with_the_last_one() {
    let test = "successive_aoe_writes_of_the_same_sectors_end_with_the_last_one";
    let image = TempImage::zeroed(4 * MIB).unwrap();
    let Some(setup) = Setup::new(test, Peer::Program, hostile(12), &image) else { return };
    let runs = 8u64;
    for k in 0..runs {
        let input = TempImage::new(MIB, 200 + k).unwrap();
        aoe(
            &setup.relay.initiator,
            &["write", "--offset", "1048576", "e1.0", input.path().to_str().unwrap()],
        );
    }
    let last = pattern(200 + runs - 1, MIB);
    if let Some(at) = first_difference(&image.read_at(MIB as u64, MIB).unwrap(), &last) {
        panic!("byte {at} of the region is not from the last aoe write");
    }
}
